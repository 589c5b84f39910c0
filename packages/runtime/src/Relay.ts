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
 * └── reaper        every lease/2: expired leases → PENDING
 * ```
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
import { type Lease, leaseOf, type OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"

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
  const reapEvery = Duration.max(Duration.divideUnsafe(config.leaseDuration, 2), Duration.millis(1))

  const count = (key: keyof RelayStats, n = 1) =>
    n === 0 ? Effect.void : Ref.update(stats, (s) => ({ ...s, [key]: s[key] + n }))

  const onLeaseLost = (error: LeaseLost) =>
    Effect.andThen(
      count("leaseLost", error.eventIds.length),
      Effect.logWarning(error.message)
    )

  /** A fenced transition: LeaseLost is counted and logged, never fatal. */
  const fenced = (effect: Effect.Effect<void, LeaseLost | StoreError>) =>
    Effect.catchTag(effect, "LeaseLost", onLeaseLost)

  const handleFailure = (event: OutboxEvent, error: unknown) =>
    Effect.gen(function*() {
      const attempt: RetryPolicy.FailedAttempt = { event, error, retryable: RetryPolicy.isRetryable(error) }
      const decision = yield* RetryPolicy.decide(policy, attempt)
      const text = errorText(error)
      if (decision._tag === "Retry") {
        yield* fenced(store.retry(event, { error: text, delay: decision.delay }))
        yield* count("retried")
        yield* Effect.logDebug(`event ${event.id} failed, retry in ${Duration.format(decision.delay)}: ${text}`)
      } else {
        yield* fenced(store.deadLetter(event, { error: text }))
        yield* count("deadLettered")
        yield* Effect.logWarning(`event ${event.id} (${event.eventType}) dead-lettered: ${text}`)
      }
    })

  /** Completes delivered events; a failure is logged and the leases expire into a redelivery. */
  const completeAll = (leases: ReadonlyArray<Lease>) =>
    fenced(store.complete(leases)).pipe(
      Effect.andThen(count("completed", leases.length)),
      Effect.catchCause((cause) => Effect.logWarning(`completing ${leases.length} event(s) failed; they will be redelivered`, cause))
    )

  /**
   * Delivers one claimed batch. The completion of the delivered events is
   * handed to `completions` so the worker can claim its next batch while it
   * runs (at most one completion in flight per worker: `pending`).
   */
  const processBatch = (events: ReadonlyArray<OutboxEvent>, pending: { fiber: Fiber.Fiber<void> | undefined }) =>
    Effect.gen(function*() {
      // leases still held by this batch (undelivered, or delivered but not yet handed to completion)
      const held = new Map<bigint, Lease>(events.map((e) => [e.id, leaseOf(e)]))
      const delivered: Array<Lease> = []
      const renew = Effect.suspend(() => store.renew(Array.from(held.values()), config.leaseDuration)).pipe(
        Effect.catchTag("LeaseLost", (error) => {
          for (const id of error.eventIds) held.delete(id)
          return onLeaseLost(error)
        }),
        Effect.catchCause((cause) => Effect.logWarning("heartbeat failed", cause))
      )
      const heartbeat = yield* renew.pipe(
        Effect.delay(heartbeatEvery),
        Effect.repeat(Schedule.spaced(heartbeatEvery)),
        Effect.forkChild({ startImmediately: true })
      )
      /** Takes the delivered leases out of this batch's hands. */
      const takeDelivered = () => {
        const leases = delivered.splice(0)
        for (const lease of leases) held.delete(lease.id)
        return leases
      }
      yield* Effect.gen(function*() {
        for (const event of events) {
          if (!held.has(event.id)) continue // lease lost while we were busy: someone else owns it now
          const exit = yield* Effect.exit(sink.deliver(event))
          if (Exit.isSuccess(exit)) {
            delivered.push(leaseOf(event))
            continue
          }
          if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.interrupt
          held.delete(event.id)
          yield* handleFailure(event, Cause.squash(exit.cause))
        }
        yield* Fiber.interrupt(heartbeat)
        if (pending.fiber !== undefined) yield* Fiber.await(pending.fiber)
        const leases = takeDelivered()
        pending.fiber = leases.length === 0 ? undefined : yield* FiberSet.run(completions, completeAll(leases))
      }).pipe(
        Effect.onInterrupt(() =>
          Effect.gen(function*() {
            yield* Fiber.interrupt(heartbeat)
            const leases = takeDelivered()
            if (leases.length > 0) yield* completeAll(leases)
            const rest = Array.from(held.values())
            if (rest.length > 0) {
              yield* fenced(store.release(rest))
              yield* count("released", rest.length)
            }
          }).pipe(Effect.catchCause((cause) => Effect.logWarning("releasing leases failed", cause)))
        )
      )
    })

  const iteration = (pending: { fiber: Fiber.Fiber<void> | undefined }) =>
    Effect.gen(function*() {
      const events = yield* store.claim({ limit: config.batchSize, leaseDuration: config.leaseDuration })
      if (events.length === 0) return 0
      yield* count("claimed", events.length)
      yield* processBatch(events, pending)
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
              : Effect.as(Effect.logWarning("relay iteration failed", cause), 0)
          )
        )
        if (claimed === 0) yield* idle
      }
    }).pipe(Effect.annotateLogs({ module: "Relay", fiber: `worker-${index}` }))

  const reaper = store.reap.pipe(
    Effect.tap(({ deadLettered, requeued }) =>
      requeued.length + deadLettered.length === 0 ? Effect.void : Effect.andThen(
        Effect.andThen(count("reaped", requeued.length + deadLettered.length), count("deadLettered", deadLettered.length)),
        deadLettered.length === 0
          ? Effect.logInfo(`reaped ${requeued.length} expired lease(s)`)
          : Effect.logWarning(
            `reaped ${requeued.length + deadLettered.length} expired lease(s); dead-lettered ${deadLettered.length} whose attempts were used up: ${
              deadLettered.join(", ")
            }`
          )
      )
    ),
    Effect.catchCause((cause) => Effect.logWarning("reaper iteration failed", cause)),
    Effect.repeat(Schedule.spaced(reapEvery)),
    Effect.annotateLogs({ module: "Relay", fiber: "reaper" })
  )

  if (config.concurrency > 1) {
    yield* Effect.logWarning(
      `OUTBOX_CONCURRENCY=${config.concurrency}: events are claimed by ${config.concurrency} workers in parallel, so global order is not kept`
    )
  }

  // completions outlive the worker that delivered the events (and run beside its next claim)
  const completions = yield* FiberSet.make<void, never>()
  yield* Effect.forkScoped(reaper)
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

  return Relay.of({ stats: Ref.get(stats) })
})

/**
 * The relay as a layer: its fiber tree lives as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Relay, never, OutboxStore | OutboxSink | OutboxConfig> = Layer.effect(Relay, make)
