/**
 * Metrics and trace export of the outbox.
 *
 * **Metrics** are Effect `Metric`s, so one definition feeds both exports:
 * a Prometheus text endpoint (`layerPrometheus`, or `layerPrometheusRoute`
 * on an application's own router) and OTLP (`layerOtlp`, through
 * `@effect/opentelemetry`). The names are a contract (alert rules and the
 * dashboard are written against them; `catalog` lists them):
 *
 * | metric | type | labels |
 * | --- | --- | --- |
 * | `outbox_events_published_total` | counter | aggregate_type, event_type |
 * | `outbox_events_claimed_total` | counter | |
 * | `outbox_events_completed_total` | counter | aggregate_type, event_type |
 * | `outbox_events_retried_total` | counter | aggregate_type, event_type |
 * | `outbox_events_dead_lettered_total` | counter | aggregate_type, event_type |
 * | `outbox_events_redriven_total` | counter | |
 * | `outbox_lease_lost_total` | counter | operation |
 * | `outbox_leases_reaped_total` | counter | outcome (requeued, dead_lettered) |
 * | `outbox_relay_failures_total` | counter | loop (claim, heartbeat, reaper, maintenance, audit, gauges) |
 * | `outbox_handler_duration_seconds` | histogram | event_type, outcome |
 * | `outbox_end_to_end_latency_seconds` | histogram | event_type |
 * | `outbox_claim_batch_size` | histogram | |
 * | `outbox_pending_events` … `outbox_xmin_horizon_age_seconds` | gauges | table (partition gauges) |
 * | `outbox_blocked_keys` | gauge | reason (backoff, scheduled, dead_letter_held) |
 *
 * Counters and histograms are updated by the relay (and by
 * `Outbox.transaction` for published events); gauges are sampled from the
 * database by `layerGauges` on a schedule. Labels are bounded; the
 * allow-list `OUTBOX_METRICS_LABELS` (see `OutboxMetrics.MetricLabels`) adds more to
 * the event-scoped metrics.
 *
 * **Tracing** needs an OpenTelemetry tracer (`layerOtlp`, or any
 * `@effect/opentelemetry` setup); see `TraceContext` (in `@outbox/core`) for
 * how one trace crosses the outbox.
 *
 * **Configuration** (`layerConfig`):
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `OUTBOX_METRICS` | `true` | `false`: the relay updates no metric |
 * | `OUTBOX_METRICS_LABELS` | empty | extra labels (comma-separated), e.g. `tenant_id` |
 * | `OUTBOX_METRICS_PROMETHEUS` | `false` | serve `/metrics` on its own port |
 * | `OUTBOX_METRICS_PORT` / `OUTBOX_METRICS_HOST` | `9464` / `0.0.0.0` | where |
 * | `OUTBOX_METRICS_SAMPLE_INTERVAL` | `15 seconds` | gauge sampling period |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset (off) | OTLP/HTTP traces and metrics, e.g. `http://collector:4318` |
 * | `OTEL_SERVICE_NAME` | `outbox-relay` | resource `service.name` |
 *
 * @since 0.1.0
 */
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import type * as Resource from "@effect/opentelemetry/Resource"
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import * as Tracer from "effect/Tracer"
import type * as HttpRouter from "effect/http/HttpRouter"
import type * as HttpServer from "effect/http/HttpServer"
import type { ServeError } from "effect/http/HttpServerError"
import * as Duty from "./Duty.ts"
import * as OutboxEnv from "./OutboxEnv.ts"

// -----------------------------------------------------------------------------
// Metric definitions
// -----------------------------------------------------------------------------

// Every metric is an `OutboxMetrics.Series`: one metric object per label set, from the one
// series cache the producer's `outbox_events_published_total` uses too.

const counter = (name: string, description: string) =>
  OutboxMetrics.series((attributes) => Metric.counter(name, { description, incremental: true, attributes }))

const histogram = (name: string, description: string, boundaries: ReadonlyArray<number>) =>
  OutboxMetrics.series((attributes) => Metric.histogram(name, { description, boundaries, attributes }))

const gauge = (name: string, description: string) =>
  OutboxMetrics.series((attributes) => Metric.gauge(name, { description, attributes }))

/**
 * `outbox_events_published_total{aggregate_type,event_type}` (defined in
 * `@outbox/core`'s `OutboxMetrics`, updated after COMMIT).
 *
 * @category metrics
 * @since 0.1.0
 */
export const eventsPublished = OutboxMetrics.eventsPublished

/**
 * @category metrics
 * @since 0.1.0
 */
export const eventsClaimed = counter("outbox_events_claimed_total", "Events claimed by the relay (each claim of each event)")

/**
 * @category metrics
 * @since 0.1.0
 */
export const eventsCompleted = counter("outbox_events_completed_total", "Events delivered and marked COMPLETED")

/**
 * @category metrics
 * @since 0.1.0
 */
export const eventsRetried = counter("outbox_events_retried_total", "Failed deliveries scheduled for a retry")

/**
 * @category metrics
 * @since 0.1.0
 */
export const eventsDeadLettered = counter(
  "outbox_events_dead_lettered_total",
  "Events moved to DEAD_LETTER (by a failed delivery or by the reaper)"
)

/**
 * @category metrics
 * @since 0.1.0
 */
export const eventsRedriven = counter("outbox_events_redriven_total", "Dead letters sent back to PENDING")

/**
 * `operation`: renew, complete, retry, dead_letter, release.
 *
 * @category metrics
 * @since 0.1.0
 */
export const leaseLost = counter("outbox_lease_lost_total", "Fenced transitions refused because the lease had passed to another claim")

/**
 * `outcome`: requeued, dead_lettered.
 *
 * @category metrics
 * @since 0.1.0
 */
export const leasesReaped = counter("outbox_leases_reaped_total", "Expired leases recovered by the reaper")

/**
 * `loop`: claim, heartbeat (the relay's workers), and the name of each
 * duty (`Duty`): reaper, maintenance, audit, gauges.
 *
 * @category metrics
 * @since 0.1.0
 */
export const relayFailures = counter("outbox_relay_failures_total", "Failed iterations of the relay's background loops")

/**
 * `outcome`: completed, retried, dead_lettered.
 *
 * @category metrics
 * @since 0.1.0
 */
export const handlerDuration = histogram(
  "outbox_handler_duration_seconds",
  "Time the sink took to handle one event",
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
)

/**
 * @category metrics
 * @since 0.1.0
 */
export const endToEndLatency = histogram(
  "outbox_end_to_end_latency_seconds",
  "Time from created_at to completion",
  [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
)

/**
 * Events per non-empty claim (empty polls are not observed).
 *
 * @category metrics
 * @since 0.1.0
 */
export const claimBatchSize = histogram(
  "outbox_claim_batch_size",
  "Events per non-empty claim",
  [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
)

/**
 * @category metrics
 * @since 0.1.0
 */
export const pendingEvents = gauge("outbox_pending_events", "Events waiting: PENDING + FAILED")

/**
 * @category metrics
 * @since 0.1.0
 */
export const processingEvents = gauge("outbox_processing_events", "Events under a lease (PROCESSING)")

/**
 * @category metrics
 * @since 0.1.0
 */
export const oldestPendingAge = gauge("outbox_oldest_pending_age_seconds", "Age of the oldest waiting event (0 when none)")

/**
 * @category metrics
 * @since 0.1.0
 */
export const leaseOverdue = gauge(
  "outbox_lease_overdue_seconds",
  "Longest time a PROCESSING lease has been expired without being reaped (0 when none)"
)

/**
 * How long the longest-held lease has been held since its claim (`claimed_at`;
 * heartbeats renew a lease without moving it): a handler that never finishes
 * keeps its lease alive, so only this gauge shows it.
 *
 * @category metrics
 * @since 0.1.0
 */
export const leaseHeld = gauge(
  "outbox_lease_held_seconds",
  "Longest time a PROCESSING event has been held since its claim, heartbeat renewals included (0 when none)"
)

/**
 * @category metrics
 * @since 0.1.0
 */
export const deadLetterEvents = gauge("outbox_dead_letter_events", "Events in DEAD_LETTER")

/**
 * @category metrics
 * @since 0.1.0
 */
export const partitionsAhead = gauge("outbox_partitions_ahead", "Whole partitions after the current one")

/**
 * @category metrics
 * @since 0.1.0
 */
export const defaultPartitionRows = gauge("outbox_default_partition_rows", "Rows in the DEFAULT partition")

/**
 * @category metrics
 * @since 0.1.0
 */
export const deadTuples = gauge("outbox_dead_tuples", "Dead tuples over the table's partitions")

/**
 * @category metrics
 * @since 0.1.0
 */
export const xminHorizonAge = gauge(
  "outbox_xmin_horizon_age_seconds",
  "Age of the oldest transaction or replication slot holding the xmin horizon (0 when none)"
)

/**
 * Ordering keys whose later events wait for their head, by `reason`
 * (`backoff`, `scheduled`, `dead_letter_held`: `BlockedKeys.Reason`), under
 * per-key ordering (`OUTBOX_ORDERING=key`; 0 otherwise). A key blocked by a
 * failure stalls its events while every other key flows, which the backlog
 * gauges do not show: alert on `reason!="scheduled"` (a scheduled head waits
 * because its producer asked).
 *
 * @category metrics
 * @since 0.1.0
 */
export const blockedKeys = gauge(
  "outbox_blocked_keys",
  "Ordering keys whose later events wait for their head (a backoff, a schedule, or under hold a dead letter); 0 without per-key ordering"
)

/**
 * Every exported metric name, as it appears on `/metrics` (histograms add
 * `_bucket`, `_sum` and `_count`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const catalog = {
  counters: [
    "outbox_events_published_total",
    "outbox_events_claimed_total",
    "outbox_events_completed_total",
    "outbox_events_retried_total",
    "outbox_events_dead_lettered_total",
    "outbox_events_redriven_total",
    "outbox_lease_lost_total",
    "outbox_leases_reaped_total",
    "outbox_relay_failures_total"
  ],
  histograms: ["outbox_handler_duration_seconds", "outbox_end_to_end_latency_seconds", "outbox_claim_batch_size"],
  gauges: [
    "outbox_pending_events",
    "outbox_processing_events",
    "outbox_oldest_pending_age_seconds",
    "outbox_lease_overdue_seconds",
    "outbox_lease_held_seconds",
    "outbox_dead_letter_events",
    "outbox_partitions_ahead",
    "outbox_default_partition_rows",
    "outbox_dead_tuples",
    "outbox_xmin_horizon_age_seconds",
    "outbox_blocked_keys"
  ]
} as const

/**
 * The label values the relay's bounded-label counters can take.
 *
 * @category metrics
 * @since 0.1.0
 */
export const labelValues = {
  leaseLostOperation: ["renew", "complete", "retry", "dead_letter", "release"],
  reapOutcome: ["requeued", "dead_lettered"],
  loop: ["claim", "heartbeat", "reaper", "maintenance", "audit", "gauges", "wakeup"],
  blockedKeyReason: ["backoff", "scheduled", "dead_letter_held"]
} as const

/**
 * Creates every series whose labels are known in advance at 0, so that
 * `rate()` and `increase()` see a series from the first scrape and alert
 * rules do not wait for a first failure.
 *
 * @category metrics
 * @since 0.1.0
 */
export const preregister: Effect.Effect<void> = Effect.contextWith((context: Context.Context<never>) => {
  const zero = (metric: Metric.Metric<number, unknown>) => metric.updateUnsafe(0, context)
  zero(eventsClaimed())
  zero(eventsRedriven())
  for (const operation of labelValues.leaseLostOperation) zero(leaseLost({ operation }))
  for (const outcome of labelValues.reapOutcome) zero(leasesReaped({ outcome }))
  for (const loop of labelValues.loop) zero(relayFailures({ loop }))
  claimBatchSize().valueUnsafe(context)
  return Effect.void
})

/**
 * Whether the relay updates metrics (default true). `OUTBOX_METRICS=false`
 * turns it off (e.g. to measure the cost).
 *
 * @category references
 * @since 0.1.0
 */
export const MetricsEnabled = Context.Reference<boolean>("@outbox/runtime/OutboxTelemetry/MetricsEnabled", {
  defaultValue: () => true
})

// -----------------------------------------------------------------------------
// Gauges
// -----------------------------------------------------------------------------

/**
 * What the gauge sampler reads from the database: `OutboxHealth.snapshot`.
 *
 * @category models
 * @since 0.1.0
 */
export type GaugeSnapshot = OutboxHealth.Snapshot

/** A gauge and where its value is in what the sampler read. */
interface GaugeReading<A> {
  readonly gauge: (labels?: Record<string, string>) => Metric.Metric<number, unknown>
  readonly value: (from: A) => number
}

/**
 * The snapshot's gauges, one line each, as the health checks are a list
 * (`OutboxHealth.checks`, whose `gauge` names one of these): `recordGauges`
 * iterates this list and `partitionGauges`, so a new gauge is its
 * instrument, its `catalog` name and one line here.
 */
const snapshotGauges: ReadonlyArray<GaugeReading<GaugeSnapshot>> = [
  { gauge: pendingEvents, value: (s) => s.pending },
  { gauge: processingEvents, value: (s) => s.processing },
  { gauge: oldestPendingAge, value: (s) => s.oldestPendingAgeSeconds },
  { gauge: leaseOverdue, value: (s) => s.leaseOverdueSeconds },
  { gauge: leaseHeld, value: (s) => s.leaseHeldSeconds },
  { gauge: deadLetterEvents, value: (s) => s.deadLetters },
  { gauge: xminHorizonAge, value: (s) => s.xminHorizonAgeSeconds }
]

/** The per-table gauges (label `table`), one line each. */
const partitionGauges: ReadonlyArray<GaugeReading<GaugeSnapshot["partitions"][number]>> = [
  { gauge: partitionsAhead, value: (p) => p.ahead },
  { gauge: defaultPartitionRows, value: (p) => p.defaultRows },
  { gauge: deadTuples, value: (p) => p.deadTuples }
]

/** The blocked-key gauges (label `reason`), one line each. */
const blockedKeyGauges: ReadonlyArray<
  { readonly reason: typeof labelValues.blockedKeyReason[number]; readonly value: (s: GaugeSnapshot) => number }
> = [
  { reason: "backoff", value: (s) => s.blockedKeys.backoff },
  { reason: "scheduled", value: (s) => s.blockedKeys.scheduled },
  { reason: "dead_letter_held", value: (s) => s.blockedKeys.deadLetterHeld }
]

/**
 * Sets every gauge from one snapshot.
 *
 * @category metrics
 * @since 0.1.0
 */
export const recordGauges = (snapshot: GaugeSnapshot): Effect.Effect<void> =>
  Effect.contextWith((context: Context.Context<never>) => {
    for (const { gauge, value } of snapshotGauges) gauge().updateUnsafe(value(snapshot), context)
    for (const { reason, value } of blockedKeyGauges) blockedKeys({ reason }).updateUnsafe(value(snapshot), context)
    for (const partition of snapshot.partitions) {
      const labels = { table: partition.table }
      for (const { gauge, value } of partitionGauges) gauge(labels).updateUnsafe(value(partition), context)
    }
    return Effect.void
  })

/**
 * Options of `layerGauges`.
 *
 * @category models
 * @since 0.1.0
 */
export interface GaugeOptions<E, R> {
  /** The cheap database reads (`OutboxHealth.snapshot`). */
  readonly snapshot: Effect.Effect<GaugeSnapshot, E, R>
  /** Sampling period (default 15 seconds). */
  readonly every?: Duration.Input | undefined
  /**
   * Failed runs of partition maintenance so far, counted in
   * `outbox_relay_failures_total{loop="maintenance"}` as they increase.
   *
   * @deprecated maintenance is a `Duty` that counts its own failures;
   * pass this only for a maintenance schedule that is not one.
   */
  readonly maintenanceFailures?: Effect.Effect<number> | undefined
  /**
   * Events redriven since the last call that this process is to count
   * (`OutboxHealth.claimRedriven`): added to
   * `outbox_events_redriven_total` on every sample.
   */
  readonly redriven?: Effect.Effect<number, E, R> | undefined
}

/**
 * The gauge sampler as a duty (see `Duty`, name `gauges`): one sample of the
 * snapshot (and of the redrive meter) per run, every `every` (default 15
 * seconds), the first at start, with the tracer off (a sample every few
 * seconds would flood the trace back-end with spans of no interest). A
 * failed sample is logged and counted in
 * `outbox_relay_failures_total{loop="gauges"}`; the gauges keep their last
 * values.
 *
 * @category constructors
 * @since 0.1.0
 */
export const gaugesDuty = <E, R>(options: GaugeOptions<E, R>): Duty.Duty<E, R> => {
  let maintenanceFailuresSeen = 0
  return Duty.make({
    name: "gauges",
    schedule: Schedule.spaced(Duration.fromInputUnsafe(options.every ?? Duration.seconds(15))),
    run: Effect.gen(function*() {
      if (options.maintenanceFailures !== undefined) {
        const failures = yield* options.maintenanceFailures
        if (failures > maintenanceFailuresSeen) {
          yield* Metric.update(relayFailures({ loop: "maintenance" }), failures - maintenanceFailuresSeen)
        }
        maintenanceFailuresSeen = failures
      }
      yield* Effect.flatMap(options.snapshot, recordGauges)
      if (options.redriven !== undefined) {
        const n = yield* options.redriven
        if (n > 0) yield* Metric.update(eventsRedriven(), n)
      }
    }).pipe(Effect.withTracerEnabled(false), Effect.annotateLogs({ module: "OutboxTelemetry" }))
  })
}

/**
 * The gauge sampler (`gaugesDuty`) running as long as the layer. Also
 * pre-registers the bounded series (`preregister`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerGauges = <E, R>(options: GaugeOptions<E, R>): Layer.Layer<never, never, R> =>
  Layer.effectDiscard(Effect.andThen(preregister, Duty.start(gaugesDuty(options))))

/**
 * The gauge sampler over `OutboxHealth.snapshot`, counting the redrives made
 * by any process since the last sample (`OutboxHealth.claimRedriven`: each
 * redrive batch in exactly one relay's `outbox_events_redriven_total`,
 * within one sampling period of its commit) (nothing when `MetricsEnabled`
 * is false). Period: `OUTBOX_METRICS_SAMPLE_INTERVAL` (default 15 seconds)
 * unless given. Failed maintenance runs are counted by maintenance itself
 * (a `Duty`), no longer sampled here.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerHealthGauges = (
  options: { readonly every?: Duration.Input | undefined } = {}
): Layer.Layer<never, Config.ConfigError, OutboxHealth.OutboxHealth> =>
  Layer.unwrap(Effect.gen(function*() {
    if (!(yield* MetricsEnabled)) return Layer.empty
    const health = yield* OutboxHealth.OutboxHealth
    const every = options.every ?? (yield* sampleInterval)
    return layerGauges({ snapshot: health.snapshot, redriven: health.claimRedriven, every })
  }))

// -----------------------------------------------------------------------------
// Prometheus
// -----------------------------------------------------------------------------

/**
 * Adds `GET /metrics` (Prometheus text format 0.0.4) to the application's
 * `HttpRouter`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPrometheusRoute = (path: HttpRouter.PathInput = "/metrics"): Layer.Layer<never, never, HttpRouter.HttpRouter> =>
  Layer.unwrap(Effect.map(loadPrometheus, (prometheus) => prometheus.route(path)))

/** The HTTP machinery of the endpoint, imported on first use (see `internal/prometheus.ts` for the cost). */
const loadPrometheus = Effect.promise(() => import("./internal/prometheus.ts"))

/**
 * Options of `layerPrometheus`.
 *
 * @category models
 * @since 0.1.0
 */
export interface PrometheusOptions {
  /** 0 picks a free port (default 9464). */
  readonly port?: number | undefined
  /** Default `0.0.0.0`. */
  readonly host?: string | undefined
  /** Default `/metrics`. */
  readonly path?: HttpRouter.PathInput | undefined
}

/**
 * A dedicated HTTP server for Prometheus to scrape (for processes that run
 * only the relay). Applications with an HTTP server of their own use
 * `layerPrometheusRoute` instead.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPrometheus = (options: PrometheusOptions = {}): Layer.Layer<HttpServer.HttpServer, ServeError> =>
  Layer.unwrap(Effect.map(loadPrometheus, (prometheus) =>
    prometheus.server({ port: options.port ?? 9464, host: options.host ?? "0.0.0.0", path: options.path ?? "/metrics" })))

// -----------------------------------------------------------------------------
// OpenTelemetry
// -----------------------------------------------------------------------------

/**
 * Options of `layerOtlp`.
 *
 * @category models
 * @since 0.1.0
 */
export interface OtlpOptions {
  /** The collector's OTLP/HTTP base URL, e.g. `http://collector:4318` (`/v1/traces` and `/v1/metrics` are added). */
  readonly endpoint: string
  readonly serviceName?: string | undefined
  readonly serviceVersion?: string | undefined
  /** Metric export period (default 30 seconds). */
  readonly metricsInterval?: Duration.Input | undefined
  /** Extra headers for the collector (e.g. an API key). */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * Enter the OpenTelemetry context at every Effect step run under a span
   * (`@effect/opentelemetry`'s default), for non-Effect OTel
   * instrumentation called from Effect code. Default false: it more than
   * doubles the relay's CPU per event.
   */
  readonly propagateOtelContext?: boolean | undefined
}

/**
 * Traces (batched) and metrics over OTLP/HTTP (JSON), through
 * `@effect/opentelemetry`'s `NodeSdk`. The SDK is loaded only when this
 * layer is built. Spans are flushed when the layer closes.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerOtlp = (options: OtlpOptions): Layer.Layer<Resource.Resource> =>
  Layer.unwrap(Effect.promise(async () => {
    const [NodeSdk, traceBase, traceExporter, sdkMetrics, metricsExporter] = await Promise.all([
      import("@effect/opentelemetry/NodeSdk"),
      import("@opentelemetry/sdk-trace-base"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/sdk-metrics"),
      import("@opentelemetry/exporter-metrics-otlp-http")
    ])
    const base = options.endpoint.replace(/\/+$/, "")
    const headers = { ...options.headers }
    return layerSdk({
      serviceName: options.serviceName,
      serviceVersion: options.serviceVersion,
      spanProcessor: new traceBase.BatchSpanProcessor(new traceExporter.OTLPTraceExporter({ url: `${base}/v1/traces`, headers })),
      metricReader: new sdkMetrics.PeriodicExportingMetricReader({
        exporter: new metricsExporter.OTLPMetricExporter({ url: `${base}/v1/metrics`, headers }),
        exportIntervalMillis: Duration.toMillis(Duration.fromInputUnsafe(options.metricsInterval ?? Duration.seconds(30)))
      }),
      propagateOtelContext: options.propagateOtelContext,
      NodeSdk
    })
  }))

/**
 * An OpenTelemetry tracer over any span processor (tests pass a
 * `SimpleSpanProcessor` over an `InMemorySpanExporter`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerTracer = (
  spanProcessor: SpanProcessor,
  options: { readonly serviceName?: string | undefined; readonly propagateOtelContext?: boolean | undefined } = {}
): Layer.Layer<Resource.Resource> =>
  Layer.unwrap(Effect.promise(async () => {
    const NodeSdk = await import("@effect/opentelemetry/NodeSdk")
    return layerSdk({
      serviceName: options.serviceName,
      spanProcessor,
      metricReader: undefined,
      propagateOtelContext: options.propagateOtelContext,
      NodeSdk
    })
  }))

const layerSdk = (options: {
  readonly serviceName: string | undefined
  readonly serviceVersion?: string | undefined
  readonly spanProcessor: SpanProcessor
  readonly metricReader: import("@opentelemetry/sdk-metrics").MetricReader | undefined
  readonly propagateOtelContext?: boolean | undefined
  readonly NodeSdk: typeof import("@effect/opentelemetry/NodeSdk")
}): Layer.Layer<Resource.Resource> => {
  const resource = {
    serviceName: options.serviceName ?? "outbox-relay",
    ...(options.serviceVersion === undefined ? {} : { serviceVersion: options.serviceVersion })
  }
  if (options.propagateOtelContext === true) {
    return options.NodeSdk.layer(() => ({
      resource,
      spanProcessor: options.spanProcessor,
      ...(options.metricReader === undefined ? {} : { metricReader: options.metricReader })
    }))
  }
  return Layer.unwrap(Effect.promise(async () => {
    const [OtelTracer, OtelMetrics, OtelResource] = await Promise.all([
      import("@effect/opentelemetry/OtelTracer"),
      import("@effect/opentelemetry/OtelMetrics"),
      import("@effect/opentelemetry/Resource")
    ])
    // The OpenTelemetry SDK's spans and export, without @effect/opentelemetry's per-step
    // context hook (which enters the OTel context for every Effect step run under a span):
    // Effect code is traced by Effect's own span tree, so the hook only serves non-Effect
    // instrumentation called from inside Effect code, at a cost the relay cannot afford.
    const tracer = Layer.effect(
      Tracer.Tracer,
      Effect.map(OtelTracer.make, (otel) => Tracer.make({ span: (spanOptions) => otel.span(spanOptions) }))
    ).pipe(
      Layer.provide(OtelTracer.layerTracer),
      Layer.provide(options.NodeSdk.layerTracerProvider(options.spanProcessor))
    )
    const metrics = options.metricReader === undefined
      ? Layer.empty
      : OtelMetrics.layer(() => options.metricReader!)
    return Layer.mergeAll(tracer, metrics).pipe(Layer.provideMerge(OtelResource.layer(resource)))
  }))
}

// -----------------------------------------------------------------------------
// Configuration
// -----------------------------------------------------------------------------

/**
 * Options of `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Relay metrics on (default true). */
  readonly metrics?: boolean | undefined
  /** Extra labels (see `OutboxMetrics.MetricLabels`). */
  readonly labels?: ReadonlyArray<string> | undefined
  /** A dedicated `/metrics` server; omitted: none. */
  readonly prometheus?: PrometheusOptions | undefined
  /** OTLP export; omitted: none. */
  readonly otlp?: OtlpOptions | undefined
}

/**
 * The metric references, and the exporters that are asked for.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<never, ServeError> =>
  Layer.mergeAll(
    Layer.succeed(MetricsEnabled, options.metrics ?? true),
    Layer.succeed(OutboxMetrics.MetricLabels, options.labels ?? []),
    // the server's own services (HttpServer, ...) stay private to it
    options.prometheus === undefined ? Layer.empty : Layer.flatMap(layerPrometheus(options.prometheus), () => Layer.empty),
    // the tracer is a reference in the output: kept, so that everything built on this layer is traced
    options.otlp === undefined ? Layer.empty : layerOtlp(options.otlp) as Layer.Layer<never>
  )

const reservedLabels = new Set(["aggregate_type", "event_type", "outcome", "operation", "table", "loop", "le"])

/**
 * The allow-list parser: trimmed, lowercase names; empty entries,
 * duplicates and the default labels dropped.
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseLabels = (text: string): ReadonlyArray<string> =>
  Array.from(
    new Set(
      text.split(",").map((name) => name.trim().toLowerCase()).filter((name) => name.length > 0 && !reservedLabels.has(name))
    )
  )

/**
 * Telemetry from configuration (`OutboxEnv.telemetry` by default: the table
 * in the module header). Fails with a `ConfigError` on a malformed variable.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<never, Config.ConfigError | ServeError> = Layer.unwrap(Effect.gen(function*() {
  const { labels, ...rest } = yield* OutboxEnv.telemetry
  return layer({ ...rest, labels: parseLabels(labels) })
}))

/**
 * `OUTBOX_METRICS_SAMPLE_INTERVAL` (default 15 seconds): `OutboxEnv.sampleInterval`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const sampleInterval: Config.Config<Duration.Duration> = OutboxEnv.sampleInterval
