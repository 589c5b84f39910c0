/**
 * Health and statistics of the outbox, read from SQL views that the
 * `0004_health_views` migration creates (so `psql` users see the same numbers):
 *
 * | view / function | what it shows | cost |
 * |---|---|---|
 * | `outbox_stats` | counts by status, oldest pending age, overdue leases, the longest-held lease (`lease_held_seconds`, from `claimed_at`) | exact counts over the claimable, leased and dead-letter partial indexes (proportional to the backlog, not to the table); COMPLETED is an **estimate** (`reltuples` of the partitions minus the exact counts) |
 * | `outbox_throughput(minutes, max_rows)`, `outbox_stats_throughput` (15 min, 100 000 rows) | completed and dead-lettered per minute, from `processed_at` | **bounded**: reads only the newest `max_rows` events by id (a backward primary-key scan); `exact` is false for minutes older than that sample |
 * | `outbox_stats_dead_letters` | dead letters by event type | `outbox_dead_letter_idx` (migration 0003): proportional to the dead letters |
 * | `outbox_health_leases` | PROCESSING rows whose lease expired | the leased partial index |
 * | `outbox_health_partitions` | per range-partitioned table: contiguous horizon from now, whole partitions ahead, gaps, rows in DEFAULT (counted up to 100 000), dead tuples | catalog and `pg_stat_user_tables`, plus a capped count of each DEFAULT partition |
 * | `outbox_health_vacuum` | per partition: live and dead tuples, dead ratio, last (auto)vacuum | `pg_stat_user_tables` |
 * | `outbox_health_xmin` | who holds the xmin horizon: transactions and idle-in-transaction sessions of this database, prepared transactions, replication slots (pid, xid age, age in seconds, query start) | `pg_stat_activity`, `pg_prepared_xacts`, `pg_replication_slots` |
 *
 * Ages are measured with the database clock (`now()`), the clock the store
 * uses by default for leases.
 *
 * The views over the outbox table read the table the migrations were applied
 * for (`outbox`, or `OutboxMigrations.runFor`'s). The service reads the table
 * of its option `table` (`OUTBOX_TABLE` with `layerConfig`): through the
 * views for `outbox`, directly (by the views' own queries) for another, such
 * as the partitioned table of an online migration.
 *
 * `OutboxHealth` offers three operations: `stats` (for humans and
 * `npx outbox stats`), `health` (a level OK / WARN / CRITICAL with named
 * findings, for `npx outbox health` and probes) and `snapshot` (the gauges
 * of the metric catalog, sampled on a schedule: its counts read at most
 * `snapshotMaxRows` rows, so that its cost stops growing with the backlog,
 * where `outbox_stats` counts exactly).
 *
 * @since 0.1.0
 */
import type { StoreError } from "@outbox/core/OutboxError"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "./Identifier.ts"
import { pinnedSearchPath } from "./internal/searchPath.ts"
import { mapSqlError } from "./internal/storeError.ts"
import * as OutboxTable from "./internal/outboxTable.ts"

// ---------------------------------------------------------------------------
// migration
// ---------------------------------------------------------------------------

/** Rows counted in a DEFAULT partition at most (a full DEFAULT is a problem whatever its size). */
const defaultRowsCap = 100_000

/**
 * The body of `outbox_stats` over the (quoted) table `t`. Its last column,
 * `lease_held_seconds`, came with migration 0006 (`claimed_at`):
 * `CREATE OR REPLACE VIEW` may only append columns.
 */
const statsSelect = (t: string) =>
  `WITH backlog AS (
     SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
            count(*) FILTER (WHERE status = 'FAILED') AS failed,
            min(created_at) AS oldest_pending_at
     FROM ${t} WHERE status IN ('PENDING', 'FAILED')
   ), leased AS (
     SELECT count(*) AS processing,
            count(*) FILTER (WHERE locked_until < now()) AS lease_overdue,
            min(locked_until) FILTER (WHERE locked_until < now()) AS oldest_overdue_until,
            min(claimed_at) AS oldest_claimed_at
     FROM ${t} WHERE status = 'PROCESSING'
   ), dead AS (
     SELECT count(*) AS dead_letter FROM ${t} WHERE status = 'DEAD_LETTER'
   ), estimate AS (
     SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS estimated_rows
     FROM pg_partition_tree('${t}'::regclass) t JOIN pg_class c ON c.oid = t.relid
     WHERE t.isleaf
   )
   SELECT now() AS at,
          b.pending, b.failed, l.processing, d.dead_letter,
          greatest(e.estimated_rows - b.pending - b.failed - l.processing - d.dead_letter, 0) AS completed_estimate,
          e.estimated_rows,
          b.oldest_pending_at,
          coalesce(extract(epoch FROM now() - b.oldest_pending_at), 0)::float8 AS oldest_pending_age_seconds,
          l.lease_overdue,
          coalesce(extract(epoch FROM now() - l.oldest_overdue_until), 0)::float8 AS lease_overdue_seconds,
          greatest(coalesce(extract(epoch FROM now() - l.oldest_claimed_at), 0), 0)::float8 AS lease_held_seconds
   FROM backlog b, leased l, dead d, estimate e`

/** `outbox_stats` over the (quoted) table `t`. */
const statsView = (t: string) => `CREATE OR REPLACE VIEW outbox_stats AS
   ${statsSelect(t)}`

const statsComment = `COMMENT ON VIEW outbox_stats IS
   'Outbox counts by status (exact over the partial indexes; completed_estimate from reltuples), oldest pending age, overdue and longest-held leases'`

/**
 * The body of `outbox_throughput` over the (quoted) table `t`, with the
 * window and the sample size as the SQL expressions `minutes` and `maxRows`
 * (the function's parameters, or statement parameters).
 */
const throughputSelect = (t: string, minutes: string, maxRows: string) =>
  `WITH newest AS (
       SELECT o.status, o.created_at, o.processed_at FROM ${t} o ORDER BY o.id DESC LIMIT greatest(${maxRows}, 1)
     ), reach AS (
       SELECT CASE WHEN count(*) < greatest(${maxRows}, 1) THEN '-infinity'::timestamptz ELSE min(created_at) END AS since
       FROM newest
     ), recent AS (
       SELECT date_trunc('minute', n.processed_at) AS minute,
              count(*) FILTER (WHERE n.status = 'COMPLETED') AS completed,
              count(*) FILTER (WHERE n.status = 'DEAD_LETTER') AS dead_lettered
       FROM newest n
       WHERE n.processed_at >= date_trunc('minute', now()) - make_interval(mins => greatest(${minutes}, 1) - 1)
         AND n.status IN ('COMPLETED', 'DEAD_LETTER')
       GROUP BY 1
     )
     SELECT m.minute, coalesce(r.completed, 0) AS completed, coalesce(r.dead_lettered, 0) AS dead_lettered,
            m.minute >= (SELECT since FROM reach) AS exact
     FROM generate_series(date_trunc('minute', now()) - make_interval(mins => greatest(${minutes}, 1) - 1),
                          date_trunc('minute', now()), interval '1 minute') AS m(minute)
     LEFT JOIN recent r ON r.minute = m.minute
     ORDER BY m.minute`

/** The body of `outbox_stats_dead_letters` over the (quoted) table `t`. */
const deadLettersSelect = (t: string) =>
  `SELECT event_type, count(*) AS dead_letters, max(processed_at) AS last_dead_lettered_at
   FROM ${t} WHERE status = 'DEAD_LETTER'
   GROUP BY event_type`

/** The body of `outbox_health_leases` over the (quoted) table `t`. */
const leasesSelect = (t: string) =>
  `SELECT id, tracking_id, event_type, lock_token, locked_until, retry_count,
          extract(epoch FROM now() - locked_until)::float8 AS overdue_seconds
   FROM ${t}
   WHERE status = 'PROCESSING' AND locked_until < now()`

/** The statements of migration 0004 over the (quoted) outbox table `t`. */
const viewStatements = (t: string): ReadonlyArray<string> => [
  // the column `statsView` reads (migration 0006; also run here, for a database that skips from before it)
  OutboxTable.claimedAtColumn(t),
  `CREATE OR REPLACE FUNCTION outbox_count_rows(rel regclass, cap bigint)
   RETURNS bigint LANGUAGE plpgsql STABLE AS $fn$
   DECLARE n bigint;
   BEGIN
     EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %s) s', rel, greatest(cap, 0)) INTO n;
     RETURN n;
   END
   $fn$`,
  `COMMENT ON FUNCTION outbox_count_rows(regclass, bigint) IS 'Rows of a table, counted up to cap (outbox health)'`,
  statsView(t),
  statsComment,
  `CREATE OR REPLACE FUNCTION outbox_throughput(minutes integer, max_rows bigint)
   RETURNS TABLE (minute timestamptz, completed bigint, dead_lettered bigint, exact boolean)
   LANGUAGE sql STABLE AS $fn$
     ${throughputSelect(t, "minutes", "max_rows")}
   $fn$`,
  `COMMENT ON FUNCTION outbox_throughput(integer, bigint) IS
   'Completed and dead-lettered events per minute over the last minutes, among the newest max_rows events (bounded)'`,
  `CREATE OR REPLACE VIEW outbox_stats_throughput AS SELECT * FROM outbox_throughput(15, 100000)`,
  `CREATE OR REPLACE VIEW outbox_stats_dead_letters AS
   ${deadLettersSelect(t)}`,
  `CREATE OR REPLACE VIEW outbox_health_leases AS
   ${leasesSelect(t)}`,
  `COMMENT ON VIEW outbox_health_leases IS 'PROCESSING events whose lease expired (the reaper has not requeued them yet)'`,
  `CREATE OR REPLACE VIEW outbox_health_vacuum AS
   SELECT l.parent, l.name AS partition, l.is_default,
          s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
          CASE WHEN s.n_live_tup + s.n_dead_tup = 0 THEN 0
               ELSE s.n_dead_tup::float8 / (s.n_live_tup + s.n_dead_tup) END AS dead_ratio,
          s.last_autovacuum, s.last_vacuum, s.last_autoanalyze, s.autovacuum_count
   FROM outbox_partition_leaves l
   JOIN pg_stat_user_tables s ON s.schemaname = l.schema AND s.relname = l.name`,
  `COMMENT ON VIEW outbox_health_vacuum IS 'Live and dead tuples and last (auto)vacuum of every partition'`,
  `CREATE OR REPLACE VIEW outbox_health_partitions AS
   WITH roots AS (
     SELECT DISTINCT l.parent_oid, l.parent
     FROM outbox_partition_leaves l
     JOIN pg_partitioned_table pt ON pt.partrelid = l.parent_oid AND pt.partstrat = 'r'
     WHERE l.level = 1
   ), ranged AS (
     SELECT l.parent_oid, l.range_from, l.range_to,
            lag(l.range_to) OVER (PARTITION BY l.parent_oid ORDER BY l.range_from) AS previous_to
     FROM outbox_partition_leaves l JOIN roots r ON r.parent_oid = l.parent_oid
     WHERE l.level = 1 AND NOT l.is_default AND l.range_from IS NOT NULL AND l.range_to IS NOT NULL
   ), islands AS (
     SELECT *, sum(CASE WHEN previous_to = range_from THEN 0 ELSE 1 END)
                 OVER (PARTITION BY parent_oid ORDER BY range_from) AS island
     FROM ranged
   ), current_island AS (
     SELECT parent_oid, island, range_to AS current_to
     FROM islands WHERE range_from <= now() AND now() < range_to
   ), coverage AS (
     SELECT c.parent_oid, max(i.range_to) AS horizon,
            count(*) FILTER (WHERE i.range_from >= c.current_to) AS ahead
     FROM current_island c JOIN islands i ON i.parent_oid = c.parent_oid AND i.island = c.island
     GROUP BY c.parent_oid
   ), shape AS (
     SELECT parent_oid, count(*) AS partitions, max(range_to) AS newest, max(island) AS islands
     FROM islands GROUP BY parent_oid
   ), defaults AS (
     SELECT l.parent_oid, l.name,
            outbox_count_rows(format('%I.%I', l.schema, l.name)::regclass, ${defaultRowsCap}) AS row_count
     FROM outbox_partition_leaves l JOIN roots r ON r.parent_oid = l.parent_oid
     WHERE l.level = 1 AND l.is_default
   ), vacuum AS (
     SELECT l.parent_oid, sum(s.n_dead_tup)::bigint AS dead_tuples, sum(s.n_live_tup)::bigint AS live_tuples
     FROM outbox_partition_leaves l
     JOIN roots r ON r.parent_oid = l.parent_oid
     JOIN pg_stat_user_tables s ON s.schemaname = l.schema AND s.relname = l.name
     GROUP BY l.parent_oid
   )
   SELECT r.parent AS table_name,
          coalesce(sh.partitions, 0) AS partitions,
          coalesce(c.ahead, 0) AS ahead,
          c.horizon,
          coalesce(greatest(extract(epoch FROM c.horizon - now()), 0), 0)::float8 AS horizon_seconds,
          sh.newest,
          coalesce(sh.islands > 1, false) AS has_gap,
          d.name AS default_partition,
          coalesce(d.row_count, 0) AS default_rows,
          coalesce(v.dead_tuples, 0) AS dead_tuples,
          coalesce(v.live_tuples, 0) AS live_tuples
   FROM roots r
   LEFT JOIN coverage c ON c.parent_oid = r.parent_oid
   LEFT JOIN shape sh ON sh.parent_oid = r.parent_oid
   LEFT JOIN defaults d ON d.parent_oid = r.parent_oid
   LEFT JOIN vacuum v ON v.parent_oid = r.parent_oid`,
  `COMMENT ON VIEW outbox_health_partitions IS
   'Per range-partitioned table: contiguous horizon from now, whole partitions ahead, gaps, rows in DEFAULT (capped), dead tuples'`,
  `CREATE OR REPLACE VIEW outbox_health_xmin AS
   SELECT CASE WHEN a.state LIKE 'idle in transaction%' THEN 'idle_in_transaction' ELSE 'transaction' END AS kind,
          a.pid, coalesce(a.usename::text, a.backend_type) AS name, a.datname::text AS database, a.application_name,
          a.client_addr::text AS client_addr, a.state,
          greatest(age(a.backend_xid), age(a.backend_xmin)) AS xid_age,
          extract(epoch FROM now() - a.xact_start)::float8 AS age_seconds,
          a.xact_start, a.query_start, a.state_change,
          NULL::numeric AS retained_wal_bytes,
          left(a.query, 500) AS detail
   FROM pg_stat_activity a
   WHERE a.pid <> pg_backend_pid()
     AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
     AND a.backend_type <> 'autovacuum worker'
     AND (a.datname = current_database() OR a.backend_type = 'walsender')
   UNION ALL
   SELECT 'prepared_transaction', NULL, p.gid, p.database::text, NULL, NULL, 'prepared',
          age(p.transaction), extract(epoch FROM now() - p.prepared)::float8,
          p.prepared, NULL, NULL, NULL, 'owner ' || p.owner
   FROM pg_prepared_xacts p
   WHERE p.database = current_database()
   UNION ALL
   SELECT 'replication_slot', s.active_pid, s.slot_name::text, s.database::text, r.application_name, r.client_addr::text,
          CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
          greatest(age(s.xmin), age(s.catalog_xmin)),
          extract(epoch FROM r.replay_lag)::float8,
          NULL, a.query_start, a.state_change,
          CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn) END,
          s.slot_type || coalesce(' (' || s.plugin || ')', '')
   FROM pg_replication_slots s
   LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
   LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
   WHERE s.database IS NULL OR s.database = current_database()`,
  `COMMENT ON VIEW outbox_health_xmin IS
   'Who holds the xmin horizon for this database: transactions, idle-in-transaction sessions, prepared transactions, replication slots'`
]

const viewsOn = (t: string): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // one statement per call: the extended protocol refuses several commands in one
    for (const statement of viewStatements(t)) yield* sql.unsafe(statement)
  })

const leaseHeldOn = (t: string): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(OutboxTable.claimedAtColumn(t))
    yield* sql.unsafe(OutboxTable.claimedAtComment(t))
    yield* sql.unsafe(statsView(t))
    yield* sql.unsafe(statsComment)
  })

/** `table` validated and quoted. */
const quotedTable = (table: string) => Effect.map(Identifier.validate(table, "outbox table"), Identifier.quote)

/**
 * The `0004_health_views` migration: the views and functions above, over
 * the table `outbox`. Applied by `OutboxMigrations` (after
 * `0003_redrive_log`, whose `outbox_dead_letter_idx` keeps the dead-letter
 * counts cheap).
 *
 * **Gotcha**: PostgreSQL binds a view to the table, not to its name. The
 * statements are `CREATE OR REPLACE`, so running this effect again (it is
 * idempotent) re-points the views after a step that swaps the `outbox`
 * table by renaming; run `relayGaugesMigration` after it, which makes
 * `outbox_count_rows` `SECURITY DEFINER` again.
 *
 * @see migrationFor for another outbox table
 * @category migrations
 * @since 0.1.0
 */
export const migration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = viewsOn("outbox")

/**
 * `migration` over the outbox table `table` (the views `outbox_stats`,
 * `outbox_stats_dead_letters`, `outbox_health_leases` and the function
 * `outbox_throughput` read it; the others are table-independent). Used by
 * `OutboxMigrations.runFor` and the online migration, whose partitioned
 * table carries these views through its renaming to the legacy name.
 *
 * @category migrations
 * @since 0.1.0
 */
export const migrationFor = (
  table: string
): Effect.Effect<void, SqlError.SqlError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.flatMap(quotedTable(table), viewsOn)

/**
 * Migration 0006: `claimed_at` on the outbox (stamped by each claim, kept
 * through heartbeats) and `outbox_stats.lease_held_seconds` over it.
 *
 * @category migrations
 * @since 0.1.0
 */
export const leaseHeldMigration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = leaseHeldOn("outbox")

/**
 * `leaseHeldMigration` over the outbox table `table`.
 *
 * @category migrations
 * @since 0.1.0
 */
export const leaseHeldMigrationFor = (
  table: string
): Effect.Effect<void, SqlError.SqlError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.flatMap(quotedTable(table), leaseHeldOn)

/** Statements of `relayGaugesMigration`, with `SET search_path` pinned for the SECURITY DEFINER functions. */
const relayGaugeStatements = (pinned: string): ReadonlyArray<string> => [
  // Runs as the owner: a least-privilege relay has SELECT on the outbox (the parent), not on its
  // partitions, and `outbox_health_partitions` counts the DEFAULT partitions directly. It counts only
  // for a login that may read the partition's root (or the table itself): nothing it could not count
  // through the parent anyway. NULL (shown as 0 rows by the view) for anyone else.
  `CREATE OR REPLACE FUNCTION outbox_count_rows(rel regclass, cap bigint)
   RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER ${pinned} AS $fn$
   DECLARE n bigint;
   BEGIN
     IF NOT has_table_privilege(session_user, coalesce(pg_partition_root(rel), rel), 'SELECT') THEN
       RETURN NULL;
     END IF;
     EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %s) s', rel, greatest(cap, 0)) INTO n;
     RETURN n;
   END
   $fn$`,
  `COMMENT ON FUNCTION outbox_count_rows(regclass, bigint) IS
   'Rows of a table, counted up to cap, for a login that may read it or its partition root (outbox health)'`,
  `CREATE TABLE IF NOT EXISTS outbox_redrive_metered (
     log_id     bigint      PRIMARY KEY,
     metered_at timestamptz NOT NULL DEFAULT now()
   )`,
  `COMMENT ON TABLE outbox_redrive_metered IS
   'Redrive-log rows (outbox_redrive_log.id) already counted in some relay''s outbox_events_redriven_total'`,
  // counting starts now: the redrives made before this migration are not a burst on the first sample
  `INSERT INTO outbox_redrive_metered (log_id) SELECT id FROM outbox_redrive_log ON CONFLICT DO NOTHING`,
  // Each redrive batch is counted by exactly one caller: the first INSERT of its id wins, a concurrent
  // one waits for it and then does nothing. Redrives older than a day are never counted (no burst
  // after a long pause), so ids metered more than two days ago can go.
  `CREATE OR REPLACE FUNCTION outbox_meter_redrives() RETURNS bigint
   LANGUAGE plpgsql VOLATILE SECURITY DEFINER ${pinned} AS $fn$
   DECLARE n bigint;
   BEGIN
     DELETE FROM outbox_redrive_metered WHERE metered_at < now() - interval '2 days';
     WITH claimed AS (
       INSERT INTO outbox_redrive_metered (log_id)
       SELECT l.id FROM outbox_redrive_log l
       WHERE l.at > now() - interval '1 day'
         AND NOT EXISTS (SELECT 1 FROM outbox_redrive_metered m WHERE m.log_id = l.id)
       ON CONFLICT (log_id) DO NOTHING
       RETURNING log_id
     )
     SELECT coalesce(sum(l.event_count), 0) INTO n
     FROM claimed c JOIN outbox_redrive_log l ON l.id = c.log_id;
     RETURN n;
   END
   $fn$`,
  `COMMENT ON FUNCTION outbox_meter_redrives() IS
   'Events redriven since any caller last asked, each redrive batch counted once (the relays'' redriven counter)'`,
  `REVOKE ALL ON FUNCTION outbox_meter_redrives() FROM PUBLIC`,
  `REVOKE ALL ON TABLE outbox_redrive_metered FROM PUBLIC`
]

/**
 * The `0005_relay_gauges` migration: what a least-privilege relay needs for
 * its gauges and counters.
 *
 * - `outbox_count_rows` becomes `SECURITY DEFINER` (pinned search path), so
 *   a relay role reads `outbox_health_partitions` (rows in DEFAULT) with
 *   SELECT on the outbox only; it still counts nothing its caller could not
 *   read through the partition root.
 * - `outbox_meter_redrives()` (EXECUTE for the relay role, through
 *   `OutboxRoles`) claims the redrive-log batches no relay has counted yet
 *   and returns their events: redrives run in other processes (the CLI), so
 *   the relays count them, each batch once across all of them
 *   (`OutboxHealth.claimRedriven`).
 *
 * Idempotent.
 *
 * @category migrations
 * @since 0.1.0
 */
export const relayGaugesMigration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const { pinned } = yield* pinnedSearchPath
  for (const statement of relayGaugeStatements(pinned)) yield* sql.unsafe(statement)
})

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * A health level. The CLI exits with 0, 1 or 2.
 *
 * @category models
 * @since 0.1.0
 */
export type Level = "OK" | "WARN" | "CRITICAL"

/**
 * The gauges of the metric catalog, sampled from the database. Every age is
 * 0 when nothing is waiting, leased past its expiry or holding the horizon.
 *
 * @category models
 * @since 0.1.0
 */
export interface Snapshot {
  /** PENDING + FAILED, counted up to `snapshotMaxRows` (default 100 000). */
  readonly pending: number
  readonly processing: number
  readonly oldestPendingAgeSeconds: number
  /** `max(now - locked_until)` over PROCESSING rows whose lease expired. */
  readonly leaseOverdueSeconds: number
  /**
   * `max(now - claimed_at)` over PROCESSING rows: how long the longest-held
   * lease has been held since its claim. Heartbeats renew a lease but do not
   * move `claimed_at`, so a handler that never finishes shows here (and
   * nowhere else: its lease never expires).
   */
  readonly leaseHeldSeconds: number
  /** DEAD_LETTER, counted up to `snapshotMaxRows`. */
  readonly deadLetters: number
  readonly partitions: ReadonlyArray<{
    readonly table: string
    /** Whole partitions after the current one, without a gap. */
    readonly ahead: number
    /** Counted up to 100 000. */
    readonly defaultRows: number
    /** Sum of `n_dead_tup` over the table's partitions. */
    readonly deadTuples: number
  }>
  /**
   * Age of the oldest transaction (or prepared transaction, or replication
   * slot's replay lag) holding the xmin horizon of this database. An
   * inactive slot has no age in seconds (see `health` for its xid age and
   * retained WAL).
   */
  readonly xminHorizonAgeSeconds: number
}

/**
 * `stats`: counts by status, oldest pending age, throughput, dead letters.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly at: Date
  readonly counts: {
    readonly pending: number
    readonly failed: number
    readonly processing: number
    readonly deadLetter: number
    /** An estimate: `reltuples` of the partitions minus the exact counts (run ANALYZE for a fresh one). */
    readonly completedEstimate: number
  }
  readonly oldestPendingAgeSeconds: number
  readonly leaseOverdue: number
  readonly leaseOverdueSeconds: number
  /** How long the longest-held lease has been held since its claim (see `Snapshot`). */
  readonly leaseHeldSeconds: number
  readonly throughput: {
    readonly minutes: number
    /** How many of the newest events were read (a bound, not a count). */
    readonly maxRows: number
    /** Completed per minute, averaged over the whole minutes of the window (the current minute excluded). */
    readonly completedPerMinute: number
    readonly perMinute: ReadonlyArray<{
      readonly minute: Date
      readonly completed: number
      readonly deadLettered: number
      /** false when the newest `maxRows` events do not reach back to this minute: the counts are a lower bound. */
      readonly exact: boolean
    }>
  }
  readonly deadLettersByEventType: ReadonlyArray<{
    readonly eventType: string
    readonly count: number
    readonly lastAt: Date | null
  }>
}

/**
 * The names of the findings `health` can report.
 *
 * @category models
 * @since 0.1.0
 */
export type FindingName =
  | "StuckLease"
  | "LongHeldLease"
  | "BacklogAge"
  | "DeadLetters"
  | "PartitionHorizon"
  | "PartitionsAhead"
  | "RowsInDefault"
  | "DeadTuples"
  | "LongTransaction"
  | "IdleInTransaction"
  | "PreparedTransaction"
  | "ReplicationSlot"

/**
 * One problem, with the value measured and the threshold it crossed.
 *
 * @category models
 * @since 0.1.0
 */
export interface Finding {
  readonly name: FindingName
  readonly level: "WARN" | "CRITICAL"
  /** What the finding is about: a table, a partition, a pid, a slot. */
  readonly subject: string
  readonly value: number
  readonly threshold: number
  readonly message: string
}

/**
 * A holder of the xmin horizon (`outbox_health_xmin`).
 *
 * @category models
 * @since 0.1.0
 */
export interface XminHolder {
  readonly kind: "transaction" | "idle_in_transaction" | "prepared_transaction" | "replication_slot"
  /** The backend (for a slot: the active walsender), `null` for prepared transactions and inactive slots. */
  readonly pid: number | null
  /** User, prepared transaction gid or slot name. */
  readonly name: string
  readonly applicationName: string | null
  readonly clientAddr: string | null
  readonly state: string | null
  /** Age in transactions (`age(xid)`). */
  readonly xidAge: number | null
  /** Transaction age (now - xact_start), prepared age, or a slot's replay lag; `null` when unknown. */
  readonly ageSeconds: number | null
  readonly transactionStart: Date | null
  readonly queryStart: Date | null
  readonly stateChange: Date | null
  /** Replication slots: WAL kept back by the slot. */
  readonly retainedWalBytes: number | null
  /** The query (transactions), the owner (prepared) or the slot type. */
  readonly detail: string | null
}

/**
 * Partition health of one range-partitioned table (`outbox_health_partitions`).
 *
 * @category models
 * @since 0.1.0
 */
export interface PartitionHealth {
  readonly table: string
  readonly partitions: number
  readonly ahead: number
  /** End of the contiguous partitions from now; `null` when no partition covers now. */
  readonly horizon: Date | null
  readonly horizonSeconds: number
  readonly newest: Date | null
  readonly hasGap: boolean
  readonly defaultPartition: string | null
  readonly defaultRows: number
  readonly deadTuples: number
  readonly liveTuples: number
}

/**
 * Vacuum state of one partition (`outbox_health_vacuum`).
 *
 * @category models
 * @since 0.1.0
 */
export interface PartitionVacuum {
  readonly table: string
  readonly partition: string
  readonly liveTuples: number
  readonly deadTuples: number
  readonly deadRatio: number
  readonly lastAutovacuum: Date | null
  readonly lastVacuum: Date | null
}

/**
 * A lease past its expiry (`outbox_health_leases`).
 *
 * @category models
 * @since 0.1.0
 */
export interface StuckLease {
  readonly id: string
  readonly trackingId: string
  readonly eventType: string
  readonly lockedUntil: Date
  readonly overdueSeconds: number
}

/**
 * What `health` returns. `level` is the worst level of the findings.
 *
 * @category models
 * @since 0.1.0
 */
export interface HealthReport {
  readonly level: Level
  readonly at: Date
  readonly findings: ReadonlyArray<Finding>
  readonly thresholds: Thresholds
  readonly backlog: {
    readonly pending: number
    readonly processing: number
    readonly oldestPendingAgeSeconds: number
    readonly deadLetters: number
  }
  readonly leases: {
    readonly overdue: number
    readonly overdueSeconds: number
    /** How long the longest-held lease has been held since its claim (see `Snapshot`). */
    readonly heldSeconds: number
    /** The longest overdue, at most 20. */
    readonly stuck: ReadonlyArray<StuckLease>
  }
  readonly partitions: ReadonlyArray<PartitionHealth>
  readonly vacuum: ReadonlyArray<PartitionVacuum>
  readonly xminHorizon: {
    readonly ageSeconds: number
    /** The holder with the largest xid age, or `null`. */
    readonly oldest: XminHolder | null
    readonly holders: ReadonlyArray<XminHolder>
  }
}

/**
 * A WARN and a CRITICAL bound; a value at or over a bound reaches its level.
 * An absent bound never fires.
 *
 * @category models
 * @since 0.1.0
 */
export interface Band {
  readonly warn?: number | undefined
  readonly critical?: number | undefined
}

/**
 * The thresholds of `health`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Thresholds {
  /** Seconds a lease is past its expiry (the reaper should have requeued it). */
  readonly leaseOverdueSeconds: Band
  /** Seconds a lease has been held since its claim, heartbeats included (a handler that does not finish). */
  readonly leaseHeldSeconds: Band
  readonly oldestPendingAgeSeconds: Band
  readonly deadLetters: Band
  /** CRITICAL when the contiguous partitions end sooner than this many seconds from now (or nothing covers now). */
  readonly partitionHorizonCriticalSeconds: number
  /** WARN when fewer whole partitions than this follow the current one. */
  readonly partitionsAheadWarn: number
  readonly rowsInDefault: Band
  /** Ratio dead / (live + dead) of one partition, once it has at least `minDeadTuples` dead tuples. */
  readonly deadTupleRatio: Band
  readonly minDeadTuples: number
  /** A transaction (running a query) holding the xmin horizon for this many seconds. */
  readonly transactionAgeSeconds: Band
  /** An idle-in-transaction session holding the xmin horizon for this many seconds. */
  readonly idleInTransactionSeconds: Band
  readonly preparedTransactionAgeSeconds: Band
  /** WAL kept back by a replication slot. An inactive slot is at least WARN. */
  readonly replicationSlotRetainedBytes: Band
}

/**
 * The default thresholds.
 *
 * `partitionsAheadWarn` is 2 for the default premake of 3 daily partitions:
 * between midnight and the next maintenance run, premake − 1 whole partitions
 * are ahead, which is not worth a warning.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultThresholds: Thresholds = {
  leaseOverdueSeconds: { warn: 60, critical: 300 },
  leaseHeldSeconds: { warn: 900, critical: 3600 },
  oldestPendingAgeSeconds: { warn: 300, critical: 1800 },
  deadLetters: { warn: 1 },
  partitionHorizonCriticalSeconds: 86_400,
  partitionsAheadWarn: 2,
  rowsInDefault: { warn: 1 },
  deadTupleRatio: { warn: 0.2, critical: 0.5 },
  minDeadTuples: 10_000,
  transactionAgeSeconds: { warn: 300, critical: 1800 },
  idleInTransactionSeconds: { warn: 60, critical: 600 },
  preparedTransactionAgeSeconds: { warn: 300, critical: 1800 },
  replicationSlotRetainedBytes: { warn: 1024 ** 3, critical: 10 * 1024 ** 3 }
}

/**
 * Options of `make` and `layer`; every field has a default.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /**
   * The outbox table (default `outbox`; `OUTBOX_TABLE` with `layerConfig`):
   * the gauges, counts, throughput, dead letters and stuck leases are read
   * from it. For `outbox` they are read through the views of the migrations
   * (`outbox_stats`…); for another table (during an online migration, or
   * a process configured with the partitioned table's name) the same
   * queries read that table directly.
   */
  readonly table?: string | undefined
  /** Range-partitioned tables to report on (default `[table]`), as `regclass` text. */
  readonly tables?: ReadonlyArray<string> | undefined
  /** Throughput window of `stats` in minutes (default 15, at most 1440). */
  readonly throughputMinutes?: number | undefined
  /** How many of the newest events `stats` reads for throughput (default 100 000). */
  readonly throughputMaxRows?: number | undefined
  /**
   * How many backlog rows, and how many dead letters, `snapshot` reads at
   * most (default 100 000), so that sampling the gauges stays cheap however
   * large the backlog grows: past it, the counts stop at this number and the
   * oldest pending age is that of the oldest of the first rows by id.
   * (`stats` and `health` count exactly.)
   */
  readonly snapshotMaxRows?: number | undefined
  /** Overrides of `defaultThresholds`. */
  readonly thresholds?: { readonly [K in keyof Thresholds]?: Thresholds[K] | undefined } | undefined
}

/**
 * Options that cannot work (a negative window, a NaN threshold, no table).
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidHealthOptions extends Schema.TaggedError<InvalidHealthOptions>("@outbox/sql/InvalidHealthOptions")(
  "InvalidHealthOptions",
  { option: Schema.String, message: Schema.String }
) {}

/**
 * Health and statistics of the outbox.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxHealth extends Context.Service<OutboxHealth, {
  /** Counts by status, oldest pending age, throughput, dead letters by event type. */
  readonly stats: Effect.Effect<Stats, StoreError>
  /** A level with named findings, and the details behind them. */
  readonly health: Effect.Effect<HealthReport, StoreError>
  /** The gauges of the metric catalog (cheap: meant to run every few seconds). */
  readonly snapshot: Effect.Effect<Snapshot, StoreError>
  /**
   * Events redriven (dead letters sent back to PENDING, by any process)
   * that no caller has counted yet; claims them, so each redrive batch is
   * counted by exactly one caller (`outbox_meter_redrives()`, migration
   * `0005_relay_gauges`). The relays' gauge samplers add it to
   * `outbox_events_redriven_total`, so the sum over relays is the cluster's
   * total. Redrives older than a day are never counted. The claim commits
   * with the statement: a reply lost after that (a dropped connection)
   * loses those counts, never an event.
   */
  readonly claimRedriven: Effect.Effect<number, StoreError>
}>()("@outbox/sql/OutboxHealth") {}

// ---------------------------------------------------------------------------
// evaluation (pure)
// ---------------------------------------------------------------------------

/**
 * What `evaluate` looks at: the measurements behind a `HealthReport`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Measurements {
  readonly tables: ReadonlyArray<string>
  readonly backlog: HealthReport["backlog"]
  readonly leases: HealthReport["leases"]
  readonly partitions: ReadonlyArray<PartitionHealth>
  readonly vacuum: ReadonlyArray<PartitionVacuum>
  readonly holders: ReadonlyArray<XminHolder>
}

const levelOf = (band: Band, value: number): { level: "WARN" | "CRITICAL"; threshold: number } | undefined => {
  if (band.critical !== undefined && value >= band.critical) return { level: "CRITICAL", threshold: band.critical }
  if (band.warn !== undefined && value >= band.warn) return { level: "WARN", threshold: band.warn }
  return undefined
}

const seconds = (s: number) => (s >= 120 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`)

/**
 * The findings for some measurements (pure).
 *
 * @category evaluation
 * @since 0.1.0
 */
export const evaluate = (m: Measurements, t: Thresholds): ReadonlyArray<Finding> => {
  const findings: Array<Finding> = []
  const check = (name: FindingName, subject: string, band: Band, value: number, message: (v: number) => string) => {
    const hit = levelOf(band, value)
    if (hit !== undefined) findings.push({ name, level: hit.level, subject, value, threshold: hit.threshold, message: message(value) })
  }
  if (m.leases.overdue > 0) {
    check("StuckLease", "outbox", t.leaseOverdueSeconds, m.leases.overdueSeconds, (v) =>
      `${m.leases.overdue} PROCESSING event(s) past their lease, the oldest by ${seconds(v)} (is the reaper running?)`)
  }
  check("LongHeldLease", "outbox", t.leaseHeldSeconds, m.leases.heldSeconds, (v) =>
    `a PROCESSING event has been held for ${seconds(v)} since its claim (a handler that does not finish, its lease kept alive by the heartbeat?)`)
  check("BacklogAge", "outbox", t.oldestPendingAgeSeconds, m.backlog.oldestPendingAgeSeconds, (v) =>
    `the oldest of ${m.backlog.pending} pending event(s) waits for ${seconds(v)}`)
  check("DeadLetters", "outbox", t.deadLetters, m.backlog.deadLetters, (v) => `${v} dead-lettered event(s)`)
  for (const table of m.tables) {
    const p = m.partitions.find((x) => x.table === table)
    if (p === undefined) {
      findings.push({
        name: "PartitionHorizon",
        level: "CRITICAL",
        subject: table,
        value: 0,
        threshold: t.partitionHorizonCriticalSeconds,
        message: `${table} is not a range-partitioned table with partitions`
      })
      continue
    }
    if (p.horizonSeconds < t.partitionHorizonCriticalSeconds) {
      findings.push({
        name: "PartitionHorizon",
        level: "CRITICAL",
        subject: table,
        value: p.horizonSeconds,
        threshold: t.partitionHorizonCriticalSeconds,
        message: p.horizon === null
          ? `no partition of ${table} covers now: inserts go to ${p.defaultPartition ?? "nowhere (no DEFAULT)"}`
          : `the partitions of ${table} end at ${p.horizon.toISOString()}, in ${seconds(p.horizonSeconds)}${
            p.hasGap ? " (a gap follows)" : ""
          }; run partition maintenance`
      })
    } else if (p.ahead < t.partitionsAheadWarn) {
      findings.push({
        name: "PartitionsAhead",
        level: "WARN",
        subject: table,
        value: p.ahead,
        threshold: t.partitionsAheadWarn,
        message: `${p.ahead} whole partition(s) of ${table} ahead of the current one; maintenance is behind`
      })
    }
    check("RowsInDefault", table, t.rowsInDefault, p.defaultRows, (v) =>
      `${v}${v >= defaultRowsCap ? "+" : ""} row(s) in ${p.defaultPartition}; maintenance moves them into partitions`)
  }
  for (const v of m.vacuum) {
    if (v.deadTuples < t.minDeadTuples) continue
    const last = v.lastAutovacuum ?? v.lastVacuum
    check("DeadTuples", v.partition, t.deadTupleRatio, v.deadRatio, (r) =>
      `${v.deadTuples} dead tuples (${Math.round(r * 100)}%) in ${v.partition}; last vacuum ${
        last === null ? "never" : last.toISOString()
      }`)
  }
  for (const h of m.holders) {
    const who = h.pid === null ? h.name : `pid ${h.pid}`
    switch (h.kind) {
      case "transaction":
        check("LongTransaction", who, t.transactionAgeSeconds, h.ageSeconds ?? 0, (v) =>
          `${who} (${h.name}${h.applicationName ? `, ${h.applicationName}` : ""}) holds the xmin horizon with a ${
            seconds(v)
          } transaction: ${h.detail ?? ""}`)
        break
      case "idle_in_transaction":
        check("IdleInTransaction", who, t.idleInTransactionSeconds, h.ageSeconds ?? 0, (v) =>
          `${who} (${h.name}${h.applicationName ? `, ${h.applicationName}` : ""}) is idle in a ${
            seconds(v)
          } transaction and holds the xmin horizon; last query: ${h.detail ?? ""}`)
        break
      case "prepared_transaction":
        check("PreparedTransaction", h.name, t.preparedTransactionAgeSeconds, h.ageSeconds ?? 0, (v) =>
          `prepared transaction ${h.name} is ${seconds(v)} old and holds the xmin horizon (COMMIT or ROLLBACK PREPARED it)`)
        break
      case "replication_slot": {
        const retained = h.retainedWalBytes ?? 0
        const hit = levelOf(t.replicationSlotRetainedBytes, retained)
        const inactive = h.state === "inactive"
        if (hit !== undefined || inactive) {
          findings.push({
            name: "ReplicationSlot",
            level: hit?.level ?? "WARN",
            subject: h.name,
            value: retained,
            threshold: hit?.threshold ?? t.replicationSlotRetainedBytes.warn ?? 0,
            message: `replication slot ${h.name} is ${h.state ?? "?"}, keeps ${retained} bytes of WAL${
              h.xidAge === null ? "" : ` and holds the xmin horizon ${h.xidAge} transactions back`
            }`
          })
        }
        break
      }
    }
  }
  return findings
}

/**
 * The worst level of some findings.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const levelOfFindings = (findings: ReadonlyArray<Finding>): Level =>
  findings.some((f) => f.level === "CRITICAL") ? "CRITICAL" : findings.length > 0 ? "WARN" : "OK"

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v))

const validBand = (option: string, band: Band) =>
  Effect.gen(function*() {
    for (const [k, v] of [["warn", band.warn], ["critical", band.critical]] as const) {
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) {
        return yield* new InvalidHealthOptions({ option: `${option}.${k}`, message: `must be a finite number >= 0, got ${v}` })
      }
    }
  })

const positiveInteger = (option: string, value: number): Effect.Effect<number, InvalidHealthOptions> =>
  Number.isInteger(value) && value >= 1
    ? Effect.succeed(value)
    : Effect.fail(new InvalidHealthOptions({ option, message: `an integer >= 1, got ${value}` }))

const resolveOptions = Effect.fnUntraced(function*(options: Options) {
  const table = yield* Identifier.validate(options.table ?? "outbox", "outbox table").pipe(
    Effect.mapError((e) => new InvalidHealthOptions({ option: "table", message: e.message }))
  )
  const tables = options.tables ?? [table]
  if (tables.length === 0 || tables.some((t) => t.trim() === "")) {
    return yield* new InvalidHealthOptions({ option: "tables", message: "name at least one table, none empty" })
  }
  const minutes = options.throughputMinutes ?? 15
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    return yield* new InvalidHealthOptions({ option: "throughputMinutes", message: `an integer in [1, 1440], got ${minutes}` })
  }
  const maxRows = yield* positiveInteger("throughputMaxRows", options.throughputMaxRows ?? 100_000)
  const snapshotMaxRows = yield* positiveInteger("snapshotMaxRows", options.snapshotMaxRows ?? 100_000)
  const overrides = Object.fromEntries(Object.entries(options.thresholds ?? {}).filter(([, v]) => v !== undefined))
  const thresholds = { ...defaultThresholds, ...overrides } as Thresholds
  for (const [key, value] of Object.entries(thresholds)) {
    if (typeof value === "number") {
      if (!(Number.isFinite(value) && value >= 0)) {
        return yield* new InvalidHealthOptions({ option: key, message: `must be a finite number >= 0, got ${value}` })
      }
    } else yield* validBand(key, value as Band)
  }
  return { table, tables, minutes, maxRows, snapshotMaxRows, thresholds }
})

/** A row of `outbox_throughput`. */
interface ThroughputRow {
  readonly minute: Date
  readonly completed: number
  readonly dead_lettered: number
  readonly exact: boolean
}

/** The columns `outbox_stats` and the snapshot's counts share, by the same names. */
const backlogAndLeases = (r: Record<string, unknown> | undefined) => ({
  processing: num(r?.processing),
  deadLetter: num(r?.dead_letter),
  oldestPendingAgeSeconds: num(r?.oldest_pending_age_seconds),
  leaseOverdueSeconds: num(r?.lease_overdue_seconds),
  leaseHeldSeconds: num(r?.lease_held_seconds)
})

/**
 * Builds the service over a `SqlClient` (the views must exist: run
 * `OutboxMigrations` first).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const { maxRows, minutes, snapshotMaxRows, table, tables, thresholds } = yield* resolveOptions(options)
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))
  const T = Identifier.quote(table)
  /** The views of the migrations read `outbox`; another table is read directly, by the views' own queries. */
  const throughViews = table === "outbox"
  const source = (view: string, select: string) => sql.literal(throughViews ? view : `(${select}) v`)

  const counts = sql<Record<string, unknown>>`
    SELECT pending::float8, failed::float8, processing::float8, dead_letter::float8, completed_estimate::float8,
           oldest_pending_age_seconds, lease_overdue::float8, lease_overdue_seconds, lease_held_seconds
    FROM ${source("outbox_stats", statsSelect(T))}`.pipe(
    Effect.map(([r]) => ({
      ...backlogAndLeases(r),
      pending: num(r?.pending),
      failed: num(r?.failed),
      completedEstimate: num(r?.completed_estimate),
      leaseOverdue: num(r?.lease_overdue)
    })),
    mapSqlError("health.counts")
  )

  /**
   * The snapshot's counts, each reading at most `snapshotMaxRows` rows (the
   * backlog's first by id, through the claimable partial index; the dead
   * letters through theirs), not the whole backlog as `outbox_stats` does.
   */
  const gaugeCounts = sql<Record<string, unknown>>`
    WITH backlog AS (
      SELECT created_at FROM ${sql.literal(T)} WHERE status IN ('PENDING', 'FAILED') ORDER BY id LIMIT ${snapshotMaxRows}
    ), dead AS (
      SELECT 1 FROM ${sql.literal(T)} WHERE status = 'DEAD_LETTER' LIMIT ${snapshotMaxRows}
    ), leased AS (
      SELECT count(*) AS processing,
             min(locked_until) FILTER (WHERE locked_until < now()) AS oldest_overdue_until,
             min(claimed_at) AS oldest_claimed_at
      FROM ${sql.literal(T)} WHERE status = 'PROCESSING'
    )
    SELECT (SELECT count(*) FROM backlog)::float8 AS backlog,
           coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM backlog)), 0)::float8 AS oldest_pending_age_seconds,
           (SELECT count(*) FROM dead)::float8 AS dead_letter,
           l.processing::float8 AS processing,
           coalesce(extract(epoch FROM now() - l.oldest_overdue_until), 0)::float8 AS lease_overdue_seconds,
           greatest(coalesce(extract(epoch FROM now() - l.oldest_claimed_at), 0), 0)::float8 AS lease_held_seconds
    FROM leased l`.pipe(
    Effect.map(([r]) => ({ ...backlogAndLeases(r), backlog: num(r?.backlog) })),
    mapSqlError("snapshot.counts")
  )

  const partitions = sql<Record<string, unknown>>`
    SELECT table_name, partitions::float8, ahead::float8, horizon, horizon_seconds, newest, has_gap,
           default_partition, default_rows::float8, dead_tuples::float8, live_tuples::float8
    FROM outbox_health_partitions WHERE table_name IN ${sql.in(tables)} ORDER BY table_name`.pipe(
    Effect.map((rows) =>
      rows.map((r): PartitionHealth => ({
        table: String(r.table_name),
        partitions: num(r.partitions),
        ahead: num(r.ahead),
        horizon: (r.horizon as Date | null) ?? null,
        horizonSeconds: num(r.horizon_seconds),
        newest: (r.newest as Date | null) ?? null,
        hasGap: r.has_gap === true,
        defaultPartition: (r.default_partition as string | null) ?? null,
        defaultRows: num(r.default_rows),
        deadTuples: num(r.dead_tuples),
        liveTuples: num(r.live_tuples)
      }))
    ),
    mapSqlError("health.partitions")
  )

  const holders = sql<Record<string, unknown>>`
    SELECT kind, pid, name, application_name, client_addr, state, xid_age::float8, age_seconds,
           xact_start, query_start, state_change, retained_wal_bytes::float8, detail
    FROM outbox_health_xmin ORDER BY xid_age DESC NULLS LAST, age_seconds DESC NULLS LAST`.pipe(
    Effect.map((rows) =>
      rows.map((r): XminHolder => ({
        kind: r.kind as XminHolder["kind"],
        pid: numOrNull(r.pid),
        name: String(r.name ?? ""),
        applicationName: (r.application_name as string | null) || null,
        clientAddr: (r.client_addr as string | null) ?? null,
        state: (r.state as string | null) ?? null,
        xidAge: numOrNull(r.xid_age),
        ageSeconds: numOrNull(r.age_seconds),
        transactionStart: (r.xact_start as Date | null) ?? null,
        queryStart: (r.query_start as Date | null) ?? null,
        stateChange: (r.state_change as Date | null) ?? null,
        retainedWalBytes: numOrNull(r.retained_wal_bytes),
        detail: (r.detail as string | null) ?? null
      }))
    ),
    mapSqlError("health.xmin")
  )

  const horizonAge = (hs: ReadonlyArray<XminHolder>) => Math.max(0, ...hs.map((h) => h.ageSeconds ?? 0))

  const snapshot: Effect.Effect<Snapshot, StoreError> = Effect.gen(function*() {
    const c = yield* gaugeCounts
    const ps = yield* partitions
    const hs = yield* holders
    return {
      pending: c.backlog,
      processing: c.processing,
      oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
      leaseOverdueSeconds: c.leaseOverdueSeconds,
      leaseHeldSeconds: c.leaseHeldSeconds,
      deadLetters: c.deadLetter,
      partitions: ps.map((p) => ({ table: p.table, ahead: p.ahead, defaultRows: p.defaultRows, deadTuples: p.deadTuples })),
      xminHorizonAgeSeconds: horizonAge(hs)
    }
  }).pipe(Effect.withSpan("OutboxHealth.snapshot"))

  const stats: Effect.Effect<Stats, StoreError> = Effect.gen(function*() {
    const at = yield* now
    const c = yield* counts
    const perMinute = yield* (throughViews
      ? sql<ThroughputRow>`
        SELECT minute, completed::float8 AS completed, dead_lettered::float8 AS dead_lettered, exact
        FROM outbox_throughput(${minutes}::int, ${maxRows}::bigint)`
      : sql.unsafe<ThroughputRow>(
        `SELECT minute, completed::float8 AS completed, dead_lettered::float8 AS dead_lettered, exact
         FROM (${throughputSelect(T, "$1::int", "$2::bigint")}) v`,
        [minutes, maxRows]
      )).pipe(mapSqlError("stats.throughput"))
    const deadLetters = yield* sql<{ event_type: string; dead_letters: number; last_dead_lettered_at: Date | null }>`
      SELECT event_type, dead_letters::float8 AS dead_letters, last_dead_lettered_at
      FROM ${source("outbox_stats_dead_letters", deadLettersSelect(T))}
      ORDER BY dead_letters DESC, event_type`.pipe(mapSqlError("stats.deadLetters"))
    const whole = perMinute.slice(0, -1)
    return {
      at,
      counts: {
        pending: c.pending,
        failed: c.failed,
        processing: c.processing,
        deadLetter: c.deadLetter,
        completedEstimate: c.completedEstimate
      },
      oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
      leaseOverdue: c.leaseOverdue,
      leaseOverdueSeconds: c.leaseOverdueSeconds,
      leaseHeldSeconds: c.leaseHeldSeconds,
      throughput: {
        minutes,
        maxRows,
        completedPerMinute: whole.length === 0 ? 0 : whole.reduce((s, r) => s + num(r.completed), 0) / whole.length,
        perMinute: perMinute.map((r) => ({
          minute: r.minute,
          completed: num(r.completed),
          deadLettered: num(r.dead_lettered),
          exact: r.exact === true
        }))
      },
      deadLettersByEventType: deadLetters.map((r) => ({
        eventType: r.event_type,
        count: num(r.dead_letters),
        lastAt: r.last_dead_lettered_at
      }))
    } satisfies Stats
  }).pipe(Effect.withSpan("OutboxHealth.stats"))

  const health: Effect.Effect<HealthReport, StoreError> = Effect.gen(function*() {
    const at = yield* now
    const c = yield* counts
    const stuck = yield* sql<{ id: string; tracking_id: string; event_type: string; locked_until: Date; overdue_seconds: number }>`
      SELECT id::text AS id, tracking_id::text AS tracking_id, event_type, locked_until, overdue_seconds
      FROM ${source("outbox_health_leases", leasesSelect(T))} ORDER BY locked_until LIMIT 20`.pipe(mapSqlError("health.leases"))
    const ps = yield* partitions
    const vacuum = yield* sql<Record<string, unknown>>`
      SELECT parent, partition, live_tuples::float8, dead_tuples::float8, dead_ratio, last_autovacuum, last_vacuum
      FROM outbox_health_vacuum WHERE parent IN ${sql.in(tables)} ORDER BY parent, partition`.pipe(
      Effect.map((rows) =>
        rows.map((r): PartitionVacuum => ({
          table: String(r.parent),
          partition: String(r.partition),
          liveTuples: num(r.live_tuples),
          deadTuples: num(r.dead_tuples),
          deadRatio: num(r.dead_ratio),
          lastAutovacuum: (r.last_autovacuum as Date | null) ?? null,
          lastVacuum: (r.last_vacuum as Date | null) ?? null
        }))
      ),
      mapSqlError("health.vacuum")
    )
    const hs = yield* holders
    const measured: Measurements = {
      tables,
      backlog: {
        pending: c.pending + c.failed,
        processing: c.processing,
        oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
        deadLetters: c.deadLetter
      },
      leases: {
        overdue: c.leaseOverdue,
        overdueSeconds: c.leaseOverdueSeconds,
        heldSeconds: c.leaseHeldSeconds,
        stuck: stuck.map((s) => ({
          id: s.id,
          trackingId: s.tracking_id,
          eventType: s.event_type,
          lockedUntil: s.locked_until,
          overdueSeconds: num(s.overdue_seconds)
        }))
      },
      partitions: ps,
      vacuum,
      holders: hs
    }
    const findings = evaluate(measured, thresholds)
    const level = levelOfFindings(findings)
    yield* Effect.annotateCurrentSpan({ "outbox.health.level": level, "outbox.health.findings": findings.length })
    return {
      level,
      at,
      findings,
      thresholds,
      backlog: measured.backlog,
      leases: measured.leases,
      partitions: ps,
      vacuum,
      xminHorizon: { ageSeconds: horizonAge(hs), oldest: hs[0] ?? null, holders: hs }
    } satisfies HealthReport
  }).pipe(Effect.withSpan("OutboxHealth.health"))

  const claimRedriven: Effect.Effect<number, StoreError> = sql<{ n: number }>`
    SELECT outbox_meter_redrives()::float8 AS n`.pipe(
    Effect.map(([r]) => num(r?.n)),
    mapSqlError("meterRedrives"),
    Effect.withSpan("OutboxHealth.claimRedriven")
  )

  return OutboxHealth.of({ stats, health, snapshot, claimRedriven })
})

/**
 * The service as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<OutboxHealth, InvalidHealthOptions, SqlClient.SqlClient> =>
  Layer.effect(OutboxHealth, make(options))

/**
 * The service as a layer, on the outbox table `OUTBOX_TABLE` (default
 * `outbox`) unless `options.table` names one: the table the store, the dead
 * letters and partition maintenance use, so that the gauges follow them
 * through an online migration.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  options: Options = {}
): Layer.Layer<OutboxHealth, InvalidHealthOptions | Config.ConfigError, SqlClient.SqlClient> =>
  Layer.unwrap(Effect.map(
    Config.String("OUTBOX_TABLE").pipe(Config.withDefault("outbox")),
    (table) => layer({ ...options, table: options.table ?? table })
  ))
