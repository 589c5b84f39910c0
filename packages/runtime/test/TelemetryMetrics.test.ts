import { assert, describe, it, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import { DeliveryError } from "@outbox/core/OutboxError"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as HttpServer from "effect/http/HttpServer"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"
import * as Relay from "../src/Relay.ts"

/** Flaky events fail once, Poison events are refused for good, the rest succeed. */
const attempts = new Map<string, number>()
const SinkLive = OutboxSink.layerHandler((event) => {
  const n = (attempts.get(event.trackingId) ?? 0) + 1
  attempts.set(event.trackingId, n)
  if (event.eventType === "Poison") return Effect.fail(DeliveryError.permanent("cannot parse"))
  if (event.eventType === "Flaky" && n === 1) return Effect.fail(DeliveryError.transient("try again"))
  return Effect.void
})

/** The whole outbox (store, relay, maintenance, health, gauges) plus a `/metrics` server on a free port. */
const Live = Layer.mergeAll(
  OutboxLive.layer({
    config: { pollInterval: Duration.millis(20) },
    telemetry: OutboxTelemetry.layer({ labels: [] })
  }).pipe(
    Layer.provide(SinkLive),
    // gauges (and the redrive meter) sampled every 100 ms
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { ...process.env as Record<string, string>, OUTBOX_METRICS_SAMPLE_INTERVAL: "100 millis" } })))
  ),
  OutboxTelemetry.layerPrometheus({ port: 0, host: "127.0.0.1" })
).pipe(Layer.provideMerge(TestDatabase.layer))

/** `name` appears as a sample line (`name{...} v` or `name v`). */
const exported = (text: string, name: string) => new RegExp(`^${name}(\\{[^}]*\\})? `, "m").test(text)

const scrape = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  const response = yield* Effect.promise(() => fetch(`${HttpServer.formatAddress(server.address)}/metrics`))
  assert.strictEqual(response.status, 200)
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/)
  return yield* Effect.promise(() => response.text())
})

const value = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("metrics of a running relay", (it) => {
  describe("/metrics over real HTTP", () => {
    it.effect("exports every name of the catalog, with the counts of what flowed", () =>
      Effect.gen(function*() {
        const relay = yield* Relay.Relay
        yield* Outbox.transaction(Outbox.publishAll([
          ...Array.from({ length: 5 }, (_, i) => ({ aggregateType: "Order", aggregateId: `o-${i}`, eventType: "OrderCreated", payload: { i } })),
          { aggregateType: "Order", aggregateId: "f-1", eventType: "Flaky", payload: {}, maxRetries: 3 },
          { aggregateType: "Order", aggregateId: "p-1", eventType: "Poison", payload: {} }
        ]))
        // a rolled-back publish is not counted
        yield* Outbox.transaction(
          Effect.andThen(
            Outbox.publish({ aggregateType: "Order", aggregateId: "x", eventType: "OrderCreated", payload: {} }),
            Effect.fail("rolled back")
          )
        ).pipe(Effect.ignore)
        yield* relay.stats.pipe(
          Effect.repeat({ until: (s) => s.completed === 6 && s.deadLettered === 1, schedule: Schedule.spaced("50 millis") }),
          Effect.timeout("20 seconds")
        )
        const text = yield* scrape
        const missing = [
          ...OutboxTelemetry.catalog.counters.filter((name) => !exported(text, name)),
          ...OutboxTelemetry.catalog.histograms.filter((name) =>
            !["_bucket", "_sum", "_count"].every((suffix) => exported(text, name + suffix))
          ),
          ...OutboxTelemetry.catalog.gauges.filter((name) => !exported(text, name))
        ]
        assert.deepStrictEqual(missing, [], text)
        // counters are counters, gauges are gauges
        for (const name of OutboxTelemetry.catalog.counters) assert.include(text, `# TYPE ${name} counter`)
        for (const name of OutboxTelemetry.catalog.gauges) assert.include(text, `# TYPE ${name} gauge`)
        for (const name of OutboxTelemetry.catalog.histograms) assert.include(text, `# TYPE ${name} histogram`)
        // `_total` exactly once
        assert.notMatch(text, /_total_total/)

        assert.strictEqual(value(text, `outbox_events_published_total{aggregate_type="Order",event_type="OrderCreated"}`), 5)
        assert.strictEqual(value(text, `outbox_events_completed_total{aggregate_type="Order",event_type="OrderCreated"}`), 5)
        assert.strictEqual(value(text, `outbox_events_completed_total{aggregate_type="Order",event_type="Flaky"}`), 1)
        assert.strictEqual(value(text, `outbox_events_retried_total{aggregate_type="Order",event_type="Flaky"}`), 1)
        assert.strictEqual(value(text, `outbox_events_dead_lettered_total{aggregate_type="Order",event_type="Poison"}`), 1)
        assert.strictEqual(value(text, `outbox_handler_duration_seconds_count{event_type="Poison",outcome="dead_lettered"}`), 1)
        assert.strictEqual(value(text, `outbox_end_to_end_latency_seconds_count{event_type="OrderCreated"}`), 5)
        assert.isAtLeast(value(text, "outbox_events_claimed_total") ?? 0, 8)
        assert.strictEqual(value(text, `outbox_lease_lost_total{operation="complete"}`), 0)
        assert.strictEqual(value(text, `outbox_relay_failures_total{loop="gauges"}`), 0)
        assert.match(text, /^outbox_partitions_ahead\{table="[^"]*outbox"\} \d+/m)
        // no tracking id, aggregate id or tenant in any label by default
        assert.notMatch(text, /aggregate_id=|tracking_id=/)
      }))

    it.effect("a redrive made outside the relay (as by the CLI) is counted once in outbox_events_redriven_total", () =>
      Effect.gen(function*() {
        const relay = yield* Relay.Relay
        const before = (yield* relay.stats).deadLettered
        yield* Outbox.transaction(Outbox.publishAll([
          { aggregateType: "Order", aggregateId: "p-2", eventType: "Poison", payload: {} },
          { aggregateType: "Order", aggregateId: "p-3", eventType: "Poison", payload: {} }
        ]))
        yield* relay.stats.pipe(
          Effect.repeat({ until: (s) => s.deadLettered === before + 2, schedule: Schedule.spaced("50 millis") }),
          Effect.timeout("20 seconds")
        )
        const redriven = () => Effect.map(scrape, (text) => value(text, "outbox_events_redriven_total") ?? -1)
        const start = yield* redriven()
        // a separate DeadLetters service, as `npx outbox dlq redrive` in another process
        const dlq = yield* DeadLetters.make()
        const report = yield* dlq.redrive({ by: "ops", reason: "test", filter: { eventTypes: ["Poison"] }, batchSize: 1 })
        assert.strictEqual(report._tag === "Redriven" ? report.redriven : 0, 3)
        yield* redriven().pipe(
          Effect.repeat({ until: (n) => n === start + 3, schedule: Schedule.spaced("50 millis") }),
          Effect.timeout("10 seconds")
        )
        // later samples add nothing more
        yield* Effect.sleep("400 millis")
        assert.strictEqual(yield* redriven(), start + 3)
      }))
  })
})

describe("label allow-list", () => {
  it("OUTBOX_METRICS_LABELS: trimmed, lowercase, without duplicates or the built-in labels", () => {
    assert.deepStrictEqual(OutboxTelemetry.parseLabels(" Tenant_ID, region,,tenant_id, event_type "), ["tenant_id", "region"])
    assert.deepStrictEqual(OutboxTelemetry.parseLabels(""), [])
  })

  it("allow-listed labels come from the event (aggregate id, tracking id, metadata); nothing else is added", () => {
    const event = {
      aggregateType: "Order",
      eventType: "OrderCreated",
      aggregateId: "o-1",
      trackingId: "t-1",
      metadata: { tenant_id: "acme", traceparent: "00-x" }
    }
    assert.deepStrictEqual(OutboxMetrics.eventLabels([], event), { aggregate_type: "Order", event_type: "OrderCreated" })
    assert.deepStrictEqual(OutboxMetrics.eventLabels(["tenant_id", "aggregate_id", "region"], event), {
      aggregate_type: "Order",
      event_type: "OrderCreated",
      tenant_id: "acme",
      aggregate_id: "o-1",
      region: ""
    })
  })
})
