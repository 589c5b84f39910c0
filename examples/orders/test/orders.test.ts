import { assert, describe, layer } from "@effect/vitest"
import * as WebhookSink from "@outbox/runtime/WebhookSink"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as HttpServer from "effect/http/HttpServer"
import * as Context from "effect/Context"
import { createServer, type IncomingHttpHeaders } from "node:http"
import type { AddressInfo } from "node:net"
import * as App from "../src/App.ts"

interface Received {
  readonly headers: IncomingHttpHeaders
  readonly body: any
}

/** A real webhook receiver on a free loopback port; every request body lands in a queue. */
class Receiver extends Context.Service<Receiver, { readonly url: string; readonly received: Queue.Queue<Received> }>()(
  "test/Receiver"
) {
  static readonly layer = Layer.effect(
    Receiver,
    Effect.gen(function*() {
      const received = yield* Queue.unbounded<Received>()
      const server = yield* Effect.acquireRelease(
        Effect.callback<ReturnType<typeof createServer>>((resume) => {
          const s = createServer((req, res) => {
            let data = ""
            req.on("data", (chunk) => (data += chunk))
            req.on("end", () => {
              Queue.offerUnsafe(received, { headers: req.headers, body: JSON.parse(data) })
              res.writeHead(204).end()
            })
          })
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.callback<void>((resume) => s.close(() => resume(Effect.void)))
      )
      const port = (server.address() as AddressInfo).port
      return { url: `http://127.0.0.1:${port}/events`, received }
    })
  )
}

const AppUnderTest = Layer.unwrap(Effect.gen(function*() {
  const { url } = yield* Receiver
  return App.layer({
    port: 0,
    sink: WebhookSink.layer({ url }),
    config: { pollInterval: Duration.millis(20) }
  })
})).pipe(Layer.provideMerge(Receiver.layer), Layer.provideMerge(TestDatabase.layer))

const baseUrl = Effect.map(Effect.service(HttpServer.HttpServer), (server) =>
  HttpServer.formatAddress(server.address))

const post = (url: string, body: string) =>
  Effect.promise(() =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body }).then(async (res) => ({
      status: res.status,
      json: await res.json() as Record<string, unknown>
    }))
  )

layer(AppUnderTest, { timeout: "60 seconds", excludeTestServices: true })("orders example", (it) => {
  describe("POST /orders", () => {
    it.effect("writes the order and relays OrderCreated to the webhook", () =>
      Effect.gen(function*() {
        const base = yield* baseUrl
        const { received } = yield* Receiver
        const created = yield* post(
          `${base}/orders`,
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }] })
        )
        assert.strictEqual(created.status, 201)
        const orderId = created.json.orderId as string
        assert.match(orderId, /^[0-9a-f-]{36}$/)

        const event = yield* Queue.take(received).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(event.body.eventType, "OrderCreated")
        assert.strictEqual(event.body.aggregateType, "Order")
        assert.strictEqual(event.body.aggregateId, orderId)
        assert.strictEqual(event.body.payload.total, 19)
        assert.strictEqual(event.headers["idempotency-key"], event.body.trackingId)

        const read = yield* Effect.promise(() => fetch(`${base}/orders/${orderId}`).then((r) => r.json()))
        assert.deepStrictEqual(read, {
          orderId,
          customerId: "c-1",
          items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }],
          total: 19
        })
      }))

    it.effect("answers 400 with a message on bad input, and publishes nothing", () =>
      Effect.gen(function*() {
        const base = yield* baseUrl
        const notJson = yield* post(`${base}/orders`, "{ nope")
        assert.strictEqual(notJson.status, 400)
        assert.include(String(notJson.json.error), "JSON")
        const invalid = yield* post(`${base}/orders`, JSON.stringify({ customerId: "c-1", items: [] }))
        assert.strictEqual(invalid.status, 400)
        assert.include(String(invalid.json.error), "items")
        const negative = yield* post(
          `${base}/orders`,
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: -1, unitPrice: 1 }] })
        )
        assert.strictEqual(negative.status, 400)
      }))
  })
})
