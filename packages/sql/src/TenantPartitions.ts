/**
 * The **tenant × month** partition layout for event-store style tables: the
 * parent is `PARTITION BY LIST (tenant)`, each tenant gets one LIST
 * partition that is itself `PARTITION BY RANGE (time)`, with one child per
 * UTC month.
 *
 * ```
 * events                      LIST (tenant_id)          -- the application's table
 * ├── events_acme_t           FOR VALUES IN ('acme')    RANGE (created_at)
 * │   ├── events_acme_t_p202601   [2026-01-01, 2026-02-01)
 * │   └── events_acme_t_p202602   [2026-02-01, 2026-03-01)
 * └── events_x_drop_table_t_b4717908_t   FOR VALUES IN ('x"; DROP TABLE t; --')  -- hashed name
 * ```
 *
 * **When to use**: multi-tenant event stores where queries are per tenant
 * and retention differs per tenant. A query filtered by tenant and time is
 * pruned to the matching leaf partitions, and dropping a tenant's old months
 * is a metadata operation.
 *
 * **Details**
 *
 * - `ensureLayout` installs, in the parent's schema, the PL/pgSQL functions
 *   `outbox_tenant_ensure`, `outbox_tenant_ensure_months`,
 *   `outbox_tenant_drop_months_before` and `outbox_tenant_status`. They build
 *   all DDL server-side with `format('%I', '%L')` and take a transaction
 *   advisory lock on the parent, so concurrent callers (several processes)
 *   are safe. New partitions are created standalone (`LIKE parent`) and then
 *   `ATTACH`ed, which takes only `SHARE UPDATE EXCLUSIVE` on the parent:
 *   writers of other tenants are never blocked by a new tenant.
 * - Tenant ids are data: they reach SQL only as bind parameters, and inside
 *   the functions only through `format('%L')` (the LIST bound, and the
 *   partition's `COMMENT`, which records the tenant id for `status` and for
 *   detecting name collisions). Partition names come from
 *   `Identifier.derive`: a simple id (`[a-z0-9_]`) is kept (`events_acme_t`),
 *   anything else becomes a sanitised head plus a hash (`events_a_b_c6654bf7_t`
 *   for `a'b`, `events_68286ab3_t` for `租户-é`). Tenant partition names
 *   always end in `_t` and month partitions in `_pYYYYMM`, so the two never
 *   clash; a name already used by another table or tenant (e.g. the simple
 *   id `acme_37036cd8` against the hashed `Acme`) fails with `NameCollision`
 *   rather than sharing a partition.
 * - `ensureTenant` caches, per process, how far each tenant's months have
 *   been ensured: after the first write for a tenant, writes pay no DDL and
 *   no round trip until the month rolls over past the horizon (then one call
 *   of an idempotent function). It runs outside any ambient transaction, on
 *   its own pool connection, so the caller's transaction never holds DDL
 *   locks and the cache never records a partition a rollback undid.
 * - `sweep` ensures the months up to the horizon for every tenant partition
 *   found in the catalog (each tenant in its own short transaction); run it
 *   on a schedule so months exist before they start.
 * - `applyRetention` detaches and drops the month partitions that end at or
 *   before the first day of `current month - retentionMonths`. The current
 *   month (and anything later) is never dropped, so a tenant never loses its
 *   last partition.
 * - "Now" is Effect's `Clock` (UTC months), so a `TestClock` drives it.
 *
 * **Gotchas**
 *
 * - The parent table belongs to the application (its migrations create it,
 *   `PARTITION BY LIST (<tenantColumn>)`); its primary key and unique indexes
 *   must include the tenant and time columns, as PostgreSQL requires for
 *   partitioned tables. The time column may be `timestamptz`, `timestamp`
 *   (bounds are UTC midnight) or `date`.
 * - There is no DEFAULT partition: a write for a tenant nobody ensured fails
 *   with "no partition of relation found for row". Go through `withTenant`.
 * - `ensureTenant` called inside a transaction uses a second connection:
 *   the pool needs at least two. When it had to ask the database, it then
 *   runs `LOCK TABLE ONLY <tenant partitions> IN ACCESS SHARE MODE` in the
 *   caller's transaction: PostgreSQL refreshes a transaction's cached
 *   partition list only when it takes a lock it did not hold, so without
 *   this a transaction that already wrote to the table would not see the
 *   new partitions.
 * - Retention uses a plain `DETACH` inside the function (it cannot be
 *   `CONCURRENTLY` there): it takes a short `ACCESS EXCLUSIVE` lock on that
 *   tenant's partition, waiting for in-flight writes of that tenant only.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Identifier from "./Identifier.ts"
import { fromSql, serverMessage } from "./internal/sqlError.ts"

// ---------------------------------------------------------------------------
// models

/**
 * Where the layout lives.
 *
 * - `table`: the parent, optionally schema-qualified (`events`,
 *   `app.events`), `PARTITION BY LIST (tenantColumn)`.
 * - `tenantColumn`, `timeColumn`: plain identifiers.
 * - `partitionPrefix`: the start of every partition name; defaults to
 *   `<table name>_`. At most {@link maxPrefixBytes} bytes, so that hashed
 *   names plus the `_t_pYYYYMM` suffix fit PostgreSQL's 63-byte limit.
 *
 * @category models
 * @since 0.1.0
 */
export interface Layout {
  readonly table: string
  readonly tenantColumn: string
  readonly timeColumn: string
  readonly partitionPrefix?: string | undefined
}

/**
 * Partitions created by one call, by name (tenant partition and months).
 *
 * @category models
 * @since 0.1.0
 */
export interface EnsureResult {
  /** The tenant's LIST partition. */
  readonly partition: string
  /** Partitions this call created (empty when they all existed). */
  readonly created: ReadonlyArray<string>
  /** `true` when the process cache answered and the database was not asked. */
  readonly cached: boolean
}

/**
 * What a sweep did.
 *
 * @category models
 * @since 0.1.0
 */
export interface SweepResult {
  /** Tenant partitions found in the catalog. */
  readonly tenants: number
  /** Month partitions created. */
  readonly created: ReadonlyArray<string>
  /** Tenant partitions whose months could not be ensured (the others were). */
  readonly failed: ReadonlyArray<{ readonly partition: string; readonly error: TenantPartitionError }>
}

/**
 * One month partition dropped by retention.
 *
 * @category models
 * @since 0.1.0
 */
export interface DroppedPartition {
  /** The tenant id recorded on the tenant partition (its COMMENT). */
  readonly tenantId: string | null
  readonly partition: string
  /** `YYYY-MM`. */
  readonly month: string
}

/**
 * One month partition in {@link TenantStatus}.
 *
 * @category models
 * @since 0.1.0
 */
export interface MonthStatus {
  readonly partition: string
  /** `YYYY-MM`, or `null` for a child not named by this module. */
  readonly month: string | null
  /** Exact row count (one scan per partition). */
  readonly rows: number
  /** `pg_total_relation_size` (table, indexes, TOAST). */
  readonly bytes: number
}

/**
 * One tenant partition and its months.
 *
 * @category models
 * @since 0.1.0
 */
export interface TenantStatus {
  /** The tenant id recorded on the partition (`null` if it was not created here). */
  readonly tenantId: string | null
  readonly partition: string
  readonly months: ReadonlyArray<MonthStatus>
  readonly rows: number
  readonly bytes: number
}

// ---------------------------------------------------------------------------
// errors

/**
 * A tenant partition operation was refused or failed.
 *
 * - `EmptyTenantId`, `TenantIdTooLong` (over {@link maxTenantIdLength}
 *   characters), `InvalidTenantId` (a NUL or an unpaired surrogate, which
 *   PostgreSQL text cannot hold faithfully).
 * - `NameCollision`: the derived partition name is taken by another table
 *   or by another tenant's partition.
 * - `LayoutMismatch`: the parent is missing, not `LIST`-partitioned on the
 *   tenant column, or lacks the time column.
 * - `InvalidOption`: a month count out of range.
 * - `Database`: any other SQL failure (`retryable` tells whether trying
 *   again may help).
 *
 * @category errors
 * @since 0.1.0
 */
export class TenantPartitionError extends Schema.TaggedError<TenantPartitionError>(
  "@outbox/sql/TenantPartitionError"
)("TenantPartitionError", {
  reason: Schema.Literals([
    "EmptyTenantId",
    "TenantIdTooLong",
    "InvalidTenantId",
    "NameCollision",
    "LayoutMismatch",
    "InvalidOption",
    "Database"
  ]),
  message: Schema.String,
  /** The tenant id concerned, truncated to 80 characters. */
  tenantId: Schema.optional(Schema.String),
  retryable: Schema.optional(Schema.Boolean),
  cause: Schema.optional(Schema.Unknown)
}) {}

// ---------------------------------------------------------------------------
// constants

/**
 * The longest tenant id accepted, in characters (Unicode code points).
 * Longer ids fail with `TenantIdTooLong`; anything up to it gets a safe,
 * hash-suffixed partition name when it is not a simple identifier.
 *
 * @category constants
 * @since 0.1.0
 */
export const maxTenantIdLength = 1000

/**
 * The longest partition prefix, in bytes: 63 minus the hash (8), the tenant
 * marker (`_t`) and the month suffix (`_pYYYYMM`).
 *
 * @category constants
 * @since 0.1.0
 */
export const maxPrefixBytes = 45

/**
 * The horizon used when no `monthsAhead` is given: the current month and
 * the next one.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultMonthsAhead = 1

const MONTH_PLACEHOLDER = "_p000000"
/** First key of the two-key advisory lock; the second is the parent's oid. */
const LOCK_NAMESPACE = 1_869_574_516

// ---------------------------------------------------------------------------
// layout

interface Resolved {
  /** The parent as text for `::regclass` (validated, quoted). */
  readonly parent: string
  readonly schema: string | undefined
  readonly tenantColumn: string
  readonly timeColumn: string
  readonly prefix: string
  /** A function name of this module, qualified like the parent. */
  readonly fn: (name: string) => string
}

const resolve = Effect.fnUntraced(function*(layout: Layout) {
  const table = yield* Identifier.validateQualified(layout.table, "table")
  const tenantColumn = yield* Identifier.validate(layout.tenantColumn, "tenant column")
  const timeColumn = yield* Identifier.validate(layout.timeColumn, "time column")
  const prefix = yield* Identifier.validate(layout.partitionPrefix ?? `${table.name}_`, "partition prefix")
  if (Buffer.byteLength(prefix, "utf8") > maxPrefixBytes) {
    return yield* new TenantPartitionError({
      reason: "LayoutMismatch",
      message: `partition prefix ${JSON.stringify(prefix)} is longer than ${maxPrefixBytes} bytes: ` +
        `set Layout.partitionPrefix to a shorter one`
    })
  }
  const schema = table.schema
  return {
    parent: Identifier.quoteQualified(table),
    schema,
    tenantColumn,
    timeColumn,
    prefix,
    fn: (name: string) => schema === undefined ? name : `${Identifier.quote(schema)}.${name}`
  } satisfies Resolved
})

const truncate = (value: string) => value.length > 80 ? `${value.slice(0, 77)}...` : value

/**
 * Checks a tenant id: not empty, at most {@link maxTenantIdLength} code
 * points, no NUL and no unpaired surrogate.
 *
 * @category validation
 * @since 0.1.0
 */
export const validateTenantId = (tenantId: string): Effect.Effect<string, TenantPartitionError> => {
  if (tenantId.length === 0) {
    return Effect.fail(new TenantPartitionError({ reason: "EmptyTenantId", message: "the tenant id is empty", tenantId }))
  }
  if (Array.from(tenantId).length > maxTenantIdLength) {
    return Effect.fail(
      new TenantPartitionError({
        reason: "TenantIdTooLong",
        message: `the tenant id is longer than ${maxTenantIdLength} characters`,
        tenantId: truncate(tenantId)
      })
    )
  }
  if (tenantId.includes("\u0000") || /\p{Cs}/u.test(tenantId)) {
    return Effect.fail(
      new TenantPartitionError({
        reason: "InvalidTenantId",
        message: "the tenant id contains a NUL character or an unpaired surrogate",
        tenantId: truncate(tenantId)
      })
    )
  }
  return Effect.succeed(tenantId)
}

const tenantPartitionName = (prefix: string, tenantId: string): string =>
  // reserve room for the month suffix the functions append, then strip it
  Identifier.derive(prefix, tenantId, `_t${MONTH_PLACEHOLDER}`).slice(0, -MONTH_PLACEHOLDER.length)

/**
 * The name of a tenant's LIST partition under `layout` (months are this
 * name plus `_pYYYYMM`). Pure apart from validation; does not touch the
 * database.
 *
 * @category naming
 * @since 0.1.0
 */
export const partitionName = (
  layout: Layout,
  tenantId: string
): Effect.Effect<string, Identifier.InvalidIdentifier | TenantPartitionError> =>
  Effect.zipWith(resolve(layout), validateTenantId(tenantId), (resolved, id) => tenantPartitionName(resolved.prefix, id))

// ---------------------------------------------------------------------------
// SQL

const sqlState = (error: SqlError.SqlError): string | undefined => {
  const cause: unknown = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

const database = (operation: string, tenantId?: string) =>
  fromSql(({ cause, message, retryable }) => {
    const code = sqlState(cause)
    const tenant = tenantId === undefined ? {} : { tenantId: truncate(tenantId) }
    if (code === "OBX01" || code === "OBX02") {
      const reason = code === "OBX01" ? "NameCollision" : "LayoutMismatch"
      return new TenantPartitionError({ reason, message: serverMessage(cause) ?? cause.reason.message ?? "", ...tenant, cause })
    }
    return new TenantPartitionError({ reason: "Database", message, retryable, ...tenant, cause })
  })(operation)

/** The functions, one `CREATE OR REPLACE` each (one statement per call). */
const functionDdl = (fn: (name: string) => string): ReadonlyArray<string> => [
  `-- Ensures the month partitions [from_month, from_month + months] of one
   -- tenant partition (RANGE on time). Each is created standalone and attached.
   -- Locks the root when given (NULL: the caller holds it).
   CREATE OR REPLACE FUNCTION ${fn("outbox_tenant_ensure_months")}(
     root regclass, part regclass, from_month date, months integer)
   RETURNS SETOF text LANGUAGE plpgsql AS $fn$
   DECLARE
     nsp name;
     base name;
     m date;
     child text;
     existing oid;
   BEGIN
     IF root IS NOT NULL THEN
       PERFORM pg_advisory_xact_lock(${LOCK_NAMESPACE}, root::oid::integer);
     END IF;
     SELECT n.nspname, c.relname INTO nsp, base
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = part;
     FOR i IN 0..months LOOP
       m := (date_trunc('month', from_month) + make_interval(months => i))::date;
       child := base || '_p' || to_char(m, 'YYYYMM');
       IF octet_length(child) > 63 THEN
         RAISE EXCEPTION USING ERRCODE = 'OBX02',
           MESSAGE = format('month partition name %I is longer than 63 bytes', child);
       END IF;
       SELECT c.oid INTO existing FROM pg_class c
        WHERE c.relname = child AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = part);
       IF existing IS NOT NULL THEN
         IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = existing AND inhparent = part) THEN
           RAISE EXCEPTION USING ERRCODE = 'OBX01',
             MESSAGE = format('%I.%I exists but is not a partition of %s', nsp, child, part);
         END IF;
         CONTINUE;
       END IF;
       EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
         nsp, child, part);
       EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)', part, nsp, child,
         to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00',
         to_char(m + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
       RETURN NEXT child;
     END LOOP;
   END
   $fn$`,
  `-- Ensures one tenant's LIST partition (named base, itself RANGE on time_column)
   -- and its months. The tenant id is a literal (%L) in the bound and the COMMENT.
   CREATE OR REPLACE FUNCTION ${fn("outbox_tenant_ensure")}(
     root regclass, base text, tenant text, time_column text, from_month date, months integer)
   RETURNS SETOF text LANGUAGE plpgsql AS $fn$
   DECLARE
     nsp name;
     existing oid;
     part regclass;
   BEGIN
     PERFORM pg_advisory_xact_lock(${LOCK_NAMESPACE}, root::oid::integer);
     SELECT n.nspname INTO nsp FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = root;
     SELECT c.oid INTO existing FROM pg_class c
      WHERE c.relname = base AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = root);
     IF existing IS NULL THEN
       EXECUTE format(
         'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED) PARTITION BY RANGE (%I)',
         nsp, base, root, time_column);
       part := format('%I.%I', nsp, base)::regclass;
       EXECUTE format('COMMENT ON TABLE %s IS %L', part, tenant);
       RETURN NEXT base;
       RETURN QUERY SELECT * FROM ${fn("outbox_tenant_ensure_months")}(NULL, part, from_month, months);
       EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%L)', root, part, tenant);
     ELSE
       IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = existing AND inhparent = root)
          OR obj_description(existing, 'pg_class') IS DISTINCT FROM tenant THEN
         RAISE EXCEPTION USING ERRCODE = 'OBX01',
           MESSAGE = format('the partition name %I.%I is taken by another table or tenant', nsp, base);
       END IF;
       RETURN QUERY SELECT * FROM ${fn("outbox_tenant_ensure_months")}(NULL, existing::regclass, from_month, months);
     END IF;
   END
   $fn$`,
  `-- Detaches and drops the month partitions of one tenant partition that end
   -- at or before cutoff. Only children named <part>_pYYYYMM are considered.
   CREATE OR REPLACE FUNCTION ${fn("outbox_tenant_drop_months_before")}(root regclass, part regclass, cutoff date)
   RETURNS TABLE (dropped_partition text, dropped_month date) LANGUAGE plpgsql AS $fn$
   DECLARE
     r record;
   BEGIN
     PERFORM pg_advisory_xact_lock(${LOCK_NAMESPACE}, root::oid::integer);
     FOR r IN
       SELECT c.oid AS child, c.relname AS child_name, to_date(right(c.relname, 6), 'YYYYMM') AS m
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = part
          AND c.relname ~ '_p[0-9]{6}$'
          AND left(c.relname, length(c.relname) - 8) = (SELECT relname FROM pg_class WHERE oid = part)
        ORDER BY c.relname
     LOOP
       CONTINUE WHEN (r.m + interval '1 month')::date > cutoff;
       EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', part, r.child::regclass);
       EXECUTE format('DROP TABLE %s', r.child::regclass);
       dropped_partition := r.child_name;
       dropped_month := r.m;
       RETURN NEXT;
     END LOOP;
   END
   $fn$`,
  `-- Every tenant partition of root with its months, exact row counts and sizes.
   CREATE OR REPLACE FUNCTION ${fn("outbox_tenant_status")}(root regclass)
   RETURNS TABLE (tenant_partition text, tenant_id text, month_partition text, live_rows bigint, total_bytes bigint)
   LANGUAGE plpgsql STABLE AS $fn$
   DECLARE
     r record;
   BEGIN
     FOR r IN
       SELECT t.relname AS t_name, obj_description(t.oid, 'pg_class') AS t_tenant, m.oid AS m_oid, m.relname AS m_name
         FROM pg_inherits ti
         JOIN pg_class t ON t.oid = ti.inhrelid
         LEFT JOIN pg_inherits mi ON mi.inhparent = t.oid
         LEFT JOIN pg_class m ON m.oid = mi.inhrelid
        WHERE ti.inhparent = root AND t.relkind = 'p'
        ORDER BY t.relname, m.relname
     LOOP
       tenant_partition := r.t_name;
       tenant_id := r.t_tenant;
       month_partition := r.m_name;
       live_rows := NULL;
       total_bytes := NULL;
       IF r.m_oid IS NOT NULL THEN
         EXECUTE format('SELECT count(*) FROM %s', r.m_oid::regclass) INTO live_rows;
         total_bytes := pg_total_relation_size(r.m_oid);
       END IF;
       RETURN NEXT;
     END LOOP;
   END
   $fn$`
]

/**
 * Installs what the layout needs (idempotent, safe to run concurrently):
 * validates the identifiers, checks that the parent exists, is
 * `PARTITION BY LIST (tenantColumn)` and has `timeColumn`, and
 * (re)creates the module's PL/pgSQL functions in the parent's schema (the
 * current schema when the table is unqualified). Runs in its own
 * transaction under an advisory lock.
 *
 * @category constructors
 * @since 0.1.0
 */
export const ensureLayout = (
  layout: Layout
): Effect.Effect<void, Identifier.InvalidIdentifier | TenantPartitionError, SqlClient.SqlClient> =>
  Effect.asVoid(install(layout))

const install = Effect.fn("TenantPartitions.ensureLayout")(function*(layout: Layout) {
  const resolved = yield* resolve(layout)
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const checks = yield* sql<{ exists: boolean; key: string | null; expected: string; time_type: string | null }>`
    SELECT to_regclass(${resolved.parent}) IS NOT NULL AS exists,
           pg_get_partkeydef(to_regclass(${resolved.parent})) AS key,
           format('LIST (%I)', ${resolved.tenantColumn}::text) AS expected,
           (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = to_regclass(${resolved.parent}) AND a.attname = ${resolved.timeColumn}
               AND a.attnum > 0 AND NOT a.attisdropped) AS time_type`.pipe(
    Effect.mapError(database("tenantPartitions.ensureLayout"))
  )
  const check = checks[0]!
  const mismatch = (message: string) =>
    new TenantPartitionError({ reason: "LayoutMismatch", message: `${layout.table}: ${message}` })
  if (!check.exists) return yield* mismatch("no such table")
  if (check.key !== check.expected) {
    return yield* mismatch(`expected PARTITION BY ${check.expected}, found ${check.key ?? "no partitioning"}`)
  }
  if (check.time_type === null) return yield* mismatch(`no column ${layout.timeColumn}`)
  if (!["timestamp with time zone", "timestamp without time zone", "date"].includes(check.time_type)) {
    return yield* mismatch(`${layout.timeColumn} is ${check.time_type}, expected timestamptz, timestamp or date`)
  }
  yield* sql.withTransaction(Effect.gen(function*() {
    const schema = resolved.schema ?? null
    yield* sql`SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, hashtext(coalesce(${schema}::text, current_schema()::text)))`
    for (const statement of functionDdl(resolved.fn)) yield* sql.unsafe(statement)
  })).pipe(Effect.mapError(database("tenantPartitions.ensureLayout")))
  return resolved
})

// ---------------------------------------------------------------------------
// service

/**
 * Options of {@link make} and {@link layer}.
 *
 * - `monthsAhead`: the default horizon, in months after the current one
 *   (default {@link defaultMonthsAhead}).
 * - `install`: run {@link ensureLayout} (default `true`); `false` when the
 *   functions are installed at deploy time (identifiers are validated either
 *   way; the parent is checked only when installing).
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly monthsAhead?: number | undefined
  readonly install?: boolean | undefined
}

/**
 * The tenant × month layout of one parent table.
 *
 * @category services
 * @since 0.1.0
 */
export class TenantPartitions extends Context.Service<TenantPartitions, {
  /** The layout this service manages. */
  readonly layout: Layout
  /** The name of a tenant's LIST partition (no database access). */
  readonly partitionName: (tenantId: string) => Effect.Effect<string, TenantPartitionError>
  /**
   * Ensures the tenant's LIST partition and its months from the current one
   * to `monthsAhead` after it. Cached per process: a repeated call within the
   * ensured horizon costs no round trip. Runs outside any ambient transaction.
   */
  readonly ensureTenant: (
    tenantId: string,
    options?: { readonly monthsAhead?: number | undefined }
  ) => Effect.Effect<EnsureResult, TenantPartitionError>
  /** `ensureTenant` (cached), then `effect`: wrap a tenant's writes in it. */
  readonly withTenant: <A, E, R>(
    tenantId: string,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TenantPartitionError, R>
  /** Ensures months up to the horizon for every tenant partition in the catalog. */
  readonly sweep: (
    options?: { readonly monthsAhead?: number | undefined }
  ) => Effect.Effect<SweepResult, TenantPartitionError>
  /**
   * Detaches and drops month partitions wholly older than `retentionMonths`
   * full months before the current one, for `tenantId` or (absent) every tenant.
   */
  readonly applyRetention: (options: {
    readonly retentionMonths: number
    readonly tenantId?: string | undefined
  }) => Effect.Effect<ReadonlyArray<DroppedPartition>, TenantPartitionError>
  /** Tenants, months, exact rows and bytes (scans every partition: an admin call). */
  readonly status: Effect.Effect<ReadonlyArray<TenantStatus>, TenantPartitionError>
}>()("@outbox/sql/TenantPartitions") {}

const monthCount = (name: string, value: number, max: number) =>
  Number.isInteger(value) && value >= 0 && value <= max
    ? Effect.succeed(value)
    : Effect.fail(
      new TenantPartitionError({
        reason: "InvalidOption",
        message: `${name} must be an integer in [0, ${max}], got ${value}`
      })
    )

/** Months since year 0 (UTC), from `Clock`. */
const currentMonthIndex = Effect.map(DateTime.now, (now) => {
  const parts = DateTime.toPartsUtc(now)
  return parts.year * 12 + (parts.month - 1)
})

const monthStart = (index: number): string => {
  const year = Math.floor(index / 12)
  const month = index - year * 12 + 1
  return `${String(year).padStart(4, "0")}-${String(month).padStart(2, "0")}-01`
}

/** `_pYYYYMM`, as the PL/pgSQL functions name month partitions. */
const monthSuffix = (index: number): string => `_p${monthStart(index).slice(0, 7).replace("-", "")}`

const monthLabel = (name: string, partition: string): string | null => {
  const match = /^(.*)_p(\d{4})(\d{2})$/.exec(name)
  return match !== null && match[1] === partition ? `${match[2]}-${match[3]}` : null
}

/**
 * Builds the service for `layout`: checks the layout and installs its
 * functions (see {@link ensureLayout}).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(layout: Layout, options: Options = {}) {
  const defaultAhead = yield* monthCount("monthsAhead", options.monthsAhead ?? defaultMonthsAhead, 120)
  const resolved = options.install === false ? yield* resolve(layout) : yield* install(layout)
  const client = yield* SqlClient.SqlClient
  const sql = client.withoutTransforms()
  /** Runs on a pool connection of its own, never in the caller's transaction. */
  const outsideTransaction = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.updateContext(effect, (context: Context.Context<never>) => Context.omit(client.transactionService)(context))
  /** tenant id -> its partition name and the last month index ensured */
  const ensured = new Map<string, { readonly partition: string; readonly horizon: number }>()

  const partitionName = (tenantId: string) =>
    Effect.map(validateTenantId(tenantId), (id) => tenantPartitionName(resolved.prefix, id))

  const ensureInDatabase = Effect.fn("TenantPartitions.ensureTenant")(function*(
    tenantId: string,
    current: number,
    ahead: number
  ) {
    const partition = yield* partitionName(tenantId)
    yield* Effect.annotateCurrentSpan({ "outbox.tenant_partition": partition, "outbox.months_ahead": ahead })
    const rows = yield* sql<{ created: string }>`
      SELECT created FROM ${sql.literal(resolved.fn("outbox_tenant_ensure"))}(
        ${resolved.parent}::regclass, ${partition}, ${tenantId}, ${resolved.timeColumn},
        ${monthStart(current)}::date, ${ahead}) AS t(created)`.pipe(
      outsideTransaction,
      Effect.mapError(database("tenantPartitions.ensureTenant", tenantId))
    )
    // Inside a transaction that already used the parent, PostgreSQL keeps its cached partition list until
    // the transaction takes a lock it did not hold: lock the tenant's partitions (new ones are new locks).
    if (Option.isSome(yield* Effect.serviceOption(client.transactionService))) {
      const months = Array.from({ length: ahead + 1 }, (_, i) => `${partition}${monthSuffix(current + i)}`)
      const names = [partition, ...months]
      const qualified = names.map((name) => `ONLY ${Identifier.quoteQualified({ schema: resolved.schema, name })}`)
      yield* sql.unsafe(`LOCK TABLE ${qualified.join(", ")} IN ACCESS SHARE MODE`).pipe(
        Effect.mapError(database("tenantPartitions.ensureTenant", tenantId))
      )
    }
    const horizon = Math.max(ensured.get(tenantId)?.horizon ?? -1, current + ahead)
    ensured.set(tenantId, { partition, horizon })
    return { partition, created: rows.map((row) => row.created), cached: false } satisfies EnsureResult
  })

  // the hot path: a cache hit is a map lookup and a clock read, no span, no hashing, no SQL
  const ensureTenant = Effect.fnUntraced(function*(
    tenantId: string,
    ensureOptions?: { readonly monthsAhead?: number | undefined }
  ) {
    const ahead = ensureOptions?.monthsAhead === undefined
      ? defaultAhead
      : yield* monthCount("monthsAhead", ensureOptions.monthsAhead, 120)
    const current = yield* currentMonthIndex
    const known = ensured.get(tenantId)
    if (known !== undefined && known.horizon >= current + ahead) {
      return { partition: known.partition, created: [], cached: true } satisfies EnsureResult
    }
    return yield* ensureInDatabase(tenantId, current, ahead)
  })

  const withTenant = <A, E, R>(tenantId: string, effect: Effect.Effect<A, E, R>) =>
    Effect.andThen(ensureTenant(tenantId), effect)

  const tenantPartitions = sql<{ partition: string; name: string; tenant_id: string | null }>`
    SELECT c.oid::regclass::text AS partition, c.relname AS name, obj_description(c.oid, 'pg_class') AS tenant_id
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = ${resolved.parent}::regclass AND c.relkind = 'p'
     ORDER BY c.relname`

  const sweep = Effect.fn("TenantPartitions.sweep")(function*(
    sweepOptions?: { readonly monthsAhead?: number | undefined }
  ) {
    const ahead = yield* monthCount("monthsAhead", sweepOptions?.monthsAhead ?? defaultAhead, 120)
    const current = yield* currentMonthIndex
    const tenants = yield* tenantPartitions.pipe(outsideTransaction, Effect.mapError(database("tenantPartitions.sweep")))
    const created: Array<string> = []
    const failed: Array<{ partition: string; error: TenantPartitionError }> = []
    for (const tenant of tenants) {
      const result = yield* sql<{ created: string }>`
        SELECT created FROM ${sql.literal(resolved.fn("outbox_tenant_ensure_months"))}(
          ${resolved.parent}::regclass, ${tenant.partition}::regclass, ${monthStart(current)}::date, ${ahead}
        ) AS t(created)`.pipe(
        outsideTransaction,
        Effect.mapError(database("tenantPartitions.sweep", tenant.tenant_id ?? undefined)),
        Effect.result
      )
      if (result._tag === "Success") created.push(...result.success.map((row) => row.created))
      else {
        yield* Effect.logWarning(`tenant partitions: sweep of ${tenant.partition} failed`, result.failure)
        failed.push({ partition: tenant.name, error: result.failure })
      }
    }
    return { tenants: tenants.length, created, failed } satisfies SweepResult
  })

  const applyRetention = Effect.fn("TenantPartitions.applyRetention")(function*(retention: {
    readonly retentionMonths: number
    readonly tenantId?: string | undefined
  }) {
    const months = yield* monthCount("retentionMonths", retention.retentionMonths, 100_000)
    const only = retention.tenantId === undefined ? undefined : yield* partitionName(retention.tenantId)
    const current = yield* currentMonthIndex
    const cutoff = monthStart(current - months)
    const all = yield* tenantPartitions.pipe(
      outsideTransaction,
      Effect.mapError(database("tenantPartitions.applyRetention", retention.tenantId))
    )
    const targets = only === undefined ? all : all.filter((tenant) => tenant.name === only)
    const dropped: Array<DroppedPartition> = []
    for (const tenant of targets) {
      const rows = yield* sql<{ dropped_partition: string; dropped_month: string }>`
        SELECT dropped_partition, to_char(dropped_month, 'YYYY-MM') AS dropped_month
          FROM ${sql.literal(resolved.fn("outbox_tenant_drop_months_before"))}(
            ${resolved.parent}::regclass, ${tenant.partition}::regclass, ${cutoff}::date)`.pipe(
        outsideTransaction,
        Effect.mapError(database("tenantPartitions.applyRetention", tenant.tenant_id ?? undefined))
      )
      for (const row of rows) {
        dropped.push({ tenantId: tenant.tenant_id, partition: row.dropped_partition, month: row.dropped_month })
      }
    }
    return dropped as ReadonlyArray<DroppedPartition>
  })

  const status = sql<{
    tenant_partition: string
    tenant_id: string | null
    month_partition: string | null
    live_rows: number | null
    total_bytes: number | null
  }>`
    SELECT tenant_partition, tenant_id, month_partition,
           live_rows::float8 AS live_rows, total_bytes::float8 AS total_bytes
      FROM ${sql.literal(resolved.fn("outbox_tenant_status"))}(${resolved.parent}::regclass)`.pipe(
    outsideTransaction,
    Effect.mapError(database("tenantPartitions.status")),
    Effect.map((rows) => {
      const byTenant = new Map<string, { tenantId: string | null; months: Array<MonthStatus> }>()
      for (const row of rows) {
        const entry = byTenant.get(row.tenant_partition) ?? { tenantId: row.tenant_id, months: [] }
        byTenant.set(row.tenant_partition, entry)
        if (row.month_partition !== null) {
          entry.months.push({
            partition: row.month_partition,
            month: monthLabel(row.month_partition, row.tenant_partition),
            rows: row.live_rows ?? 0,
            bytes: row.total_bytes ?? 0
          })
        }
      }
      return Array.from(byTenant, ([partition, entry]): TenantStatus => ({
        tenantId: entry.tenantId,
        partition,
        months: entry.months,
        rows: entry.months.reduce((sum, month) => sum + month.rows, 0),
        bytes: entry.months.reduce((sum, month) => sum + month.bytes, 0)
      }))
    }),
    Effect.withSpan("TenantPartitions.status")
  )

  return TenantPartitions.of({ layout, partitionName, ensureTenant, withTenant, sweep, applyRetention, status })
})

/**
 * The service as a layer (see {@link make}).
 *
 * **Example**
 * ```ts
 * const EventsPartitions = TenantPartitions.layer({
 *   table: "events", tenantColumn: "tenant_id", timeColumn: "created_at"
 * })
 * const publish = (tenantId: string, payload: unknown) =>
 *   Effect.gen(function*() {
 *     const partitions = yield* TenantPartitions.TenantPartitions
 *     const sql = yield* SqlClient.SqlClient
 *     yield* partitions.withTenant(tenantId, sql`INSERT INTO events ${sql.insert({ tenant_id: tenantId, payload })}`)
 *   })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  layout: Layout,
  options?: Options
): Layer.Layer<TenantPartitions, Identifier.InvalidIdentifier | TenantPartitionError, SqlClient.SqlClient> =>
  Layer.effect(TenantPartitions, make(layout, options))
