/**
 * The outbox's event-scoped metrics: the label allow-list, the labels of an
 * event, a counter update per label set, and the producer's
 * `outbox_events_published_total`. Shared by `Outbox.transaction` (which
 * counts what committed) and the relay's outcome counters
 * (`@outbox/runtime`), so both label events the same way; apart from the
 * producer API in `Outbox`, which only counts through them.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/**
 * Extra metric labels allowed beyond the bounded defaults (`aggregate_type`,
 * `event_type`, `outcome`, ...). Empty by default: tracking ids, aggregate
 * ids and tenant ids would make one series per event or per customer.
 * `OutboxTelemetry.layerConfig` sets it from `OUTBOX_METRICS_LABELS`
 * (comma-separated).
 *
 * Each name is `aggregate_id`, `tracking_id`, or a metadata key whose value
 * becomes the label (e.g. `tenant_id` reads `metadata.tenant_id`; missing
 * values are `""`).
 *
 * @category references
 * @since 0.1.0
 */
export const MetricLabels = Context.Reference<ReadonlyArray<string>>("@outbox/core/Outbox/MetricLabels", {
  defaultValue: () => []
})

/**
 * What the label functions read from an event.
 *
 * @category models
 * @since 0.1.0
 */
export interface LabelSource {
  readonly aggregateType: string
  readonly eventType: string
  readonly aggregateId?: string | undefined
  readonly trackingId?: string | undefined
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
}

/**
 * The labels of an event-scoped metric: `aggregate_type`, `event_type` and
 * the allow-listed extras.
 *
 * @category metrics
 * @since 0.1.0
 */
export const eventLabels = (extra: ReadonlyArray<string>, event: LabelSource): Record<string, string> => {
  const labels: Record<string, string> = { aggregate_type: event.aggregateType, event_type: event.eventType }
  for (const name of extra) {
    if (name === "aggregate_id") labels[name] = event.aggregateId ?? ""
    else if (name === "tracking_id") labels[name] = event.trackingId ?? ""
    else {
      const value = event.metadata?.[name]
      labels[name] = typeof value === "string" || typeof value === "number" || typeof value === "boolean" ? String(value) : ""
    }
  }
  return labels
}

/** Per series function: its series by `aggregate type \0 event type`, for events without allow-listed labels. */
const baseSeries = new WeakMap<(labels: Record<string, string>) => Metric.Metric<number, unknown>, Map<string, Metric.Metric<number, unknown>>>()

/**
 * Adds 1 per event to an event-scoped counter, one update per label set.
 * Without allow-listed labels (`extraLabels` empty) an event's series is
 * found by its aggregate type and event type alone, and a run of events of
 * one type (the common batch) is counted without building any key; with
 * them, the labels are built once per event, by `eventLabels` over what
 * `labelSource` returns (the event itself by default).
 *
 * @category metrics
 * @since 0.1.0
 */
export const countEvents = <E extends { readonly aggregateType: string; readonly eventType: string }>(
  events: ReadonlyArray<E>,
  options: {
    /** The counter's series of one label set (`eventsPublished`, `OutboxTelemetry.eventsCompleted`, …). */
    readonly series: (labels: Record<string, string>) => Metric.Metric<number, unknown>
    readonly extraLabels: ReadonlyArray<string>
    readonly context: Context.Context<never>
    /** What the allow-listed labels read from `events[index]`; only called when there are some. */
    readonly labelSource?: ((event: E, index: number) => LabelSource) | undefined
  }
): void => {
  const { context, extraLabels, series } = options
  const counts = new Map<string, { metric: Metric.Metric<number, unknown>; n: number }>()
  if (extraLabels.length > 0) {
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!
      const labels = eventLabels(extraLabels, options.labelSource ? options.labelSource(event, i) : event as LabelSource)
      const key = JSON.stringify(labels)
      const entry = counts.get(key)
      if (entry === undefined) counts.set(key, { metric: series(labels), n: 1 })
      else entry.n++
    }
  } else {
    let cache = baseSeries.get(series)
    if (cache === undefined) baseSeries.set(series, cache = new Map())
    let last: { metric: Metric.Metric<number, unknown>; n: number } | undefined
    let lastAggregateType = ""
    let lastEventType = ""
    for (const event of events) {
      if (last !== undefined && event.eventType === lastEventType && event.aggregateType === lastAggregateType) {
        last.n++
        continue
      }
      lastAggregateType = event.aggregateType
      lastEventType = event.eventType
      const key = `${lastAggregateType}\u0000${lastEventType}`
      last = counts.get(key)
      if (last !== undefined) {
        last.n++
        continue
      }
      let metric = cache.get(key)
      if (metric === undefined) {
        cache.set(key, metric = series({ aggregate_type: lastAggregateType, event_type: lastEventType }))
      }
      counts.set(key, last = { metric, n: 1 })
    }
  }
  for (const { metric, n } of counts.values()) metric.updateUnsafe(n, context)
}

const publishedCache = new Map<string, Metric.Counter<number>>()

/**
 * `outbox_events_published_total{aggregate_type,event_type}`: events
 * committed by `Outbox.transaction` (counted after COMMIT, so rolled-back
 * publishes are not counted). Returns the series of one label set.
 *
 * @category metrics
 * @since 0.1.0
 */
export const eventsPublished = (labels: Record<string, string>): Metric.Counter<number> => {
  const key = JSON.stringify(labels)
  let counter = publishedCache.get(key)
  if (counter === undefined) {
    counter = Metric.counter("outbox_events_published_total", {
      description: "Events committed to the outbox by Outbox.transaction",
      incremental: true,
      attributes: labels
    })
    publishedCache.set(key, counter)
  }
  return counter
}
