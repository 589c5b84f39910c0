/**
 * Native partition maintenance for the outbox and any application table
 * partitioned by `RANGE` on a `timestamptz` column, driven by
 * `@outbox/core/PartitionPolicy` values.
 *
 * `maintain(policy)` is idempotent and safe to run from several processes
 * at once (each step takes a transaction-level advisory lock on the parent
 * and re-reads the catalog under it):
 *
 * 1. **Create ahead**: every range the calendar expects (the current
 *    interval and `premake` after it) that has no partition gets one.
 * 2. **Rescue DEFAULT**: rows that landed in the DEFAULT partition get the
 *    partition of their range; a range overlapping rows in DEFAULT cannot be
 *    created with `PARTITION OF`, so the rows are moved in one transaction:
 *    `CREATE TABLE ... (LIKE parent)`, `DELETE ... RETURNING` into it,
 *    `ATTACH PARTITION`.
 * 3. **Retention**: partitions whose upper bound is at or before
 *    `now - retention` are detached and dropped (or only detached, or
 *    archived first). With no DEFAULT partition the detach is
 *    `DETACH ... CONCURRENTLY` (writers are not blocked); PostgreSQL refuses
 *    that when a DEFAULT partition exists, so then it is a plain detach under
 *    `lock_timeout`. A partition still holding a protected row (for the
 *    outbox: not COMPLETED nor DEAD_LETTER) is never dropped: it is reported
 *    in `blocked`, checked again after the detach, and re-attached if a row
 *    appeared in between.
 * 4. **Archive** (retention mode `archive`, which needs an `ArchiveStorage`
 *    in the context of `maintain`): the partition is written to the storage
 *    (`PartitionArchive.archive`), read back and verified, detached, and
 *    dropped only if the detached table still holds exactly the archived
 *    rows (an order-free digest of them). A failed write or verification, or
 *    rows changed meanwhile, drops nothing: the partition stays attached and
 *    the step is reported in `failed`.
 *
 * "Now" is Effect's `Clock`, so a `TestClock` drives the calendar. DDL never
 * runs on the publish path: only here.
 *
 * @since 0.1.0
 */
import * as ArchiveStorageModule from "@outbox/core/ArchiveStorage"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as Identifier from "./Identifier.ts"
import { digestQuery } from "./internal/archiveRows.ts"
import { fromSql } from "./internal/sqlError.ts"
import * as PartitionArchive from "./PartitionArchive.ts"

/**
 * A maintenance or inspection step failed.
 *
 * @category errors
 * @since 0.1.0
 */
export class PartitionError extends Schema.TaggedError<PartitionError>("@outbox/sql/PartitionError")("PartitionError", {
  reason: Schema.Literals(["NotPartitioned", "InvalidPolicy", "NoArchiveStorage", "Database"]),
  table: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * One partition of a parent, from the catalog.
 *
 * @category models
 * @since 0.1.0
 */
export interface Leaf {
  readonly schema: string
  readonly name: string
  readonly isDefault: boolean
  /** `null` for DEFAULT (and MINVALUE bounds). */
  readonly from: Date | null
  /** `null` for DEFAULT (and MAXVALUE bounds). */
  readonly to: Date | null
  /** `pg_class.reltuples` (-1 when never analyzed). */
  readonly estimatedRows: number
  /** `pg_total_relation_size`: heap, indexes and TOAST. */
  readonly totalBytes: number
}

/**
 * One step of a `maintain` run, as it is done.
 *
 * @category models
 * @since 0.1.0
 */
export interface MaintenanceStep {
  readonly step: "create" | "retire"
  readonly partition: string
  readonly outcome: "done" | "blocked" | "failed"
}

/**
 * What one `maintain` did.
 *
 * @category models
 * @since 0.1.0
 */
export interface MaintenanceReport {
  readonly table: string
  readonly at: Date
  /** Partitions created (including those created to rescue DEFAULT rows). */
  readonly created: ReadonlyArray<string>
  /** Rows moved out of DEFAULT, per new partition. */
  readonly moved: ReadonlyArray<{ readonly partition: string; readonly rows: number }>
  /** Partitions retired by retention. */
  readonly retired: ReadonlyArray<{
    readonly partition: string
    readonly action: "dropped" | "detached" | "archived"
    readonly detach: "concurrently" | "locking"
  }>
  /** Partitions past retention that still hold protected rows: kept. */
  readonly blocked: ReadonlyArray<{ readonly partition: string; readonly unfinished: number }>
  /** Steps that failed; the other steps still ran. */
  readonly failed: ReadonlyArray<{ readonly partition: string; readonly step: string; readonly message: string }>
}

/**
 * A problem the health check names.
 *
 * @category models
 * @since 0.1.0
 */
export interface HealthProblem {
  readonly kind: "Gap" | "HorizonShort" | "RowsInDefault" | "PastRetention" | "TooManyPartitions" | "NoDefault"
  readonly message: string
}

/**
 * The health of one policy's table.
 *
 * @category models
 * @since 0.1.0
 */
export interface Health {
  readonly table: string
  readonly ok: boolean
  readonly problems: ReadonlyArray<HealthProblem>
  readonly partitions: number
  /** Upper bound of the newest partition. */
  readonly horizon: Date | null
  readonly rowsInDefault: number
}

/**
 * Per-parent summary (the `outbox_partition_overview` view).
 *
 * @category models
 * @since 0.1.0
 */
export interface Overview {
  readonly parent: string
  readonly partitions: number
  readonly totalBytes: number
  readonly minBytes: number
  readonly maxBytes: number
  readonly avgBytes: number
  readonly estimatedRows: number
  readonly oldest: Date | null
  readonly newest: Date | null
}

/**
 * The partition manager.
 *
 * @category services
 * @since 0.1.0
 */
export class PartitionManager extends Context.Service<PartitionManager, {
  /**
   * Creates ahead, rescues DEFAULT rows, applies retention. `onStep` sees
   * each partition created or retired (for progress output).
   */
  readonly maintain: (
    policy: PartitionPolicy.PartitionPolicy,
    options?: { readonly onStep?: ((step: MaintenanceStep) => Effect.Effect<void>) | undefined }
  ) => Effect.Effect<MaintenanceReport, PartitionError | Identifier.InvalidIdentifier>
  /** The partitions of `table`, oldest first, DEFAULT last. */
  readonly leaves: (table: string) => Effect.Effect<ReadonlyArray<Leaf>, PartitionError | Identifier.InvalidIdentifier>
  /** Problems of a policy's table at the current time. */
  readonly health: (
    policy: PartitionPolicy.PartitionPolicy
  ) => Effect.Effect<Health, PartitionError | Identifier.InvalidIdentifier>
  /** Count and size distribution of every partitioned table. */
  readonly overview: Effect.Effect<ReadonlyArray<Overview>, PartitionError>
}>()("@outbox/sql/PartitionManager") {}

interface ResolvedTable {
  readonly label: string
  readonly schema: string
  readonly name: string
  readonly qualified: string
  readonly column: string
}

/** A Date as a timestamptz literal for DDL bounds: digits and separators only. */
const boundLiteral = (date: Date): string => {
  const iso = date.toISOString()
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(iso)) throw new Error(`unexpected date ${iso}`)
  return `'${iso}'`
}

/** A catalog relation as a quoted `schema.name`. */
const qualifiedName = (relation: { readonly schema: string; readonly name: string }): string =>
  `${Identifier.quote(relation.schema)}.${Identifier.quote(relation.name)}`

/** `date_trunc` units of the policy intervals (ISO weeks start on Monday, as in `PartitionPolicy.floor`). */
const truncUnit: Record<PartitionPolicy.Interval, string> = {
  daily: "day",
  weekly: "week",
  monthly: "month",
  quarterly: "quarter"
}

const databaseError = (table: string, step: string) =>
  fromSql(({ cause, message }) => new PartitionError({ reason: "Database", table, message, cause }))(step)

const messageOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)

/** What retiring one partition came to (`Skipped`: another maintainer retired it first). */
type RetireOutcome =
  | { readonly _tag: "Retired"; readonly action: "dropped" | "detached" | "archived"; readonly detach: "concurrently" | "locking" }
  | { readonly _tag: "Blocked"; readonly unfinished: number }
  | { readonly _tag: "Failed"; readonly message: string }
  | { readonly _tag: "Skipped" }

/** A leaf past retention, with what `maintain` knows of its table. */
interface RetireTarget {
  readonly t: ResolvedTable
  readonly policy: PartitionPolicy.PartitionPolicy
  readonly leaf: Leaf
  /** PostgreSQL refuses DETACH CONCURRENTLY while a DEFAULT partition exists. */
  readonly hasDefault: boolean
}

/** Rows in DEFAULT of a range, raised to fail (and roll back) a step. */
class Unfinished {
  readonly _tag = "Unfinished"
  readonly count: number
  constructor(count: number) {
    this.count = count
  }
}

/**
 * Builds the manager. Archive retention needs an `ArchiveStorage` in the
 * context when `maintain` runs; the other modes do not.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.gen(function*() {
  const client = yield* SqlClient.SqlClient
  const sql = client.withoutTransforms()

  const resolve = Effect.fnUntraced(function*(table: string, column = "") {
    const parsed = yield* Identifier.validateQualified(table)
    if (column !== "") yield* Identifier.validate(column, "column")
    const rows = yield* sql<{ schema: string; name: string; partitioned: boolean }>`
      SELECT n.nspname AS schema, c.relname AS name, c.relkind = 'p' AS partitioned
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = to_regclass(${Identifier.quoteQualified(parsed)})`.pipe(Effect.mapError(databaseError(table, "resolve")))
    const found = rows[0]
    if (found === undefined || !found.partitioned) {
      return yield* new PartitionError({
        reason: "NotPartitioned",
        table,
        message: found === undefined ? `table ${table} does not exist` : `table ${table} is not partitioned`
      })
    }
    return {
      label: table,
      schema: found.schema,
      name: found.name,
      qualified: qualifiedName(found),
      column
    } satisfies ResolvedTable
  })

  const leavesOf = (t: ResolvedTable) =>
    sql<{ schema: string; name: string; is_default: boolean; range_from: Date | null; range_to: Date | null; estimated_rows: number; total_bytes: string }>`
      SELECT schema, name, is_default, range_from, range_to, estimated_rows, total_bytes
      FROM outbox_partition_leaves
      WHERE parent_oid = to_regclass(${t.qualified})
      ORDER BY is_default, range_from NULLS FIRST`.pipe(
      Effect.map((rows): ReadonlyArray<Leaf> =>
        rows.map((r) => ({
          schema: r.schema,
          name: r.name,
          isDefault: r.is_default,
          from: r.range_from,
          to: r.range_to,
          estimatedRows: Number(r.estimated_rows),
          totalBytes: Number(r.total_bytes)
        }))
      ),
      Effect.mapError(databaseError(t.label, "list partitions"))
    )

  const lockParent = (t: ResolvedTable) =>
    sql`SELECT pg_advisory_xact_lock(hashtext('outbox.partitions'), hashtext(${`${t.schema}.${t.name}`}))`

  const rowsInDefault = (t: ResolvedTable, leaf: Leaf | undefined) =>
    leaf === undefined ? Effect.succeed(0) : sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.literal(qualifiedName(leaf))}`.pipe(
      Effect.map((rows) => rows[0]?.n ?? 0),
      Effect.mapError(databaseError(t.label, "count DEFAULT rows"))
    )

  /** Creates the partition of `range` (moving DEFAULT rows into it) unless one exists. */
  const createPartition = (t: ResolvedTable, range: PartitionPolicy.Range) =>
    Effect.gen(function*() {
      const name = yield* Identifier.validate(`${t.name}_${PartitionPolicy.suffix(range.from)}`, "partition name")
      const partition = qualifiedName({ schema: t.schema, name })
      const bounds = `FROM (${boundLiteral(range.from)}) TO (${boundLiteral(range.to)})`
      return yield* sql.withTransaction(Effect.gen(function*() {
        yield* lockParent(t)
        // re-read under the lock: another maintainer may have made it
        const existing = yield* leavesOf(t)
        if (existing.some((l) => !l.isDefault && l.from !== null && l.from.getTime() === range.from.getTime())) {
          return { created: undefined, moved: 0 }
        }
        yield* sql`SET LOCAL lock_timeout = '5s'`
        const defaultLeaf = existing.find((l) => l.isDefault)
        const column = sql.literal(Identifier.quote(t.column))
        const inDefault = defaultLeaf === undefined ? 0 : (yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM ${sql.literal(qualifiedName(defaultLeaf))}
          WHERE ${column} >= ${range.from} AND ${column} < ${range.to}`)[0]!.n
        if (inDefault === 0) {
          yield* sql.unsafe(`CREATE TABLE ${partition} PARTITION OF ${t.qualified} FOR VALUES ${bounds}`)
          return { created: name, moved: 0 }
        }
        const from = qualifiedName(defaultLeaf!)
        yield* sql.unsafe(`CREATE TABLE ${partition} (LIKE ${t.qualified} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)`)
        yield* sql.unsafe(
          `WITH moved AS (DELETE FROM ${from} WHERE ${Identifier.quote(t.column)} >= ${boundLiteral(range.from)} AND ${
            Identifier.quote(t.column)
          } < ${boundLiteral(range.to)} RETURNING *) INSERT INTO ${partition} SELECT * FROM moved`
        )
        yield* sql.unsafe(`ALTER TABLE ${t.qualified} ATTACH PARTITION ${partition} FOR VALUES ${bounds}`)
        return { created: name, moved: inDefault }
      }))
    })

  /** Ranges of rows sitting in DEFAULT, by the policy's interval (one row per range, truncated server-side). */
  const defaultRanges = (t: ResolvedTable, policy: PartitionPolicy.PartitionPolicy, leaf: Leaf) =>
    sql<{ at: Date }>`
      SELECT DISTINCT date_trunc(${truncUnit[policy.interval]}, ${sql.literal(Identifier.quote(t.column))} AT TIME ZONE 'UTC')
             AT TIME ZONE 'UTC' AS at
      FROM ${sql.literal(qualifiedName(leaf))}
      ORDER BY 1`.pipe(Effect.map((rows) => rows.map((r) => PartitionPolicy.rangeOf(policy.interval, r.at))))

  const unfinishedIn = (partition: string, protect: PartitionPolicy.Protect | undefined) =>
    protect === undefined ? Effect.succeed(0) : sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.literal(partition)}
      WHERE ${sql.literal(Identifier.quote(protect.column))} NOT IN ${sql.in(protect.doneValues)}`.pipe(
      Effect.map((rows) => rows[0]?.n ?? 0)
    )

  /**
   * What both retention paths (`retire`, `retireArchived`) start from: the
   * protect column validated (it is spliced into SQL), the leaf's quoted
   * name, and the statement that re-attaches it once detached.
   */
  const retiring = ({ leaf, policy, t }: RetireTarget) => {
    const partition = qualifiedName(leaf)
    return Effect.as(policy.protect === undefined ? Effect.void : Identifier.validate(policy.protect.column, "column"), {
      partition,
      reattach: sql.unsafe(
        `ALTER TABLE ${t.qualified} ATTACH PARTITION ${partition} FOR VALUES FROM (${boundLiteral(leaf.from!)}) TO (${boundLiteral(leaf.to!)})`
      )
    })
  }

  const retire = (target: RetireTarget) =>
    Effect.gen(function*() {
      const { hasDefault, policy, t } = target
      const { partition, reattach } = yield* retiring(target)
      const before = yield* unfinishedIn(partition, policy.protect)
      if (before > 0) return { _tag: "Blocked" as const, unfinished: before }
      const action = policy.retentionMode === "detach" ? "detached" as const : "dropped" as const
      if (hasDefault) {
        // PostgreSQL refuses DETACH CONCURRENTLY while a DEFAULT partition exists
        const outcome = yield* sql.withTransaction(Effect.gen(function*() {
          yield* lockParent(t)
          yield* sql`SET LOCAL lock_timeout = '5s'`
          yield* sql.unsafe(`ALTER TABLE ${t.qualified} DETACH PARTITION ${partition}`)
          const after = yield* unfinishedIn(partition, policy.protect)
          if (after > 0) return yield* Effect.fail(new Unfinished(after))
          if (action !== "detached") yield* sql.unsafe(`DROP TABLE ${partition}`)
        })).pipe(
          Effect.as({ _tag: "Retired" as const, action, detach: "locking" as const }),
          Effect.catchIf((e): e is Unfinished => e instanceof Unfinished, (e) => Effect.succeed({ _tag: "Blocked" as const, unfinished: e.count }))
        )
        return outcome
      }
      yield* sql.unsafe(`ALTER TABLE ${t.qualified} DETACH PARTITION ${partition} CONCURRENTLY`)
      const after = yield* unfinishedIn(partition, policy.protect)
      if (after > 0) {
        yield* reattach
        return { _tag: "Blocked" as const, unfinished: after }
      }
      if (action !== "detached") yield* sql.unsafe(`DROP TABLE ${partition}`)
      return { _tag: "Retired" as const, action, detach: "concurrently" as const }
    })

  /**
   * Retention mode "archive": a partition is dropped only once its archive
   * has been written, read back and verified, and the detached partition
   * still holds exactly the archived rows.
   *
   * 1. Under the parent's advisory lock (so that two maintainers never
   *    archive the same partition at once), in one transaction: skip a
   *    partition another maintainer already retired, report one holding
   *    protected rows, archive it, verify the archive (checksum, row count,
   *    digest of the rows), then, with a DEFAULT partition, detach it.
   * 2. Without DEFAULT: `DETACH ... CONCURRENTLY`.
   * 3. Detached, it can no longer be written through the parent: unless it
   *    holds no protected row and the same rows as the archive (order-free
   *    digest), it is re-attached and kept. Then it is dropped.
   *
   * Any failure (storage, verification, SQL) drops nothing: before the
   * detach it rolls back, after it the partition is re-attached.
   */
  const retireArchived = (target: RetireTarget) =>
    Effect.gen(function*() {
      const { hasDefault, leaf, policy, t } = target
      const storage = yield* Effect.serviceOption(ArchiveStorageModule.ArchiveStorage)
      if (Option.isNone(storage)) {
        return yield* new PartitionError({
          reason: "NoArchiveStorage",
          table: t.label,
          message: `retention mode "archive" needs an ArchiveStorage layer`
        })
      }
      const { partition, reattach } = yield* retiring(target)
      const archiveAndVerify = Effect.gen(function*() {
        const manifest = yield* PartitionArchive.archive({
          parent: `${t.schema}.${t.name}`,
          partition: `${leaf.schema}.${leaf.name}`,
          from: leaf.from!,
          to: leaf.to!
        })
        return yield* PartitionArchive.verify(PartitionArchive.manifestKey(manifest.table, manifest.partition))
      }).pipe(Effect.provideService(ArchiveStorageModule.ArchiveStorage, storage.value))

      const archived = yield* sql.withTransaction(Effect.gen(function*() {
        yield* lockParent(t)
        const current = yield* leavesOf(t)
        if (!current.some((l) => l.schema === leaf.schema && l.name === leaf.name)) return { _tag: "Skipped" as const }
        const before = yield* unfinishedIn(partition, policy.protect)
        if (before > 0) return { _tag: "Blocked" as const, unfinished: before }
        const verified = yield* archiveAndVerify
        if (hasDefault) {
          // PostgreSQL refuses DETACH CONCURRENTLY while a DEFAULT partition exists
          yield* sql`SET LOCAL lock_timeout = '5s'`
          yield* sql.unsafe(`ALTER TABLE ${t.qualified} DETACH PARTITION ${partition}`)
        }
        return { _tag: "Archived" as const, digest: verified.digest }
      }))
      if (archived._tag !== "Archived") return archived
      if (!hasDefault) yield* sql.unsafe(`ALTER TABLE ${t.qualified} DETACH PARTITION ${partition} CONCURRENTLY`)

      return yield* Effect.gen(function*() {
        const after = yield* unfinishedIn(partition, policy.protect)
        if (after > 0) {
          yield* reattach
          return { _tag: "Blocked" as const, unfinished: after }
        }
        const [row] = yield* sql.unsafe<{ readonly digest: string }>(digestQuery(partition))
        if (row?.digest !== archived.digest) {
          yield* reattach
          return {
            _tag: "Failed" as const,
            message: `${leaf.name} changed while it was archived (rows:digest ${row?.digest} in the table, ${archived.digest} in the archive): kept, the next run archives it again`
          }
        }
        yield* sql.unsafe(`DROP TABLE ${partition}`)
        return { _tag: "Retired" as const, action: "archived" as const, detach: hasDefault ? "locking" as const : "concurrently" as const }
      }).pipe(Effect.onError(() => Effect.ignore(reattach)))
    })

  const maintain = Effect.fn("PartitionManager.maintain")(function*(
    policy: PartitionPolicy.PartitionPolicy,
    onStep: (step: MaintenanceStep) => Effect.Effect<void> = () => Effect.void
  ) {
    yield* Effect.annotateCurrentSpan({ "outbox.partition.table": policy.table })
    if (!Number.isInteger(policy.premake) || policy.premake < 0) {
      return yield* new PartitionError({ reason: "InvalidPolicy", table: policy.table, message: "premake must be a non-negative integer" })
    }
    if (policy.retention !== undefined && (!Number.isInteger(policy.retention.amount) || policy.retention.amount < 1)) {
      return yield* new PartitionError({ reason: "InvalidPolicy", table: policy.table, message: "retention must be a positive integer" })
    }
    const t = yield* resolve(policy.table, policy.column)
    const now = new Date(yield* Clock.currentTimeMillis)
    const created: Array<string> = []
    const moved: Array<{ partition: string; rows: number }> = []
    const retired: Array<MaintenanceReport["retired"][number]> = []
    const blocked: Array<{ partition: string; unfinished: number }> = []
    const failed: Array<{ partition: string; step: string; message: string }> = []

    const ensure = (range: PartitionPolicy.Range) =>
      createPartition(t, range).pipe(
        Effect.tap((r) =>
          Effect.andThen(
            Effect.sync(() => {
              if (r.created !== undefined) created.push(r.created)
              if (r.moved > 0) moved.push({ partition: r.created!, rows: r.moved })
            }),
            r.created === undefined ? Effect.void : onStep({ step: "create", partition: r.created, outcome: "done" })
          )
        ),
        Effect.catch((e) => {
          const partition = `${t.name}_${PartitionPolicy.suffix(range.from)}`
          return Effect.andThen(
            Effect.sync(() => failed.push({ partition, step: "create", message: messageOf(e) })),
            onStep({ step: "create", partition, outcome: "failed" })
          )
        })
      )

    // 1 + 2: rescue DEFAULT rows first (their ranges may include the ones ahead), then create ahead.
    // Ranges the catalog already has cost nothing; the others are re-checked under the lock.
    const initial = yield* leavesOf(t)
    const existing = new Set(initial.flatMap((l) => (l.isDefault || l.from === null ? [] : [l.from.getTime()])))
    const defaultLeaf = initial.find((l) => l.isDefault)
    const rescue = defaultLeaf === undefined
      ? []
      : yield* defaultRanges(t, policy, defaultLeaf).pipe(Effect.mapError(databaseError(t.label, "scan DEFAULT")))
    for (const range of [...rescue, ...PartitionPolicy.expectedAhead(policy, now)]) {
      if (existing.has(range.from.getTime())) continue
      existing.add(range.from.getTime())
      yield* ensure(range)
    }

    // 3: retention
    const cutoff = PartitionPolicy.retentionCutoff(policy, now)
    if (cutoff !== undefined) {
      const leaves = yield* leavesOf(t)
      const hasDefault = leaves.some((l) => l.isDefault)
      for (const leaf of leaves) {
        if (leaf.isDefault || leaf.from === null || leaf.to === null || leaf.to.getTime() > cutoff.getTime()) continue
        const target: RetireTarget = { t, policy, leaf, hasDefault }
        const attempt: Effect.Effect<RetireOutcome, unknown, SqlClient.SqlClient> = policy.retentionMode === "archive"
          ? retireArchived(target)
          : retire(target)
        const outcome = yield* attempt.pipe(
          Effect.catch((e) => Effect.succeed<RetireOutcome>({ _tag: "Failed", message: messageOf(e) }))
        )
        // another maintainer retired it meanwhile: its report has it
        if (outcome._tag === "Skipped") continue
        if (outcome._tag === "Retired") retired.push({ partition: leaf.name, action: outcome.action, detach: outcome.detach })
        else if (outcome._tag === "Blocked") blocked.push({ partition: leaf.name, unfinished: outcome.unfinished })
        else failed.push({ partition: leaf.name, step: "retire", message: outcome.message })
        yield* onStep({
          step: "retire",
          partition: leaf.name,
          outcome: outcome._tag === "Retired" ? "done" : outcome._tag === "Blocked" ? "blocked" : "failed"
        })
      }
    }
    const report: MaintenanceReport = { table: policy.table, at: now, created, moved, retired, blocked, failed }
    yield* Effect.annotateCurrentSpan({
      "outbox.partition.created": created.length,
      "outbox.partition.retired": retired.length,
      "outbox.partition.blocked": blocked.length
    })
    return report
  })

  const leaves = (table: string) => Effect.flatMap(resolve(table), leavesOf)

  const health = Effect.fn("PartitionManager.health")(function*(policy: PartitionPolicy.PartitionPolicy) {
    const t = yield* resolve(policy.table, policy.column)
    const now = new Date(yield* Clock.currentTimeMillis)
    const all = yield* leavesOf(t)
    const ranged = all.filter((l) => !l.isDefault && l.from !== null && l.to !== null)
    const defaultLeaf = all.find((l) => l.isDefault)
    const problems: Array<HealthProblem> = []
    for (let i = 1; i < ranged.length; i++) {
      const prev = ranged[i - 1]!.to!
      const next = ranged[i]!.from!
      if (prev.getTime() !== next.getTime()) {
        problems.push({ kind: "Gap", message: `no partition covers [${prev.toISOString()}, ${next.toISOString()})` })
      }
    }
    const expected = PartitionPolicy.expectedAhead(policy, now)
    const wanted = expected[expected.length - 1]!.to
    const horizon = ranged.length === 0 ? null : ranged[ranged.length - 1]!.to
    for (const range of expected) {
      const covered = ranged.some((l) => l.from!.getTime() <= range.from.getTime() && l.to!.getTime() >= range.to.getTime())
      if (!covered && (horizon === null || range.from.getTime() < horizon.getTime())) {
        problems.push({ kind: "Gap", message: `no partition covers [${range.from.toISOString()}, ${range.to.toISOString()})` })
      }
    }
    if (horizon === null || horizon.getTime() < wanted.getTime()) {
      problems.push({
        kind: "HorizonShort",
        message: `partitions reach ${horizon?.toISOString() ?? "nothing"}, the policy wants ${wanted.toISOString()} (premake ${policy.premake})`
      })
    }
    const inDefault = yield* rowsInDefault(t, defaultLeaf)
    if (defaultLeaf === undefined) {
      problems.push({ kind: "NoDefault", message: `${t.label} has no DEFAULT partition: an insert past the horizon fails` })
    }
    if (inDefault > 0) {
      problems.push({ kind: "RowsInDefault", message: `${inDefault} row(s) sit in ${defaultLeaf!.name}; maintenance moves them` })
    }
    const cutoff = PartitionPolicy.retentionCutoff(policy, now)
    if (cutoff !== undefined) {
      const past = ranged.filter((l) => l.to!.getTime() <= cutoff.getTime())
      if (past.length > 0) {
        problems.push({
          kind: "PastRetention",
          message: `${past.length} partition(s) past retention still attached: ${past.map((l) => l.name).join(", ")}`
        })
      }
    }
    if (all.length > policy.maxPartitions) {
      problems.push({ kind: "TooManyPartitions", message: `${all.length} partitions, over the policy's ${policy.maxPartitions}` })
    }
    return { table: policy.table, ok: problems.length === 0, problems, partitions: ranged.length, horizon, rowsInDefault: inDefault } satisfies Health
  })

  const overview = sql<{
    parent: string
    partitions: number
    total_bytes: string
    min_bytes: string
    max_bytes: string
    avg_bytes: string
    estimated_rows: string
    oldest: Date | null
    newest: Date | null
  }>`SELECT * FROM outbox_partition_overview ORDER BY parent`.pipe(
    Effect.map((rows): ReadonlyArray<Overview> =>
      rows.map((r) => ({
        parent: r.parent,
        partitions: Number(r.partitions),
        totalBytes: Number(r.total_bytes),
        minBytes: Number(r.min_bytes),
        maxBytes: Number(r.max_bytes),
        avgBytes: Number(r.avg_bytes),
        estimatedRows: Number(r.estimated_rows),
        oldest: r.oldest,
        newest: r.newest
      }))
    ),
    Effect.mapError(databaseError("*", "overview"))
  )

  return PartitionManager.of({
    maintain: (policy, options) => Effect.provideService(maintain(policy, options?.onStep), SqlClient.SqlClient, client),
    leaves,
    health,
    overview
  })
})

/**
 * The manager as a layer (needs the views of `OutboxMigrations`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<PartitionManager, never, SqlClient.SqlClient> = Layer.effect(PartitionManager, make)
