import { assert, describe, it } from "@effect/vitest"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as Identifier from "@outbox/sql/Identifier"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import * as Fs from "node:fs"
import { fileURLToPath } from "node:url"

// A database left by release 0.1.0 (`test/fixtures/release-0.1.0*.sql`, made by `fixtures/capture.ts`
// on that release's code: schema, rows of every table, ledgers) is restored, migrated by this code,
// and compared with a fresh database migrated by this code. The fixture's daily and monthly partitions
// are named after the day it was captured: partitions with a date are compared by count, not by name.

/**
 * The outbox migrations added since release 0.1.0, as the migrator reports them applied: what an upgrade
 * runs (a new migration is appended here).
 */
const sinceRelease: ReadonlyArray<readonly [number, string]> = [
  [7, "wakeup_trigger"],
  [8, "ordering"],
  [9, "tenant"],
  [10, "ready_index"],
  [11, "stats_due_age"],
  [12, "tenant_due_index"],
  [13, "claim_horizon"]
]

/**
 * The data after an upgrade equals the data before, but for the outbox ledger, which gains one row per
 * migration of `sinceRelease` (and keeps the ones it had).
 */
const assertDataKept = (
  before: { readonly rows: Record<string, unknown> },
  after: { readonly rows: Record<string, unknown> },
  sequences?: { readonly before: unknown; readonly after: unknown }
) => {
  assert.deepStrictEqual(Object.keys(after.rows).sort(), Object.keys(before.rows).sort())
  for (const table of Object.keys(before.rows)) {
    if (table === "outbox_migrations") continue
    if (table === "outbox") continue
    assert.deepStrictEqual(after.rows[table], before.rows[table], table)
  }
  // 0008 adds ordering_key, NULL (the default key) on every row of before; the rest is kept
  const withoutKey = (data: { readonly rows: Record<string, unknown> }) =>
    rowsOf(data, "outbox").map(({ partition, row }) => {
      const { ordering_key: _, tenant: __, ...rest } = row
      return JSON.stringify({ partition, row: rest })
    }).sort()
  assert.deepStrictEqual(withoutKey(after), withoutKey(before), "outbox")
  for (const { row } of rowsOf(after, "outbox")) {
    assert.strictEqual(row.ordering_key, null, `ordering_key of row ${row.id}`)
    assert.strictEqual(row.tenant, null, `tenant of row ${row.id}`)
  }
  const ledger = (data: { readonly rows: Record<string, unknown> }) =>
    rowsOf(data, "outbox_migrations").map((r) => r.row as { readonly migration_id: number; readonly name: string })
      .sort((a, b) => a.migration_id - b.migration_id)
  const kept = ledger(after).filter((m) => m.migration_id <= 6)
  assert.deepStrictEqual(kept, ledger(before))
  assert.deepStrictEqual(
    ledger(after).filter((m) => m.migration_id > 6).map((m) => [m.migration_id, m.name]),
    sinceRelease.map(([id, name]) => [id, name])
  )
  if (sequences !== undefined) assert.deepStrictEqual(sequences.after, sequences.before)
}

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}.sql`, import.meta.url))

/**
 * The statements of a plain-SQL dump (`pg_dump --inserts`): split at `;` outside quotes, quoted identifiers,
 * dollar-quoted bodies and comments, so the test needs no `psql` (a fresh machine running the embedded
 * PostgreSQL has none).
 */
const statements = (text: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  let start = 0
  let i = 0
  while (i < text.length) {
    const c = text[i]!
    if (c === "'" || c === "\"") {
      const end = text.indexOf(c, i + 1)
      i = end < 0 ? text.length : end + 1 // a doubled quote is two quoted runs side by side: same split
    } else if (c === "-" && text[i + 1] === "-") {
      const end = text.indexOf("\n", i)
      i = end < 0 ? text.length : end + 1
    } else if (c === "$") {
      const tag = /^\$[A-Za-z_0-9]*\$/.exec(text.slice(i, i + 64))?.[0]
      if (tag === undefined) i++
      else {
        const end = text.indexOf(tag, i + tag.length)
        i = end < 0 ? text.length : end + tag.length
      }
    } else if (c === ";") {
      const statement = text.slice(start, i).trim()
      if (statement !== "") out.push(statement)
      start = ++i
    } else i++
  }
  const rest = text.slice(start).trim()
  if (rest !== "") out.push(rest)
  return out
}

/**
 * Restores a plain-SQL dump into the test's database, in one transaction (one connection): the dump's
 * session settings (`SET`, `set_config`) are made transaction-local so they do not outlive it on a pooled
 * connection.
 */
const restore = (file: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const text = Fs.readFileSync(file, "utf8")
    yield* sql.withTransaction(Effect.forEach(statements(text), (statement) =>
      sql.unsafe(
        statement
          .replace(/^SET (?!LOCAL )/, "SET LOCAL ")
          .replace(/^SELECT pg_catalog\.set_config\(('[^']*'), ('[^']*'), false\)$/, "SELECT pg_catalog.set_config($1, $2, true)")
      ), { discard: true }))
  })

/** The relations of the current schema, less the partitions named after a day or a month. */
const relations = `
  SELECT c.oid, c.relname, c.relkind FROM pg_class c
  WHERE c.relnamespace = current_schema()::regnamespace
    AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND NOT (c.relispartition AND coalesce(pg_get_expr(c.relpartbound, c.oid), '') <> 'DEFAULT')`

/** Every object a migration creates, as catalog text, in a stable order. */
const schemaOf = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const query = (text: string) => sql.unsafe<Record<string, unknown>>(`WITH rels AS (${relations}) ${text}`)
  return {
    relations: yield* query(`
      SELECT c.relname AS name, c.relkind::text AS kind,
             -- a REVOKE spells out the default (NULL) privileges, which pg_dump leaves out again
             coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))::text AS acl,
             coalesce(pg_get_partkeydef(c.oid), '') AS partition_key, coalesce(pg_get_expr(c.relpartbound, c.oid), '') AS bound,
             coalesce(obj_description(c.oid, 'pg_class'), '') AS comment
      FROM rels JOIN pg_class c USING (oid) ORDER BY 1`),
    columns: yield* query(`
      SELECT r.relname AS relation, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
             coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS "default", a.attidentity::text AS identity,
             coalesce(col_description(r.oid, a.attnum), '') AS comment, coalesce(a.attacl::text, '') AS acl
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      ORDER BY r.relname, a.attnum`),
    constraints: yield* query(`
      SELECT r.relname AS relation, k.conname AS name, pg_get_constraintdef(k.oid) AS definition
      -- NOT NULL is compared with the columns: PostgreSQL 18 also records it as a constraint, named apart on a
      -- restored partition and a fresh one
      FROM pg_constraint k JOIN rels r ON r.oid = k.conrelid WHERE k.contype <> 'n' ORDER BY 1, 2`),
    indexes: yield* query(`
      SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
      FROM pg_index i JOIN rels r ON r.oid = i.indrelid ORDER BY 1`),
    views: yield* query(`
      SELECT relname AS name, pg_get_viewdef(oid) AS definition FROM rels WHERE relkind IN ('v', 'm') ORDER BY 1`),
    functions: yield* query(`
      SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
             coalesce(p.proacl, acldefault('f'::"char", p.proowner))::text AS acl, coalesce(obj_description(p.oid, 'pg_proc'), '') AS comment
      FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind IN ('f', 'p') ORDER BY 1`),
    triggers: yield* query(`
      SELECT r.relname AS relation, t.tgname AS name, pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled
      FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal ORDER BY 1, 2`),
    sequences: yield* query(`
      SELECT r.relname AS name, s.seqtypid::regtype::text AS type, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle
      FROM pg_sequence s JOIN rels r ON r.oid = s.seqrelid ORDER BY 1`),
    partitions: yield* query(`
      SELECT p.relname AS parent,
             count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT')::int AS dated,
             count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')::int AS "default"
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
      WHERE p.relkind = 'p' AND c.relkind IN ('r', 'p') AND p.relnamespace = current_schema()::regnamespace
      GROUP BY 1 ORDER BY 1`),
    ledgers: yield* query(`
      SELECT 'outbox_migrations' AS ledger, migration_id, name FROM outbox_migrations
      UNION ALL
      SELECT 'outbox_audit_migrations', migration_id, name FROM outbox_audit_migrations
      WHERE to_regclass('outbox_audit_migrations') IS NOT NULL
      ORDER BY 1, 2`).pipe(
      // the audit ledger exists only once the audit trail was installed
      Effect.catch(() =>
        sql.unsafe<Record<string, unknown>>(
          `SELECT 'outbox_migrations' AS ledger, migration_id, name FROM outbox_migrations ORDER BY 2`
        )
      )
    )
  }
})

/** Every row of every table (with the partition it sits in) and every sequence's position. */
const dataOf = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const tables = yield* sql.unsafe<{ relname: string }>(
    `WITH rels AS (${relations})
     SELECT rels.relname FROM rels JOIN pg_class c USING (oid)
     WHERE rels.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1`
  )
  const rows: Record<string, unknown> = {}
  for (const { relname } of tables) {
    const table = Identifier.quote(yield* Identifier.validate(relname, "table"))
    const [result] = yield* sql.unsafe<{ rows: string }>(
      `SELECT coalesce(jsonb_agg(jsonb_build_object('partition', t.tableoid::regclass::text, 'row', to_jsonb(t))
                                 ORDER BY to_jsonb(t)::text), '[]'::jsonb)::text AS rows
       FROM ${table} t`
    )
    rows[relname] = JSON.parse(result!.rows)
  }
  const sequences = yield* sql.unsafe<Record<string, unknown>>(
    `SELECT sequencename::text AS name, last_value::text FROM pg_sequences WHERE schemaname = current_schema() ORDER BY 1`
  )
  return { rows, sequences }
})

/** Restores `fixtureName`, migrates it with this code; the data before and after, what was applied, the schema. */
const upgrade = (fixtureName: string, audit: boolean) =>
  Effect.gen(function*() {
    yield* restore(fixture(fixtureName))
    const before = yield* dataOf
    const applied = yield* OutboxMigrations.runWith({ audit })
    const after = yield* dataOf
    const schema = yield* schemaOf
    // the code runs on it: the restored dead letter is listed
    const deadLetters = yield* Effect.flatMap(DeadLetters.make(), (service) => service.list())
    const verification = audit ? yield* Effect.flatMap(AuditTrail.make, (service) => service.verify()) : undefined
    return { before, applied, after, schema, deadLetters, verification }
  }).pipe(Effect.provide(TestDatabase.layer))

/** A fresh database migrated by this code. */
const fresh = (audit: boolean) =>
  Effect.andThen(OutboxMigrations.runWith({ audit }), schemaOf).pipe(Effect.provide(TestDatabase.layer))

const rowsOf = (data: { readonly rows: Record<string, unknown> }, table: string) =>
  data.rows[table] as ReadonlyArray<{ readonly partition: string; readonly row: Record<string, unknown> }>

describe("MigrationUpgrade", () => {
  it.live("release 0.1.0 (audit off) migrates forward: nothing lost, nothing re-applied, the schema of a fresh database", () =>
    Effect.gen(function*() {
      const upgraded = yield* upgrade("release-0.1.0", false)
      // the fixture holds what it should: every status, the DEFAULT partition, inbox, redrive log
      const outbox = rowsOf(upgraded.before, "outbox")
      assert.deepStrictEqual(
        [...new Set(outbox.map((r) => r.row.status))].sort(),
        ["COMPLETED", "DEAD_LETTER", "FAILED", "PENDING", "PROCESSING"]
      )
      assert.isTrue(outbox.some((r) => r.partition === "outbox_default"))
      assert.isTrue(outbox.some((r) => r.partition !== "outbox_default"))
      assert.lengthOf(rowsOf(upgraded.before, "outbox_inbox"), 1)
      assert.lengthOf(rowsOf(upgraded.before, "outbox_redrive_log"), 1)
      assert.lengthOf(rowsOf(upgraded.before, "outbox_migrations"), 6)

      assert.deepStrictEqual(upgraded.applied, sinceRelease)
      assertDataKept(upgraded.before, upgraded.after, { before: upgraded.before.sequences, after: upgraded.after.sequences })
      assert.deepStrictEqual(
        upgraded.deadLetters.map((d) => d.aggregateId),
        outbox.filter((r) => r.row.status === "DEAD_LETTER").map((r) => r.row.aggregate_id)
      )
      assert.deepStrictEqual(upgraded.schema, yield* fresh(false))
    }))

  it.live("release 0.1.0 with the audit trail migrates forward: rows, ledgers and the sealed chain intact", () =>
    Effect.gen(function*() {
      const upgraded = yield* upgrade("release-0.1.0-audit", true)
      const log = rowsOf(upgraded.before, "outbox_audit_log")
      assert.isTrue(log.some((r) => r.row.hash !== null), "the fixture has sealed audit rows")
      assert.isTrue(log.some((r) => r.row.hash === null), "and unsealed ones")
      assert.lengthOf(rowsOf(upgraded.before, "outbox_audit_migrations"), 1)

      assert.deepStrictEqual(upgraded.applied, sinceRelease)
      assertDataKept(upgraded.before, upgraded.after, { before: upgraded.before.sequences, after: upgraded.after.sequences })
      assert.isTrue(upgraded.verification!.ok, upgraded.verification!.broken?.message)
      assert.strictEqual(upgraded.verification!.checked, log.filter((r) => r.row.hash !== null).length)
      assert.deepStrictEqual(upgraded.schema, yield* fresh(true))
    }))

  it.live("enabling the audit trail on a release 0.1.0 database gives the schema of a fresh audited one", () =>
    Effect.gen(function*() {
      const upgraded = yield* upgrade("release-0.1.0", true)
      assert.deepStrictEqual(upgraded.applied, [...sinceRelease, [1, "audit_create_audit_log"]])
      // the tables that were there keep their rows (the outbox with 0008's ordering_key, NULL)
      for (const table of Object.keys(upgraded.before.rows)) {
        if (table === "outbox_migrations" || table === "outbox") continue
        assert.deepStrictEqual(upgraded.after.rows[table], upgraded.before.rows[table], table)
      }
      assert.deepStrictEqual(
        rowsOf(upgraded.after, "outbox").map(({ partition, row }) => ({ partition, row: { ...row, ordering_key: undefined, tenant: undefined } })),
        rowsOf(upgraded.before, "outbox").map(({ partition, row }) => ({ partition, row: { ...row, ordering_key: undefined, tenant: undefined } }))
      )
      assert.isTrue(upgraded.verification!.ok)
      assert.deepStrictEqual(upgraded.schema, yield* fresh(true))
    }))
})
