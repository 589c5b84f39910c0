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
 * It reads the catalog once and probes every leaf: ~0.13 ms a leaf (49–50
 * ms at 370 leaves).
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
     parts regclass[];
     los timestamptz[];
     lag_bound timestamptz;
     busy boolean;
   BEGIN
     IF NOT has_table_privilege(session_user, coalesce(pg_partition_root(tbl), tbl), 'SELECT') THEN
       RETURN NULL;
     END IF;
     -- the leaves and their lower bounds, oldest first (those without a time range first), read once; and the
     -- bound of the leaf holding now() - lag. Read from the catalog, not outbox_partition_leaves (0002): one read
     -- of the view took 28 ms at 370 leaves (it also sizes every leaf), the whole function 49–50 ms this way
     SELECT array_agg(l.part ORDER BY l.lo NULLS FIRST), array_agg(l.lo ORDER BY l.lo NULLS FIRST),
            max(l.lo) FILTER (WHERE l.lo <= now() - lag)
       INTO parts, los, lag_bound
     FROM (
       SELECT c.oid::regclass AS part,
              (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO'))[1]::timestamptz AS lo
       FROM pg_partition_tree(tbl) t JOIN pg_class c ON c.oid = t.relid
       WHERE t.isleaf AND t.relid <> tbl) l;
     IF lag_bound IS NULL THEN RETURN NULL; END IF;
     -- until a leaf holds an unfinished row
     FOR i IN 1 .. array_length(parts, 1) LOOP
       -- each status set matches a partial index's predicate (the claimable and the leased indexes): one probe each
       EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE status IN (''PENDING'', ''FAILED''))
                          OR EXISTS (SELECT 1 FROM %s WHERE status = ''PROCESSING'')', parts[i], parts[i]) INTO busy;
       IF busy THEN
         -- a leaf without a time range may hold rows of any time: no horizon
         RETURN CASE WHEN los[i] IS NULL THEN NULL ELSE least(los[i], lag_bound) END;
       END IF;
     END LOOP;
     RETURN lag_bound;
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
