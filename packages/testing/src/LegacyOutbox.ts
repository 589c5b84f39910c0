/**
 * A plain, unpartitioned outbox table as a hand-rolled relay would have it
 * (the columns of the foundation schema, an id primary key, no backoff
 * column): the starting point of an online migration, for tests and demos.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"

/**
 * Creates the plain table `table` (a trusted, test-chosen name).
 *
 * @category constructors
 * @since 0.1.0
 */
export const create = (table = "outbox") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe(`CREATE TABLE ${table} (
      id             bigserial   PRIMARY KEY,
      tracking_id    uuid        NOT NULL DEFAULT gen_random_uuid(),
      aggregate_type text        NOT NULL,
      aggregate_id   text        NOT NULL,
      event_type     text        NOT NULL,
      payload        jsonb       NOT NULL,
      metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
      status         text        NOT NULL DEFAULT 'PENDING',
      retry_count    integer     NOT NULL DEFAULT 0,
      max_retries    integer     NOT NULL DEFAULT 5,
      created_at     timestamptz NOT NULL DEFAULT now(),
      processed_at   timestamptz,
      locked_until   timestamptz,
      lock_token     bigint,
      last_error     text
    )`))

/**
 * Inserts `n` rows with plain SQL (as a producer in another language would),
 * `created_at` spread over the `days` days before now, with `status`.
 * Returns the tracking ids RETURNING gave (none for rows a trigger redirected).
 *
 * @category producers
 * @since 0.1.0
 */
export const insert = (
  options: {
    readonly n: number
    readonly status?: string
    readonly days?: number
    readonly table?: string
    readonly aggregateType?: string
  }
) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ tracking_id: string }>`
      INSERT INTO ${sql(options.table ?? "outbox")} (aggregate_type, aggregate_id, event_type, payload, status, created_at)
      SELECT ${options.aggregateType ?? "Legacy"}, 'l-' || g, 'LegacyEvent', jsonb_build_object('g', g), ${options.status ?? "PENDING"},
             now() - (${options.days ?? 0} * interval '1 day') * (g::float / ${options.n})
      FROM generate_series(1, ${options.n}) g
      RETURNING tracking_id`.pipe(Effect.map((rows) => rows.map((r) => r.tracking_id))))
