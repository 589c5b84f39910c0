/**
 * A background duty: one small piece of periodic work (reaping expired
 * leases, partition maintenance, sealing the audit chain, sampling the
 * gauges) run in a layer's scope. Every duty of the relay's fiber tree runs
 * through this one runner, so they all behave the same way:
 *
 * - the first run comes after `InitialDelay` (zero unless a composition such
 *   as `OutboxLive` staggers its duties with `staggered`), then the duty's
 *   `Schedule` decides the next ones;
 * - a failing run (an error or a defect, not an interruption) is logged
 *   annotated with the duty's name, counted in
 *   `outbox_relay_failures_total{loop=<name>}` and in the status, and the loop
 *   goes on: nothing stops a duty but its scope;
 * - its status (`runs`, `failures`, `lastRunAt`, `lastError`) is readable as
 *   an Effect, so a health probe can tell a duty that silently stopped.
 *
 * A new duty is a `run` effect plus a schedule (modelled on River's
 * maintenance services and on how Effect's `PersistedQueue` forks its lock
 * refresher inside its layer):
 *
 * ```ts
 * const cleanup = Duty.make({ name: "cleanup", schedule: Schedule.spaced("1 hour"), run: deleteOldRows })
 * const CleanupLive = Duty.layer(cleanup)
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Telemetry from "./OutboxTelemetry.ts"

/**
 * What a duty does and when: `run` once per tick of `schedule`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Duty<E = never, R = never> {
  /**
   * The duty's name: the `duty` log annotation and the `loop` label of
   * `outbox_relay_failures_total` (list it in `OutboxTelemetry.labelValues.loop`
   * so that its series exists from the first scrape).
   */
  readonly name: string
  /** When the runs after the first one happen (e.g. `Schedule.spaced("1 hour")`). */
  readonly schedule: Schedule.Schedule<unknown, unknown>
  /** One run. A failure is logged and counted, and the next run comes on schedule. */
  readonly run: Effect.Effect<void, E, R>
  /** Level of the log line of a failed run (default `Warn`). */
  readonly logLevel?: "Warn" | "Error" | undefined
}

/**
 * What a running duty has done so far.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status {
  /** Runs finished, failed ones included. */
  readonly runs: number
  readonly failures: number
  /** When the last finished run started. */
  readonly lastRunAt: Date | undefined
  /** The last failure (kept after later successful runs). */
  readonly lastError: string | undefined
}

/**
 * A duty that has not run yet (or does not run, e.g. a disabled one).
 *
 * @category constructors
 * @since 0.1.0
 */
export const initialStatus: Status = { runs: 0, failures: 0, lastRunAt: undefined, lastError: undefined }

/**
 * Delay before a duty's first run (default zero: it runs as soon as it
 * starts, which the single-duty layers and their tests rely on). `staggered`
 * sets it so that the duties of one composition do not all hit the database
 * at the same instant.
 *
 * @category references
 * @since 0.1.0
 */
export const InitialDelay = Context.Reference<Duration.Duration>("@outbox/runtime/Duty/InitialDelay", {
  defaultValue: () => Duration.zero
})

/**
 * Builds a duty (it only types the definition: nothing runs until `start`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <E, R>(duty: Duty<E, R>): Duty<E, R> => duty

/** The status text of a failure: a string failure as it is, anything else as its cause. */
const errorText = (cause: Cause.Cause<unknown>): string => {
  const failure = cause.reasons.find(Cause.isFailReason)
  return failure !== undefined && typeof failure.error === "string" ? failure.error : String(cause)
}

/**
 * Forks the duty into the current scope (closing the scope interrupts it)
 * and returns its status.
 *
 * @category constructors
 * @since 0.1.0
 */
export const start = Effect.fnUntraced(function*<E, R>(duty: Duty<E, R>) {
  const state = yield* Ref.make<Status>(initialStatus)
  const initialDelay = yield* InitialDelay
  const metrics = yield* Telemetry.MetricsEnabled
  const failures = Telemetry.relayFailures({ loop: duty.name })
  const log = Effect.logWithLevel(duty.logLevel ?? "Warn")
  const once = Effect.gen(function*() {
    const at = new Date(yield* Clock.currentTimeMillis)
    yield* duty.run.pipe(
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.gen(function*() {
          yield* Ref.update(state, (s) => ({ ...s, failures: s.failures + 1, lastError: errorText(cause) }))
          if (metrics) yield* Metric.update(failures, 1)
          yield* log(`${duty.name} failed`, cause)
        })
      )
    )
    yield* Ref.update(state, (s) => ({ ...s, runs: s.runs + 1, lastRunAt: at }))
  })
  const loop = Effect.repeat(once, duty.schedule)
  // only the first run waits: the schedule spaces the others
  yield* (Duration.isZero(initialDelay) ? loop : Effect.andThen(Effect.sleep(initialDelay), loop)).pipe(
    Effect.annotateLogs({ duty: duty.name }),
    Effect.forkScoped
  )
  return Ref.get(state)
})

/**
 * The duty as a layer that provides nothing: it runs as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <E, R>(duty: Duty<E, R>): Layer.Layer<never, never, Exclude<R, Scope.Scope>> =>
  Layer.effectDiscard(start(duty)) as Layer.Layer<never, never, Exclude<R, Scope.Scope>>

/**
 * Merges duty layers, the first run of the `i`-th one delayed by `i × step`
 * (`InitialDelay`), so that a process's duties do not all fire at start.
 * The order of the list is the order of the first runs.
 *
 * @category layers
 * @since 0.1.0
 */
export const staggered = <Layers extends [Layer.Layer<never, any, any>, ...Array<Layer.Layer<never, any, any>>]>(
  step: Duration.Input,
  ...layers: Layers
): Layer.Layer<Layer.Success<Layers[number]>, Layer.Error<Layers[number]>, Layer.Services<Layers[number]>> => {
  const every = Duration.fromInputUnsafe(step)
  const [first, ...rest] = layers.map((duty, i) =>
    Layer.provide(duty, Layer.succeed(InitialDelay, Duration.times(every, i)))
  )
  return Layer.mergeAll(first!, ...rest) as Layer.Layer<any, any, any>
}
