/**
 * Partition maintenance as a duty (see `Duty`) in the relay's fiber tree:
 * runs `PartitionManager.maintain` for every policy when the layer starts,
 * then every `every` (default 1 hour). A failing run is logged and counted,
 * and the schedule goes on: nothing but the layer's scope stops it. The
 * service reports runs, the last reports and the last failure, so a health
 * probe can tell maintenance that has silently stopped.
 *
 * `runOnce` is the same work for cron or CI (`npx outbox partitions maintain`).
 *
 * Policies in retention mode `archive` write to the `archive` storage of the
 * options (`OutboxLive.layer({ archive })` sets it, and turns the outbox's own
 * policy to `archive`), which each run provides to `maintain`.
 *
 * @since 0.1.0
 */
import { ArchiveStorage } from "@outbox/core/ArchiveStorage"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import { type MaintenanceReport, PartitionManager } from "@outbox/sql/PartitionManager"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as Partman from "@outbox/sql/Partman"
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
  readonly lastReports: ReadonlyArray<MaintenanceReport>
}

/**
 * The running schedule.
 *
 * @category services
 * @since 0.1.0
 */
export class PartitionMaintenance extends Context.Service<PartitionMaintenance, {
  readonly policies: ReadonlyArray<PartitionPolicy.PartitionPolicy>
  readonly status: Effect.Effect<Status>
}>()("@outbox/runtime/PartitionMaintenance") {}

/**
 * Options of the schedule.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly policies: ReadonlyArray<PartitionPolicy.PartitionPolicy>
  /** Time between runs (default 1 hour). */
  readonly every?: Duration.Input | undefined
  /**
   * The outbox is handed to pg_partman (`npx outbox migrate --partman`):
   * each run also calls `partman.run_maintenance_proc()`. Leave the outbox
   * out of `policies` then.
   */
  readonly partman?: boolean | undefined
  /**
   * Cold storage for the policies in retention mode `archive`: each run
   * provides it to `maintain`, which writes an expired partition there,
   * verifies it and only then drops the partition. Without it (and without
   * an `ArchiveStorage` in the layer's context) those partitions are kept
   * and each run reports them failed.
   */
  readonly archive?: ArchiveStorage["Service"] | undefined
}

const describe = (r: MaintenanceReport) =>
  `${r.table}: created ${r.created.length}, moved ${r.moved.reduce((n, m) => n + m.rows, 0)} row(s) out of DEFAULT, retired ${r.retired.length}, blocked ${r.blocked.length}, failed ${r.failed.length}`

/**
 * Maintains every policy once, logging each report. A policy that fails is
 * logged and does not stop the others; the failures come back in the result.
 *
 * @category constructors
 * @since 0.1.0
 */
export const runOnce = Effect.fn("PartitionMaintenance.runOnce")(function*(
  policies: ReadonlyArray<PartitionPolicy.PartitionPolicy>
) {
  const manager = yield* PartitionManager
  const reports: Array<MaintenanceReport> = []
  const errors: Array<string> = []
  for (const policy of policies) {
    const result = yield* Effect.result(manager.maintain(policy))
    if (result._tag === "Failure") {
      errors.push(`${policy.table}: ${result.failure.message}`)
      yield* Effect.logError(`partition maintenance of ${policy.table} failed: ${result.failure.message}`)
      continue
    }
    const report = result.success
    reports.push(report)
    const changed = report.created.length + report.retired.length + report.moved.length > 0
    if (report.blocked.length > 0 || report.failed.length > 0) {
      yield* Effect.logWarning(describe(report), { blocked: report.blocked, failed: report.failed })
    } else if (changed) {
      yield* Effect.logInfo(describe(report))
    }
  }
  return { reports, errors } as const
})

/**
 * Maintenance as a duty (see `Duty`): one `runOnce` over the policies (and
 * pg_partman's maintenance with `partman`) per run, every `every`, the
 * first at start. A run in which a policy failed fails, with the failures
 * joined as its error, so it is logged and counted like any failed duty
 * (`outbox_relay_failures_total{loop="maintenance"}`); the reports of each
 * run go to `reports`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const duty = (
  options: Options,
  reports: Ref.Ref<ReadonlyArray<MaintenanceReport>>
): Duty.Duty<string, PartitionManager | SqlClient.SqlClient> =>
  Duty.make({
    name: "maintenance",
    schedule: Schedule.spaced(Duration.fromInputUnsafe(options.every ?? "1 hour")),
    logLevel: "Error",
    run: Effect.gen(function*() {
      const result = yield* (options.archive === undefined
        ? runOnce(options.policies)
        : Effect.provideService(runOnce(options.policies), ArchiveStorage, options.archive))
      const errors = [...result.errors]
      if (options.partman === true) {
        const partman = yield* Effect.result(Partman.runMaintenance)
        if (partman._tag === "Failure") {
          errors.push(`pg_partman: ${partman.failure.message}`)
          yield* Effect.logError(`pg_partman maintenance failed: ${partman.failure.message}`)
        } else if (partman.success.created.length + partman.success.dropped.length > 0) {
          yield* Effect.logInfo(
            `pg_partman: created ${partman.success.created.length}, dropped ${partman.success.dropped.length} partition(s)`
          )
        }
      }
      yield* Ref.set(reports, result.reports)
      const failed = [...errors, ...result.reports.flatMap((r) => r.failed.map((f) => `${r.table}/${f.partition}: ${f.message}`))]
      if (failed.length > 0) return yield* Effect.fail(failed.join("; "))
    }).pipe(Effect.annotateLogs({ module: "PartitionMaintenance" }))
  })

/**
 * Runs the schedule in the layer's scope (the `duty`, started).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const reports = yield* Ref.make<ReadonlyArray<MaintenanceReport>>([])
  const status = yield* Duty.start(duty(options, reports))
  return PartitionMaintenance.of({
    policies: options.policies,
    status: Effect.zipWith(status, Ref.get(reports), (s, lastReports) => ({ ...s, lastReports }))
  })
})

/**
 * The schedule as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<PartitionMaintenance, never, PartitionManager | SqlClient.SqlClient> =>
  Layer.effect(PartitionMaintenance, make(options))

/**
 * No schedule (`OUTBOX_PARTITION_MODE=off`): the status says zero runs.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerOff: Layer.Layer<PartitionMaintenance> = Layer.succeed(
  PartitionMaintenance,
  PartitionMaintenance.of({
    policies: [],
    status: Effect.succeed({ ...Duty.initialStatus, lastReports: [] })
  })
)

/**
 * The schedule from configuration (`OutboxEnv.partitions` by default):
 * the mode (`native`, `partman` or `off`), the outbox's own policy
 * (retention, premake, on the outbox table) and the schedule's period.
 * `policies` adds the application's tables (maintained natively in every mode
 * but `off`). With the audit trail on, the audit log's policy
 * (`AuditTrail.policy`: monthly, 7 years) is maintained too; the audit
 * chain's sealer is a duty of its own (`AuditSealer.layerConfig`, in
 * `OutboxLive`'s list of duties).
 *
 * With `options.archive` the outbox's policy and the audit log's are in
 * retention mode `archive` (written to that storage and verified before they
 * are dropped), and application policies in mode `archive` use it too. In
 * `partman` mode pg_partman retires the outbox's partitions itself, without
 * archiving them.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  policies: ReadonlyArray<PartitionPolicy.PartitionPolicy> = [],
  config: Config.Config<Config.Success<typeof OutboxEnv.partitions>> = OutboxEnv.partitions,
  options: { readonly archive?: ArchiveStorage["Service"] | undefined } = {}
): Layer.Layer<PartitionMaintenance, Config.ConfigError, PartitionManager | SqlClient.SqlClient> =>
  Layer.unwrap(Effect.gen(function*() {
    const c = yield* config
    if (c.mode === "off") return layerOff
    const archived = (policy: PartitionPolicy.PartitionPolicy): PartitionPolicy.PartitionPolicy =>
      options.archive === undefined ? policy : { ...policy, retentionMode: "archive" }
    const all = c.audit ? [...policies, archived(AuditTrail.policy())] : policies
    return layer({
      policies: c.mode === "partman"
        ? all
        : [archived(PartitionPolicy.outbox({ retentionDays: c.retentionDays, premake: c.premake, table: c.table })), ...all],
      every: c.every,
      partman: c.mode === "partman",
      archive: options.archive
    })
  }))
