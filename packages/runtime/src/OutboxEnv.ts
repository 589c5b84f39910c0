/**
 * The environment, read in one place. Every variable the packages read is
 * listed in `variables` (with its default and meaning), and the runtime's
 * own are read here and nowhere else; library modules take `Options`, or
 * the `Config` descriptions below, which their `layerConfig` constructors
 * default to. The README's configuration table is generated from
 * `variables` (`npm run docs:config`) and a test fails when they differ, or
 * when any module other than one per package (`OutboxConfig` in core,
 * `SqlEnv` in sql, this one here) names a variable.
 *
 * Why: the same variable (`OUTBOX_TABLE`, `ENABLE_AUDIT`) was read in three
 * modules each, with three chances to disagree on its default, and a new
 * variable could ship undocumented.
 *
 * @since 0.1.0
 */
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as SqlEnv from "@outbox/sql/SqlEnv"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"

/**
 * A catalog entry (see `OutboxConfig.Variable`).
 *
 * @category models
 * @since 0.1.0
 */
export type Variable = OutboxConfig.Variable

const positive = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

const nonNegative = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), name).pipe(Config.withDefault(fallback))

/**
 * The relay's settings (`OutboxConfig`, core): batch, lease, poll, retries,
 * workers, payload limit, shutdown.
 *
 * @category config
 * @since 0.1.0
 */
export const relay = OutboxConfig.config

/**
 * The store's options (`PgOutboxStore`): table, migrations at start, online
 * migration.
 *
 * @category config
 * @since 0.1.0
 */
export const store = SqlEnv.store

/**
 * The outbox table's name (`OUTBOX_TABLE`).
 *
 * @category config
 * @since 0.1.0
 */
export const table = SqlEnv.table

/**
 * Whether the audit trail is on (`ENABLE_AUDIT`).
 *
 * @category config
 * @since 0.1.0
 */
export const audit = SqlEnv.audit

/**
 * The PostgreSQL client of `OutboxLive.layerPg`.
 *
 * @category config
 * @since 0.1.0
 */
export const pg: Config.Config<{ readonly url: Redacted.Redacted; readonly maxConnections: number }> = Config.all({
  url: Config.Redacted("DATABASE_URL"),
  maxConnections: positive("OUTBOX_PG_POOL_MAX", 10)
})

/**
 * `OUTBOX_NOTIFY` (default `true`): whether idle relays are woken by
 * LISTEN/NOTIFY (`WakeupListener`). `false` behind a pooler that cannot
 * LISTEN (PgBouncer in transaction mode): the relay then only polls.
 *
 * @category config
 * @since 0.1.0
 */
export const notify: Config.Config<boolean> = Config.Boolean("OUTBOX_NOTIFY").pipe(Config.withDefault(true))

/**
 * Partition maintenance (`PartitionMaintenance.layerConfig`).
 *
 * @category config
 * @since 0.1.0
 */
export const partitions: Config.Config<{
  readonly mode: "native" | "partman" | "off"
  readonly retentionDays: number
  readonly premake: number
  readonly every: Duration.Duration
  readonly table: string
  readonly audit: boolean
}> = Config.all({
  mode: Config.schema(Schema.Literals(["native", "partman", "off"]), "OUTBOX_PARTITION_MODE").pipe(
    Config.withDefault("native" as const)
  ),
  retentionDays: positive("OUTBOX_RETENTION_DAYS", 7),
  premake: nonNegative("OUTBOX_PARTITION_PREMAKE", 3),
  every: positive("OUTBOX_MAINTENANCE_INTERVAL_MS", 3_600_000).pipe(Config.map(Duration.millis)),
  table: SqlEnv.table,
  audit: SqlEnv.audit
})

/**
 * The audit chain's sealer (`AuditSealer.layerConfig`).
 *
 * @category config
 * @since 0.1.0
 */
export const auditSealer: Config.Config<{ readonly enabled: boolean; readonly every: Duration.Duration }> = Config.all({
  enabled: SqlEnv.audit,
  every: positive("OUTBOX_AUDIT_SEAL_INTERVAL_MS", 5000).pipe(Config.map(Duration.millis))
})

/** `tenant_id, region`: comma-separated label names. */
const LabelList = Schema.String.check(Schema.isPattern(/^\s*([A-Za-z_][A-Za-z0-9_]*\s*(,\s*[A-Za-z_][A-Za-z0-9_]*\s*)*)?$/))

/**
 * Telemetry (`OutboxTelemetry.layerConfig`): `labels` is the raw
 * allow-list (`OutboxTelemetry.parseLabels` reads it); `prometheus` and
 * `otlp` are absent when not asked for.
 *
 * @category config
 * @since 0.1.0
 */
export const telemetry: Config.Config<{
  readonly metrics: boolean
  readonly labels: string
  readonly prometheus: { readonly port: number; readonly host: string } | undefined
  readonly otlp: { readonly endpoint: string; readonly serviceName: string } | undefined
}> = Config.all({
  metrics: Config.Boolean("OUTBOX_METRICS").pipe(Config.withDefault(true)),
  labels: Config.schema(LabelList, "OUTBOX_METRICS_LABELS").pipe(Config.withDefault("")),
  prometheus: Config.Boolean("OUTBOX_METRICS_PROMETHEUS").pipe(Config.withDefault(false)),
  port: Config.Port("OUTBOX_METRICS_PORT").pipe(Config.withDefault(9464)),
  host: Config.String("OUTBOX_METRICS_HOST").pipe(Config.withDefault("0.0.0.0")),
  endpoint: Config.option(Config.String("OTEL_EXPORTER_OTLP_ENDPOINT")),
  serviceName: Config.String("OTEL_SERVICE_NAME").pipe(Config.withDefault("outbox-relay"))
}).pipe(Config.map(({ endpoint, host, labels, metrics, port, prometheus, serviceName }) => ({
  metrics,
  labels,
  prometheus: prometheus ? { port, host } : undefined,
  otlp: Option.isSome(endpoint) && endpoint.value !== "" ? { endpoint: endpoint.value, serviceName } : undefined
})))

/**
 * The period of the gauge sampler (`OutboxTelemetry.layerHealthGauges`).
 *
 * @category config
 * @since 0.1.0
 */
export const sampleInterval: Config.Config<Duration.Duration> = Config.Duration("OUTBOX_METRICS_SAMPLE_INTERVAL").pipe(
  Config.withDefault(Duration.seconds(15))
)

/** The bound of each delivery, for every sink. */
const sinkTimeout = Config.Duration("OUTBOX_SINK_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10)))

/**
 * The webhook sink (`WebhookSink.layerConfig`); the URL is required.
 *
 * @category config
 * @since 0.1.0
 */
export const webhook: Config.Config<{ readonly url: string; readonly timeout: Duration.Duration }> = Config.all({
  url: Config.URL("OUTBOX_SINK_URL").pipe(Config.map((url) => url.toString())),
  timeout: sinkTimeout
})

/**
 * The sink chosen by URL (`SinkUrl.layerConfig`): `OUTBOX_SINK_URL`, unset
 * allowed, and `OUTBOX_SINK_TIMEOUT`.
 *
 * @category config
 * @since 0.1.0
 */
export const sink: Config.Config<{ readonly url: Option.Option<string>; readonly timeout: Duration.Duration }> = Config
  .all({
    url: Config.option(Config.String("OUTBOX_SINK_URL")),
    timeout: sinkTimeout
  })

/**
 * `sink` with the URL required.
 *
 * @category config
 * @since 0.1.0
 */
export const sinkRequired: Config.Config<{ readonly url: string; readonly timeout: Duration.Duration }> = Config.all({
  url: Config.String("OUTBOX_SINK_URL"),
  timeout: sinkTimeout
})

/**
 * The archive directory (`OUTBOX_ARCHIVE_DIR`; unset: none): with it,
 * `OutboxLive` archives expired outbox partitions there
 * (`FileArchiveStorage`) before dropping them.
 *
 * @category config
 * @since 0.1.0
 */
export const archiveDirectory: Config.Config<string | undefined> = Config.option(Config.String("OUTBOX_ARCHIVE_DIR")).pipe(
  Config.map((dir) => Option.isSome(dir) && dir.value.trim() !== "" ? dir.value : undefined)
)

/**
 * The runtime's own variables (those read above).
 *
 * @category config
 * @since 0.1.0
 */
export const runtimeVariables: ReadonlyArray<Variable> = [
  {
    name: "DATABASE_URL",
    default: undefined,
    description: "PostgreSQL URL (`OutboxLive.layerPg`); the example and the tests fall back to embedded PostgreSQL"
  },
  { name: "OUTBOX_PG_POOL_MAX", default: "10", description: "connections of `OutboxLive.layerPg`" },
  {
    name: "OUTBOX_NOTIFY",
    default: "`true`",
    description:
      "wake idle relays by LISTEN/NOTIFY within milliseconds (one session per relay process, outside the pool; producers notify only while a relay asks); `false` behind PgBouncer in transaction mode: poll only"
  },
  {
    name: "OUTBOX_PARTITION_MODE",
    default: "`native`",
    description: "`native` (the partition manager), `partman` (pg_partman maintains the outbox), `off`"
  },
  { name: "OUTBOX_RETENTION_DAYS", default: "7", description: "outbox retention" },
  { name: "OUTBOX_PARTITION_PREMAKE", default: "3", description: "outbox partitions kept ready ahead" },
  { name: "OUTBOX_MAINTENANCE_INTERVAL_MS", default: "3600000", description: "time between maintenance runs" },
  {
    name: "OUTBOX_ARCHIVE_DIR",
    default: undefined,
    description:
      "archive expired outbox partitions into this directory (verified, then dropped; `outbox archive` lists, verifies, restores); unset: dropped"
  },
  {
    name: "OUTBOX_AUDIT_SEAL_INTERVAL_MS",
    default: "5000",
    description: "time between audit-chain seals (with `ENABLE_AUDIT=true`)"
  },
  { name: "OUTBOX_METRICS", default: "`true`", description: "record metrics" },
  {
    name: "OUTBOX_METRICS_LABELS",
    default: undefined,
    description: "extra metric labels taken from event metadata (`tenant_id,region`), an allow-list"
  },
  { name: "OUTBOX_METRICS_PROMETHEUS", default: "`false`", description: "serve `/metrics` for Prometheus" },
  { name: "OUTBOX_METRICS_PORT", default: "9464", description: "port of `/metrics`" },
  { name: "OUTBOX_METRICS_HOST", default: "`0.0.0.0`", description: "address `/metrics` listens on" },
  {
    name: "OUTBOX_METRICS_SAMPLE_INTERVAL",
    default: "`15 seconds`",
    description: "time between samples of the database gauges"
  },
  {
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    default: undefined,
    description: "OTLP/HTTP endpoint for traces and metrics (none when unset)"
  },
  { name: "OTEL_SERVICE_NAME", default: "`outbox-relay`", description: "service name of the exported telemetry" },
  {
    name: "OUTBOX_SINK_URL",
    default: undefined,
    description:
      "where the relay delivers, by scheme: `http(s)://` webhook, `nats://`, `amqp(s)://`, `redis(s)://`, `kafka://` (`SinkUrl.layerConfig`; see \"Sinks and brokers\"); the orders example logs events when unset"
  },
  {
    name: "OUTBOX_SINK_TIMEOUT",
    default: "`10 seconds`",
    description: "bound of each delivery: the webhook's request, the broker's ack"
  }
]

/**
 * Every variable the packages read, in the README's order: the relay's
 * (core), the store's (sql), then the runtime's.
 *
 * @category config
 * @since 0.1.0
 */
export const variables: ReadonlyArray<Variable> = [
  runtimeVariables[0]!,
  ...OutboxConfig.variables,
  ...SqlEnv.variables,
  ...runtimeVariables.slice(1)
]

/**
 * The README's configuration table (markdown), generated from `variables`.
 *
 * @category config
 * @since 0.1.0
 */
export const markdownTable = (vars: ReadonlyArray<Variable> = variables): string =>
  [
    "| variable | default | meaning |",
    "| --- | --- | --- |",
    ...vars.map((v) => `| \`${v.name}\` | ${v.default ?? "—"} | ${v.description} |`)
  ].join("\n")
