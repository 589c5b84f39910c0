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

/**
 * One environment variable a module reads: the catalog entry that
 * `@outbox/runtime/OutboxEnv` gathers from every package and the README's
 * configuration table is generated from (a test keeps them equal), so a
 * variable cannot be read without being documented.
 *
 * @category models
 * @since 0.1.0
 */
export interface Variable {
  readonly name: string
  /** The default as written in the docs; `undefined`: none (unset means off, or required where used). */
  readonly default: string | undefined
  readonly description: string
}

/**
 * The variables `config` reads (the module header's table).
 *
 * @category config
 * @since 0.1.0
 */
export const variables: ReadonlyArray<Variable> = [
  { name: "OUTBOX_BATCH_SIZE", default: "100", description: "rows per claim" },
  { name: "OUTBOX_LEASE_SECONDS", default: "30", description: "lease length; heartbeat every lease/3, reaper every lease/2" },
  { name: "OUTBOX_POLL_INTERVAL_MS", default: "1000", description: "idle wait after an empty claim" },
  {
    name: "OUTBOX_MAX_RETRIES",
    default: "5",
    description: "`max_retries` written on published rows (dead letter after that many retries)"
  },
  {
    name: "OUTBOX_CONCURRENCY",
    default: "1",
    description: "claim workers; a warning is logged above 1: global order is then not kept"
  },
  { name: "OUTBOX_MAX_PAYLOAD_BYTES", default: "1048576", description: "largest accepted payload (UTF-8 bytes of its JSON)" },
  { name: "OUTBOX_SHUTDOWN_TIMEOUT_MS", default: "10000", description: "how long shutdown waits for in-flight handlers" }
]

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
