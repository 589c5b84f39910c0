/**
 * Migration `0007_wakeup_trigger`: a statement-level `AFTER INSERT` trigger
 * on the outbox (`outbox_wakeup`) that wakes an idle relay with
 * `pg_notify('<outbox>_wakeup', '')`, so that rows written by any producer,
 * plain SQL from another language included, reach a waiting relay within
 * milliseconds instead of at its next poll.
 *
 * **Once per transaction.** The trigger runs once per INSERT statement (a
 * multi-row INSERT or a COPY is one call), and PostgreSQL folds identical
 * notifications of one transaction into one, so a transaction publishing
 * many events notifies once. A rolled-back transaction notifies nobody.
 *
 * **Only while a relay waits.** NOTIFY serialises committing transactions
 * behind one database-wide lock (taken in `PreCommit_Notify` and held until
 * the commit record is flushed), so group commit no longer helps concurrent
 * producers: measured on the 2-core development machine, one-event
 * transactions from 16 clients fell from ~3,600 to ~510 tx/s (pgbench,
 * plain SQL) and from ~1,270 to ~190 tx/s (`bench/notify.bench.ts`, through
 * the library) when every transaction notified. The trigger therefore
 * notifies only while a relay asks for it: such a relay holds (or queues
 * for) an exclusive session-level advisory lock on
 * `(hashtext('outbox.wakeup'), hashtext(channel))`, and the producer's
 * `pg_try_advisory_xact_lock_shared` on it fails exactly then. Otherwise
 * the shared lock is granted, nothing is notified and nothing is
 * serialised (no measurable cost: ~3,570 against ~3,600 tx/s), and a relay
 * that is not asking is busy and claims the row anyway. The relay's side,
 * and why no wake-up is lost between the two, is in `@outbox/sql/PgWakeup`.
 *
 * The function is shared by every outbox table and names the channel from
 * the table it fires on (`TG_TABLE_NAME || '_wakeup'`), so it follows a
 * rename (an online migration's `finish`). A row inserted directly into a
 * partition fires no trigger of the parent: it waits for the poll.
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import * as OutboxTables from "../OutboxTables.ts"
import { fromStatements } from "./statements.ts"

/**
 * The first key of the gate's two-key advisory lock, as SQL; the second is
 * `hashtext(channel)`.
 *
 * @internal
 */
export const gateNamespace = "hashtext('outbox.wakeup')"

/**
 * The statements creating the function and the trigger on `tables.outbox`
 * (idempotent).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => {
  const fn = Identifier.quote(tables.wakeup)
  const t = Identifier.quote(tables.outbox)
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
     DECLARE channel text := TG_TABLE_NAME || '${OutboxTables.wakeupChannelSuffix}';
     BEGIN
       -- granted (no relay waits idle): nothing to wake, and no commit serialised behind NOTIFY
       IF NOT pg_catalog.pg_try_advisory_xact_lock_shared(${gateNamespace}, pg_catalog.hashtext(channel)) THEN
         PERFORM pg_catalog.pg_notify(channel, '');
       END IF;
       RETURN NULL;
     END
     $fn$`,
    `COMMENT ON FUNCTION ${fn}() IS
     'Wakes a relay waiting idle (LISTEN <outbox>_wakeup) once per transaction that inserts into the outbox; notifies only while a relay holds the wake-up lock'`,
    `DROP TRIGGER IF EXISTS ${fn} ON ${t}`,
    `CREATE TRIGGER ${fn} AFTER INSERT ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`
  ]
}

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
