/**
 * Scheduled events through the relay, on the memory store and PostgreSQL
 * under TestClock: an event published with `delay` or `availableAt` is not
 * delivered before its time, and is delivered within one poll after it,
 * while unscheduled events flow at once.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advance, eventually } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

const stores = RelayTestKit.stores

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay and scheduled events under TestClock", (it) => {
  for (const store of stores) {
    describe(store.name, () => {
      it.effect("a delayed or scheduled event is delivered at its time, not before; others at once", () =>
        Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          yield* Outbox.transaction(Outbox.publishAll([
            { aggregateType: "Order", aggregateId: "reminder", eventType: "Remind", payload: {}, delay: "1 minute" },
            { aggregateType: "Order", aggregateId: "now", eventType: "Placed", payload: {} },
            { aggregateType: "Order", aggregateId: "noon", eventType: "Remind", payload: {}, availableAt: new Date(start + 90_000) }
          ]))
          const delivered: Array<readonly [string, number]> = []
          const scope = yield* Scope.make()
          yield* Layer.buildWithScope(
            Relay.layer.pipe(
              Layer.provide(OutboxSink.layerHandler((event) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => void delivered.push([event.aggregateId, now - start])))
              )),
              Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(100) }))
            ),
            scope
          )
          yield* eventually(Effect.sync(() => delivered.length === 1))
          assert.deepStrictEqual(delivered.map(([id]) => id), ["now"])
          yield* advance("59900 millis", "100 millis")
          assert.strictEqual(delivered.length, 1, "delivered before its time")
          yield* advance("300 millis", "100 millis")
          assert.deepStrictEqual(delivered.map(([id]) => id), ["now", "reminder"])
          assert.isAtLeast(delivered[1]![1], 60_000)
          assert.isAtMost(delivered[1]![1], 60_200)
          yield* advance("29700 millis", "100 millis")
          assert.strictEqual(delivered.length, 2, "delivered before its time")
          yield* advance("300 millis", "100 millis")
          assert.deepStrictEqual(delivered.map(([id]) => id), ["now", "reminder", "noon"])
          assert.isAtLeast(delivered[2]![1], 90_000)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
    })
  }
})
