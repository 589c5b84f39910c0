import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { StoreError } from "@outbox/core/OutboxError"
import type { ValidEvent } from "@outbox/core/OutboxEvent"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as SqlClient from "effect/sql/SqlClient"

const StoreLive = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const valid = (i: number, overrides: Partial<ValidEvent> = {}): ValidEvent => ({
  aggregateType: "Order",
  aggregateId: `order-${i}`,
  eventType: "OrderCreated",
  payloadJson: JSON.stringify({ n: i }),
  metadataJson: "{}",
  maxRetries: 5,
  ...overrides
})

const count = (table: string) =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

const record = (id: bigint) =>
  Effect.flatMap(Effect.service(OutboxStore), (store) => Effect.map(store.get(id), Option.getOrThrow))

class Boom {
  readonly _tag = "Boom"
}

layer(StoreLive, { timeout: "60 seconds" })("PgOutboxStore transactions and publish", (it) => {
  describe("publish", () => {
    it.effect("a batch keeps its input order (ids, RETURNING, rows) and round-trips awkward text", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const awkward = ["NULL", "", "a,b", "{braces}", "\"quoted\"", "back\\slash", "żółw ✓ 🐢", "line\nbreak", "it's"]
        const events = Array.from({ length: 250 }, (_, i) =>
          valid(i, {
            aggregateType: i % 7 === 0 ? "Invoice" : "Order",
            aggregateId: `${awkward[i % awkward.length]}-${i}`,
            eventType: awkward[(i + 3) % awkward.length]! + "Event",
            payloadJson: JSON.stringify({ n: i, text: awkward[i % awkward.length], nested: [i, null, { k: "v" }] }),
            metadataJson: JSON.stringify({ tenant: awkward[(i + 1) % awkward.length] }),
            maxRetries: i % 11
          }))
        const published = yield* store.withTransaction((publish) => publish(events))
        assert.strictEqual(published.length, events.length)
        for (let i = 1; i < published.length; i++) assert.isTrue(published[i]!.id > published[i - 1]!.id)
        assert.strictEqual(new Set(published.map((p) => p.trackingId)).size, events.length)
        for (const [i, p] of published.entries()) {
          const r = yield* record(p.id)
          const e = events[i]!
          assert.strictEqual(r.trackingId, p.trackingId)
          assert.strictEqual(r.createdAt.getTime(), p.createdAt.getTime())
          assert.strictEqual(r.aggregateType, e.aggregateType)
          assert.strictEqual(r.aggregateId, e.aggregateId)
          assert.strictEqual(r.eventType, e.eventType)
          assert.deepStrictEqual(r.payload, JSON.parse(e.payloadJson))
          assert.deepStrictEqual(r.metadata, JSON.parse(e.metadataJson))
          assert.strictEqual(r.maxRetries, e.maxRetries)
          assert.strictEqual(r.status, "PENDING")
        }
      }))

    it.effect("a single event and every batch size run two statement texts in all: two prepared statements on the session", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const sql = yield* SqlClient.SqlClient
        // pg_prepared_statements is per session; a transaction keeps one session
        const prepared = yield* store.withTransaction((publish) =>
          Effect.gen(function*() {
            for (const size of [1, 2, 7, 50, 3, 1]) {
              const events = Array.from({ length: size }, (_, i) => valid(i))
              assert.strictEqual((yield* publish(events)).length, size)
            }
            return yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_prepared_statements
                                             WHERE statement LIKE 'INSERT INTO "outbox"%'`
          })
        )
        // one `VALUES` row for a single event, one `unnest` statement for any batch
        assert.strictEqual(prepared[0]!.n, 2)
      }))

    it.effect("an event without maxRetries gets the column default, beside events that set it", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const published = yield* store.withTransaction((publish) =>
          publish([valid(1, { maxRetries: undefined }), valid(2, { maxRetries: 9 }), valid(3, { maxRetries: 0 })])
        )
        const rows = yield* Effect.forEach(published, (p) => record(p.id))
        assert.deepStrictEqual(rows.map((r) => r.maxRetries), [5, 9, 0])
        assert.deepStrictEqual(rows.map((r) => r.aggregateId), ["order-1", "order-2", "order-3"])
      }))

    it.effect("an empty batch writes nothing and returns no rows", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const before = yield* count("outbox")
        assert.deepStrictEqual(yield* store.withTransaction((publish) => publish([])), [])
        assert.strictEqual(yield* count("outbox"), before)
      }))
  })

  describe("claimed_at", () => {
    it.effect("a claim stamps claimed_at; heartbeats keep it while the lease moves on, and completion leaves it", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE status IN ('PENDING', 'FAILED')`
        const [a, b] = yield* store.withTransaction((publish) => publish([valid(91), valid(92)]))
        const claimed = yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })
        assert.deepStrictEqual(claimed.map((e) => e.id), [a!.id, b!.id])
        const stamps = () =>
          sql<{ claimed_at: Date | null; locked_until: Date | null; held: number }>`
            SELECT claimed_at, locked_until, extract(epoch FROM now() - claimed_at)::float8 AS held
            FROM outbox WHERE id IN (${a!.id}, ${b!.id}) ORDER BY id`
        const first = yield* stamps()
        // one claim, one stamp, taken from the same clock as the lease
        assert.isNotNull(first[0]!.claimed_at)
        assert.strictEqual(first[0]!.claimed_at!.getTime(), first[1]!.claimed_at!.getTime())
        assert.strictEqual(first[0]!.locked_until!.getTime() - first[0]!.claimed_at!.getTime(), 30_000)
        // as if claimed an hour ago: a renewal moves the lease, not the claim time
        yield* sql`UPDATE outbox SET claimed_at = claimed_at - interval '1 hour' WHERE id IN (${a!.id}, ${b!.id})`
        yield* store.renew(claimed, Duration.minutes(10))
        const renewed = yield* stamps()
        assert.isAbove(renewed[0]!.locked_until!.getTime(), first[0]!.locked_until!.getTime())
        assert.isTrue(renewed[0]!.held >= 3600 && renewed[0]!.held < 3700)
        yield* store.complete(claimed)
        const completed = yield* stamps()
        assert.strictEqual(completed[1]!.claimed_at!.getTime(), renewed[1]!.claimed_at!.getTime())
      }))
  })

  describe("the store transaction", () => {
    it.effect("a failing INSERT fails the call with StoreError and rolls back the business row", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE orders_a (id text PRIMARY KEY)`
        const before = yield* count("outbox")
        const error = yield* store.withTransaction((publish) =>
          Effect.andThen(sql`INSERT INTO orders_a (id) VALUES ('o-1')`, publish([valid(1, { metadataJson: "not json" })]))
        ).pipe(Effect.flip)
        assert.instanceOf(error, StoreError)
        assert.strictEqual((error as StoreError).operation, "publish")
        assert.strictEqual(yield* count("orders_a"), 0)
        assert.strictEqual(yield* count("outbox"), before)
      }))

    it.effect("a failed INSERT the body swallows still fails the call: COMMIT of an aborted transaction rolls back", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE orders_b (id text PRIMARY KEY)`
        const before = yield* count("outbox")
        const exit = yield* store.withTransaction((publish) =>
          Effect.gen(function*() {
            yield* sql`INSERT INTO orders_b (id) VALUES ('o-1')`
            yield* publish([valid(1)])
            const swallowed = yield* publish([valid(2, { payloadJson: "{" })]).pipe(Effect.flip)
            assert.instanceOf(swallowed, StoreError)
            return "done"
          })
        ).pipe(Effect.exit)
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
        assert.instanceOf(error && "error" in error ? error.error : undefined, StoreError)
        assert.strictEqual(yield* count("orders_b"), 0)
        assert.strictEqual(yield* count("outbox"), before)
      }))

    it.effect("a BEGIN that fails surfaces as StoreError and the body never runs", () =>
      Effect.gen(function*() {
        const store = yield* OutboxStore
        let ran = false
        const error = yield* store.withTransaction(() => Effect.sync(() => (ran = true))).pipe(
          Effect.provideService(SqlClient.BeginTransaction, "BEGIN ISOLATION LEVEL NONSENSE"),
          Effect.flip
        )
        assert.instanceOf(error, StoreError)
        assert.strictEqual((error as StoreError).operation, "transaction")
        assert.isFalse(ran)
        // the pool is still usable
        assert.strictEqual((yield* store.withTransaction((publish) => publish([valid(1)]))).length, 1)
      }))

    it.effect("an interrupted transaction commits neither business rows nor events", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE orders_c (id text PRIMARY KEY)`
        const before = yield* count("outbox")
        const written = yield* Deferred.make<void>()
        const fiber = yield* Outbox.transaction(Effect.gen(function*() {
          yield* sql`INSERT INTO orders_c (id) VALUES ('o-1')`
          yield* Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload: {} })
          yield* Deferred.succeed(written, undefined)
          return yield* Effect.never
        })).pipe(Effect.forkChild({ startImmediately: true }))
        yield* Deferred.await(written)
        // both rows exist, uncommitted, while the transaction is open
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* count("orders_c"), 0)
        assert.strictEqual(yield* count("outbox"), before)
        // a later transaction on the same pool commits normally
        yield* Outbox.transaction(Effect.andThen(
          sql`INSERT INTO orders_c (id) VALUES ('o-1')`,
          Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload: {} })
        ))
        assert.strictEqual(yield* count("orders_c"), 1)
        assert.strictEqual(yield* count("outbox"), before + 1)
      }))

    it.effect("a failed nested transaction discards only its own rows; afterCommit runs once, after COMMIT", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE orders_d (id text PRIMARY KEY)`
        const seen: Array<string> = []
        const result = yield* Outbox.transaction(Effect.gen(function*() {
          yield* sql`INSERT INTO orders_d (id) VALUES ('outer')`
          const outer = yield* Outbox.publish({ aggregateType: "Order", aggregateId: "outer", eventType: "E", payload: {} })
          yield* sql.afterCommit(Effect.sync(() => seen.push("outer committed")))
          const failed = yield* Outbox.transaction(Effect.gen(function*() {
            yield* sql`INSERT INTO orders_d (id) VALUES ('inner')`
            yield* Outbox.publish({ aggregateType: "Order", aggregateId: "inner", eventType: "E", payload: {} })
            yield* sql.afterCommit(Effect.sync(() => seen.push("inner committed")))
            return yield* Effect.fail(new Boom())
          })).pipe(Effect.flip)
          assert.instanceOf(failed, Boom)
          const kept = yield* Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId: "kept", eventType: "E", payload: {} }))
          seen.push("body done")
          return [outer, kept]
        }))
        assert.deepStrictEqual(seen, ["body done", "outer committed"])
        const ids = yield* sql<{ id: string }>`SELECT id FROM orders_d ORDER BY id`
        assert.deepStrictEqual(ids.map((r) => r.id), ["outer"])
        const rows = yield* Effect.forEach(result, (p) => record(p.id))
        assert.deepStrictEqual(rows.map((r) => r.aggregateId), ["outer", "kept"])
        const inner = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE aggregate_id = 'inner'`
        assert.strictEqual(inner[0]!.n, 0)
      }))
  })
})
