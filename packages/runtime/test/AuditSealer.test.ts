import { assert, describe, layer } from "@effect/vitest"
import * as AuditSealer from "@outbox/runtime/AuditSealer"
import * as PartitionMaintenance from "@outbox/runtime/PartitionMaintenance"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

const Live = Layer.mergeAll(AuditTrail.layer, PartitionManager.layer).pipe(
  Layer.provideMerge(Layer.effectDiscard(OutboxMigrations.runWith({ audit: true }))),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

const publish = (n: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
        SELECT 'Order', 'o-' || g, 'OrderCreated', '{}' FROM generate_series(1, ${n}) g`)

const unsealed = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_audit_log WHERE hash IS NULL`, (rows) => rows[0]!.n))

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("AuditSealer", (it) => {
  describe("the schedule under TestClock", () => {
    it.effect("seals at start, then once per period; checkpoints month boundaries once they are a day old", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        const now = new Date()
        yield* TestClock.setTime(now.getTime())
        yield* publish(30)
        const context = yield* Layer.build(AuditSealer.layer({ every: "10 seconds", maxRows: 7, maxBatches: 10 }))
        const sealer = Context.get(context, AuditSealer.AuditSealer)
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 1), { timeout: "30 seconds" })
        assert.strictEqual(yield* unsealed, 0)
        assert.strictEqual((yield* sealer.status).sealed, 30)

        yield* publish(12)
        // nothing happens before the period is over
        yield* TestClock.adjust("9 seconds")
        yield* RelayTestKit.settle
        assert.strictEqual(yield* unsealed, 12)
        assert.strictEqual((yield* sealer.status).runs, 1)
        yield* TestClock.adjust("1 second")
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 2), { timeout: "30 seconds" })
        assert.strictEqual(yield* unsealed, 0)
        const status = yield* sealer.status
        assert.deepStrictEqual([status.sealed, status.failures, status.checkpoints], [42, 0, 0])
        assert.isTrue((yield* audit.verify()).ok)

        // 40 virtual days later the month boundary after the genesis row is checkpointed
        yield* TestClock.adjust("40 days")
        yield* RelayTestKit.advanceUntil(Effect.map(sealer.status, (s) => s.checkpoints >= 1), { step: "10 seconds" })
        const sql = yield* SqlClient.SqlClient
        const [cp] = yield* sql<{ boundary: Date }>`SELECT boundary FROM outbox_audit_checkpoint ORDER BY boundary LIMIT 1`
        assert.strictEqual(cp!.boundary.toISOString(), new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString())
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))

    it.effect("a run seals at most maxBatches batches; the next run goes on", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const audit = yield* AuditTrail.AuditTrail
        yield* audit.sealAll()
        yield* publish(25)
        const context = yield* Layer.build(AuditSealer.layer({ every: "10 seconds", maxRows: 5, maxBatches: 2 }))
        const sealer = Context.get(context, AuditSealer.AuditSealer)
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 1), { timeout: "30 seconds" })
        assert.strictEqual(yield* unsealed, 15)
        yield* TestClock.adjust("10 seconds")
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 2), { timeout: "30 seconds" })
        assert.strictEqual(yield* unsealed, 5)
        assert.isTrue((yield* audit.verify()).ok)
        yield* audit.sealAll()
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))

    it.effect("a failing run is counted and the schedule goes on", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* TestClock.setTime(Date.now())
        // the sealing function is gone: the run fails
        yield* sql.unsafe(`ALTER FUNCTION outbox_audit_seal(integer) RENAME TO outbox_audit_seal_away`)
        const context = yield* Layer.build(AuditSealer.layer({ every: "1 minute" }))
        const sealer = Context.get(context, AuditSealer.AuditSealer)
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.failures >= 1), { timeout: "30 seconds" })
        assert.include((yield* sealer.status).lastError ?? "", "outbox_audit_seal")
        yield* sql.unsafe(`ALTER FUNCTION outbox_audit_seal_away(integer) RENAME TO outbox_audit_seal`)
        yield* publish(3)
        yield* TestClock.adjust("1 minute")
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 2 && s.sealed === 3), { timeout: "30 seconds" })
        assert.strictEqual((yield* sealer.status).failures, 1)
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))
  })

  describe("from the environment", () => {
    it.effect("ENABLE_AUDIT=true adds the audit log's policy to partition maintenance and runs the sealer", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const enabled = ConfigProvider.layer(ConfigProvider.fromUnknown({ ENABLE_AUDIT: "true", OUTBOX_PARTITION_MODE: "native" }))
        const context = yield* Layer.build(
          Layer.merge(PartitionMaintenance.layerConfig(), AuditSealer.layerConfig()).pipe(Layer.provide(enabled))
        )
        const maintenance = Context.get(context, PartitionMaintenance.PartitionMaintenance)
        assert.deepStrictEqual(maintenance.policies.map((p) => p.table), ["outbox", "outbox_audit_log"])
        assert.deepStrictEqual(maintenance.policies[1]!.retention, { amount: 7, unit: "years" })
        const sealer = Context.get(context, AuditSealer.AuditSealer)
        yield* RelayTestKit.eventually(Effect.map(sealer.status, (s) => s.runs >= 1))
        assert.isTrue((yield* sealer.status).enabled)

        const off = yield* Layer.build(
          Layer.merge(PartitionMaintenance.layerConfig(), AuditSealer.layerConfig()).pipe(
            Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({})))
          )
        )
        assert.deepStrictEqual(Context.get(off, PartitionMaintenance.PartitionMaintenance).policies.map((p) => p.table), ["outbox"])
        assert.isFalse((yield* Context.get(off, AuditSealer.AuditSealer).status).enabled)
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))
  })
})
