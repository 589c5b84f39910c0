import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as WebhookSink from "../src/sinks/WebhookSink.ts"

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

/** A real HTTP server on a random loopback port answering with `respond`; its URL and what it saw. */
const server = HttpReceiver.make

const deliverWith = <E>(sink: Layer.Layer<OutboxSink, E>) =>
  Effect.flatMap(Effect.service(OutboxSink), (s) => s.deliver(event)).pipe(Effect.provide(sink))

const deliver = (url: string, timeout: Duration.Input = "5 seconds", headers?: Record<string, string>) =>
  deliverWith(WebhookSink.layer({ url, timeout, headers }))

describe("WebhookSink", () => {
  it.live("POSTs the event as JSON with an Idempotency-Key; 2xx is delivered", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server((res) => res.writeHead(204).end())
      yield* deliver(url)
      assert.strictEqual(seen.length, 1)
      assert.strictEqual(seen[0]!.method, "POST")
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

  it.live("a 200 with a body is delivered too", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server((res) => res.writeHead(200, { "content-type": "application/json" }).end("{\"ok\":true}"))
      yield* deliver(url)
      yield* deliver(url)
      assert.strictEqual(seen.length, 2)
    }))

  it.live("sends the extra headers, but the Idempotency-Key is always the tracking id", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server((res) => res.writeHead(202).end())
      yield* deliver(url, "5 seconds", { Authorization: "Bearer s3cret", "Idempotency-Key": "spoofed" })
      assert.strictEqual(seen[0]!.headers.authorization, "Bearer s3cret")
      assert.strictEqual(seen[0]!.headers["idempotency-key"], event.trackingId)
    }))

  for (const [status, retryable] of [[500, true], [503, true], [429, true], [408, true], [400, false], [404, false], [422, false]] as const) {
    it.live(`status ${status} is ${retryable ? "retryable" : "permanent"}`, () =>
      Effect.gen(function*() {
        const { url } = yield* server((res) => res.writeHead(status).end())
        const error = yield* Effect.flip(deliver(url))
        assert.strictEqual(error._tag, "DeliveryError")
        assert.strictEqual(error.retryable, retryable)
        assert.include(error.message, String(status))
      }))
  }

  it.live("the error message carries the start of the response body", () =>
    Effect.gen(function*() {
      const { url } = yield* server((res) => res.writeHead(400).end(`{"error":"unknown customer"}${" ".repeat(50)}${"x".repeat(500)}`))
      const error = yield* Effect.flip(deliver(url))
      assert.isFalse(error.retryable)
      assert.include(error.message, "webhook answered 400: {\"error\":\"unknown customer\"}")
      assert.isBelow(error.message.length, 260)
    }))

  it.live("a receiver that never answers times out as retryable", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server(() => {})
      const error = yield* Effect.flip(deliver(url, "200 millis"))
      assert.strictEqual(seen.length, 1)
      assert.isTrue(error.retryable)
      assert.include(error.message, "timed out")
    }))

  it.live("a timed-out request is aborted: the receiver sees its connection closed", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      const { url } = yield* server((res) => res.on("close", () => Deferred.doneUnsafe(closed, Exit.void)))
      const error = yield* Effect.flip(deliver(url, "200 millis"))
      assert.include(error.message, "timed out")
      // without an abort the pooled keep-alive connection would stay open and this would time out
      yield* Deferred.await(closed).pipe(Effect.timeout("5 seconds"))
    }))

  it.live("a response whose body never ends times out, and its connection is closed", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      const { url } = yield* server((res) => {
        res.on("close", () => Deferred.doneUnsafe(closed, Exit.void))
        res.writeHead(200, { "content-type": "text/plain" })
        res.write("the start of a body that never ends")
      })
      const error = yield* Effect.flip(deliver(url, "300 millis"))
      assert.isTrue(error.retryable)
      assert.include(error.message, "timed out")
      yield* Deferred.await(closed).pipe(Effect.timeout("5 seconds"))
    }))

  it.live("an unreachable receiver is retryable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(deliver("http://127.0.0.1:1/hook"))
      assert.isTrue(error.retryable)
      assert.include(error.message, "webhook request failed")
    }))

  it.live("layerConfig reads OUTBOX_SINK_URL", () =>
    Effect.gen(function*() {
      const { url, seen } = yield* server((res) => res.writeHead(200).end())
      yield* deliverWith(
        WebhookSink.layerConfig().pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { OUTBOX_SINK_URL: url, OUTBOX_SINK_TIMEOUT: "2 seconds" } })))
        )
      )
      assert.strictEqual(seen.length, 1)
    }))

  it.live("layerConfig fails with a ConfigError when OUTBOX_SINK_URL is missing", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        deliverWith(WebhookSink.layerConfig().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))))
      )
      assert.include(String(error), "OUTBOX_SINK_URL")
    }))
})
