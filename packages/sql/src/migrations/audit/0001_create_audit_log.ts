/**
 * Audit migration `0001_create_audit_log`: the audit trail's schema
 * (`ENABLE_AUDIT=true`), tracked in its own ledger
 * (`outbox_audit_migrations`) so that enabling it later, or never, does not
 * interfere with the outbox's numbering.
 *
 * Objects (all in the schema the migrations run in):
 * - `outbox_audit_log`: one row per changed outbox row, `RANGE (recorded_at)`
 *   partitioned by month, with a DEFAULT partition. Rows are appended
 *   unsealed (`chain_pos`, `prev_hash`, `hash` NULL) and sealed later by
 *   `outbox_audit_seal`.
 * - `outbox_audit_capture()`: the statement-level AFTER trigger function on
 *   the outbox (INSERT / UPDATE / DELETE with transition tables, TRUNCATE),
 *   `SECURITY DEFINER` with a pinned `search_path`: one `INSERT ... SELECT`
 *   per statement, whatever the number of rows, and roles without any
 *   privilege on the audit log are still audited.
 * - `outbox_audit_guard()`: refuses UPDATE / DELETE / TRUNCATE on the log,
 *   except the one-time sealing (NULL -> value) and the partition manager's
 *   move of DEFAULT rows into a new partition (under its advisory lock).
 * - `outbox_audit_head`: the chain's last sealed position and hash.
 * - `outbox_audit_checkpoint`: per month boundary, the links that precede
 *   the first row at or after it, so retention can drop old partitions
 *   without breaking verification.
 * - `outbox_audit_seal(max_rows)`, `outbox_audit_checkpoint(at, grace)`:
 *   `SECURITY DEFINER`, EXECUTE revoked from PUBLIC (grant it to the relay).
 * - `outbox_audit_history(event_id, tracking_id)`, `v_outbox_sox_audit`,
 *   `v_outbox_dead_letter_activity`: the compliance views.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "../../Identifier.ts"
import { pinnedSearchPath } from "../../internal/searchPath.ts"
import type * as OutboxTables from "../../OutboxTables.ts"

/**
 * The canonical content of an audit row (alias `alias`) as an SQL
 * expression of built-in functions only: a JSON array (format version 1) of
 * every column but the seal, times as epoch microseconds. The migration
 * wraps it in `outbox_audit_canonical`; verification inlines it, so it does
 * not depend on functions stored in the database.
 *
 * @internal
 */
export const canonicalExpression = (alias: string): string =>
  `jsonb_build_array(1, ${alias}.audit_id, (extract(epoch FROM ${alias}.recorded_at) * 1000000)::bigint, ${alias}.operation, ${alias}.event_id, (extract(epoch FROM ${alias}.event_created_at) * 1000000)::bigint, ${alias}.tracking_id::text, ${alias}.old_status, ${alias}.new_status, to_jsonb(${alias}.changed_columns), ${alias}.db_user, ${alias}.application_name, ${alias}.txid, ${alias}.actor, ${alias}.reason, ${alias}.last_error)::text`

/** Columns whose canonical form is hashed (everything but the seal itself). */
const contentColumns = [
  "audit_id",
  "recorded_at",
  "operation",
  "event_id",
  "event_created_at",
  "tracking_id",
  "old_status",
  "new_status",
  "changed_columns",
  "db_user",
  "application_name",
  "txid",
  "actor",
  "reason",
  "last_error"
] as const

/** The capture triggers on the outbox (statement-level, with transition tables). */
const captureTriggers = (t: OutboxTables.OutboxTables): ReadonlyArray<string> => [
  `CREATE OR REPLACE TRIGGER outbox_audit_insert AFTER INSERT ON ${Identifier.quote(t.outbox)}
    REFERENCING NEW TABLE AS outbox_audit_new FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_capture()`,
  `CREATE OR REPLACE TRIGGER outbox_audit_update AFTER UPDATE ON ${Identifier.quote(t.outbox)}
    REFERENCING OLD TABLE AS outbox_audit_old NEW TABLE AS outbox_audit_new FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_capture()`,
  `CREATE OR REPLACE TRIGGER outbox_audit_delete AFTER DELETE ON ${Identifier.quote(t.outbox)}
    REFERENCING OLD TABLE AS outbox_audit_old FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_capture()`,
  `CREATE OR REPLACE TRIGGER outbox_audit_truncate AFTER TRUNCATE ON ${Identifier.quote(t.outbox)}
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_capture()`,
]

/**
 * The capture function, generated from the outbox's columns (sorted): the
 * changed columns of an UPDATE are one `IS DISTINCT FROM` per column (a
 * generic jsonb diff cost 0.2 ms per row, measured). The column list is kept
 * in the function's comment, so a column added to the outbox later is
 * noticed by `ensureTriggers` and the function regenerated.
 */
const captureFunction = (t: OutboxTables.OutboxTables, pinned: string, columns: ReadonlyArray<string>) => {
  const changed = columns.length === 0 ? "'{}'::text[]" : `array_remove(ARRAY[${
    columns.map((c) => `CASE WHEN o.${Identifier.quote(c)} IS DISTINCT FROM n.${Identifier.quote(c)} THEN ${sqlString(c)} END`).join(",\n                   ")
  }]::text[], NULL)`
  return [
    `CREATE OR REPLACE FUNCTION outbox_audit_capture() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER ${pinned} AS $fn$
    DECLARE
      v_actor  text := nullif(current_setting('outbox.actor', true), '');
      v_reason text := nullif(current_setting('outbox.reason', true), '');
      v_app    text := nullif(current_setting('application_name', true), '');
      v_txid   bigint := pg_current_xact_id()::text::bigint;
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO ${t.auditLog} (operation, event_id, event_created_at, tracking_id, new_status,
                                      db_user, application_name, txid, actor, reason, last_error)
        SELECT 'INSERT', n.id, n.created_at, n.tracking_id, n.status,
               session_user, v_app, v_txid, v_actor, v_reason, n.last_error
        FROM outbox_audit_new n ORDER BY n.id;
      ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ${t.auditLog} (operation, event_id, event_created_at, tracking_id, old_status, new_status,
                                      changed_columns, db_user, application_name, txid, actor, reason, last_error)
        SELECT 'UPDATE', n.id, n.created_at, n.tracking_id, o.status, n.status,
               ${changed},
               session_user, v_app, v_txid, v_actor, v_reason,
               CASE WHEN n.last_error IS DISTINCT FROM o.last_error OR n.status IN ('FAILED', 'DEAD_LETTER')
                    THEN n.last_error END
        FROM outbox_audit_old o JOIN outbox_audit_new n ON n.id = o.id
        ORDER BY n.id;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ${t.auditLog} (operation, event_id, event_created_at, tracking_id, old_status,
                                      db_user, application_name, txid, actor, reason, last_error)
        SELECT 'DELETE', o.id, o.created_at, o.tracking_id, o.status,
               session_user, v_app, v_txid, v_actor, v_reason, o.last_error
        FROM outbox_audit_old o ORDER BY o.id;
      ELSE
        INSERT INTO ${t.auditLog} (operation, db_user, application_name, txid, actor, reason)
        VALUES ('TRUNCATE', session_user, v_app, v_txid, v_actor, v_reason);
      END IF;
      RETURN NULL;
    END
    $fn$`,
    `COMMENT ON FUNCTION outbox_audit_capture() IS ${sqlString(captureComment(columns))}`
  ]
}

const captureComment = (columns: ReadonlyArray<string>) => `outbox audit capture; columns: ${columns.join(",")}`

/** The outbox's columns, sorted by name. */
const outboxColumns = (t: OutboxTables.OutboxTables) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ name: string }>`
        SELECT attname::text AS name FROM pg_attribute
        WHERE attrelid = to_regclass(${Identifier.quote(t.outbox)}) AND attnum > 0 AND NOT attisdropped
        ORDER BY attname COLLATE "C"`,
      (rows) => rows.map((r) => r.name)
    ))

/** How many months ahead of the current one the migration creates. */
const initialMonthsAhead = 2

/**
 * The migration for `tables`: the capture triggers go on `tables.outbox`;
 * the audit objects' names (`tables.auditLog`, `auditHead`,
 * `auditCheckpoint` and the names derived from them) are written bare, as
 * release 0.1.0 wrote them into the functions' bodies (stored as text):
 * they are validated identifiers.
 *
 * @internal
 */
export const migration = (t: OutboxTables.OutboxTables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const { pinned, schema } = yield* pinnedSearchPath
  const parent = `${schema}.${t.auditLog}`
  const statements = [
    `CREATE TABLE ${t.auditLog} (
        audit_id         bigserial    NOT NULL,
        recorded_at      timestamptz  NOT NULL DEFAULT now(),
        operation        text         NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
        event_id         bigint,
        event_created_at timestamptz,
        tracking_id      uuid,
        old_status       text,
        new_status       text,
        changed_columns  text[],
        db_user          text         NOT NULL DEFAULT session_user,
        application_name text,
        txid             bigint,
        actor            text,
        reason           text,
        last_error       text,
        chain_pos        bigint,
        prev_hash        bytea,
        hash             bytea,
        sealed_at        timestamptz,
        PRIMARY KEY (recorded_at, audit_id)
      ) PARTITION BY RANGE (recorded_at)`,
    `COMMENT ON TABLE ${t.auditLog} IS
      'Append-only audit trail of the outbox, SHA-256 hash-chained by outbox_audit_seal (verify with npx outbox audit verify)'`,
    `COMMENT ON COLUMN ${t.auditLog}.db_user IS 'session_user: the authenticated role of the session that changed the outbox'`,
    `COMMENT ON COLUMN ${t.auditLog}.chain_pos IS 'position in the hash chain, assigned by the sealer in commit-visibility order'`,
    `CREATE TABLE ${t.auditLog}_default PARTITION OF ${t.auditLog} DEFAULT`,
    `CREATE INDEX ${t.auditLog}_chain_idx ON ${t.auditLog} (chain_pos, audit_id) WHERE chain_pos IS NOT NULL`,
    `CREATE INDEX ${t.auditLog}_unsealed_idx ON ${t.auditLog} (audit_id) WHERE hash IS NULL`,
    `CREATE INDEX ${t.auditLog}_event_idx ON ${t.auditLog} (event_id)`,
    // tracking ids are random: indexing every row's cost the writers most of
    // the audit's index time (measured); the INSERT rows name the event id
    `CREATE INDEX ${t.auditLog}_tracking_idx ON ${t.auditLog} (tracking_id) WHERE operation = 'INSERT'`,
    `CREATE TABLE ${t.auditHead} (
        singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
        chain_pos bigint      NOT NULL,
        hash      bytea       NOT NULL,
        sealed_at timestamptz
      )`,
    `INSERT INTO ${t.auditHead} (chain_pos, hash) VALUES (0, decode(repeat('00', 32), 'hex'))`,
    `CREATE TABLE ${t.auditCheckpoint} (
        boundary   timestamptz PRIMARY KEY,
        first_pos  bigint      NOT NULL,
        positions  bigint[]    NOT NULL,
        hashes     bytea[]     NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
    `COMMENT ON TABLE ${t.auditCheckpoint} IS
      'Per month boundary B: the chain position of the first row recorded at or after B (first_pos) and the hashes of the rows recorded before B at positions >= first_pos - 1, so verification can start at B once older partitions are dropped'`,
    // The canonical content of a row: a JSON array, times as epoch microseconds
    // (independent of the session's TimeZone and DateStyle). No SET clause:
    // PostgreSQL inlines it (85 µs per row when it is called, measured); the
    // SECURITY DEFINER callers pin the search path.
    `CREATE FUNCTION outbox_audit_canonical(l ${t.auditLog}) RETURNS text
      LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT ${canonicalExpression("l")}
      $fn$`,
    `CREATE FUNCTION outbox_audit_link(prev bytea, l ${t.auditLog}) RETURNS bytea
      LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT sha256(prev || sha256(convert_to(outbox_audit_canonical(l), 'UTF8')))
      $fn$`,
    ...captureFunction(t, pinned, yield* outboxColumns(t)),
    ...captureTriggers(t),
    `CREATE FUNCTION outbox_audit_guard() RETURNS trigger
      LANGUAGE plpgsql ${pinned} AS $fn$
      BEGIN
        IF TG_LEVEL = 'ROW' AND TG_OP = 'UPDATE' THEN
          IF OLD.hash IS NULL AND OLD.chain_pos IS NULL AND OLD.prev_hash IS NULL AND OLD.sealed_at IS NULL
             AND NEW.hash IS NOT NULL AND NEW.chain_pos IS NOT NULL AND NEW.prev_hash IS NOT NULL
             AND (${contentColumns.map((c) => `NEW.${c}`).join(", ")}) IS NOT DISTINCT FROM
                 (${contentColumns.map((c) => `OLD.${c}`).join(", ")}) THEN
            RETURN NEW;
          END IF;
        END IF;
        -- the partition manager moves rows out of DEFAULT into a new partition
        -- in one transaction holding its advisory lock on this table
        IF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' AND TG_TABLE_NAME = '${t.auditLog}_default' AND EXISTS (
             SELECT 1 FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 2
               AND classid = hashtext('outbox.partitions')::oid AND objid = hashtext(${sqlString(parent)})::oid) THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION '${t.auditLog} is append-only: % refused', TG_OP
          USING ERRCODE = 'insufficient_privilege',
                HINT = 'audit rows are only appended, sealed once, and removed by partition retention';
      END
      $fn$`,
    `CREATE TRIGGER ${t.auditLog}_append_only BEFORE UPDATE OR DELETE ON ${t.auditLog}
      FOR EACH ROW EXECUTE FUNCTION outbox_audit_guard()`,
    `CREATE TRIGGER ${t.auditLog}_no_truncate BEFORE TRUNCATE ON ${t.auditLog}
      FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_guard()`,
    `CREATE TRIGGER ${t.auditHead}_append_only BEFORE DELETE OR TRUNCATE ON ${t.auditHead}
      FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_guard()`,
    `CREATE TRIGGER ${t.auditCheckpoint}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ${t.auditCheckpoint}
      FOR EACH STATEMENT EXECUTE FUNCTION outbox_audit_guard()`,
    // Seals up to max_rows committed rows: consecutive positions after the
    // head, in audit_id order among the rows visible now (commit-visibility
    // order), hash = sha256(prev_hash || sha256(canonical content)).
    `CREATE FUNCTION outbox_audit_seal(max_rows integer DEFAULT 10000) RETURNS integer
      LANGUAGE plpgsql SECURITY DEFINER ${pinned} AS $fn$
      DECLARE
        head_pos  bigint;
        head_hash bytea;
        ids       bigint[];
        ats       timestamptz[];
        digests   bytea[];
        positions bigint[];
        prevs     bytea[];
        hashes    bytea[];
        h         bytea;
        n         integer;
        updated   integer;
      BEGIN
        IF max_rows IS NULL OR max_rows < 1 THEN
          RAISE EXCEPTION 'outbox_audit_seal: max_rows must be positive, got %', max_rows USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF current_setting('transaction_isolation') <> 'read committed' THEN
          RAISE EXCEPTION 'outbox_audit_seal must run in READ COMMITTED (it reads the head after taking its lock)'
            USING ERRCODE = 'invalid_transaction_state';
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('outbox.audit'), hashtext('seal'));
        SELECT chain_pos, hash INTO head_pos, head_hash FROM ${t.auditHead};
        SELECT array_agg(l.audit_id ORDER BY l.audit_id),
               array_agg(l.recorded_at ORDER BY l.audit_id),
               array_agg(sha256(convert_to(outbox_audit_canonical(l), 'UTF8')) ORDER BY l.audit_id)
          INTO ids, ats, digests
          FROM (SELECT * FROM ${t.auditLog} WHERE hash IS NULL ORDER BY audit_id LIMIT max_rows) l;
        n := coalesce(array_length(ids, 1), 0);
        IF n = 0 THEN
          RETURN 0;
        END IF;
        h := head_hash;
        positions := array_fill(0::bigint, ARRAY[n]);
        prevs := array_fill(NULL::bytea, ARRAY[n]);
        hashes := array_fill(NULL::bytea, ARRAY[n]);
        FOR i IN 1..n LOOP
          prevs[i] := h;
          h := sha256(h || digests[i]);
          hashes[i] := h;
          positions[i] := head_pos + i;
        END LOOP;
        UPDATE ${t.auditLog} l
           SET chain_pos = u.pos, prev_hash = u.prev, hash = u.hash, sealed_at = clock_timestamp()
          FROM unnest(ids, ats, positions, prevs, hashes) AS u(id, at, pos, prev, hash)
         WHERE l.recorded_at = u.at AND l.audit_id = u.id AND l.hash IS NULL;
        GET DIAGNOSTICS updated = ROW_COUNT;
        IF updated <> n THEN
          -- a row moved under it (the partition manager rescuing DEFAULT rows): seal nothing, retry next run
          RAISE EXCEPTION 'outbox_audit_seal: % of % rows could be sealed; nothing sealed, retry', updated, n
            USING ERRCODE = 'serialization_failure';
        END IF;
        UPDATE ${t.auditHead} SET chain_pos = head_pos + n, hash = h, sealed_at = clock_timestamp();
        RETURN n;
      END
      $fn$`,
    // For every month boundary B after the last checkpoint (or after the
    // genesis row's month) up to at - grace, once no row recorded before B is
    // unsealed: the first position at or after B and the links before it.
    `CREATE FUNCTION outbox_audit_checkpoint(at timestamptz, grace interval DEFAULT interval '1 day') RETURNS integer
      LANGUAGE plpgsql SECURITY DEFINER ${pinned} AS $fn$
      DECLARE
        b        timestamptz;
        last_b   timestamptz;
        head_pos bigint;
        first    bigint;
        made     integer := 0;
      BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('outbox.audit'), hashtext('seal'));
        SELECT chain_pos INTO head_pos FROM ${t.auditHead};
        SELECT max(boundary) INTO last_b FROM ${t.auditCheckpoint};
        IF last_b IS NULL THEN
          SELECT date_trunc('month', recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' INTO last_b
            FROM ${t.auditLog} WHERE chain_pos = 1;
          IF last_b IS NULL THEN
            RETURN 0;
          END IF;
        END IF;
        b := ((last_b AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        WHILE b <= at - grace LOOP
          EXIT WHEN EXISTS (SELECT 1 FROM ${t.auditLog} WHERE hash IS NULL AND recorded_at < b);
          SELECT coalesce(min(chain_pos), head_pos + 1) INTO first
            FROM ${t.auditLog} WHERE recorded_at >= b AND chain_pos IS NOT NULL;
          INSERT INTO ${t.auditCheckpoint} (boundary, first_pos, positions, hashes)
          SELECT b, first, coalesce(array_agg(chain_pos ORDER BY chain_pos), '{}'), coalesce(array_agg(hash ORDER BY chain_pos), '{}')
            FROM ${t.auditLog} WHERE recorded_at < b AND chain_pos >= first - 1;
          made := made + 1;
          b := ((b AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        END LOOP;
        RETURN made;
      END
      $fn$`,
    `REVOKE ALL ON ${t.auditLog}, ${t.auditHead}, ${t.auditCheckpoint} FROM PUBLIC`,
    `REVOKE ALL ON SEQUENCE ${t.auditLog}_audit_id_seq FROM PUBLIC`,
    `REVOKE ALL ON FUNCTION outbox_audit_capture(), outbox_audit_guard(), outbox_audit_seal(integer),
      outbox_audit_checkpoint(timestamptz, interval) FROM PUBLIC`,
    // "who changed event X": every audit row of an event, in order
    `CREATE FUNCTION outbox_audit_history(p_event_id bigint DEFAULT NULL, p_tracking_id uuid DEFAULT NULL)
      RETURNS SETOF ${t.auditLog} LANGUAGE plpgsql STABLE AS $fn$
      DECLARE
        ids bigint[];
      BEGIN
        IF p_tracking_id IS NULL THEN
          RETURN QUERY SELECT * FROM ${t.auditLog} WHERE event_id = p_event_id ORDER BY audit_id;
          RETURN;
        END IF;
        -- the event ids of a tracking id, from its audited INSERT (indexed)
        ids := ARRAY(SELECT event_id FROM ${t.auditLog} WHERE tracking_id = p_tracking_id AND operation = 'INSERT');
        IF cardinality(ids) > 0 THEN
          RETURN QUERY SELECT * FROM ${t.auditLog}
            WHERE event_id = ANY (ids) AND tracking_id = p_tracking_id AND (p_event_id IS NULL OR event_id = p_event_id)
            ORDER BY audit_id;
        ELSE
          -- an event published before the audit trail was enabled: a scan
          RETURN QUERY SELECT * FROM ${t.auditLog}
            WHERE tracking_id = p_tracking_id AND (p_event_id IS NULL OR event_id = p_event_id)
            ORDER BY audit_id;
        END IF;
      END
      $fn$`,
    `COMMENT ON FUNCTION outbox_audit_history(bigint, uuid) IS
      'Every audit row of one event (by event id or tracking id), in order; needs SELECT on ${t.auditLog} only'`,
    `CREATE VIEW v_outbox_sox_audit AS
      SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day,
             operation,
             db_user,
             count(*) AS changes,
             count(DISTINCT event_id) AS events,
             count(*) FILTER (WHERE old_status IS DISTINCT FROM new_status AND operation = 'UPDATE') AS status_changes,
             count(*) FILTER (WHERE actor IS NOT NULL) AS with_actor,
             array_agg(DISTINCT application_name) FILTER (WHERE application_name IS NOT NULL) AS applications,
             min(recorded_at) AS first_at,
             max(recorded_at) AS last_at,
             count(*) FILTER (WHERE hash IS NULL) AS unsealed
      FROM ${t.auditLog}
      GROUP BY 1, 2, 3`,
    `COMMENT ON VIEW v_outbox_sox_audit IS 'Daily (UTC) summary of outbox changes by operation and database user'`,
    `CREATE VIEW v_outbox_dead_letter_activity AS
      SELECT audit_id,
             recorded_at,
             CASE WHEN new_status = 'DEAD_LETTER' THEN 'DEAD_LETTERED' ELSE 'REDRIVEN' END AS activity,
             event_id,
             tracking_id,
             old_status,
             new_status,
             last_error AS error,
             actor,
             reason,
             db_user,
             application_name,
             chain_pos
      FROM ${t.auditLog}
      WHERE (new_status = 'DEAD_LETTER' AND old_status IS DISTINCT FROM 'DEAD_LETTER')
         OR (operation = 'UPDATE' AND old_status = 'DEAD_LETTER' AND new_status IS DISTINCT FROM 'DEAD_LETTER')`,
    `COMMENT ON VIEW v_outbox_dead_letter_activity IS
      'What went to DEAD_LETTER, when and why (error), and every redrive out of it with its actor and reason'`
  ]
  for (const statement of statements) yield* sql.unsafe(statement)
  yield* sql.unsafe(`DO $do$
    DECLARE m date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    BEGIN
      FOR i IN 0..${initialMonthsAhead} LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF ${t.auditLog} FOR VALUES FROM (%L) TO (%L)',
          '${t.auditLog}_p' || to_char(m + make_interval(months => i), 'YYYYMMDD'),
          (m + make_interval(months => i))::timestamp AT TIME ZONE 'UTC',
          (m + make_interval(months => i + 1))::timestamp AT TIME ZONE 'UTC');
      END LOOP;
    END
    $do$`)
})

/** A string literal for generated SQL (only ever catalog names here). */
const sqlString = (value: string): string => `'${value.replaceAll("'", "''")}'`

/**
 * Re-creates the capture triggers when `tables.outbox` lacks them (it was
 * swapped for another one, e.g. by the online migration's finish), and the
 * capture function when the outbox's columns changed since it was
 * generated. Reads the catalog only when they are all there; returns
 * whether it changed anything. Run after every audit migration run.
 *
 * @internal
 */
export const ensureTriggers = (t: OutboxTables.OutboxTables): Effect.Effect<boolean, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_trigger
      WHERE tgrelid = to_regclass(${Identifier.quote(t.outbox)}) AND NOT tgisinternal
        AND tgname IN ('outbox_audit_insert', 'outbox_audit_update', 'outbox_audit_delete', 'outbox_audit_truncate')`
    const columns = yield* outboxColumns(t)
    const [fn] = yield* sql<{ comment: string | null }>`
      SELECT obj_description(to_regprocedure('outbox_audit_capture()'), 'pg_proc') AS comment`
    const stale = fn?.comment !== captureComment(columns)
    const triggers = captureTriggers(t)
    if (row!.n === triggers.length && !stale) return false
    if (stale) for (const statement of captureFunction(t, (yield* pinnedSearchPath).pinned, columns)) yield* sql.unsafe(statement)
    for (const statement of triggers) yield* sql.unsafe(statement)
    return true
  })
