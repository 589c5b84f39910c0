/**
 * pg_partman mode: hands the outbox's partitions over to the `pg_partman`
 * extension, where it is installed, instead of the library's own partition
 * manager.
 *
 * - `detect` finds the installed extension (version and schema).
 * - `handOver` registers `outbox` with `create_parent` (daily partitions,
 *   `premakeDays` ahead) and sets retention in `part_config`. It adopts the
 *   daily children the outbox migrations made (renamed to partman's naming
 *   where it differs) and moves the rows of `outbox_default` into daily
 *   children, in one transaction; a second call changes nothing.
 * - `runMaintenance` runs `CALL run_maintenance_proc()` outside any
 *   transaction and reports the outbox partitions it created and dropped.
 * - `cronCommand` is the pg_cron alternative, as SQL text.
 *
 * Supports pg_partman 4.x (`p_type => 'native'`, `p_interval => 'daily'`,
 * children `outbox_pYYYY_MM_DD`) and 5.x (`p_type => 'range'`,
 * `p_interval => '1 day'`, children `outbox_pYYYYMMDD`, the migrations' own
 * names). Partition boundaries are UTC days, like the migrations': partman
 * computes them in the session's `TimeZone`, so every call here sets it to UTC
 * (and a scheduler that runs maintenance elsewhere must too; see
 * `docs/partman.md`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as Identifier from "./Identifier.ts"
import { fromSql } from "./internal/sqlError.ts"

// ---------------------------------------------------------------------------
// models

/**
 * Why a pg_partman operation failed.
 *
 * - `NotInstalled`: no `pg_partman` in `pg_extension` of this database.
 * - `UnsupportedVersion`: a major version other than 4 or 5.
 * - `AlreadyManagedElsewhere`: `part_config` already holds the outbox with a
 *   control column or interval other than `created_at` / 1 day.
 * - `Failed`: anything else (bad options, no outbox table, an SQL error,
 *   `runMaintenance` inside a transaction); see `message` and `cause`.
 *
 * @category errors
 * @since 0.1.0
 */
export class PartmanError extends Schema.TaggedError<PartmanError>("@outbox/sql/PartmanError")("PartmanError", {
  reason: Schema.Literals(["NotInstalled", "UnsupportedVersion", "AlreadyManagedElsewhere", "Failed"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * The installed pg_partman extension.
 *
 * @category models
 * @since 0.1.0
 */
export interface Installation {
  /** `extversion`, e.g. `"4.7.2"`. */
  readonly version: string
  /** The major version, e.g. `4`. */
  readonly major: number
  /** The schema the extension was created in (`CREATE EXTENSION pg_partman SCHEMA partman`). */
  readonly schema: string
}

/**
 * Options of `handOver`.
 *
 * @category models
 * @since 0.1.0
 */
export interface HandOverOptions {
  /**
   * Daily partitions kept ahead of today, at least (partman's `premake`, a
   * positive integer; 4.x makes one more after 12:00 UTC, as it counts from
   * the current time and rounds). Default 4.
   */
  readonly premakeDays?: number | undefined
  /**
   * Partitions older than this many days are dropped by maintenance
   * (`retention`, with `retention_keep_table = false`). `undefined` (the
   * default) keeps every partition. Applied on every call, so a later call
   * without it removes the retention.
   */
  readonly retentionDays?: number | undefined
  /** The partitioned table; only the outbox is supported. Default `"outbox"`. */
  readonly table?: "outbox" | undefined
}

/**
 * What `handOver` did.
 *
 * @category models
 * @since 0.1.0
 */
export interface HandOverSummary {
  /** `HandedOver` on the first call; `AlreadyManaged` when `part_config` already held the outbox. */
  readonly _tag: "HandedOver" | "AlreadyManaged"
  /** The name partman knows the table by (`public.outbox`). */
  readonly parentTable: string
  /** The extension it was handed to. */
  readonly partman: Installation
  /** Children renamed to partman's naming (4.x only: `outbox_p20250101` to `outbox_p2025_01_01`). */
  readonly renamed: ReadonlyArray<{ readonly from: string; readonly to: string }>
  /** Rows moved from the migrations' `outbox_default` into daily children. */
  readonly rowsMoved: number
  /** Children created (by `create_parent`, and for the days of the moved rows), sorted. */
  readonly partitionsCreated: ReadonlyArray<string>
  /** `premake` now in `part_config`. */
  readonly premakeDays: number
  /** `retention` now in `part_config` (`"30 days"`), if any. */
  readonly retention: string | undefined
  /** Whether `part_config` was changed (always true for `HandedOver`). */
  readonly configUpdated: boolean
}

/**
 * What `runMaintenance` changed in the outbox's partitions.
 *
 * @category models
 * @since 0.1.0
 */
export interface MaintenanceSummary {
  /** Children that appeared (premake), sorted. */
  readonly created: ReadonlyArray<string>
  /** Children that disappeared (retention), sorted. */
  readonly dropped: ReadonlyArray<string>
  /** The outbox's children after maintenance (DEFAULT included), sorted. */
  readonly partitions: ReadonlyArray<string>
}

/**
 * The SQL a user runs to schedule partman maintenance with pg_cron instead of
 * `runMaintenance` (hourly). The job runs in pg_cron's own database
 * (`cron.database_name`); for another database use
 * `cron.schedule_in_database(...)` (see `docs/partman.md`).
 *
 * @category constants
 * @since 0.1.0
 */
export const cronCommand = "SELECT cron.schedule('outbox-partman', '@hourly', $$CALL partman.run_maintenance_proc()$$)"

// ---------------------------------------------------------------------------
// internals

const failed = (message: string, cause?: unknown) =>
  new PartmanError({ reason: "Failed", message, ...(cause === undefined ? {} : { cause }) })

/** With the server's own message, when the driver kept it. */
const sqlFailure = fromSql(({ cause, message }) => failed(message, cause), { detail: "server" })

const invalid = (error: Identifier.InvalidIdentifier) => failed(error.message, error)

const notInstalled = () =>
  new PartmanError({
    reason: "NotInstalled",
    message: "pg_partman is not installed in this database: install the package (Debian: postgresql-15-partman) " +
      "and run CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman"
  })

const positiveInteger = (name: string, value: number) =>
  Number.isSafeInteger(value) && value > 0
    ? Effect.succeed(value)
    : Effect.fail(failed(`${name} must be a positive integer, got ${value}`))

/** The installed extension, a supported one, or a typed failure. */
const requireSupported = Effect.gen(function*() {
  const found = yield* detect
  if (Option.isNone(found)) return yield* notInstalled()
  const installation = found.value
  if (installation.major !== 4 && installation.major !== 5) {
    return yield* new PartmanError({
      reason: "UnsupportedVersion",
      message: `pg_partman ${installation.version} is not supported (4.x and 5.x are)`
    })
  }
  return installation
})

interface Child {
  readonly name: string
  readonly isDefault: boolean
  /** Whether its range is exactly one UTC day. */
  readonly isUtcDay: boolean
  /** partman's name for that day (4.x `outbox_pYYYY_MM_DD`, 5.x `outbox_pYYYYMMDD`). */
  readonly target: string | null
}

/** The outbox's children, read in a UTC session (bounds parsed server-side). */
const listChildren = (sql: SqlClient.SqlClient, parent: string, datetimeString: string) =>
  sql<Child>`
    SELECT c.relname AS "name",
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS "isDefault",
           coalesce(b.lower = date_trunc('day', b.lower) AND b.upper = b.lower + interval '1 day', false) AS "isUtcDay",
           format('%s_p%s', p.relname, to_char(b.lower, ${datetimeString}::text)) AS "target"
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      JOIN pg_class p ON p.oid = i.inhparent
      LEFT JOIN LATERAL (
        SELECT m[1]::timestamptz AS lower, m[2]::timestamptz AS upper
          FROM regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$FROM [(]'([^']+)'[)] TO [(]'([^']+)'[)]$re$) AS m
      ) b ON true
     WHERE i.inhparent = ${parent}::regclass
     ORDER BY c.relname`

const childNames = (sql: SqlClient.SqlClient, table: string) =>
  sql<{ readonly name: string }>`
    SELECT c.relname AS "name"
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = to_regclass(${Identifier.quote(table)})
     ORDER BY c.relname`.pipe(Effect.map((rows) => rows.map((row) => row.name)))

const difference = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => {
  const other = new Set(b)
  return a.filter((name) => !other.has(name)).sort()
}

// ---------------------------------------------------------------------------
// operations

/**
 * The pg_partman extension installed in the current database, if any (from
 * `pg_extension`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const detect: Effect.Effect<Option.Option<Installation>, PartmanError, SqlClient.SqlClient> = Effect.gen(
  function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<{ readonly version: string; readonly schema: string }>`
      SELECT e.extversion AS "version", n.nspname AS "schema"
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
       WHERE e.extname = 'pg_partman'`.pipe(Effect.mapError(sqlFailure("Partman.detect")))
    const row = rows[0]
    if (row === undefined) return Option.none()
    return Option.some({ version: row.version, major: Number.parseInt(row.version, 10), schema: row.schema })
  }
).pipe(Effect.withSpan("Partman.detect"))

/**
 * Registers the outbox with pg_partman: daily partitions, `premakeDays`
 * ahead, retention in `part_config` (`retention`, `retention_keep_table =
 * false`, `infinite_time_partitions = true`). Run it once after the outbox
 * migrations; from then on partman (scheduled `runMaintenance`, pg_cron or
 * its background worker) owns the partitions, and the native partition
 * manager must not run.
 *
 * **Details**
 *
 * In one transaction, holding an `ACCESS EXCLUSIVE` lock on the outbox
 * (writers wait until it commits):
 * 1. the daily children of the migrations are adopted: partman finds
 *    children by name, so on 4.x each `outbox_pYYYYMMDD` is renamed
 *    `outbox_pYYYY_MM_DD` (5.x uses the migrations' names); rows stay put;
 * 2. the migrations' `outbox_default` is detached and kept aside
 *    (`create_parent` makes partman's own DEFAULT, and attaching a child
 *    whose range has rows in a DEFAULT fails);
 * 3. `create_parent` from today (UTC) with `premakeDays`;
 * 4. children are created for the days of the rows kept aside (for a row
 *    dated in the future, every day up to its day: maintenance premakes after
 *    the last child and never fills gaps), the rows are inserted back (same
 *    ids), and the detached table is dropped;
 * 5. `part_config` gets the retention.
 *
 * A later call finds the outbox in `part_config` and only applies
 * `premakeDays` / `retentionDays` if they differ (`AlreadyManaged`); with the
 * same options it changes nothing.
 *
 * **Gotchas**: retention drops whole partitions whatever the status of their
 * rows: choose it well beyond the longest time an event can stay undelivered.
 *
 * @category operations
 * @since 0.1.0
 */
export const handOver: (options?: HandOverOptions) => Effect.Effect<HandOverSummary, PartmanError, SqlClient.SqlClient> =
  Effect.fn("Partman.handOver")(function*(options?: HandOverOptions) {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const premakeDays = yield* positiveInteger("premakeDays", options?.premakeDays ?? 4)
    const retentionDays = options?.retentionDays === undefined
      ? undefined
      : yield* positiveInteger("retentionDays", options.retentionDays)
    const retention = retentionDays === undefined ? null : `${retentionDays} days`
    const table = yield* Effect.mapError(Identifier.validate(options?.table ?? "outbox", "table"), invalid)
    const partman = yield* requireSupported
    // a catalog name, not user input: quoting keeps it one identifier whatever it is
    const ps = sql.literal(Identifier.quote(partman.schema))

    const found = yield* sql<{ readonly schema: string }>`
      SELECT n.nspname AS "schema"
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.oid = to_regclass(${Identifier.quote(table)}) AND c.relkind = 'p'`.pipe(
      Effect.mapError(sqlFailure("Partman.handOver"))
    )
    const tableSchema = found[0]?.schema
    if (tableSchema === undefined) {
      return yield* failed(`no partitioned table ${table}: run the outbox migrations first`)
    }
    const parentTable = `${tableSchema}.${table}`
    const parent = Identifier.quoteQualified({ schema: tableSchema, name: table })

    const applyConfig = sql<{ readonly premake: number; readonly retention: string | null }>`
      UPDATE ${ps}.part_config
         SET premake = ${premakeDays}::int, retention = ${retention}::text,
             retention_keep_table = false, infinite_time_partitions = true
       WHERE parent_table = ${parentTable}::text
         AND (premake IS DISTINCT FROM ${premakeDays}::int OR retention IS DISTINCT FROM ${retention}::text
              OR retention_keep_table OR NOT infinite_time_partitions)
      RETURNING premake, retention`

    const summary = (
      tag: HandOverSummary["_tag"],
      fields: Pick<HandOverSummary, "renamed" | "rowsMoved" | "partitionsCreated" | "configUpdated">
    ): HandOverSummary => ({
      _tag: tag,
      parentTable,
      partman,
      premakeDays,
      retention: retention ?? undefined,
      ...fields
    })

    const transaction = Effect.gen(function*() {
      // partman computes day boundaries in the session time zone; ours are UTC days
      yield* sql`SELECT set_config('TimeZone', 'UTC', true)`
      yield* sql.unsafe(`LOCK TABLE ${parent} IN ACCESS EXCLUSIVE MODE`)

      const existing = yield* sql<{ readonly control: string; readonly oneDay: boolean; readonly type: string }>`
        SELECT control, partition_interval::interval = interval '1 day' AS "oneDay", partition_type AS "type"
          FROM ${ps}.part_config WHERE parent_table = ${parentTable}::text`
      const config = existing[0]
      if (config !== undefined) {
        if (config.control !== "created_at" || !config.oneDay || !["native", "range"].includes(config.type)) {
          return yield* new PartmanError({
            reason: "AlreadyManagedElsewhere",
            message: `${parentTable} is already in ${partman.schema}.part_config with control ${config.control}, ` +
              `type ${config.type} and another interval than 1 day: undo that set-up before handing it over`
          })
        }
        const updated = yield* applyConfig
        return summary("AlreadyManaged", {
          renamed: [],
          rowsMoved: 0,
          partitionsCreated: [],
          configUpdated: updated.length > 0
        })
      }

      const datetimeString = partman.major === 4 ? "YYYY_MM_DD" : "YYYYMMDD"
      const before = yield* listChildren(sql, parent, datetimeString)

      // 1. adopt the daily children under partman's names
      const renamed: Array<{ from: string; to: string }> = []
      for (const child of before) {
        if (child.isDefault) continue
        if (!child.isUtcDay || child.target === null) {
          return yield* failed(
            `${child.name} is not a daily (UTC) partition of ${parentTable}: detach it before handing over`
          )
        }
        if (child.name === child.target) continue
        const from = yield* Effect.mapError(Identifier.validate(child.name, "partition"), invalid)
        const to = yield* Effect.mapError(Identifier.validate(child.target, "partition"), invalid)
        yield* sql.unsafe(
          `ALTER TABLE ${Identifier.quoteQualified({ schema: tableSchema, name: from })} RENAME TO ${
            Identifier.quote(to)
          }`
        )
        renamed.push({ from, to })
      }

      // 2. keep the DEFAULT's rows aside: create_parent makes partman's own DEFAULT
      const oldDefault = before.find((child) => child.isDefault)
      const hold = Identifier.derive(`${table}_`, "partman_handover")
      const held = Identifier.quoteQualified({ schema: tableSchema, name: hold })
      if (oldDefault !== undefined) {
        const name = yield* Effect.mapError(Identifier.validate(oldDefault.name, "partition"), invalid)
        const qualified = Identifier.quoteQualified({ schema: tableSchema, name })
        yield* sql.unsafe(`ALTER TABLE ${parent} DETACH PARTITION ${qualified}`)
        yield* sql.unsafe(`ALTER TABLE ${qualified} RENAME TO ${Identifier.quote(hold)}`)
      }

      // 3. register, from today (UTC)
      const today = sql.literal("to_char(now(), 'YYYY-MM-DD')")
      yield* partman.major === 4
        ? sql`SELECT ${ps}.create_parent(p_parent_table => ${parentTable}::text, p_control => 'created_at',
                p_type => 'native', p_interval => 'daily', p_premake => ${premakeDays}::int,
                p_start_partition => ${today})`
        : sql`SELECT ${ps}.create_parent(p_parent_table => ${parentTable}::text, p_control => 'created_at',
                p_type => 'range', p_interval => '1 day', p_premake => ${premakeDays}::int,
                p_start_partition => ${today})`

      // 4. children for the held rows' days, then the rows themselves (ids kept)
      let rowsMoved = 0
      if (oldDefault !== undefined) {
        const counted = yield* sql.unsafe<{ readonly n: number }>(`SELECT count(*)::int AS n FROM ${held}`)
        rowsMoved = counted[0]?.n ?? 0
        if (rowsMoved > 0) {
          // past days one by one (maintenance only looks forward); from today on, every day up to the
          // latest one, since maintenance premakes after the last child and never fills a gap
          yield* sql.unsafe(
            `SELECT ${Identifier.quote(partman.schema)}.create_partition_time(p_parent_table => $1::text,
               p_partition_times => ARRAY(
                 SELECT DISTINCT date_trunc('day', created_at) FROM ${held} WHERE created_at < date_trunc('day', now())
                 UNION
                 SELECT generate_series(date_trunc('day', now()),
                                        (SELECT max(date_trunc('day', created_at)) FROM ${held}), interval '1 day')))`,
            [parentTable]
          )
          const columns = yield* sql<{ readonly list: string }>`
            SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS "list"
              FROM pg_attribute WHERE attrelid = ${parent}::regclass AND attnum > 0 AND NOT attisdropped`
          const list = columns[0]?.list ?? "*"
          yield* sql.unsafe(`INSERT INTO ${parent} (${list}) SELECT ${list} FROM ${held}`)
        }
        yield* sql.unsafe(`DROP TABLE ${held}`)
      }

      // 5. retention
      yield* applyConfig
      const after = yield* listChildren(sql, parent, datetimeString)
      return summary("HandedOver", {
        renamed,
        rowsMoved,
        partitionsCreated: difference(
          after.map((child) => child.name),
          before.map((child) => renamed.find((r) => r.from === child.name)?.to ?? child.name)
        ),
        configUpdated: true
      })
    })

    return yield* sql.withTransaction(transaction).pipe(
      Effect.catchTag("SqlError", (error) => Effect.fail(sqlFailure("Partman.handOver")(error)))
    )
  })

/**
 * Runs partman's maintenance for every partition set of the database
 * (`CALL run_maintenance_proc()`: premake, retention) and reports what
 * changed in the outbox's children.
 *
 * **Details**
 *
 * The procedure commits after each partition set, so it cannot run inside a
 * transaction: it runs on a connection of its own, in autocommit, and fails
 * with `Failed` when called inside `sql.withTransaction`. That connection's
 * `TimeZone` is set to UTC for the call (partman computes day boundaries in
 * it) and reset afterwards. Both 4.x and 5.x take the call without arguments.
 * Concurrent calls are harmless: partman holds an advisory lock and a second
 * call returns at once.
 *
 * **Example**
 * ```ts
 * // every hour, as long as the application runs
 * Partman.runMaintenance.pipe(Effect.repeat(Schedule.spaced("1 hour")), Effect.forkScoped)
 * ```
 *
 * @category operations
 * @since 0.1.0
 */
export const runMaintenance: Effect.Effect<MaintenanceSummary, PartmanError, SqlClient.SqlClient> = Effect.gen(
  function*() {
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const inTransaction = yield* Effect.serviceOption(client.transactionService)
    if (Option.isSome(inTransaction)) {
      return yield* failed(
        "Partman.runMaintenance cannot run inside sql.withTransaction: run_maintenance_proc commits by itself"
      )
    }
    const partman = yield* requireSupported
    const before = yield* childNames(sql, "outbox").pipe(Effect.mapError(sqlFailure("Partman.runMaintenance")))
    yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* client.reserve
      yield* connection.executeUnprepared("SELECT set_config('TimeZone', 'UTC', false)", [], undefined)
      yield* connection.executeUnprepared(
        `CALL ${Identifier.quote(partman.schema)}.run_maintenance_proc()`,
        [],
        undefined
      ).pipe(
        Effect.ensuring(Effect.ignore(connection.executeUnprepared("RESET TimeZone", [], undefined)))
      )
    })).pipe(Effect.mapError(sqlFailure("Partman.runMaintenance")))
    const after = yield* childNames(sql, "outbox").pipe(Effect.mapError(sqlFailure("Partman.runMaintenance")))
    return { created: difference(after, before), dropped: difference(before, after), partitions: after }
  }
).pipe(Effect.withSpan("Partman.runMaintenance"))
