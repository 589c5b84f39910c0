/**
 * Relay and publisher configuration, read through Effect `Config` (from the
 * environment by default).
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `OUTBOX_BATCH_SIZE` | 100 | rows per claim |
 * | `OUTBOX_LEASE_SECONDS` | 30 | lease length; heartbeat every lease/3, reaper every lease/2 |
 * | `OUTBOX_POLL_INTERVAL_MS` | 1000 | idle wait between empty claims |
 * | `OUTBOX_MAX_RETRIES` | 5 | `max_retries` written on published rows |
 * | `OUTBOX_CONCURRENCY` | 1 | claim workers (global order is only kept with 1) |
 * | `OUTBOX_MAX_PAYLOAD_BYTES` | 1048576 | largest accepted payload |
 * | `OUTBOX_SHUTDOWN_TIMEOUT_MS` | 10000 | how long shutdown waits for in-flight handlers |
 *
 * Bad values fail at start with a `ConfigError` naming the variable.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { PublishSettings } from "./Outbox.ts"
import * as RetryPolicy from "./RetryPolicy.ts"

/**
 * The resolved configuration.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly batchSize: number
  readonly leaseDuration: Duration.Duration
  readonly pollInterval: Duration.Duration
  readonly maxRetries: number
  readonly concurrency: number
  readonly maxPayloadBytes: number
  readonly shutdownTimeout: Duration.Duration
  /** Backoff between attempts. */
  readonly retryPolicy: RetryPolicy.Policy
  /** When to stop retrying and dead-letter. */
  readonly deadLetterPolicy: RetryPolicy.Policy
}

/**
 * The defaults, as documented in the module header.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaults: Options = {
  batchSize: 100,
  leaseDuration: Duration.seconds(30),
  pollInterval: Duration.millis(1000),
  maxRetries: 5,
  concurrency: 1,
  maxPayloadBytes: 1024 * 1024,
  shutdownTimeout: Duration.seconds(10),
  retryPolicy: RetryPolicy.defaultRetry,
  deadLetterPolicy: RetryPolicy.defaultDeadLetter
}

/**
 * The outbox configuration service.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxConfig extends Context.Service<OutboxConfig, Options>()("@outbox/core/OutboxConfig") {}

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

const nonNegativeInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), name).pipe(Config.withDefault(fallback))

/**
 * The environment-facing part of the configuration.
 *
 * @category config
 * @since 0.1.0
 */
export const config: Config.Config<
  Pick<Options, "batchSize" | "leaseDuration" | "pollInterval" | "maxRetries" | "concurrency" | "maxPayloadBytes" | "shutdownTimeout">
> = Config.all({
  batchSize: positiveInt("OUTBOX_BATCH_SIZE", defaults.batchSize),
  leaseDuration: positiveInt("OUTBOX_LEASE_SECONDS", 30).pipe(Config.map(Duration.seconds)),
  pollInterval: positiveInt("OUTBOX_POLL_INTERVAL_MS", 1000).pipe(Config.map(Duration.millis)),
  maxRetries: nonNegativeInt("OUTBOX_MAX_RETRIES", defaults.maxRetries),
  concurrency: positiveInt("OUTBOX_CONCURRENCY", defaults.concurrency),
  maxPayloadBytes: positiveInt("OUTBOX_MAX_PAYLOAD_BYTES", defaults.maxPayloadBytes),
  shutdownTimeout: nonNegativeInt("OUTBOX_SHUTDOWN_TIMEOUT_MS", 10_000).pipe(Config.map(Duration.millis))
})

const settingsLayer = Layer.effect(
  PublishSettings,
  Effect.map(Effect.service(OutboxConfig), (o) => ({ maxPayloadBytes: o.maxPayloadBytes, maxRetries: o.maxRetries }))
)

/**
 * Provides `OutboxConfig` (and the matching publish limits) from options,
 * filling what is missing with the defaults.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Partial<Options> = {}): Layer.Layer<OutboxConfig> =>
  settingsLayer.pipe(Layer.provideMerge(Layer.succeed(OutboxConfig, { ...defaults, ...options })))

/**
 * Provides `OutboxConfig` from the environment (see the module header);
 * `overrides` supplies what the environment cannot, such as policies, and
 * wins over the environment for the fields it sets.
 * Fails with a `ConfigError` naming the variable on a bad value.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  overrides: Partial<Options> = {}
): Layer.Layer<OutboxConfig, Config.ConfigError> =>
  settingsLayer.pipe(
    Layer.provideMerge(Layer.effect(
      OutboxConfig,
      Effect.gen(function*() {
        const env = yield* config
        return { ...defaults, ...env, ...overrides }
      })
    ))
  )
