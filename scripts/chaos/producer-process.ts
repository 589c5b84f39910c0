/**
 * A chaos-suite producer in its own OS process (spawned by `scripts/chaos/main.ts`).
 *
 * Publishes events forever, in transactions of 1-4 events, through one of the two
 * publishing APIs (`CHAOS_API`):
 * - `effect` (default): `Outbox.transaction(Outbox.publishAll(...))` over
 *   `PgOutboxStore` and a `PgClient` from `DATABASE_URL`, the orders example's path;
 * - `client`: `@outbox/client`'s `publish` in the caller's own `pg` transaction
 *   (`BEGIN`, `publish(client, events)`, `COMMIT` on a `pg.Pool` client), the path of
 *   an application that does not use Effect. Each event carries a unique payload id
 * `pid = p<producer>.<incarnation>.<tx>.<n>` and one of `CHAOS_KEYS` aggregate ids.
 * A share of the transactions (`CHAOS_HOLD_PROB`) sleeps 50..`CHAOS_HOLD_MAX_MS` ms
 * between the insert and the commit, so that a SIGKILL often lands mid-transaction
 * (PostgreSQL then rolls the transaction back when the connection drops).
 *
 * Protocol on stdout (one JSON object per line), read by the harness:
 *   {"t":"open","pids":[...]}    the inserts are done, the transaction is still open
 *   {"t":"commit","pids":[...]}  COMMIT returned
 *   {"t":"fail","pids":[...]}    the transaction failed (only with CHAOS_CONTINUE_ON_ERROR=1;
 *                                without it a failure ends the process)
 * The harness uses "open" lines to kill producers mid-transaction and to count
 * the events that were rolled back; the database stays the only source of truth
 * for what committed.
 *
 * Environment: DATABASE_URL, CHAOS_PRODUCER (index), CHAOS_INCARNATION,
 * CHAOS_SEED, CHAOS_KEYS (default 20), CHAOS_HOLD_PROB (default 0.3),
 * CHAOS_HOLD_MAX_MS (default 300), CHAOS_PAUSE_MS (max pause between
 * transactions, default 40), CHAOS_MAX_RETRIES (the `maxRetries` written on
 * each row; unset: the publish default, 5 — `max_retries` is decided by the
 * producer, so OUTBOX_MAX_RETRIES on a relay does not change it),
 * CHAOS_CONTINUE_ON_ERROR (1: a failed transaction, e.g. its connection
 * terminated by the server, is logged to stderr and the loop goes on),
 * CHAOS_API (`effect` or `client`).
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { publish } from "@outbox/client"
import * as Outbox from "@outbox/core/Outbox"
import type { EventInput } from "@outbox/core/OutboxEvent"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"

const env = (name: string, fallback: string) => process.env[name] ?? fallback

const producer = Number(env("CHAOS_PRODUCER", "0"))
const incarnation = Number(env("CHAOS_INCARNATION", "0"))
const seed = Number(env("CHAOS_SEED", "1"))
const keys = Number(env("CHAOS_KEYS", "20"))
const holdProb = Number(env("CHAOS_HOLD_PROB", "0.3"))
const holdMaxMs = Number(env("CHAOS_HOLD_MAX_MS", "300"))
const pauseMs = Number(env("CHAOS_PAUSE_MS", "40"))
/** Whether a failed transaction is reported ({"t":"fail"}) and the loop goes on, instead of exiting. */
const continueOnError = process.env.CHAOS_CONTINUE_ON_ERROR === "1"
const maxRetries = process.env.CHAOS_MAX_RETRIES === undefined ? undefined : Number(process.env.CHAOS_MAX_RETRIES)

/** mulberry32: a small deterministic PRNG, so a run's publishing plan is reproducible from its seed. */
const prng = (s: number) => () => {
  s = (s + 0x6d2b79f5) | 0
  let t = Math.imul(s ^ (s >>> 15), 1 | s)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const random = prng(seed * 7919 + producer * 104_729 + incarnation)

const say = (line: object) => process.stdout.write(JSON.stringify(line) + "\n")

/** Transaction `tx`'s events (1-4, over `keys` keys), their pids, and how long it stays open before COMMIT. */
const plan = (tx: number) => {
  const size = 1 + Math.floor(random() * 4)
  const inputs: Array<EventInput> = Array.from({ length: size }, (_, n) => {
    const key = Math.floor(random() * keys)
    return {
    aggregateType: "Chaos",
    aggregateId: `k-${key}`,
    // three tenants (OUTBOX_FAIRNESS=tenant takes them in turn); a key stays within its tenant
    tenant: `t-${key % 3}`,
    eventType: "ChaosEvent",
    payload: { pid: `p${producer}.${incarnation}.${tx}.${n}` },
    ...(maxRetries === undefined ? {} : { maxRetries })
  }
  })
  const pids = inputs.map((i) => (i.payload as { pid: string }).pid)
  const hold = random() < holdProb ? 50 + Math.floor(random() * Math.max(1, holdMaxMs - 50)) : 0
  return { inputs, pids, hold }
}

const failed = (tx: number, pids: ReadonlyArray<string>, cause: unknown) => {
  process.stderr.write(`${new Date().toISOString()} transaction ${tx} failed: ${String(cause).split("\n")[0]}\n`)
  say({ t: "fail", pids })
}

const program = Effect.gen(function*() {
  for (let tx = 0;; tx++) {
    const { hold, inputs, pids } = plan(tx)
    const tx_ = Outbox.transaction(
      Outbox.publishAll(inputs).pipe(
        Effect.tap(() => Effect.sync(() => say({ t: "open", pids }))),
        // the window in which a SIGKILL leaves an open transaction behind
        Effect.tap(() => (hold > 0 ? Effect.sleep(Duration.millis(hold)) : Effect.void))
      )
    )
    if (!continueOnError) {
      yield* tx_
      say({ t: "commit", pids })
    } else {
      // as an application would: a failed transaction (its connection terminated) is reported and
      // the loop goes on with the next one (new pids: a COMMIT whose answer was lost may have
      // committed, and the database stays the source of truth for that)
      const ok = yield* tx_.pipe(
        Effect.as(true),
        Effect.catchCause((cause) => Effect.sync(() => (failed(tx, pids, cause), false)))
      )
      if (ok) say({ t: "commit", pids })
      else yield* Effect.sleep(Duration.millis(50))
    }
    yield* Effect.sleep(Duration.millis(Math.floor(random() * pauseMs)))
  }
})

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The same loop through `@outbox/client`: the caller's `pg` transaction, `publish` inside it. */
const clientProgram = async (url: string) => {
  const pool = new pg.Pool({ connectionString: url, max: 2 })
  // an idle client whose backend was terminated: the pool drops it (without a listener this would crash)
  pool.on("error", () => undefined)
  // a checked-out client's connection error fails its query; the listener keeps it from crashing the
  // process. Attached when the client connects, not after each checkout: a backend terminated right after
  // its start-up sends its FATAL in the same read as ReadyForQuery, so the error was emitted while the pool
  // handed the new client out, before the checkout's code ran (backend-kills, CI 2026-12-03: producer 1
  // exited on an unhandled 'error' event); and one listener per checkout piled up on reused clients
  pool.on("connect", (client) => client.on("error", () => undefined))
  for (let tx = 0;; tx++) {
    const { hold, inputs, pids } = plan(tx)
    let client: pg.PoolClient | undefined
    try {
      client = await pool.connect()
      await client.query("BEGIN")
      await publish(client, inputs)
      say({ t: "open", pids })
      if (hold > 0) await sleep(hold)
      await client.query("COMMIT")
      client.release()
      say({ t: "commit", pids })
    } catch (cause) {
      // a client whose connection failed is destroyed, not returned to the pool
      client?.release(cause instanceof Error ? cause : new Error(String(cause)))
      if (!continueOnError) throw cause
      failed(tx, pids, cause)
      await sleep(50)
    }
    await sleep(Math.floor(random() * pauseMs))
  }
}

const url = process.env.DATABASE_URL
if (url === undefined) throw new Error("DATABASE_URL is required")

if (process.env.CHAOS_API === "client") {
  clientProgram(url).catch((cause) => {
    process.stderr.write(`${new Date().toISOString()} ${String(cause)}\n`)
    process.exit(1)
  })
} else {
  const Store = PgOutboxStore.layerWithoutMigrations().pipe(
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
  )
  NodeRuntime.runMain(program.pipe(Effect.provide(Store)))
}
