/**
 * Migration `0003_redrive_log`: the partial index over the outbox's dead
 * letters (`<outbox>_dead_letter_idx`, which keeps `DeadLetters` and the
 * health counts proportional to the dead letters) and the append-only
 * redrive log (`outbox_redrive_log`: who redrove what, why, and the events'
 * previous errors).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"

/**
 * The migration for `tables` (the index follows the outbox table; an online
 * migration's `finish` renames it with the table).
 *
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const log = tables.redriveLog
    const statements = [
      `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.deadLetterIndex)} ON ${
        Identifier.quote(tables.outbox)
      } (id) WHERE status = 'DEAD_LETTER'`,
      `CREATE TABLE ${Identifier.quote(log)} (
        id          bigserial   PRIMARY KEY,
        redrive_id  uuid        NOT NULL,
        batch       integer     NOT NULL CHECK (batch >= 1),
        at          timestamptz NOT NULL DEFAULT now(),
        operator    text        NOT NULL CHECK (btrim(operator) <> ''),
        reason      text        NOT NULL CHECK (btrim(reason) <> ''),
        filter      jsonb       NOT NULL,
        event_ids   bigint[]    NOT NULL,
        event_count integer     NOT NULL CHECK (event_count = cardinality(event_ids)),
        previous    jsonb       NOT NULL DEFAULT '[]'::jsonb,
        db_user     text        NOT NULL DEFAULT current_user,
        UNIQUE (redrive_id, batch)
      )`,
      `COMMENT ON TABLE ${Identifier.quote(log)} IS
      'Every dead-letter redrive batch: who, why, which filter, which events and their previous errors (append-only)'`,
      `CREATE INDEX ${Identifier.quote(`${log}_event_ids_idx`)} ON ${Identifier.quote(log)} USING gin (event_ids)`,
      `CREATE INDEX ${Identifier.quote(`${log}_at_idx`)} ON ${Identifier.quote(log)} (at)`,
      // the body is stored as text: the name in the message as release 0.1.0 wrote it
      `CREATE FUNCTION ${Identifier.quote(`${log}_append_only`)}() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        RAISE EXCEPTION '${log} is append-only: % refused', TG_OP;
      END
      $fn$`,
      `CREATE TRIGGER ${Identifier.quote(`${log}_no_change`)} BEFORE UPDATE OR DELETE ON ${Identifier.quote(log)}
      FOR EACH ROW EXECUTE FUNCTION ${Identifier.quote(`${log}_append_only`)}()`,
      `CREATE TRIGGER ${Identifier.quote(`${log}_no_truncate`)} BEFORE TRUNCATE ON ${Identifier.quote(log)}
      FOR EACH STATEMENT EXECUTE FUNCTION ${Identifier.quote(`${log}_append_only`)}()`
    ]
    for (const statement of statements) yield* sql.unsafe(statement)
  })
