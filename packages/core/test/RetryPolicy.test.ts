import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

const event = (retryCount: number, maxRetries = 5): OutboxEvent => ({
  id: 1n,
  lockToken: 1n,
  createdAt: new Date(0),
  lockedUntil: new Date(0),
  trackingId: "t",
  aggregateType: "Order",
  aggregateId: "o",
  eventType: "OrderCreated",
  payload: {},
  metadata: {},
  retryCount,
  maxRetries
})

const decideFor = (retryCount: number, error: unknown = new Error("boom"), maxRetries = 5) =>
  RetryPolicy.decide(
    RetryPolicy.combine(RetryPolicy.defaultRetry, RetryPolicy.defaultDeadLetter),
    { event: event(retryCount, maxRetries), error, retryable: RetryPolicy.isRetryable(error) }
  )

describe("RetryPolicy", () => {
  it.effect("default backoff grows exponentially with ±20% jitter", () =>
    Effect.gen(function*() {
      for (const [retryCount, base] of [[0, 1000], [1, 2000], [2, 4000], [3, 8000], [4, 16000]] as const) {
        const decision = yield* decideFor(retryCount)
        assert.strictEqual(decision._tag, "Retry")
        if (decision._tag === "Retry") {
          const ms = Duration.toMillis(decision.delay)
          assert.isAtLeast(ms, base * 0.8)
          assert.isAtMost(ms, base * 1.2)
        }
      }
    }))

  it.effect("the cap bounds the delay", () =>
    Effect.gen(function*() {
      const decision = yield* decideFor(15, new Error("boom"), 100)
      assert.strictEqual(decision._tag, "Retry")
      if (decision._tag === "Retry") assert.isAtMost(Duration.toMillis(decision.delay), 5 * 60 * 1000)
    }))

  it.effect("dead-letters once the row's max_retries are used", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* decideFor(4, new Error("boom"), 5))._tag, "Retry")
      assert.strictEqual((yield* decideFor(5, new Error("boom"), 5))._tag, "DeadLetter")
      assert.strictEqual((yield* decideFor(0, new Error("boom"), 0))._tag, "DeadLetter")
    }))

  it.effect("dead-letters a permanent DeliveryError at once", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* decideFor(0, DeliveryError.permanent("bad payload")))._tag, "DeadLetter")
      assert.strictEqual((yield* decideFor(0, DeliveryError.transient("timeout")))._tag, "Retry")
    }))

  it.effect("maxAttempts caps attempts whatever the row says", () =>
    Effect.gen(function*() {
      const policy = RetryPolicy.combine(RetryPolicy.defaultRetry, RetryPolicy.maxAttempts(2))
      const attempt = (retryCount: number) =>
        RetryPolicy.decide(policy, { event: event(retryCount, 10), error: "x", retryable: true })
      assert.strictEqual((yield* attempt(0))._tag, "Retry")
      assert.strictEqual((yield* attempt(1))._tag, "DeadLetter")
    }))
})
