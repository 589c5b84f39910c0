/**
 * `npm run bench:audit` (part of `npm run bench`): what the audit trail
 * (`ENABLE_AUDIT=true`) costs, audit on against audit off, in one run on
 * two fresh databases of the same server.
 *
 * 1. Publish: one-row transactions (a business row + `Outbox.publish`) from
 *    several clients, and `publishAll` of 100 events per transaction; best of
 *    BENCH_ROUNDS alternating rounds after a warm-up.
 * 2. Relay drain of BENCH_AUDIT_EVENTS preloaded events with the real relay
 *    (no-op sink, batch 100): audit off; audit on with the sealer stopped
 *    (the triggers alone); audit on with the sealer running every second in
 *    the same process (as in production: `AuditSealer` in the relay's
 *    fiber tree). Best of BENCH_ROUNDS alternating rounds.
 * 3. The sealer alone (rows/s, batches of 10000) on the rows a drain left
 *    unsealed, `AuditTrail.verify` over the whole chain (rows/s), and the
 *    audit log's size per event.
 *
 * Environment: BENCH_AUDIT_EVENTS (default 100000), BENCH_CONCURRENCY
 * (default "1,2"), BENCH_ROUNDS (default 2), BENCH_PUBLISH_TX (4000),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the
 * tests). Results go to `bench/results/audit.json`.
 */
import * as Outbox from "@outbox/core/Outbox"
import * as AuditSealer from "@outbox/runtime/AuditSealer"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { drainWithRelay, fmt, openDatabase, preload, runMain, timed, writeResults } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_AUDIT_EVENTS ?? 100_000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? "1,2").split(",").map(Number)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const PUBLISH_TX = Number(process.env.BENCH_PUBLISH_TX ?? 4000)
const PUBLISH_CLIENTS = 4
const BATCHES = 200

const pct = (slower: number, faster: number) => (slower / faster - 1) * 100

const publishOnce = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)`
  const payload = { total: 42, items: [{ sku: "A", quantity: 2 }] }
  const tx = Outbox.transaction(Effect.andThen(
    sql`INSERT INTO bench_orders (customer, total) VALUES ('c-1', 42)`,
    Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload })
  ))
  const single = yield* timed(Effect.all(
    Array.from({ length: PUBLISH_CLIENTS }, () =>
      Effect.forEach(Array.from({ length: PUBLISH_TX / PUBLISH_CLIENTS }), () => tx, { discard: true })),
    { concurrency: "unbounded" }
  ))
  const events = Array.from({ length: 100 }, (_, i) => ({ aggregateType: "Order", aggregateId: `o-${i}`, eventType: "OrderCreated", payload: { n: i } }))
  const batch = yield* timed(Effect.forEach(Array.from({ length: BATCHES }), () => Outbox.transaction(Outbox.publishAll(events)), { discard: true }))
  return { singleSeconds: single.seconds, batchSeconds: batch.seconds }
})

const sealAll = Effect.flatMap(AuditTrail.make, (audit) => audit.sealAll())

const unsealed = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_audit_log WHERE hash IS NULL`, (rows) => rows[0]!.n))

/** A drain with the sealer running beside the relay, as `OutboxLive` runs it with ENABLE_AUDIT=true. */
const drainWithSealer = (n: number, concurrency: number) =>
  Effect.scoped(Effect.andThen(Layer.build(AuditSealer.layer({ every: "1 second" })), drainWithRelay(n, concurrency)))

const main = Effect.gen(function*() {
  const off = yield* openDatabase(16)
  const on = yield* openDatabase(16)
  yield* OutboxMigrations.runWith({ audit: false }).pipe(Effect.provide(off.services))
  yield* OutboxMigrations.runWith({ audit: true }).pipe(Effect.provide(on.services))
  console.log(`Audit trail bench — audit on vs off, ${EVENTS.toLocaleString()} events per drain, node ${process.version}`)

  // 1. publish
  const best = { offSingle: Infinity, onSingle: Infinity, offBatch: Infinity, onBatch: Infinity }
  for (let round = 0; round <= ROUNDS; round++) {
    const a = yield* off.run(publishOnce)
    const b = yield* on.run(publishOnce)
    yield* on.run(sealAll)
    if (round === 0) continue // warm-up
    best.offSingle = Math.min(best.offSingle, a.singleSeconds)
    best.onSingle = Math.min(best.onSingle, b.singleSeconds)
    best.offBatch = Math.min(best.offBatch, a.batchSeconds)
    best.onBatch = Math.min(best.onBatch, b.batchSeconds)
  }
  const publish = {
    offTxPerSec: PUBLISH_TX / best.offSingle,
    onTxPerSec: PUBLISH_TX / best.onSingle,
    singleOverheadPct: pct(best.onSingle, best.offSingle),
    offBatchEventsPerSec: (BATCHES * 100) / best.offBatch,
    onBatchEventsPerSec: (BATCHES * 100) / best.onBatch,
    batchOverheadPct: pct(best.onBatch, best.offBatch)
  }
  console.log(`\nPublish (${PUBLISH_TX} one-row transactions, ${PUBLISH_CLIENTS} clients; publishAll 100 events/tx):`)
  console.log(`                      audit off      audit on    overhead`)
  console.log(
    `  1 event/tx        ${fmt(publish.offTxPerSec).padStart(9)} tx/s ${fmt(publish.onTxPerSec).padStart(9)} tx/s  ${
      fmt(publish.singleOverheadPct, 1).padStart(6)
    } %`
  )
  console.log(
    `  100 events/tx     ${fmt(publish.offBatchEventsPerSec).padStart(7)} ev/s ${fmt(publish.onBatchEventsPerSec).padStart(9)} ev/s  ${
      fmt(publish.batchOverheadPct, 1).padStart(6)
    } %`
  )

  // 2. drain
  const drains: Array<Record<string, number>> = []
  let sealing = { rows: 0, seconds: 0 }
  console.log(`\nRelay drain of ${EVENTS.toLocaleString()} preloaded events (no-op sink, batch 100):`)
  console.log(`  workers   audit off ev/s   audit on ev/s (overhead)   on + sealer ev/s (overhead)   unsealed after`)
  for (const concurrency of CONCURRENCY) {
    let offSeconds = Infinity
    let onSeconds = Infinity
    let sealerSeconds = Infinity
    let left = 0
    for (let round = 0; round < ROUNDS; round++) {
      yield* off.run(preload(EVENTS))
      offSeconds = Math.min(offSeconds, (yield* off.run(timed(drainWithRelay(EVENTS, concurrency)))).seconds)

      yield* on.run(preload(EVENTS))
      yield* on.run(sealAll) // the preload's audit rows: the drain starts with a sealed chain
      onSeconds = Math.min(onSeconds, (yield* on.run(timed(drainWithRelay(EVENTS, concurrency)))).seconds)
      // the sealer alone, on what that drain left (one row per claim and per completion of each event)
      const rows = yield* on.run(unsealed)
      const sealed = yield* on.run(timed(sealAll))
      if (rows > sealing.rows || sealing.rows === 0) sealing = { rows, seconds: sealed.seconds }
      else if (rows / sealed.seconds > sealing.rows / sealing.seconds) sealing = { rows, seconds: sealed.seconds }

      yield* on.run(preload(EVENTS))
      yield* on.run(sealAll)
      const withSealer = yield* on.run(timed(drainWithSealer(EVENTS, concurrency)))
      if (withSealer.seconds < sealerSeconds) {
        sealerSeconds = withSealer.seconds
        left = yield* on.run(unsealed)
      }
      yield* on.run(sealAll)
    }
    const row = {
      concurrency,
      offEventsPerSec: EVENTS / offSeconds,
      onEventsPerSec: EVENTS / onSeconds,
      onOverheadPct: pct(onSeconds, offSeconds),
      sealerEventsPerSec: EVENTS / sealerSeconds,
      sealerOverheadPct: pct(sealerSeconds, offSeconds),
      unsealedAfter: left
    }
    drains.push(row)
    console.log(
      `  ${String(concurrency).padStart(7)}   ${fmt(row.offEventsPerSec).padStart(14)}   ${fmt(row.onEventsPerSec).padStart(13)} (${
        fmt(row.onOverheadPct, 1)
      } %)   ${fmt(row.sealerEventsPerSec).padStart(16)} (${fmt(row.sealerOverheadPct, 1)} %)   ${fmt(row.unsealedAfter).padStart(14)}`
    )
  }

  // 3. sealer, verify, size
  const verified = yield* on.run(timed(Effect.flatMap(AuditTrail.make, (audit) => audit.verify())))
  const size = yield* on.run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ rows: string; bytes: string }>`
      SELECT (SELECT count(*) FROM outbox_audit_log)::text AS rows,
             (SELECT sum(total_bytes) FROM outbox_partition_leaves WHERE parent = 'outbox_audit_log')::text AS bytes`
  ))
  const audit = {
    sealRowsPerSec: sealing.rows / sealing.seconds,
    verifyRowsPerSec: verified.result.checked / verified.seconds,
    verifyOk: verified.result.ok,
    chainRows: verified.result.checked,
    bytesPerRow: Number(size[0]!.bytes) / Number(size[0]!.rows)
  }
  console.log(`\nSealer alone: ${fmt(audit.sealRowsPerSec)} audit rows/s (${fmt(sealing.rows)} rows, batches of 10,000)`)
  console.log(
    `Verify: ${fmt(audit.chainRows)} rows in ${fmt(verified.seconds, 2)} s (${fmt(audit.verifyRowsPerSec)} rows/s), ${audit.verifyOk ? "ok" : "BROKEN"}`
  )
  console.log(`Audit log: ${fmt(audit.bytesPerRow)} bytes per audit row (heap + indexes); 3 audit rows per delivered event`)

  writeResults("audit", { events: EVENTS, publish, drains, audit })
})

runMain(main)
