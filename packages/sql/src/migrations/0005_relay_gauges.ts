/**
 * Migration `0005_relay_gauges`: what a least-privilege relay needs for its
 * gauges and counters (`outbox_count_rows` as `SECURITY DEFINER`,
 * `outbox_meter_redrives()` over the redrive log).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { pinnedSearchPath } from "../internal/searchPath.ts"

/**
 * The statements, with `SET search_path` pinned for the SECURITY DEFINER
 * functions; the redrive log named bare in the function's body (stored as
 * text), as release 0.1.0 wrote it.
 */
const statements = (pinned: string, tables: OutboxTables.OutboxTables): ReadonlyArray<string> => [
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
   'Redrive-log rows (${tables.redriveLog}.id) already counted in some relay''s outbox_events_redriven_total'`,
  // counting starts now: the redrives made before this migration are not a burst on the first sample
  `INSERT INTO outbox_redrive_metered (log_id) SELECT id FROM ${Identifier.quote(tables.redriveLog)} ON CONFLICT DO NOTHING`,
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
       SELECT l.id FROM ${tables.redriveLog} l
       WHERE l.at > now() - interval '1 day'
         AND NOT EXISTS (SELECT 1 FROM outbox_redrive_metered m WHERE m.log_id = l.id)
       ON CONFLICT (log_id) DO NOTHING
       RETURNING log_id
     )
     SELECT coalesce(sum(l.event_count), 0) INTO n
     FROM claimed c JOIN ${tables.redriveLog} l ON l.id = c.log_id;
     RETURN n;
   END
   $fn$`,
  `COMMENT ON FUNCTION outbox_meter_redrives() IS
   'Events redriven since any caller last asked, each redrive batch counted once (the relays'' redriven counter)'`,
  `REVOKE ALL ON FUNCTION outbox_meter_redrives() FROM PUBLIC`,
  `REVOKE ALL ON TABLE outbox_redrive_metered FROM PUBLIC`
]

/**
 * The migration: what a least-privilege relay needs for
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
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { pinned } = yield* pinnedSearchPath
    for (const statement of statements(pinned, tables)) yield* sql.unsafe(statement)
  })
