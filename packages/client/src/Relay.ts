/**
 * `createRelay` for code that does not use Effect: the same relay as
 * `OutboxLive` (claims with fenced leases, heartbeats, retries with backoff,
 * dead letters, reaper, partition maintenance, telemetry from the
 * environment), run in a `ManagedRuntime` and stopped with a promise.
 *
 * ```ts
 * const relay = await createRelay({
 *   connectionString: process.env.DATABASE_URL,
 *   handler: async (event) => {
 *     if (event.eventType === "Unknown") throw new PermanentError("no consumer for this type") // dead letter
 *     await broker.send(event) // a throw is retried with backoff
 *   }
 * })
 * process.on("SIGTERM", () => relay.stop())
 * ```
 *
 * @since 0.1.0
 */
import type * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import type * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import { PgClient } from "@effect/sql-pg"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { otelRegistered } from "./internal/runtime.ts"

/**
 * Thrown by a handler for a failure no retry can fix (a poison event): the
 * event is dead-lettered at once. Any other error (or an error with
 * `permanent: true`) is retried.
 *
 * @category errors
 * @since 0.1.0
 */
export class PermanentError extends Error {
  override readonly name = "PermanentError"
  readonly permanent = true
}

/**
 * The connection settings of a `pg` `Pool` (its `options`): the relay opens
 * its own connections with them (it needs a session per worker for its
 * leases, and its driver pipelines statements).
 *
 * @category models
 * @since 0.1.0
 */
export interface PoolLike {
  readonly options: {
    readonly connectionString?: string | undefined
    readonly host?: string | undefined
    readonly port?: number | string | undefined
    readonly user?: string | undefined
    readonly password?: string | unknown
    readonly database?: string | undefined
  }
}

/**
 * Options of `createRelay`. Durations are milliseconds or Effect duration
 * strings (`"30 seconds"`); what is not set comes from the environment
 * (`OUTBOX_*`, see the README), then the defaults.
 *
 * @category models
 * @since 0.1.0
 */
export interface RelayOptions {
  /** The database; or `pool`. */
  readonly connectionString?: string | undefined
  /** A `pg` `Pool` whose connection settings the relay uses (see `PoolLike`). */
  readonly pool?: PoolLike | undefined
  /** Connections the relay may open (default 10). */
  readonly maxConnections?: number | undefined
  /** Called once per delivery; resolve to complete, throw to retry (`PermanentError`: dead letter). */
  readonly handler?: ((event: OutboxEvent) => PromiseLike<void> | void) | undefined
  /** An Effect sink instead of `handler` (e.g. `WebhookSink.layer({ url })` from `@outbox/runtime`). */
  readonly sink?: Layer.Layer<OutboxSink.OutboxSink> | undefined
  /** The outbox table (default `outbox`, or `OUTBOX_TABLE`). */
  readonly table?: string | undefined
  /** Most rows per claim (default 1000): claims grow toward it while a backlog remains. */
  readonly batchSize?: number | undefined
  /** Rows per claim while the outbox is nearly empty (default 10); `batchSize` too: fixed batches. */
  readonly minBatchSize?: number | undefined
  readonly concurrency?: number | undefined
  readonly maxRetries?: number | undefined
  readonly pollInterval?: Duration.Input | undefined
  readonly leaseDuration?: Duration.Input | undefined
  readonly shutdownTimeout?: Duration.Input | undefined
  readonly retryPolicy?: RetryPolicy.Policy | undefined
  /**
   * How long `createRelay` waits for the database at start (default 30
   * seconds): a refused or lost connection, a server starting up or out of
   * connection slots is retried with backoff (`PgOutboxStore.startupRetry`,
   * a warning per attempt), and the promise rejects with the last error
   * after this long. The Effect layer waits without end; a promise awaited at
   * boot should not hang forever on a wrong address. `Infinity` waits as
   * the layer does. Once running, the relay rides out outages by itself.
   */
  readonly startupTimeout?: Duration.Input | undefined
  readonly deadLetterPolicy?: RetryPolicy.Policy | undefined
}

/**
 * A running relay.
 *
 * @category models
 * @since 0.1.0
 */
export interface OutboxRelay {
  /** Stops claiming, lets deliveries in flight finish (up to the shutdown timeout), releases the rest. */
  readonly stop: () => Promise<void>
  /** Counters since the relay started. */
  readonly stats: () => Relay.RelayStats
}

/** A handler's throw as the relay's `DeliveryError`: permanent when it says so, else retried. */
const toDeliveryError = (error: unknown): DeliveryError => {
  if (error instanceof DeliveryError) return error
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : String(error)
  return (error as { readonly permanent?: unknown } | null)?.permanent === true
    ? DeliveryError.permanent(message, error)
    : DeliveryError.transient(message, error)
}

const handlerSink = (handler: (event: OutboxEvent) => PromiseLike<void> | void) =>
  OutboxSink.layerHandler((event) =>
    Effect.tryPromise({ try: () => Promise.resolve(handler(event)), catch: toDeliveryError }), "handler")

const database = (options: RelayOptions) => {
  const maxConnections = options.maxConnections ?? 10
  if (options.connectionString !== undefined) {
    return PgClient.layer({ url: Redacted.make(options.connectionString), maxConnections })
  }
  const o = options.pool?.options
  if (o === undefined) return OutboxLive.layerPg
  if (o.connectionString !== undefined) return PgClient.layer({ url: Redacted.make(o.connectionString), maxConnections })
  return PgClient.layer({
    host: o.host,
    port: o.port === undefined ? undefined : Number(o.port),
    username: o.user,
    password: typeof o.password === "string" ? Redacted.make(o.password) : undefined,
    database: o.database,
    maxConnections
  })
}

const duration = (input: Duration.Input | undefined) => input === undefined ? undefined : Duration.fromInputUnsafe(input)

/**
 * Starts a relay and resolves once it runs (the schema migrated, the first
 * claim scheduled); rejects with the typed error when it cannot start (bad
 * configuration, no database). Needs `connectionString`, `pool` or
 * `DATABASE_URL`, and `handler` or `sink`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const createRelay = (options: RelayOptions): Promise<OutboxRelay> => {
  if ((options.handler === undefined) === (options.sink === undefined)) {
    return Promise.reject(new TypeError("createRelay needs exactly one of handler or sink"))
  }
  const config: Record<string, unknown> = {
    batchSize: options.batchSize,
    minBatchSize: options.minBatchSize,
    concurrency: options.concurrency,
    maxRetries: options.maxRetries,
    pollInterval: duration(options.pollInterval),
    leaseDuration: duration(options.leaseDuration),
    shutdownTimeout: duration(options.shutdownTimeout),
    retryPolicy: options.retryPolicy,
    deadLetterPolicy: options.deadLetterPolicy
  }
  for (const key of Object.keys(config)) if (config[key] === undefined) delete config[key]
  const startupTimeout = options.startupTimeout === undefined ? Duration.seconds(30) : Duration.fromInputUnsafe(options.startupTimeout)
  const live = OutboxLive.layer({
    config: config as Partial<OutboxConfig.Options>,
    store: {
      ...(options.table === undefined ? {} : { table: options.table }),
      startupRetry: Duration.isFinite(startupTimeout)
        ? PgOutboxStore.defaultStartupRetry.pipe(Schedule.upTo({ duration: startupTimeout }))
        : PgOutboxStore.defaultStartupRetry
    },
    // With an OpenTelemetry SDK registered, the relay traces through it with @effect/opentelemetry's context
    // hook, so a promise handler runs with the producer's trace as its active context and its own
    // instrumentation (HTTP clients, drivers) joins that trace. Without one, the environment's telemetry.
    ...(otelRegistered()
      ? { telemetry: Layer.mergeAll(OutboxTelemetry.layerConfig, OtelTracer.layerGlobal as Layer.Layer<never>) }
      : {})
  }).pipe(
    Layer.provide(options.sink ?? handlerSink(options.handler!)),
    Layer.provide(database(options))
  )
  const runtime = ManagedRuntime.make(live)
  return runtime.runPromise(Effect.service(Relay.Relay)).then(
    (relay): OutboxRelay => ({
      stop: () => runtime.dispose(),
      stats: () => runtime.runSync(relay.stats)
    }),
    (error) => runtime.dispose().then(() => Promise.reject(error))
  )
}
