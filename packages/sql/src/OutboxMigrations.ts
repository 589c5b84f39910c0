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
 * @since 0.1.0
 */
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Migrator from "effect/sql/Migrator"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as AuditMigrations from "./internal/auditMigrations.ts"
import * as DeadLetters from "./DeadLetters.ts"
import * as Identifier from "./Identifier.ts"
import * as OutboxHealth from "./OutboxHealth.ts"
import * as OutboxTable from "./internal/outboxTable.ts"

/**
 * How many days ahead (after today) the first migration creates partitions for.
 *
 * @category constants
 * @since 0.1.0
 */
export const initialPremakeDays = 3

/**
 * Creates the daily partitions `<table>_pYYYYMMDD` of the partitioned outbox
 * table `table` from the UTC day of `from` to `days` days after today (Effect's
 * `Clock`), those that do not exist yet; returns how many it created. A day
 * whose rows already sit in the DEFAULT partition fails (moving them is the
 * partition manager's job).
 *
 * @category migrations
 * @since 0.1.0
 */
export const createDailyPartitions = Effect.fnUntraced(function*(
  table: string,
  options: { readonly from?: Date | undefined; readonly days: number }
) {
  const sql = yield* SqlClient.SqlClient
  const parent = Identifier.quote(yield* Identifier.validate(table, "outbox table"))
  const now = new Date(yield* Clock.currentTimeMillis)
  const last = PartitionPolicy.shift("daily", PartitionPolicy.floor("daily", now), options.days)
  let from = PartitionPolicy.floor("daily", options.from !== undefined && options.from < now ? options.from : now)
  let created = 0
  while (from <= last) {
    const range = PartitionPolicy.rangeOf("daily", from)
    const name = yield* Identifier.validate(`${table}_${PartitionPolicy.suffix(range.from)}`, "partition name")
    const [exists] = yield* sql<{ found: boolean }>`SELECT to_regclass(${Identifier.quote(name)}) IS NOT NULL AS found`
    if (exists?.found !== true) {
      yield* sql.unsafe(
        `CREATE TABLE ${Identifier.quote(name)} PARTITION OF ${parent}
         FOR VALUES FROM ('${range.from.toISOString()}') TO ('${range.to.toISOString()}')`
      )
      created++
    }
    from = range.to
  }
  return created
})

const createOutbox = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // one statement per call: the extended protocol refuses several commands in one
    const statements = [
      ...(yield* OutboxTable.statements(table)),
      `-- Creates the daily partitions [from_day, from_day + days] (UTC days) that
        -- do not exist yet. A day whose rows already sit in the DEFAULT partition
        -- is skipped with a notice (moving them is the partition manager's job).
        CREATE OR REPLACE FUNCTION outbox_ensure_daily_partitions(from_day date, days integer)
        RETURNS integer LANGUAGE plpgsql AS $fn$
        DECLARE
          d date;
          part_name text;
          lower_bound timestamptz;
          upper_bound timestamptz;
          created integer := 0;
        BEGIN
          FOR i IN 0..days LOOP
            d := from_day + i;
            part_name := 'outbox_p' || to_char(d, 'YYYYMMDD');
            lower_bound := d::timestamp AT TIME ZONE 'UTC';
            upper_bound := (d + 1)::timestamp AT TIME ZONE 'UTC';
            CONTINUE WHEN to_regclass(format('%I', part_name)) IS NOT NULL;
            IF EXISTS (SELECT 1 FROM outbox_default WHERE created_at >= lower_bound AND created_at < upper_bound) THEN
              RAISE NOTICE 'outbox: rows for % sit in outbox_default; partition % not created', d, part_name;
              CONTINUE;
            END IF;
            EXECUTE format('CREATE TABLE %I PARTITION OF outbox FOR VALUES FROM (%L) TO (%L)', part_name, lower_bound, upper_bound);
            created := created + 1;
          END LOOP;
          RETURN created;
        END
        $fn$`,
      `CREATE TABLE IF NOT EXISTS outbox_inbox (
          consumer     text        NOT NULL,
          tracking_id  text        NOT NULL,
          processed_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (consumer, tracking_id)
        )`
    ]
    for (const statement of statements) yield* sql.unsafe(statement)
    if (table === "outbox") {
      yield* sql`SELECT outbox_ensure_daily_partitions((now() AT TIME ZONE 'UTC')::date, ${initialPremakeDays})`
    } else {
      // outbox_ensure_daily_partitions knows the names of `outbox` (the table's after an online migration)
      yield* createDailyPartitions(table, { days: initialPremakeDays })
    }
  })

/**
 * Migration 0003 over another outbox table than `outbox`: its dead-letter
 * index is `<table>_dead_letter_idx` (which an online migration's `finish`
 * renames to `outbox_dead_letter_idx`), the rest is `DeadLetters.migration`'s
 * table-independent redrive log.
 */
const partitionViews = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Bounds are read back from pg_get_expr (ISO DateStyle, the default) for
  // time-ranged partitions; other leaves get NULL bounds.
  yield* sql.unsafe(`CREATE OR REPLACE VIEW outbox_partition_leaves AS
    SELECT root.oid AS parent_oid,
           root.oid::regclass::text AS parent,
           n.nspname AS schema,
           c.relname AS name,
           t.level,
           coalesce(pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', false) AS is_default,
           pg_get_expr(c.relpartbound, c.oid) AS bound,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
             'FROM \\(''(\\d{4}-\\d{2}-\\d{2}[ 0-9:.+-]*)''\\) TO'))[1]::timestamptz AS range_from,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
             'TO \\(''(\\d{4}-\\d{2}-\\d{2}[ 0-9:.+-]*)''\\)'))[1]::timestamptz AS range_to,
           c.reltuples::bigint AS estimated_rows,
           pg_total_relation_size(c.oid) AS total_bytes
    FROM pg_partitioned_table pt
    JOIN pg_class root ON root.oid = pt.partrelid AND NOT root.relispartition
    CROSS JOIN LATERAL pg_partition_tree(pt.partrelid) t
    JOIN pg_class c ON c.oid = t.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.isleaf AND t.relid <> pt.partrelid`)
  yield* sql.unsafe(`COMMENT ON VIEW outbox_partition_leaves IS
    'Every leaf partition of every partitioned table: bounds, estimated rows, total bytes (Outbox partition manager)'`)
  yield* sql.unsafe(`CREATE OR REPLACE VIEW outbox_partition_overview AS
    SELECT parent,
           count(*) FILTER (WHERE NOT is_default) AS partitions,
           bool_or(is_default) AS has_default,
           sum(total_bytes)::bigint AS total_bytes,
           min(total_bytes) AS min_bytes,
           max(total_bytes) AS max_bytes,
           avg(total_bytes)::bigint AS avg_bytes,
           sum(greatest(estimated_rows, 0))::bigint AS estimated_rows,
           min(range_from) AS oldest,
           max(range_to) AS newest
    FROM outbox_partition_leaves
    GROUP BY parent`)
})

/**
 * The migrations, by name, for the outbox table `table` (validated by the
 * migrations; the default `outbox` gives `loader`). Another name creates the
 * outbox under that name (or finds the partitioned table an online
 * migration's `prepare` created), and points the table-bound objects at it:
 * the dead-letter index (`<table>_dead_letter_idx`) and the health views.
 * PostgreSQL binds views and indexes to the table, not to its name, so they
 * follow an online migration's `finish`, which renames the table `outbox`.
 * The views, functions and tables that are not bound to the outbox table
 * keep their names (`outbox_partition_leaves`, `outbox_redrive_log`…):
 * migrations are tracked once per database (`outbox_migrations`), for one
 * outbox table.
 *
 * @category migrations
 * @since 0.1.0
 */
export const loaderFor = (table: string) =>
  table === "outbox" ? loader : Migrator.fromRecord({
    "0001_create_outbox": createOutbox(table),
    "0002_partition_views": partitionViews,
    "0003_redrive_log": DeadLetters.migrationFor(table),
    "0004_health_views": OutboxHealth.migrationFor(table),
    "0005_relay_gauges": OutboxHealth.relayGaugesMigration,
    "0006_lease_claimed_at": OutboxHealth.leaseHeldMigrationFor(table)
  })

/**
 * The migrations, by name.
 *
 * @category migrations
 * @since 0.1.0
 */
export const loader = Migrator.fromRecord({
  "0001_create_outbox": createOutbox("outbox"),
  "0002_partition_views": partitionViews,
  "0003_redrive_log": DeadLetters.migration,
  "0004_health_views": OutboxHealth.migration,
  "0005_relay_gauges": OutboxHealth.relayGaugesMigration,
  "0006_lease_claimed_at": OutboxHealth.leaseHeldMigration
})

/**
 * Runs the outbox migrations only, for the outbox table `table` (see
 * `loaderFor`; idempotent: already applied ones are skipped).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runOutboxFor = (table: string) => Migrator.make({})({ loader: loaderFor(table), table: "outbox_migrations" })

/**
 * Runs the outbox migrations only (idempotent; already applied ones are skipped).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runOutbox = runOutboxFor("outbox")

/**
 * Runs the outbox migrations, then the audit trail's (`outbox_audit_log`,
 * triggers, sealer, views; tracked in `outbox_audit_migrations`) when
 * `options.audit` is true. Once installed, the audit trail stays.
 *
 * @category migrations
 * @since 0.1.0
 */
export const runWith = (options: { readonly audit: boolean; readonly table?: string | undefined }) =>
  options.audit
    ? Effect.zipWith(runOutboxFor(options.table ?? "outbox"), AuditMigrations.run, (outbox, audit) => [...outbox, ...audit.map(([id, name]) => [id, `audit_${name}`] as const)])
    : runOutboxFor(options.table ?? "outbox")

/**
 * `ENABLE_AUDIT` (default `false`) from the environment; a value that is not
 * a boolean fails the migration with a `MigrationError` naming it.
 *
 * @category migrations
 * @since 0.1.0
 */
export const auditEnabled: Effect.Effect<boolean, Migrator.MigrationError> = Config.Boolean("ENABLE_AUDIT").pipe(
  Config.withDefault(false),
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
 * `run` for the outbox table `table` (see `loaderFor`): what the store runs
 * at start for its configured table (`OUTBOX_TABLE`).
 *
 * @category migrations
 * @since 0.1.0
 */
export const runFor = (table: string) => Effect.flatMap(auditEnabled, (audit) => runWith({ audit, table }))

/**
 * A layer that runs the migrations when built.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<never, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient> =
  Layer.effectDiscard(run)
