/**
 * What the relay does with a failed delivery, in both claim modes: the
 * retry or dead-letter decision (`RetryPolicy.decide` over the combined
 * retry and dead-letter policies) and the error text stored in
 * `last_error`. One definition, so that `OUTBOX_CLAIM_MODE=lease` and
 * `transaction` retry and dead-letter the same failures the same way.
 *
 * @since 0.1.0
 */
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"

/**
 * The text of a failure, as stored in `last_error`.
 *
 * @category formatting
 * @since 0.1.0
 */
export const errorText = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "string") return error
  return Cause.pretty(Cause.fail(error))
}

/**
 * Decides a failed delivery of `event` under `policy` (see
 * `RetryPolicy.decide`): a retry after a delay, or a dead letter; with the
 * error's text.
 *
 * @category combinators
 * @since 0.1.0
 */
export const decide = (
  policy: RetryPolicy.Policy,
  event: OutboxEvent,
  error: unknown
): Effect.Effect<{ readonly decision: RetryPolicy.Decision; readonly text: string }> =>
  Effect.map(
    RetryPolicy.decide(policy, { event, error, retryable: RetryPolicy.isRetryable(error) }),
    (decision) => ({ decision, text: errorText(error) })
  )
