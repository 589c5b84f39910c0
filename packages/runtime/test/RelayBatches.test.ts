/**
 * The relay's adaptive batches, against the memory store and PostgreSQL
 * under TestClock: the limits the store is asked for (small when the outbox
 * is nearly empty, doubling under a backlog, capped for a slow handler,
 * fixed when min = max), and a full batch of 1,000 slow deliveries kept
 * alive by the heartbeat.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { Lease, OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advance, advanceUntil, eventually } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

const stores = RelayTestKit.stores

/** What the relay asked the store: each claim's limit, and the size of each renewal. */
interface Calls {
  readonly limits: Array<number>
  readonly renewals: Array<number>
}

/** The store in context, recording into `calls`. */
const recording = (calls: Calls) =>
  Layer.effect(
    OutboxStore,
    Effect.map(Effect.service(OutboxStore), (store) =>
      OutboxStore.of({
        ...store,
        claim: (options) =>
          Effect.suspend(() => {
            calls.limits.push(options.limit)
            return store.claim(options)
          }),
        renew: (leases: ReadonlyArray<Lease>, leaseDuration) =>
          Effect.suspend(() => {
            calls.renewals.push(leases.length)
            return store.renew(leases, leaseDuration)
          })
      }))
  )

const startRelay = (
  handler: (event: OutboxEvent) => Effect.Effect<void>,
  config: Partial<OutboxConfig.Options> = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(handler)),
        Layer.provide(OutboxConfig.layer({ leaseDuration: Duration.seconds(30), pollInterval: Duration.millis(100), ...config }))
      ),
      scope
    )
    return { scope, relay: Context.get(context, Relay.Relay) }
  })

const publish = (n: number) =>
  Outbox.transaction(
    Outbox.publishAll(Array.from({ length: n }, (_, i) => ({
      aggregateType: "Order",
      aggregateId: `order-${i}`,
      eventType: "OrderCreated",
      payload: { n: i }
    })))
  )

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay adaptive batches under TestClock", (it) => {
  for (const store of stores) {
    describe(store.name, () => {
      it.effect("claims 10 when nearly empty, doubles to 1,000 under a backlog, falls back once it drained", () => {
        const calls: Calls = { limits: [], renewals: [] }
        return Effect.gen(function*() {
          // nearly empty: 3 events, then nothing (the defaults: 10..1000)
          yield* publish(3)
          const { relay, scope } = yield* startRelay(() => Effect.void)
          yield* eventually(Effect.map(relay.stats, (s) => s.completed === 3))
          yield* advance("1 second", "100 millis")
          assert.isAbove(calls.limits.length, 2)
          assert.deepStrictEqual(new Set(calls.limits), new Set([10]))

          // a backlog of 2,500: 10+20+...+640 = 1,270, then 1,000 twice (full, then the 230 left)
          calls.limits.length = 0
          yield* publish(2500)
          yield* advanceUntil(Effect.map(relay.stats, (s) => s.completed === 2503), { step: "100 millis", max: "1 minute" })
          yield* advance("300 millis", "100 millis")
          assert.deepStrictEqual(calls.limits.slice(0, 11), [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 320, 10])
          assert.deepStrictEqual(new Set(calls.limits.slice(10)), new Set([10]))
          assert.strictEqual((yield* relay.stats).claimed, 2503)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(recording(calls)), Effect.provide(store.layer), Effect.provide(TestClock.layer()))
      })

      it.effect("min = max keeps fixed batches; a smaller batchSize caps the default min", () => {
        const calls: Calls = { limits: [], renewals: [] }
        return Effect.gen(function*() {
          yield* publish(120)
          const fixed = yield* startRelay(() => Effect.void, { batchSize: 50, minBatchSize: 50 })
          yield* eventually(Effect.map(fixed.relay.stats, (s) => s.completed === 120))
          yield* advance("300 millis", "100 millis")
          yield* Scope.close(fixed.scope, Exit.void)
          // 50, 50, 50 (20 left), then empty polls: always 50
          assert.deepStrictEqual(calls.limits.slice(0, 3), [50, 50, 50])
          assert.deepStrictEqual(new Set(calls.limits), new Set([50]))

          calls.limits.length = 0
          yield* publish(20)
          const small = yield* startRelay(() => Effect.void, { batchSize: 5 })
          yield* eventually(Effect.map(small.relay.stats, (s) => s.completed === 20))
          yield* Scope.close(small.scope, Exit.void)
          assert.deepStrictEqual(calls.limits.slice(0, 4), [5, 5, 5, 5])
          assert.deepStrictEqual(new Set(calls.limits), new Set([5]))
        }).pipe(Effect.provide(recording(calls)), Effect.provide(store.layer), Effect.provide(TestClock.layer()))
      })

      it.effect("a slow handler keeps batches within one heartbeat period (lease/3) instead of growing to 1,000", () => {
        const calls: Calls = { limits: [], renewals: [] }
        return Effect.gen(function*() {
          yield* publish(1000)
          // 100 ms per event, lease 30 s: 10 s per batch is 100 events, so the limit stops at 80
          const { relay, scope } = yield* startRelay(() => Effect.sleep("100 millis"))
          yield* advanceUntil(Effect.map(relay.stats, (s) => s.completed === 1000), { step: "100 millis", max: "3 minutes" })
          assert.deepStrictEqual(calls.limits.slice(0, 7), [10, 20, 40, 80, 80, 80, 80])
          assert.strictEqual(Math.max(...calls.limits), 80)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(recording(calls)), Effect.provide(store.layer), Effect.provide(TestClock.layer()))
      })

      it.effect("a batch of 1,000 slow deliveries outlives three lease lengths: renewed, delivered once, none reaped", () => {
        const calls: Calls = { limits: [], renewals: [] }
        return Effect.gen(function*() {
          yield* publish(1000)
          let deliveries = 0
          const at: Array<number> = []
          // 100 ms per event: the batch takes 100 s, the lease is 30 s
          const { relay, scope } = yield* startRelay(
            () =>
              Effect.andThen(
                Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => (deliveries++, at.push(now)))),
                Effect.sleep("100 millis")
              ),
            { batchSize: 1000, minBatchSize: 1000 }
          )
          yield* advanceUntil(Effect.map(relay.stats, (s) => s.completed === 1000), { step: "100 millis", max: "3 minutes" })
          const stats = yield* relay.stats
          assert.strictEqual(deliveries, 1000)
          assert.isAtLeast(at[999]! - at[0]!, 99_900)
          assert.strictEqual(stats.claimed, 1000)
          assert.strictEqual(stats.leaseLost, 0)
          assert.strictEqual(stats.reaped, 0)
          assert.strictEqual(calls.limits[0], 1000)
          // every lease/3 = 10 s (at 10, 20, ..., 90 s), one statement renewing all the batch's leases (the
          // delivered ones are held until the batch is completed)
          assert.isAtLeast(calls.renewals.length, 9)
          assert.deepStrictEqual(new Set(calls.renewals), new Set([1000]))
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(recording(calls)), Effect.provide(store.layer), Effect.provide(TestClock.layer()))
      })
    })
  }
})
