import { assert, describe, it } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { StoreError } from "@outbox/core/OutboxError"
import type { PublishedEvent, ValidEvent } from "@outbox/core/OutboxEvent"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Tracer from "effect/Tracer"

const settings: Outbox.PublishSettings = { maxPayloadBytes: 1 << 20, maxRetries: 5 }
const base = { aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated" }

/** The validation's verdict on `payload`: its JSON text, or the reason and message of the refusal. */
const verdict = (payload: unknown) =>
  Effect.match(Outbox.validate({ ...base, payload }, settings), {
    onFailure: (e) => ({ ok: false as const, reason: e.reason, message: e.message }),
    onSuccess: (valid) => ({ ok: true as const, json: valid.payloadJson })
  })

const nested = (depth: number, leaf: unknown): unknown => {
  let value = leaf
  for (let i = 0; i < depth; i++) value = { level: i, child: value }
  return value
}

describe("Outbox.validate: the fast pass and the scan of the JSON text refuse what the walk refuses", () => {
  it.effect("accepts plain payloads as JSON.stringify writes them, control characters and escaped text included", () =>
    Effect.gen(function*() {
      for (
        const payload of [
          { total: 42, items: [{ sku: "A", quantity: 2 }], note: null, flag: false },
          "tab\tnew line\ncontrol \u0001",
          // the six characters \u0000 as text, not a NUL: JSON writes them as \\u0000
          "backslash \\u0000 and \\ud800 as text",
          { at: new Date(0), emoji: "\u{1F600}", skipped: undefined },
          [1, "two", [3]]
        ]
      ) {
        assert.deepStrictEqual(yield* verdict(payload), { ok: true, json: JSON.stringify(payload) })
      }
    }))

  it.effect("names the path of what it refuses, found by the walk", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [unknown, string]> = [
        [{ items: [{ price: Number.NaN }] }, "items[0].price is NaN"],
        [{ items: [{ sku: "nul\u0000" }] }, "items[0].sku contains a NUL character"],
        [{ deep: { text: "lone \udc00" } }, "deep.text contains a lone surrogate"],
        [{ deep: { ["key \ud800"]: 1 } }, "deep has a key containing a NUL character or a lone surrogate"],
        [{ list: [1, () => 2] }, "list[1] is function"],
        [{ set: new Set([1]) }, "set is a Set"],
        [{ n: { big: 1n } }, "n.big is a bigint"]
      ]
      for (const [payload, message] of cases) {
        const result = yield* verdict(payload)
        assert.isFalse(result.ok)
        if (!result.ok) {
          assert.strictEqual(result.reason, "NotSerializable")
          assert.include(result.message, message)
        }
      }
    }))

  it.effect("refuses the key of an undefined value that the walk refuses, though JSON drops it", () =>
    Effect.gen(function*() {
      const result = yield* verdict({ ["bad\u0000key"]: undefined })
      assert.isFalse(result.ok)
    }))

  it.effect("refuses a NUL a toJSON returned, and a cycle however deep", () =>
    Effect.gen(function*() {
      const fromToJson = yield* verdict({ value: { toJSON: () => "nul\u0000" } })
      assert.isFalse(fromToJson.ok)
      const cycle: Record<string, unknown> = { name: "root" }
      const leaf = nested(100, cycle) as Record<string, unknown>
      cycle.loop = leaf
      const result = yield* verdict(leaf)
      assert.isFalse(result.ok)
      if (!result.ok) assert.include(result.message, "circular reference")
    }))

  it.effect("accepts a payload nested deeper than the fast pass goes", () =>
    Effect.gen(function*() {
      const deep = nested(200, { text: "leaf" })
      assert.deepStrictEqual(yield* verdict(deep), { ok: true, json: JSON.stringify(deep) })
      const refused = yield* verdict(nested(200, { text: "nul\u0000" }))
      assert.isFalse(refused.ok)
    }))

  it.effect("counts the payload's UTF-8 bytes only when its length could pass the limit", () =>
    Effect.gen(function*() {
      const limited = { ...settings, maxPayloadBytes: 64 }
      // 31 two-byte characters + quotes = 64 bytes: fits, though 33 characters × 3 > 64
      yield* Outbox.validate({ ...base, payload: "é".repeat(31) }, limited)
      const error = yield* Effect.flip(Outbox.validate({ ...base, payload: "é".repeat(32) }, limited))
      assert.strictEqual(error.reason, "PayloadTooLarge")
      assert.include(error.message, "66 bytes")
      // ASCII: 62 characters + quotes = 64 bytes
      yield* Outbox.validate({ ...base, payload: "a".repeat(62) }, limited)
      assert.strictEqual((yield* Effect.flip(Outbox.validate({ ...base, payload: "a".repeat(63) }, limited))).reason, "PayloadTooLarge")
    }))

  it.effect("writes {} for absent or null metadata, and serialises metadata that is given", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* Outbox.validate({ ...base, payload: 1 }, settings)).metadataJson, "{}")
      const withNull = { ...base, payload: 1, metadata: null as unknown as Record<string, unknown> }
      assert.strictEqual((yield* Outbox.validate(withNull, settings)).metadataJson, "{}")
      assert.strictEqual((yield* Outbox.validate({ ...base, payload: 1, metadata: { tenant_id: "t1" } }, settings)).metadataJson, "{\"tenant_id\":\"t1\"}")
      const trace = { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }
      assert.strictEqual((yield* Outbox.validate({ ...base, payload: 1 }, settings, 0, trace)).metadataJson, JSON.stringify(trace))
    }))
})

/** A store whose transaction records what was written, and whether it committed. */
const fakeStore = () => {
  const written: Array<ValidEvent> = []
  let commits = 0
  let id = 0n
  const store = {
    withTransaction: <A, E, R>(f: (publish: (events: ReadonlyArray<ValidEvent>) => Effect.Effect<ReadonlyArray<PublishedEvent>, StoreError>) => Effect.Effect<A, E, R>) =>
      Effect.tap(
        f((events) =>
          Effect.sync(() => {
            written.push(...events)
            return events.map(() => ({ id: ++id, trackingId: `t-${id}`, createdAt: new Date(0) }))
          })
        ),
        () => Effect.sync(() => commits++)
      )
  } as unknown as OutboxStore["Service"]
  return { store, written, commits: () => commits }
}

describe("Outbox.transaction", () => {
  /** A fresh metric registry with `store`, the published counter of `Order`/`OrderCreated` read from it. */
  const setup = () => {
    const fake = fakeStore()
    const context = Context.make(OutboxStore, fake.store).pipe(Context.add(Metric.MetricRegistry, new Map()))
    const published = () =>
      OutboxMetrics.eventsPublished({ aggregate_type: "Order", event_type: "OrderCreated" }).valueUnsafe(context as Context.Context<never>).count
    return { ...fake, context, published }
  }

  it.effect("writes through the store's publisher, returns the rows, and counts the events once committed", () =>
    Effect.gen(function*() {
      const { commits, context, published, written } = setup()
      const result = yield* Outbox.transaction(Effect.gen(function*() {
        const one = yield* Outbox.publish({ ...base, payload: { n: 1 } })
        const two = yield* Outbox.publishAll([{ ...base, payload: { n: 2 } }, { ...base, payload: { n: 3 } }])
        return [one, ...two]
      })).pipe(Effect.provideContext(context))
      assert.deepStrictEqual(result.map((row) => row.trackingId), ["t-1", "t-2", "t-3"])
      assert.deepStrictEqual(written.map((event) => event.payloadJson), ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"])
      assert.strictEqual(written[0]!.metadataJson, "{}")
      assert.strictEqual(commits(), 1)
      assert.strictEqual(published(), 3)
    }))

  it.effect("counts nothing when the body fails after publishing, and the body's error comes out unchanged", () =>
    Effect.gen(function*() {
      const { context, published } = setup()
      const error = yield* Effect.flip(
        Outbox.transaction(Effect.andThen(Outbox.publish({ ...base, payload: 1 }), Effect.fail("business rule" as const))).pipe(
          Effect.provideContext(context)
        )
      )
      assert.strictEqual(error, "business rule")
      assert.strictEqual(published(), 0)
    }))

  it.effect("an invalid event fails with InvalidEvent and writes nothing", () =>
    Effect.gen(function*() {
      const { context, written } = setup()
      const error = yield* Effect.flip(
        Outbox.transaction(Outbox.publishAll([{ ...base, payload: 1 }, { ...base, payload: Number.POSITIVE_INFINITY }])).pipe(
          Effect.provideContext(context)
        )
      )
      assert.strictEqual(error._tag, "InvalidEvent")
      if (error._tag === "InvalidEvent") assert.strictEqual(error.index, 1)
      assert.strictEqual(written.length, 0)
    }))

  it.effect("opens no span under the built-in tracer, and a producer span with the trace context under another", () =>
    Effect.gen(function*() {
      const { context, written } = setup()
      const names: Array<string> = []
      const recording = Tracer.make({
        span(options) {
          names.push(options.name)
          return Tracer.nativeTracer.span(options)
        }
      })
      const publishOne = Outbox.transaction(Outbox.publish({ ...base, payload: 1 })).pipe(Effect.provideContext(context))
      yield* publishOne
      assert.strictEqual(written[0]!.metadataJson, "{}")
      yield* publishOne.pipe(Effect.withSpan("request"), Effect.provideService(Tracer.Tracer, recording))
      assert.deepStrictEqual(names, ["request", "publish OrderCreated"])
      assert.include(written[1]!.metadataJson, "traceparent")
    }))
})
