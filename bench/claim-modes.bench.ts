/**
 * `npx tsx --conditions=@outbox/source bench/claim-modes.bench.ts`: the W1 drain (BENCH_EVENTS queued
 * events, default 50,000, no-op sink) through the real relay in each claim mode (`OUTBOX_CLAIM_MODE`
 * lease / transaction) and completion (`OUTBOX_COMPLETED` keep / delete), at fixed batches of 100 and
 * 1,000, with 1 and 2 workers; beside the raw-SQL ceilings of the same statements (lease: claim UPDATE +
 * complete UPDATE; transaction: BEGIN, SELECT ... FOR UPDATE SKIP LOCKED, UPDATE or DELETE, COMMIT).
 *
 * Environment: BENCH_EVENTS, BENCH_ROUNDS (default 2: best of), BENCH_BATCHES ("100,1000"),
 * BENCH_WORKERS ("1,2"), DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the tests).
 */
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as Relay from "@outbox/runtime/Relay"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { fmt, openDatabase, preload, runMain, timed, writeResults } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const BATCHES = (process.env.BENCH_BATCHES ?? "100,1000").split(",").map(Number)
const WORKERS = (process.env.BENCH_WORKERS ?? "1,2").split(",").map(Number)

type Mode = "lease" | "transaction"
type Completed = "keep" | "delete"

/** The relay, fixed batches, until every event is settled. */
const drainRelay = (mode: Mode, completed: Completed, batch: number, workers: number) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
        Layer.provide(OutboxConfig.layer({
          claimMode: mode,
          batchSize: batch,
          minBatchSize: batch,
          concurrency: workers,
          pollInterval: Duration.millis(10)
        })),
        Layer.provide(Layer.effect(OutboxStore, PgOutboxStore.make({ completed })))
      )
    )
    const relay = Context.get(context, Relay.Relay)
    while ((yield* relay.stats).completed < EVENTS) yield* Effect.sleep("5 millis")
  }))

/** The same statements by hand: the ceiling of each mode. */
const drainRaw = (mode: Mode, completed: Completed, batch: number, workers: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const ids = (rows: ReadonlyArray<{ id: bigint }>) => `{${rows.map((r) => r.id).join(",")}}`
    const complete = (rows: ReadonlyArray<{ id: bigint }>) =>
      completed === "delete"
        ? sql`DELETE FROM outbox WHERE id = ANY(${ids(rows)}::bigint[])`
        : sql`UPDATE outbox SET status = 'COMPLETED', processed_at = now(), lock_token = NULL, locked_until = NULL
              WHERE id = ANY(${ids(rows)}::bigint[])`
    const lease = sql<{ id: bigint }>`
      UPDATE outbox o SET status = 'PROCESSING', lock_token = 1, locked_until = now() + interval '30 seconds'
      FROM (SELECT id, created_at FROM outbox WHERE status IN ('PENDING', 'FAILED') ORDER BY id
            LIMIT ${sql.literal(String(batch))} FOR UPDATE SKIP LOCKED) c
      WHERE o.id = c.id AND o.created_at = c.created_at
      RETURNING o.id, o.payload`
    const locked = sql<{ id: bigint }>`
      SELECT id, payload FROM outbox WHERE status IN ('PENDING', 'FAILED') ORDER BY id
      LIMIT ${sql.literal(String(batch))} FOR UPDATE SKIP LOCKED`
    const once: Effect.Effect<number, unknown> = mode === "lease"
      ? Effect.flatMap(lease, (rows) => rows.length === 0 ? Effect.succeed(0) : Effect.as(complete(rows), rows.length))
      : sql.withTransaction(Effect.flatMap(locked, (rows) => rows.length === 0 ? Effect.succeed(0) : Effect.as(complete(rows), rows.length)))
    const worker = Effect.gen(function*() {
      while ((yield* once) > 0) {
        // drain
      }
    })
    yield* Effect.all(Array.from({ length: workers }, () => worker), { concurrency: "unbounded" })
  })

const main = Effect.gen(function*() {
  const { run } = yield* openDatabase(16)
  yield* run(OutboxMigrations.run)
  console.log(`Claim modes — W1: drain ${EVENTS.toLocaleString()} queued events, no-op sink, best of ${ROUNDS}, node ${process.version}`)
  console.log(`  mode          completed  batch  workers   relay ev/s    raw ev/s   relay/raw   Node CPU µs/ev relay/raw`)
  const results: Array<Record<string, unknown>> = []
  for (const batch of BATCHES) {
    for (const workers of WORKERS) {
      for (const mode of ["lease", "transaction"] as const) {
        for (const completed of ["keep", "delete"] as const) {
          let relay = { seconds: Infinity, cpuSeconds: 0 }
          let raw = { seconds: Infinity, cpuSeconds: 0 }
          for (let round = 0; round < ROUNDS; round++) {
            yield* run(preload(EVENTS))
            const rawRun = yield* run(timed(drainRaw(mode, completed, batch, workers)))
            if (rawRun.seconds < raw.seconds) raw = rawRun
            yield* run(preload(EVENTS))
            const relayRun = yield* run(timed(drainRelay(mode, completed, batch, workers)))
            if (relayRun.seconds < relay.seconds) relay = relayRun
          }
          const row = {
            mode,
            completed,
            batch,
            workers,
            relayEventsPerSec: EVENTS / relay.seconds,
            rawEventsPerSec: EVENTS / raw.seconds,
            relayNodeCpuUsPerEvent: (relay.cpuSeconds / EVENTS) * 1e6,
            rawNodeCpuUsPerEvent: (raw.cpuSeconds / EVENTS) * 1e6
          }
          results.push(row)
          console.log(
            `  ${mode.padEnd(12)}  ${completed.padEnd(9)}  ${String(batch).padStart(5)}  ${String(workers).padStart(7)}   ${
              fmt(row.relayEventsPerSec).padStart(10)
            }  ${fmt(row.rawEventsPerSec).padStart(10)}   ${fmt((raw.seconds / relay.seconds) * 100).padStart(7)} %   ${
              fmt(row.relayNodeCpuUsPerEvent, 1).padStart(8)
            } / ${fmt(row.rawNodeCpuUsPerEvent, 1)}`
          )
        }
      }
    }
  }
  writeResults("claim-modes", { events: EVENTS, rounds: ROUNDS, results })
})

runMain(main)
