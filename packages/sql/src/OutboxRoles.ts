/**
 * A least-privilege role set for the outbox.
 *
 * | role       | may                                                                                   |
 * |------------|---------------------------------------------------------------------------------------|
 * | owner      | everything: the role that runs the migrations owns the tables, the only one that can alter, disable or truncate the audit trail |
 * | `producer` | INSERT into the outbox (and use its id sequence); no SELECT, UPDATE, DELETE           |
 * | `relay`    | SELECT the outbox, UPDATE its state columns (claim, complete, retry, reap), draw lock tokens; the inbox (SELECT, INSERT); EXECUTE the audit chain's `outbox_audit_seal` / `outbox_audit_checkpoint` and the redrive meter `outbox_meter_redrives()`; SELECT the health views (`outbox_stats*`, `outbox_health_*`, `outbox_partition_*`) |
 * | `operator` | SELECT the outbox, UPDATE its state columns (redrive), SELECT and INSERT the redrive log |
 * | `auditor`  | SELECT the audit trail (`outbox_audit_log`, `_head`, `_checkpoint`), the redrive log and the compliance views (`v_outbox_*`) |
 *
 * None of them gets any privilege on `outbox_audit_log`: its rows are written
 * by the audit trail's `SECURITY DEFINER` triggers (running as the owner),
 * so the relay's and the operator's updates are audited although they cannot
 * touch the log. The state columns are `status`, `retry_count`,
 * `last_error`, `processed_at`, `available_at`, `locked_until`,
 * `lock_token`: neither the relay nor the operator can rewrite a payload.
 *
 * `grant` makes the privileges exact: it first revokes everything each role
 * holds on these objects, then grants the set above, in one transaction, so
 * it can be re-run after every migration. Role names are validated and
 * quoted with `Identifier` (lower-case `[a-z_][a-z0-9_]*`), never
 * interpolated raw.
 *
 * **Gotchas**: membership is inheritance: a login role that is a member of
 * the owner role is the owner. Partitions are reached through the parent,
 * whose privileges PostgreSQL checks (a partition created later needs no
 * grant). `producerReturning` adds column SELECT on `id`, `tracking_id`,
 * `created_at`, which `PgOutboxStore`'s publish needs for its `RETURNING`;
 * without it the producer can only use plain `INSERT`s.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as Identifier from "./Identifier.ts"
import { mapSql } from "./internal/sqlError.ts"
import * as OutboxTables from "./OutboxTables.ts"

/**
 * Setting up roles failed: nothing was changed (one transaction).
 *
 * @category errors
 * @since 0.1.0
 */
export class RolesError extends Schema.TaggedError<RolesError>("@outbox/sql/RolesError")("RolesError", {
  reason: Schema.Literals(["NoRoles", "DuplicateRole", "MissingObject", "Database"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * The roles to set up; any subset.
 *
 * @category models
 * @since 0.1.0
 */
export interface RoleSet {
  readonly producer?: string | undefined
  readonly relay?: string | undefined
  readonly operator?: string | undefined
  readonly auditor?: string | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export type Kind = keyof RoleSet

/**
 * Options of `plan` / `grant`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly roles: RoleSet
  /** The outbox table (default `outbox`); ignored when `tables` is given. */
  readonly table?: string | undefined
  /**
   * The names of the outbox objects (`OutboxTables`): the outbox, the inbox,
   * the redrive log, the fencing-token sequence, the audit trail's tables.
   * Default: those of `table`.
   */
  readonly tables?: OutboxTables.OutboxTables | undefined
  /** The schema of the outbox objects (default `public`). */
  readonly schema?: string | undefined
  /** Let the producer read back `id`, `tracking_id`, `created_at` (`INSERT ... RETURNING`). */
  readonly producerReturning?: boolean | undefined
}

/**
 * The columns the relay and the operator may update.
 *
 * @category constants
 * @since 0.1.0
 */
export const stateColumns: ReadonlyArray<string> = [
  "status",
  "retry_count",
  "last_error",
  "processed_at",
  "available_at",
  "locked_until",
  "lock_token",
  "claimed_at"
]

/**
 * The columns `producerReturning` lets the producer read.
 *
 * @category constants
 * @since 0.1.0
 */
export const returningColumns: ReadonlyArray<string> = ["id", "tracking_id", "created_at"]

const kinds: ReadonlyArray<Kind> = ["producer", "relay", "operator", "auditor"]

const database = mapSql(({ cause, message }) => new RolesError({ reason: "Database", message, cause }))

/** Validates the role names: at least one, no two kinds sharing a name. */
const validateRoles = Effect.fnUntraced(function*(roles: RoleSet) {
  const named: Array<readonly [Kind, string]> = []
  for (const kind of kinds) {
    const name = roles[kind]
    if (name !== undefined) named.push([kind, yield* Identifier.validate(name, `${kind} role`)])
  }
  if (named.length === 0) {
    return yield* new RolesError({ reason: "NoRoles", message: "name at least one role (producer, relay, operator, auditor)" })
  }
  const seen = new Map<string, Kind>()
  for (const [kind, name] of named) {
    const other = seen.get(name)
    if (other !== undefined) {
      return yield* new RolesError({
        reason: "DuplicateRole",
        message: `${other} and ${kind} must be different roles (both are ${JSON.stringify(name)}): one role would hold both privilege sets`
      })
    }
    seen.set(name, kind)
  }
  return named
})

/** The objects found in the catalog. */
interface Objects {
  readonly idSequence: string | null
  readonly inbox: boolean
  readonly redriveLog: boolean
  readonly redriveLogSequence: string | null
  /** The audit trail's tables that exist (log, head, checkpoints), qualified. */
  readonly auditTables: ReadonlyArray<string>
  /** Its maintenance functions that exist (seal, checkpoint), qualified with their signatures. */
  readonly auditFunctions: ReadonlyArray<string>
  /** The relay's redrive meter (`outbox_meter_redrives()`, migration 0005), qualified, when it exists. */
  readonly meterFunction: string | null
  readonly views: ReadonlyArray<string>
  /** The health and partition views (`outbox_stats*`, `outbox_health_*`, `outbox_partition_*`), qualified. */
  readonly healthViews: ReadonlyArray<string>
}

const auditTableNames = (tables: OutboxTables.OutboxTables) => [tables.auditLog, tables.auditHead, tables.auditCheckpoint]
const auditFunctionSignatures = [
  ["outbox_audit_seal", "integer"],
  ["outbox_audit_checkpoint", "timestamptz, interval"]
] as const

const discover = Effect.fnUntraced(function*(schema: string, tables: OutboxTables.OutboxTables) {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const table = tables.outbox
  const qualified = `${Identifier.quote(schema)}.${Identifier.quote(table)}`
  const qualify = (name: string) => `${Identifier.quote(schema)}.${Identifier.quote(name)}`
  // the sequence behind `id`: owned (bigserial) or named in the column default
  const sequenceOf = (relation: string) =>
    sql<{ schema: string | null; name: string | null }>`
      SELECT n.nspname AS schema, c.relname AS name
      FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      JOIN pg_class c ON c.oid = coalesce(
        pg_get_serial_sequence(${relation}, 'id'),
        (regexp_match(pg_get_expr(d.adbin, d.adrelid), 'nextval\\(''([^'']+)''::regclass\\)'))[1]
      )::regclass
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE a.attrelid = ${relation}::regclass AND a.attname = 'id'`.pipe(
      Effect.map((rows) => {
        const r = rows[0]
        return r?.schema == null || r.name == null ? null : `${Identifier.quote(r.schema)}.${Identifier.quote(r.name)}`
      })
    )
  const [found] = yield* sql<{ outbox: boolean; inbox: boolean; redrive: boolean; token: boolean }>`
    SELECT to_regclass(${qualified}) IS NOT NULL AS outbox,
           to_regclass(${qualify(tables.inbox)}) IS NOT NULL AS inbox,
           to_regclass(${qualify(tables.redriveLog)}) IS NOT NULL AS redrive,
           to_regclass(${qualify(tables.lockTokenSequence)}) IS NOT NULL AS token`
  const auditTables: Array<string> = []
  for (const name of auditTableNames(tables)) {
    const [row] = yield* sql<{ ok: boolean }>`SELECT to_regclass(${qualify(name)}) IS NOT NULL AS ok`
    if (row?.ok === true) auditTables.push(qualify(name))
  }
  const auditFunctions: Array<string> = []
  for (const [name, args] of auditFunctionSignatures) {
    const signature = `${qualify(name)}(${args})`
    const [row] = yield* sql<{ ok: boolean }>`SELECT to_regprocedure(${signature}) IS NOT NULL AS ok`
    if (row?.ok === true) auditFunctions.push(signature)
  }
  const meterSignature = `${qualify("outbox_meter_redrives")}()`
  const [meter] = yield* sql<{ ok: boolean }>`SELECT to_regprocedure(${meterSignature}) IS NOT NULL AS ok`
  if (found === undefined || !found.outbox || !found.token) {
    return yield* new RolesError({
      reason: "MissingObject",
      message: `${schema}.${table} (or ${tables.lockTokenSequence}) does not exist: run the migrations first`
    })
  }
  const views = yield* sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relkind IN ('v', 'm') AND c.relname LIKE 'v\\_outbox\\_%'
    ORDER BY c.relname`
  const healthViews = yield* sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relkind IN ('v', 'm')
      AND (c.relname LIKE 'outbox\_stats%' OR c.relname LIKE 'outbox\_health\_%' OR c.relname LIKE 'outbox\_partition\_%')
    ORDER BY c.relname`
  return {
    idSequence: yield* sequenceOf(qualified),
    inbox: found.inbox,
    redriveLog: found.redrive,
    redriveLogSequence: found.redrive ? yield* sequenceOf(qualify(tables.redriveLog)) : null,
    auditTables,
    auditFunctions,
    meterFunction: meter?.ok === true ? meterSignature : null,
    views: views.map((v) => qualify(v.name)),
    healthViews: healthViews.map((v) => qualify(v.name))
  } satisfies Objects
})

/**
 * The statements `grant` runs for these roles, given what exists in the
 * database (the audit log and the redrive log are optional). Starts with the
 * revocations that make the set exact.
 *
 * @category sql
 * @since 0.1.0
 */
export const plan = (
  options: Options
): Effect.Effect<ReadonlyArray<string>, RolesError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const roles = yield* validateRoles(options.roles)
    const schemaName = yield* Identifier.validate(options.schema ?? "public", "schema")
    const names = options.tables ?? (yield* OutboxTables.make(options.table ?? "outbox"))
    const objects = yield* discover(schemaName, names).pipe(database("reading the catalog"))
    const q = (name: string) => `${Identifier.quote(schemaName)}.${Identifier.quote(name)}`
    const schema = Identifier.quote(schemaName)
    const outbox = q(names.outbox)
    const tokenSequence = q(names.lockTokenSequence)
    const inbox = q(names.inbox)
    const redriveLog = q(names.redriveLog)
    const state = stateColumns.join(", ")

    const statements: Array<string> = []
    const all = roles.map(([, name]) => Identifier.quote(name)).join(", ")
    // exact: whatever these roles held on the outbox objects goes first
    const tables = [outbox, ...(objects.inbox ? [inbox] : []), ...(objects.redriveLog ? [redriveLog] : []),
      ...objects.auditTables]
    for (const t of tables) statements.push(`REVOKE ALL ON TABLE ${t} FROM ${all}`)
    const sequences = [tokenSequence, ...(objects.idSequence === null ? [] : [objects.idSequence]),
      ...(objects.redriveLogSequence === null ? [] : [objects.redriveLogSequence])]
    for (const s of sequences) statements.push(`REVOKE ALL ON SEQUENCE ${s} FROM ${all}`)
    for (const v of [...objects.views, ...objects.healthViews]) statements.push(`REVOKE ALL ON TABLE ${v} FROM ${all}`)
    const definerFunctions = [...objects.auditFunctions, ...(objects.meterFunction === null ? [] : [objects.meterFunction])]
    for (const f of definerFunctions) statements.push(`REVOKE ALL ON FUNCTION ${f} FROM ${all}, PUBLIC`)
    // nobody but the owner, not even PUBLIC, on the audit trail
    for (const t of objects.auditTables) statements.push(`REVOKE ALL ON TABLE ${t} FROM PUBLIC`)
    if (objects.redriveLog) statements.push(`REVOKE ALL ON TABLE ${redriveLog} FROM PUBLIC`)

    for (const [kind, name] of roles) {
      const role = Identifier.quote(name)
      statements.push(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`)
      switch (kind) {
        case "producer": {
          statements.push(`GRANT INSERT ON TABLE ${outbox} TO ${role}`)
          if (objects.idSequence !== null) statements.push(`GRANT USAGE ON SEQUENCE ${objects.idSequence} TO ${role}`)
          if (options.producerReturning === true) {
            statements.push(`GRANT SELECT (${returningColumns.join(", ")}) ON TABLE ${outbox} TO ${role}`)
          }
          break
        }
        case "relay": {
          statements.push(`GRANT SELECT, UPDATE (${state}) ON TABLE ${outbox} TO ${role}`)
          statements.push(`GRANT USAGE ON SEQUENCE ${tokenSequence} TO ${role}`)
          if (objects.inbox) statements.push(`GRANT SELECT, INSERT ON TABLE ${inbox} TO ${role}`)
          // the relay's health gauges read these (views: the owner's rights on the tables behind them)
          for (const v of objects.healthViews) statements.push(`GRANT SELECT ON TABLE ${v} TO ${role}`)
          // sealing the audit chain and metering redrives run as the owner (SECURITY DEFINER):
          // no privilege on the audit log or the redrive log itself
          for (const f of definerFunctions) statements.push(`GRANT EXECUTE ON FUNCTION ${f} TO ${role}`)
          break
        }
        case "operator": {
          statements.push(`GRANT SELECT, UPDATE (${state}) ON TABLE ${outbox} TO ${role}`)
          if (objects.redriveLog) {
            statements.push(`GRANT SELECT, INSERT ON TABLE ${redriveLog} TO ${role}`)
            if (objects.redriveLogSequence !== null) {
              statements.push(`GRANT USAGE ON SEQUENCE ${objects.redriveLogSequence} TO ${role}`)
            }
          }
          break
        }
        case "auditor": {
          for (const t of objects.auditTables) statements.push(`GRANT SELECT ON TABLE ${t} TO ${role}`)
          if (objects.redriveLog) statements.push(`GRANT SELECT ON TABLE ${redriveLog} TO ${role}`)
          for (const v of objects.views) statements.push(`GRANT SELECT ON TABLE ${v} TO ${role}`)
          break
        }
      }
    }
    return statements
  })

/**
 * Grants the role set (after revoking whatever the roles held on the
 * outbox objects), in one transaction; returns the statements run. Run it
 * as the owner of the outbox objects, after the migrations (again after
 * `ENABLE_AUDIT` adds the audit log).
 *
 * @category sql
 * @since 0.1.0
 */
export const grant = (
  options: Options
): Effect.Effect<ReadonlyArray<string>, RolesError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(Effect.gen(function*() {
      const statements = yield* plan(options)
      for (const statement of statements) yield* sql.unsafe(statement)
      return statements
    })).pipe(database("granting"))
  }).pipe(Effect.withSpan("OutboxRoles.grant"))

/**
 * Creates the roles that do not exist yet (`NOLOGIN` unless `login`: the
 * usual setup grants them to login roles, `GRANT outbox_relay TO app_relay`);
 * returns the names created. Needs `CREATEROLE`.
 *
 * @category sql
 * @since 0.1.0
 */
export const createRoles = (
  roles: RoleSet,
  options: { readonly login?: boolean | undefined } = {}
): Effect.Effect<ReadonlyArray<string>, RolesError | Identifier.InvalidIdentifier, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const named = yield* validateRoles(roles)
    return yield* sql.withTransaction(Effect.gen(function*() {
      const created: Array<string> = []
      for (const [, name] of named) {
        const exists = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ${name}`
        if (exists[0]!.n > 0) continue
        yield* sql.unsafe(`CREATE ROLE ${Identifier.quote(name)} ${options.login === true ? "LOGIN" : "NOLOGIN"}`)
        created.push(name)
      }
      return created
    })).pipe(database("creating roles"))
  }).pipe(Effect.withSpan("OutboxRoles.createRoles"))
