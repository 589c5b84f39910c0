/**
 * Migration `0004_health_views`: the views and functions of `OutboxHealth`
 * (`outbox_stats`, `outbox_throughput`, `outbox_stats_throughput`,
 * `outbox_stats_dead_letters`, `outbox_health_leases`,
 * `outbox_health_vacuum`, `outbox_health_partitions`, `outbox_health_xmin`,
 * `outbox_count_rows`). Their bodies are exported: `OutboxHealth` runs the
 * same queries directly over a table other than the one the views read.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "../Identifier.ts"
import * as OutboxTables from "../OutboxTables.ts"
import * as CreateOutbox from "./0001_create_outbox.ts"

/** Rows counted in a DEFAULT partition at most (a full DEFAULT is a problem whatever its size). */
export const defaultRowsCap = 100_000

/**
 * The body of `outbox_stats` over the (quoted) table `t`. Its last column,
 * `lease_held_seconds`, came with migration 0006 (`claimed_at`):
 * `CREATE OR REPLACE VIEW` may only append columns.
 *
 * `oldest_pending_at` is when the oldest row due now became due (its
 * `available_at`, else its `created_at`), since migration 0011
 * (`0011_stats_due_age`): it was the oldest `created_at` of every PENDING or
 * FAILED row, so an event published last week for next week read as a
 * week-old backlog, and the backlog-age check raised a false alarm.
 */
export const statsSelect = (t: string) =>
  `WITH backlog AS (
     SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
            count(*) FILTER (WHERE status = 'FAILED') AS failed,
            min(coalesce(available_at, created_at)) FILTER (WHERE available_at IS NULL OR available_at <= now())
              AS oldest_pending_at
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
export const statsView = (t: string) => `CREATE OR REPLACE VIEW outbox_stats AS
   ${statsSelect(t)}`

export const statsComment = `COMMENT ON VIEW outbox_stats IS
   'Outbox counts by status (exact over the partial indexes; completed_estimate from reltuples), oldest pending age (since the oldest due row became due), overdue and longest-held leases'`

/**
 * The body of `outbox_throughput` over the (quoted) table `t`, with the
 * window and the sample size as the SQL expressions `minutes` and `maxRows`
 * (the function's parameters, or statement parameters).
 */
export const throughputSelect = (t: string, minutes: string, maxRows: string) =>
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
export const deadLettersSelect = (t: string) =>
  `SELECT event_type, count(*) AS dead_letters, max(processed_at) AS last_dead_lettered_at
   FROM ${t} WHERE status = 'DEAD_LETTER'
   GROUP BY event_type`

/** The body of `outbox_health_leases` over the (quoted) table `t`. */
export const leasesSelect = (t: string) =>
  `SELECT id, tracking_id, event_type, lock_token, locked_until, retry_count,
          extract(epoch FROM now() - locked_until)::float8 AS overdue_seconds
   FROM ${t}
   WHERE status = 'PROCESSING' AND locked_until < now()`

/** The statements of migration 0004 over the (quoted) outbox table `t`. */
const viewStatements = (t: string): ReadonlyArray<string> => [
  // the column `statsView` reads (migration 0006; also run here, for a database that skips from before it)
  CreateOutbox.claimedAtColumn(t),
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

/**
 * The outbox table as the views' and functions' SQL names it: `outbox` bare,
 * as release 0.1.0 wrote it into `outbox_throughput`'s body (stored as
 * text), any other name quoted.
 *
 * @internal
 */
export const tableReference = (tables: OutboxTables.OutboxTables): string =>
  tables.outbox === OutboxTables.defaults.outbox ? tables.outbox : Identifier.quote(tables.outbox)

/**
 * The migration for `tables`: the views over the outbox read `tables.outbox`
 * (the others are table-independent).
 *
 * **Gotcha**: PostgreSQL binds a view to the table, not to its name. The
 * statements are `CREATE OR REPLACE`, so running this effect again (it is
 * idempotent) re-points the views after a step that swaps the outbox table
 * by renaming; run `0005_relay_gauges` after it, which makes
 * `outbox_count_rows` `SECURITY DEFINER` again.
 *
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // one statement per call: the extended protocol refuses several commands in one
    for (const statement of viewStatements(tableReference(tables))) yield* sql.unsafe(statement)
  })
