import { assert, describe, layer } from "@effect/vitest"
import { createRelay, publish } from "@outbox/client"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Otel from "@opentelemetry/api"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import pg from "pg"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const order = (id: string) => ({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id } })

/** Publishes `id` in a committed `pg` transaction, inside `run` (e.g. an active span); returns the stored metadata. */
const publishIn = (url: string, id: string, run: <A>(f: () => Promise<A>) => Promise<A> = (f) => f()) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      await client.query("BEGIN")
      await run(() => publish(client, order(id)))
      await client.query("COMMIT")
      const row = await client.query("SELECT metadata FROM outbox WHERE aggregate_id = $1", [id])
      return row.rows[0].metadata as Record<string, unknown>
    } finally {
      await client.end()
    }
  })

// one file, one global registration: without an SDK first, then with one
layer(Live, { timeout: "60 seconds" })("@outbox/client trace context", (it) => {
  describe("publish", () => {
    it.effect("stores no trace context while no OpenTelemetry SDK is registered (as under Effect's built-in tracer)", () =>
      Effect.gen(function*() {
        const db = yield* Effect.service(TestDatabase.TestDatabase)
        const metadata = yield* publishIn(db.url, "no-sdk", (f) =>
          // a span from the API alone is a no-op with an all-zero id
          Otel.trace.getTracer("app").startActiveSpan("handle request", (span) => f().finally(() => span.end())))
        assert.isUndefined(metadata.traceparent)
      }))

    it.effect("with an SDK registered: a producer span, child of the caller's active span, whose context is stored and continued by the relay", () =>
      Effect.gen(function*() {
        const db = yield* Effect.service(TestDatabase.TestDatabase)
        const exporter = new InMemorySpanExporter()
        const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
        provider.register()
        yield* Effect.addFinalizer(() =>
          Effect.promise(() => provider.shutdown()).pipe(Effect.andThen(Effect.sync(() => Otel.trace.disable())))
        )

        let requestSpan: Otel.SpanContext | undefined
        const metadata = yield* publishIn(db.url, "with-sdk", (f) =>
          Otel.trace.getTracer("app").startActiveSpan("handle request", (span) => {
            requestSpan = span.spanContext()
            return f().finally(() => span.end())
          }))
        const publishSpan = exporter.getFinishedSpans().find((s) => s.name === "publish OrderCreated")
        assert.isDefined(publishSpan)
        assert.strictEqual(publishSpan!.kind, Otel.SpanKind.PRODUCER)
        assert.strictEqual(publishSpan!.spanContext().traceId, requestSpan!.traceId)
        assert.strictEqual(publishSpan!.parentSpanContext?.spanId, requestSpan!.spanId)
        assert.strictEqual(
          metadata.traceparent,
          `00-${requestSpan!.traceId}-${publishSpan!.spanContext().spanId}-01`
        )

        // the relay's handler runs in that trace: its active span belongs to the producer's trace
        let handlerTrace: string | undefined
        const relay = yield* Effect.promise(() =>
          createRelay({
            connectionString: db.url,
            pollInterval: 50,
            handler: (event) => {
              if (event.aggregateId === "with-sdk") handlerTrace = Otel.trace.getActiveSpan()?.spanContext().traceId
            }
          })
        )
        yield* Effect.promise(async () => {
          for (let i = 0; i < 200 && relay.stats().completed < 2; i++) await new Promise((r) => setTimeout(r, 50))
        })
        yield* Effect.promise(() => relay.stop())
        assert.strictEqual(handlerTrace, requestSpan!.traceId)
      }))
  })
})
