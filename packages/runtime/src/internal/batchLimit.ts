/**
 * The adaptive claim limit of one relay worker: how many rows its next claim
 * asks for.
 *
 * A claim costs about the same round trip whether it returns 10 rows or
 * 1,000, so a backlog drains fastest in large batches; but a large batch is
 * delivered in full before any of it is completed, and lets one worker take
 * what several could share, so when the outbox is nearly empty small batches
 * keep latency low. The rule follows the last claim:
 *
 * - a **full** claim (as many rows as asked for: a backlog remains) doubles
 *   the limit, up to `max`;
 * - a **partial** claim (the outbox ran out) fits the limit to what it found:
 *   the smallest of `min`, `2·min`, `4·min`, ... that holds it (`min` after an
 *   empty poll), so a steady trickle keeps the limit it needs without
 *   oscillating, and the next burst starts small and grows again;
 * - **time cap**: never more rows than the last batch's pace delivers within
 *   `budgetMillis` (the relay passes the heartbeat period, lease/3), nor fewer
 *   than `min`. With a fast handler this never binds (a no-op sink's batch of
 *   1,000 takes ~20–50 ms against a 10 s budget); with a slow one it keeps a
 *   batch within one heartbeat period, as the capacity model advises
 *   (`B × t_handler` well below the lease), so a default maximum of 1,000
 *   does not turn a 50 ms webhook's batch into 50 s of held leases, of work
 *   redone after a crash and of shutdown wait: it settles at 160 (8 s).
 *
 * From `min` the limit reaches `max` in `log2(max / min)` full claims (7 from
 * 10 to 1,000). It only ever takes the values `min·2^k` and `max`, which
 * matters because the PostgreSQL store writes the limit into the claim's SQL
 * as a literal (one prepared statement per value): 8 statements for 10..1000.
 * `min = max` gives fixed batches (the time cap included: `min` is a floor).
 *
 * @since 0.1.0
 */

/**
 * The bounds of the limit, `1 ≤ min ≤ max`, and the time a batch should take
 * at most.
 *
 * @category models
 * @since 0.1.0
 */
export interface Bounds {
  readonly min: number
  readonly max: number
  readonly budgetMillis: number
}

/**
 * The bounds from the configuration: `max` is `OUTBOX_BATCH_SIZE`, and `min`
 * (`OUTBOX_MIN_BATCH_SIZE`) is capped at it, so a configuration that only
 * lowers the batch size (as before adaptive batches) keeps fixed batches of
 * that size.
 *
 * @category constructors
 * @since 0.1.0
 */
export const bounds = (options: {
  readonly batchSize: number
  readonly minBatchSize: number
  readonly budgetMillis: number
}): Bounds => {
  const max = Math.max(1, Math.trunc(options.batchSize))
  return { max, min: Math.min(max, Math.max(1, Math.trunc(options.minBatchSize))), budgetMillis: options.budgetMillis }
}

/**
 * The smallest of `min·2^k` (capped at `max`) that holds `claimed` rows.
 *
 * @category combinators
 * @since 0.1.0
 */
export const fit = (bounds: Bounds, claimed: number): number => {
  let limit = bounds.min
  while (limit < claimed && limit < bounds.max) limit *= 2
  return Math.min(limit, bounds.max)
}

/**
 * The largest of `min·2^k` and `max` that is at most `rows` (`min` when
 * `rows < min`): the most rows the last batch's pace (`claimed` rows in
 * `millis`) delivers within the budget.
 *
 * @category combinators
 * @since 0.1.0
 */
export const timeCap = (bounds: Bounds, claimed: number, millis: number): number => {
  if (claimed === 0 || millis <= 0) return bounds.max
  const rows = Math.floor((bounds.budgetMillis * claimed) / millis)
  if (rows >= bounds.max) return bounds.max
  let limit = bounds.min
  while (limit * 2 <= rows) limit *= 2
  return limit
}

/**
 * The limit of the next claim, after a claim with limit `limit` returned
 * `claimed` rows and its batch took `millis`: doubled (up to `max`) when the
 * claim was full, else fitted to what it found (`min` after an empty poll or
 * a failed iteration); in both cases at most the time cap.
 *
 * @category combinators
 * @since 0.1.0
 */
export const next = (bounds: Bounds, limit: number, claimed: number, millis: number): number =>
  Math.min(
    claimed >= limit ? Math.min(bounds.max, limit * 2) : fit(bounds, claimed),
    timeCap(bounds, claimed, millis)
  )
