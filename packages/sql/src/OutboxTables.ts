/**
 * The names of the outbox's database objects, as one value built from the
 * outbox table's name (`OUTBOX_TABLE`, default `outbox`) and handed to every
 * SQL module: the store, the migrations, dead letters, health, the audit
 * trail, the online migration.
 *
 * Why one object: the outbox table may be renamed (an online migration runs
 * beside a legacy `outbox` under another name), and every module that
 * assumed `outbox` broke there. Deriving each name in one place, validated
 * once, makes "follows `OUTBOX_TABLE`" a property of the type rather than of
 * each query.
 *
 * Names bound to the outbox table (its indexes, DEFAULT partition, daily
 * partitions) derive from it. The others are shared by the database's one
 * outbox and keep their names whatever the table is called: the inbox, the
 * redrive log, the migration ledgers, the lock-token sequence, the audit log
 * and the health views (PostgreSQL binds views to the table, not its name,
 * so they follow an online migration's rename).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Identifier from "./Identifier.ts"

/**
 * The validated (unquoted) names; quote with `Identifier.quote` in SQL.
 *
 * @category models
 * @since 0.1.0
 */
export interface OutboxTables {
  /** The partitioned outbox table. */
  readonly outbox: string
  /** Partial index over claimable rows (`<outbox>_claimable_idx`). */
  readonly claimableIndex: string
  /** Partial index over leased rows (`<outbox>_leased_idx`). */
  readonly leasedIndex: string
  /** Partial index over dead letters (`<outbox>_dead_letter_idx`). */
  readonly deadLetterIndex: string
  /** The DEFAULT partition (`<outbox>_default`). */
  readonly defaultPartition: string
  /** Prefix of the daily partitions (`<outbox>_p`, then `YYYYMMDD`). */
  readonly partitionPrefix: string
  /**
   * The LISTEN/NOTIFY channel that wakes idle relays (`<outbox>_wakeup`):
   * one per outbox table, so that two outboxes in one database do not wake
   * each other's relays. The trigger derives it from the table's current
   * name (`TG_TABLE_NAME` + `wakeupChannelSuffix`), so it follows a rename.
   */
  readonly channel: string
  /** The wake-up trigger function and the statement trigger calling it (migration 0007). */
  readonly wakeup: string
  /**
   * The ordering trigger function and the row trigger calling it (migration
   * 0008): the default ordering key, and the id drawn under the key's lane
   * lock.
   */
  readonly orderingInsert: string
  /** Partial index of each ordering key's claimable rows, by key hash and id (`<outbox>_ordering_idx`). */
  readonly orderingIndex: string
  /** Partial index of each ordering key's dead letters (`<outbox>_ordering_dead_idx`). */
  readonly orderingDeadIndex: string
  /**
   * Partial index of the claimable rows by tenant and id (`<outbox>_tenant_idx`, migration 0009); replaced
   * by `tenantDueIndex` (migration 0012), which drops it.
   */
  readonly tenantIndex: string
  /**
   * Partial index of the claimable rows by tenant, then when each became due (`-infinity`: at once), then id
   * (`<outbox>_tenant_due_idx`, migration `0012_tenant_due_index`): the tenant-fair claim's, so that rows
   * scheduled ahead are not read past on every claim.
   */
  readonly tenantDueIndex: string
  /** Partial index of the claimable rows that have an `available_at`, by it (`<outbox>_waiting_idx`, migration 0008). */
  readonly waitingIndex: string
  /**
   * The claimable rows due at once (`available_at IS NULL`) by id (migration
   * `0010_ready_index`): the unordered claim's oldest rows, so that rows
   * scheduled ahead are not read past on every claim.
   */
  readonly readyIndex: string
  /** The consumers' idempotency store. */
  readonly inbox: string
  /** The append-only log of dead-letter redrives. */
  readonly redriveLog: string
  /** The fencing-token sequence. */
  readonly lockTokenSequence: string
  /** The outbox migrations' ledger (`effect/sql` `Migrator`). */
  readonly migrations: string
  /** The audit trail's migrations' ledger. */
  readonly auditMigrations: string
  /** The hash-chained audit log. */
  readonly auditLog: string
  /** The audit chain's head (last sealed position and hash). */
  readonly auditHead: string
  /** The audit chain's monthly checkpoints. */
  readonly auditCheckpoint: string
}

/**
 * The shared names (those not derived from the outbox table).
 *
 * @category constants
 * @since 0.1.0
 */
export const shared = {
  inbox: "outbox_inbox",
  redriveLog: "outbox_redrive_log",
  lockTokenSequence: "outbox_lock_token_seq",
  migrations: "outbox_migrations",
  auditMigrations: "outbox_audit_migrations",
  auditLog: "outbox_audit_log",
  auditHead: "outbox_audit_head",
  auditCheckpoint: "outbox_audit_checkpoint",
  wakeup: "outbox_wakeup",
  orderingInsert: "outbox_ordering_insert"
} as const

/**
 * What the wake-up channel adds to the outbox table's name (`channel`).
 *
 * @category constants
 * @since 0.1.0
 */
export const wakeupChannelSuffix = "_wakeup"

const derived = (outbox: string): OutboxTables => ({
  outbox,
  claimableIndex: `${outbox}_claimable_idx`,
  leasedIndex: `${outbox}_leased_idx`,
  deadLetterIndex: `${outbox}_dead_letter_idx`,
  orderingIndex: `${outbox}_ordering_idx`,
  orderingDeadIndex: `${outbox}_ordering_dead_idx`,
  tenantIndex: `${outbox}_tenant_idx`,
  tenantDueIndex: `${outbox}_tenant_due_idx`,
  waitingIndex: `${outbox}_waiting_idx`,
  readyIndex: `${outbox}_ready_idx`,
  defaultPartition: `${outbox}_default`,
  partitionPrefix: `${outbox}_p`,
  channel: `${outbox}${wakeupChannelSuffix}`,
  ...shared
})

/**
 * The names of the default outbox table `outbox` (no validation needed).
 *
 * @category constants
 * @since 0.1.0
 */
export const defaults: OutboxTables = derived("outbox")

/**
 * The names for the outbox table `outbox`: refuses a name that is not a plain
 * identifier, or whose derived names would pass PostgreSQL's 63-byte limit
 * (PostgreSQL would silently truncate them, and two tables' indexes could
 * then collide).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(outbox: string = "outbox") {
  if (outbox === "outbox") return defaults
  yield* Identifier.validate(outbox, "outbox table")
  const tables = derived(outbox)
  yield* Identifier.validate(tables.claimableIndex, "index name")
  yield* Identifier.validate(tables.leasedIndex, "index name")
  yield* Identifier.validate(tables.deadLetterIndex, "index name")
  yield* Identifier.validate(tables.orderingDeadIndex, "index name")
  yield* Identifier.validate(tables.readyIndex, "index name")
  yield* Identifier.validate(tables.tenantDueIndex, "index name")
  yield* Identifier.validate(`${tables.partitionPrefix}20000101`, "partition name")
  yield* Identifier.validate(tables.channel, "channel name")
  return tables
})

/**
 * The daily partition of `tables.outbox` for the UTC day `day` (`YYYYMMDD`):
 * `<outbox>_pYYYYMMDD`, the name the migrations and the partition manager
 * give it (`PartitionPolicy.suffix` is `pYYYYMMDD`).
 *
 * @category naming
 * @since 0.1.0
 */
export const dailyPartition = (tables: OutboxTables, day: string): string => `${tables.partitionPrefix}${day}`
