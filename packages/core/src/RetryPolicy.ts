/**
 * Retry and dead-letter policies as `Schedule` values.
 *
 * A policy is a `Schedule` whose input is the `FailedAttempt` being judged.
 * The relay persists `retry_count` on the row, so it does not keep a schedule
 * running between attempts: for a row that has failed `n` times it replays
 * the schedule `n` steps and reads the delay of the last step. A schedule that
 * stops (is exhausted) dead-letters the event.
 *
 * The relay combines the two policies with `Schedule.max`: an event is retried
 * while both continue, after the longer of their delays.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Pull from "effect/Pull"
import * as Schedule from "effect/Schedule"
import { DeliveryError } from "./OutboxError.ts"
import type { OutboxEvent } from "./OutboxEvent.ts"

/**
 * The input of a retry or dead-letter policy: one failed delivery.
 *
 * @category models
 * @since 0.1.0
 */
export interface FailedAttempt {
  readonly event: OutboxEvent
  /** The sink's error (a `DeliveryError`, or whatever a handler failed with). */
  readonly error: unknown
  /** False when the error is a `DeliveryError` with `retryable: false`. */
  readonly retryable: boolean
}

/**
 * A policy: any schedule over failed attempts.
 *
 * @category models
 * @since 0.1.0
 */
export type Policy = Schedule.Schedule<unknown, FailedAttempt>

/**
 * Exponential backoff with jitter, capped: `base * factor^(n-1)` jittered by
 * ±20%, never above `cap`. It never stops by itself; pair it with a
 * dead-letter policy.
 *
 * @category constructors
 * @since 0.1.0
 */
export const exponential = (options: {
  readonly base: Duration.Input
  readonly cap: Duration.Input
  readonly factor?: number | undefined
}): Policy =>
  Schedule.min([
    Schedule.exponential(options.base, options.factor ?? 2).pipe(Schedule.jittered),
    Schedule.spaced(options.cap)
  ]).pipe(Schedule.setInputType<FailedAttempt>())

/**
 * The default retry policy: exponential from 1 second, doubling, jittered,
 * capped at 5 minutes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultRetry: Policy = exponential({ base: "1 second", cap: "5 minutes" })

/**
 * The default dead-letter policy: continue while the error is retryable and
 * the row has retries left (`retry_count < max_retries` after this failure
 * is counted, i.e. `max_retries` retries after the first attempt).
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultDeadLetter: Policy = Schedule.forever.pipe(
  Schedule.setInputType<FailedAttempt>(),
  Schedule.while(({ input }) => input.retryable && input.event.retryCount < input.event.maxRetries)
)

/**
 * Dead-letter after at most `times` failed attempts, whatever the row says,
 * and at once on a non-retryable error.
 *
 * @category constructors
 * @since 0.1.0
 */
export const maxAttempts = (times: number): Policy =>
  Schedule.forever.pipe(
    Schedule.setInputType<FailedAttempt>(),
    Schedule.while(({ input }) => input.retryable && input.event.retryCount + 1 < times)
  )

/**
 * What to do with a failed attempt.
 *
 * @category models
 * @since 0.1.0
 */
export type Decision =
  | { readonly _tag: "Retry"; readonly delay: Duration.Duration }
  | { readonly _tag: "DeadLetter" }

/**
 * Whether an error may be retried: everything but a `DeliveryError` with
 * `retryable: false`.
 *
 * @category guards
 * @since 0.1.0
 */
export const isRetryable = (error: unknown): boolean => !(error instanceof DeliveryError && !error.retryable)

/**
 * Decides a failed attempt: replays `policy` for the attempt number of the
 * failure (`retryCount + 1`) and retries after the last step's delay, or
 * dead-letters when the schedule stops.
 *
 * @category combinators
 * @since 0.1.0
 */
export const decide = (
  policy: Policy,
  attempt: FailedAttempt
): Effect.Effect<Decision> =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(policy)
    const now = yield* Clock.currentTimeMillis
    let delay = Duration.zero
    const steps = attempt.event.retryCount + 1
    for (let i = 0; i < steps; i++) {
      const exit = yield* Effect.exit(step(now, attempt))
      if (Exit.isFailure(exit)) {
        if (Pull.isDoneCause(exit.cause)) return { _tag: "DeadLetter" } as const
        return yield* Effect.failCause(exit.cause)
      }
      delay = exit.value[1]
    }
    return { _tag: "Retry", delay } as const
  }).pipe(Effect.orDie)

/**
 * Combines a retry policy and a dead-letter policy: retry while both
 * continue, after the longer delay.
 *
 * @category combinators
 * @since 0.1.0
 */
export const combine = (retry: Policy, deadLetter: Policy): Policy => Schedule.max([retry, deadLetter])
