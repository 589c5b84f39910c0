import { assert, describe, it, vi } from "@effect/vitest"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/** A series whose `make` records every label set it is asked to build. */
const counting = () => {
  const made: Array<OutboxMetrics.Labels | undefined> = []
  const series = OutboxMetrics.series((attributes) => {
    made.push(attributes)
    return Metric.counter("test_series_total", { incremental: true, attributes })
  })
  return { made, series }
}

describe("OutboxMetrics.series: the one series cache", () => {
  it("gives one metric object per label set, built once however often it is asked for", () => {
    const { made, series } = counting()
    const first = series({ aggregate_type: "Order", event_type: "Created" })
    // a fresh object with the same labels: found by content, not by identity
    for (let i = 0; i < 100; i++) assert.strictEqual(series({ aggregate_type: "Order", event_type: "Created" }), first)
    assert.deepStrictEqual(made, [{ aggregate_type: "Order", event_type: "Created" }])
    assert.deepStrictEqual(first.attributes, { aggregate_type: "Order", event_type: "Created" })
  })

  it("gives distinct objects to distinct label sets, the unlabelled one included", () => {
    const { made, series } = counting()
    const created = series({ aggregate_type: "Order", event_type: "Created" })
    const paid = series({ aggregate_type: "Order", event_type: "Paid" })
    const user = series({ aggregate_type: "User", event_type: "Created" })
    const none = series()
    assert.strictEqual(new Set([created, paid, user, none]).size, 4)
    assert.deepStrictEqual(paid.attributes, { aggregate_type: "Order", event_type: "Paid" })
    assert.isUndefined(none.attributes)
    assert.strictEqual(series(), none)
    assert.strictEqual(made.length, 4)
  })

  it("views by label values find the label set's own object, and build nothing on a hit", () => {
    const { made, series } = counting()
    const byEvent = series.by("aggregate_type", "event_type")
    const byType = series.by("event_type")
    // a view is made once per name list
    assert.strictEqual(series.by("aggregate_type", "event_type"), byEvent)
    assert.strictEqual(series.by("event_type"), byType)
    const created = byEvent("Order", "Created")
    assert.strictEqual(created, series({ aggregate_type: "Order", event_type: "Created" }))
    assert.strictEqual(byType("Created"), series({ event_type: "Created" }))
    assert.notStrictEqual(byEvent("Order", "Paid"), created)
    assert.notStrictEqual(byEvent("User", "Created"), created)
    // a hit is found by the values alone: no label set is built, no key serialized
    const built = made.length
    const stringify = vi.spyOn(JSON, "stringify")
    const hits = Array.from({ length: 100 }, () => [byEvent("Order", "Created"), byType("Created")])
    const keys = stringify.mock.calls.length
    stringify.mockRestore()
    assert.strictEqual(keys, 0)
    assert.isTrue(hits.every(([a, b]) => a === created && b === series({ event_type: "Created" })))
    assert.strictEqual(made.length, built)
    assert.deepStrictEqual(made, [
      { aggregate_type: "Order", event_type: "Created" },
      { event_type: "Created" },
      { aggregate_type: "Order", event_type: "Paid" },
      { aggregate_type: "User", event_type: "Created" }
    ])
  })

  it("one object per label set is one series in the registry", () => {
    const { series } = counting()
    const context = Context.make(Metric.MetricRegistry, new Map())
    series({ event_type: "Created" }).updateUnsafe(2, context)
    series.by("event_type")("Created").updateUnsafe(3, context)
    series({ event_type: "Paid" }).updateUnsafe(1, context)
    assert.strictEqual(series({ event_type: "Created" }).valueUnsafe(context).count, 5)
    assert.strictEqual(series({ event_type: "Paid" }).valueUnsafe(context).count, 1)
    assert.strictEqual(Context.get(context, Metric.MetricRegistry).size, 2)
  })

  it("outbox_events_published_total is such a series", () => {
    const labels = { aggregate_type: "Order", event_type: "Created" }
    assert.strictEqual(OutboxMetrics.eventsPublished({ ...labels }), OutboxMetrics.eventsPublished({ ...labels }))
    assert.strictEqual(OutboxMetrics.eventsPublished.by("aggregate_type", "event_type")("Order", "Created"), OutboxMetrics.eventsPublished(labels))
    assert.strictEqual(OutboxMetrics.eventsPublished(labels).id, "outbox_events_published_total")
  })
})
