/**
 * The orders example with per-key ordering, as `OUTBOX_ORDERING=key
 * OUTBOX_CONCURRENCY=4 npm start` runs it: orders created and cancelled at
 * once reach a webhook that fails the first attempt of every
 * `OrderCreated`, yet each order's `OrderCreated` is delivered before its
 * `OrderCancelled`, one of an order's events in flight at a time.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as WebhookSink from "@outbox/runtime/sinks/WebhookSink"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as HttpServer from "effect/http/HttpServer"
import * as App from "../src/App.ts"

/** What the receiver saw of each request: the order, the event type, and whether it was accepted. */
interface Delivery {
  readonly orderId: string
  readonly eventType: string
  readonly ok: boolean
}

const deliveries: Array<Delivery> = []
const attempted = new Set<string>()
/** Requests in flight per order, and the most seen at once. */
const inFlight = new Map<string, number>()
let maxInFlight = 0

/** Fails the first attempt of every OrderCreated (503), after holding each request 20 ms. */
const Receiver = Layer.effect(
  HttpReceiver.HttpReceiver,
  HttpReceiver.make((res, request) => {
    const orderId = String(request.body.aggregateId)
    const now = (inFlight.get(orderId) ?? 0) + 1
    inFlight.set(orderId, now)
    maxInFlight = Math.max(maxInFlight, now)
    const trackingId = String(request.headers["idempotency-key"])
    const first = !attempted.has(trackingId)
    attempted.add(trackingId)
    const ok = !(first && request.body.eventType === "OrderCreated")
    setTimeout(() => {
      inFlight.set(orderId, (inFlight.get(orderId) ?? 1) - 1)
      deliveries.push({ orderId, eventType: request.body.eventType, ok })
      res.writeHead(ok ? 204 : 503).end()
    }, 20)
  })
)

const AppUnderTest = Layer.unwrap(Effect.gen(function*() {
  const { url } = yield* HttpReceiver.HttpReceiver
  return App.layer({
    port: 0,
    sink: WebhookSink.layer({ url, timeout: "5 seconds" }),
    config: {
      ordering: "key",
      concurrency: 4,
      pollInterval: Duration.millis(20),
      retryPolicy: RetryPolicy.exponential({ base: "50 millis", cap: "50 millis" })
    },
    progressEvery: "1 hour"
  })
})).pipe(Layer.provideMerge(Receiver), Layer.provideMerge(TestDatabase.layer))

const post = (path: string, body?: string) =>
  Effect.flatMap(Effect.service(HttpServer.HttpServer), (server) =>
    Effect.promise(() =>
      fetch(`${HttpServer.formatAddress(server.address)}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        ...(body === undefined ? {} : { body })
      }).then(async (res) => ({ status: res.status, json: await res.json() as any }))
    ))

layer(AppUnderTest, { timeout: "90 seconds", excludeTestServices: true })("orders example with OUTBOX_ORDERING=key", (it) => {
  describe("create then cancel, a webhook failing every first OrderCreated", () => {
    it.effect("each order's OrderCreated is delivered before its OrderCancelled; one of an order's events in flight", () =>
      Effect.gen(function*() {
        const orders: Array<string> = []
        for (let i = 0; i < 20; i++) {
          const created = yield* post("/orders", JSON.stringify({ customerId: `c-${i}`, items: [{ sku: "A", quantity: 1, unitPrice: 1 }] }))
          assert.strictEqual(created.status, 201)
          const orderId = created.json.orderId as string
          const cancelled = yield* post(`/orders/${orderId}/cancel`)
          assert.strictEqual(cancelled.status, 200)
          orders.push(orderId)
        }
        // a second cancel is a conflict, an unknown order 404, a bad id 400: nothing published for them
        assert.strictEqual((yield* post(`/orders/${orders[0]}/cancel`)).status, 409)
        assert.strictEqual((yield* post("/orders/00000000-0000-4000-8000-000000000000/cancel")).status, 404)
        assert.strictEqual((yield* post("/orders/not-a-uuid/cancel")).status, 400)

        const deadline = Date.now() + 60_000
        while (deliveries.filter((d) => d.ok).length < 2 * orders.length && Date.now() < deadline) {
          yield* Effect.sleep("50 millis")
        }
        for (const orderId of orders) {
          const accepted = deliveries.filter((d) => d.orderId === orderId && d.ok).map((d) => d.eventType)
          assert.deepStrictEqual(accepted, ["OrderCreated", "OrderCancelled"], `order ${orderId}`)
          // the failed first attempt came first, and the cancellation only after the creation went through
          assert.deepStrictEqual(
            deliveries.filter((d) => d.orderId === orderId).map((d) => [d.eventType, d.ok]),
            [["OrderCreated", false], ["OrderCreated", true], ["OrderCancelled", true]]
          )
        }
        assert.strictEqual(maxInFlight, 1)
        // nothing more than the 40 events (and the 20 failed attempts) reached the webhook
        assert.strictEqual(deliveries.length, 3 * orders.length)
        yield* Effect.sleep("200 millis")
        assert.strictEqual(deliveries.length, 3 * orders.length)
      }))
  })
})
