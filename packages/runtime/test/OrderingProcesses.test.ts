/**
 * Per-key ordering (`OUTBOX_ORDERING=key`) across real OS processes: three
 * relay processes (`fixtures/ordered-relay-process.ts`, `OutboxLive` from
 * the environment, 4 workers each) deliver 50 keys × 200 events to webhook
 * receivers in this process that answer 503 to the first attempt of about
 * 10% of the events. Part of the load is published while the relays run, by
 * concurrent producers whose transactions share keys and stay open a little,
 * so that a key's higher id often commits before a lower one (the
 * uncommitted-lower-id guard).
 *
 * Checked from what the receivers saw, in arrival order: every request of a
 * key is for the key's lowest id not yet delivered (or a redelivery of the
 * one just delivered: at-least-once), so successes come in strictly
 * increasing id order and no later event is attempted before a failed one
 * succeeded; at most one request per key is open at any time; nothing is
 * lost; the failures happened; every process delivered. Once per claim mode
 * (`lease`, `transaction`), each on a fresh database. With
 * `OUTBOX_ORDERING=none` the same run fails (thousands of violations, up to
 * 3-4 requests of a key in flight).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import type { EventInput } from "@outbox/core/OutboxEvent"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import { type ChildProcess, spawn } from "node:child_process"
import type { ServerResponse } from "node:http"
import { fileURLToPath } from "node:url"

type ClaimMode = "lease" | "transaction"

const fixture = fileURLToPath(new URL("./fixtures/ordered-relay-process.ts", import.meta.url))

/**
 * The load of each claim mode: the 50 keys × 200 events for the default lease claim; a smaller load for
 * the transaction claim (the same paths and assertions, a third of the time: it guards the transaction worker
 * passing the ordering to its claims, which it once did not). `before`: each key's events published before the
 * relays start; the rest are published while they run.
 */
const loads = {
  lease: { keys: 50, perKey: 200, before: 120 },
  transaction: { keys: 20, perKey: 100, before: 60 }
} as const
/** A producer transaction stays open 0 to HOLD_TX_MS ms after its inserts, while the relays run. */
const HOLD_TX_MS = 10
const PROCESSES = 3
const WORKERS = 4
const PRODUCERS = 4
/** Events per producer transaction. */
const CHUNK = 10
/**
 * While the relays run, a producer opens its next transaction only while fewer than this many committed events
 * await delivery: the producers follow the relays at whatever pace this machine allows, so keys keep catching up
 * with what is committed, and a key's next id is often in a producer's open transaction while a higher id of it
 * has committed (what the uncommitted-lower-id guard is for).
 */
const LAG = 60
/**
 * From spawning the relays to every event completed (publishing while they run included). About 80 s on a
 * 2-core machine shared with other test runs; most of it is the relays' CPU.
 */
const DEADLINE = "150 seconds"
/** Most events per claim (at most one per key). */
const BATCH = 5
/** How long a receiver holds each request before answering: long enough for an overlapping request of a key to be seen. */
const HOLD_MS = 2

/** A deterministic PRNG (mulberry32), so that a failing run can be replayed with the same publishing plan. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/**
 * The publishing plan: every key `perKey` times, shuffled, so keys interleave within and across transactions;
 * each key's first `before` events (in plan order) are published before the relays start, the rest while
 * they run.
 */
const plan = (random: () => number, load: { readonly keys: number; readonly perKey: number; readonly before: number }) => {
  const KEYS = load.keys
  const TOTAL = load.keys * load.perKey
  const BEFORE_PER_KEY = load.before
  const slots = Array.from({ length: TOTAL }, (_, i) => i % KEYS)
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[slots[i], slots[j]] = [slots[j]!, slots[i]!]
  }
  const next = new Array<number>(KEYS).fill(0)
  const before: Array<EventInput> = []
  const during: Array<EventInput> = []
  for (const k of slots) {
    const n = next[k]!++
    ;(n < BEFORE_PER_KEY ? before : during).push({
      aggregateType: "Account",
      aggregateId: `a-${k}`,
      eventType: "Step",
      payload: { n }
    })
  }
  return { before, during }
}

/** The deterministic ~10% (26/256) of events whose first attempt is answered 503. */
const failsFirst = (trackingId: string): boolean => parseInt(trackingId.slice(-2), 16) % 10 === 0

/** One request a receiver saw, in arrival order. */
interface Attempt {
  readonly key: string
  readonly trackingId: string
  /** Which relay process sent it (each has its own receiver). */
  readonly process: number
  readonly status: 200 | 503
  /** `performance.now()` at arrival. */
  readonly at: number
}

/** The shared state of the three receivers. */
const makeLog = () => {
  const attempts: Array<Attempt> = []
  const attempted = new Set<string>()
  const delivered = new Set<string>()
  const inFlight = new Map<string, number>()
  let maxInFlight = 0
  const respond = (process: number) => (res: ServerResponse, request: HttpReceiver.Received) => {
    const body = request.body as { trackingId: string; aggregateType: string; aggregateId: string }
    const key = `${body.aggregateType}:${body.aggregateId}`
    const open = (inFlight.get(key) ?? 0) + 1
    inFlight.set(key, open)
    if (open > maxInFlight) maxInFlight = open
    const status = failsFirst(body.trackingId) && !attempted.has(body.trackingId) ? 503 : 200
    attempted.add(body.trackingId)
    if (status === 200) delivered.add(body.trackingId)
    attempts.push({ key, trackingId: body.trackingId, process, status, at: performance.now() })
    setTimeout(() => {
      inFlight.set(key, inFlight.get(key)! - 1)
      res.writeHead(status).end()
    }, HOLD_MS)
  }
  return { attempts, respond, maxInFlight: () => maxInFlight, delivered: () => delivered.size }
}

/** The last few KB a child wrote, for the failure message. */
const tail = (child: ChildProcess) => {
  let out = ""
  const keep = (chunk: Buffer) => (out = (out + chunk.toString()).slice(-4000))
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  return () => out
}

const exited = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
    else child.once("exit", () => resume(Effect.void))
  })

/** A relay process delivering to `sinkUrl`; stopped with SIGTERM (SIGKILL after 15 s) when the scope closes. */
const startRelay = (databaseUrl: string, sinkUrl: string, claimMode: ClaimMode) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--conditions=@outbox/source", "--import", "tsx", fixture], {
        env: {
          ...process.env,
          DATABASE_URL: databaseUrl,
          OUTBOX_SINK_URL: sinkUrl,
          OUTBOX_ORDERING: "key",
          OUTBOX_CLAIM_MODE: claimMode,
          OUTBOX_CONCURRENCY: String(WORKERS),
          OUTBOX_POLL_INTERVAL_MS: "50",
          // small claims: a claim takes one head per key, so a large one would leave the other workers idle
          OUTBOX_BATCH_SIZE: String(BATCH),
          OUTBOX_MIN_BATCH_SIZE: String(BATCH),
          OUTBOX_PG_POOL_MAX: "8"
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      return { child, output: tail(child) }
    }),
    ({ child }) =>
      child.exitCode !== null || child.signalCode !== null ? Effect.void : Effect.sync(() => child.kill("SIGTERM")).pipe(
        Effect.andThen(exited(child)),
        Effect.timeoutOrElse({
          duration: "15 seconds",
          orElse: () => Effect.andThen(Effect.sync(() => child.kill("SIGKILL")), exited(child))
        })
      )
  )

// each claim mode on a database of its own
for (const claimMode of ["lease", "transaction"] as const) {
  layer(
    Layer.provideMerge(PgOutboxStore.layer(), TestDatabase.layer),
    { timeout: "60 seconds", excludeTestServices: true }
  )(`per-key ordering across relay processes, OUTBOX_CLAIM_MODE=${claimMode}`, (it) => {
    describe(`3 relay processes × 4 workers, ${loads[claimMode].keys} keys × ${loads[claimMode].perKey} events, 10% first attempts failing`, () => {
      it.effect("deliver each key in strictly increasing id order, one at a time, losing nothing", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const { url } = yield* TestDatabase.TestDatabase
          const random = prng(0x5eed)
          const load = loads[claimMode]
          const KEYS = load.keys
          const TOTAL = load.keys * load.perKey
          const { before, during } = plan(random, load)
          /** Every published id, with when its transaction committed (as seen here: when COMMIT returned). */
          const committed = new Map<bigint, number>()

          /**
           * PRODUCERS fibers publishing `inputs` in transactions of CHUNK, each held open `hold()` ms after its
           * inserts, each opened once `ready` holds.
           */
          const publish = (inputs: ReadonlyArray<EventInput>, hold: () => number, ready: () => boolean) => {
            let cursor = 0
            const producer = Effect.gen(function*() {
              while (cursor < inputs.length) {
                while (!ready()) yield* Effect.sleep("2 millis")
                if (cursor >= inputs.length) break
                const chunk = inputs.slice(cursor, cursor + CHUNK)
                cursor += chunk.length
                const ms = hold()
                const rows = yield* Outbox.transaction(
                  Effect.tap(Outbox.publishAll(chunk), () => ms > 0 ? Effect.sleep(Duration.millis(ms)) : Effect.void)
                )
                const at = performance.now()
                for (const row of rows) committed.set(row.id, at)
              }
            })
            return Effect.forEach(Array.from({ length: PRODUCERS }), () => producer, { concurrency: "unbounded", discard: true })
          }

          yield* publish(before, () => 0, () => true)

          const log = makeLog()
          const receivers = yield* Effect.forEach(
            Array.from({ length: PROCESSES }, (_, i) => i),
            (i) => HttpReceiver.make(log.respond(i))
          )
          const counts = sql<{ completed: number; dead: number; total: number }>`
            SELECT count(*) FILTER (WHERE status = 'COMPLETED')::int AS completed,
                   count(*) FILTER (WHERE status = 'DEAD_LETTER')::int AS dead,
                   count(*)::int AS total
            FROM outbox`.pipe(Effect.map((rows) => rows[0]!), Effect.orDie)

          const started = performance.now()
          let firstRequest = 0
          let published = 0
          let drained = 0
          yield* Effect.scoped(Effect.gen(function*() {
            const relays = yield* Effect.forEach(receivers, (receiver) => startRelay(url, receiver.url, claimMode))
            const alive = Effect.suspend(() => {
              const gone = relays.find(({ child }) => child.exitCode !== null || child.signalCode !== null)
              return gone === undefined ? Effect.void : Effect.die(
                new Error(`a relay process exited early (${gone.child.exitCode ?? gone.child.signalCode}):\n${gone.output()}`)
              )
            })
            // a relay that exits fails the test at once, with its output
            const watch = Effect.repeat(alive, Schedule.spaced("100 millis")).pipe(Effect.andThen(Effect.never))
            const poll = (done: () => boolean) =>
              Effect.repeat(Effect.sync(done), { until: (ok) => ok, schedule: Schedule.spaced("50 millis") })
            yield* Effect.gen(function*() {
              yield* poll(() => log.attempts.length > 0)
              firstRequest = log.attempts[0]!.at - started
              // the rest of the load, following the relays (LAG): keys shared by concurrent transactions held
              // open 0 to HOLD_TX_MS ms
              yield* publish(
                during,
                () => Math.floor(random() * (HOLD_TX_MS + 1)),
                () => committed.size - log.delivered() < LAG
              )
              published = performance.now() - started
              yield* counts.pipe(
                Effect.repeat({ until: (c) => c.completed + c.dead >= TOTAL, schedule: Schedule.spaced("100 millis") })
              )
              drained = performance.now() - started
            }).pipe(
              Effect.raceFirst(watch),
              Effect.timeoutOrElse({
                duration: DEADLINE,
                orElse: () =>
                  Effect.flatMap(counts, (c) =>
                    Effect.die(
                      new Error(
                        `timed out: ${c.completed} of ${c.total} (of ${TOTAL}) completed, ${c.dead} dead letters\n${
                          relays.map((r) => r.output()).join("\n---\n")
                        }`
                      )
                    ))
              })
            )
          }))

          // --- the database: nothing lost, nothing dead-lettered -------------------
          const rows = yield* Effect.orDie(sql<{ id: string; tracking_id: string; k: string; status: string }>`
            SELECT o.id::text AS id, o.tracking_id::text AS tracking_id, o.aggregate_type || ':' || o.aggregate_id AS k, o.status
            FROM outbox o ORDER BY o.id`)
          assert.strictEqual(committed.size, TOTAL)
          assert.strictEqual(rows.length, TOTAL)
          assert.deepStrictEqual(
            rows.map((r) => BigInt(r.id)),
            [...committed.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
            "the rows are the published events"
          )
          assert.deepStrictEqual(rows.filter((r) => r.status !== "COMPLETED").map((r) => `${r.id}:${r.status}`), [])

          // --- the receivers: each key in id order, one request at a time -------------
          const idOf = new Map(rows.map((r) => [r.tracking_id, BigInt(r.id)]))
          /** Each key's ids, ascending: the order its events must be delivered in. */
          const expected = new Map<string, Array<bigint>>()
          for (const r of rows) {
            const ids = expected.get(r.k) ?? []
            ids.push(BigInt(r.id))
            expected.set(r.k, ids)
          }
          assert.strictEqual(expected.size, KEYS)
          const next = new Map<string, number>()
          const violations: Array<string> = []
          let duplicates = 0
          let failures = 0
          const successesBy = new Array<number>(PROCESSES).fill(0)
          const history = new Map<string, Array<string>>()
          log.attempts.forEach((a, seq) => {
            const id = idOf.get(a.trackingId)
            const ids = expected.get(a.key)
            if (id === undefined || ids === undefined) {
              violations.push(`#${seq}: unknown event ${a.trackingId} (key ${a.key})`)
              return
            }
            const steps = history.get(a.key) ?? []
            steps.push(`${id}${a.status === 200 ? "" : "✗"}@p${a.process}`)
            history.set(a.key, steps)
            if (a.status === 503) failures++
            else successesBy[a.process]!++
            const p = next.get(a.key) ?? 0
            if (p < ids.length && id === ids[p]) {
              // the key's head: delivered, or a failed attempt of it
              if (a.status === 200) next.set(a.key, p + 1)
            } else if (p > 0 && id === ids[p - 1]) {
              // the event just delivered, again (at-least-once): not a reordering
              duplicates++
            } else {
              violations.push(
                `#${seq} key ${a.key}: ${a.status} for id ${id} from process ${a.process} while the key's next undelivered id is ${
                  ids[p] ?? "none"
                } (last delivered ${p > 0 ? ids[p - 1] : "none"}); the key's last attempts: ${steps.slice(-8).join(" ")}`
              )
            }
          })
          const undelivered = [...expected].flatMap(([key, ids]) => {
            const p = next.get(key) ?? 0
            return p === ids.length ? [] : [`${key}: ${ids.length - p} undelivered from id ${ids[p]}`]
          })
          const maxInFlight = log.maxInFlight()

          // --- how often the uncommitted-lower-id guard was needed -----------------------------
          // An id x is *exposed* when, for a while, its key's previous event had been delivered and a higher id of
          // the key had committed while x had not: a relay without the guard would have taken the higher id then.
          // (Commit times are when the producer saw its COMMIT return: a little late, so this slightly undercounts.)
          const deliveredAt = new Map<bigint, number>()
          for (const a of log.attempts) {
            const id = idOf.get(a.trackingId)
            if (a.status === 200 && id !== undefined && !deliveredAt.has(id)) deliveredAt.set(id, a.at)
          }
          let inverted = 0
          let exposed = 0
          for (const ids of expected.values()) {
            let laterCommitted = Infinity // the earliest commit of a higher id of the key
            for (let i = ids.length - 1; i >= 0; i--) {
              const at = committed.get(ids[i]!)!
              if (laterCommitted < at) {
                inverted++
                const previous = i === 0 ? -Infinity : deliveredAt.get(ids[i - 1]!) ?? Infinity
                if (Math.max(laterCommitted, previous) < at) exposed++
              }
              laterCommitted = Math.min(laterCommitted, at)
            }
          }

          console.log(
            `ordering across processes (${claimMode}): ${TOTAL} events (${before.length} before the relays), ` +
              `${(drained / 1000).toFixed(1)} s from spawning the relays to all completed (first request after ${
                (firstRequest / 1000).toFixed(1)
              } s, all published after ${(published / 1000).toFixed(1)} s); ` +
              `${log.attempts.length} requests, ${failures} × 503, ${duplicates} duplicates, ` +
              `max in flight per key ${maxInFlight}, successes by process ${successesBy.join("/")}; ` +
              `ids committed after a higher id of their key ${inverted}, of which exposed ${exposed}; ` +
              `${violations.length} ordering violations`
          )

          assert.deepStrictEqual(violations.slice(0, 10), [], `${violations.length} ordering violations`)
          assert.deepStrictEqual(undelivered, [], "every event delivered")
          assert.isAtMost(maxInFlight, 1, "at most one request in flight per key")
          assert.isAtLeast(maxInFlight, 1)
          // every failing event was attempted, so each drew exactly one 503
          assert.strictEqual(failures, rows.filter((r) => failsFirst(r.tracking_id)).length)
          assert.isAbove(failures, 0, "the sink failed some first attempts")
          assert.isAbove(inverted, 0, "some ids committed after a higher id of their key")
          assert.isAbove(exposed, 0, "the uncommitted-lower-id guard was needed at least once (else the load did not test it)")
          for (let i = 0; i < PROCESSES; i++) assert.isAbove(successesBy[i]!, 0, `process ${i} delivered`)
        }), 240_000)
    })
  })
}
