/**
 * Migration `0008_ordering`: the ordering key of per-key ordering
 * (`OUTBOX_ORDERING=key`), the id drawn under the key's lane lock, and the
 * indexes of the ordered claim.
 *
 * **The key.** A nullable `ordering_key text` column (catalog-only on a
 * table of any size): an explicit key, or NULL for the default
 * `aggregate_type || ':' || aggregate_id` (`effectiveKey`), which the
 * indexes and the claim compute. So plain-SQL producers (any language,
 * COPY) need no change, the default costs no bytes per row, and the rows
 * of before need no backfill (an `UPDATE` of every active row would also
 * write an audit entry for each where the audit trail is on).
 *
 * **Uncommitted lower ids.** Ids come from a sequence when a row is
 * inserted, not when its transaction commits: producer A draws id 10 for a
 * key, producer B draws 11 for the same key and commits first. A relay that
 * delivered 11 as the key's head would deliver 10 after it. To rule that
 * out, the trigger draws the row's id itself, while holding a *shared*
 * transaction-level advisory lock on the key's lane (one of 256, from the
 * key's 64-bit hash). Producers never wait for each other (shared locks), and
 * a relay that finds a lane free (no granted lock on it in `pg_locks`) after
 * reading the sequence's last value knows that every id of that lane drawn
 * before is committed or rolled back: it claims a head only on a free lane and
 * only up to that value (`PgOutboxStore`, `internal/orderedClaim.ts`). So the id column loses its default (a
 * default would draw the id before the lock); an explicit id (an online
 * migration's copy) is kept and takes no lock.
 *
 * What it costs: measured on the development machine, about 10 µs per row
 * of a bulk insert (the trigger call, the lock and the hash); a transaction
 * holds at most 256 lane locks whatever it publishes (PostgreSQL's shared
 * lock table holds `max_locks_per_transaction` × connections). A producer
 * transaction left open blocks the ordered claim of the keys of its lanes
 * (about 1/256 of the keys each) until it ends.
 *
 * **Indexes** (partial, keyed by the 64-bit hash of the key: 16 bytes an
 * entry whatever the key's length; a hash collision only makes two keys
 * wait for each other): each key's claimable rows by id (a key's head is its
 * first entry; the ordered claim walks keys with it), and its dead letters
 * (`OUTBOX_ORDERING_DEAD_LETTER=hold`). And the rows with an `available_at`
 * (backoffs, schedules) by it, so that a claim reads the ones not yet due
 * without scanning the backlog.
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { fromStatements } from "./statements.ts"

/**
 * The lanes of the uncommitted-id guard: a power of two, a key's lane is
 * `hash & (lanes - 1)`. 256: a transaction holds at most this many lane
 * locks, and an open producer transaction holds back about 1/256 of the
 * keys per lane it holds.
 *
 * @internal
 */
export const lanes = 256

/**
 * The first key of the lanes' two-key advisory locks, as SQL; the second
 * is the lane.
 *
 * @internal
 */
export const laneNamespace = "hashtext('outbox.ordering')"

/**
 * A row's ordering key as SQL (`alias` the row's table alias, or `NEW`;
 * none: the bare columns, as in an index definition):
 * its explicit key, else `<aggregate_type>:<aggregate_id>`.
 *
 * @internal
 */
export const effectiveKey = (alias?: string): string => {
  const a = alias === undefined ? "" : `${alias}.`
  return `coalesce(${a}ordering_key, ${a}aggregate_type || ':' || ${a}aggregate_id)`
}

/**
 * A row's key hash as SQL (the indexed expression: the ordered claim must
 * use it verbatim; the indexes are built over the unqualified columns,
 * which is the same expression to the planner).
 *
 * @internal
 */
export const keyHash = (alias?: string): string => `hashtextextended(${effectiveKey(alias)}, 0)`

/**
 * The statements for `tables.outbox` (idempotent; the trigger is created,
 * and the id default dropped, only while the column still has a default).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => {
  const t = Identifier.quote(tables.outbox)
  const fn = Identifier.quote(tables.orderingInsert)
  const claimable = "status IN ('PENDING', 'FAILED')"
  return [
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS ordering_key text`,
    `COMMENT ON COLUMN ${t}.ordering_key IS
     'Ordering key of OUTBOX_ORDERING=key; NULL: aggregate_type || '':'' || aggregate_id'`,
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN
       IF NEW.id IS NULL THEN
         -- a relay that finds the lane free knows every id of it drawn before is committed or rolled back
         PERFORM pg_catalog.pg_advisory_xact_lock_shared(${laneNamespace}, (${keyHash("NEW")} & ${lanes - 1})::int);
         NEW.id := pg_catalog.nextval(TG_ARGV[0]::regclass);
       END IF;
       RETURN NEW;
     END
     $fn$`,
    `COMMENT ON FUNCTION ${fn}() IS
     'Draws the id under the ordering key''s lane lock (per-key ordering: no lower id of a key is claimed around an uncommitted one)'`,
    // the id's sequence, from the column default: the trigger draws from it, then the default goes
    `DO $do$
     DECLARE seq text;
     BEGIN
       SELECT (regexp_match(pg_get_expr(d.adbin, d.adrelid), '^nextval\\(''(.+)''::regclass\\)$'))[1] INTO seq
       FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
       WHERE d.adrelid = ${Identifier.literal(t)}::regclass AND a.attname = 'id';
       IF seq IS NOT NULL THEN
         EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', ${Identifier.literal(tables.orderingInsert)}, ${Identifier.literal(t)});
         EXECUTE format('CREATE TRIGGER %I BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s(%L)',
           ${Identifier.literal(tables.orderingInsert)}, ${Identifier.literal(t)}, ${Identifier.literal(fn)}, seq);
         EXECUTE format('ALTER TABLE %s ALTER COLUMN id DROP DEFAULT', ${Identifier.literal(t)});
       END IF;
     END
     $do$`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.orderingIndex)} ON ${t} ((${keyHash()}), id)
     WHERE ${claimable}`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.orderingDeadIndex)} ON ${t} ((${keyHash()}), id)
     WHERE status = 'DEAD_LETTER'`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.waitingIndex)} ON ${t} (available_at)
     WHERE status IN ('PENDING', 'FAILED') AND available_at IS NOT NULL`
  ]
}

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
