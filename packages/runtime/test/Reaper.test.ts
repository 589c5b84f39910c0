import { assert, describe, it } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { StoreError } from "@outbox/core/OutboxError"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as MemoryOutboxStore from "@outbox/testing/MemoryOutboxStore"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { TestClock } from "effect/testing"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"
import * as Reaper from "../src/Reaper.ts"

const Config = OutboxConfig.layer({ leaseDuration: Duration.seconds(30) })

/** The store in context, whose reap always fails. */
const failingReap = Layer.effect(
  OutboxStore,
  Effect.map(Effect.service(OutboxStore), (store) =>
    OutboxStore.of({
      ...store,
      reap: Effect.fail(new StoreError({ operation: "reap", message: "connection reset", retryable: true }))
    }))
)

describe("Reaper", () => {
  it.effect("every lease/2 it puts expired leases back to PENDING; the status counts them", () =>
    Effect.gen(function*() {
      const store = yield* OutboxStore
      const event = yield* Outbox.transaction(
        Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload: {} })
      )
      // a worker claims the event and stops: no heartbeat, no completion
      yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })
      const reaper = Context.get(yield* Layer.build(Reaper.layer), Reaper.Reaper)
      yield* Effect.yieldNow
      assert.deepStrictEqual((yield* reaper.status).requeued, 0)
      yield* TestClock.adjust("45 seconds")
      const status = yield* reaper.status
      assert.deepStrictEqual([status.runs, status.failures, status.requeued, status.deadLettered], [4, 0, 1, 0])
      const row = yield* store.get(event.id)
      assert.strictEqual(row._tag === "Some" ? row.value.status : undefined, "PENDING")
    }).pipe(Effect.provide(Layer.merge(MemoryOutboxStore.layer, Config))))

  it.effect("a failed reap is logged and counted (status, outbox_relay_failures_total{loop=reaper}); it goes on", () =>
    Effect.gen(function*() {
      const failures = Metric.value(OutboxTelemetry.relayFailures({ loop: "reaper" }))
      const before = (yield* failures).count
      const reaper = Context.get(yield* Layer.build(Reaper.layer), Reaper.Reaper)
      yield* TestClock.adjust("15 seconds")
      const status = yield* reaper.status
      assert.deepStrictEqual([status.runs, status.failures], [2, 2])
      assert.include(status.lastError, "connection reset")
      assert.strictEqual((yield* failures).count, before + 2)
    }).pipe(Effect.provide(failingReap.pipe(Layer.provideMerge(MemoryOutboxStore.layer), Layer.merge(Config)))))
})
