import { assert, describe, it } from "@effect/vitest"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const load = (env: Record<string, string>) =>
  Effect.gen(function*() {
    return yield* OutboxConfig.OutboxConfig
  }).pipe(
    Effect.provide(OutboxConfig.layerConfig().pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
    ))
  )

describe("OutboxConfig", () => {
  it.effect("defaults", () =>
    Effect.gen(function*() {
      const config = yield* load({})
      assert.strictEqual(config.batchSize, 1000)
      assert.strictEqual(config.minBatchSize, 10)
      assert.strictEqual(Duration.toMillis(config.leaseDuration), 30_000)
      assert.strictEqual(Duration.toMillis(config.pollInterval), 1000)
      assert.strictEqual(config.maxRetries, 5)
      assert.strictEqual(config.concurrency, 1)
    }))

  it.effect("reads the environment", () =>
    Effect.gen(function*() {
      const config = yield* load({
        OUTBOX_BATCH_SIZE: "250",
        OUTBOX_MIN_BATCH_SIZE: "25",
        OUTBOX_LEASE_SECONDS: "12",
        OUTBOX_POLL_INTERVAL_MS: "40",
        OUTBOX_MAX_RETRIES: "0",
        OUTBOX_CONCURRENCY: "3"
      })
      assert.strictEqual(config.batchSize, 250)
      assert.strictEqual(config.minBatchSize, 25)
      assert.strictEqual(Duration.toMillis(config.leaseDuration), 12_000)
      assert.strictEqual(Duration.toMillis(config.pollInterval), 40)
      assert.strictEqual(config.maxRetries, 0)
      assert.strictEqual(config.concurrency, 3)
    }))

  for (
    const [name, value] of [
      ["OUTBOX_BATCH_SIZE", "lots"],
      ["OUTBOX_BATCH_SIZE", "0"],
      ["OUTBOX_MIN_BATCH_SIZE", "0"],
      ["OUTBOX_LEASE_SECONDS", "-5"],
      ["OUTBOX_POLL_INTERVAL_MS", "1.5"],
      ["OUTBOX_MAX_RETRIES", "-1"],
      ["OUTBOX_CONCURRENCY", "two"],
      ["OUTBOX_FAIRNESS_MAX_IN_FLIGHT", "0"]
    ] as const
  ) {
    it.effect(`a bad ${name}=${value} fails at start naming the variable`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(load({ [name]: value }))
        assert.include(String(error), name)
      }))
  }

  it.effect("OUTBOX_FAIRNESS_MAX_IN_FLIGHT: unset is no cap; a number caps each tenant's leased events", () =>
    Effect.gen(function*() {
      assert.isUndefined((yield* load({ OUTBOX_FAIRNESS: "tenant" })).fairnessMaxInFlight)
      const config = yield* load({ OUTBOX_FAIRNESS: "tenant", OUTBOX_FAIRNESS_MAX_IN_FLIGHT: "20" })
      assert.strictEqual(config.fairnessMaxInFlight, 20)
    }))

  it.effect("OUTBOX_FAIRNESS_MAX_IN_FLIGHT with OUTBOX_CLAIM_MODE=transaction fails at start, naming both, with key order too", () =>
    Effect.gen(function*() {
      for (const ordering of ["none", "key"]) {
        const error = yield* Effect.flip(
          load({
            OUTBOX_FAIRNESS: "tenant",
            OUTBOX_FAIRNESS_MAX_IN_FLIGHT: "20",
            OUTBOX_CLAIM_MODE: "transaction",
            OUTBOX_ORDERING: ordering
          })
        )
        assert.include(String(error), "OUTBOX_FAIRNESS_MAX_IN_FLIGHT")
        assert.include(String(error), "OUTBOX_CLAIM_MODE=lease")
      }
      // lease claims take it
      const lease = yield* load({ OUTBOX_FAIRNESS: "tenant", OUTBOX_FAIRNESS_MAX_IN_FLIGHT: "20", OUTBOX_CLAIM_MODE: "lease" })
      assert.strictEqual(lease.fairnessMaxInFlight, 20)
    }))

  it.effect("OUTBOX_FAIRNESS_MAX_IN_FLIGHT without OUTBOX_FAIRNESS=tenant fails at start instead of capping nothing", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ OUTBOX_FAIRNESS_MAX_IN_FLIGHT: "20" }))
      assert.include(String(error), "OUTBOX_FAIRNESS=tenant")
    }))
})
