/**
 * An in-memory `Inbox` (idempotency store) with the semantics of
 * `PgInbox`, for unit tests of consumers without a database.
 *
 * `process` holds a per-key lock (consumer and tracking id) while it checks,
 * runs the effect and records the key, so concurrent redeliveries of one
 * event run the effect once: the others wait, then see the record and skip.
 * If the effect fails (or is interrupted) nothing is recorded, so the next
 * delivery runs it again. `markProcessed` takes the same lock, like the
 * PostgreSQL insert blocks on an uncommitted key; `isProcessed` does not, and
 * sees only what was recorded.
 *
 * @since 0.1.0
 */
import { Inbox, type ProcessResult } from "@outbox/core/Inbox"
import type { StoreError } from "@outbox/core/OutboxError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Semaphore from "effect/Semaphore"

/**
 * Builds an empty inbox. Each call gives an independent inbox.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<Inbox["Service"]> = Effect.sync(() => {
  const recorded = new Set<string>()
  /** One lock per key while someone holds or waits for it; removed when the last one leaves. */
  const locks = new Map<string, { readonly semaphore: Semaphore.Semaphore; users: number }>()

  const keyOf = (consumer: string, trackingId: string) => JSON.stringify([consumer, trackingId])

  const withKeyLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        let lock = locks.get(key)
        if (lock === undefined) {
          lock = { semaphore: Semaphore.makeUnsafe(1), users: 0 }
          locks.set(key, lock)
        }
        lock.users += 1
        return lock
      }),
      (lock) => Semaphore.withPermit(lock.semaphore, effect),
      (lock) =>
        Effect.sync(() => {
          lock.users -= 1
          if (lock.users === 0) locks.delete(key)
        })
    )

  const isProcessed = (consumer: string, trackingId: string): Effect.Effect<boolean, StoreError> =>
    Effect.sync(() => recorded.has(keyOf(consumer, trackingId)))

  const markProcessed = (consumer: string, trackingId: string): Effect.Effect<boolean, StoreError> => {
    const key = keyOf(consumer, trackingId)
    return withKeyLock(
      key,
      Effect.sync(() => {
        if (recorded.has(key)) return false
        recorded.add(key)
        return true
      })
    )
  }

  const process = <A, E, R>(
    consumer: string,
    trackingId: string,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<ProcessResult<A>, E | StoreError, R> => {
    const key = keyOf(consumer, trackingId)
    return withKeyLock(
      key,
      Effect.suspend((): Effect.Effect<ProcessResult<A>, E, R> =>
        recorded.has(key)
          ? Effect.succeed({ _tag: "Duplicate" })
          : Effect.map(effect, (value) => {
            recorded.add(key)
            return { _tag: "Processed", value }
          })
      )
    )
  }

  return Inbox.of({ isProcessed, markProcessed, process })
})

/**
 * A fresh, empty in-memory inbox per build of the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Inbox> = Layer.effect(Inbox, make)
