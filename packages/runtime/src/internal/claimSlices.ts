/**
 * Which slice of the keys (`Ordering.slice`) a relay worker's next ordered
 * claim asks for, if any: under `OUTBOX_ORDERING=key` with several workers.
 *
 * Two ordered claims of the whole key space at once read the same oldest
 * rows, and the later one finds the heads the earlier one locked, so the
 * lease workers of a process take such claims one at a time (and the
 * transaction workers' claims raced). Claims of disjoint slices read
 * disjoint rows and run side by side. The rule follows the worker's last
 * claim:
 *
 * - after a **full** claim (a backlog) the worker claims a slice of its own:
 *   worker `i` (0-based) of `n` takes slices `2i` and `2i + 1` of `2n` in
 *   turn, so that its next claim does not meet its own last batch, whose
 *   keys stay in flight until that batch's completion (run beside the next
 *   claim) commits;
 * - after a **short** claim (the outbox ran out, or the slice did) it claims
 *   the whole key space, which also finds the keys of a slice whose worker
 *   is busy;
 * - after a short claim **of a slice** its next 1, 2, 4, ... 64 claims are
 *   of the whole key space (back to 1 after a full claim of a slice): a
 *   backlog over one key or a few leaves most slices empty, and each empty
 *   one costs a claim. In transaction mode, where a claim is a transaction,
 *   one key drained at 7,249 events/s with an empty slice tried after every
 *   claim, 12,292 with this backoff and 14,710 without slices
 *   (bench:ordering, 2026-12-04).
 *
 * Measured (bench:ordering, 200,000 events over 1,000 keys, 2 workers,
 * lease claims), the ordered drain as a share of the unordered one at claims
 * of 100 / 250 / 1,000: 58 / 56 / 50 % with one claim at a time
 * (2026-12-03), 69 / 64 / 70 % with slices (2026-12-04).
 *
 * @internal
 */
import type { Ordering } from "@outbox/core/OutboxStore"

/**
 * One worker's choice of slices.
 *
 * @internal
 */
export interface ClaimSlices {
  /** The slice of the next claim (`undefined`: the whole key space). */
  readonly next: () => Ordering["slice"]
  /** Records how the claim of `slice` (from `next`) came back. */
  readonly claimed: (slice: Ordering["slice"], full: boolean) => void
}

/** The most claims of the whole space a worker makes before it tries slices again after a short one. */
const maxSkip = 64

/**
 * The choice of worker `worker` (0-based) of `workers`; with one worker,
 * always the whole key space.
 *
 * @internal
 */
export const make = (worker: number, workers: number): ClaimSlices => {
  let full = false
  let turn = 0
  /** Claims of the whole space still to go before slices are tried again. */
  let skip = 0
  let backoff = 1
  return {
    next: () => {
      if (skip > 0) {
        skip--
        return undefined
      }
      if (workers <= 1 || !full) return undefined
      return { index: worker * 2 + (turn++ % 2), count: 2 * workers }
    },
    claimed: (slice, wasFull) => {
      full = wasFull
      if (slice === undefined) return
      if (wasFull) backoff = 1
      else {
        skip = backoff
        backoff = Math.min(backoff * 2, maxSkip)
      }
    }
  }
}
