import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import * as Relay from "../src/Relay.ts"

/** A relay over the real PostgreSQL store with the database clock, in its own scope. */
const relay = <E>(handler: (event: OutboxEvent) => Effect.Effect<void, E>, config: Partial<OutboxConfig.Options>) =>
  Layer.build(
    Relay.layer.pipe(
      Layer.provide(OutboxSink.layerHandler(handler)),
      Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(20), ...config }))
    )
  )

const waitUntil = (condition: Effect.Effect<boolean>, what: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("20 millis") }),
    Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

layer(Layer.provideMerge(PgOutboxStore.layer(), TestDatabase.layer), { timeout: "60 seconds", excludeTestServices: true })("relay on PostgreSQL", (it) => {
  describe("delivery", () => {
    it.effect("concurrent workers of two relays never deliver one event to two handlers at once", () =>
      Effect.gen(function*() {
        const total = 3000
        yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: total }, (_, i) => ({
          aggregateType: "Order",
          aggregateId: `o-${i % 50}`,
          eventType: "OrderCreated",
          payload: { i }
        }))))
        const inFlight = new Set<string>()
        const deliveries = new Map<string, number>()
        let overlaps = 0
        const handler = (event: OutboxEvent) =>
          Effect.gen(function*() {
            if (inFlight.has(event.trackingId)) overlaps++
            inFlight.add(event.trackingId)
            deliveries.set(event.trackingId, (deliveries.get(event.trackingId) ?? 0) + 1)
            yield* Effect.yieldNow
            inFlight.delete(event.trackingId)
          })
        yield* Effect.scoped(Effect.gen(function*() {
          yield* relay(handler, { concurrency: 4, batchSize: 25 })
          yield* relay(handler, { concurrency: 4, batchSize: 25 })
          yield* waitUntil(Effect.sync(() => deliveries.size === total), "every event delivered")
        }))
        assert.strictEqual(overlaps, 0)
        assert.strictEqual(deliveries.size, total)
        // no failures and long leases: each event was delivered exactly once
        assert.isTrue(Array.from(deliveries.values()).every((n) => n === 1))
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status <> 'COMPLETED'`
        assert.strictEqual(row!.n, 0)
      }))

    it.effect("a rolled-back publish is never delivered; rows inserted with plain SQL are", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        yield* sql`CREATE TABLE orders (id text PRIMARY KEY)`
        const failure = yield* Outbox.transaction(Effect.gen(function*() {
          yield* sql`INSERT INTO orders (id) VALUES ('rolled-back')`
          yield* Outbox.publish({ aggregateType: "Order", aggregateId: "rolled-back", eventType: "OrderCreated", payload: {} })
          return yield* Effect.fail("payment declined" as const)
        })).pipe(Effect.flip)
        assert.strictEqual(failure, "payment declined")
        yield* Outbox.transaction(Effect.gen(function*() {
          yield* sql`INSERT INTO orders (id) VALUES ('committed')`
          yield* Outbox.publish({ aggregateType: "Order", aggregateId: "committed", eventType: "OrderCreated", payload: {} })
        }))
        // another language's producer: only the required columns, defaults fill the rest
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
                   VALUES ('Order', 'plain-sql', 'OrderCreated', '{"from":"psql"}')`

        const seen: Array<string> = []
        yield* Effect.scoped(Effect.gen(function*() {
          yield* relay((event) => Effect.sync(() => seen.push(event.aggregateId)), {})
          yield* waitUntil(Effect.sync(() => seen.length >= 2), "two deliveries")
          // one more claim round: nothing else may turn up
          yield* Effect.sleep("200 millis")
        }))
        assert.deepStrictEqual(seen, ["committed", "plain-sql"])
        const orders = yield* sql<{ id: string }>`SELECT id FROM orders ORDER BY id`
        assert.deepStrictEqual(orders.map((o) => o.id), ["committed"])
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE aggregate_id = 'rolled-back'`
        assert.strictEqual(row!.n, 0)
      }))

    it.effect("under Effect's built-in tracer (no exporter) the relay makes no span: a handler runs without a parent span", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        yield* Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId: "untraced", eventType: "OrderCreated", payload: {} }))
        const parents: Array<string> = []
        yield* Effect.scoped(Effect.gen(function*() {
          yield* relay(() =>
            Effect.flatMap(Effect.option(Effect.currentParentSpan), (span) =>
              Effect.sync(() => parents.push(span._tag === "Some" ? `${span.value._tag}` : "none"))), {})
          yield* waitUntil(Effect.sync(() => parents.length >= 1), "one delivery")
        }))
        assert.deepStrictEqual(parents, ["none"])
      }))
  })
})
