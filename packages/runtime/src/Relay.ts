/**
 * The relay: a supervised fiber tree that moves events from the outbox to a
 * sink, in-process.
 *
 * ```
 * Relay (layer scope)
 * ├── worker 1..N   claim a batch (SKIP LOCKED, lease, fresh lock token),
 * │   │             small when the outbox is nearly empty, growing under a backlog
 * │   │             → deliver each event to the sink, in id order
 * │   │             → complete the delivered ones in one statement, while
 * │   │               the worker claims its next batch (one completion in flight)
 * │   │             → failed ones: retry with backoff, or dead-letter
 * │   └── heartbeat renews the batch's leases every lease/3 while it runs
 * └── reaper        every lease/2: expired leases → PENDING (`Reaper`, a duty)
 * ```
 *
 * **`OUTBOX_CLAIM_MODE=transaction`** (`internal/transactionWorker.ts`): a
 * worker's iteration locks its batch (`FOR UPDATE SKIP LOCKED`), delivers
 * it and settles it in one store transaction bounded by
 * `OUTBOX_TX_TIMEOUT_MS` (`OutboxStore.claimInTransaction`): no lease, no
 * heartbeat, one write per event; for sinks that acknowledge fast. The
 * worker loop, batch limits, waiting and shutdown are the same.
 *
 * **Adaptive batches** (`internal/batchLimit.ts`): each worker claims
 * `minBatchSize` rows (10) at first, doubles its limit while claims come
 * back full, up to `batchSize` (1,000), and fits it back to what a claim
 * found once one comes back short; and never above what the last batch's
 * pace delivers in one heartbeat period (lease/3), so a slow handler keeps
 * small batches. Under a backlog a claim's round trip is shared by up to
 * 1,000 events; when the outbox is nearly empty a batch stays small, so it is
 * completed soon and a burst is shared among workers. `minBatchSize =
 * batchSize` gives fixed batches.
 *
 * **Waiting.** A worker whose claim found nothing waits `pollInterval`,
 * or less when a `Wakeup` is in context and wakes it: `OutboxLive` provides
 * one, fed by LISTEN/NOTIFY (`WakeupListener`), so a committed event is
 * claimed within milliseconds while the poll stays the upper bound.
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
 * - counters and histograms are updated (unless
 *   `OutboxTelemetry.MetricsEnabled` is false).
 *
 * All of it lives in `internal/relayInstruments.ts`: this module makes one
 * call per thing that happened (`claim`, `delivered`, `completed`, ...).
 *
 * One failing iteration (a store error, a defect) is logged and the loop goes
 * on; nothing stops the tree but its scope. When the scope closes the relay
 * stops claiming, lets in-flight batches finish within `shutdownTimeout`,
 * then interrupts what is left: delivered events are completed and the
 * leases of undelivered ones are released (PENDING again, no attempt
 * counted). In transaction mode an interrupted batch's transaction rolls
 * back: its events are claimable again, delivered ones included.
 *
 * @since 0.1.0
 */
import { OutboxConfig } from "@outbox/core/OutboxConfig"
import { DeliveryError, type LeaseLost, type StoreError } from "@outbox/core/OutboxError"
import { orderingKeyOf, type OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import { type Ordering, OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Semaphore from "effect/Semaphore"
import type * as Tracer from "effect/Tracer"
import * as BatchLimit from "./internal/batchLimit.ts"
import * as ClaimSlices from "./internal/claimSlices.ts"
import { claimOrder } from "./internal/claimOrder.ts"
import * as Failure from "./internal/failure.ts"
import * as RelayInstruments from "./internal/relayInstruments.ts"
import * as TenantTurns from "./internal/tenantTurns.ts"
import * as TransactionWorker from "./internal/transactionWorker.ts"
import * as Reaper from "./Reaper.ts"
import * as Wakeup from "./Wakeup.ts"

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


/**
 * The wait of a worker after a failed iteration (a claim or completion the
 * store refused: the database unreachable, restarting, out of connections):
 * `base` after the first failure, doubling per failure in a row, at most
 * `max`, jittered by ±20 % so that the workers of many relays do not
 * return in step. The wake-up listener's reconnect uses the same figures.
 * Before, a worker waited out the poll interval: at the default 1 s that
 * was one logged stack trace per worker per second for as long as an
 * outage lasted, and at a 10 ms poll a hundred.
 *
 * @category constants
 * @since 0.1.0
 */
export const failureBackoff: { readonly base: Duration.Duration; readonly max: Duration.Duration } = {
  base: Duration.millis(100),
  max: Duration.seconds(5)
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
  const instruments = yield* RelayInstruments.make
  const stats = yield* Ref.make(emptyStats)
  const stop = yield* Deferred.make<void>()
  const policy = RetryPolicy.combine(config.retryPolicy, config.deadLetterPolicy)
  const heartbeatEvery = Duration.max(Duration.divideUnsafe(config.leaseDuration, 3), Duration.millis(1))
  const leaseMillis = Duration.toMillis(config.leaseDuration)
  const heartbeatMillis = Duration.toMillis(heartbeatEvery)

  const count = (key: keyof RelayStats, n = 1) =>
    n === 0 ? Effect.void : Ref.update(stats, (s) => ({ ...s, [key]: s[key] + n }))

  const onLeaseLost = (operation: RelayInstruments.LeaseLostOperation, error: LeaseLost) =>
    Effect.andThen(
      Effect.andThen(count("leaseLost", error.eventIds.length), Effect.sync(() => instruments.leaseLost(operation, error.eventIds.length))),
      Effect.logWarning(error.message)
    )

  /** A fenced transition: LeaseLost is counted and logged, never fatal; the ids it reports are returned. */
  const fenced = (
    operation: RelayInstruments.LeaseLostOperation,
    effect: Effect.Effect<void, LeaseLost | StoreError>
  ): Effect.Effect<ReadonlyArray<bigint>, StoreError> =>
    effect.pipe(
      Effect.as([] as ReadonlyArray<bigint>),
      Effect.catchTag("LeaseLost", (error) => Effect.as(onLeaseLost(operation, error), error.eventIds))
    )

  /** Gives `events`' leases back (fenced, for redelivery) and counts those released; ones already lost are not. */
  const release = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<void, StoreError> =>
    Effect.flatMap(fenced("release", store.release(events)), (lost) => count("released", events.length - lost.length))

  // --- claim -----------------------------------------------------------------

  /**
   * Each worker's claim limit moves between these (`internal/batchLimit.ts`: small when nearly empty, growing
   * under a backlog), and a batch should take at most one heartbeat period at the last batch's pace.
   */
  const batchBounds = BatchLimit.bounds({
    ...config,
    // transaction mode: a batch must be delivered within its transaction's deadline
    budgetMillis: Duration.toMillis(config.claimMode === "transaction" ? TransactionWorker.deliveryBudget(config) : heartbeatEvery)
  })
  const clock = yield* Clock.Clock

  /** Claims a batch of at most `limit` (SKIP LOCKED, lease, fresh lock token). */
  const order = claimOrder(config)
  const ordering: Ordering | undefined = order.ordering
  /**
   * `OUTBOX_ORDERING=key`: a completion (or a dead letter) here unblocks its
   * key, whose next event no claim could take while it was in flight; the
   * longest-idle worker claims again at once instead of at its next poll
   * (one, not all: several waking for one batch's keys made claims that
   * found nothing). Without it one key's events went one per poll interval:
   * over 1 key, 84 events/s with a 10 ms poll (bench:ordering).
   */
  const unblocked = ordering === undefined ? undefined : { count: 0, waiting: [] as Array<Deferred.Deferred<void>> }
  /** Wakes one idle worker (the longest waiting): each completion unblocks a batch's keys, one claim takes them. */
  const unblock: Effect.Effect<void> = unblocked === undefined ? Effect.void : Effect.sync(() => {
    unblocked.count++
    const next = unblocked.waiting.shift()
    if (next !== undefined) Deferred.doneUnsafe(next, Effect.void)
  })
  /**
   * `OUTBOX_ORDERING=key`: this process's workers claim one at a time. An
   * ordered claim picks its heads from the oldest rows (a window of twice its
   * limit) before it locks them, so two claims at once read the same window
   * and the later one finds the heads the earlier one locked: it comes back
   * short or empty, and the adaptive limit then shrinks to a window the other
   * claim covers again. With 2 workers over 1,000 keys at a limit of 100,
   * 217 of 889 claims came back empty. bench:ordering, ordered drain as a
   * share of the unordered one at limits 100 / 250 / 1,000: 47 % / 49 %
   * (50,000 events) / 32 % (the last full run) before; one at a time, 0
   * empty claims and 53 % / 53 % / 60 % (100,000 events). Claims side by
   * side with a window of 4 × the limit instead were slower still (15 ms a
   * claim against 6 ms: the later claim's row locks re-check the rows the
   * earlier one took). Relays in other processes can still meet; a short
   * claim there waits for the worker's next wake-up.
   */
  const claimPermit = ordering === undefined ? undefined : Semaphore.makeUnsafe(1)
  /**
   * `OUTBOX_ORDERING=key`, several workers (either claim mode): while a backlog
   * drains each worker claims its own slices of the keys, side by side and
   * without the permit (`internal/claimSlices.ts`: which slice, when, and
   * what it measured).
   */
  const sliced = ordering !== undefined && config.concurrency > 1
  /**
   * `OUTBOX_ORDERING=key` with a sink that delivers one event at a time:
   * claims take *runs* (`Ordering.run`), a key's head and the events after
   * it, up to the claim's limit (an equal share of the room per key; at most
   * `OUTBOX_ORDERING_RUN`). A batch delivers in id order, one event after the
   * other, so a key's run reaches the sink in order; once one of its events fails (or its lease
   * is lost) the rest of that key's run is released, not delivered
   * (`stopKey`), so no later event overtakes the retry. Heads only, one key
   * went at one event per claim → deliver → complete round: 219 events/s
   * (bench:ordering). Not with a batch sink (a broker's `deliverBatch`
   * publishes a batch at once: a failed publish could not hold back the
   * later events of its key). Transaction mode does the same in
   * `internal/transactionWorker.ts`.
   */
  const runs = ordering !== undefined && sink.deliverBatch === undefined && config.orderingRun > 1
  /**
   * `OUTBOX_FAIRNESS=tenant`: a batch is delivered in tenant turns, not in
   * id order (`internal/tenantTurns.ts`), so another tenant's new event is
   * not delivered after the whole share of a tenant with a backlog; each
   * key's events keep their order.
   */
  const fair = order.fairness !== undefined
  const claim = (limit: number, slice?: Ordering["slice"]) => {
    const claimed = Effect.suspend(() =>
      instruments.claim(store.claim({
        limit,
        leaseDuration: config.leaseDuration,
        ...order,
        ...(ordering === undefined ? {} : {
          ordering: {
            ...ordering,
            ...(runs ? { run: Math.min(limit, config.orderingRun) } : {}),
            ...(slice === undefined ? {} : { slice })
          }
        })
      }))
    )
    // claims of disjoint slices read disjoint rows: side by side
    return claimPermit === undefined || slice !== undefined ? claimed : Semaphore.withPermit(claimPermit, claimed)
  }

  // --- deliver ---------------------------------------------------------------

  /**
   * Delivers one claimed batch. The completion of the delivered events is
   * handed to `completions` so the worker can claim its next batch while it
   * runs (at most one completion in flight per worker: `pending`).
   */
  const processBatch = (
    events: ReadonlyArray<OutboxEvent>,
    claimSpan: Tracer.Span | undefined,
    pending: { fiber: Fiber.Fiber<void> | undefined },
    claimedAt: number
  ) =>
    Effect.gen(function*() {
      // Until when (this process's clock) the batch's leases surely hold: the claim's or the last good
      // renewal's send time plus the lease, never later than the database's `locked_until` (set when the
      // statement ran, after it was sent). An event is handed to the sink only while a heartbeat period of
      // it remains: a worker that was frozen (SIGSTOP, a long GC pause, a suspended VM) or cut off from the
      // database past that point stops delivering its batch, whose leases another relay may have reaped and
      // whose keys it may have moved on (under per-key ordering, delivering then would overtake the key's
      // next event at the consumer). Its remaining events are released, and redelivered by whoever holds
      // them. Measured by the chaos suite's relay-freeze with OUTBOX_ORDERING=key: 4 order violations
      // before this check, from events a resumed relay went on delivering.
      let heldUntil = claimedAt + leaseMillis
      const leaseRemains = () => clock.currentTimeMillisUnsafe() < heldUntil - heartbeatMillis
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
        const sentAt = clock.currentTimeMillisUnsafe()
        return instruments.underClaim(claimSpan, "renew", held.length, store.renew(held, config.leaseDuration)).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              heldUntil = Math.max(heldUntil, sentAt + leaseMillis)
            })
          )
        )
      }).pipe(
        Effect.catchTag("LeaseLost", (error) => {
          lost ??= new Set()
          for (const id of error.eventIds) lost.add(id)
          return onLeaseLost("renew", error)
        }),
        Effect.catchCause((cause) => Effect.andThen(instruments.failed("heartbeat"), Effect.logWarning("heartbeat failed", cause)))
      )
      // every lease/3 from the claim on: the delay comes once, outside the repeat (inside it, each round
      // would wait twice, renewing every 2·lease/3)
      const heartbeat = yield* renew.pipe(
        Effect.repeat(Schedule.spaced(heartbeatEvery)),
        Effect.delay(heartbeatEvery),
        Effect.forkChild({ startImmediately: true })
      )
      /** Takes the delivered events out of this batch's hands (in id order: a batch in tenant turns is sorted back). */
      const takeDelivered = () => fair ? delivered.splice(0).sort(TenantTurns.byId) : delivered.splice(0)
      /**
       * With runs: `event` failed or its lease was lost, so the rest of its
       * key's run in this batch is given back (released, fenced) and counts
       * as lost here: none of it is delivered after `event`. A release that
       * fails leaves them to the reaper; they are not delivered either way.
       */
      const stopKey = (event: OutboxEvent): Effect.Effect<void> => {
        const key = orderingKeyOf(event)
        const rest: Array<OutboxEvent> = []
        for (let j = next; j < events.length; j++) {
          const later = events[j]!
          if (!isLost(later) && orderingKeyOf(later) === key) rest.push(later)
        }
        if (rest.length === 0) return Effect.void
        lost ??= new Set()
        for (const later of rest) lost.add(later.id)
        return release(rest).pipe(
          Effect.catchTag("StoreError", (error) =>
            Effect.logWarning(`releasing ${rest.length} later event(s) of key ${key} failed; the reaper will: ${error.message}`))
        )
      }
      /** Times `events[next]`'s delivery. */
      const stopwatch = instruments.stopwatch()
      /** Records a failed delivery (rare: a generator is fine here). */
      const deliveryFailed = (event: OutboxEvent, cause: Cause.Cause<unknown>, seconds: number, traced: boolean) =>
        Effect.gen(function*() {
          if (Cause.hasInterruptsOnly(cause)) return yield* Effect.interrupt
          next++ // no longer held: the retry or dead letter settles its lease
          const outcome = yield* handleFailure(event, Cause.squash(cause))
          if (runs) yield* stopKey(event)
          if (outcome !== undefined) instruments.delivered(event, outcome, seconds)
          if (traced) yield* instruments.processFailed(outcome, cause)
        })
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
          instruments.delivered(event, "completed", stopwatch.seconds())
          return then()
        },
        onFailure: (cause: Cause.Cause<unknown>) =>
          Effect.flatMap(deliveryFailed(events[next]!, cause, stopwatch.seconds(), traced), then)
      })
      /**
       * Delivers one event. It runs once per event, so the success path is a
       * single `matchCauseEffect` that goes straight on with the next event:
       * no generator step, no `flatMap`, no `Exit` value. The caller runs it
       * at once, so the stopwatch starts here.
       */
      const deliverOne = (event: OutboxEvent, after: ReturnType<typeof afterDelivery>): Effect.Effect<void, StoreError> => {
        stopwatch.start()
        return Effect.matchCauseEffect(sink.deliver(event), after)
      }
      const done = () => Effect.void
      const untracedAfter = afterDelivery(() => deliverRest(), false)
      const unsampledAfter = afterDelivery(done, false)
      const sampledAfter = afterDelivery(done, true)
      /** One event in its trace context (`instruments.process`): a process span, or the producer's unsampled context. */
      const deliverTraced = (event: OutboxEvent, traced: boolean) => deliverOne(event, traced ? sampledAfter : unsampledAfter)
      /** Delivers `events[next..]` in order, one after the other. */
      const deliverRest = (): Effect.Effect<void, StoreError> => {
        // a lease lost while we were busy: someone else owns the event now (and, with runs, the rest of its key)
        while (next < events.length && isLost(events[next]!)) {
          const gone = events[next++]!
          if (runs) return Effect.flatMap(stopKey(gone), deliverRest)
        }
        if (next === events.length) return Effect.void
        if (!leaseRemains()) return expired
        const event = events[next]!
        return instruments.tracing
          ? Effect.flatMap(instruments.process(event, claimSpan, deliverTraced), deliverRest)
          : deliverOne(event, untracedAfter)
      }
      /**
       * A sink with `deliverBatch` (a broker: publish all, await the acks
       * together) gets the whole batch at once. Each acked event is
       * delivered, each other one retried or dead-lettered as after a failed
       * `deliver`; interrupted, nothing of the batch counts as delivered (its
       * leases are released, below). No `process` span per event: the sink
       * propagates each event's producer context (its `traceparent`).
       */
      const deliverBatched = (deliverBatch: NonNullable<OutboxSink["Service"]["deliverBatch"]>) =>
        Effect.suspend(() => {
          const batch = undelivered()
          if (batch.length === 0) return Effect.void
          if (!leaseRemains()) return expired
          stopwatch.start()
          return Effect.flatMap(deliverBatch(batch), (outcomes) => {
            const seconds = stopwatch.seconds()
            const failed: Array<readonly [OutboxEvent, DeliveryError]> = []
            batch.forEach((event, i) => {
              if (isLost(event)) return // renewed away meanwhile: someone else owns it
              const error = i < outcomes.length
                ? outcomes[i]
                : DeliveryError.transient(`the ${sink.name} sink returned no outcome for this event`)
              if (error === undefined) {
                delivered.push(event)
                instruments.delivered(event, "completed", seconds)
              } else failed.push([event, error])
            })
            next = events.length
            return Effect.forEach(failed, ([event, error]) =>
              Effect.map(handleFailure(event, error), (outcome) => {
                if (outcome !== undefined) instruments.delivered(event, outcome, seconds)
              }), { discard: true })
          })
        })
      /** The lease ran short before `events[next]`: the rest of the batch is released undelivered (fenced). */
      const expired: Effect.Effect<void, StoreError> = Effect.suspend(() => {
        const rest = undelivered()
        next = events.length
        return Effect.gen(function*() {
          yield* Effect.logWarning(
            `the batch's leases may have run out (${
              Duration.format(Duration.millis(clock.currentTimeMillisUnsafe() - (heldUntil - leaseMillis)))
            } since the last claim or renewal that succeeded, lease ${Duration.format(config.leaseDuration)}): ` +
              `${rest.length} event(s) not delivered, released for redelivery`
          )
          // a release that fails (the database unreachable) leaves them to the reaper; the delivered ones are
          // still handed to completion below
          yield* release(rest).pipe(
            Effect.catchTag("StoreError", (error) =>
              Effect.logWarning(`releasing ${rest.length} event(s) failed; the reaper will: ${error.message}`))
          )
        })
      })
      yield* Effect.gen(function*() {
        yield* (sink.deliverBatch === undefined ? Effect.suspend(deliverRest) : deliverBatched(sink.deliverBatch))
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
            if (rest.length > 0) yield* release(rest)
          }).pipe(Effect.catchCause((cause) => Effect.logWarning("releasing leases failed", cause)))
        )
      )
    })

  // --- complete, retry -------------------------------------------------------

  /** Completes delivered events; a failure is logged and the leases expire into a redelivery. */
  const completeAll = (events: ReadonlyArray<OutboxEvent>, claimSpan: Tracer.Span | undefined) =>
    instruments.underClaim(claimSpan, "complete", events.length, fenced("complete", store.complete(events))).pipe(
      Effect.flatMap((lost) => {
        const done = lost.length === 0 ? events : events.filter((event) => !lost.includes(event.id))
        instruments.completed(done)
        return Effect.andThen(count("completed", done.length), unblock)
      }),
      Effect.catchCause((cause) =>
        Effect.andThen(
          instruments.failed("claim"),
          Effect.logWarning(`completing ${events.length} event(s) failed; they will be redelivered`, cause)
        )
      )
    )

  /** Records a failed delivery: a retry with backoff, or a dead letter. `undefined` when the lease was lost meanwhile. */
  const handleFailure = (event: OutboxEvent, error: unknown) =>
    Effect.gen(function*() {
      const { decision, text } = yield* Failure.decide(policy, event, error)
      if (decision._tag === "Retry") {
        const lost = yield* fenced("retry", store.retry(event, { error: text, delay: decision.delay }))
        if (lost.length > 0) return undefined
        yield* count("retried")
        instruments.retried(event)
        yield* Effect.logDebug(`event ${event.id} failed, retry in ${Duration.format(decision.delay)}: ${text}`)
        return "retried" as const
      }
      const lost = yield* fenced("dead_letter", store.deadLetter(event, { error: text }))
      if (lost.length > 0) return undefined
      yield* count("deadLettered")
      yield* unblock
      instruments.deadLettered(event)
      yield* Effect.logWarning(`event ${event.id} (${event.eventType}) dead-lettered: ${text}`)
      return "dead_lettered" as const
    })

  // --- the workers -----------------------------------------------------------

  /** `OUTBOX_CLAIM_MODE=transaction`: the iteration that claims, delivers and settles in one transaction. */
  const inTransaction = config.claimMode === "transaction"
    ? yield* TransactionWorker.make({ store, sink, config, instruments, policy, count })
    : undefined

  /**
   * `OUTBOX_FAIRNESS=tenant` without per-key ordering, lease claims: after a
   * full claim (a backlog drains), a second, small fair claim (at most
   * `OUTBOX_MIN_BATCH_SIZE`, when that is below the claim's limit: not with
   * fixed batches) joins the batch before it is delivered. An event another
   * tenant committed while the big claim ran is taken by it and delivered
   * first, in the batch's tenant turns, instead of waiting for the next
   * claim of a backlog's size; each tenant with due work gets its share of
   * the small claim, so the backlog's tenant does too.
   *
   * Measured (bench:ordering's fairness part: tenant a's backlog of 100,000,
   * tenant b's 10 events/s, 2 workers, claims up to 1,000, a no-op sink; 4
   * alternating pairs of 8 rounds): b's pickup p50 19–23 ms against 28–32,
   * p99 40–51 ms against 56–67 (one run 84, two of its rounds with a pickup
   * over 100 ms); p99 0.93–1.12 batch-handling times against 1.53–1.62. The
   * cost: the backlog drained in 2.05–2.27 s against 1.82–2.07 (8 % slower
   * on average: a small claim and a second completion per batch).
   *
   * Not with per-key ordering: there the small claim is a whole ordered
   * claim (its probe, its window of the oldest rows, the walk of keys), and
   * drains were 20–25 % slower (2.69–3.12 s against 2.28–2.45, same
   * bench). Not in transaction mode, where the claim and its delivery are
   * one transaction. Not with a per-tenant cap (`OUTBOX_FAIRNESS_MAX_IN_FLIGHT`):
   * claims at the same moment may each use the same room under it, and a
   * claim more per batch makes that likelier (with it, the capped relay
   * test, 4 workers on PostgreSQL, failed once in 17 runs).
   */
  const catchUp = fair && ordering === undefined && order.fairness?.maxInFlight === undefined
  /**
   * `events` (a full claim) and what the catch-up claim adds. A failed
   * catch-up claim is logged and the batch goes on without it (failing the
   * iteration left the batch to its leases' expiry: 45 s in the test);
   * interrupted (a shutdown), the big claim's leases are released, since no
   * delivery holds them yet.
   */
  const withCatchUp = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<ReadonlyArray<OutboxEvent>> =>
    claim(batchBounds.min).pipe(
      Effect.map(({ events: more }) => more.length === 0 ? events : [...events, ...more]),
      Effect.catchTag("StoreError", (error) =>
        Effect.as(Effect.logWarning(`the catch-up claim failed; the batch goes on without it: ${error.message}`), events)),
      Effect.onInterrupt(() => release(events).pipe(Effect.catchCause((cause) => Effect.logWarning("releasing leases failed", cause))))
    )

  const iteration = (pending: { fiber: Fiber.Fiber<void> | undefined }, limit: number, slice?: Ordering["slice"]) =>
    Effect.gen(function*() {
      const claimedAt = clock.currentTimeMillisUnsafe()
      const { events, span } = yield* claim(limit, slice)
      if (events.length === 0) return 0
      const batch = catchUp && events.length >= limit && batchBounds.min < limit ? yield* withCatchUp(events) : events
      yield* count("claimed", batch.length)
      yield* processBatch(fair ? TenantTurns.tenantTurns(batch, ordering !== undefined) : batch, span, pending, claimedAt)
      return events.length
    })

  // --- waiting ---------------------------------------------------------------

  /** The wait after the `n`th failed iteration in a row (`failureBackoff`), jittered by ±20 %. */
  const backoff = (n: number) =>
    Effect.map(Random.next, (r) => {
      const base = Math.min(
        Duration.toMillis(failureBackoff.max),
        Duration.toMillis(failureBackoff.base) * 2 ** Math.min(n - 1, 30)
      )
      return Duration.millis(Math.round(base * (0.8 + 0.4 * r)))
    })

  /** Wake-ups (LISTEN/NOTIFY: `WakeupListener`) when the composition provides them; the poll alone otherwise. */
  const wakeup = Option.getOrUndefined(yield* Effect.serviceOption(Wakeup.Wakeup))
  const poll = unblocked === undefined
    ? Effect.raceFirst(Effect.sleep(config.pollInterval), Deferred.await(stop))
    : Effect.suspend(() => {
      const woken = Deferred.makeUnsafe<void>()
      unblocked.waiting.push(woken)
      return Effect.raceAll([Effect.sleep(config.pollInterval), Deferred.await(stop), Deferred.await(woken)]).pipe(
        Effect.ensuring(Effect.sync(() => {
          const i = unblocked.waiting.indexOf(woken)
          if (i >= 0) unblocked.waiting.splice(i, 1)
        }))
      )
    })

  /**
   * A worker's wait after a claim that found nothing: the poll interval or a
   * wake-up, whichever comes first. A wake-up goes to one worker, the first
   * to see it: one that came since a worker of this relay last took one (one
   * during a claim, say) sends the next worker that waits to claim again at
   * once, so none is lost, and any number of them count as one. While it
   * waits it counts as idle in `Wakeup`: the listener asks producers to
   * notify only while some worker waits.
   *
   * One worker, not all: one claim takes everything committed before it (up
   * to its limit; a full claim is followed by the next at once), so the
   * others' claims found nothing. A worker left waiting joins a burst at the
   * next wake-up, the listener's re-arm at most `rearmAfter` later.
   */
  let taken = 0
  /**
   * Whether a worker whose claim came back short (some events, fewer than
   * its limit) waits as after an empty one instead of claiming again at
   * once: unordered claims, while the listener hears notifications
   * (`Wakeup.listening`). A short claim took everything claimable when it
   * ran; a commit after it either notifies (the gate was held: the wait ends
   * at once) or is found by the claim that follows the listener's next
   * `arm`, at most `rearmAfter` after the worker starts waiting. Before,
   * each short claim was followed by one that found nothing: at 500
   * one-event transactions/s (`bench:peers` W2, defaults), 1.72 claims per
   * event, 8,300 of 19,800 of them empty. Not with per-key ordering, where a
   * claim is short while keys are in flight, nor while the relay polls
   * (a steady flow would then go at one claim per poll interval).
   */
  const shortIsIdle: Effect.Effect<boolean> = wakeup === undefined || ordering !== undefined
    ? Effect.succeed(false)
    : wakeup.listening
  const idleWait = (): Effect.Effect<void> => {
    if (wakeup === undefined) return poll
    const waitForTurn = (seen: number): Effect.Effect<void> =>
      Effect.flatMap(Effect.raceFirst(Effect.as(poll, true), Effect.as(wakeup.await(seen), false)), (polled) =>
        polled ? Effect.void : Effect.flatMap(wakeup.generation, (now) => {
          if (now > taken) {
            taken = now
            return Effect.void
          }
          // another worker took it
          return waitForTurn(now)
        }))
    return Effect.gen(function*() {
      const now = yield* wakeup.generation
      if (now > taken) {
        taken = now
        return
      }
      yield* wakeup.setIdle(true)
      yield* waitForTurn(now).pipe(Effect.ensuring(wakeup.setIdle(false)))
    })
  }

  /**
   * `OUTBOX_FAIRNESS=tenant` with several workers, while a backlog drains:
   * the workers' claims are kept apart, one every `cycle / concurrency`,
   * where `cycle` is the time from a worker's claim to its next (a moving
   * average). A new event of another tenant is taken by the next claim of
   * any worker, so it waits for at most about that spacing, not for a whole
   * cycle. Workers that start together (at the start of a backlog) stay in
   * step, since their batches take equally long: with 2 workers both claimed
   * within 20 ms of each other and then delivered for 1.5 s (bench:ordering,
   * fairness with key order, a sink taking ~1.5 ms an event), and another
   * tenant's events waited up to a whole cycle for the next claim. A worker
   * ready to claim within half a spacing of another's claim waits for the
   * rest of the spacing; once apart they stay apart, so that wait is paid
   * about once per backlog. Not after a short claim: a trickle is claimed at
   * once.
   *
   * Measured (bench:ordering's fairness part, a's backlog of 10,000 over
   * 1,000 keys with key order, `BENCH_FAIR_SINK_MS=1`, 3 rounds each): b's
   * pickup p50 / p99 660 / 2,165 ms = 1.46 cycles, against 894 / 3,147 ms =
   * 2.21 without it; the drain 7.42 s against 7.11. Waiting from 0.8 of a
   * spacing instead of 0.5 spaced the claims more evenly (1.17 cycles) but
   * waited more often (7.74 s). With a no-op sink, where a claim is most of
   * a cycle, no difference beyond the noise.
   */
  const stagger = fair && config.concurrency > 1 ? { lastStart: Number.NEGATIVE_INFINITY, cycle: 0 } : undefined

  const worker = (index: number) =>
    Effect.gen(function*() {
      const pending: { fiber: Fiber.Fiber<void> | undefined } = { fiber: undefined }
      /** When this worker's last claim started, and whether it came back full (a backlog: claims are staggered). */
      let lastStarted = Number.NEGATIVE_INFINITY
      let lastFull = false
      const idle = idleWait()
      let limit = batchBounds.min
      /** Failed iterations in a row, and when the first of them failed. */
      let failures = 0
      let failingSince = 0
      const failed = (cause: Cause.Cause<unknown>) =>
        Effect.gen(function*() {
          if (failures++ === 0) failingSince = clock.currentTimeMillisUnsafe()
          yield* instruments.failed("claim")
          // the first failure in full; then one line at 2, 4, 8, ... failures in a row (an outage of a
          // minute logs ~6 lines per worker, not one per attempt)
          if (failures === 1) yield* Effect.logWarning("relay iteration failed; retrying with backoff", cause)
          else if ((failures & (failures - 1)) === 0) {
            yield* Effect.logWarning(`relay iteration still failing: ${failures} in a row over ${
              Duration.format(Duration.millis(clock.currentTimeMillisUnsafe() - failingSince))
            }: ${Failure.errorText(Cause.squash(cause))}`)
          }
          // wait out the backoff (a stop cuts it short) rather than the poll: a database that is down
          // or restarting is tried again soon at first, then at most every `failureBackoff.max`
          yield* Effect.raceFirst(Effect.sleep(yield* backoff(failures)), Deferred.await(stop))
          return -1
        })
      const slices = ClaimSlices.make(index - 1, sliced ? config.concurrency : 1)
      while (!(yield* Deferred.isDone(stop))) {
        if (stagger !== undefined && lastFull) {
          const ready = clock.currentTimeMillisUnsafe()
          const cycle = ready - lastStarted
          stagger.cycle = stagger.cycle === 0 ? cycle : 0.8 * stagger.cycle + 0.2 * cycle
          const spacing = stagger.cycle / config.concurrency
          const since = ready - stagger.lastStart
          if (since < spacing / 2) {
            yield* Effect.raceFirst(Effect.sleep(Duration.millis(Math.ceil(spacing - since))), Deferred.await(stop))
          }
        }
        const started = clock.currentTimeMillisUnsafe()
        if (stagger !== undefined) stagger.lastStart = started
        const unblocks = unblocked?.count
        const slice = slices.next()
        const claimed: number = yield* (inTransaction === undefined ? iteration(pending, limit, slice) : inTransaction(limit, slice)).pipe(
          Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : failed(cause))
        )
        if (claimed < 0) continue
        if (failures > 0) {
          yield* Effect.logInfo(`relay iterations succeed again after ${failures} failed in a row over ${
            Duration.format(Duration.millis(clock.currentTimeMillisUnsafe() - failingSince))
          }`)
          failures = 0
        }
        const full = claimed >= limit
        lastStarted = started
        lastFull = full
        slices.claimed(slice, full)
        // a short claim of one slice says nothing of the backlog: the limit stays for the whole space's claim
        if (slice === undefined || full) {
          limit = BatchLimit.next(batchBounds, limit, claimed, clock.currentTimeMillisUnsafe() - started)
        }
        // a key unblocked during the claim may have a head for it now: claim again rather than wait; an
        // empty slice says nothing of the others: claim the whole key space before waiting
        if (
          (claimed === 0 || (!full && (yield* shortIsIdle))) && unblocks === unblocked?.count && slice === undefined
        ) yield* idle
      }
    }).pipe(Effect.annotateLogs({ module: "Relay", fiber: `worker-${index}` }))

  if (config.concurrency > 1 && ordering === undefined) {
    yield* Effect.logWarning(
      `OUTBOX_CONCURRENCY=${config.concurrency}: events are claimed by ${config.concurrency} workers in parallel, so their order is not kept (OUTBOX_ORDERING=key keeps each key's)`
    )
  }

  // completions outlive the worker that delivered the events (and run beside its next claim)
  const completions = yield* FiberSet.make<void, never>()
  const workers = yield* Effect.forEach(
    Array.from({ length: config.concurrency }, (_, i) => i + 1),
    (i) => Effect.forkScoped(worker(i))
  )

  // --- shutdown --------------------------------------------------------------

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
          `in-flight handlers did not finish within ${Duration.format(config.shutdownTimeout)}; ${
            inTransaction === undefined ? "releasing their leases" : "rolling their transactions back"
          }`
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
