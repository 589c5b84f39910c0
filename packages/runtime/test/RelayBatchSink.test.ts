/**
 * The relay with a sink that delivers whole batches (`deliverBatch`, as the
 * broker sinks do), against the memory store and PostgreSQL under
 * TestClock: one call per claimed batch; the acked events completed; the
 * others retried or dead-lettered by the same policy as after `deliver`;
 * a batch interrupted by shutdown completes nothing and releases its leases.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advanceUntil, eventually } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

const stores = RelayTestKit.stores

type Fate = "ack" | "transient" | "permanent"

/**
 * A batch sink: each event's payload says what the far side does with it.
 * It records every batch it was handed; `deliver` (one event) must not be
 * used by the relay when `deliverBatch` exists, so it dies.
 */
const batchSink = (batches: Array<ReadonlyArray<string>>, hang = false) =>
  Layer.succeed(
    OutboxSink,
    OutboxSink.of({
      name: "batch",
      deliver: () => Effect.die(new Error("deliver called on a batch sink")),
      deliverBatch: (events: ReadonlyArray<OutboxEvent>) =>
        Effect.suspend(() => {
          batches.push(events.map((e) => e.aggregateId))
          if (hang) return Effect.never
          return Effect.succeed(events.map((event) => {
            const fate = (event.payload as { fate: Fate }).fate
            return fate === "ack"
              ? undefined
              : fate === "transient"
              ? DeliveryError.transient(`broker busy (${event.aggregateId})`)
              : DeliveryError.permanent(`unroutable (${event.aggregateId})`)
          }))
        })
    })
  )

const startRelay = (sink: Layer.Layer<OutboxSink>, claimMode: OutboxConfig.Options["claimMode"] = "lease") =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(sink),
        Layer.provide(OutboxConfig.layer({
          leaseDuration: Duration.seconds(30),
          pollInterval: Duration.millis(100),
          batchSize: 50,
          minBatchSize: 50,
          shutdownTimeout: Duration.seconds(1),
          claimMode
        }))
      ),
      scope
    )
    return { scope, relay: Context.get(context, Relay.Relay) }
  })

const publish = (fates: ReadonlyArray<Fate>) =>
  Outbox.transaction(
    Outbox.publishAll(fates.map((fate, i) => ({
      aggregateType: "Order",
      aggregateId: `order-${i}`,
      eventType: "OrderCreated",
      payload: { fate }
    })))
  )

const statuses = (ids: ReadonlyArray<bigint>) =>
  Effect.flatMap(Effect.service(OutboxStore), (store) =>
    Effect.forEach(ids, (id) => Effect.map(store.get(id), (r) => Option.getOrThrow(r))))

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay with a batch sink (deliverBatch) under TestClock", (it) => {
  for (const store of stores) {
    describe(store.name, () => {
      for (const claimMode of ["lease", "transaction"] as const) {
      it.effect(`${claimMode} claim: one call per claimed batch; acked events completed, the others retried or dead-lettered`, () =>
        Effect.gen(function*() {
          const fates: ReadonlyArray<Fate> = ["ack", "transient", "ack", "permanent", "ack", "ack"]
          const published = yield* publish(fates)
          const batches: Array<ReadonlyArray<string>> = []
          const { relay, scope } = yield* startRelay(batchSink(batches), claimMode)
          yield* eventually(Effect.map(relay.stats, (s) => s.completed + s.retried + s.deadLettered === 6))
          const stats = yield* relay.stats
          assert.strictEqual(stats.completed, 4)
          assert.strictEqual(stats.retried, 1)
          assert.strictEqual(stats.deadLettered, 1)
          // the whole claim in one call, in id order
          assert.deepStrictEqual(batches[0], fates.map((_, i) => `order-${i}`))
          const rows = yield* statuses(published.map((p) => p.id))
          assert.deepStrictEqual(rows.map((r) => r.status), ["COMPLETED", "FAILED", "COMPLETED", "DEAD_LETTER", "COMPLETED", "COMPLETED"])
          assert.strictEqual(rows[1]!.retryCount, 1)
          assert.include(rows[1]!.lastError ?? "", "broker busy (order-1)")
          assert.include(rows[3]!.lastError ?? "", "unroutable (order-3)")
          // the retried one comes back alone after its backoff, and fails again (still transient)
          yield* advanceUntil(Effect.sync(() => batches.length >= 2), { step: "1 second", max: "2 minutes" })
          assert.deepStrictEqual(batches[1], ["order-1"])
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }

      it.effect("a batch in flight at shutdown completes nothing and releases its leases (claimable again, no attempt)", () =>
        Effect.gen(function*() {
          const published = yield* publish(["ack", "ack", "ack"])
          const batches: Array<ReadonlyArray<string>> = []
          const { relay, scope } = yield* startRelay(batchSink(batches, true))
          yield* eventually(Effect.sync(() => batches.length === 1))
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
          yield* TestClock.adjust("1 second")
          yield* eventually(Effect.sync(() => closing.pollUnsafe() !== undefined))
          const stats = yield* relay.stats
          assert.strictEqual(stats.completed, 0)
          assert.strictEqual(stats.released, 3)
          const rows = yield* statuses(published.map((p) => p.id))
          assert.deepStrictEqual(rows.map((r) => [r.status, r.retryCount]), [["PENDING", 0], ["PENDING", 0], ["PENDING", 0]])
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
    })
  }
})
