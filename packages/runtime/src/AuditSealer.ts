/**
 * The audit chain's sealer as a duty (see `Duty`) in the relay's fiber
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
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as SqlClient from "effect/sql/SqlClient"
import * as Duty from "./Duty.ts"
import * as OutboxEnv from "./OutboxEnv.ts"

/**
 * What the schedule has done so far.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status extends Duty.Status {
  readonly enabled: boolean
  /** Rows sealed by this process since it started. */
  readonly sealed: number
  readonly checkpoints: number
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

/**
 * The sealer as a duty (see `Duty`): one sealing pass (at most `maxBatches`
 * transactions of `maxRows`) and the due checkpoints per run, every `every`,
 * the first at start; what each run did goes to `progress`. A failed run is
 * counted in `outbox_relay_failures_total{loop="audit"}`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const duty = Effect.fnUntraced(function*(
  options: Options,
  progress: Ref.Ref<{ readonly sealed: number; readonly checkpoints: number }>
) {
  const audit = yield* AuditTrail.make
  const maxRows = options.maxRows ?? 10_000
  return Duty.make({
    name: "audit",
    schedule: Schedule.spaced(Duration.fromInputUnsafe(options.every ?? "5 seconds")),
    logLevel: "Error",
    run: Effect.gen(function*() {
      let sealed = 0
      for (let batch = 0; batch < (options.maxBatches ?? 100); batch++) {
        const n = yield* audit.seal({ maxRows })
        sealed += n
        if (n < maxRows) break
      }
      const checkpoints = yield* audit.checkpoint()
      if (checkpoints > 0) yield* Effect.logInfo(`audit chain: ${checkpoints} retention checkpoint(s) recorded`)
      yield* Ref.update(progress, (p) => ({ sealed: p.sealed + sealed, checkpoints: p.checkpoints + checkpoints }))
    }).pipe(Effect.annotateLogs({ module: "AuditSealer" }))
  })
})

/**
 * Runs the schedule in the scope (the `duty`, started: the first run at once).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const progress = yield* Ref.make({ sealed: 0, checkpoints: 0 })
  const status = yield* Duty.start(yield* duty(options, progress))
  return AuditSealer.of({
    status: Effect.zipWith(status, Ref.get(progress), (s, p) => ({ ...s, ...p, enabled: true }))
  })
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
    status: Effect.succeed({ ...Duty.initialStatus, enabled: false, sealed: 0, checkpoints: 0 })
  })
)

/**
 * From configuration (`OutboxEnv.auditSealer` by default: `ENABLE_AUDIT`
 * decides, `OUTBOX_AUDIT_SEAL_INTERVAL_MS` is the period); `layerOff` when
 * the audit trail is off.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config<Config.Success<typeof OutboxEnv.auditSealer>> = OutboxEnv.auditSealer
): Layer.Layer<AuditSealer, Config.ConfigError, SqlClient.SqlClient> =>
  Layer.unwrap(Effect.gen(function*() {
    const { enabled, every } = yield* config
    return enabled ? layer({ every }) : layerOff
  }))
