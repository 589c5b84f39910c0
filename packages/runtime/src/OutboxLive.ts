/**
 * The whole outbox in one layer: configuration from the environment, the
 * PostgreSQL store (migrations applied at start), the relay's workers and
 * its background duties (`duties`: the wake-up listener that gets idle
 * workers to claim within milliseconds of a commit (`WakeupListener`,
 * `OUTBOX_NOTIFY`), the gauge sampler, the reaper, the
 * partition-maintenance schedule with the outbox policy from the
 * environment, see `PartitionMaintenance.layerConfig`, plus application
 * tables from `partitions`, archiving before it drops with `archive`, and
 * the audit sealer with `ENABLE_AUDIT=true`),
 * the health service, and telemetry from the environment
 * (`OutboxTelemetry.layerConfig`: metric switches, `/metrics` server, OTLP
 * export).
 *
 * Provide it with a `SqlClient` (e.g. `PgClient.layerConfig`, or
 * `OutboxLive.layerPg` which reads `DATABASE_URL`) and an `OutboxSink`.
 * The wake-up needs the client to be a `PgClient` (both of those are; it
 * opens one session of its own with the client's settings); it is not
 * required: with a `SqlClient` of another kind the relay only polls, and
 * says so once at start.
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
import { ArchiveStorage } from "@outbox/core/ArchiveStorage"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { StoreError } from "@outbox/core/OutboxError"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import type { OutboxStore } from "@outbox/core/OutboxStore"
import type * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxTables from "@outbox/sql/OutboxTables"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
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
import * as OutboxEnv from "./OutboxEnv.ts"
import * as OutboxTelemetry from "./OutboxTelemetry.ts"
import * as PartitionMaintenance from "./PartitionMaintenance.ts"
import * as Reaper from "./Reaper.ts"
import * as Relay from "./Relay.ts"
import * as Wakeup from "./Wakeup.ts"
import * as WakeupListener from "./WakeupListener.ts"

/**
 * Options of `layer`. `AE` and `AR` are the error and requirements of an
 * `archive` given as a layer.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options<AE = never, AR = never> {
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
  /**
   * Cold storage for retired partitions: an `ArchiveStorage` service, or a
   * layer building one (`FileArchiveStorage.layer({ directory })` with
   * `NodeServices.layer`, or an object-store adapter). With it the
   * maintenance duty archives the outbox's expired partitions (and the audit
   * log's) before dropping them, and dropping waits for the archive to be
   * read back and verified, so an expired event is never just deleted; a
   * failed write keeps the partition. Application `partitions` in retention
   * mode `archive` use it too. Without it expired outbox partitions are
   * dropped.
   */
  readonly archive?: ArchiveStorage["Service"] | Layer.Layer<ArchiveStorage, AE, AR> | undefined
  /**
   * The wake-up listener's options (`WakeupListener`; its channel follows
   * the store's table). `enabled` defaults to `OUTBOX_NOTIFY`.
   */
  readonly wakeup?: Omit<WakeupListener.Options, "tables"> | undefined
}

/** The maintenance duty, handed the `archive` storage (built first when it is a layer). */
const maintenance = <AE, AR>(
  options: Pick<Options<AE, AR>, "partitions" | "archive">
): Layer.Layer<
  PartitionMaintenance.PartitionMaintenance,
  Config.ConfigError | AE,
  PartitionManager.PartitionManager | SqlClient.SqlClient | AR
> => {
  const archive = options.archive
  const over = <E, R>(storage: Layer.Layer<ArchiveStorage, E, R>) =>
    Layer.unwrap(
      ArchiveStorage.useSync((service) => PartitionMaintenance.layerConfig(options.partitions, undefined, { archive: service }))
    ).pipe(Layer.provide(storage))
  if (archive !== undefined) {
    return over(
      Layer.isLayer(archive)
        ? archive as Layer.Layer<ArchiveStorage, AE, AR>
        : Layer.succeed(ArchiveStorage)(archive as ArchiveStorage["Service"])
    )
  }
  // OUTBOX_ARCHIVE_DIR: the file storage (its file-system layers only, not the platform barrel: see OutboxTelemetry)
  return Layer.unwrap(Effect.gen(function*() {
    const directory = yield* OutboxEnv.archiveDirectory
    return directory === undefined
      ? PartitionMaintenance.layerConfig(options.partitions)
      : over(FileArchiveStorage.layer({ directory }).pipe(Layer.provide([NodeFileSystem.layer, NodePath.layer])))
  }))
}

/**
 * The wake-up listener (`OUTBOX_NOTIFY`) on the channel of the store's table
 * (`OUTBOX_TABLE`, or `options.store`).
 */
const listener = (options: Pick<Options, "store" | "wakeup">) =>
  Layer.unwrap(Effect.gen(function*() {
    const store = options.store ?? (yield* OutboxEnv.store)
    const tables = store.tables ?? (yield* OutboxTables.make(store.table ?? "outbox").pipe(
      Effect.mapError((e) => new StoreError({ operation: "configure", message: e.message, retryable: false, cause: e }))
    ))
    return WakeupListener.layerConfig({ ...options.wakeup, tables })
  }))

/**
 * The background duties (`Duty`) beside the relay's workers, one line each:
 * a new duty is a module (its `run` and schedule) plus a line here. Their
 * first runs are staggered in this order, `dutyStagger` apart, so that they
 * do not all reach the database at start.
 *
 * @category layers
 * @since 0.1.0
 */
export const duties = <AE = never, AR = never>(
  options: Pick<Options<AE, AR>, "partitions" | "archive" | "store" | "wakeup"> = {}
) =>
  Layer.merge(
    listener(options), // wakeup       from start, not staggered (it connects once): LISTEN, wake idle workers
    Duty.staggered(
      dutyStagger,
      OutboxTelemetry.layerHealthGauges(), // gauges       every OUTBOX_METRICS_SAMPLE_INTERVAL: gauges from the database
      Reaper.layer, // reaper       every lease/2: expired leases → PENDING (or DEAD_LETTER)
      maintenance(options), // maintenance  every OUTBOX_MAINTENANCE_INTERVAL_MS: partitions (archived first with `archive`)
      AuditSealer.layerConfig() // audit        every OUTBOX_AUDIT_SEAL_INTERVAL_MS (ENABLE_AUDIT): seals the audit chain
    )
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
 * ├── Relay workers 1..N      (Relay.layerWorkers), woken by the Wakeup signal
 * └── duties                  (duties: wake-up listener, gauges, reaper, maintenance, audit)
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <AE = never, AR = never>(
  options: Options<AE, AR> = {}
): Layer.Layer<
  | Relay.Relay
  | Reaper.Reaper
  | OutboxStore
  | OutboxConfig.OutboxConfig
  | PartitionMaintenance.PartitionMaintenance
  | AuditSealer.AuditSealer
  | PartitionManager.PartitionManager
  | OutboxHealth.OutboxHealth
  | WakeupListener.WakeupListener,
  StoreError | Config.ConfigError | OutboxHealth.InvalidHealthOptions | ServeError | AE,
  SqlClient.SqlClient | OutboxSink | AR
> =>
  Relay.layerWorkers.pipe(
    Layer.provideMerge(duties(options)),
    // one signal for the workers and the listener
    Layer.provideMerge(Wakeup.layer),
    Layer.provideMerge(PartitionManager.layer),
    // the health queries and gauges follow the store's tables (OUTBOX_TABLE, or options.store)
    Layer.provideMerge(Layer.unwrap(Effect.gen(function*() {
      const store = options.store ?? (yield* OutboxEnv.store)
      return OutboxHealth.layer({ table: store.tables ?? store.table, ...options.health }).pipe(
        Layer.provideMerge(PgOutboxStore.layer(store))
      )
    }))),
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
  .layerConfig(OutboxEnv.pg)
