/**
 * Online migration from a plain (unpartitioned) outbox to a partitioned one,
 * with events flowing the whole time.
 *
 * The steps, each safe to repeat:
 *
 * 1. `prepare`: creates the partitioned table beside the plain one (sharing
 *    its id sequence, so ids stay unique and increasing across both), with
 *    daily partitions from the oldest legacy row to the premake horizon, and
 *    adds the marker column `outbox_migrated_at` to the legacy table (a
 *    catalog-only change) plus three partial indexes built `CONCURRENTLY`;
 *    then applies the library's migrations for the partitioned table
 *    (`OutboxMigrations.runOutboxFor`), so that health, partition maintenance
 *    and dead letters work on it, and the store's start-up migrations for it
 *    find everything in place.
 * 2. Run the relays and producers with `PgOutboxStore` option `legacy`
 *    (environment: `OUTBOX_TABLE`, `OUTBOX_MIGRATION_LEGACY_TABLE`) and the
 *    flag `dualWrite` (`OUTBOX_MIGRATION_DUAL_WRITE=true`): publishes write
 *    both tables, the relay reads the union of partitioned rows and legacy
 *    rows not yet copied, and mirrors every transition onto the legacy row.
 *    **Rollback** is unsetting the flag: the legacy table is complete and
 *    current, and is authoritative again.
 * 3. `backfill`: copies legacy rows that have no copy yet, in batches (one
 *    short transaction each; rows under a lease are left for a later batch)
 *    and marks them in the same statement.
 * 4. `switchOver`: legacy inserts (plain-SQL producers, processes still
 *    without the flag) are redirected into the partitioned table by a
 *    trigger, and a last backfill runs. From here on processes may run the
 *    plain store on the partitioned table (`OUTBOX_TABLE` only); once one
 *    does, rolling back is no longer safe.
 * 5. `finish`, when every process runs the plain store: renames the legacy
 *    table to `<legacy>_retired` and the partitioned one (its partitions and
 *    indexes too) to the legacy name, and leaves a view under the old
 *    partitioned name so processes still configured with it keep working.
 *
 * Why not copy-then-delete: a row moved while a worker holds its lease would
 * make that worker's fenced `complete` miss it, and the event would be
 * delivered twice. Why mark instead of checking for a copy: a claim's row
 * lock re-check sees the mark a concurrent backfill committed, but not a row
 * the backfill inserted into another table.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Migrator from "effect/sql/Migrator"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "./Identifier.ts"
import { fromSql } from "./internal/sqlError.ts"
import * as CreateOutbox from "./migrations/0001_create_outbox.ts"
import * as HealthViews from "./migrations/0004_health_views.ts"
import * as RelayGauges from "./migrations/0005_relay_gauges.ts"
import * as OutboxMigrations from "./OutboxMigrations.ts"
import * as OutboxTables from "./OutboxTables.ts"

/**
 * A migration step refused or failed (named apart from `effect/sql`'s
 * `Migrator.MigrationError`, which the library's own migrations fail with).
 * `reason` names why:
 * `NotPlain` (the legacy table is missing, partitioned, or lacks outbox
 * columns), `NotPrepared`, `BackfillIncomplete` (live legacy rows remain),
 * `NotSwitched`, `Database` (a statement failed).
 *
 * @category errors
 * @since 0.1.0
 */
export class OnlineMigrationError extends Schema.TaggedError<OnlineMigrationError>("@outbox/sql/OnlineMigrationError")("OnlineMigrationError", {
  reason: Schema.Literals(["NotPlain", "NotPrepared", "BackfillIncomplete", "NotSwitched", "InvalidName", "Database"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * The two tables of a migration.
 *
 * @category models
 * @since 0.1.0
 */
export interface Tables {
  /** The plain outbox (default `outbox`). */
  readonly legacy?: string | undefined
  /** The partitioned table created beside it (default `outbox_partitioned`). */
  readonly table?: string | undefined
}

/**
 * Where a migration stands.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status {
  readonly legacy: string
  readonly table: string
  readonly phase: "not-prepared" | "prepared" | "switched" | "finished"
  /** Legacy rows without a copy (the backfill's remaining work). */
  readonly uncopied: number
  /** Of those, rows under a lease (copied once their lease ends). */
  readonly uncopiedLeased: number
  /** Rows in the partitioned table. */
  readonly copies: number
}

/**
 * What one `backfill` call did.
 *
 * @category models
 * @since 0.1.0
 */
export interface BackfillReport {
  readonly batches: number
  readonly copied: number
  /** Live legacy rows left (under a lease when the batches ran). */
  readonly remaining: number
}

/** The legacy table's marker column (also known to `PgOutboxStore`). */
const marker = "outbox_migrated_at"

/** The columns copied from a legacy row. */
const columns = [
  "id",
  "tracking_id",
  "aggregate_type",
  "aggregate_id",
  "event_type",
  "payload",
  "metadata",
  "status",
  "retry_count",
  "max_retries",
  "created_at",
  "processed_at",
  "available_at",
  "locked_until",
  "lock_token",
  "last_error"
] as const

const database = fromSql(({ cause, message }) => new OnlineMigrationError({ reason: "Database", message, cause }))

const failure = (step: string) => (cause: SqlError.SqlError | Migrator.MigrationError | Identifier.InvalidIdentifier) =>
  cause._tag === "SqlError"
    ? database(step)(cause)
    : new OnlineMigrationError({
      reason: cause._tag === "InvalidIdentifier" ? "InvalidName" : "Database",
      message: `${step}: ${cause.message}`,
      cause
    })

const resolve = Effect.fnUntraced(function*(tables: Tables) {
  const invalid = (e: Identifier.InvalidIdentifier) =>
    new OnlineMigrationError({ reason: "InvalidName", message: `${e.kind} "${e.value}": ${e.reason}`, cause: e })
  const legacy = yield* Identifier.validate(tables.legacy ?? "outbox", "legacy table").pipe(Effect.mapError(invalid))
  const table = yield* Identifier.validate(tables.table ?? "outbox_partitioned", "partitioned table").pipe(Effect.mapError(invalid))
  const derived = (suffix: string) => Identifier.validate(`${legacy}${suffix}`, "derived name").pipe(Effect.mapError(invalid))
  return {
    legacy,
    table,
    L: Identifier.quote(legacy),
    T: Identifier.quote(table),
    retired: yield* derived("_retired"),
    uncopiedIndex: yield* derived("_uncopied_idx"),
    liveClaimableIndex: yield* derived("_live_claimable_idx"),
    liveLeasedIndex: yield* derived("_live_leased_idx"),
    redirect: yield* derived("_redirect")
  }
})
type Resolved = Effect.Success<ReturnType<typeof resolve>>

const relkind = (sql: SqlClient.SqlClient, name: string) =>
  Effect.map(
    sql<{ relkind: string }>`SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(${Identifier.quote(name)})`,
    (rows) => rows[0]?.relkind
  )

/**
 * Creates the partitioned table beside the plain one and prepares the plain
 * one (marker column, partial indexes), then applies the outbox migrations
 * for the partitioned table (views, redrive log, dead-letter index; tracked
 * in `outbox_migrations`). Idempotent.
 *
 * @category steps
 * @since 0.1.0
 */
export const prepare = Effect.fn("OnlineMigration.prepare")(function*(
  tables: Tables & { readonly premakeDays?: number | undefined } = {}
) {
  const sql = yield* SqlClient.SqlClient
  const r = yield* resolve(tables)
  const kind = yield* relkind(sql, r.legacy).pipe(Effect.mapError(database("prepare")))
  if (kind !== "r") {
    return yield* new OnlineMigrationError({
      reason: "NotPlain",
      message: kind === undefined ? `table ${r.legacy} does not exist` : `${r.legacy} is not a plain table (relkind ${kind})`
    })
  }
  const present = yield* sql<{ column_name: string }>`
    SELECT column_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = ${r.legacy}`.pipe(Effect.mapError(database("prepare")))
  const have = new Set(present.map((c) => c.column_name))
  // available_at is this library's backoff column; a hand-rolled outbox may lack it
  const missing = columns.filter((c) => c !== "available_at" && !have.has(c))
  if (missing.length > 0) {
    return yield* new OnlineMigrationError({ reason: "NotPlain", message: `${r.legacy} lacks outbox column(s): ${missing.join(", ")}` })
  }
  const [sequence] = yield* sql<{ name: string | null }>`
    SELECT s.relname AS name FROM pg_class s
    WHERE s.oid = pg_get_serial_sequence(${Identifier.quote(r.legacy)}, 'id')::regclass`.pipe(Effect.mapError(database("prepare")))
  if (sequence?.name == null) {
    return yield* new OnlineMigrationError({ reason: "NotPlain", message: `${r.legacy}.id draws from no sequence (serial or identity)` })
  }
  const invalidName = (e: Identifier.InvalidIdentifier) =>
    new OnlineMigrationError({ reason: "InvalidName", message: e.message, cause: e })
  const partitioned = yield* OutboxTables.make(r.table).pipe(Effect.mapError(invalidName))
  const ddl = yield* CreateOutbox.tableStatements(partitioned, { idSequence: sequence.name }).pipe(Effect.mapError(invalidName))
  const legacyDdl = [
    `ALTER TABLE ${r.L} ADD COLUMN IF NOT EXISTS available_at timestamptz`,
    `ALTER TABLE ${r.L} ADD COLUMN IF NOT EXISTS ${marker} timestamptz`,
    `CREATE SEQUENCE IF NOT EXISTS ${Identifier.quote(partitioned.lockTokenSequence)}`,
    CreateOutbox.inboxStatement(partitioned)
  ]
  for (const statement of [...ddl, ...legacyDdl]) yield* sql.unsafe(statement).pipe(Effect.mapError(database("prepare")))
  // outside any transaction, without blocking writers
  const indexes = [
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${Identifier.quote(r.uncopiedIndex)} ON ${r.L} (id) WHERE ${marker} IS NULL`,
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${Identifier.quote(r.liveClaimableIndex)} ON ${r.L} (id)
       WHERE status IN ('PENDING', 'FAILED') AND ${marker} IS NULL`,
    `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${Identifier.quote(r.liveLeasedIndex)} ON ${r.L} (locked_until)
       WHERE status = 'PROCESSING'`
  ]
  for (const statement of indexes) yield* sql.unsafe(statement).pipe(Effect.mapError(database("prepare")))
  // daily partitions from the oldest legacy row's day to the premake horizon
  const [span] = yield* sql<{ oldest: Date | null }>`SELECT min(created_at) AS oldest FROM ${sql.literal(r.L)}`.pipe(
    Effect.mapError(database("prepare"))
  )
  const created = yield* OutboxMigrations.createDailyPartitions(partitioned, {
    from: span?.oldest ?? undefined,
    days: tables.premakeDays ?? OutboxMigrations.initialPremakeDays
  }).pipe(Effect.mapError(failure("prepare")))
  // the library's migrations, for the partitioned table: what the store, dead letters, health and partition
  // maintenance read from here on (views, redrive log...); indexes and views bound to the partitioned table
  // follow it when `finish` renames it
  yield* OutboxMigrations.runOutboxFor(partitioned).pipe(Effect.mapError(failure("prepare: outbox migrations")))
  return { table: r.table, legacy: r.legacy, partitionsCreated: created }
})

const copyBatch = (sql: SqlClient.SqlClient, r: Resolved, batchSize: number) => {
  const list = columns.join(", ")
  // The batch's FOR UPDATE returns each row's latest version (after a
  // concurrent transition): the copy is taken from it, not from the
  // statement's snapshot. Leased rows are left for a later batch.
  return sql<{ copied: number }>`
    WITH batch AS (
      SELECT ${sql.literal(list)} FROM ${sql.literal(r.L)}
      WHERE ${sql.literal(marker)} IS NULL AND status <> 'PROCESSING'
      ORDER BY id LIMIT ${sql.literal(String(Math.max(1, Math.trunc(batchSize))))}
      FOR UPDATE SKIP LOCKED
    ), copied AS (
      INSERT INTO ${sql.literal(r.T)} (${sql.literal(list)})
      SELECT ${sql.literal(list)} FROM batch
      ON CONFLICT DO NOTHING
    ), marked AS (
      UPDATE ${sql.literal(r.L)} l SET ${sql.literal(marker)} = now() FROM batch WHERE l.id = batch.id RETURNING l.id
    )
    SELECT count(*)::int AS copied FROM marked`.pipe(Effect.map((rows) => rows[0]?.copied ?? 0))
}

const uncopied = (sql: SqlClient.SqlClient, r: Resolved) =>
  sql<{ uncopied: number; leased: number }>`
    SELECT count(*)::int AS uncopied, count(*) FILTER (WHERE status = 'PROCESSING')::int AS leased
    FROM ${sql.literal(r.L)} WHERE ${sql.literal(marker)} IS NULL`.pipe(Effect.map((rows) => rows[0]!))

/**
 * Copies legacy rows without a copy into the partitioned table, `batchSize`
 * rows per transaction, until none is left but rows under a lease (or
 * `maxBatches` ran). `onBatch` sees the running total (for progress output).
 *
 * @category steps
 * @since 0.1.0
 */
export const backfill = Effect.fn("OnlineMigration.backfill")(function*(
  options: Tables & {
    readonly batchSize?: number | undefined
    readonly maxBatches?: number | undefined
    readonly onBatch?: ((copied: number) => Effect.Effect<void>) | undefined
  } = {}
) {
  const sql = yield* SqlClient.SqlClient
  const r = yield* resolve(options)
  yield* requirePrepared(sql, r)
  let batches = 0
  let copied = 0
  while (options.maxBatches === undefined || batches < options.maxBatches) {
    const n = yield* copyBatch(sql, r, options.batchSize ?? 1000).pipe(Effect.mapError(database("backfill")))
    if (n === 0) break
    batches++
    copied += n
    if (options.onBatch) yield* options.onBatch(copied)
  }
  const left = yield* uncopied(sql, r).pipe(Effect.mapError(database("backfill")))
  return { batches, copied, remaining: left.uncopied } satisfies BackfillReport
})

const requirePrepared = (sql: SqlClient.SqlClient, r: Resolved) =>
  Effect.gen(function*() {
    const [state] = yield* sql<{ table: string | null; column: string | null }>`
      SELECT to_regclass(${r.T})::text AS table,
             (SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(${r.L}) AND attname = ${marker} AND NOT attisdropped) AS column`
      .pipe(Effect.mapError(database("status")))
    if (state?.table == null || state.column == null) {
      return yield* new OnlineMigrationError({ reason: "NotPrepared", message: `${r.legacy} -> ${r.table}: run prepare first` })
    }
  })

/**
 * Redirects inserts into the legacy table to the partitioned one (rows
 * written by dual-writing processes, which carry the marker, pass through)
 * and runs a last backfill. Refuses while live legacy rows remain under a
 * lease: run it again once they are done.
 *
 * @category steps
 * @since 0.1.0
 */
export const switchOver = Effect.fn("OnlineMigration.switchOver")(function*(tables: Tables & { readonly batchSize?: number } = {}) {
  const sql = yield* SqlClient.SqlClient
  const r = yield* resolve(tables)
  yield* requirePrepared(sql, r)
  const list = columns.filter((c) => c !== "id").join(", ")
  const values = columns.filter((c) => c !== "id").map((c) => `NEW.${c}`).join(", ")
  const fn = Identifier.quote(r.redirect)
  const statements = [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN
       IF NEW.${marker} IS NOT NULL THEN RETURN NEW; END IF;
       INSERT INTO ${r.T} (id, ${list}) VALUES (NEW.id, ${values});
       RETURN NULL;
     END $fn$`,
    `DROP TRIGGER IF EXISTS ${fn} ON ${r.L}`,
    `CREATE TRIGGER ${fn} BEFORE INSERT ON ${r.L} FOR EACH ROW EXECUTE FUNCTION ${fn}()`
  ]
  yield* sql.withTransaction(Effect.forEach(statements, (s) => sql.unsafe(s), { discard: true })).pipe(
    Effect.mapError(database("switch-over"))
  )
  const report = yield* backfill({ ...tables, batchSize: tables.batchSize })
  if (report.remaining > 0) {
    return yield* new OnlineMigrationError({
      reason: "BackfillIncomplete",
      message: `${report.remaining} legacy row(s) are still under a lease; run switch-over again once they are done`
    })
  }
  return report
})

/**
 * Where the migration stands.
 *
 * @category steps
 * @since 0.1.0
 */
export const status = Effect.fn("OnlineMigration.status")(function*(tables: Tables = {}) {
  const sql = yield* SqlClient.SqlClient
  const r = yield* resolve(tables)
  const [state] = yield* sql<{ table: string | null; retired: string | null; trigger: boolean; legacy_kind: string | null }>`
    SELECT to_regclass(${r.T})::text AS table,
           to_regclass(${Identifier.quote(r.retired)})::text AS retired,
           EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(${r.L}) AND tgname = ${r.redirect}) AS trigger,
           (SELECT relkind::text FROM pg_class WHERE oid = to_regclass(${r.L})) AS legacy_kind`.pipe(
    Effect.mapError(database("status"))
  )
  if (state?.retired != null && state.legacy_kind === "p") {
    return { legacy: r.legacy, table: r.table, phase: "finished", uncopied: 0, uncopiedLeased: 0, copies: 0 } satisfies Status
  }
  if (state?.table == null) {
    return { legacy: r.legacy, table: r.table, phase: "not-prepared", uncopied: 0, uncopiedLeased: 0, copies: 0 } satisfies Status
  }
  yield* requirePrepared(sql, r)
  const left = yield* uncopied(sql, r).pipe(Effect.mapError(database("status")))
  const [copies] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.literal(r.T)}`.pipe(Effect.mapError(database("status")))
  return {
    legacy: r.legacy,
    table: r.table,
    phase: state.trigger ? "switched" : "prepared",
    uncopied: left.uncopied,
    uncopiedLeased: left.leased,
    copies: copies?.n ?? 0
  } satisfies Status
})

/**
 * Retires the legacy table: in one transaction, renames it (and its
 * indexes) to `<legacy>_retired…`, gives the partitioned table, its
 * partitions and its indexes the legacy names, hands it the id sequence, and
 * leaves a view under the partitioned table's old name. Then applies the
 * outbox migrations (a no-op when `prepare` applied them) and points the
 * health objects bound to the table by name (`outbox_throughput`) at the
 * legacy name.
 * Run it once every process runs the plain store (no `legacy` option).
 *
 * @category steps
 * @since 0.1.0
 */
export const finish = Effect.fn("OnlineMigration.finish")(function*(tables: Tables = {}) {
  const sql = yield* SqlClient.SqlClient
  const r = yield* resolve(tables)
  const current = yield* status(tables)
  if (current.phase === "finished") return { renamed: [] as ReadonlyArray<string> }
  if (current.phase !== "switched") {
    return yield* new OnlineMigrationError({ reason: "NotSwitched", message: `${r.legacy} -> ${r.table}: run switch-over first` })
  }
  const renamed: Array<string> = []
  const rename = (kind: "TABLE" | "INDEX", from: string, to: string) =>
    Effect.andThen(
      sql.unsafe(`ALTER ${kind} ${Identifier.quote(from)} RENAME TO ${Identifier.quote(to)}`),
      Effect.sync(() => renamed.push(`${from} -> ${to}`))
    )
  yield* sql.withTransaction(Effect.gen(function*() {
    yield* sql`SET LOCAL lock_timeout = '5s'`
    yield* sql.unsafe(`LOCK TABLE ${r.L}, ${r.T} IN ACCESS EXCLUSIVE MODE`)
    const left = yield* uncopied(sql, r)
    if (left.uncopied > 0) {
      return yield* new OnlineMigrationError({ reason: "BackfillIncomplete", message: `${left.uncopied} legacy row(s) have no copy` })
    }
    yield* sql.unsafe(`DROP TRIGGER IF EXISTS ${Identifier.quote(r.redirect)} ON ${r.L}`)
    yield* sql.unsafe(`DROP FUNCTION IF EXISTS ${Identifier.quote(r.redirect)}()`)
    // the legacy table's indexes first: the partitioned table's take their names
    const legacyIndexes = yield* sql<{ name: string }>`
      SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(${r.L})`
    for (const index of legacyIndexes) yield* rename("INDEX", index.name, Identifier.derive(`${r.retired}_`, index.name))
    yield* rename("TABLE", r.legacy, r.retired)
    yield* rename("TABLE", r.table, r.legacy)
    const prefix = `${r.table}_`
    const owned = yield* sql<{ name: string; kind: string }>`
      SELECT c.relname AS name, c.relkind::text AS kind FROM pg_class c
      WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(${r.L}))
        AND starts_with(c.relname, ${prefix})
        AND (c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(${r.L})))
             OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = to_regclass(${r.L})))`
    for (const rel of owned) {
      const to = yield* Identifier.validate(`${r.legacy}_${rel.name.slice(prefix.length)}`, "derived name")
      yield* rename(rel.kind === "i" || rel.kind === "I" ? "INDEX" : "TABLE", rel.name, to)
    }
    const [seq] = yield* sql<{ name: string | null }>`
      SELECT s.relname AS name FROM pg_class s WHERE s.oid = pg_get_serial_sequence(${Identifier.quote(r.retired)}, 'id')::regclass`
    if (seq?.name != null) yield* sql.unsafe(`ALTER SEQUENCE ${Identifier.quote(seq.name)} OWNED BY ${r.L}.id`)
    // processes still configured with the partitioned table's old name keep working through this view
    yield* sql.unsafe(`CREATE VIEW ${r.T} AS SELECT * FROM ${r.L}`)
  })).pipe(Effect.mapError((e) =>
    e._tag === "OnlineMigrationError"
      ? e
      : e._tag === "InvalidIdentifier"
      ? new OnlineMigrationError({ reason: "InvalidName", message: e.message, cause: e })
      : database("finish")(e)
  ))
  // a migration prepared before `prepare` applied the migrations gets them now; then the objects bound to
  // the table by name (the function outbox_throughput) are pointed at its new name
  yield* OutboxTables.make(r.legacy).pipe(
    Effect.flatMap((legacy) =>
      OutboxMigrations.runFor(legacy).pipe(
        Effect.andThen(HealthViews.migration(legacy)),
        Effect.andThen(RelayGauges.migration(legacy))
      )
    ),
    Effect.mapError(failure("migrations after finish"))
  )
  return { renamed: renamed as ReadonlyArray<string> }
})
