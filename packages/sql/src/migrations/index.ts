/**
 * Every migration of `@outbox/sql`, listed here and nowhere else: the
 * outbox's (ledger `outbox_migrations`) and the audit trail's (ledger
 * `outbox_audit_migrations`, applied with `ENABLE_AUDIT=true`). Each is a
 * numbered file of this folder named after its ledger entry, and a function
 * of the one `OutboxTables` value; `OutboxMigrations` runs them with one
 * migrator.
 *
 * **Gotcha**: a released migration never changes (a database records its
 * name and never runs it again): a schema change is a new file with the
 * next number, appended here. `MigrationUpgrade.test.ts` migrates a
 * database left by the previous release forward and compares it with a
 * fresh one.
 *
 * @internal
 */
import type * as Effect from "effect/Effect"
import * as Migrator from "effect/sql/Migrator"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as OutboxTables from "../OutboxTables.ts"
import * as CreateOutbox from "./0001_create_outbox.ts"
import * as PartitionViews from "./0002_partition_views.ts"
import * as RedriveLog from "./0003_redrive_log.ts"
import * as HealthViews from "./0004_health_views.ts"
import * as RelayGauges from "./0005_relay_gauges.ts"
import * as LeaseClaimedAt from "./0006_lease_claimed_at.ts"
import * as WakeupTrigger from "./0007_wakeup_trigger.ts"
import * as Ordering from "./0008_ordering.ts"
import * as Tenant from "./0009_tenant.ts"
import * as ReadyIndex from "./0010_ready_index.ts"
import * as StatsDueAge from "./0011_stats_due_age.ts"
import * as TenantDueIndex from "./0012_tenant_due_index.ts"
import * as ClaimHorizon from "./0013_claim_horizon.ts"
import * as CreateAuditLog from "./audit/0001_create_audit_log.ts"

/**
 * One migration: its ledger name (`NNNN_name`, the file's name) and its
 * statements for a set of tables.
 *
 * @internal
 */
export interface Migration {
  readonly name: string
  readonly run: (tables: OutboxTables.OutboxTables) => Effect.Effect<void, unknown, SqlClient.SqlClient>
}

/**
 * A numbered sequence of migrations and the ledger that records them.
 *
 * @internal
 */
export interface MigrationSet {
  readonly ledger: (tables: OutboxTables.OutboxTables) => string
  readonly migrations: ReadonlyArray<Migration>
}

/**
 * The outbox's migrations.
 *
 * @internal
 */
export const outbox: MigrationSet = {
  ledger: (tables) => tables.migrations,
  migrations: [
    { name: "0001_create_outbox", run: CreateOutbox.migration },
    { name: "0002_partition_views", run: PartitionViews.migration },
    { name: "0003_redrive_log", run: RedriveLog.migration },
    { name: "0004_health_views", run: HealthViews.migration },
    { name: "0005_relay_gauges", run: RelayGauges.migration },
    { name: "0006_lease_claimed_at", run: LeaseClaimedAt.migration },
    { name: "0007_wakeup_trigger", run: WakeupTrigger.migration },
    { name: "0008_ordering", run: Ordering.migration },
    { name: "0009_tenant", run: Tenant.migration },
    { name: "0010_ready_index", run: ReadyIndex.migration },
    { name: "0011_stats_due_age", run: StatsDueAge.migration },
    { name: "0012_tenant_due_index", run: TenantDueIndex.migration },
    { name: "0013_claim_horizon", run: ClaimHorizon.migration }
  ]
}

/**
 * The audit trail's migrations (after the outbox's).
 *
 * @internal
 */
export const audit: MigrationSet = {
  ledger: (tables) => tables.auditMigrations,
  migrations: [
    { name: "0001_create_audit_log", run: CreateAuditLog.migration }
  ]
}

/**
 * The `effect/sql` loader of `set` for `tables`.
 *
 * @internal
 */
export const loader = (set: MigrationSet, tables: OutboxTables.OutboxTables): Migrator.Loader =>
  Migrator.fromRecord(Object.fromEntries(set.migrations.map((m) => [m.name, m.run(tables)])))
