/**
 * `npm run bench:ordering`: per-key ordering (`OUTBOX_ORDERING=key`) against
 * the unordered relay, in one run.
 *
 * 1. **Drain over 1,000 keys**: BENCH_EVENTS queued events (default
 *    200,000), event `g` in key `g % 1000` (the keys interleaved, as many
 *    aggregates' events are), drained by the real relay with 2 workers and
 *    a no-op sink, unordered and ordered, at each claim limit of
 *    BENCH_BATCHES (default "100,250,1000"); target: ordered ≥ 70 % of
 *    unordered at the same limit.
 * 2. **Over 1 key**: BENCH_ONE_KEY_EVENTS (default 2,000; 0 skips it) events of one key,
 *    ordered: one event in flight, but a claim takes a run of the key's
 *    events (`Ordering.run`), delivered one after the other.
 * 3. **Fairness** (BENCH_FAIR_ROUNDS rounds per row, default 8, b's events pooled, BENCH_FAIR_TRACE=1 to trace the slow pickups; BENCH_FAIR_ROWS picks rows
 *    of `none`, `tenant`, `key` (fairness with key order), default these three, and `keyonly` (key order without
 *    fairness, only when named); BENCH_FAIR_SINK_MS makes the sink take
 *    that long per event, default 0; BENCH_FAIR_PRODUCER
 *    `process`, the default, or `inline`: where b's producer runs): a backlog of BENCH_FAIR_BACKLOG events (default 100,000; 0 skips it) of
 *    tenant `a` drains while tenant `b` publishes 10 events/s, one
 *    transaction each; the relay (2 workers, claims of up to 1,000) with
 *    `OUTBOX_FAIRNESS=none`, `tenant`, and `tenant` with
 *    `OUTBOX_ORDERING=key` (a's backlog over 1,000 keys); `b`'s pickup latency (publish →
 *    sink) p50 / p99 / max against the batch-handling time (the backlog's
 *    drain time per claim round); target: p99 ≤ 2 batch-handling times.
 * 4. **Plans at 1M pending rows** (BENCH_PLAN_ROWS) over 1,000 keys, and
 *    over 1 key (and over 1,000 keys in one worker's slice of 4): `EXPLAIN (ANALYZE, BUFFERS)` of the ordered claim's locking
 *    query (the lease claim is the same query under an `UPDATE`), rolled
 *    back; printed, so that "index scans throughout" can be checked.
 * 5. **One claim's server time by state** (BENCH_CLAIM_COST_RUNS, default
 *    200 runs per state; 0 skips it): at 200,000 pending rows over 1,000
 *    keys, with 200 rows in flight, and no rows not yet due, 3,000 of the
 *    newest not due (in backoff, or scheduled), or 100,000 scheduled a week
 *    ahead and inserted before the backlog (and, with nothing not due, at
 *    20,000 pending rows), the median execution time of a claim of
 *    100 (`EXPLAIN (ANALYZE, TIMING OFF)`, rolled back): the ordered claim
 *    (in one worker's slice, and over the whole key space) beside the
 *    unordered claim's and the tenant-fair claim's locking queries.
 * 6. **One claim's server time by partition count** (BENCH_PARTITION_DAYS,
 *    default "30,365": past days of partitions added in steps, empty, as an
 *    outbox kept without retention; "" skips it): the unordered and the
 *    tenant-fair claims with the claim horizon (`internal/claimHorizon.ts`)
 *    and without it, and the ordered claim (which has none).
 *
 * Environment: BENCH_EVENTS, BENCH_ROUNDS (default 2: best of),
 * BENCH_BATCHES, BENCH_ONE_KEY_EVENTS, BENCH_PLAN_ROWS (0 skips the plans),
 * BENCH_CLAIM_MODE (`transaction`: the drains in that claim mode),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as the tests).
 * Writes `bench/results/ordering.json`.
 */
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as Relay from "@outbox/runtime/Relay"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"
import * as ClaimHorizon from "../packages/sql/src/internal/claimHorizon.ts"
import * as FairClaim from "../packages/sql/src/internal/fairClaim.ts"
import * as OldestClaim from "../packages/sql/src/internal/oldestClaim.ts"
import * as OrderedClaim from "../packages/sql/src/internal/orderedClaim.ts"
import { spawn } from "node:child_process"
import { fmt, machineCpu, openDatabase, percentile, runMain, timed, writeResults } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const BATCHES = (process.env.BENCH_BATCHES ?? "100,250,1000").split(",").map(Number)
const ONE_KEY_EVENTS = Number(process.env.BENCH_ONE_KEY_EVENTS ?? 2_000)
const PLAN_ROWS = Number(process.env.BENCH_PLAN_ROWS ?? 1_000_000)
const PLAN_LIMITS = (process.env.BENCH_PLAN_LIMITS ?? "100").split(",").map(Number)
const FAIR_BACKLOG = Number(process.env.BENCH_FAIR_BACKLOG ?? 100_000)
/**
 * Rounds of each fairness row (`BENCH_FAIR_ROUNDS`, default 8), whose b events are pooled: one round's
 * drain takes 2–3 s, so it gives 20–30 b events and its own p99 is its maximum, one sample; pooled over 8
 * rounds the p99 is the 2nd or 3rd largest of ~200. With 3 rounds (before 2026-12-06) the row's p99 was
 * about the largest of ~80 and moved with any one slow pickup (a run of 4 rounds: 2.30 batch-handling
 * times, from one pickup of 234 ms; 8 and 10 rounds the same hour: 1.74–1.89).
 */
const FAIR_ROUNDS = Math.max(1, Number(process.env.BENCH_FAIR_ROUNDS ?? 8))
/**
 * `BENCH_FAIR_TRACE=1`: each round's batch-handling time and slowest pickups, and for each pickup over 2
 * batch-handling times the claims and completions around it (start..end ms from the round's first claim,
 * rows / limit, and how many of b's events a claim took): where such a pickup's time went.
 */
const FAIR_TRACE = process.env.BENCH_FAIR_TRACE === "1"
/**
 * What the fairness part's sink takes per event (`BENCH_FAIR_SINK_MS`, default 0: a no-op): with a sink that
 * takes time, a batch's delivery is most of a worker's cycle, and where in its batch b's event goes counts.
 */
const FAIR_SINK_MS = Number(process.env.BENCH_FAIR_SINK_MS ?? 0)
/** The fairness rows to run (`BENCH_FAIR_ROWS`, comma-separated of `none`, `tenant`, `key`, `keyonly`; default the first three). */
const FAIR_ROWS = process.env.BENCH_FAIR_ROWS?.split(",").map((s) => s.trim())
/** Past days of partitions the partition-count section adds, in steps (`BENCH_PARTITION_DAYS`, "" skips it). */
const PARTITION_DAYS = (process.env.BENCH_PARTITION_DAYS ?? "30,365").split(",").filter((d) => d.trim() !== "").map(Number)
/** Runs per state of the claim-cost section (0 skips it). */
const CLAIM_COST_RUNS = Number(process.env.BENCH_CLAIM_COST_RUNS ?? 200)
/** BENCH_FIXED=1: fixed claims of the limit (`minBatchSize` = `batchSize`) instead of the adaptive limit. */
const FIXED = process.env.BENCH_FIXED === "1"
/** `BENCH_CLAIM_MODE=transaction`: the drains in the transaction claim mode (default `lease`). */
const CLAIM_MODE = process.env.BENCH_CLAIM_MODE === "transaction" ? "transaction" : "lease"
const KEYS = 1_000
const WORKERS = 2

/** `n` PENDING events over `keys` keys (event g in key g % keys), through the ordering trigger, then VACUUM ANALYZE. */
const preload = (n: number, keys: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox`
    for (let from = 1; from <= n; from += 100_000) {
      const to = Math.min(n, from + 99_999)
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
                 SELECT 'Order', (g % ${keys})::text, 'OrderCreated', jsonb_build_object('n', g)
                 FROM generate_series(${from}::int, ${to}::int) g`
    }
    yield* sql`VACUUM ANALYZE outbox`
    // every drain starts right after a checkpoint: else one fell (max_wal_size) inside about one drain in two,
    // at random, and that drain paid a full-page image in the WAL for each page it touched first after it
    yield* sql`CHECKPOINT`
  })

/** The relay (no-op sink, 2 workers, claims of at most `batch`) until `n` events completed. */
const drain = (n: number, ordering: "none" | "key", batch: number) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
        Layer.provide(OutboxConfig.layer({
          ordering,
          claimMode: CLAIM_MODE,
          batchSize: batch,
          ...(FIXED ? { minBatchSize: batch } : {}),
          concurrency: WORKERS,
          pollInterval: Duration.millis(10)
        }))
      )
    )
    const relay = Context.get(context, Relay.Relay)
    while ((yield* relay.stats).completed < n) yield* Effect.sleep("5 millis")
  }))

/**
 * `drain`, timed, with its CPU per event in µs: this process's (the relay) and the rest of the machine's
 * (PostgreSQL's backends, mostly; `/proc/stat` of every core minus this process), since a drain on this
 * machine is CPU-bound and which side an ordered claim costs more on is the question.
 */
const measuredDrain = (n: number, ordering: "none" | "key", batch: number) =>
  Effect.gen(function*() {
    const before = machineCpu()
    const t = yield* timed(drain(n, ordering, batch))
    const after = machineCpu()
    const jiffy = 1 / 100 // USER_HZ
    const machineSeconds = ((after.total - after.idle) - (before.total - before.idle)) * jiffy
    return { seconds: t.seconds, nodeUs: (t.cpuSeconds / n) * 1e6, restUs: (Math.max(0, machineSeconds - t.cpuSeconds) / n) * 1e6 }
  })

/** `n` PENDING events of tenant `a` (metadata), then VACUUM ANALYZE. */
const preloadTenant = (n: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox`
    yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, metadata)
               SELECT 'Order', (g % 1000)::text, 'OrderCreated', jsonb_build_object('n', g), '{"tenant":"a"}'::jsonb
               FROM generate_series(1, ${n}::int) g`
    yield* sql`VACUUM ANALYZE outbox`
  })

/**
 * The fairness run: the relay drains tenant `a`'s backlog while tenant `b`
 * publishes one event every 100 ms; `b`'s latencies (ms) and the drain's time.
 */
/**
 * Tenant b's producer in a process of its own (`BENCH_FAIR_PRODUCER=process`, the default): plain SQL through
 * `pg`, one INSERT (its own transaction) every 100 ms, the payload's `t` taken before it; it reports each
 * commit and stops at a message. Producers run elsewhere than the relay in a deployment; in the relay's
 * process (`inline`, `Outbox.transaction(Outbox.publish(...))`) b's transactions wait for the event loop the
 * draining relay keeps busy, and that wait is part of the pickup latency measured then.
 */
const producerScript = `
const { Client } = require("pg")
const client = new Client({ connectionString: process.env.BENCH_PRODUCER_URL })
let stop = false
process.on("message", () => { stop = true })
client.connect().then(async () => {
  const start = Date.now()
  let n = 0
  while (!stop) {
    const t = Date.now()
    await client.query(
      "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, metadata) VALUES ('Signup', $1, 'SignedUp', $2, $3)",
      ["b-" + n, JSON.stringify({ t }), JSON.stringify({ tenant: "b" })]
    )
    n++
    process.send(n)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, start + n * 100 - Date.now())))
  }
  await client.end()
  process.disconnect()
})
`

const FAIR_PRODUCER = process.env.BENCH_FAIR_PRODUCER === "inline" ? "inline" : "process"

/** Starts b's producer process; `stop` ends it and succeeds with how many events it committed. */
const producerProcess = (url: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["-e", producerScript], {
        cwd: process.cwd(),
        env: { ...process.env, BENCH_PRODUCER_URL: url },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      let published = 0
      child.on("message", (n) => {
        published = Number(n)
      })
      const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
      return { child, published: () => published, exited }
    }),
    ({ child }) => Effect.sync(() => child.kill())
  ).pipe(Effect.map(({ child, exited, published }) => ({
    published,
    stop: Effect.andThen(
      Effect.sync(() => child.connected && child.send("stop")),
      Effect.as(Effect.promise(() => exited), undefined)
    ).pipe(Effect.map(published))
  })))

const fairnessRun = (url: string, fairness: "none" | "tenant", ordering: "none" | "key" = "none") =>
  Effect.scoped(Effect.gen(function*() {
    const latencies: Array<number> = []
    /** `BENCH_FAIR_TRACE`: b's pickups (from, to), and the store's claims and completions (`limit` -1) as they ended. */
    const pickups: Array<readonly [number, number]> = []
    const calls: Array<{ readonly from: number; readonly to: number; readonly rows: number; readonly limit: number; readonly b: number }> = []
    const traced = (store: OutboxStore["Service"]) =>
      OutboxStore.of({
        ...store,
        claim: (options) => {
          const from = Date.now()
          return Effect.tap(store.claim(options), (rows) =>
            Effect.sync(() => {
              calls.push({ from, to: Date.now(), rows: rows.length, limit: options.limit, b: rows.filter((r) => r.metadata.tenant === "b").length })
            }))
        },
        complete: (leases) => {
          const from = Date.now()
          return Effect.tap(store.complete(leases), () => Effect.sync(() => calls.push({ from, to: Date.now(), rows: leases.length, limit: -1, b: 0 })))
        }
      })
    let drainedA = 0
    let doneA = 0
    const context = yield* Layer.build(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler((event) => {
          // b's pickup is taken when its delivery starts; a's backlog is drained when its last delivery ends
          if (event.metadata.tenant === "b") {
            const at = Date.now()
            const t = (event.payload as { t: number }).t
            latencies.push(at - t)
            if (FAIR_TRACE) pickups.push([t, at])
          }
          const done = Effect.sync(() => {
            if (event.metadata.tenant !== "b" && ++drainedA === FAIR_BACKLOG) doneA = performance.now()
          })
          return FAIR_SINK_MS > 0 ? Effect.andThen(Effect.sleep(Duration.millis(FAIR_SINK_MS)), done) : done
        })),
        Layer.provide(OutboxConfig.layer({ fairness, ordering, concurrency: WORKERS, pollInterval: Duration.millis(10) })),
        Layer.provide(FAIR_TRACE ? Layer.effect(OutboxStore, Effect.map(OutboxStore, traced)) : Layer.empty)
      )
    )
    const relay = Context.get(context, Relay.Relay)
    const t0 = performance.now()
    let published = 0
    if (FAIR_PRODUCER === "process") {
      const producer = yield* producerProcess(url)
      while (doneA === 0) yield* Effect.sleep("5 millis")
      published = yield* producer.stop
    } else {
      while (doneA === 0) {
        yield* Outbox.transaction(Outbox.publish({
          aggregateType: "Signup",
          aggregateId: `b-${published}`,
          eventType: "SignedUp",
          payload: { t: Date.now() },
          metadata: { tenant: "b" }
        }))
        published++
        yield* Effect.sleep("100 millis")
      }
    }
    while ((yield* relay.stats).completed < FAIR_BACKLOG + published) yield* Effect.sleep("5 millis")
    const drainSeconds = (doneA - t0) / 1000
    if (FAIR_TRACE) {
      const batchMs = (drainSeconds * 1000 * WORKERS) / (FAIR_BACKLOG / 1000)
      const sorted = [...latencies].sort((x, y) => x - y)
      console.log(`    round: batch-handling ${fmt(batchMs, 1)} ms, ${sorted.length} b events, p50 ${percentile(sorted, 50)}, slowest ${sorted.slice(-5).join(" ")} ms`)
      const zero = calls[0]?.from ?? 0
      for (const [from, to] of pickups.filter(([from, to]) => to - from > 2 * batchMs)) {
        const around = calls.filter((c) => c.to >= from - 100 && c.from <= to).map((c) =>
          c.limit < 0
            ? `(completion ${c.from - zero}..${c.to - zero} ${c.rows})`
            : `[claim ${c.from - zero}..${c.to - zero} ${c.rows}/${c.limit}${c.b > 0 ? `, b ${c.b}` : ""}]`
        )
        console.log(`      b's pickup ${to - from} ms (published +${from - zero}, delivered +${to - zero}): ${around.join(" ")}`)
      }
    }
    return { latencies: latencies.sort((x, y) => x - y), drainSeconds, published }
  }))

type Slice = { readonly index: number; readonly count: number }

/**
 * The ordered claim's locking query, as the relay claims with a one-at-a-time sink (heads, then runs in
 * the room left), built after a probe in the current transaction.
 */
const orderedLocking = (limit: number, slice?: Slice) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [seq] = yield* sql<{ seq: string }>`SELECT pg_get_serial_sequence('outbox', 'id') AS seq`
    const claim = OrderedClaim.make({
      sql,
      table: sql.literal("outbox"),
      sequence: seq?.seq ?? "outbox_id_seq",
      limit: (n) => sql.literal(String(Math.trunc(n)))
    })
    const probe = yield* claim.probe()
    return claim.statement(sql.literal("now()"), limit, probe, { deadLetter: "continue", run: limit, slice }, {
      claimable: sql.literal("status IN ('PENDING', 'FAILED') AND (available_at IS NULL OR available_at <= now())"),
      select: sql.literal("o.id, o.created_at"),
      finish: sql.literal("SELECT count(*) FROM locked")
    })
  })

/** `EXPLAIN (ANALYZE, ...)` of `statement` in a transaction that is rolled back: the plan's lines. */
const explained = (options: string, statement: Effect.Effect<Fragment, unknown, SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(Effect.gen(function*() {
      const rows = yield* sql<{ "QUERY PLAN": string }>`EXPLAIN (${sql.literal(options)}) ${yield* statement}`
      return yield* Effect.fail({ plan: rows.map((r) => r["QUERY PLAN"]) })
    })).pipe(Effect.catch((e: unknown) =>
      typeof e === "object" && e !== null && "plan" in e
        ? Effect.succeed((e as { plan: ReadonlyArray<string> }).plan)
        : Effect.fail(e)
    ))
  })

/** The ordered claim's locking query under EXPLAIN ANALYZE (rolled back). */
const plan = (limit: number, slice?: Slice) => explained("ANALYZE, BUFFERS, COSTS OFF", orderedLocking(limit, slice))

/**
 * The server's execution time of a query (ms, `EXPLAIN (ANALYZE, TIMING OFF)`: no per-node clock reads),
 * the median of `n` runs, each rolled back, so every run meets the same rows.
 */
const executionMs = (n: number, statement: Effect.Effect<Fragment, unknown, SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    const times: Array<number> = []
    for (let i = 0; i < n; i++) {
      const lines = yield* explained("ANALYZE, TIMING OFF, COSTS OFF", statement)
      times.push(Number(/Execution Time: ([\d.]+) ms/.exec(lines.join("\n"))?.[1]))
    }
    return percentile(times.sort((a, b) => a - b), 50)
  })

/** A state of the claim-cost section: rows not due among the newest (`newest`), or scheduled ahead and inserted before the backlog (`ahead`). */
interface CostState {
  readonly label: string
  readonly newest: number
  readonly ahead: number
  /** Rows of the backlog (default 220,000, the oldest 20,000 completed): fewer shows the planner's choices at a smaller outbox. */
  readonly rows?: number
}

/**
 * A drain's state at 200,000 pending rows over 1,000 keys: the oldest 20,000 completed (their entries
 * still in the claimable index, not vacuumed), the next 200 in flight; then `newest` of the newest rows not
 * due (in backoff, or scheduled), or `ahead` rows of other keys scheduled a week ahead and inserted before the
 * backlog (reminders published last week), so that their ids come first.
 */
const claimCostState = (state: CostState) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox`
    if (state.ahead > 0) {
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, available_at)
                 SELECT 'Reminder', g::text, 'Remind', jsonb_build_object('n', g), now() + interval '7 days'
                 FROM generate_series(1, ${state.ahead}::int) g`
    }
    const rows = state.rows ?? 220_000
    for (let from = 1; from <= rows; from += 100_000) {
      const to = Math.min(rows, from + 99_999)
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
                 SELECT 'Order', (g % ${KEYS})::text, 'OrderCreated', jsonb_build_object('n', g)
                 FROM generate_series(${from}::int, ${to}::int) g`
    }
    yield* sql`VACUUM ANALYZE outbox`
    yield* sql`UPDATE outbox SET status = 'COMPLETED', processed_at = now()
               WHERE aggregate_type = 'Order' AND id <= (SELECT min(id) FROM outbox WHERE aggregate_type = 'Order') + ${Math.trunc(rows / 11) - 1}`
    yield* sql`UPDATE outbox SET status = 'PROCESSING', locked_until = now() + interval '1 hour', lock_token = 1
               WHERE id IN (SELECT id FROM outbox WHERE status = 'PENDING' AND aggregate_type = 'Order' ORDER BY id LIMIT 200)`
    if (state.newest > 0) {
      yield* sql`UPDATE outbox SET available_at = now() + interval '1 hour'
                 WHERE id IN (SELECT id FROM outbox WHERE status = 'PENDING' ORDER BY id DESC LIMIT ${state.newest})`
    }
  })

/**
 * The claim horizon the store would take now (`internal/claimHorizon.ts`), or none (`false`: the claims as
 * before it).
 */
const horizonOf = (use: boolean) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => ClaimHorizon.make({ sql, table: "\"outbox\"", enabled: use }).bound)

/** The unordered claim's locking query (the lease claim's CTEs, `internal/oldestClaim.ts`), for comparison. */
const unorderedLocking = (limit: number, horizon = true) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const oldest = OldestClaim.make({ sql, table: sql.literal("outbox"), limit: (n) => sql.literal(String(Math.trunc(n))) })
    const bound = yield* horizonOf(horizon)
    return sql`WITH ${oldest(sql.literal("now()"), limit, sql.literal("o.id, o.created_at"), sql.literal(""), bound)} SELECT count(*) FROM locked`
  })

/** The tenant-fair claim's locking query (`internal/fairClaim.ts`, the default fairness), for comparison. */
const fairLocking = (limit: number, horizon = true) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const fair = FairClaim.make({ sql, table: sql.literal("outbox"), limit: (n) => sql.literal(String(Math.trunc(n))) })
    return fair.statement(sql.literal("now()"), limit, {}, {
      claimable: sql.literal("o.status IN ('PENDING', 'FAILED') AND (o.available_at IS NULL OR o.available_at <= now())"),
      select: sql.literal("o.id, o.created_at"),
      finish: sql.literal("SELECT count(*) FROM locked"),
      horizon: yield* horizonOf(horizon)
    })
  })

const summary = (lines: ReadonlyArray<string>) => {
  const text = lines.join("\n")
  const execution = /Execution Time: ([\d.]+) ms/.exec(text)?.[1]
  // an empty partition (the days ahead) may be scanned sequentially: nothing to read
  const seqScans = lines.filter((l) => /Seq Scan on outbox/.test(l) && !/rows=0 loops|never executed/.test(l)).length
  return { executionMs: execution === undefined ? NaN : Number(execution), seqScansOnOutbox: seqScans }
}

const main = Effect.gen(function*() {
  const { database, run } = yield* openDatabase(16)
  yield* run(OutboxMigrations.run)
  console.log(
    `Per-key ordering — drain ${EVENTS.toLocaleString()} queued events over ${KEYS} keys, ${WORKERS} workers, no-op sink, best of ${ROUNDS}, node ${process.version}`
  )
  console.log(
    `  claim limit   unordered ev/s   ordered ev/s   ordered/unordered   target ≥ 70 %   each round's pair   CPU µs/event, unordered → ordered (Node + rest of the machine)`
  )
  const drains: Array<Record<string, unknown>> = []
  for (const batch of BATCHES) {
    let unordered = Infinity
    let ordered = Infinity
    // each round's ordered / unordered, drained back to back: on a machine whose speed drifts between runs
    // (2× on this one), a pair's ratio is steadier than a ratio of two bests that may come from different rounds
    const pairs: Array<number> = []
    const cpu: Array<string> = []
    for (let round = 0; round < ROUNDS; round++) {
      yield* run(preload(EVENTS, KEYS))
      const u = yield* run(measuredDrain(EVENTS, "none", batch))
      yield* run(preload(EVENTS, KEYS))
      const o = yield* run(measuredDrain(EVENTS, "key", batch))
      unordered = Math.min(unordered, u.seconds)
      ordered = Math.min(ordered, o.seconds)
      pairs.push(u.seconds / o.seconds)
      cpu.push(`${fmt(u.nodeUs, 1)} + ${fmt(u.restUs, 1)} → ${fmt(o.nodeUs, 1)} + ${fmt(o.restUs, 1)}`)
    }
    const ratio = unordered / ordered
    drains.push({ batch, unorderedEventsPerSec: EVENTS / unordered, orderedEventsPerSec: EVENTS / ordered, ratio, pairs })
    console.log(
      `  ${String(batch).padStart(11)}   ${fmt(EVENTS / unordered).padStart(14)}   ${fmt(EVENTS / ordered).padStart(12)}   ${
        fmt(ratio * 100, 1).padStart(15)
      } %   ${(ratio >= 0.7 ? "yes" : "no").padEnd(13)}   ${pairs.map((r) => `${fmt(r * 100, 1)} %`).join(", ").padEnd(17)}   ${cpu.join("; ")}`
    )
  }

  let oneKey: { readonly seconds: number } | undefined
  if (ONE_KEY_EVENTS > 0) {
    yield* run(preload(ONE_KEY_EVENTS, 1))
    const timedOneKey = yield* run(timed(drain(ONE_KEY_EVENTS, "key", 100)))
    oneKey = timedOneKey
    console.log(
      `  over 1 key (ordered: one event in flight, a claim takes a run of the key's events): ${
        fmt(ONE_KEY_EVENTS / timedOneKey.seconds)
      } events/s, ${fmt((timedOneKey.seconds / ONE_KEY_EVENTS) * 1e3, 2)} ms per event`
    )
  }

  const fairness: Array<Record<string, unknown>> = []
  // BENCH_FAIR_BACKLOG=0 skips it (the run waits for the backlog's last event)
  if (FAIR_BACKLOG > 0) {
    console.log(
      `\nFairness — tenant a's backlog of ${FAIR_BACKLOG.toLocaleString()} events drains while tenant b publishes 10 events/s; ${WORKERS} workers, claims up to 1,000; ${FAIR_SINK_MS > 0 ? `a sink taking ${FAIR_SINK_MS} ms per event; ` : "a no-op sink; "}${FAIR_ROUNDS} round(s) per row, b's events pooled; b's producer ${
        FAIR_PRODUCER === "process" ? "in a process of its own (plain SQL)" : "in the relay's process (BENCH_FAIR_PRODUCER=inline)"
      }`
    )
    console.log(
      `  OUTBOX_FAIRNESS   b events   b pickup p50 / p99 / max ms   backlog drain s   batch-handling ms   p99 / batch   target ≤ 2   p99 of pickup / its round's batch   each round's p99 / batch`
    )
    // the last row: fairness with OUTBOX_ORDERING=key (a's backlog over 1,000 keys, each key in order)
    for (
      const [mode, ordering] of ([["none", "none"], ["tenant", "none"], ["tenant", "key"], ["none", "key"]] as const).filter(([mode, ordering]) =>
        FAIR_ROWS === undefined ? !(mode === "none" && ordering === "key") : FAIR_ROWS.includes(ordering === "key" ? (mode === "none" ? "keyonly" : "key") : mode)
      )
    ) {
      const latencies: Array<number> = []
      /** Each pickup over its own round's batch-handling time (rounds differ in speed: a slow round has slow pickups and slow batches). */
      const ratios: Array<number> = []
      const rounds: Array<{ readonly drainSeconds: number; readonly batchMs: number; readonly p99: number }> = []
      for (let round = 0; round < FAIR_ROUNDS; round++) {
        yield* run(preloadTenant(FAIR_BACKLOG))
        const r = yield* run(fairnessRun(database.url, mode, ordering))
        // a batch of 1,000 handled by one worker (claim, deliver, complete): the drain's time per batch, per worker
        const batchMs = (r.drainSeconds * 1000 * WORKERS) / (FAIR_BACKLOG / 1000)
        rounds.push({ drainSeconds: r.drainSeconds, batchMs, p99: percentile(r.latencies, 99) })
        latencies.push(...r.latencies)
        ratios.push(...r.latencies.map((l) => l / batchMs))
      }
      latencies.sort((x, y) => x - y)
      ratios.sort((x, y) => x - y)
      const p99Own = percentile(ratios, 99)
      const drainSeconds = rounds.reduce((sum, r) => sum + r.drainSeconds, 0) / rounds.length
      const batchMs = rounds.reduce((sum, r) => sum + r.batchMs, 0) / rounds.length
      const p50 = percentile(latencies, 50)
      const p99 = percentile(latencies, 99)
      const max = latencies[latencies.length - 1] ?? NaN
      fairness.push({ fairness: mode, ordering, events: latencies.length, p50, p99, max, drainSeconds, batchMs, p99OwnRound: p99Own, rounds })
      console.log(
        `  ${(ordering === "key" ? `${mode}, key order` : mode).padEnd(15)}   ${String(latencies.length).padStart(8)}   ${`${fmt(p50)} / ${fmt(p99)} / ${fmt(max)}`.padStart(27)}   ${
          fmt(drainSeconds, 2).padStart(15)
        }   ${fmt(batchMs, 1).padStart(17)}   ${fmt(p99 / batchMs, 2).padStart(11)}   ${
          (mode === "tenant" ? (p99 <= 2 * batchMs ? "yes" : "no") : "").padEnd(10)
        }   ${fmt(p99Own, 2).padStart(31)}   ${rounds.map((r) => fmt(r.p99 / r.batchMs, 2)).join(", ")}`
      )
    }
  }

  // 5. what one claim of 100 costs the server, by state: the ordered claim beside the unordered one's locking
  const claimCosts: Array<Record<string, unknown>> = []
  if (CLAIM_COST_RUNS > 0) {
    console.log(
      `\nOne claim of 100 at 200,000 pending rows over ${KEYS} keys (20,000 completed before them, 200 in flight), server execution ms, median of ${CLAIM_COST_RUNS}`
    )
    console.log(
      `  rows not due                                    unordered (locking)   ordered, slice 1 of 4   ordered, whole key space   tenant-fair`
    )
    const states: ReadonlyArray<CostState> = [
      { label: "none", newest: 0, ahead: 0 },
      { label: "3,000 of the newest (backoff, scheduled)", newest: 3_000, ahead: 0 },
      { label: "100,000 a week ahead, before the backlog", newest: 0, ahead: 100_000 },
      // a smaller outbox, where the planner's estimates decide more (see migration 0012_tenant_due_index)
      { label: "none, at 20,000 pending rows", newest: 0, ahead: 0, rows: 22_000 }
    ]
    for (const state of states) {
      yield* run(claimCostState(state))
      const unordered = yield* run(executionMs(CLAIM_COST_RUNS, unorderedLocking(100)))
      const sliced = yield* run(executionMs(CLAIM_COST_RUNS, orderedLocking(100, { index: 1, count: 4 })))
      const whole = yield* run(executionMs(CLAIM_COST_RUNS, orderedLocking(100)))
      const fair = yield* run(executionMs(CLAIM_COST_RUNS, fairLocking(100)))
      claimCosts.push({ state, unorderedMs: unordered, orderedSliceMs: sliced, orderedMs: whole, fairMs: fair })
      console.log(
        `  ${state.label.padEnd(44)}   ${fmt(unordered, 3).padStart(19)}   ${fmt(sliced, 3).padStart(21)}   ${
          fmt(whole, 3).padStart(24)
        }   ${fmt(fair, 3).padStart(11)}`
      )
    }
  }

  // 6. what one claim costs by the partitions the outbox has: past days kept (no retention, the default), empty
  const byPartitions: Array<Record<string, unknown>> = []
  if (PARTITION_DAYS.length > 0 && CLAIM_COST_RUNS > 0) {
    console.log(
      `\nOne claim of 100 at 200,000 pending rows by the outbox's partitions (past days kept, empty), server execution ms, median of ${CLAIM_COST_RUNS}`
    )
    console.log(`  partitions   unordered, no horizon   unordered   ordered, slice 1 of 4   tenant-fair, no horizon   tenant-fair`)
    let made = 0
    for (const days of [0, ...PARTITION_DAYS]) {
      if (days > made) {
        yield* run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql`SELECT outbox_ensure_daily_partitions((now() AT TIME ZONE 'UTC')::date - ${days}::int, ${days - made - 1}::int)`))
        made = days
      }
      yield* run(claimCostState({ label: "none", newest: 0, ahead: 0 }))
      const [count] = yield* run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'outbox'::regclass`))
      const row = {
        partitions: count!.n,
        unorderedNoHorizonMs: yield* run(executionMs(CLAIM_COST_RUNS, unorderedLocking(100, false))),
        unorderedMs: yield* run(executionMs(CLAIM_COST_RUNS, unorderedLocking(100))),
        orderedSliceMs: yield* run(executionMs(CLAIM_COST_RUNS, orderedLocking(100, { index: 1, count: 4 }))),
        fairNoHorizonMs: yield* run(executionMs(CLAIM_COST_RUNS, fairLocking(100, false))),
        fairMs: yield* run(executionMs(CLAIM_COST_RUNS, fairLocking(100)))
      }
      byPartitions.push(row)
      console.log(
        `  ${String(row.partitions).padStart(10)}   ${fmt(row.unorderedNoHorizonMs, 3).padStart(21)}   ${fmt(row.unorderedMs, 3).padStart(9)}   ${
          fmt(row.orderedSliceMs, 3).padStart(21)
        }   ${fmt(row.fairNoHorizonMs, 3).padStart(23)}   ${fmt(row.fairMs, 3).padStart(11)}`
      )
    }
  }

  const plans: Record<string, unknown> = {}
  if (PLAN_ROWS > 0) {
    for (const [label, keys] of [[`${KEYS} keys`, KEYS], ["1 key", 1]] as const) {
      yield* run(preload(PLAN_ROWS, keys))
      // and a worker's slice (2 workers: 4 slices), as the relay claims while a backlog drains
      const variants = keys > 1 ? [undefined, { index: 0, count: 4 }] : [undefined]
      for (const limit of PLAN_LIMITS) {
        for (const slice of variants) {
          const lines = yield* run(plan(limit, slice))
          const s = summary(lines)
          const of = slice === undefined ? "" : `, slice ${slice.index + 1} of ${slice.count}`
          plans[`${label}, limit ${limit}${of}`] = { ...s, plan: lines }
          console.log(
            `\nThe ordered claim of ${limit}${of} at ${PLAN_ROWS.toLocaleString()} pending rows over ${label}: ${s.executionMs} ms, ${s.seqScansOnOutbox} sequential scans of a non-empty outbox partition`
          )
          if (process.env.BENCH_PLAN_QUIET === undefined) for (const line of lines) console.log(`  ${line}`)
        }
      }
    }
  }
  writeResults("ordering", { events: EVENTS, keys: KEYS, workers: WORKERS, rounds: ROUNDS, drains, fairness, claimCosts, byPartitions, oneKey: oneKey === undefined ? undefined : { events: ONE_KEY_EVENTS, eventsPerSec: ONE_KEY_EVENTS / oneKey.seconds }, plans })
})

runMain(main)
