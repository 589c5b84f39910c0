import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import * as WebhookSink from "../src/WebhookSink.ts"

const event: OutboxEvent = {
  id: 7n,
  lockToken: 3n,
  trackingId: "6f0c3c3e-8d3e-4a51-9b7e-0a2f1d7c9e11",
  aggregateType: "Order",
  aggregateId: "o-7",
  eventType: "OrderCreated",
  payload: { total: 19 },
  metadata: { source: "test" },
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date("2026-11-23T10:00:00.000Z"),
  lockedUntil: new Date("2026-11-23T10:00:30.000Z")
}

interface Seen {
  headers: IncomingHttpHeaders
  body: unknown
}

/** A local HTTP server answering with `respond`; yields its URL and what it saw. */
const server = (respond: (res: ServerResponse) => void) =>
  Effect.gen(function*() {
    const seen: Array<Seen> = []
    const s = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>>((resume) => {
        const srv = createServer((req, res) => {
          let data = ""
          req.on("data", (chunk) => (data += chunk))
          req.on("end", () => {
            seen.push({ headers: req.headers, body: JSON.parse(data) })
            respond(res)
          })
        })
        srv.listen(0, "127.0.0.1", () => resume(Effect.succeed(srv)))
      }),
      (srv) => Effect.callback<void>((resume) => { srv.closeAllConnections(); srv.close(() => resume(Effect.void)) })
    )
    return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/hook`, seen }
  })

const deliver = (url: string, timeout: Duration.Input = "5 seconds") =>
  Effect.flatMap(Effect.service(OutboxSink), (sink) => sink.deliver(event)).pipe(
    Effect.provide(WebhookSink.layer({ url, timeout }))
  )

describe("WebhookSink", () => {
  it.live("POSTs the event as JSON with an Idempotency-Key; 2xx is delivered", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server((res) => res.writeHead(204).end())
      yield* deliver(url)
      assert.strictEqual(seen.length, 1)
      assert.deepStrictEqual(seen[0]!.body, {
        trackingId: event.trackingId,
        aggregateType: "Order",
        aggregateId: "o-7",
        eventType: "OrderCreated",
        payload: { total: 19 },
        metadata: { source: "test" },
        createdAt: "2026-11-23T10:00:00.000Z"
      })
      assert.strictEqual(seen[0]!.headers["idempotency-key"], event.trackingId)
      assert.include(String(seen[0]!.headers["content-type"]), "application/json")
    }))

  for (const [status, retryable] of [[500, true], [503, true], [429, true], [408, true], [400, false], [404, false]] as const) {
    it.live(`status ${status} is ${retryable ? "retryable" : "permanent"}`, () =>
      Effect.gen(function*() {
        const { url } = yield* server((res) => res.writeHead(status).end())
        const error = yield* Effect.flip(deliver(url))
        assert.strictEqual(error._tag, "DeliveryError")
        assert.strictEqual(error.retryable, retryable)
        assert.include(error.message, String(status))
      }))
  }

  it.live("a receiver that never answers times out as retryable", () =>
    Effect.gen(function*() {
      const { url } = yield* server(() => {})
      const error = yield* Effect.flip(deliver(url, "200 millis"))
      assert.isTrue(error.retryable)
      assert.include(error.message, "timed out")
    }))

  it.live("an unreachable receiver is retryable", () =>
    Effect.gen(function*() {
      const { url } = yield* server((res) => res.writeHead(204).end())
      const closed = url.replace(/:\d+\//, ":1/")
      const error = yield* Effect.flip(deliver(closed))
      assert.isTrue(error.retryable)
    }))
})
