import { assert, describe, layer } from "@effect/vitest"
import * as WebhookSink from "@outbox/runtime/WebhookSink"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as HttpServer from "effect/http/HttpServer"
import * as SqlClient from "effect/sql/SqlClient"
import * as App from "../src/App.ts"

/** A real webhook receiver on a free loopback port (`@outbox/testing/HttpReceiver`). */
const Receiver = HttpReceiver.HttpReceiver

/** The example's layers, on a free port, against a fresh database, relaying to the receiver. */
const AppUnderTest = Layer.unwrap(Effect.gen(function*() {
  const { url } = yield* Receiver
  return App.layer({
    port: 0,
    sink: WebhookSink.layer({ url, timeout: "5 seconds" }),
    config: { pollInterval: Duration.millis(20) }
  })
})).pipe(Layer.provideMerge(Receiver.layer), Layer.provideMerge(TestDatabase.layer))

const baseUrl = Effect.map(Effect.service(HttpServer.HttpServer), (server) => HttpServer.formatAddress(server.address))

interface Reply {
  readonly status: number
  readonly json: any
}

const request = (path: string, init?: RequestInit) =>
  Effect.flatMap(baseUrl, (base) =>
    Effect.promise(() =>
      fetch(`${base}${path}`, init).then((res) => res.json().then((json): Reply => ({ status: res.status, json })))
    ))

const post = (body: string) =>
  request("/orders", { method: "POST", headers: { "content-type": "application/json" }, body })

const count = (table: "orders" | "outbox") =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

layer(AppUnderTest, { timeout: "60 seconds", excludeTestServices: true })("orders example", (it) => {
  describe("POST /orders", () => {
    it.effect("writes the order and relays OrderCreated to the webhook", () =>
      Effect.gen(function*() {
        const { received } = yield* Receiver
        const created = yield* post(
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }] })
        )
        assert.strictEqual(created.status, 201)
        const orderId: string = created.json.orderId
        assert.match(orderId, /^[0-9a-f-]{36}$/)

        const event = yield* Queue.take(received).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(event.body.eventType, "OrderCreated")
        assert.strictEqual(event.body.aggregateType, "Order")
        assert.strictEqual(event.body.aggregateId, orderId)
        assert.deepStrictEqual(event.body.payload, {
          orderId,
          customerId: "c-1",
          items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }],
          total: 19
        })
        assert.strictEqual(event.headers["idempotency-key"], event.body.trackingId)

        const read = yield* request(`/orders/${orderId}`)
        assert.strictEqual(read.status, 200)
        assert.strictEqual(read.json.orderId, orderId)
        assert.strictEqual(read.json.customerId, "c-1")
        assert.deepStrictEqual(read.json.items, [{ sku: "A", quantity: 2, unitPrice: 9.5 }])
        assert.strictEqual(read.json.total, 19)
      }))

    it.effect("answers 400 with a message on bad input, and writes nothing", () =>
      Effect.gen(function*() {
        const orders = yield* count("orders")
        const events = yield* count("outbox")

        const notJson = yield* post("{ nope")
        assert.strictEqual(notJson.status, 400)
        assert.include(notJson.json.error, "JSON")
        const noItems = yield* post(JSON.stringify({ customerId: "c-1", items: [] }))
        assert.strictEqual(noItems.status, 400)
        assert.include(noItems.json.error, "items")
        const negative = yield* post(
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: -1, unitPrice: 1 }] })
        )
        assert.strictEqual(negative.status, 400)
        assert.include(negative.json.error, "quantity")

        assert.strictEqual(yield* count("orders"), orders)
        assert.strictEqual(yield* count("outbox"), events)
      }))
  })

  describe("GET /metrics and GET /healthz", () => {
    it.effect("/metrics is Prometheus text with the outbox catalog; /healthz answers the health level", () =>
      Effect.gen(function*() {
        const { received } = yield* Receiver
        const created = yield* post(JSON.stringify({ customerId: "c-2", items: [{ sku: "B", quantity: 1, unitPrice: 3 }] }))
        assert.strictEqual(created.status, 201)
        yield* Queue.take(received).pipe(Effect.timeout("20 seconds"))
        const base = yield* baseUrl
        const metrics = yield* Effect.promise(() =>
          fetch(`${base}/metrics`).then((res) => res.text().then((text) => ({ status: res.status, type: res.headers.get("content-type"), text })))
        )
        assert.strictEqual(metrics.status, 200)
        assert.match(metrics.type ?? "", /^text\/plain/)
        assert.match(metrics.text, /^outbox_events_published_total\{aggregate_type="Order",event_type="OrderCreated"\} [1-9]/m)
        assert.match(metrics.text, /^# TYPE outbox_pending_events gauge$/m)
        assert.match(metrics.text, /^outbox_handler_duration_seconds_bucket\{event_type="OrderCreated",outcome="completed",le="\+Inf"\} [1-9]/m)

        const health = yield* request("/healthz")
        assert.include(["OK", "WARN"], health.json.level, JSON.stringify(health.json))
        assert.strictEqual(health.status, 200)
        assert.isArray(health.json.findings)
      }))
  })

  describe("GET /orders/:id", () => {
    it.effect("404 for an unknown order, 400 for a malformed id", () =>
      Effect.gen(function*() {
        const missing = yield* request("/orders/00000000-0000-4000-8000-000000000000")
        assert.strictEqual(missing.status, 404)
        const malformed = yield* request("/orders/nope")
        assert.strictEqual(malformed.status, 400)
      }))
  })
})
