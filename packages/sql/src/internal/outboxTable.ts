/**
 * The DDL of one outbox table, shared by the first migration (`outbox`) and
 * by the online migration (a partitioned table created beside a plain one).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Identifier from "../Identifier.ts"

/**
 * The names derived from an outbox table's name (`outbox` gives exactly the
 * names of the first migration: `outbox_claimable_idx`, `outbox_default`...).
 *
 * @internal
 */
export const names = Effect.fnUntraced(function*(table: string) {
  yield* Identifier.validate(table, "outbox table")
  return {
    table,
    claimableIndex: yield* Identifier.validate(`${table}_claimable_idx`, "index name"),
    leasedIndex: yield* Identifier.validate(`${table}_leased_idx`, "index name"),
    defaultPartition: yield* Identifier.validate(`${table}_default`, "partition name")
  }
})

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
 * commands in one) creating the partitioned outbox table `table`, its claim
 * and lease indexes and its DEFAULT partition. `idSequence`, when given, is
 * the sequence `id` draws from (instead of a `bigserial` of its own), so that
 * two tables can share one id space.
 *
 * @internal
 */
export const statements = Effect.fnUntraced(function*(table: string, options: { readonly idSequence?: string | undefined } = {}) {
  const n = yield* names(table)
  const t = Identifier.quote(n.table)
  const id = options.idSequence === undefined
    ? "bigserial    NOT NULL"
    : `bigint       NOT NULL DEFAULT nextval('${Identifier.quote(yield* Identifier.validate(options.idSequence, "sequence"))}'::regclass)`
  return [
    `CREATE SEQUENCE IF NOT EXISTS outbox_lock_token_seq`,
    // a plain table of that name is an unpartitioned outbox: refuse clearly instead of half-migrating
    `DO $check$ BEGIN
       IF to_regclass('${t}') IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('${t}')) THEN
         RAISE EXCEPTION 'table % exists and is not partitioned: migrate it online (docs/online-migration.md)', '${n.table}';
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
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(n.claimableIndex)} ON ${t} (id) WHERE status IN ('PENDING', 'FAILED')`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(n.leasedIndex)} ON ${t} (locked_until) WHERE status = 'PROCESSING'`,
    `CREATE TABLE IF NOT EXISTS ${Identifier.quote(n.defaultPartition)} PARTITION OF ${t} DEFAULT`
  ]
})
