/**
 * Migration `0002_partition_views`: `outbox_partition_leaves` (every leaf
 * partition of every partitioned table: bounds, estimated rows, bytes) and
 * `outbox_partition_overview`, read by the partition manager and health.
 * They cover every partitioned table of the schema, so they do not depend
 * on the outbox table's name.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as OutboxTables from "../OutboxTables.ts"

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
