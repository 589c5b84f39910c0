/**
 * Migration `0001_create_outbox`: the partitioned outbox table, its claim
 * and lease indexes, its DEFAULT partition and first daily partitions, the
 * fencing-token sequence, `outbox_ensure_daily_partitions` and the inbox.
 *
 * The table's DDL (`tableStatements`) is also what the online migration
 * runs to create a partitioned table beside a plain one, so both stay one
 * definition.
 *
 * @internal
 */
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "../Identifier.ts"
import * as OutboxTables from "../OutboxTables.ts"

/**
 * How many days ahead (after today) the migration creates partitions for.
 *
 * @internal
 */
export const initialPremakeDays = 3

/**
 * Adds `claimed_at` (migration 0006) to the (quoted) table `t`, when it was
 * created before the column existed: catalog-only, no rewrite.
 *
 * @internal
 */
export const claimedAtColumn = (t: string): string => `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS claimed_at timestamptz`

/**
 * The comment on `claimed_at` of the (quoted) table `t`.
 *
 * @internal
 */
export const claimedAtComment = (t: string): string =>
  `COMMENT ON COLUMN ${t}.claimed_at IS 'When the current (or last) claim took the row; heartbeats do not move it (lease-held gauge)'`

/**
 * Idempotent statements (one per call: the extended protocol refuses several
 * commands in one) creating the partitioned outbox table `tables.outbox`,
 * its claim and lease indexes and its DEFAULT partition. `idSequence`, when
 * given, is the sequence `id` draws from (instead of a `bigserial` of its
 * own), so that two tables can share one id space.
 *
 * @internal
 */
export const tableStatements = Effect.fnUntraced(function*(
  tables: OutboxTables.OutboxTables,
  options: { readonly idSequence?: string | undefined } = {}
) {
  const t = Identifier.quote(tables.outbox)
  const id = options.idSequence === undefined
    ? "bigserial    NOT NULL"
    : `bigint       NOT NULL DEFAULT nextval('${Identifier.quote(yield* Identifier.validate(options.idSequence, "sequence"))}'::regclass)`
  return [
    `CREATE SEQUENCE IF NOT EXISTS ${Identifier.quote(tables.lockTokenSequence)}`,
    // a plain table of that name is an unpartitioned outbox: refuse clearly instead of half-migrating
    `DO $check$ BEGIN
       IF to_regclass('${t}') IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('${t}')) THEN
         RAISE EXCEPTION 'table % exists and is not partitioned: migrate it online (docs/online-migration.md)', '${tables.outbox}';
       END IF;
     END $check$`,
    `CREATE TABLE IF NOT EXISTS ${t} (
        id             ${id},
        tracking_id    uuid         NOT NULL DEFAULT gen_random_uuid(),
        aggregate_type text         NOT NULL,
        aggregate_id   text         NOT NULL,
        event_type     text         NOT NULL,
        payload        jsonb        NOT NULL,
        metadata       jsonb        NOT NULL DEFAULT '{}'::jsonb,
        status         text         NOT NULL DEFAULT 'PENDING'
                       CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER')),
        retry_count    integer      NOT NULL DEFAULT 0,
        max_retries    integer      NOT NULL DEFAULT 5 CHECK (max_retries >= 0),
        created_at     timestamptz  NOT NULL DEFAULT now(),
        processed_at   timestamptz,
        available_at   timestamptz,
        locked_until   timestamptz,
        lock_token     bigint,
        last_error     text,
        claimed_at     timestamptz,
        PRIMARY KEY (id, created_at)
      ) PARTITION BY RANGE (created_at)`,
    claimedAtColumn(t),
    `COMMENT ON COLUMN ${t}.available_at IS 'NULL or a time: a FAILED row is claimable again once it passes (backoff)'`,
    claimedAtComment(t),
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.claimableIndex)} ON ${t} (id) WHERE status IN ('PENDING', 'FAILED')`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.leasedIndex)} ON ${t} (locked_until) WHERE status = 'PROCESSING'`,
    `CREATE TABLE IF NOT EXISTS ${Identifier.quote(tables.defaultPartition)} PARTITION OF ${t} DEFAULT`
  ]
})

/**
 * The inbox (`tables.inbox`), keyed by `(consumer, tracking_id)`.
 *
 * @internal
 */
export const inboxStatement = (tables: OutboxTables.OutboxTables): string =>
  `CREATE TABLE IF NOT EXISTS ${Identifier.quote(tables.inbox)} (
          consumer     text        NOT NULL,
          tracking_id  text        NOT NULL,
          processed_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (consumer, tracking_id)
        )`

/**
 * `outbox_ensure_daily_partitions(from_day, days)`. Its body is stored as
 * text and names the objects of the table called `outbox` (the name an
 * online migration's `finish` gives the partitioned table), whatever table
 * the migrations run for.
 */
const ensureFunction = (d: OutboxTables.OutboxTables = OutboxTables.defaults): string =>
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
            part_name := '${d.partitionPrefix}' || to_char(d, 'YYYYMMDD');
            lower_bound := d::timestamp AT TIME ZONE 'UTC';
            upper_bound := (d + 1)::timestamp AT TIME ZONE 'UTC';
            CONTINUE WHEN to_regclass(format('%I', part_name)) IS NOT NULL;
            IF EXISTS (SELECT 1 FROM ${d.defaultPartition} WHERE created_at >= lower_bound AND created_at < upper_bound) THEN
              RAISE NOTICE 'outbox: rows for % sit in ${d.defaultPartition}; partition % not created', d, part_name;
              CONTINUE;
            END IF;
            EXECUTE format('CREATE TABLE %I PARTITION OF ${d.outbox} FOR VALUES FROM (%L) TO (%L)', part_name, lower_bound, upper_bound);
            created := created + 1;
          END LOOP;
          RETURN created;
        END
        $fn$`

/** `YYYYMMDD` of a UTC day. */
const utcDay = (day: Date): string => day.toISOString().slice(0, 10).replaceAll("-", "")

/**
 * Creates the daily partitions of `tables.outbox` from the UTC day of `from`
 * to `days` days after today (Effect's `Clock`), those that do not exist
 * yet; returns how many it created. A day whose rows already sit in the
 * DEFAULT partition fails (moving them is the partition manager's job).
 *
 * @internal
 */
export const createDailyPartitions = Effect.fnUntraced(function*(
  tables: OutboxTables.OutboxTables,
  options: { readonly from?: Date | undefined; readonly days: number }
) {
  const sql = yield* SqlClient.SqlClient
  const parent = Identifier.quote(tables.outbox)
  const now = new Date(yield* Clock.currentTimeMillis)
  const last = PartitionPolicy.shift("daily", PartitionPolicy.floor("daily", now), options.days)
  let from = PartitionPolicy.floor("daily", options.from !== undefined && options.from < now ? options.from : now)
  let created = 0
  while (from <= last) {
    const range = PartitionPolicy.rangeOf("daily", from)
    const name = yield* Identifier.validate(OutboxTables.dailyPartition(tables, utcDay(range.from)), "partition name")
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

/**
 * The migration for `tables`. For `outbox` the first partitions come from
 * `outbox_ensure_daily_partitions`; another table (an online migration's
 * partitioned one) gets them from `createDailyPartitions`, since the
 * function knows the names of `outbox` only.
 *
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // one statement per call: the extended protocol refuses several commands in one
    const statements = [...(yield* tableStatements(tables)), ensureFunction(), inboxStatement(tables)]
    for (const statement of statements) yield* sql.unsafe(statement)
    if (tables.outbox === OutboxTables.defaults.outbox) {
      yield* sql`SELECT outbox_ensure_daily_partitions((now() AT TIME ZONE 'UTC')::date, ${initialPremakeDays})`
    } else {
      yield* createDailyPartitions(tables, { days: initialPremakeDays })
    }
  })
