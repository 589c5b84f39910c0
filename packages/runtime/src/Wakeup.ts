/**
 * The relay's wake-up signal: how something that knows new events were
 * committed (the LISTEN/NOTIFY listener, `WakeupListener`) gets idle workers
 * to claim at once instead of at their next poll, and how it knows whether
 * any worker waits at all.
 *
 * The relay depends on it optionally: without a `Wakeup` in its context a
 * worker that found nothing sleeps `pollInterval`, as before. With one it
 * waits for whichever comes first, the poll or a wake-up, so the poll
 * interval stays the upper bound on latency whatever happens to the
 * notifications (lost while a listener reconnects, never sent behind
 * PgBouncer).
 *
 * **No wake-up is lost, bursts collapse.** Wake-ups are counted
 * (`generation`). A worker reads the count before it claims and, when the
 * claim comes back empty, waits for a wake-up *after* that count
 * (`await(seen)`): one that came while it was claiming ends the wait at
 * once. A thousand notifications while the workers are busy are a thousand
 * increments of a number, and cost at most one extra claim.
 * The relay hands each wake-up to one worker, the first to see it (the
 * others see it taken and wait on), since one claim takes everything
 * committed before it.
 *
 * **Idle workers.** Workers report when they start and stop waiting
 * (`setIdle`); the listener asks producers for notifications only while at
 * least one waits (`idleWorkers`, `awaitIdleChange`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Counter from "./internal/counter.ts"

/**
 * The idle workers and a version that changes with them.
 *
 * @category models
 * @since 0.1.0
 */
export interface Idle {
  readonly workers: number
  readonly version: number
}

/**
 * The signal.
 *
 * @category services
 * @since 0.1.0
 */
export class Wakeup extends Context.Service<Wakeup, {
  /** Wake-ups so far: read it before a claim, pass it to `await` after an empty one. */
  readonly generation: Effect.Effect<number>
  /** Completes at the first wake-up after `seen` (at once when one came since). */
  readonly await: (seen: number) => Effect.Effect<void>
  /** Wakes every worker waiting in `await` (and any about to). */
  readonly wake: Effect.Effect<void>
  /** A worker starts (`true`) or stops (`false`) waiting for a wake-up or its poll. */
  readonly setIdle: (idle: boolean) => Effect.Effect<void>
  /** How many workers wait now. */
  readonly idleWorkers: Effect.Effect<Idle>
  /** Completes once `idleWorkers` changed after `version`. */
  readonly awaitIdleChange: (version: number) => Effect.Effect<void>
  /**
   * Whether a listener hears the producers' notifications now
   * (`WakeupListener`, which sets it): then every commit after a worker's
   * claim either wakes it (the gate was held) or is found by the claim the
   * listener asks for when it takes the gate again, so a worker whose claim
   * came back short may wait instead of claiming again at once. `false`
   * while no listener listens (none, or its session dropped): the relay then
   * polls, and claims again after a short claim.
   */
  readonly listening: Effect.Effect<boolean>
  /** The listener started (`true`) or stopped (`false`) hearing notifications. */
  readonly setListening: (listening: boolean) => Effect.Effect<void>
}>()("@outbox/runtime/Wakeup") {}

/**
 * A new signal (nothing wakes it until something calls `wake`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<Wakeup["Service"]> = Effect.sync(() => {
  const wakes = Counter.make()
  const changes = Counter.make()
  let idle = 0
  let listening = false
  return Wakeup.of({
    generation: Effect.sync(wakes.count),
    await: wakes.await,
    wake: Effect.sync(wakes.bump),
    setIdle: (waiting) =>
      Effect.sync(() => {
        idle = Math.max(0, idle + (waiting ? 1 : -1))
        changes.bump()
      }),
    idleWorkers: Effect.sync(() => ({ workers: idle, version: changes.count() })),
    awaitIdleChange: changes.await,
    listening: Effect.sync(() => listening),
    setListening: (on) =>
      Effect.sync(() => {
        listening = on
      })
  })
})

/**
 * The signal as a layer, shared by the relay's workers and the listener
 * (`OutboxLive` provides one to both).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Wakeup> = Layer.effect(Wakeup, make)
