import { assert, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as OnlineMigration from "@outbox/sql/OnlineMigration"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as LegacyOutbox from "@outbox/testing/LegacyOutbox"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// docs/online-migration.md step by step, with the library's defaults: each
// phase builds its processes from the environment the doc prescribes
// (`PgOutboxStore.optionsConfig`, the store layer with its default start-up
// migrations, `OutboxHealth.layerConfig`, the outbox partition policy on
// `OUTBOX_TABLE`), a library producer and a plain-SQL producer write
// throughout, and a relay (claim + complete through the store) drains.

/** The environment of one deployment phase. */
type Env = Record<string, string>
const dualWrite: Env = {
  OUTBOX_TABLE: "outbox_partitioned",
  OUTBOX_MIGRATION_LEGACY_TABLE: "outbox",
  OUTBOX_MIGRATION_DUAL_WRITE: "true"
}
const partitionedOnly: Env = { OUTBOX_TABLE: "outbox_partitioned" }
const unset: Env = {}

const delivered = new Map<string, number>()

/** Runs `effect` with the processes of one phase (store with default migrations, health) from `env`. */
const inPhase = <A, E, R>(env: Env, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const provider = ConfigProvider.layer(ConfigProvider.fromUnknown(env))
    const process = Layer.unwrap(Effect.map(PgOutboxStore.optionsConfig, (options) => PgOutboxStore.layer(options))).pipe(
      Layer.merge(OutboxHealth.layerConfig()),
      Layer.merge(PartitionManager.layer),
      Layer.provide(provider)
    )
    return yield* effect.pipe(Effect.provide(process), Effect.provide(provider))
  })

/** What a process of the phase does beside publishing: gauges, stats, health, partition maintenance. */
const monitor = (table: string) =>
  Effect.gen(function*() {
  const health = yield* OutboxHealth.OutboxHealth
  const snapshot = yield* health.snapshot
  yield* health.claimRedriven
  const stats = yield* health.stats
  const report = yield* health.health
  const manager = yield* PartitionManager.PartitionManager
  const maintained = yield* manager.maintain(PartitionPolicy.outbox({ table }))
  assert.deepStrictEqual(maintained.failed, [])
  return { snapshot, stats, report }
})

/** A library producer: `n` events, a few per transaction. */
const produce = (tag: string, n: number) =>
  Effect.gen(function*() {
    const ids: Array<string> = []
    for (let i = 0; i < n; i += 4) {
      const batch = yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: Math.min(4, n - i) }, (_, j) => ({
        aggregateType: "Order",
        aggregateId: `${tag}-${i + j}`,
        eventType: "OrderCreated",
        payload: { tag, i: i + j }
      }))))
      for (const p of batch) ids.push(p.trackingId)
    }
    return ids
  })

/** A relay's work: claims and completes up to `batches` batches. */
const relay = (batches: number) =>
  Effect.gen(function*() {
    const store = yield* OutboxStore
    for (let i = 0; i < batches; i++) {
      const claimed = yield* store.claim({ limit: 50, leaseDuration: Duration.seconds(30) })
      if (claimed.length === 0) return
      for (const e of claimed) delivered.set(e.trackingId, (delivered.get(e.trackingId) ?? 0) + 1)
      yield* store.complete(claimed)
    }
  })

layer(TestDatabase.layer, { timeout: "120 seconds", excludeTestServices: true })("online migration, the documented steps", (it) => {
  it.effect("with the library's defaults in every phase: health and maintenance work, the store starts, every event once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const expected = new Set<string>()
      const add = (ids: ReadonlyArray<string>) => ids.forEach((id) => expected.add(id))
      yield* LegacyOutbox.create("outbox")
      add(yield* LegacyOutbox.insert({ n: 120, days: 2 }))

      // 1. prepare
      yield* OnlineMigration.prepare()

      // 2. dual write: the library producer, the plain-SQL producer, the relay; health and maintenance every phase
      yield* inPhase(
        dualWrite,
        Effect.gen(function*() {
          add(yield* produce("dual", 40))
          add(yield* LegacyOutbox.insert({ n: 20 }))
          yield* relay(2)
          const { snapshot } = yield* monitor("outbox_partitioned")
          assert.deepStrictEqual(snapshot.partitions.map((p) => p.table), ["outbox_partitioned"])
        })
      )

      // 3. backfill until "0 left"
      const backfilled = yield* OnlineMigration.backfill({ batchSize: 50 })
      assert.strictEqual(backfilled.remaining, 0)

      // 4. switch-over
      yield* OnlineMigration.switchOver()
      yield* inPhase(dualWrite, Effect.andThen(relay(1), monitor("outbox_partitioned")))

      // 5. every process on OUTBOX_TABLE=outbox_partitioned only, start-up migrations on (the default)
      yield* inPhase(
        partitionedOnly,
        Effect.gen(function*() {
          add(yield* produce("partitioned", 40))
          assert.deepStrictEqual(yield* LegacyOutbox.insert({ n: 15, aggregateType: "Redirected" }), [])
          yield* relay(2)
          const { snapshot, stats } = yield* monitor("outbox_partitioned")
          assert.deepStrictEqual(snapshot.partitions.map((p) => p.table), ["outbox_partitioned"])
          assert.isAbove(stats.counts.completedEstimate + stats.counts.pending, -1)
        })
      )
      add((yield* sql<{ tracking_id: string }>`SELECT tracking_id FROM outbox_partitioned WHERE aggregate_type = 'Redirected'`)
        .map((r) => r.tracking_id))

      // 6. finish
      yield* OnlineMigration.finish()

      // 7. OUTBOX_TABLE unset; later the view and the retired table go
      yield* inPhase(
        unset,
        Effect.gen(function*() {
          add(yield* produce("canonical", 20))
          add(yield* LegacyOutbox.insert({ n: 10, aggregateType: "Plain" }))
          yield* relay(100)
          yield* monitor("outbox")
        })
      )
      yield* sql`DROP VIEW outbox_partitioned`
      yield* sql`DROP TABLE outbox_retired`
      yield* inPhase(
        unset,
        Effect.gen(function*() {
          add(yield* produce("after-drop", 8))
          yield* relay(100)
          const { report, stats } = yield* monitor("outbox")
          assert.strictEqual(stats.counts.pending, 0)
          assert.deepStrictEqual(report.partitions.map((p) => p.table), ["outbox"])
        })
      )

      // every event delivered exactly once
      assert.deepStrictEqual(Array.from(delivered).filter(([, n]) => n > 1), [])
      assert.strictEqual(delivered.size, expected.size)
      for (const id of expected) assert.isTrue(delivered.has(id), id)
      const [parent] = yield* sql<{ partitioned: boolean; open: number }>`
        SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'outbox'::regclass) AS partitioned,
               (SELECT count(*)::int FROM outbox WHERE status <> 'COMPLETED') AS open`
      assert.isTrue(parent!.partitioned)
      assert.strictEqual(parent!.open, 0)
      // the objects the migrations bound to the partitioned table carry the canonical names and follow it
      const bound = yield* sql<{ name: string; on: string }>`
        SELECT c.relname AS name, i.indrelid::regclass::text AS on FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relname IN ('outbox_dead_letter_idx', 'outbox_claimable_idx', 'outbox_leased_idx') ORDER BY 1`
      assert.deepStrictEqual(bound, [
        { name: "outbox_claimable_idx", on: "outbox" },
        { name: "outbox_dead_letter_idx", on: "outbox" },
        { name: "outbox_leased_idx", on: "outbox" }
      ])
      const [stats] = yield* sql<{ pending: number }>`SELECT pending::int AS pending FROM outbox_stats`
      assert.strictEqual(stats!.pending, 0)
    }))
})
