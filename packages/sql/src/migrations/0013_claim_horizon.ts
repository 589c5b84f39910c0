/**
 * Migration `0013_claim_horizon`: `outbox_claim_horizon(tbl, lag)`, the
 * oldest `created_at` an unordered claim must read.
 *
 * **Why.** The outbox is partitioned by `created_at`, and a claim's scans do
 * not name it: every claim descended the claimable indexes of every
 * partition, empty or not. Daily partitions with no retention (the default)
 * add one a day; at 370 partitions one claim of 100 took 7.8 ms of server
 * time against 0.19 at 5 (`bench:ordering`, section 6). Bounded by the
 * horizon (a literal `created_at >=`, so the planner prunes the partitions
 * below it), 0.25 ms.
 *
 * **What it returns**: the lower bound of the oldest leaf partition that
 * holds a PENDING, FAILED or PROCESSING row (each checked with one probe of
 * its partial indexes), but no later than the lower bound of the partition
 * holding `now() - lag`: a producer's transaction stamps `created_at` when
 * it begins, so a transaction begun before a partition boundary commits
 * its rows below it. NULL (no horizon) when a leaf without a time range
 * (the DEFAULT partition, a leaf of another partitioning) holds such a row.
 * It reads the catalog and probes every leaf: ~0.2 ms a leaf (68–70 ms at
 * 370 leaves).
 *
 * **Gotcha**: a row committed below a horizon already taken (a transaction
 * open longer than `lag` across a partition boundary, an explicit old
 * `created_at`, a redrive or a reaped lease in an old partition) is not
 * claimed until the store takes the horizon again (`PgOutboxStore`: every
 * 10 s). Nothing is lost; it waits.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as OutboxTables from "../OutboxTables.ts"
import { pinnedSearchPath } from "../internal/searchPath.ts"

/**
 * The statements (the same for every outbox table: the function takes it),
 * with `SET search_path` pinned (`pinned`) for the SECURITY DEFINER function.
 *
 * @internal
 */
export const statements = (pinned: string): ReadonlyArray<string> => [
  // Runs as the owner: a least-privilege relay may read the outbox (the parent), not its partitions.
  // It answers only a login that may read the table's partition root: NULL (no horizon) for anyone else.
  `CREATE OR REPLACE FUNCTION outbox_claim_horizon(tbl regclass, lag interval)
   RETURNS timestamptz LANGUAGE plpgsql STABLE SECURITY DEFINER ${pinned} AS $fn$
   DECLARE
     leaf record;
     busy boolean;
     oldest_busy timestamptz;
     lag_bound timestamptz;
   BEGIN
     IF NOT has_table_privilege(session_user, coalesce(pg_partition_root(tbl), tbl), 'SELECT') THEN
       RETURN NULL;
     END IF;
     -- the leaves oldest first (those without a time range first), until one holds an unfinished row
     FOR leaf IN
       SELECT l.part, l.lo FROM (
         SELECT c.oid::regclass AS part,
                (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO'))[1]::timestamptz AS lo
         FROM pg_partition_tree(tbl) t JOIN pg_class c ON c.oid = t.relid
         WHERE t.isleaf AND t.relid <> tbl) l
       ORDER BY l.lo NULLS FIRST
     LOOP
       -- each status set matches a partial index's predicate (the claimable and the leased indexes): one probe each
       EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE status IN (''PENDING'', ''FAILED''))
                          OR EXISTS (SELECT 1 FROM %s WHERE status = ''PROCESSING'')', leaf.part, leaf.part) INTO busy;
       IF busy THEN
         IF leaf.lo IS NULL THEN RETURN NULL; END IF;
         oldest_busy := leaf.lo;
         EXIT;
       END IF;
     END LOOP;
     -- the lower bound of the leaf holding now() - lag
     SELECT max(x.lo) INTO lag_bound FROM (
       SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO'))[1]::timestamptz AS lo
       FROM pg_partition_tree(tbl) t JOIN pg_class c ON c.oid = t.relid
       WHERE t.isleaf AND t.relid <> tbl) x
     WHERE x.lo <= now() - lag;
     IF lag_bound IS NULL THEN RETURN NULL; END IF;
     RETURN least(coalesce(oldest_busy, lag_bound), lag_bound);
   END
   $fn$`,
  `COMMENT ON FUNCTION outbox_claim_horizon(regclass, interval) IS
   'The oldest created_at an unordered claim of tbl must read: the oldest partition with unfinished rows, at most the one holding now() - lag (Outbox)'`
]

/**
 * The migration (the same for every outbox table).
 *
 * @internal
 */
export const migration = (
  _tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { pinned } = yield* pinnedSearchPath
    for (const statement of statements(pinned)) yield* sql.unsafe(statement)
  })
