/**
 * The whole outbox in one layer: configuration from the environment, the
 * PostgreSQL store (migrations applied at start), the relay's workers and
 * its background duties (`duties`: the gauge sampler, the reaper, the
 * partition-maintenance schedule with the outbox policy from the
 * environment, see `PartitionMaintenance.layerConfig`, plus application
 * tables from `partitions`, and the audit sealer with `ENABLE_AUDIT=true`),
 * the health service, and telemetry from the environment
 * (`OutboxTelemetry.layerConfig`: metric switches, `/metrics` server, OTLP
 * export).
 *
 * Provide it with a `SqlClient` (e.g. `PgClient.layerConfig`, or
 * `OutboxLive.layerPg` which reads `DATABASE_URL`) and an `OutboxSink`:
 *
 * ```ts
 * const AppLive = OutboxLive.layer().pipe(
 *   Layer.provide(OutboxSink.layerHandler((event) => Effect.log(event.eventType))),
 *   Layer.provideMerge(OutboxLive.layerPg)
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { StoreError } from "@outbox/core/OutboxError"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import type { OutboxStore } from "@outbox/core/OutboxStore"
import type * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import { PgClient } from "@effect/sql-pg"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type { ServeError } from "effect/http/HttpServerError"
import * as AuditSealer from "./AuditSealer.ts"
import * as Duty from "./Duty.ts"
import * as OutboxTelemetry from "./OutboxTelemetry.ts"
import * as PartitionMaintenance from "./PartitionMaintenance.ts"
import * as Reaper from "./Reaper.ts"
import * as Relay from "./Relay.ts"

/**
 * Options of `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Overrides of the environment configuration (policies, or any field). */
  readonly config?: Partial<OutboxConfig.Options> | undefined
  /**
   * Store options; by default from the environment (`OUTBOX_TABLE`, and
   * `OUTBOX_MIGRATION_LEGACY_TABLE` / `OUTBOX_MIGRATION_DUAL_WRITE` during an
   * online migration: see `PgOutboxStore.optionsConfig`).
   */
  readonly store?: PgOutboxStore.Options | undefined
  /** Application tables maintained beside the outbox. */
  readonly partitions?: ReadonlyArray<PartitionPolicy.PartitionPolicy> | undefined
  /** Health options (tables, thresholds) of the `OutboxHealth` service the gauges sample. */
  readonly health?: OutboxHealth.Options | undefined
  /** Telemetry; default `OutboxTelemetry.layerConfig` (from the environment). */
  readonly telemetry?: Layer.Layer<never, Config.ConfigError | ServeError> | undefined
}

/**
 * The background duties (`Duty`) beside the relay's workers, one line each:
 * a new duty is a module (its `run` and schedule) plus a line here. Their
 * first runs are staggered in this order, `dutyStagger` apart, so that they
 * do not all reach the database at start.
 *
 * @category layers
 * @since 0.1.0
 */
export const duties = (options: Pick<Options, "partitions"> = {}) =>
  Duty.staggered(
    dutyStagger,
    OutboxTelemetry.layerHealthGauges(), // gauges       every OUTBOX_METRICS_SAMPLE_INTERVAL: gauges from the database
    Reaper.layer, // reaper       every lease/2: expired leases → PENDING (or DEAD_LETTER)
    PartitionMaintenance.layerConfig(options.partitions), // maintenance  every OUTBOX_MAINTENANCE_INTERVAL_MS: partitions
    AuditSealer.layerConfig // audit        every OUTBOX_AUDIT_SEAL_INTERVAL_MS (ENABLE_AUDIT): seals the audit chain
  )

/**
 * Time between the first runs of two successive duties of `duties`.
 *
 * @category constants
 * @since 0.1.0
 */
export const dutyStagger: Duration.Duration = Duration.millis(250)

/**
 * Store + relay + configuration (environment first, then `options.config`):
 *
 * ```
 * OutboxLive
 * ├── Relay workers 1..N      (Relay.layerWorkers)
 * └── duties                  (duties: gauges, reaper, maintenance, audit)
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options = {}
): Layer.Layer<
  | Relay.Relay
  | Reaper.Reaper
  | OutboxStore
  | OutboxConfig.OutboxConfig
  | PartitionMaintenance.PartitionMaintenance
  | AuditSealer.AuditSealer
  | PartitionManager.PartitionManager
  | OutboxHealth.OutboxHealth,
  StoreError | Config.ConfigError | OutboxHealth.InvalidHealthOptions | ServeError,
  SqlClient.SqlClient | OutboxSink
> =>
  Relay.layerWorkers.pipe(
    Layer.provideMerge(duties(options)),
    Layer.provideMerge(PartitionManager.layer),
    // the health queries and gauges follow the store's table (OUTBOX_TABLE, or options.store.table)
    Layer.provideMerge(
      options.store === undefined
        ? OutboxHealth.layerConfig(options.health)
        : OutboxHealth.layer({ table: options.store.table, ...options.health })
    ),
    Layer.provideMerge(
      options.store === undefined
        ? Layer.unwrap(Effect.gen(function*() {
          return PgOutboxStore.layer(yield* PgOutboxStore.optionsConfig)
        }))
        : PgOutboxStore.layer(options.store)
    ),
    Layer.provideMerge(OutboxConfig.layerConfig(options.config)),
    Layer.provideMerge(options.telemetry ?? OutboxTelemetry.layerConfig)
  )

/**
 * A PostgreSQL client from `DATABASE_URL` (and `OUTBOX_PG_POOL_MAX`, default 10).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPg: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, Config.ConfigError | SqlError.SqlError> = PgClient
  .layerConfig({
    url: Config.Redacted("DATABASE_URL"),
    maxConnections: Config.Int("OUTBOX_PG_POOL_MAX").pipe(Config.withDefault(10))
  })
