/**
 * A counter of occurrences (wake-ups, notifications) with a way to wait for
 * the next one after a count already seen. The check and the capture of the
 * deferred to wait on happen in one synchronous step, so an occurrence
 * between a reader's `count` and its `await` is never missed.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

/** @internal */
export interface Counter {
  readonly count: () => number
  /** Counts `by` occurrences (default 1), waking whoever waits once. */
  readonly bump: (by?: number) => void
  /** Completes once the count passed `seen` (at once when it already has). */
  readonly await: (seen: number) => Effect.Effect<void>
}

/** @internal */
export const make = (): Counter => {
  let count = 0
  let next = Deferred.makeUnsafe<void>()
  return {
    count: () => count,
    bump: (by = 1) => {
      count += by
      const reached = next
      next = Deferred.makeUnsafe<void>()
      Deferred.doneUnsafe(reached, Exit.void)
    },
    await: (seen) => Effect.suspend(() => count > seen ? Effect.void : Deferred.await(next))
  }
}
