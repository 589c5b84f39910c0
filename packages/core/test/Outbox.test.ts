import { assert, describe, it } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import type { OutboxStore } from "@outbox/core/OutboxStore"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

const settings: Outbox.PublishSettings = { maxPayloadBytes: 64, maxRetries: 5 }
const base = { aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload: { ok: true } }

const reasonOf = (input: unknown) =>
  Effect.map(Effect.flip(Outbox.validate(input as Outbox.PublishSettings & typeof base, settings)), (e) => [e.reason, e.field])

describe("Outbox.validate", () => {
  it.effect("accepts a well-formed event and serialises it once", () =>
    Effect.gen(function*() {
      const valid = yield* Outbox.validate({ ...base, metadata: { source: "api" } }, settings)
      assert.strictEqual(valid.payloadJson, "{\"ok\":true}")
      assert.strictEqual(valid.metadataJson, "{\"source\":\"api\"}")
      assert.strictEqual(valid.maxRetries, 5)
    }))

  it.effect("refuses missing or empty fields", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* reasonOf({ ...base, eventType: "" }), ["MissingField", "eventType"])
      assert.deepStrictEqual(yield* reasonOf({ ...base, aggregateType: "  " }), ["MissingField", "aggregateType"])
      assert.deepStrictEqual(yield* reasonOf({ ...base, aggregateId: undefined }), ["MissingField", "aggregateId"])
      assert.deepStrictEqual(yield* reasonOf(null), ["MissingField", "event"])
    }))

  it.effect("refuses what JSON would drop or mangle silently, and what jsonb cannot store", () =>
    Effect.gen(function*() {
      const circular: Record<string, unknown> = {}
      circular.self = circular
      for (
        const payload of [
          { n: 10n },
          circular,
          { f: () => 1 },
          { x: Number.NaN },
          { m: new Map([["a", 1]]) },
          [1, undefined],
          "nul\u0000byte",
          "lone \ud800 surrogate",
          { ["key \udc00"]: 1 },
          undefined,
          Symbol("s")
        ]
      ) {
        assert.deepStrictEqual(yield* reasonOf({ ...base, payload }), ["NotSerializable", "payload"])
      }
      assert.deepStrictEqual(yield* reasonOf({ ...base, metadata: { n: 1n } }), ["NotSerializable", "metadata"])
      // what JSON represents faithfully is fine
      yield* Outbox.validate({ ...base, payload: { at: new Date(0), list: [1, "a", null] } }, { ...settings, maxPayloadBytes: 1000 })
    }))

  it.effect("refuses text PostgreSQL cannot store in the text columns: NUL and lone surrogates", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* reasonOf({ ...base, aggregateId: "o\u00001" }), ["InvalidText", "aggregateId"])
      assert.deepStrictEqual(yield* reasonOf({ ...base, eventType: "Order\ud800" }), ["InvalidText", "eventType"])
      assert.deepStrictEqual(yield* reasonOf({ ...base, aggregateType: "\udfffOrder" }), ["InvalidText", "aggregateType"])
      // a well-formed surrogate pair (an emoji) is valid Unicode
      const valid = yield* Outbox.validate({ ...base, aggregateId: "o-\u{1F600}", payload: "\u{1F600}" }, settings)
      assert.strictEqual(valid.aggregateId, "o-\u{1F600}")
    }))

  it.effect("refuses an oversized payload, measured in UTF-8 bytes", () =>
    Effect.gen(function*() {
      // 30 two-byte characters + quotes = 62 bytes: fits; 32 → 66 bytes: too large
      yield* Outbox.validate({ ...base, payload: "é".repeat(30) }, settings)
      const error = yield* Effect.flip(Outbox.validate({ ...base, payload: "é".repeat(32) }, settings))
      assert.strictEqual(error.reason, "PayloadTooLarge")
      assert.include(error.message, "66 bytes")
    }))

  it.effect("refuses a negative maxRetries", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* reasonOf({ ...base, maxRetries: -1 }), ["InvalidMaxRetries", "maxRetries"])
    }))
})

describe("Outbox.publish", () => {
  it("does not compile outside Outbox.transaction (checked by tsc over the tests)", () => {
    const program = Outbox.publish(base)
    // @ts-expect-error OutboxTransaction is required, and only Outbox.transaction provides it
    const outside: Effect.Effect<unknown, unknown, never> = program
    const inside: Effect.Effect<unknown, unknown, OutboxStore> = Outbox.transaction(program)
    assert.isTrue(Effect.isEffect(outside))
    assert.isTrue(Effect.isEffect(inside))
  })
})

describe("OutboxMetrics.countEvents", () => {
  const event = (aggregateType: string, eventType: string, tenant?: string) => ({
    aggregateType,
    eventType,
    metadata: tenant === undefined ? {} : { tenant_id: tenant }
  })
  /** A fresh registry, and a counter family that records the label sets it is asked for. */
  const setup = () => {
    const context = Context.make(Metric.MetricRegistry, new Map())
    const asked: Array<string> = []
    const series = OutboxMetrics.series((labels) => {
      asked.push(JSON.stringify(labels))
      return Metric.counter("test_events_total", { incremental: true, attributes: labels })
    })
    const value = (labels: Record<string, string>) =>
      Metric.counter("test_events_total", { incremental: true, attributes: labels }).valueUnsafe(context).count
    return { context, asked, series, value }
  }

  it("counts every event once, under its aggregate type and event type, asking for each label set once", () => {
    const { asked, context, series, value } = setup()
    const events = [event("Order", "Created"), event("Order", "Created"), event("Order", "Paid"), event("Order", "Created"), event("User", "Created")]
    OutboxMetrics.countEvents(events, { series, extraLabels: [], context })
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created" }), 3)
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Paid" }), 1)
    assert.strictEqual(value({ aggregate_type: "User", event_type: "Created" }), 1)
    assert.strictEqual(asked.length, 3)
    // the series are remembered: a second batch asks for nothing new
    OutboxMetrics.countEvents(events, { series, extraLabels: [], context })
    assert.strictEqual(asked.length, 3)
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created" }), 6)
  })

  it("adds the allow-listed labels, read through labelSource when given", () => {
    const { context, series, value } = setup()
    const events = [event("Order", "Created", "t1"), event("Order", "Created", "t2"), event("Order", "Created", "t1"), event("Order", "Created")]
    OutboxMetrics.countEvents(events, { series, extraLabels: ["tenant_id"], context })
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created", tenant_id: "t1" }), 2)
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created", tenant_id: "t2" }), 1)
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created", tenant_id: "" }), 1)
    OutboxMetrics.countEvents(events, {
      series,
      extraLabels: ["tracking_id"],
      context,
      labelSource: (e, i) => ({ ...e, trackingId: `id-${i % 2}` })
    })
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created", tracking_id: "id-0" }), 2)
    assert.strictEqual(value({ aggregate_type: "Order", event_type: "Created", tracking_id: "id-1" }), 2)
  })
})
