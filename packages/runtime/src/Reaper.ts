/**
 * The reaper: a duty (see `Duty`) that recovers the leases of crashed or
 * stalled workers. Every lease/2 it calls `OutboxStore.reap`: expired
 * leases go back to PENDING, or to DEAD_LETTER when their attempts are used
 * up. It runs beside the relay's workers (`Relay.layer` includes it;
 * `OutboxLive` lists it among its duties) and its counts are part of
 * `Relay.stats` (`reaped`, `deadLettered`).
 *
 * **Telemetry**: a reap that recovered something is a `reap` span (an empty
 * one makes none), counted in `outbox_leases_reaped_total{outcome}` and, for
 * dead letters, in `outbox_events_dead_lettered_total`; a failed run in
 * `outbox_relay_failures_total{loop="reaper"}`.
 *
 * @since 0.1.0
 */
import { OutboxConfig } from "@outbox/core/OutboxConfig"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Duty from "./Duty.ts"
import * as RelayInstruments from "./internal/relayInstruments.ts"

/**
 * What the reaper has done so far: its runs, and the leases it recovered.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status extends Duty.Status {
  /** Expired leases put back to PENDING. */
  readonly requeued: number
  /** Expired leases whose attempts were used up, dead-lettered. */
  readonly deadLettered: number
}

/**
 * The running reaper.
 *
 * @category services
 * @since 0.1.0
 */
export class Reaper extends Context.Service<Reaper, {
  readonly status: Effect.Effect<Status>
}>()("@outbox/runtime/Reaper") {}

/**
 * The reaper's duty: one reap per run, every lease/2 (the first at start).
 * `counts` receives what each run recovered.
 *
 * @category constructors
 * @since 0.1.0
 */
export const duty = Effect.fnUntraced(function*(
  counts: Ref.Ref<{ readonly requeued: number; readonly deadLettered: number }>
) {
  const store = yield* OutboxStore
  const config = yield* OutboxConfig
  const instruments = yield* RelayInstruments.make
  const every = Duration.max(Duration.divideUnsafe(config.leaseDuration, 2), Duration.millis(1))

  const run = Effect.gen(function*() {
    const { deadLettered, requeued } = yield* instruments.reap(store.reap)
    if (requeued.length + deadLettered.length === 0) return
    yield* instruments.reapedDeadLetters(deadLettered, store.get)
    yield* Ref.update(counts, (c) => ({
      requeued: c.requeued + requeued.length,
      deadLettered: c.deadLettered + deadLettered.length
    }))
    yield* deadLettered.length === 0
      ? Effect.logInfo(`reaped ${requeued.length} expired lease(s)`)
      : Effect.logWarning(
        `reaped ${requeued.length + deadLettered.length} expired lease(s); dead-lettered ${deadLettered.length} whose attempts were used up: ${
          deadLettered.join(", ")
        }`
      )
  }).pipe(Effect.annotateLogs({ module: "Relay", fiber: "reaper" }))

  return Duty.make({ name: "reaper", schedule: Schedule.spaced(every), run })
})

/**
 * Starts the reaper in the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.gen(function*() {
  const counts = yield* Ref.make({ requeued: 0, deadLettered: 0 })
  const status = yield* Duty.start(yield* duty(counts))
  return Reaper.of({
    status: Effect.zipWith(status, Ref.get(counts), (s, c) => ({ ...s, ...c }))
  })
})

/**
 * The reaper as a layer: it runs as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Reaper, never, OutboxStore | OutboxConfig> = Layer.effect(Reaper, make)
