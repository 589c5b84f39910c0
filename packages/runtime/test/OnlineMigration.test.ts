import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OnlineMigration from "@outbox/sql/OnlineMigration"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as LegacyOutbox from "@outbox/testing/LegacyOutbox"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import * as Relay from "../src/Relay.ts"

const deliveries = new Map<string, number>()
const record = (event: OutboxEvent) =>
  Effect.sync(() => {
    deliveries.set(event.trackingId, (deliveries.get(event.trackingId) ?? 0) + 1)
  })

/** A store for one phase of the migration. */
const storeLayer = (options: PgOutboxStore.Options) => PgOutboxStore.layerWithoutMigrations(options)

/** Runs `effect` with two relays (2 workers each) over `options`' store; closes them (gracefully) after. */
const withRelays = <A, E, R>(options: PgOutboxStore.Options, effect: Effect.Effect<A, E, R>) =>
  Effect.scoped(Effect.gen(function*() {
    const relay = Relay.layer.pipe(
      Layer.provide(OutboxSink.layerHandler(record)),
      Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(10), batchSize: 20, concurrency: 2 })),
      Layer.provide(storeLayer(options))
    )
    yield* Layer.build(relay)
    yield* Layer.build(relay)
    return yield* effect
  }))

const waitUntil = <E, R>(condition: Effect.Effect<boolean, E, R>, what: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("20 millis") }),
    Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

/** Publishes `n` events through the library, a few per transaction, on `options`' store. */
const produce = (options: PgOutboxStore.Options, tag: string, n: number) =>
  Effect.gen(function*() {
    const published: Array<string> = []
    for (let i = 0; i < n; i += 5) {
      const batch = yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: Math.min(5, n - i) }, (_, j) => ({
        aggregateType: "Order",
        aggregateId: `${tag}-${i + j}`,
        eventType: "OrderCreated",
        payload: { tag, i: i + j }
      }))))
      for (const p of batch) published.push(p.trackingId)
    }
    return published
  }).pipe(Effect.provide(storeLayer(options)))

const dual: PgOutboxStore.Options = { table: "outbox_partitioned", legacy: { table: "outbox", dualWrite: true } }
const flagUnset: PgOutboxStore.Options = { table: "outbox_partitioned", legacy: { table: "outbox", dualWrite: false } }
const partitionedOnly: PgOutboxStore.Options = { table: "outbox_partitioned" }

layer(TestDatabase.layer, { timeout: "180 seconds", excludeTestServices: true })("online migration from a plain outbox", (it) => {
  describe("prepare", () => {
    it.effect("refuses what is not a plain outbox with a typed error, and changes nothing", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const missing = yield* Effect.flip(OnlineMigration.prepare({ legacy: "no_such_outbox", table: "x_partitioned" }))
        assert.strictEqual(missing.reason, "NotPlain")
        yield* sql`CREATE TABLE thin_outbox (id bigserial PRIMARY KEY, payload jsonb)`
        const thin = yield* Effect.flip(OnlineMigration.prepare({ legacy: "thin_outbox", table: "thin_partitioned" }))
        assert.strictEqual(thin.reason, "NotPlain")
        assert.include(thin.message, "aggregate_type")
        const hostile = yield* Effect.flip(OnlineMigration.prepare({ legacy: "outbox; DROP TABLE thin_outbox", table: "t" }))
        assert.strictEqual(hostile.reason, "InvalidName")
        const [left] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_class WHERE relname IN ('x_partitioned', 'thin_partitioned')`
        assert.strictEqual(left!.n, 0)
        assert.isNotNull((yield* sql<{ t: string | null }>`SELECT to_regclass('thin_outbox')::text AS t`)[0]!.t)
      }))
  })

  it.effect(
    "with events flowing (library and plain-SQL producers, relays, backfill, a rollback and back, switch-over, finish): nothing lost, nothing delivered twice",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* LegacyOutbox.create("outbox")
        // history: delivered events (never to be delivered again) and a backlog spread over 3 days
        const history = yield* LegacyOutbox.insert({ n: 300, status: "COMPLETED", days: 3 })
        const expected = new Set(yield* LegacyOutbox.insert({ n: 1200, days: 3 }))
        const add = (ids: ReadonlyArray<string>) => ids.forEach((id) => expected.add(id))

        // the library's own migration refuses the plain table clearly instead of half-migrating it
        const refused = yield* Effect.flip(OutboxMigrations.run)
        const messages = (e: unknown): string =>
          e instanceof Error || (typeof e === "object" && e !== null && "message" in e)
            ? `${(e as Error).message} ${messages((e as { cause?: unknown }).cause)}`
            : ""
        assert.include(messages(refused), "exists and is not partitioned: migrate it online")

        const prepared = yield* OnlineMigration.prepare()
        assert.isAtLeast(prepared.partitionsCreated, 7) // 3 days back, today, 3 ahead

        const backfilled = { copied: 0 }
        const backfiller = (batchSize: number) =>
          OnlineMigration.backfill({ batchSize, maxBatches: 3 }).pipe(
            Effect.tap((r) => Effect.sync(() => (backfilled.copied += r.copied))),
            Effect.repeat(Schedule.spaced("15 millis")),
            Effect.forkChild
          )

        // 1. the flag set: dual writes, union reads, backfill running beside them
        const fill = yield* backfiller(40)
        yield* withRelays(
          dual,
          Effect.gen(function*() {
            const producers = yield* Effect.forkChild(Effect.all([
              produce(dual, "dual", 200),
              LegacyOutbox.insert({ n: 100 }) // a producer that still writes the plain table
            ], { concurrency: 2 }))
            const [fromLibrary, fromSql] = yield* Fiber.join(producers)
            add(fromLibrary)
            add(fromSql)
            yield* waitUntil(Effect.sync(() => deliveries.size >= expected.size / 2), "half delivered")
          })
        )

        // the legacy table is complete and current: what rollback relies on
        const inSync = Effect.gen(function*() {
          const [drift] = yield* sql<{ copies: number; differ: number; missing: number }>`
            SELECT (SELECT count(*)::int FROM outbox_partitioned) AS copies,
                   (SELECT count(*)::int FROM outbox l JOIN outbox_partitioned p USING (id)
                    WHERE (l.status, l.retry_count, l.lock_token, l.locked_until, l.processed_at)
                          IS DISTINCT FROM (p.status, p.retry_count, p.lock_token, p.locked_until, p.processed_at)) AS differ,
                   (SELECT count(*)::int FROM outbox_partitioned p WHERE NOT EXISTS (SELECT 1 FROM outbox l WHERE l.id = p.id)) AS missing`
          assert.isAbove(drift!.copies, 0)
          assert.strictEqual(drift!.differ, 0)
          assert.strictEqual(drift!.missing, 0)
        })
        yield* inSync

        // 2. rollback: the flag unset; the legacy table is authoritative again, backfill still running
        yield* withRelays(
          flagUnset,
          Effect.gen(function*() {
            add(yield* produce(flagUnset, "rollback", 100))
            add(yield* LegacyOutbox.insert({ n: 50 }))
            yield* Effect.sleep("100 millis")
          })
        )
        yield* inSync

        // 3. the flag set again, until everything is delivered and copied
        yield* withRelays(
          dual,
          Effect.gen(function*() {
            add(yield* produce(dual, "again", 100))
            yield* waitUntil(Effect.sync(() => Array.from(expected).every((id) => deliveries.has(id))), "all delivered")
          })
        )
        yield* Fiber.interrupt(fill)
        yield* OnlineMigration.backfill({ batchSize: 500 })
        assert.isAbove(backfilled.copied, 0)

        // 4. switch over: plain-table inserts are redirected; processes move to the partitioned table only
        const switched = yield* OnlineMigration.switchOver()
        assert.strictEqual(switched.remaining, 0)
        const status = yield* OnlineMigration.status()
        assert.strictEqual(status.phase, "switched")
        yield* withRelays(
          partitionedOnly,
          Effect.gen(function*() {
            add(yield* produce(partitionedOnly, "switched", 50))
            // lands in the partitioned table through the redirect (so RETURNING gives nothing back)
            assert.deepStrictEqual(yield* LegacyOutbox.insert({ n: 30, aggregateType: "Redirected" }), [])
            const redirected = yield* sql<{ tracking_id: string }>`
              SELECT tracking_id FROM outbox_partitioned WHERE aggregate_type = 'Redirected'`
            assert.strictEqual(redirected.length, 30)
            add(redirected.map((r) => r.tracking_id))
            yield* waitUntil(Effect.sync(() => Array.from(expected).every((id) => deliveries.has(id))), "all delivered")
          })
        )

        // 5. finish: canonical names; processes configured with the old name keep working through the view
        const finished = yield* OnlineMigration.finish()
        assert.include(finished.renamed, "outbox -> outbox_retired")
        assert.include(finished.renamed, "outbox_partitioned -> outbox")
        assert.strictEqual((yield* OnlineMigration.status()).phase, "finished")
        yield* withRelays(
          partitionedOnly,
          Effect.gen(function*() {
            add(yield* produce(partitionedOnly, "via-view", 20))
            add(yield* produce({}, "canonical", 20))
            yield* waitUntil(Effect.sync(() => Array.from(expected).every((id) => deliveries.has(id))), "all delivered")
          })
        )

        // nothing lost, nothing delivered twice, history never redelivered
        const twice = Array.from(deliveries).filter(([, n]) => n > 1)
        assert.deepStrictEqual(twice, [])
        assert.strictEqual(deliveries.size, expected.size)
        for (const id of history) assert.isFalse(deliveries.has(id))
        const [rows] = yield* sql<{ total: number; open: number; in_default: number }>`
          SELECT count(*)::int AS total,
                 count(*) FILTER (WHERE status NOT IN ('COMPLETED'))::int AS open,
                 (SELECT count(*)::int FROM outbox_default) AS in_default
          FROM outbox`
        assert.strictEqual(rows!.total, expected.size + history.length)
        assert.strictEqual(rows!.open, 0)
        assert.strictEqual(rows!.in_default, 0) // prepare made partitions for the legacy rows' days
        const [parent] = yield* sql<{ partitioned: boolean }>`
          SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'outbox'::regclass) AS partitioned`
        assert.isTrue(parent!.partitioned)
        const names = (yield* sql<{ relname: string }>`
          SELECT c.relname FROM pg_class c WHERE c.relname IN ('outbox_default', 'outbox_claimable_idx', 'outbox_leased_idx', 'outbox_pkey')`)
          .map((r) => r.relname).sort()
        assert.deepStrictEqual(names, ["outbox_claimable_idx", "outbox_default", "outbox_leased_idx", "outbox_pkey"])
      })
  )
})
