/**
 * The relay: a supervised fiber tree that moves events from the outbox to a
 * sink, in-process.
 *
 * ```
 * Relay (layer scope)
 * ├── worker 1..N   claim a batch (SKIP LOCKED, lease, fresh lock token)
 * │   │             → deliver each event to the sink, in id order
 * │   │             → complete the delivered ones in one statement, while
 * │   │               the worker claims its next batch (one completion in flight)
 * │   │             → failed ones: retry with backoff, or dead-letter
 * │   └── heartbeat renews the batch's leases every lease/3 while it runs
 * └── reaper        every lease/2: expired leases → PENDING (`Reaper`, a duty)
 * ```
 *
 * **Telemetry** (see `OutboxTelemetry` for the metric catalog):
 *
 * - each delivery is a `process <event type>` span (kind consumer) that
 *   continues the producer's trace from `metadata.traceparent` (a child of
 *   the `publish` span, linked to the claim span of its batch), with the
 *   OpenTelemetry messaging attributes (`messaging.system = "outbox"`,
 *   `messaging.operation.type = "process"`, `messaging.destination.name` =
 *   event type, `messaging.message.id` = tracking id);
 * - a non-empty claim is a `claim` span (`messaging.batch.message_count`);
 *   its renewals and its completion are `renew` / `complete` spans under it;
 *   a reap that recovered something is a `reap` span. An empty poll (and an
 *   empty reap) makes no span at all: the claim runs with the tracer off and
 *   its span is recorded afterwards, only when rows came back;
 * - no span at all under Effect's built-in tracer, which records nowhere:
 *   spans are made only when an exporting tracer is installed (as
 *   `Outbox.publish` stores a trace context only then);
 * - counters and histograms are updated here (unless
 *   `OutboxTelemetry.MetricsEnabled` is false).
 *
 * One failing iteration (a store error, a defect) is logged and the loop goes
 * on; nothing stops the tree but its scope. When the scope closes the relay
 * stops claiming, lets in-flight batches finish within `shutdownTimeout`,
 * then interrupts what is left: delivered events are completed and the
 * leases of undelivered ones are released (PENDING again, no attempt
 * counted).
 *
 * @since 0.1.0
 */
import { OutboxConfig } from "@outbox/core/OutboxConfig"
import type { LeaseLost, StoreError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import * as OutboxMetrics from "@outbox/core/OutboxMetrics"
import * as TraceContext from "@outbox/core/TraceContext"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Tracer from "effect/Tracer"
import * as RelayTelemetry from "./internal/relayTelemetry.ts"
import * as Telemetry from "./OutboxTelemetry.ts"
import * as Reaper from "./Reaper.ts"

/**
 * Counters since the relay started.
 *
 * @category models
 * @since 0.1.0
 */
export interface RelayStats {
  readonly claimed: number
  readonly completed: number
  readonly retried: number
  readonly deadLettered: number
  readonly leaseLost: number
  readonly reaped: number
  readonly released: number
}

const emptyStats: RelayStats = {
  claimed: 0,
  completed: 0,
  retried: 0,
  deadLettered: 0,
  leaseLost: 0,
  reaped: 0,
  released: 0
}

/**
 * The running relay.
 *
 * @category services
 * @since 0.1.0
 */
export class Relay extends Context.Service<Relay, {
  readonly stats: Effect.Effect<RelayStats>
}>()("@outbox/runtime/Relay") {}

const errorText = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "string") return error
  return Cause.pretty(Cause.fail(error))
}


type Outcome = "completed" | "retried" | "dead_lettered"

const messaging = RelayTelemetry.messaging

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

/**
 * Starts the fiber tree in the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.gen(function*() {
  const store = yield* OutboxStore
  const sink = yield* OutboxSink
  const config = yield* OutboxConfig
  const stats = yield* Ref.make(emptyStats)
  const stop = yield* Deferred.make<void>()
  const policy = RetryPolicy.combine(config.retryPolicy, config.deadLetterPolicy)
  const heartbeatEvery = Duration.max(Duration.divideUnsafe(config.leaseDuration, 3), Duration.millis(1))

  // --- telemetry -------------------------------------------------------------
  const telemetry = yield* RelayTelemetry.make
  const { bump, clock, context, countEvents, extraLabels, metrics, recordSpan, tracing } = telemetry
  const extras = (event: OutboxMetrics.LabelSource): Record<string, string> => {
    const labels = OutboxMetrics.eventLabels(extraLabels, event)
    delete labels.aggregate_type
    delete labels.event_type
    return labels
  }
  /**
   * Histogram series by a string key: without allow-listed labels, an event's
   * series is looked up once per event type (and outcome), not built from a
   * label object on every event.
   */
  const memo = <K extends string>(make: (key: K) => Metric.Metric<number, unknown>) => {
    const cache = new Map<K, Metric.Metric<number, unknown>>()
    return (key: K) => {
      let metric = cache.get(key)
      if (metric === undefined) {
        metric = make(key)
        cache.set(key, metric)
      }
      return metric
    }
  }
  const handlerSeries = {
    completed: memo((eventType) => Telemetry.handlerDuration({ event_type: eventType, outcome: "completed" })),
    retried: memo((eventType) => Telemetry.handlerDuration({ event_type: eventType, outcome: "retried" })),
    dead_lettered: memo((eventType) => Telemetry.handlerDuration({ event_type: eventType, outcome: "dead_lettered" }))
  } satisfies Record<Outcome, unknown>
  const latencySeries = memo((eventType) => Telemetry.endToEndLatency({ event_type: eventType }))
  const observeHandler = (event: OutboxEvent, outcome: Outcome, seconds: number) => {
    if (!metrics) return
    const metric = extraLabels.length === 0
      ? handlerSeries[outcome](event.eventType)
      : Telemetry.handlerDuration({ event_type: event.eventType, outcome, ...extras(event) })
    metric.updateUnsafe(seconds, context)
  }
  const observeCompleted = (events: ReadonlyArray<OutboxEvent>) => {
    if (!metrics || events.length === 0) return
    countEvents(Telemetry.eventsCompleted, events)
    const nowMs = clock.currentTimeMillisUnsafe()
    for (const event of events) {
      const metric = extraLabels.length === 0
        ? latencySeries(event.eventType)
        : Telemetry.endToEndLatency({ event_type: event.eventType, ...extras(event) })
      metric.updateUnsafe(Math.max(0, nowMs - event.createdAt.getTime()) / 1000, context)
    }
  }
  const failed = (loop: typeof Telemetry.labelValues.loop[number]) =>
    Effect.sync(() => bump(Telemetry.relayFailures({ loop }), 1))
  /** `effect` as a child span of the batch's claim span (when traced). */
  const underClaim = <A, E, R>(
    claimSpan: Tracer.Span | undefined,
    name: string,
    count: number,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> =>
    claimSpan === undefined ? effect : Effect.withSpan(effect, name, {
      parent: claimSpan,
      captureStackTrace: false,
      kind: "client",
      attributes: { ...messaging, "messaging.operation.name": name, "messaging.batch.message_count": count }
    })

  // --- relay -----------------------------------------------------------------
  const count = (key: keyof RelayStats, n = 1) =>
    n === 0 ? Effect.void : Ref.update(stats, (s) => ({ ...s, [key]: s[key] + n }))

  const onLeaseLost = (operation: typeof Telemetry.labelValues.leaseLostOperation[number], error: LeaseLost) =>
    Effect.andThen(
      Effect.andThen(count("leaseLost", error.eventIds.length), Effect.sync(() => bump(Telemetry.leaseLost({ operation }), error.eventIds.length))),
      Effect.logWarning(error.message)
    )

  /** A fenced transition: LeaseLost is counted and logged, never fatal; the ids it reports are returned. */
  const fenced = (
    operation: typeof Telemetry.labelValues.leaseLostOperation[number],
    effect: Effect.Effect<void, LeaseLost | StoreError>
  ): Effect.Effect<ReadonlyArray<bigint>, StoreError> =>
    effect.pipe(
      Effect.as([] as ReadonlyArray<bigint>),
      Effect.catchTag("LeaseLost", (error) => Effect.as(onLeaseLost(operation, error), error.eventIds))
    )

  /** Records a failed delivery: a retry with backoff, or a dead letter. `undefined` when the lease was lost meanwhile. */
  const handleFailure = (event: OutboxEvent, error: unknown) =>
    Effect.gen(function*() {
      const attempt: RetryPolicy.FailedAttempt = { event, error, retryable: RetryPolicy.isRetryable(error) }
      const decision = yield* RetryPolicy.decide(policy, attempt)
      const text = errorText(error)
      if (decision._tag === "Retry") {
        const lost = yield* fenced("retry", store.retry(event, { error: text, delay: decision.delay }))
        if (lost.length > 0) return undefined
        yield* count("retried")
        countEvents(Telemetry.eventsRetried, [event])
        yield* Effect.logDebug(`event ${event.id} failed, retry in ${Duration.format(decision.delay)}: ${text}`)
        return "retried" as const
      }
      const lost = yield* fenced("dead_letter", store.deadLetter(event, { error: text }))
      if (lost.length > 0) return undefined
      yield* count("deadLettered")
      countEvents(Telemetry.eventsDeadLettered, [event])
      yield* Effect.logWarning(`event ${event.id} (${event.eventType}) dead-lettered: ${text}`)
      return "dead_lettered" as const
    })

  /** Completes delivered events; a failure is logged and the leases expire into a redelivery. */
  const completeAll = (events: ReadonlyArray<OutboxEvent>, claimSpan: Tracer.Span | undefined) =>
    underClaim(claimSpan, "complete", events.length, fenced("complete", store.complete(events))).pipe(
      Effect.flatMap((lost) => {
        const done = lost.length === 0 ? events : events.filter((event) => !lost.includes(event.id))
        observeCompleted(done)
        return count("completed", done.length)
      }),
      Effect.catchCause((cause) =>
        Effect.andThen(
          failed("claim"),
          Effect.logWarning(`completing ${events.length} event(s) failed; they will be redelivered`, cause)
        )
      )
    )

  /**
   * Delivers one claimed batch. The completion of the delivered events is
   * handed to `completions` so the worker can claim its next batch while it
   * runs (at most one completion in flight per worker: `pending`).
   */
  const processBatch = (
    events: ReadonlyArray<OutboxEvent>,
    claimSpan: Tracer.Span | undefined,
    pending: { fiber: Fiber.Fiber<void> | undefined }
  ) =>
    Effect.gen(function*() {
      // The leases this batch still holds: `events[next..]`, not yet delivered
      // (`events[next]` may be in delivery), and `delivered`, not yet handed to
      // completion; less those a renewal found `lost`. Events are delivered in
      // order, so a cursor does what a Map of held leases would, without one
      // Map entry per event.
      let next = 0
      const delivered: Array<OutboxEvent> = []
      let lost: Set<bigint> | undefined
      const isLost = (event: OutboxEvent) => lost !== undefined && lost.has(event.id)
      const undelivered = () => events.slice(next).filter((event) => !isLost(event))
      const renew = Effect.suspend(() => {
        const held = [...delivered.filter((event) => !isLost(event)), ...undelivered()]
        return underClaim(claimSpan, "renew", held.length, store.renew(held, config.leaseDuration))
      }).pipe(
        Effect.catchTag("LeaseLost", (error) => {
          lost ??= new Set()
          for (const id of error.eventIds) lost.add(id)
          return onLeaseLost("renew", error)
        }),
        Effect.catchCause((cause) => Effect.andThen(failed("heartbeat"), Effect.logWarning("heartbeat failed", cause)))
      )
      const heartbeat = yield* renew.pipe(
        Effect.delay(heartbeatEvery),
        Effect.repeat(Schedule.spaced(heartbeatEvery)),
        Effect.forkChild({ startImmediately: true })
      )
      /** Takes the delivered events out of this batch's hands. */
      const takeDelivered = () => delivered.splice(0)
      /** Records a failed delivery (rare: a generator is fine here). */
      const deliveryFailed = (event: OutboxEvent, cause: Cause.Cause<unknown>, seconds: number, traced: boolean) =>
        Effect.gen(function*() {
          if (Cause.hasInterruptsOnly(cause)) return yield* Effect.interrupt
          next++ // no longer held: the retry or dead letter settles its lease
          const outcome = yield* handleFailure(event, Cause.squash(cause))
          if (outcome !== undefined) observeHandler(event, outcome, seconds)
          if (traced) {
            const span = yield* Effect.option(Effect.currentSpan)
            if (Option.isSome(span)) {
              span.value.attribute("outbox.outcome", outcome ?? "lease_lost")
              // the span fails with the delivery error (the relay itself goes on); its own end is then a no-op
              span.value.end(clock.currentTimeNanosUnsafe(), Exit.failCause(cause))
            }
          }
        })
      /** When the delivery of `events[next]` started (a monotonic reading: it is only ever used for a duration). */
      let started = 0n
      const elapsed = () => Number(clock.monotonicTimeNanosUnsafe() - started) / 1e9
      /**
       * What follows the delivery of `events[next]`, then `then`. Built once
       * per batch: deliveries run one at a time, so the event is `events[next]`
       * and nothing per event (closure, options) needs allocating.
       */
      const afterDelivery = (then: () => Effect.Effect<void, StoreError>, traced: boolean) => ({
        onSuccess: (_: void) => {
          const event = events[next]!
          delivered.push(event)
          next++
          observeHandler(event, "completed", elapsed())
          return then()
        },
        onFailure: (cause: Cause.Cause<unknown>) => Effect.flatMap(deliveryFailed(events[next]!, cause, elapsed(), traced), then)
      })
      /**
       * Delivers one event. It runs once per event, so the success path is a
       * single `matchCauseEffect` that goes straight on with the next event:
       * no generator step, no `flatMap`, no `Exit` value. The caller runs it
       * at once, so the start time is taken here.
       */
      const deliverOne = (event: OutboxEvent, after: ReturnType<typeof afterDelivery>): Effect.Effect<void, StoreError> => {
        started = clock.monotonicTimeNanosUnsafe()
        return Effect.matchCauseEffect(sink.deliver(event), after)
      }
      const done = () => Effect.void
      const untracedAfter = afterDelivery(() => deliverRest(), false)
      const unsampledAfter = afterDelivery(done, false)
      const sampledAfter = afterDelivery(done, true)
      /** One event in its own trace context: a process span, or the producer's unsampled context. */
      const processTraced = (event: OutboxEvent) => {
        const parent = producerSpan(event)
        // the producer's trace was not sampled: nothing would be recorded, so no span is made;
        // the context still flows (a webhook gets the producer's traceparent, flags 00)
        if (parent !== undefined && !parent.sampled) return Effect.withParentSpan(deliverOne(event, unsampledAfter), parent)
        return Effect.withSpan(
          // inside the span: the sink builds its effect with the span current
          Effect.suspend(() => deliverOne(event, sampledAfter)),
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
      }
      /** Delivers `events[next..]` in order, one after the other. */
      const deliverRest = (): Effect.Effect<void, StoreError> => {
        // a lease lost while we were busy: someone else owns the event now
        while (next < events.length && isLost(events[next]!)) next++
        if (next === events.length) return Effect.void
        const event = events[next]!
        return tracing ? Effect.flatMap(processTraced(event), deliverRest) : deliverOne(event, untracedAfter)
      }
      yield* Effect.gen(function*() {
        yield* Effect.suspend(deliverRest)
        yield* Fiber.interrupt(heartbeat)
        if (pending.fiber !== undefined) yield* Fiber.await(pending.fiber)
        const taken = takeDelivered()
        pending.fiber = taken.length === 0 ? undefined : yield* FiberSet.run(completions, completeAll(taken, claimSpan))
      }).pipe(
        Effect.onInterrupt(() =>
          Effect.gen(function*() {
            yield* Fiber.interrupt(heartbeat)
            const taken = takeDelivered()
            if (taken.length > 0) yield* completeAll(taken, claimSpan)
            const rest = undelivered()
            if (rest.length > 0) {
              const lost = yield* fenced("release", store.release(rest))
              yield* count("released", rest.length - lost.length)
            }
          }).pipe(Effect.catchCause((cause) => Effect.logWarning("releasing leases failed", cause)))
        )
      )
    })

  /** Claims a batch with the tracer off; only a non-empty (or failed) claim is recorded as a span. */
  const claim = Effect.gen(function*() {
    const startTime = clock.currentTimeNanosUnsafe()
    const exit = yield* Effect.exit(
      Effect.withTracerEnabled(store.claim({ limit: config.batchSize, leaseDuration: config.leaseDuration }), false)
    )
    if (Exit.isSuccess(exit) && exit.value.length === 0) return { events: exit.value, span: undefined }
    const n = Exit.isSuccess(exit) ? exit.value.length : 0
    const span = recordSpan("claim", startTime, {
      ...messaging,
      "messaging.operation.type": "receive",
      "messaging.operation.name": "claim",
      "messaging.batch.message_count": n
    }, exit)
    if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
    bump(Telemetry.eventsClaimed(), n)
    if (metrics) Telemetry.claimBatchSize().updateUnsafe(n, context)
    return { events: exit.value, span }
  })

  const iteration = (pending: { fiber: Fiber.Fiber<void> | undefined }) =>
    Effect.gen(function*() {
      const { events, span } = yield* claim
      if (events.length === 0) return 0
      yield* count("claimed", events.length)
      yield* processBatch(events, span, pending)
      return events.length
    })

  const idle = Effect.raceFirst(Effect.sleep(config.pollInterval), Deferred.await(stop))

  const worker = (index: number) =>
    Effect.gen(function*() {
      const pending: { fiber: Fiber.Fiber<void> | undefined } = { fiber: undefined }
      while (!(yield* Deferred.isDone(stop))) {
        const claimed = yield* iteration(pending).pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause)
              : Effect.as(Effect.andThen(failed("claim"), Effect.logWarning("relay iteration failed", cause)), 0)
          )
        )
        if (claimed === 0) yield* idle
      }
    }).pipe(Effect.annotateLogs({ module: "Relay", fiber: `worker-${index}` }))

  if (config.concurrency > 1) {
    yield* Effect.logWarning(
      `OUTBOX_CONCURRENCY=${config.concurrency}: events are claimed by ${config.concurrency} workers in parallel, so global order is not kept`
    )
  }

  // completions outlive the worker that delivered the events (and run beside its next claim)
  const completions = yield* FiberSet.make<void, never>()
  const workers = yield* Effect.forEach(
    Array.from({ length: config.concurrency }, (_, i) => i + 1),
    (i) => Effect.forkScoped(worker(i))
  )
  // Registered after the forks, so it runs before their scope interrupts them.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Deferred.succeed(stop, undefined)
      const finished = yield* Fiber.joinAll(workers).pipe(
        Effect.timeoutOption(config.shutdownTimeout),
        Effect.exit
      )
      if (!(Exit.isSuccess(finished) && finished.value._tag === "Some")) {
        yield* Effect.logWarning(
          `in-flight handlers did not finish within ${Duration.format(config.shutdownTimeout)}; releasing their leases`
        )
        yield* Fiber.interruptAll(workers)
      }
      yield* FiberSet.awaitEmpty(completions)
    })
  )

  // the reaper's recoveries are the relay's too (`reaped`, `deadLettered`)
  const reaper = yield* Effect.serviceOption(Reaper.Reaper)
  return Relay.of({
    stats: Option.isNone(reaper) ? Ref.get(stats) : Effect.zipWith(Ref.get(stats), reaper.value.status, (s, r) => ({
      ...s,
      reaped: s.reaped + r.requeued + r.deadLettered,
      deadLettered: s.deadLettered + r.deadLettered
    }))
  })
})

/**
 * The workers alone, for a composition that runs the reaper as one of its
 * duties (`OutboxLive`): `stats` includes the reaper's counts when a
 * `Reaper` is in context.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWorkers: Layer.Layer<Relay, never, OutboxStore | OutboxSink | OutboxConfig> = Layer.effect(Relay, make)

/**
 * The relay as a layer: the workers and the reaper (`Reaper.layer`), whose
 * fiber tree lives as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Relay, never, OutboxStore | OutboxSink | OutboxConfig> = layerWorkers.pipe(
  Layer.provide(Reaper.layer)
)
