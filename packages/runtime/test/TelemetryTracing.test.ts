import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError } from "@outbox/core/OutboxError"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as TraceContext from "@outbox/core/TraceContext"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"
import * as Relay from "../src/Relay.ts"
import * as WebhookSink from "../src/sinks/WebhookSink.ts"

/** A real webhook receiver (`@outbox/testing/HttpReceiver`) shared by the suite. */
const Receiver = HttpReceiver.HttpReceiver

/** One in-memory exporter for the file; each test resets it. */
const exporter = new InMemorySpanExporter()
const TracingLive = OutboxTelemetry.layerTracer(new SimpleSpanProcessor(exporter), { serviceName: "outbox-test" })

const spans = () => exporter.getFinishedSpans() as ReadonlyArray<ReadableSpan>
const named = (name: string) => spans().filter((s) => s.name === name)
/** The span ids above a span, nearest first. */
const ancestors = (span: ReadableSpan): Array<string> => {
  const ids: Array<string> = []
  let parent = span.parentSpanContext?.spanId
  while (parent !== undefined) {
    ids.push(parent)
    parent = spans().find((s) => s.spanContext().spanId === parent)?.parentSpanContext?.spanId
  }
  return ids
}

/** The relay over the real store, with a short poll, in the current scope. */
const startRelay = (sink: Layer.Layer<OutboxSink.OutboxSink>, config: Partial<OutboxConfig.Options> = {}) =>
  Layer.build(
    Relay.layer.pipe(
      Layer.provide(sink),
      Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(20), ...config }))
    )
  )

const waitUntil = (condition: Effect.Effect<boolean>, what: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("20 millis") }),
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

const Live = Layer.mergeAll(PgOutboxStore.layer(), PgInbox.layer).pipe(
  Layer.provideMerge(TestDatabase.layer),
  Layer.provideMerge(Receiver.layer),
  Layer.provideMerge(TracingLive)
)

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("tracing across the outbox", (it) => {
  describe("one trace from the producer to the consumer", () => {
    it.effect("the relay span carries the producer's trace id, the webhook gets its traceparent, the inbox continues it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { received, url } = yield* Receiver
        yield* sql`TRUNCATE outbox`
        exporter.reset()

        // "HTTP request → business transaction → publish"
        const producer = yield* Outbox.transaction(
          Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload: { total: 42 } })
        ).pipe(
          Effect.andThen(Effect.currentSpan),
          Effect.withSpan("POST /orders", { kind: "server" })
        )
        const [row] = yield* sql<{ metadata: Record<string, unknown> }>`SELECT metadata FROM outbox`
        const stored = TraceContext.fromMetadata(row!.metadata)
        assert.isDefined(stored)
        assert.strictEqual(stored!.traceId, producer.traceId)
        const publish = named("publish OrderCreated")
        assert.strictEqual(publish.length, 1)
        assert.strictEqual(publish[0]!.spanContext().spanId, stored!.spanId, "metadata holds the publish span")
        // under the request span (through the transaction's span)
        assert.include(ancestors(publish[0]!), producer.spanId)

        // "→ relay → sink"
        const delivery = yield* Effect.scoped(Effect.gen(function*() {
          yield* startRelay(WebhookSink.layer({ url, timeout: "5 seconds" }))
          return yield* Queue.take(received)
        }))
        const header = TraceContext.parse(delivery.headers["traceparent"])
        assert.isDefined(header, `traceparent header: ${delivery.headers["traceparent"]}`)
        assert.strictEqual(header!.traceId, producer.traceId)

        const process = named("process OrderCreated")
        assert.strictEqual(process.length, 1)
        const span = process[0]!
        assert.strictEqual(span.spanContext().traceId, producer.traceId)
        assert.strictEqual(span.parentSpanContext?.spanId, stored!.spanId, "child of the publish span")
        assert.strictEqual(span.attributes["messaging.system"], "outbox")
        assert.strictEqual(span.attributes["messaging.operation.type"], "process")
        assert.strictEqual(span.attributes["messaging.destination.name"], "OrderCreated")
        assert.strictEqual(span.attributes["messaging.message.id"], delivery.body.trackingId)
        // the HTTP client span sits under the process span, and its id is the header's parent
        const client = spans().find((s) => s.spanContext().spanId === header!.spanId)
        assert.isDefined(client)
        assert.strictEqual(client!.parentSpanContext?.spanId, span.spanContext().spanId)

        const claims = named("claim")
        assert.strictEqual(claims.length, 1)
        assert.strictEqual(claims[0]!.attributes["messaging.batch.message_count"], 1)
        assert.strictEqual(span.links[0]?.context.spanId, claims[0]!.spanContext().spanId, "the process span links to its claim")
        const complete = named("complete")
        assert.strictEqual(complete.length, 1)
        assert.strictEqual(complete[0]!.parentSpanContext?.spanId, claims[0]!.spanContext().spanId)

        // "→ consumer": the receiver hands the body to the inbox helper, outside any span
        const result = yield* PgInbox.processEvent("billing", delivery.body, Effect.succeed("charged"))
        assert.deepStrictEqual(result, { _tag: "Processed", value: "charged" })
        const consumer = spans().filter((s) => s.name === "process OrderCreated" && s.attributes["messaging.consumer.group.name"] === "billing")
        assert.strictEqual(consumer.length, 1)
        assert.strictEqual(consumer[0]!.spanContext().traceId, producer.traceId)
      }))

    it.effect("a failed delivery is a failed process span in the producer's trace; the retry keeps the trace", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        exporter.reset()
        const producer = yield* Outbox.transaction(
          Outbox.publish({ aggregateType: "Order", aggregateId: "o-2", eventType: "OrderPaid", payload: {} })
        ).pipe(Effect.andThen(Effect.currentSpan), Effect.withSpan("POST /payments"))
        let calls = 0
        yield* Effect.scoped(Effect.gen(function*() {
          yield* startRelay(
            OutboxSink.layerHandler(() => ++calls === 1 ? Effect.fail(DeliveryError.transient("receiver down")) : Effect.void),
            { retryPolicy: RetryPolicy.exponential({ base: "10 millis", cap: "10 millis" }) }
          )
          yield* waitUntil(Effect.sync(() => named("process OrderPaid").length === 2), "two attempts")
        }))
        const attempts = named("process OrderPaid")
        assert.isTrue(attempts.every((s) => s.spanContext().traceId === producer.traceId))
        const statuses = attempts.map((s) => s.status.code).sort()
        assert.deepStrictEqual(statuses, [1, 2], "one OK, one ERROR") // SpanStatusCode.OK = 1, ERROR = 2
        const failedAttempt = attempts.find((s) => s.status.code === 2)!
        assert.strictEqual(failedAttempt.attributes["outbox.outcome"], "retried")
      }))
  })

  describe("sampling", () => {
    it.effect("an unsampled producer trace makes no relay span, and the webhook still gets its context (flags 00)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { received, url } = yield* Receiver
        yield* sql`TRUNCATE outbox`
        const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        yield* Outbox.transaction(
          Outbox.publish({ aggregateType: "Order", aggregateId: "o-9", eventType: "OrderQuiet", payload: {}, metadata: { traceparent } })
        )
        exporter.reset()
        const delivery = yield* Effect.scoped(Effect.gen(function*() {
          yield* startRelay(WebhookSink.layer({ url, timeout: "5 seconds" }))
          return yield* Queue.take(received)
        }))
        // the HTTP client's (non-recording) span in the same trace, still unsampled
        const header = TraceContext.parse(delivery.headers["traceparent"])
        assert.strictEqual(header?.traceId, "4bf92f3577b34da6a3ce929d0e0e4736")
        assert.isFalse(header?.sampled)
        assert.deepStrictEqual(named("process OrderQuiet"), [])
      }))
  })

  describe("an empty poll makes no span", () => {
    it.effect("polling an empty outbox exports nothing; the first event makes a claim span", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        const store = yield* OutboxStore
        let claims = 0
        // the real store, counting its claims (to prove the relay polled)
        const counting = Layer.succeed(OutboxStore, {
          ...store,
          claim: (options) => Effect.andThen(Effect.sync(() => claims++), store.claim(options))
        })
        const seen: Array<string> = []
        yield* Effect.scoped(Effect.gen(function*() {
          yield* Layer.build(
            Relay.layer.pipe(
              Layer.provide(OutboxSink.layerHandler((event) => Effect.sync(() => seen.push(event.trackingId)))),
              Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(10), leaseDuration: Duration.millis(300) })),
              Layer.provide(counting)
            )
          )
          yield* Effect.sync(() => exporter.reset())
          // many empty polls, and a few empty reaps (every lease/2 = 150 ms)
          yield* waitUntil(Effect.sync(() => claims >= 20), "20 polls")
          yield* Effect.sleep("400 millis")
          assert.isAtLeast(claims, 20)
          assert.deepStrictEqual(spans().map((s) => s.name), [], "no span at all while the outbox is empty")

          yield* Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId: "o-3", eventType: "OrderShipped", payload: {} }))
          yield* waitUntil(Effect.sync(() => seen.length === 1), "the delivery")
          yield* waitUntil(Effect.sync(() => named("complete").length === 1), "the completion span")
        }))
        assert.strictEqual(named("claim").length, 1)
        assert.strictEqual(named("process OrderShipped").length, 1)
      }))
  })
})
