/**
 * The telemetry the relay's fibers share (the workers in `Relay`, the
 * reaper in `Reaper`): the switches read once at construction, and the
 * helpers that update metrics without a fiber step and record spans after
 * the fact.
 *
 * @since 0.1.0
 */
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import * as TraceContext from "@outbox/core/TraceContext"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"
import * as Telemetry from "../OutboxTelemetry.ts"

/** The `messaging.system` attribute of every relay span. */
export const messaging = {
  "messaging.system": TraceContext.MESSAGING_SYSTEM
} as const

/** Reads the switches and returns the helpers (see the module header). */
export const make = Effect.gen(function*() {
  const context = yield* Effect.context<never>()
  const clock = yield* Clock.Clock
  const tracer = yield* Tracer.Tracer
  // Effect's built-in tracer records nowhere: without an exporting tracer (e.g. @effect/opentelemetry)
  // the relay makes no span at all (a span per event measured ~10 µs of Node CPU for nothing)
  const tracing = (yield* References.TracerEnabled) && tracer !== Tracer.nativeTracer
  const metrics = yield* Telemetry.MetricsEnabled
  const extraLabels = yield* OutboxMetrics.MetricLabels
  /** Adds `n` to `metric` (when metrics are on and `n > 0`). */
  const bump = (metric: Metric.Metric<number, unknown>, n: number) => {
    if (metrics && n > 0) metric.updateUnsafe(n, context)
  }
  /** Adds 1 per event to `series`, one update per label set. */
  const countEvents = (
    series: (labels: Record<string, string>) => Metric.Counter<number>,
    events: ReadonlyArray<OutboxMetrics.LabelSource>
  ) => {
    if (metrics) OutboxMetrics.countEvents(events, { series, extraLabels, context })
  }
  /**
   * A span recorded after the fact, from `startTime` to now. Used where the
   * span must not exist unless the operation found work (claim, reap): the
   * operation runs with the tracer off, then this records it.
   */
  const recordSpan = (
    name: string,
    startTime: bigint,
    attributes: Record<string, unknown>,
    exit: Exit.Exit<unknown, unknown>
  ): Tracer.Span | undefined => {
    if (!tracing) return undefined
    const span = tracer.span({
      name,
      parent: Option.none(),
      annotations: Context.empty(),
      links: [],
      startTime,
      kind: "client",
      root: true,
      sampled: true
    })
    for (const key in attributes) span.attribute(key, attributes[key])
    span.end(clock.currentTimeNanosUnsafe(), exit)
    return span
  }
  return { context, clock, tracer, tracing, metrics, extraLabels, bump, countEvents, recordSpan } as const
})
