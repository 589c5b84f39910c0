/**
 * The `outbox` command line (`npx outbox`), reading `DATABASE_URL`:
 *
 * - `outbox migrate [--partman] [--premake-days N] [--retention-days N]`:
 *   applies the schema; `--partman` then hands the outbox to pg_partman.
 * - `outbox partitions status [--table T] [--json]`: partitions, bounds,
 *   sizes, and the outbox's health check.
 * - `outbox partitions maintain [--table T --column C --interval I] [--premake N]
 *   [--retention-days N] [--json]`: one maintenance run, for cron or CI.
 * - `outbox partitions maintain --tenant-table T [--tenant ID]
 *   [--months-ahead N] [--retention-months N]`: the same for a
 *   tenant × month table (one tenant, or a sweep of every known tenant).
 *
 * - `outbox migrate-online status|prepare|backfill|switch-over|finish
 *   [--legacy T] [--table T] [--json]`: the online migration from a plain
 *   outbox (see `@outbox/sql/OnlineMigration`).
 *
 * - `outbox archive list|verify|restore --dir D`: the archives retention
 *   mode `archive` wrote (`internal/cli/archive.ts`); `verify` exits 1 on a
 *   missing or altered archive, `restore` only fills a new or empty table.
 *
 * - `outbox stats [--minutes N] [--json]` and `outbox health [--premake N]
 *   [--table T] [--max-pending-age S] [--sink-timeout S] [--json]`: counts,
 *   throughput, dead letters, and whether the sink `OUTBOX_SINK_URL` names
 *   can connect; OK / WARN / CRITICAL exiting 0 / 1 / 2
 *   (`internal/cli/health.ts`).
 *
 * - `outbox keys blocked [--hold] [--limit N] [--json]`: under per-key
 *   ordering, the keys whose later events wait for their head (a backoff, a
 *   schedule, or with `--hold` a dead letter), with the head's id, age and
 *   last error (`internal/cli/keys.ts`).
 *
 * Exits non-zero when a step fails or the health check names a problem
 * (`status`), so it can gate a pipeline.
 *
 * @since 0.1.0
 */
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as Partman from "@outbox/sql/Partman"
import * as TenantPartitions from "@outbox/sql/TenantPartitions"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import type * as SqlClient from "effect/sql/SqlClient"
import * as HealthCli from "./internal/cli/health.ts"
import * as OnlineMigrationCli from "./internal/cli/online.ts"
import * as Progress from "./internal/cli/progress.ts"
import { archive } from "./internal/cli/archive.ts"
import { audit } from "./internal/cli/audit.ts"
import { dlq } from "./internal/cli/dlq.ts"
import { keys } from "./internal/cli/keys.ts"
import { roles } from "./internal/cli/roles.ts"
import { formatBytes, formatTable, json as jsonFlag, print } from "./internal/cli/shared.ts"

/**
 * A command ran but found problems (a failed partition health check, a
 * maintenance step or a tenant that failed): the process exits with status 1
 * and prints `outbox: CommandFailed: <message>` on stderr, so that cron or a
 * pipeline sees the failure. A typed error (not a plain `Error`) so callers
 * of `run` can tell it from infrastructure failures with `Effect.catchTag`.
 *
 * @category errors
 * @since 0.1.0
 */
export class CommandFailed extends Schema.TaggedError<CommandFailed>("@outbox/runtime/CommandFailed")("CommandFailed", {
  message: Schema.String
}) {}

const json = jsonFlag("a table")

const day = (d: Date | null) => (d === null ? "" : d.toISOString().replace(".000Z", "Z").replace("T00:00:00Z", ""))

const migrate = Command.make("migrate", {
  partman: Flag.Boolean("partman").pipe(Flag.withDefault(false), Flag.withDescription("hand the outbox to pg_partman after migrating")),
  premakeDays: Flag.Int("premake-days").pipe(Flag.withDefault(4), Flag.withDescription("pg_partman premake (days)")),
  retentionDays: Flag.Int("retention-days").pipe(Flag.optional, Flag.withDescription("pg_partman retention (days)"))
}, (options) =>
  Effect.gen(function*() {
    yield* OutboxMigrations.run
    yield* Console.log("outbox schema is up to date")
    if (options.partman) {
      const summary = yield* Partman.handOver({
        premakeDays: options.premakeDays,
        retentionDays: Option.getOrUndefined(options.retentionDays)
      })
      yield* Console.log(
        summary._tag === "AlreadyManaged"
          ? `outbox already managed by pg_partman ${summary.partman.version}${summary.configUpdated ? " (configuration updated)" : ""}`
          : `outbox handed to pg_partman ${summary.partman.version}: ${summary.partitionsCreated.length} partition(s) created, ${summary.rowsMoved} row(s) moved`
      )
    }
  })).pipe(Command.withDescription("apply the outbox schema (and optionally hand it to pg_partman)"))

/** The flags of `partitions status` and `partitions maintain` that `policyFor` reads. */
const policyFlags = {
  table: Flag.String("table").pipe(Flag.withDefault("outbox"), Flag.withDescription("partitioned parent table")),
  column: Flag.String("column").pipe(Flag.withDefault("created_at"), Flag.withDescription("the timestamptz partition key")),
  interval: Flag.Literals("interval", ["daily", "weekly", "monthly", "quarterly"]).pipe(Flag.withDefault("daily" as const)),
  premake: Flag.Int("premake").pipe(Flag.withDefault(3)),
  retentionDays: Flag.Int("retention-days").pipe(Flag.optional)
}

const policyFor = (options: Command.Command.Config.Infer<typeof policyFlags>): PartitionPolicy.PartitionPolicy =>
  options.table === "outbox"
    ? PartitionPolicy.outbox({
      premake: options.premake,
      ...(Option.isSome(options.retentionDays) ? { retentionDays: options.retentionDays.value } : {})
    })
    : PartitionPolicy.make({
      table: options.table,
      column: options.column,
      interval: options.interval,
      premake: options.premake,
      retention: Option.isSome(options.retentionDays) ? { amount: options.retentionDays.value, unit: "days" } : undefined
    })

const status = Command.make("status", {
  ...policyFlags,
  json
}, (options) =>
  Effect.gen(function*() {
    const manager = yield* PartitionManager.PartitionManager
    const leaves = yield* manager.leaves(options.table)
    const health = yield* manager.health(policyFor(options))
    const overview = (yield* manager.overview).find((o) => o.parent === options.table)
    if (options.json) {
      yield* print({ table: options.table, partitions: leaves, overview, health })
    } else {
      yield* Console.log(formatTable(
        ["partition", "from", "to", "est. rows", "size"],
        leaves.map((l) => [
          l.isDefault ? `${l.name} (DEFAULT)` : l.name,
          day(l.from),
          day(l.to),
          String(Math.max(0, l.estimatedRows)),
          formatBytes(l.totalBytes)
        ]),
        [3, 4]
      ))
      if (overview !== undefined) {
        yield* Console.log(
          `\n${overview.partitions} partition(s), ${formatBytes(overview.totalBytes)} in all (min ${formatBytes(overview.minBytes)}, max ${
            formatBytes(overview.maxBytes)
          })`
        )
      }
      yield* Console.log(
        health.ok ? "health: ok" : `health: ${health.problems.length} problem(s)\n${health.problems.map((p) => `  ${p.kind}: ${p.message}`).join("\n")}`
      )
    }
    if (!health.ok) return yield* new CommandFailed({ message: `${options.table}: partition health check failed` })
  })).pipe(Command.withDescription("list partitions with bounds and sizes, and check their health"))

const tenantMaintain = (options: {
  readonly tenantTable: string
  readonly tenantColumn: string
  readonly timeColumn: string
  readonly tenant: Option.Option<string>
  readonly monthsAhead: number
  readonly retentionMonths: Option.Option<number>
  readonly json: boolean
}) =>
  Effect.gen(function*() {
    const tenants = yield* TenantPartitions.make({
      table: options.tenantTable,
      tenantColumn: options.tenantColumn,
      timeColumn: options.timeColumn
    })
    const ensured = Option.isSome(options.tenant)
      ? { ensured: yield* tenants.ensureTenant(options.tenant.value, { monthsAhead: options.monthsAhead }) }
      : { swept: yield* tenants.sweep({ monthsAhead: options.monthsAhead }) }
    const dropped = Option.isSome(options.retentionMonths)
      ? yield* tenants.applyRetention({
        retentionMonths: options.retentionMonths.value,
        ...(Option.isSome(options.tenant) ? { tenantId: options.tenant.value } : {})
      })
      : []
    if (options.json) return yield* print({ ...ensured, dropped })
    const created = "ensured" in ensured ? ensured.ensured.created : ensured.swept.created
    yield* Console.log(`created:  ${created.join(", ") || "-"}`)
    yield* Console.log(`dropped:  ${dropped.map((d) => d.partition).join(", ") || "-"}`)
    if ("swept" in ensured && ensured.swept.failed.length > 0) {
      yield* Console.log(`failed:   ${ensured.swept.failed.map((f) => `${f.partition}: ${f.error.message}`).join("; ")}`)
      return yield* new CommandFailed({ message: `${ensured.swept.failed.length} tenant(s) failed` })
    }
  })

const maintain = Command.make("maintain", {
  ...policyFlags,
  tenantTable: Flag.String("tenant-table").pipe(
    Flag.optional,
    Flag.withDescription("a tenant x month table (LIST by tenant, RANGE by month): maintain it instead")
  ),
  tenantColumn: Flag.String("tenant-column").pipe(Flag.withDefault("tenant_id")),
  timeColumn: Flag.String("time-column").pipe(Flag.withDefault("created_at")),
  tenant: Flag.String("tenant").pipe(Flag.optional, Flag.withDescription("only this tenant (default: every known tenant)")),
  monthsAhead: Flag.Int("months-ahead").pipe(Flag.withDefault(1)),
  retentionMonths: Flag.Int("retention-months").pipe(Flag.optional),
  json
}, (options) =>
  Effect.gen(function*() {
    if (Option.isSome(options.tenantTable)) return yield* tenantMaintain({ ...options, tenantTable: options.tenantTable.value })
    const manager = yield* PartitionManager.PartitionManager
    const progress = Progress.make(options.json)
    let steps = 0
    const report = yield* manager.maintain(policyFor(options), {
      onStep: (s) => progress.report(`${++steps} step(s): ${s.step} ${s.partition} ${s.outcome}`.padEnd(72))
    })
    yield* progress.done
    if (options.json) yield* print(report)
    else {
      yield* Console.log(`created:  ${report.created.join(", ") || "-"}`)
      yield* Console.log(`moved:    ${report.moved.map((m) => `${m.rows} row(s) into ${m.partition}`).join(", ") || "-"}`)
      yield* Console.log(`retired:  ${report.retired.map((r) => `${r.partition} (${r.action}, ${r.detach} detach)`).join(", ") || "-"}`)
      yield* Console.log(`blocked:  ${report.blocked.map((b) => `${b.partition} (${b.unfinished} unfinished)`).join(", ") || "-"}`)
      if (report.failed.length > 0) yield* Console.log(`failed:   ${report.failed.map((f) => `${f.partition} ${f.step}: ${f.message}`).join("; ")}`)
    }
    if (report.failed.length > 0) return yield* new CommandFailed({ message: `${report.failed.length} maintenance step(s) failed` })
  })).pipe(Command.withDescription("create partitions ahead, move DEFAULT rows, apply retention (once)"))

const partitions = Command.make("partitions").pipe(
  Command.withDescription("inspect and maintain partitions"),
  Command.withSubcommands([status, maintain])
)

/**
 * The `outbox` command tree.
 *
 * @category commands
 * @since 0.1.0
 */
export const command = Command.make("outbox").pipe(
  Command.withDescription("Outbox: transactional outbox for PostgreSQL"),
  Command.withSubcommands([migrate, partitions, OnlineMigrationCli.command, HealthCli.stats, HealthCli.health, dlq, keys, roles, audit, archive])
)

/**
 * Runs the command line on `argv` (without the node and script entries).
 * Needs a `SqlClient` and the Node CLI environment (`NodeServices.layer`).
 *
 * @category running
 * @since 0.1.0
 */
export const run = (argv: ReadonlyArray<string>) =>
  Command.runWith(command, { version: "0.1.0" })(argv).pipe(Effect.provide(PartitionManager.layer)) as Effect.Effect<
    void,
    unknown,
    SqlClient.SqlClient | Command.Environment
  >

/**
 * Runs the command line on `argv` with `database` built only when a command
 * runs: `outbox --help`, `outbox <command> --help` and `--version` print
 * without connecting, so they work where `DATABASE_URL` is unset (the
 * `outbox` bin passes `OutboxLive.layerPg`). Needs the Node CLI environment.
 *
 * @category running
 * @since 0.1.0
 */
export const runWithDatabase = <E, R>(argv: ReadonlyArray<string>, database: Layer.Layer<SqlClient.SqlClient, E, R>) =>
  Command.runWith(
    Command.provide(command, Layer.provideMerge(PartitionManager.layer, database)),
    { version: "0.1.0" }
  )(argv) as Effect.Effect<void, unknown, R | Command.Environment>
