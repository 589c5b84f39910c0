/**
 * The outbox schema, applied by the library through `effect/sql`'s
 * `Migrator` (tracked in `outbox_migrations`).
 *
 * - `outbox`: partitioned by `RANGE (created_at)` from day 0, one partition
 *   per UTC day (`outbox_pYYYYMMDD`) created for today and the next days at
 *   migration time, plus `outbox_default` as a backstop so an insert never
 *   fails for lack of a partition. Maintenance and retention come with the
 *   partition manager.
 * - Partial indexes keep the claim an index scan over claimable rows only
 *   (`status IN ('PENDING','FAILED')`) and the reaper a scan over leased rows.
 * - `outbox_lock_token_seq`: a fresh fencing token per claim.
 * - `outbox_inbox`: the idempotency store, keyed by `(consumer, tracking_id)`.
 *
 * Plain-SQL producers only need `aggregate_type`, `aggregate_id`,
 * `event_type` and `payload`; every other column has a default.
 *
 * Every migration is a numbered file of `src/migrations/`, listed in
 * `src/migrations/index.ts`, and a function of one `OutboxTables` value (the
 * names of every object, from the outbox table's name): this module runs
 * them, the outbox's and (with `ENABLE_AUDIT=true`) the audit trail's, with
 * one migrator, each set in its own ledger.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Migrator from "effect/sql/Migrator"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as Identifier from "./Identifier.ts"
import * as Migrations from "./migrations/index.ts"
import * as CreateOutbox from "./migrations/0001_create_outbox.ts"
import * as CreateAuditLog from "./migrations/audit/0001_create_audit_log.ts"
import * as OutboxTables from "./OutboxTables.ts"
import * as SqlEnv from "./SqlEnv.ts"

/**
 * How many days ahead (after today) the first migration creates partitions for.
 *
 * @category constants
 * @since 0.1.0
 */
export const initialPremakeDays: number = CreateOutbox.initialPremakeDays

/** The names for a table name (validated) or an `OutboxTables` as is. */
const tablesOf = (table: string | OutboxTables.OutboxTables) =>
  typeof table === "string" ? OutboxTables.make(table) : Effect.succeed(table)

/** `tablesOf`, an invalid name failing as the migrator does. */
const migrationTables = (table: string | OutboxTables.OutboxTables) =>
  tablesOf(table).pipe(
    Effect.mapError((cause) => new Migrator.MigrationError({ kind: "BadState", message: cause.message, cause }))
  )

/**
 * Creates the daily partitions `<table>_pYYYYMMDD` of the partitioned outbox
 * table `table` (a name, or its `OutboxTables`) from the UTC day of `from`
 * to `days` days after today (Effect's `Clock`), those that do not exist
 * yet; returns how many it created. A day whose rows already sit in the
 * DEFAULT partition fails (moving them is the partition manager's job).
 *
 * @category migrations
 * @since 0.1.0
 */
export const createDailyPartitions = (
  table: string | OutboxTables.OutboxTables,
  options: { readonly from?: Date | undefined; readonly days: number }
): Effect.Effect<number, SqlError.SqlError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.flatMap(tablesOf(table), (tables) => CreateOutbox.createDailyPartitions(tables, options))

/**
 * The migrations, by name, for the outbox table `table` (a name, validated,
 * or its `OutboxTables`; the default `outbox` gives `loader`). Another name
 * creates the outbox under that name (or finds the partitioned table an
 * online migration's `prepare` created), and points the table-bound objects
 * at it: the dead-letter index (`<table>_dead_letter_idx`) and the health
 * views. PostgreSQL binds views and indexes to the table, not to its name,
 * so they follow an online migration's `finish`, which renames the table
 * `outbox`. The views, functions and tables that are not bound to the
 * outbox table keep their names (`outbox_partition_leaves`,
 * `outbox_redrive_log`…): migrations are tracked once per database
 * (`outbox_migrations`), for one outbox table.
 *
 * @category migrations
 * @since 0.1.0
 */
export const loaderFor = (table: string | OutboxTables.OutboxTables): Migrator.Loader =>
  Effect.flatMap(migrationTables(table), (tables) => Migrations.loader(Migrations.outbox, tables))

/**
 * The migrations, by name.
 *
 * @category migrations
 * @since 0.1.0
 */
export const loader: Migrator.Loader = Migrations.loader(Migrations.outbox, OutboxTables.defaults)

/** The one migrator (no schema dump). */
const migrator = Migrator.make({})

/** Runs the migrations of `set` for `tables` not yet in its ledger. */
const apply = (set: Migrations.MigrationSet, tables: OutboxTables.OutboxTables) =>
  migrator({ loader: Migrations.loader(set, tables), table: set.ledger(tables) })

/**
 * Runs the outbox migrations only, for the outbox table `table` (see
 * `loaderFor`; idempotent: already applied ones are skipped).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runOutboxFor = (
  table: string | OutboxTables.OutboxTables
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(migrationTables(table), (tables) => apply(Migrations.outbox, tables))

/**
 * Runs the outbox migrations only (idempotent; already applied ones are skipped).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runOutbox = runOutboxFor(OutboxTables.defaults)

/**
 * The audit trail's migrations, then its capture triggers on the table
 * named `outbox` (re-created when an online migration's `finish` swapped
 * the table under that name). Whatever table the outbox migrations ran for:
 * the audited table is the one `finish` leaves as `outbox`, and the name
 * the partitioned table had then belongs to a view, which triggers cannot
 * capture.
 */
const runAudit = Effect.tap(
  apply(Migrations.audit, OutboxTables.defaults),
  () => CreateAuditLog.ensureTriggers(OutboxTables.defaults)
)

/**
 * Runs the outbox migrations for `options.tables` (or the table named
 * `options.table`, default `outbox`), then the audit trail's
 * (`outbox_audit_log`, triggers, sealer, views; tracked in
 * `outbox_audit_migrations`, reported with the prefix `audit_`) when
 * `options.audit` is true. Once installed, the audit trail stays.
 *
 * @category migrations
 * @since 0.1.0
 */
export const runWith = (options: {
  readonly audit: boolean
  readonly table?: string | undefined
  readonly tables?: OutboxTables.OutboxTables | undefined
}): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient> => {
  const outbox = runOutboxFor(options.tables ?? options.table ?? OutboxTables.defaults)
  return options.audit
    ? Effect.zipWith(outbox, runAudit, (outbox, audit) => [...outbox, ...audit.map(([id, name]) => [id, `audit_${name}`] as const)])
    : outbox
}

/**
 * `ENABLE_AUDIT` (default `false`, `SqlEnv.audit`); a value that is not a
 * boolean fails the migration with a `MigrationError` naming it.
 *
 * @category migrations
 * @since 0.1.0
 */
export const auditEnabled: Effect.Effect<boolean, Migrator.MigrationError> = SqlEnv.audit.pipe(
  Effect.mapError((cause) => new Migrator.MigrationError({ kind: "BadState", message: `ENABLE_AUDIT: ${cause.message}`, cause }))
)

/**
 * Runs the outbox migrations, plus the audit trail's when `ENABLE_AUDIT=true`
 * (idempotent; already applied ones are skipped).
 *
 * @category migrations
 * @since 0.1.0
 */
export const run = Effect.flatMap(auditEnabled, (audit) => runWith({ audit }))

/**
 * `run` for the outbox table `table` (a name or its `OutboxTables`, see
 * `loaderFor`): what the store runs at start for its configured table
 * (`OUTBOX_TABLE`).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runFor = (table: string | OutboxTables.OutboxTables) =>
  Effect.flatMap(auditEnabled, (audit) => runWith(typeof table === "string" ? { audit, table } : { audit, tables: table }))

/**
 * A layer that runs the migrations when built.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<never, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient> =
  Layer.effectDiscard(run)
