import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as RelayInstruments from "../src/internal/relayInstruments.ts"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"

const event = (id: number, eventType: string, tenant?: string): OutboxEvent => ({
  id: BigInt(id),
  trackingId: `t-${id}`,
  aggregateType: "Order",
  aggregateId: `o-${id}`,
  eventType,
  payload: {},
  metadata: tenant === undefined ? {} : { tenant_id: tenant },
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(0),
  lockToken: 1n,
  lockedUntil: new Date(0)
})

/** The instruments over a registry of their own (`read` reads it), with `labels` allow-listed. */
const instrumented = (labels: ReadonlyArray<string>) => {
  const context = Context.make(Metric.MetricRegistry, new Map())
  return Effect.map(
    RelayInstruments.make.pipe(
      Effect.provideService(Metric.MetricRegistry, Context.get(context, Metric.MetricRegistry)),
      Effect.provideService(OutboxMetrics.MetricLabels, labels)
    ),
    (instruments) => ({ instruments, read: <S>(metric: Metric.Metric<number, S>): S => metric.valueUnsafe(context), context })
  )
}

describe("relay instruments", () => {
  it("every relay metric is a series of the one cache: one object per label set, views included", () => {
    const labels = { event_type: "Created", outcome: "completed" }
    assert.strictEqual(OutboxTelemetry.handlerDuration({ ...labels }), OutboxTelemetry.handlerDuration({ ...labels }))
    assert.strictEqual(OutboxTelemetry.handlerDuration.by("event_type", "outcome")("Created", "completed"), OutboxTelemetry.handlerDuration(labels))
    assert.strictEqual(OutboxTelemetry.endToEndLatency.by("event_type")("Created"), OutboxTelemetry.endToEndLatency({ event_type: "Created" }))
    assert.strictEqual(OutboxTelemetry.eventsCompleted.by("aggregate_type", "event_type")("Order", "Created"), OutboxTelemetry.eventsCompleted({ aggregate_type: "Order", event_type: "Created" }))
    assert.strictEqual(OutboxTelemetry.eventsClaimed(), OutboxTelemetry.eventsClaimed())
    assert.strictEqual(OutboxTelemetry.relayFailures({ loop: "claim" }), OutboxTelemetry.relayFailures({ loop: "claim" }))
    assert.notStrictEqual(OutboxTelemetry.relayFailures({ loop: "claim" }), OutboxTelemetry.relayFailures({ loop: "heartbeat" }))
    assert.strictEqual(OutboxTelemetry.pendingEvents(), OutboxTelemetry.pendingEvents())
  })

  it.effect("claim, deliver, complete, retry: the same names and labels as the catalog", () =>
    Effect.gen(function*() {
      const { instruments, read } = yield* instrumented([])
      // an empty poll is not observed
      assert.deepStrictEqual(yield* instruments.claim(Effect.succeed([])), { events: [], span: undefined })
      assert.strictEqual(read(OutboxTelemetry.claimBatchSize()).count, 0)
      const batch = [event(1, "Created"), event(2, "Created"), event(3, "Paid")]
      const claimed = yield* instruments.claim(Effect.succeed(batch))
      assert.strictEqual(claimed.events, batch)
      assert.isUndefined(claimed.span, "no span under Effect's built-in tracer")
      assert.strictEqual(read(OutboxTelemetry.eventsClaimed()).count, 3)
      assert.strictEqual(read(OutboxTelemetry.claimBatchSize()).count, 1)

      instruments.delivered(batch[0]!, "completed", 0.002)
      instruments.delivered(batch[1]!, "completed", 0.003)
      instruments.delivered(batch[2]!, "retried", 0.5)
      instruments.completed(batch.slice(0, 2))
      instruments.retried(batch[2]!)
      const handler = read(OutboxTelemetry.handlerDuration({ event_type: "Created", outcome: "completed" }))
      assert.strictEqual(handler.count, 2)
      assert.closeTo(handler.sum, 0.005, 1e-9)
      assert.strictEqual(read(OutboxTelemetry.handlerDuration({ event_type: "Paid", outcome: "retried" })).count, 1)
      assert.strictEqual(read(OutboxTelemetry.eventsCompleted({ aggregate_type: "Order", event_type: "Created" })).count, 2)
      assert.strictEqual(read(OutboxTelemetry.endToEndLatency({ event_type: "Created" })).count, 2)
      assert.strictEqual(read(OutboxTelemetry.eventsRetried({ aggregate_type: "Order", event_type: "Paid" })).count, 1)

      instruments.leaseLost("complete", 2)
      yield* instruments.failed("heartbeat")
      assert.strictEqual(read(OutboxTelemetry.leaseLost({ operation: "complete" })).count, 2)
      assert.strictEqual(read(OutboxTelemetry.relayFailures({ loop: "heartbeat" })).count, 1)
      assert.strictEqual(read(OutboxTelemetry.relayFailures({ loop: "claim" })).count, 0)
    }))

  it.effect("allow-listed labels are added to the event-scoped series", () =>
    Effect.gen(function*() {
      const { instruments, read } = yield* instrumented(["tenant_id"])
      const batch = [event(1, "Created", "acme"), event(2, "Created", "globex"), event(3, "Created", "acme")]
      for (const e of batch) instruments.delivered(e, "completed", 0.001)
      instruments.completed(batch)
      instruments.deadLettered(batch[1]!)
      for (const [tenant, n] of [["acme", 2], ["globex", 1]] as const) {
        assert.strictEqual(read(OutboxTelemetry.handlerDuration({ event_type: "Created", outcome: "completed", tenant_id: tenant })).count, n)
        assert.strictEqual(read(OutboxTelemetry.endToEndLatency({ event_type: "Created", tenant_id: tenant })).count, n)
        assert.strictEqual(
          read(OutboxTelemetry.eventsCompleted({ aggregate_type: "Order", event_type: "Created", tenant_id: tenant })).count,
          n
        )
      }
      assert.strictEqual(
        read(OutboxTelemetry.eventsDeadLettered({ aggregate_type: "Order", event_type: "Created", tenant_id: "globex" })).count,
        1
      )
      // nothing under the labels without the tenant
      assert.strictEqual(read(OutboxTelemetry.handlerDuration({ event_type: "Created", outcome: "completed" })).count, 0)
    }))

  it.effect("metrics off: nothing is updated", () =>
    Effect.gen(function*() {
      const { instruments, read } = yield* instrumented([]).pipe(Effect.provideService(OutboxTelemetry.MetricsEnabled, false))
      const batch = [event(1, "Created")]
      yield* instruments.claim(Effect.succeed(batch))
      instruments.delivered(batch[0]!, "completed", 0.001)
      instruments.completed(batch)
      assert.strictEqual(read(OutboxTelemetry.eventsClaimed()).count, 0)
      assert.strictEqual(read(OutboxTelemetry.handlerDuration({ event_type: "Created", outcome: "completed" })).count, 0)
      assert.strictEqual(read(OutboxTelemetry.eventsCompleted({ aggregate_type: "Order", event_type: "Created" })).count, 0)
    }))
})
