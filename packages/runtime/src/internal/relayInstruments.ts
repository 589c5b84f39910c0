/**
 * The relay's instruments: every span, histogram, counter and series lookup
 * of its claim, deliver, complete, retry and reap paths (the workers in
 * `Relay`, the reaper in `Reaper`), behind one call per thing that happened
 * (`claim`, `delivered`, `completed`, `retried`, ...), so that the relay's
 * code reads as what it does.
 *
 * The switches are read once, at construction: whether an exporting tracer
 * is installed (`tracing`; Effect's built-in tracer records nowhere, and a
 * span per event measured ~10 µs of Node CPU for nothing), whether metrics
 * are on (`OutboxTelemetry.MetricsEnabled`), and the label allow-list
 * (`OutboxMetrics.MetricLabels`). Metrics are updated in place
 * (`updateUnsafe`: no fiber step), and every series comes from
 * `OutboxMetrics.series`, the one series cache: without allow-listed labels
 * an event's series is found through a view keyed by its event type,
 * allocating nothing per event.
 *
 * @since 0.1.0
 */
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import type { ReapResult } from "@outbox/core/OutboxStore"
import * as TraceContext from "@outbox/core/TraceContext"
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"
import * as Telemetry from "../OutboxTelemetry.ts"

/** The `messaging.system` attribute of every relay span. */
const messaging = {
  "messaging.system": TraceContext.MESSAGING_SYSTEM
} as const

/** How a delivery ended: the `outcome` label of `outbox_handler_duration_seconds`. */
export type Outcome = "completed" | "retried" | "dead_lettered"

/** The `operation` label of `outbox_lease_lost_total`. */
export type LeaseLostOperation = typeof Telemetry.labelValues.leaseLostOperation[number]

/** The `loop` label of `outbox_relay_failures_total`. */
export type Loop = typeof Telemetry.labelValues.loop[number]

/** A claimed batch, and its `claim` span when traced. */
export interface Claimed {
  readonly events: ReadonlyArray<OutboxEvent>
  readonly span: Tracer.Span | undefined
}

/**
 * Times one delivery after another (a batch's deliveries run one at a
 * time): `start` when a delivery begins, `seconds` when it ends. Monotonic
 * readings, only ever used for a duration.
 */
export interface Stopwatch {
  readonly start: () => void
  readonly seconds: () => number
}

/** The producer's span (with its tracestate, through @effect/opentelemetry), from the event's metadata. */
const producerSpan = (event: OutboxEvent): Tracer.ExternalSpan | undefined => {
  const parsed = TraceContext.fromMetadata(event.metadata)
  if (parsed === undefined) return undefined
  if (parsed.tracestate === undefined && parsed.traceFlags <= 1) {
    return Tracer.externalSpan({ traceId: parsed.traceId, spanId: parsed.spanId, sampled: parsed.sampled })
  }
  return OtelTracer.makeExternalSpan({
    traceId: parsed.traceId,
    spanId: parsed.spanId,
    traceFlags: parsed.traceFlags,
    traceState: parsed.tracestate
  })
}

/** Reads the switches and returns the instruments (see the module header); one per relay or reaper. */
export const make = Effect.gen(function*() {
  const context = yield* Effect.context<never>()
  const clock = yield* Clock.Clock
  const tracer = yield* Tracer.Tracer
  const tracing = (yield* References.TracerEnabled) && tracer !== Tracer.nativeTracer
  const metrics = yield* Telemetry.MetricsEnabled
  const extraLabels = yield* OutboxMetrics.MetricLabels

  // the series of the bounded labels, and the views the per-event paths look up through
  const claimedTotal = Telemetry.eventsClaimed()
  const batchSize = Telemetry.claimBatchSize()
  const leaseLostBy = Telemetry.leaseLost.by("operation")
  const failuresBy = Telemetry.relayFailures.by("loop")
  const reapedBy = Telemetry.leasesReaped.by("outcome")
  const unknownDeadLetters = Telemetry.eventsDeadLettered({ aggregate_type: "", event_type: "" })
  const handlerBy = Telemetry.handlerDuration.by("event_type", "outcome")
  const latencyBy = Telemetry.endToEndLatency.by("event_type")

  /** Adds `n` to `metric` (when metrics are on and `n > 0`). */
  const bump = (metric: Metric.Metric<number, unknown>, n: number) => {
    if (metrics && n > 0) metric.updateUnsafe(n, context)
  }
  /** Adds 1 per event to `series`, one update per label set. */
  const countEvents = (series: OutboxMetrics.Series<Metric.Counter<number>>, events: ReadonlyArray<OutboxMetrics.LabelSource>) => {
    if (metrics) OutboxMetrics.countEvents(events, { series, extraLabels, context })
  }
  /** An event's allow-listed labels, without the default ones (the histograms have `event_type` alone). */
  const extras = (event: OutboxMetrics.LabelSource): Record<string, string> => {
    const labels = OutboxMetrics.eventLabels(extraLabels, event)
    delete labels.aggregate_type
    delete labels.event_type
    return labels
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

  return {
    /** Whether deliveries run in a span or trace context (`process`): an exporting tracer is installed. */
    tracing,

    /**
     * Runs a claim with the tracer off; a non-empty (or failed) one is then
     * recorded as a `claim` span, and counted in
     * `outbox_events_claimed_total` and `outbox_claim_batch_size`. An empty
     * poll records nothing.
     */
    claim: <E>(claim: Effect.Effect<ReadonlyArray<OutboxEvent>, E>): Effect.Effect<Claimed, E> =>
      Effect.gen(function*() {
        const startTime = clock.currentTimeNanosUnsafe()
        const exit = yield* Effect.exit(Effect.withTracerEnabled(claim, false))
        if (Exit.isSuccess(exit) && exit.value.length === 0) return { events: exit.value, span: undefined }
        const n = Exit.isSuccess(exit) ? exit.value.length : 0
        const span = recordSpan("claim", startTime, {
          ...messaging,
          "messaging.operation.type": "receive",
          "messaging.operation.name": "claim",
          "messaging.batch.message_count": n
        }, exit)
        if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
        bump(claimedTotal, n)
        if (metrics) batchSize.updateUnsafe(n, context)
        return { events: exit.value, span }
      }),

    /** `effect` (a batch's `renew` or `complete`) as a child span of the batch's claim span, when traced. */
    underClaim: <A, E, R>(
      claimSpan: Tracer.Span | undefined,
      name: "renew" | "complete",
      count: number,
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E, R> =>
      claimSpan === undefined ? effect : Effect.withSpan(effect, name, {
        parent: claimSpan,
        captureStackTrace: false,
        kind: "client",
        attributes: { ...messaging, "messaging.operation.name": name, "messaging.batch.message_count": count }
      }),

    /** A stopwatch for one batch's deliveries (`delivered` takes its reading). */
    stopwatch: (): Stopwatch => {
      let started = 0n
      return {
        start: () => {
          started = clock.monotonicTimeNanosUnsafe()
        },
        seconds: () => Number(clock.monotonicTimeNanosUnsafe() - started) / 1e9
      }
    },

    /**
     * One delivery in the event's trace context (only when `tracing`): a
     * `process <event type>` span (kind consumer) continuing the producer's
     * trace, linked to the batch's claim span, with the messaging
     * attributes; or, when the producer's trace was not sampled, no span
     * (nothing would be recorded) but the producer's context, so that the
     * sink still propagates it (a webhook gets its traceparent, flags 00).
     * `deliver(event, traced)` runs inside: `traced` tells whether a span is
     * current (see `processFailed`).
     */
    process: <E>(
      event: OutboxEvent,
      claimSpan: Tracer.Span | undefined,
      deliver: (event: OutboxEvent, traced: boolean) => Effect.Effect<void, E>
    ): Effect.Effect<void, E> => {
      const parent = producerSpan(event)
      if (parent !== undefined && !parent.sampled) return Effect.withParentSpan(deliver(event, false), parent)
      return Effect.withSpan(
        // inside the span: the sink builds its effect with the span current
        Effect.suspend(() => deliver(event, true)),
        `process ${event.eventType}`,
        {
          kind: "consumer",
          captureStackTrace: false,
          ...(parent === undefined ? { root: true } : { parent }),
          links: claimSpan === undefined ? [] : [{ span: claimSpan, attributes: {} }],
          attributes: {
            "messaging.system": TraceContext.MESSAGING_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": event.eventType,
            "messaging.message.id": event.trackingId,
            "outbox.aggregate_type": event.aggregateType,
            "outbox.retry_count": event.retryCount
          }
        }
      )
    },

    /**
     * Ends the current `process` span of a failed delivery: failed with the
     * delivery's cause (the relay itself goes on; the span's own end is then
     * a no-op), `outbox.outcome` set (`lease_lost` when the lease passed on).
     */
    processFailed: (outcome: Outcome | undefined, cause: Cause.Cause<unknown>): Effect.Effect<void> =>
      Effect.map(Effect.option(Effect.currentSpan), (span) => {
        if (Option.isNone(span)) return
        span.value.attribute("outbox.outcome", outcome ?? "lease_lost")
        span.value.end(clock.currentTimeNanosUnsafe(), Exit.failCause(cause))
      }),

    /** A delivery ended: `outbox_handler_duration_seconds{event_type,outcome}`. */
    delivered: (event: OutboxEvent, outcome: Outcome, seconds: number): void => {
      if (!metrics) return
      const metric = extraLabels.length === 0
        ? handlerBy(event.eventType, outcome)
        : Telemetry.handlerDuration({ event_type: event.eventType, outcome, ...extras(event) })
      metric.updateUnsafe(seconds, context)
    },

    /** Events marked COMPLETED: `outbox_events_completed_total`, and each one's end-to-end latency. */
    completed: (events: ReadonlyArray<OutboxEvent>): void => {
      if (!metrics || events.length === 0) return
      countEvents(Telemetry.eventsCompleted, events)
      const nowMs = clock.currentTimeMillisUnsafe()
      for (const event of events) {
        const metric = extraLabels.length === 0
          ? latencyBy(event.eventType)
          : Telemetry.endToEndLatency({ event_type: event.eventType, ...extras(event) })
        metric.updateUnsafe(Math.max(0, nowMs - event.createdAt.getTime()) / 1000, context)
      }
    },

    /** A failed delivery scheduled for a retry: `outbox_events_retried_total`. */
    retried: (event: OutboxEvent): void => countEvents(Telemetry.eventsRetried, [event]),

    /** A failed delivery dead-lettered: `outbox_events_dead_lettered_total`. */
    deadLettered: (event: OutboxEvent): void => countEvents(Telemetry.eventsDeadLettered, [event]),

    /** `n` fenced transitions refused: `outbox_lease_lost_total{operation}`. */
    leaseLost: (operation: LeaseLostOperation, n: number): void => bump(leaseLostBy(operation), n),

    /** A failed iteration of a loop: `outbox_relay_failures_total{loop}`. */
    failed: (loop: Loop): Effect.Effect<void> => Effect.sync(() => bump(failuresBy(loop), 1)),

    /**
     * Runs a reap with the tracer off; one that recovered something (or
     * failed) is then recorded as a `reap` span, and counted in
     * `outbox_leases_reaped_total{outcome}`. An empty reap records nothing.
     */
    reap: <E>(reap: Effect.Effect<ReapResult, E>): Effect.Effect<ReapResult, E> =>
      Effect.gen(function*() {
        const startTime = clock.currentTimeNanosUnsafe()
        const exit = yield* Effect.exit(Effect.withTracerEnabled(reap, false))
        if (Exit.isFailure(exit)) {
          recordSpan("reap", startTime, { ...messaging, "messaging.operation.name": "reap" }, exit)
          return yield* Effect.failCause(exit.cause)
        }
        const { deadLettered, requeued } = exit.value
        if (requeued.length + deadLettered.length === 0) return exit.value
        recordSpan("reap", startTime, {
          ...messaging,
          "messaging.operation.name": "reap",
          "messaging.batch.message_count": requeued.length + deadLettered.length,
          "outbox.reap.requeued": requeued.length,
          "outbox.reap.dead_lettered": deadLettered.length
        }, exit)
        bump(reapedBy("requeued"), requeued.length)
        bump(reapedBy("dead_lettered"), deadLettered.length)
        return exit.value
      }),

    /**
     * Reaped dead letters in `outbox_events_dead_lettered_total`. The reap
     * reports ids only, so the rows are read back through `get` for their
     * labels (rare; nothing is read when metrics are off); a row not found,
     * or a failed read, is counted without labels (`""`).
     */
    reapedDeadLetters: <E>(
      ids: ReadonlyArray<bigint>,
      get: (id: bigint) => Effect.Effect<Option.Option<OutboxMetrics.LabelSource>, E>
    ): Effect.Effect<void> =>
      !metrics || ids.length === 0 ? Effect.void : Effect.forEach(ids, get, { concurrency: 4 }).pipe(
        Effect.map((records) => {
          const known = records.flatMap((record) => Option.isSome(record) ? [record.value] : [])
          countEvents(Telemetry.eventsDeadLettered, known)
          bump(unknownDeadLetters, ids.length - known.length)
        }),
        Effect.withTracerEnabled(false),
        Effect.catchCause(() => Effect.sync(() => bump(unknownDeadLetters, ids.length)))
      )
  } as const
})

/**
 * The relay's instruments (`make`).
 */
export type RelayInstruments = Effect.Success<typeof make>
