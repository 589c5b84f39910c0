/**
 * The audit chain's sealer as a supervised schedule in the relay's fiber
 * tree (`ENABLE_AUDIT=true`): every `every` (default 5 seconds) it seals
 * the committed audit rows (`AuditTrail.seal`, batches of `maxRows`, at
 * most `maxBatches` per run)
 * and records the retention checkpoints of past month boundaries
 * (`AuditTrail.checkpoint`). Writers never wait for it: audit rows are
 * appended unsealed by the outbox's triggers, and sealing runs under its own
 * advisory lock, so several relays may run it at once.
 *
 * A failing run is logged and counted, and the schedule goes on; the
 * service reports runs, rows sealed and the last failure.
 *
 * @since 0.1.0
 */
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as SqlClient from "effect/sql/SqlClient"

/**
 * What the schedule has done so far.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status {
  readonly enabled: boolean
  readonly runs: number
  readonly failures: number
  /** Rows sealed by this process since it started. */
  readonly sealed: number
  readonly checkpoints: number
  readonly lastRunAt: Date | undefined
  readonly lastError: string | undefined
}

/**
 * The running sealer.
 *
 * @category services
 * @since 0.1.0
 */
export class AuditSealer extends Context.Service<AuditSealer, {
  readonly status: Effect.Effect<Status>
}>()("@outbox/runtime/AuditSealer") {}

/**
 * Options of the schedule.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Time between runs (default 5 seconds). */
  readonly every?: Duration.Input | undefined
  /** Rows per sealing transaction (default 10000). */
  readonly maxRows?: number | undefined
  /**
   * Sealing transactions per run at most (default 100): under a sustained
   * burst a run ends, records its progress and checkpoints, and the next
   * run goes on.
   */
  readonly maxBatches?: number | undefined
}

const initialStatus = (enabled: boolean): Status => ({
  enabled,
  runs: 0,
  failures: 0,
  sealed: 0,
  checkpoints: 0,
  lastRunAt: undefined,
  lastError: undefined
})

/**
 * Runs the schedule in the scope (the first run at once).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const audit = yield* AuditTrail.make
  const every = Duration.fromInputUnsafe(options.every ?? "5 seconds")
  const state = yield* Ref.make<Status>(initialStatus(true))
  const iteration = Effect.gen(function*() {
    const at = new Date(yield* Clock.currentTimeMillis)
    const maxRows = options.maxRows ?? 10_000
    let sealed = 0
    for (let batch = 0; batch < (options.maxBatches ?? 100); batch++) {
      const n = yield* audit.seal({ maxRows })
      sealed += n
      if (n < maxRows) break
    }
    const checkpoints = yield* audit.checkpoint()
    if (checkpoints > 0) yield* Effect.logInfo(`audit chain: ${checkpoints} retention checkpoint(s) recorded`)
    yield* Ref.update(state, (s) => ({
      ...s,
      runs: s.runs + 1,
      sealed: s.sealed + sealed,
      checkpoints: s.checkpoints + checkpoints,
      lastRunAt: at
    }))
  }).pipe(
    Effect.catchCause((cause) =>
      Effect.andThen(
        Ref.update(state, (s) => ({ ...s, runs: s.runs + 1, failures: s.failures + 1, lastError: String(cause) })),
        Effect.logError("audit sealing failed", cause)
      )
    )
  )
  yield* iteration.pipe(
    Effect.repeat(Schedule.spaced(every)),
    Effect.annotateLogs({ module: "AuditSealer" }),
    Effect.forkScoped
  )
  return AuditSealer.of({ status: Ref.get(state) })
})

/**
 * The schedule as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<AuditSealer, never, SqlClient.SqlClient> =>
  Layer.effect(AuditSealer, make(options))

/**
 * No sealer (audit disabled): the status says so.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerOff: Layer.Layer<AuditSealer> = Layer.succeed(
  AuditSealer,
  AuditSealer.of({
    status: Effect.succeed(initialStatus(false))
  })
)

/**
 * `ENABLE_AUDIT` (default `false`) decides; the period is
 * `OUTBOX_AUDIT_SEAL_INTERVAL_MS` (5000).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<AuditSealer, Config.ConfigError, SqlClient.SqlClient> = Layer.unwrap(
  Effect.gen(function*() {
    const enabled = yield* Config.Boolean("ENABLE_AUDIT").pipe(Config.withDefault(false))
    if (!enabled) return layerOff
    const every = yield* Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), "OUTBOX_AUDIT_SEAL_INTERVAL_MS").pipe(
      Config.withDefault(5000)
    )
    return layer({ every: Duration.millis(every) })
  })
)
