/**
 * One relay iteration in `OUTBOX_CLAIM_MODE=transaction`: the batch is locked
 * (`FOR UPDATE SKIP LOCKED`), delivered and settled in one store transaction
 * (`OutboxStore.claimInTransaction`), instead of claim → deliver → complete
 * with a lease. `Relay` calls it in place of its lease iteration; the worker
 * loop, the adaptive batch limit, the idle wait and shutdown are the
 * relay's.
 *
 * **Why**: the row lock is the lease. No lease is written, so an event costs
 * one write (its completion: an UPDATE, or a DELETE with
 * `OUTBOX_COMPLETED=delete`) where a lease claim costs two, there is no
 * heartbeat, and a crash releases the rows by itself (the transaction rolls
 * back: claimable again at once). Raw ceilings on this machine: 34.7k
 * events/s at batch 100 with an UPDATE, 76.7k/s at batch 1,000 with a DELETE,
 * against 19k / 28k for the lease claim + completion. The relay measured
 * (`bench/claim-modes.bench.ts`, 50,000 queued events, batch 1,000, 1 worker,
 * a shared machine): 42–65k events/s kept, 68–98k deleted, 17–28k with
 * leases. Its own cost per event, against a store that does nothing, is that
 * of lease mode (~1.5 µs of Node CPU).
 *
 * **The deadline**: the transaction holds back the xmin horizon (vacuum)
 * while it is open, so it is bounded by `transactionTimeout`
 * (`OUTBOX_TX_TIMEOUT_MS`). The worker delivers, one event after the other
 * in id order, for three quarters of it (one timer per batch, not per
 * event), then settles and commits in the last quarter. The event in
 * delivery when the deadline passes is a failed attempt (retried with
 * backoff, or dead-lettered, like any failure: a sink that hangs on one event
 * cannot loop on it forever); the ones after it stay claimable, no attempt
 * counted. Delivered events are completed, so nothing delivered is
 * redelivered because of the deadline. The store bounds the transaction
 * again (and the database, should this process stall): if the settlement
 * does not commit, nothing changes and every event of the batch is
 * delivered again (at-least-once).
 *
 * **Failures** are decided as in lease mode (`internal/failure.ts`: the
 * retry and dead-letter policies) and settled in the same transaction.
 * Stats and counters (completed, retried, dead-lettered) are counted after
 * the commit; the handler-duration histogram when a delivery ends.
 *
 * **Gotcha**: a handler that kills the process (or a connection lost
 * mid-batch) rolls the batch back without counting an attempt: there is no
 * lease for the reaper to count, so such an event is redelivered at once,
 * every time. Lease mode counts it.
 *
 * @since 0.1.0
 */
import type { OutboxConfig } from "@outbox/core/OutboxConfig"
import { DeliveryError, type StoreError } from "@outbox/core/OutboxError"
import { orderingKeyOf, type OutboxEvent } from "@outbox/core/OutboxEvent"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import type { Ordering, OutboxStore, TransactionOutcome } from "@outbox/core/OutboxStore"
import type * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as References from "effect/References"
import { claimOrder } from "./claimOrder.ts"
import { tenantTurns } from "./tenantTurns.ts"
import * as Failure from "./failure.ts"
import type * as RelayInstruments from "./relayInstruments.ts"

/**
 * What an iteration needs from the relay.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly store: OutboxStore["Service"]
  readonly sink: OutboxSink["Service"]
  readonly config: OutboxConfig["Service"]
  readonly instruments: RelayInstruments.RelayInstruments
  /** The combined retry and dead-letter policy. */
  readonly policy: RetryPolicy.Policy
  /** Adds to the relay's stats. */
  readonly count: (key: "claimed" | "completed" | "retried" | "deadLettered", n: number) => Effect.Effect<void>
}

/**
 * How long a transaction-mode batch may deliver: three quarters of
 * `transactionTimeout`, the last quarter left for the settlement and the
 * commit. Also the time budget of the adaptive batch limit in this mode
 * (where lease mode uses the heartbeat period).
 *
 * @category constructors
 * @since 0.1.0
 */
export const deliveryBudget = (config: Pick<OutboxConfig["Service"], "transactionTimeout">): Duration.Duration =>
  Duration.times(config.transactionTimeout, 0.75)

/** A batch's settlement, with the events themselves (for the counters after the commit). */
interface Settlement {
  readonly completed: Array<OutboxEvent>
  readonly retried: Array<{ readonly event: OutboxEvent; readonly error: string; readonly delay: Duration.Duration }>
  readonly deadLettered: Array<{ readonly event: OutboxEvent; readonly error: string }>
}

/**
 * Builds the iteration: `(limit)` claims, delivers and settles at most
 * `limit` events in one transaction, and succeeds with the number claimed (0:
 * nothing was claimable).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const { config, instruments, policy, sink, store } = options
  /** Whether spans are made where this relay runs: the deliveries run with it, the transaction without. */
  const tracerEnabled = yield* References.TracerEnabled
  /** Delivering stops here; the last quarter of the timeout is for the settlement and the commit. */
  const budget = deliveryBudget(config)
  const order = claimOrder(config)
  /**
   * Runs (`Ordering.run`), as in lease mode: with per-key ordering and a sink
   * that delivers one event at a time, a claim takes a key's events after its
   * head too; once one fails, the rest of its key's run is not delivered nor
   * settled, so it stays PENDING, claimable after its predecessor's retry.
   */
  const runs = order.ordering !== undefined && sink.deliverBatch === undefined && config.orderingRun > 1
  const claimOptions = (limit: number, slice: Ordering["slice"]) => ({
    timeout: config.transactionTimeout,
    ...order,
    ...(order.ordering === undefined ? {} : {
      ordering: {
        ...order.ordering,
        ...(runs ? { run: Math.min(limit, config.orderingRun) } : {}),
        ...(slice === undefined ? {} : { slice })
      }
    })
  })

  /** Delivers `claimed` in order (in tenant turns with fairness: `internal/tenantTurns.ts`) within the budget; what happened to each, for the settlement. */
  const deliver = (claimed: ReadonlyArray<OutboxEvent>, settlement: Settlement) =>
    Effect.gen(function*() {
      const events = order.fairness === undefined ? claimed : tenantTurns(claimed, order.ordering !== undefined)
      // recorded after the fact (the claim ran inside the store's transaction), counted in the claim metrics
      const { span } = yield* instruments.claim(Effect.succeed(events))
      yield* options.count("claimed", events.length)
      /** `events[next]` is in delivery; the ones before it are settled (or, with runs, left as they were). */
      let next = 0
      const stopwatch = instruments.stopwatch()
      /** With runs: the keys whose event failed in this batch; their later events are left unsettled. */
      let stopped: Set<string> | undefined

      /** A failed delivery of `events[next]`: retry or dead letter (the lease mode's decision). */
      const failed = (error: unknown, seconds: number) =>
        Effect.map(Failure.decide(policy, events[next]!, error), ({ decision, text }): RelayInstruments.Outcome => {
          const event = events[next]!
          next++
          if (runs) (stopped ??= new Set()).add(orderingKeyOf(event))
          if (decision._tag === "Retry") settlement.retried.push({ event, error: text, delay: decision.delay })
          else settlement.deadLettered.push({ event, error: text })
          const outcome = decision._tag === "Retry" ? "retried" : "dead_lettered"
          instruments.delivered(event, outcome, seconds)
          return outcome
        })
      /** What follows a delivery, then `then` (built once per batch, as in lease mode). */
      const afterDelivery = (then: () => Effect.Effect<void>, traced: boolean) => ({
        onSuccess: (_: void) => {
          const event = events[next]!
          settlement.completed.push(event)
          next++
          instruments.delivered(event, "completed", stopwatch.seconds())
          return then()
        },
        onFailure: (cause: Cause.Cause<unknown>): Effect.Effect<void> => {
          if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
          const seconds = stopwatch.seconds()
          return Effect.flatMap(
            failed(Cause.squash(cause), seconds),
            (outcome) => traced ? Effect.andThen(instruments.processFailed(outcome, cause), then()) : then()
          )
        }
      })
      const deliverOne = (event: OutboxEvent, after: ReturnType<typeof afterDelivery>): Effect.Effect<void> => {
        stopwatch.start()
        return Effect.matchCauseEffect(sink.deliver(event), after)
      }
      const done = () => Effect.void
      const untracedAfter = afterDelivery(() => deliverRest(), false)
      const unsampledAfter = afterDelivery(done, false)
      const sampledAfter = afterDelivery(done, true)
      const deliverTraced = (event: OutboxEvent, traced: boolean) => deliverOne(event, traced ? sampledAfter : unsampledAfter)
      const deliverRest = (): Effect.Effect<void> => {
        if (stopped !== undefined) while (next < events.length && stopped.has(orderingKeyOf(events[next]!))) next++
        if (next === events.length) return Effect.void
        const event = events[next]!
        return instruments.tracing
          ? Effect.flatMap(instruments.process(event, span, deliverTraced), deliverRest)
          : deliverOne(event, untracedAfter)
      }

      /** A batch sink (`deliverBatch`) gets the whole batch; past the budget, the batch is a failed attempt each. */
      const deliverBatched = (deliverBatch: NonNullable<OutboxSink["Service"]["deliverBatch"]>) =>
        Effect.suspend(() => {
          stopwatch.start()
          return Effect.flatMap(deliverBatch(events), (outcomes) => {
            const seconds = stopwatch.seconds()
            return Effect.forEach(events, (event, i) => {
              const error = i < outcomes.length
                ? outcomes[i]
                : DeliveryError.transient(`the ${sink.name} sink returned no outcome for this event`)
              if (error !== undefined) return Effect.asVoid(failed(error, seconds))
              settlement.completed.push(event)
              next++
              instruments.delivered(event, "completed", seconds)
              return Effect.void
            }, { discard: true })
          })
        })

      const finished = yield* (sink.deliverBatch === undefined ? Effect.suspend(deliverRest) : deliverBatched(sink.deliverBatch)).pipe(
        // the transaction runs with the tracer off (no spans for empty polls): deliveries as in lease mode
        Effect.withTracerEnabled(tracerEnabled),
        Effect.timeoutOption(budget)
      )
      if (Option.isNone(finished) && next < events.length && sink.deliverBatch !== undefined) {
        // a batch in delivery when the deadline passed: each of its events a failed attempt (it may have been published)
        const error = DeliveryError.transient(
          `not acknowledged within the claiming transaction's deadline (${Duration.format(budget)} of OUTBOX_TX_TIMEOUT_MS)`
        )
        while (next < events.length) yield* failed(error, stopwatch.seconds())
      } else if (Option.isNone(finished) && next < events.length) {
        // the event in delivery when the deadline passed: a failed attempt; the rest stay claimable
        yield* failed(
          DeliveryError.transient(
            `not delivered within the claiming transaction's deadline (${Duration.format(budget)} of OUTBOX_TX_TIMEOUT_MS)`
          ),
          stopwatch.seconds()
        )
      }
      return settlement satisfies TransactionOutcome
    })

  /** After the commit: the stats, counters and logs of what was settled. */
  const committed = (settlement: Settlement) =>
    Effect.gen(function*() {
      instruments.completed(settlement.completed)
      yield* options.count("completed", settlement.completed.length)
      yield* options.count("retried", settlement.retried.length)
      yield* options.count("deadLettered", settlement.deadLettered.length)
      for (const { delay, error, event } of settlement.retried) {
        instruments.retried(event)
        yield* Effect.logDebug(`event ${event.id} failed, retry in ${Duration.format(delay)}: ${error}`)
      }
      for (const { error, event } of settlement.deadLettered) {
        instruments.deadLettered(event)
        yield* Effect.logWarning(`event ${event.id} (${event.eventType}) dead-lettered: ${error}`)
      }
    })

  /** One iteration: a claim of at most `limit` (of `slice` of the keys, under per-key ordering), delivered and settled. */
  return (limit: number, slice?: Ordering["slice"]): Effect.Effect<number, StoreError> =>
    Effect.suspend(() => {
      const settlement: Settlement = { completed: [], retried: [], deadLettered: [] }
      return store.claimInTransaction({ limit, ...claimOptions(limit, slice) }, (events) => deliver(events, settlement)).pipe(
        // an empty poll makes no span (as the lease claim): the transaction and its statements run untraced
        Effect.withTracerEnabled(false),
        Effect.flatMap((events) =>
          events.length === 0 ? Effect.succeed(0) : Effect.as(committed(settlement), events.length)
        )
      )
    })
})
