/**
 * The PostgreSQL implementation of `OutboxStore`.
 *
 * **Claiming**: one statement claims a batch with `FOR UPDATE SKIP LOCKED`
 * over the partial index of claimable rows, stamps one fresh `lock_token`
 * (from `outbox_lock_token_seq`) and a lease (`locked_until`), and returns the
 * rows in id order.
 *
 * **Fencing**: every later transition matches `lock_token`. A token is set
 * only by a claim (with PROCESSING) and cleared by every transition out of
 * PROCESSING, so the token alone identifies a live lease and the update can
 * use the primary key. Leases that do not match are reported as
 * `LeaseLost` and nothing is changed for them. Batched transitions
 * (complete, renew, release) are one statement per lock token.
 *
 * **Time**: with `timeSource: "database"` (the default, for production) every
 * timestamp the store compares or writes comes from the database clock
 * (`now()`), so relays on several hosts agree whatever their clocks say. With
 * `timeSource: "clock"` the same statements receive Effect's `Clock` time as a
 * parameter instead, which makes lease expiry, heartbeats, reaping and backoff
 * on real PostgreSQL controllable with `TestClock`. The statements are the
 * same; only the source of "now" differs. `created_at` always comes from the
 * database default (it decides the partition).
 *
 * **Transaction-scoped claim** (`claimInTransaction`,
 * `OUTBOX_CLAIM_MODE=transaction`): `SELECT ... FOR UPDATE SKIP LOCKED` in a
 * transaction that stays open while the relay delivers the batch, then
 * settles it and commits; the row lock is the lease (statements in
 * `internal/transactionClaim.ts`). Plain tables only: during an online
 * migration it fails (use lease mode until `finish`).
 *
 * **Completed rows** (`completed`, `OUTBOX_COMPLETED`): `keep` (status
 * COMPLETED) or `delete`, for both claims.
 *
 * **Online migration** (`legacy` option): while a plain, unpartitioned outbox
 * is migrated into a partitioned one (see `OnlineMigration`), the store works
 * on both tables. Every event is *live* in exactly one place: its copy in the
 * partitioned table when one exists, else its legacy row (the legacy column
 * `outbox_migrated_at` says a row has a copy). Every transition of a copy is
 * mirrored onto its legacy row in the same statement, so the legacy table
 * stays a complete, current record and unsetting `dualWrite` (rollback) loses
 * nothing and redelivers nothing.
 * - `dualWrite: true`: `publish` writes the event into both tables (the
 *   partitioned copy live, the legacy row marked); the relay claims the union
 *   of partitioned rows and legacy rows without a copy.
 * - `dualWrite: false` (the flag unset, i.e. before the switch or after a
 *   rollback): `publish` writes the legacy table only and the legacy table is
 *   authoritative for every event; transitions are mirrored onto copies.
 *
 * @since 0.1.0
 */
import { LeaseLost, StoreError } from "@outbox/core/OutboxError"
import type { EventData, EventStatus, Lease, OutboxEvent, PublishedEvent, ValidEvent } from "@outbox/core/OutboxEvent"
import {
  type ClaimOptions,
  type EventRecord,
  type Fairness,
  type Ordering,
  OutboxStore,
  type Publisher,
  type ReapResult
} from "@outbox/core/OutboxStore"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import * as Identifier from "./Identifier.ts"
import * as OutboxMigrations from "./OutboxMigrations.ts"
import * as OutboxTables from "./OutboxTables.ts"
import * as PublishStatement from "./PublishStatement.ts"
import * as SqlEnv from "./SqlEnv.ts"
import { findSqlError, isTransient, serverMessage } from "./internal/sqlError.ts"
import { fromSqlError, mapSqlError } from "./internal/storeError.ts"
import * as ClaimHorizon from "./internal/claimHorizon.ts"
import * as FairClaim from "./internal/fairClaim.ts"
import * as OldestClaim from "./internal/oldestClaim.ts"
import * as OrderedClaim from "./internal/orderedClaim.ts"
import * as OrderingMigration from "./migrations/0008_ordering.ts"
import * as TenantMigration from "./migrations/0009_tenant.ts"
import * as TransactionClaim from "./internal/transactionClaim.ts"

/**
 * Where "now" comes from: the database clock (production) or Effect's
 * `Clock` (deterministic tests with `TestClock`).
 *
 * @category models
 * @since 0.1.0
 */
export type TimeSource = "database" | "clock"

/**
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly timeSource?: TimeSource | undefined
  /** The partitioned outbox table (default `outbox`); ignored when `tables` is given. */
  readonly table?: string | undefined
  /**
   * The names of the outbox objects (`OutboxTables`): the partitioned table
   * and the fencing-token sequence; also what `layer` migrates. Default:
   * those of `table`.
   */
  readonly tables?: OutboxTables.OutboxTables | undefined
  /**
   * A plain outbox being migrated into `table` online (see the module
   * documentation and `OnlineMigration`). `dualWrite` is the migration flag.
   */
  readonly legacy?: { readonly table: string; readonly dualWrite: boolean } | undefined
  /**
   * Whether `layer` applies the migrations at start (default `true`). Turn it
   * off for processes running under a least-privilege role that may not
   * change the schema (run `npx outbox migrate` as the owner instead).
   */
  readonly runMigrations?: boolean | undefined
  /**
   * Whether the unordered claims (lease, transaction, tenant-fair) read only
   * the partitions from the claim horizon on (default `true`; migration
   * `0013_claim_horizon`, `internal/claimHorizon.ts`): the oldest partition
   * holding an unfinished row, at least an hour back, taken every 10 s. At
   * 370 daily partitions a claim of 100 took 0.25 ms with it and 7.8 ms
   * without (`bench:ordering`, section 6). The cost: a row committed below a
   * horizon already taken (an explicit old `created_at`, a transaction open
   * over an hour across a partition boundary, a redrive in an old partition)
   * waits up to 10 s. Turn it off for producers that write old `created_at`
   * values and must not wait.
   */
  readonly claimHorizon?: boolean | undefined
  /**
   * What completing an event does to its row (both claims): `keep` (the
   * default: status COMPLETED, `processed_at`; what the audit trail,
   * `outbox` inspection, the health views' completed counts and the
   * end-to-end latency query need) or `delete` (the row goes: measured on
   * this machine, a drained 300 MB outbox stayed 300 MB with deletes in the
   * claiming transaction where updates to COMPLETED grew it to 900 MB of dead
   * tuples, and the lock-and-delete ceiling is 76.7k events/s at batch 1,000).
   * Retention drops partitions either way. Refused (`StoreError`, operation
   * `configure`) when the audit trail's triggers are on the table, and during
   * an online migration.
   */
  readonly completed?: "keep" | "delete" | undefined
  /**
   * How settlements commit: a lease's (`complete`, `retry`, `deadLetter`,
   * `release`) and the transaction claim's (its one settling statement
   * sets it for the claiming transaction): `asynchronous` (the default) or
   * `synchronous`. Asynchronous, the statement sets `synchronous_commit =
   * off` for its own transaction (`set_config(…, true)` inside the statement:
   * no extra round trip, no other statement affected), so the server does not
   * wait for the WAL flush before it answers, and the relay's settlements no
   * longer queue the producers' commits behind their flushes.
   *
   * **Why it loses nothing.** Only a server crash can lose such a commit
   * (within `wal_writer_delay` × 3, 600 ms by default), and a lost settlement
   * leaves the row as its claim left it: leased, so the reaper requeues it
   * when the lease expires and the event is delivered again (at-least-once; a
   * retry's backoff or a dead letter is decided again on that delivery). The
   * claims, renewals and everything a producer writes stay synchronous, and
   * WAL is flushed in order: a claim that saw a settlement (the next event of
   * a key, under per-key ordering) flushes it before it returns, so no later
   * event of a key is handed out while its predecessor's completion could
   * still be lost. The transaction claim's lost commit leaves its batch
   * PENDING, delivered again; a later event of a key may have been delivered
   * in between, which a redelivery may follow (README, "Guarantees"). Within
   * a caller's transaction (`withTransaction` around the call) the
   * statement leaves the setting alone: that transaction's commit decides.
   *
   * Measured (2026-12-06, `bench:peers` W2, 500 one-event transactions/s):
   * 25–31 % fewer WAL syncs with lease claims, 44 % fewer with the
   * transaction claim; latency within the noise. A one-row `UPDATE` with
   * the sub-select: 0.21 against 0.32 ms (`pgbench`).
   */
  readonly settleCommit?: "asynchronous" | "synchronous" | undefined
  /**
   * How `layer` and `layerWithoutMigrations` retry a start-up that fails for want of the database: the
   * connection refused or lost, the server starting up, shutting down or out
   * of connection slots (`StoreError.retryable`). Each failed attempt logs a
   * warning with the reason; any other failure (authentication, a migration
   * that does not apply, a refused option) fails the layer at once. Default
   * `defaultStartupRetry`: without end, so that a relay started before its
   * database (a deploy, a failover, a full pool) comes up by itself instead
   * of exiting; bound it with e.g. `defaultStartupRetry.pipe(Schedule.upTo({ duration: "1 minute" }))`
   * (what `@outbox/client`'s `createRelay` does with its `startupTimeout`).
   */
  readonly startupRetry?: Schedule.Schedule<unknown> | undefined
}

/**
 * The default `startupRetry`: 100 ms doubling (jittered) to at most 5 s
 * between attempts, without end; the wake-up listener's reconnect backoff.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultStartupRetry: Schedule.Schedule<Duration.Duration> = Schedule.min([
  Schedule.exponential("100 millis").pipe(Schedule.jittered),
  Schedule.spaced("5 seconds")
])

/**
 * `Options` from the environment (`SqlEnv.store`): `OUTBOX_TABLE` (default
 * `outbox`), `OUTBOX_MIGRATION_LEGACY_TABLE` (unset: no online migration),
 * `OUTBOX_MIGRATION_DUAL_WRITE` (the flag, default `false`) and
 * `OUTBOX_RUN_MIGRATIONS` (default `true`).
 *
 * @category config
 * @since 0.1.0
 */
export const optionsConfig: Config.Config<Options> = SqlEnv.store

/** The legacy table's marker column: set when the row has a copy in the partitioned table. */
const migratedColumn = "outbox_migrated_at"

interface BaseRow {
  readonly id: bigint
  readonly tracking_id: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly event_type: string
  readonly payload: unknown
  readonly metadata: Record<string, unknown>
  readonly retry_count: number
  readonly max_retries: number
  readonly created_at: Date
}

/** A claimed row as the values of `claimedColumns`, in that order. */
type ClaimedValues = readonly [
  id: bigint,
  tracking_id: string,
  aggregate_type: string,
  aggregate_id: string,
  event_type: string,
  payload: unknown,
  metadata: Record<string, unknown>,
  retry_count: number,
  max_retries: number,
  created_at: Date,
  locked_until: Date,
  lock_token: bigint,
  ordering_key?: string | null,
  tenant?: string | null
]

interface FullRow extends BaseRow {
  /** Plain tables only (the legacy table of an online migration has no key nor tenant). */
  readonly ordering_key?: string | null
  readonly tenant?: string | null
  readonly status: EventStatus
  readonly processed_at: Date | null
  readonly available_at: Date | null
  readonly locked_until: Date | null
  readonly lock_token: bigint | null
  readonly last_error: string | null
}

const toData = (r: BaseRow): EventData => ({
  id: r.id,
  trackingId: r.tracking_id,
  aggregateType: r.aggregate_type,
  aggregateId: r.aggregate_id,
  eventType: r.event_type,
  payload: r.payload,
  metadata: r.metadata,
  retryCount: r.retry_count,
  maxRetries: r.max_retries,
  createdAt: r.created_at
})

class TransactionBodyFailure<E> {
  readonly error: E
  constructor(error: E) {
    this.error = error
  }
}

const wrapBodyFailure = <E>(error: E) => new TransactionBodyFailure(error)

const bigintArray = (ids: ReadonlyArray<bigint>): string => `{${ids.join(",")}}`

/** Groups leases by lock token, with the created_at window that prunes partitions. */
const groupByToken = (leases: ReadonlyArray<Lease>) => {
  // The relay's case, on every completion: one claim's leases, one token, in
  // id order (so no duplicates): one pass, no Map and no Set of bigints.
  const first = leases[0]!
  let min = first.createdAt.getTime()
  let max = min
  let simple = true
  for (let i = 1; i < leases.length; i++) {
    const lease = leases[i]!
    if (lease.lockToken !== first.lockToken || lease.id <= leases[i - 1]!.id) {
      simple = false
      break
    }
    const t = lease.createdAt.getTime()
    if (t < min) min = t
    if (t > max) max = t
  }
  if (simple) return [tokenGroup(first.lockToken, leases.map((lease) => lease.id), min, max)]
  const groups = new Map<bigint, { ids: Set<bigint>; min: number; max: number }>()
  for (const lease of leases) {
    const t = lease.createdAt.getTime()
    const group = groups.get(lease.lockToken)
    if (group === undefined) groups.set(lease.lockToken, { ids: new Set([lease.id]), min: t, max: t })
    else {
      group.ids.add(lease.id)
      if (t < group.min) group.min = t
      if (t > group.max) group.max = t
    }
  }
  return Array.from(groups, ([token, g]) => tokenGroup(token, Array.from(g.ids), g.min, g.max))
}

// JavaScript dates keep milliseconds, PostgreSQL microseconds: widen by 1 ms each side.
const tokenGroup = (token: bigint, ids: ReadonlyArray<bigint>, min: number, max: number) => ({
  token,
  ids,
  from: new Date(min - 1),
  to: new Date(max + 1)
})

/**
 * Builds the store. Does not run migrations (see `layer`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const timeSource = options.timeSource ?? "database"
  const configError = (e: { readonly message: string }) =>
    new StoreError({ operation: "configure", message: e.message, retryable: false, cause: e })
  const tables = options.tables ?? (yield* OutboxTables.make(options.table ?? "outbox").pipe(Effect.mapError(configError)))
  const tableName = tables.outbox
  const nextToken = sql.literal(`nextval('${Identifier.quote(tables.lockTokenSequence)}')`)
  const legacyName = options.legacy === undefined
    ? undefined
    : yield* Identifier.validate(options.legacy.table, "legacy outbox table").pipe(Effect.mapError(configError))
  /** "plain": one table; "dual": the flag set; "legacy": a migration with the flag unset. */
  const mode = legacyName === undefined ? "plain" : options.legacy!.dualWrite ? "dual" : "legacy"
  const T = sql.literal(Identifier.quote(tableName))
  const L = sql.literal(Identifier.quote(legacyName ?? tableName))
  const migrated = sql.literal(migratedColumn)

  // `claimed_at` (migration 0006): each claim stamps it, where the table has the column and this login may
  // write it; a table created by an older version, or a role granted before the column existed, keeps
  // claiming without it (the lease-held gauge then reads 0 for those rows)
  const stampsClaims = (name: string) =>
    sql<{ ok: boolean }>`SELECT CASE WHEN EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass(${Identifier.quote(name)}) AND attname = 'claimed_at' AND NOT attisdropped
      ) THEN has_column_privilege(to_regclass(${Identifier.quote(name)})::oid, 'claimed_at', 'UPDATE') ELSE false END AS ok`.pipe(
      Effect.map((rows) => rows[0]?.ok === true),
      mapSqlError("configure")
    )
  const stampT = yield* stampsClaims(tableName)
  // `ordering_key` (0008) and `tenant` (0009): claims return them where the table has them
  const [present] = yield* sql<{ key: boolean; tenant: boolean }>`SELECT
      EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(${Identifier.quote(tableName)})
              AND attname = 'ordering_key' AND NOT attisdropped) AS key,
      EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(${Identifier.quote(tableName)})
              AND attname = 'tenant' AND NOT attisdropped) AS tenant`.pipe(mapSqlError("configure"))
  const hasKey = present?.key === true
  const hasTenant = present?.tenant === true
  const keyColumnsNamed = sql.literal(
    `, ${hasKey ? OrderingMigration.effectiveKey("o") : "NULL::text"} AS ordering_key, ${
      hasTenant ? TenantMigration.effectiveTenant("o") : "NULL::text"
    } AS tenant`
  )
  /** `, <ordering key>, <tenant>` of the row `o` (NULLs on a table without the columns): what `toEvent` reads. */
  const keyColumns = sql.literal(
    `, ${hasKey ? OrderingMigration.effectiveKey("o") : "NULL::text"}, ${hasTenant ? TenantMigration.effectiveTenant("o") : "NULL::text"}`
  )

  // `completed: "delete"`: refused where completed rows must stay (checked once, at start)
  const deleteCompleted = options.completed === "delete"
  if (deleteCompleted && mode !== "plain") {
    return yield* new StoreError({
      operation: "configure",
      message: "completed rows cannot be deleted during an online migration (OUTBOX_COMPLETED=keep until it finishes)",
      retryable: false
    })
  }
  if (deleteCompleted) {
    const [audited] = yield* sql<{ ok: boolean }>`SELECT EXISTS (
        SELECT 1 FROM pg_trigger tr JOIN pg_proc p ON p.oid = tr.tgfoid
        WHERE tr.tgrelid = to_regclass(${Identifier.quote(tableName)}) AND p.proname = 'outbox_audit_capture'
      ) AS ok`.pipe(mapSqlError("configure"))
    if (audited?.ok === true) {
      return yield* new StoreError({
        operation: "configure",
        message: `the audit trail is installed on ${tableName} and needs completed rows kept: OUTBOX_COMPLETED=keep`,
        retryable: false
      })
    }
  }
  // `transaction_timeout` (PostgreSQL 17) bounds a claiming transaction as a whole
  const [version] = yield* sql<{ n: number }>`SELECT current_setting('server_version_num')::int AS n`.pipe(
    mapSqlError("configure")
  )
  const hasTransactionTimeout = (version?.n ?? 0) >= 170000
  const stampL = legacyName === undefined ? stampT : yield* stampsClaims(legacyName)
  /** `, claimed_at = <ts>` where the table takes it. */
  const claimStamp = (stamp: boolean, ts: Fragment): Fragment => stamp ? sql`, claimed_at = ${ts}` : sql.literal("")

  const now: Effect.Effect<Fragment> = timeSource === "database"
    ? Effect.succeed(sql.literal("now()"))
    : Effect.map(Clock.currentTimeMillis, (ms) => sql`${new Date(ms).toISOString()}::timestamptz`)
  const plus = (base: Fragment, duration: Duration.Duration): Fragment =>
    sql`(${base} + ${Duration.toMillis(duration)} * interval '1 millisecond')`

  /** Copies every mutable column of `source` (a CTE of updated rows) onto the row `d`. */
  const mirrorSet = (source: string) =>
    sql.literal(
      ["status", "retry_count", "last_error", "processed_at", "available_at", "locked_until", "lock_token"]
        .map((c) => `${c} = ${source}.${c}`).join(", ")
    )
  const columns = "id, tracking_id, aggregate_type, aggregate_id, event_type, payload, metadata, retry_count, max_retries, created_at"

  const quotedT = Identifier.quote(tableName)
  const quotedL = Identifier.quote(legacyName ?? tableName)

  // built once: `mapSqlError(operation)` and `fromSqlError(operation)` make their closures per call
  const publishError = mapSqlError("publish")
  const transactionError = fromSqlError("transaction")
  const toPublishedRows = (inserted: ReadonlyArray<PublishStatement.ReturnedRow>): ReadonlyArray<PublishedEvent> =>
    inserted.map(PublishStatement.toPublished)

  // the statement text and values come from `PublishStatement`, shared with `@outbox/client`
  const insertEvents = (events: ReadonlyArray<ValidEvent>) => {
    let statement: PublishStatement.Statement
    if (mode === "dual") {
      // the live copy and its marked legacy row, with one id (the tables share the id sequence)
      const inner = PublishStatement.insert(quotedT, events, `${columns}, status, available_at`)
      statement = {
        text: `WITH p AS (${inner.text})
          INSERT INTO ${quotedL} (${columns}, status, available_at, ${migratedColumn})
          SELECT ${columns}, status, available_at, now() FROM p
          RETURNING ${PublishStatement.returning}`,
        values: inner.values
      }
    } else {
      statement = PublishStatement.insert(mode === "legacy" ? quotedL : quotedT, events)
    }
    return publishError(Effect.map(sql.unsafe<PublishStatement.ReturnedRow>(statement.text, statement.values), toPublishedRows))
  }
  const publish: Publisher = (events: ReadonlyArray<ValidEvent>) => {
    if (events.length === 0) return Effect.succeed([])
    // on Effect's clock (tests under TestClock), a delay runs from the clock's now, not the server's
    if (timeSource === "clock" && events.some((e) => e.schedule !== undefined && "delayMillis" in e.schedule)) {
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        insertEvents(events.map((e) =>
          e.schedule !== undefined && "delayMillis" in e.schedule
            ? { ...e, schedule: { at: new Date(now + e.schedule.delayMillis) } }
            : e
        )))
    }
    return insertEvents(events)
  }

  // The body's own errors may be `SqlError`s too (its business statements): they travel wrapped through
  // `sql.withTransaction`, so that only BEGIN's and COMMIT's become a `StoreError`.
  const withTransaction = <A, E, R>(f: (publish: Publisher) => Effect.Effect<A, E, R>) =>
    Effect.mapError(
      sql.withTransaction(Effect.mapError(f(publish), wrapBodyFailure)),
      (e: TransactionBodyFailure<E> | SqlError.SqlError) => e instanceof TransactionBodyFailure ? e.error : transactionError(e)
    ) as Effect.Effect<A, E | StoreError, R>

  // The claim's hot path: rows come back as value arrays in `claimedColumns`
  // order (no keyed row object per event) and become one object literal each;
  // a plain table's claims add the ordering key and the tenant (`keyColumns`).
  const toEvent = (v: ClaimedValues): OutboxEvent => ({
    id: v[0],
    trackingId: v[1],
    aggregateType: v[2],
    aggregateId: v[3],
    eventType: v[4],
    payload: v[5],
    metadata: v[6],
    retryCount: v[7],
    maxRetries: v[8],
    createdAt: v[9],
    orderingKey: v[12] ?? undefined,
    tenant: v[13] ?? undefined,
    lockedUntil: v[10],
    lockToken: v[11]
  })

  // A literal LIMIT: the generic plan PostgreSQL settles on after five
  // executions of a prepared claim is made for that limit, not for an
  // unknown one (one prepared statement per limit value: BatchLimit).
  const limitLiteral = (limit: number) => sql.literal(String(Math.trunc(limit)))
  const claimable = (ts: Fragment) =>
    sql`status IN ('PENDING', 'FAILED') AND (available_at IS NULL OR available_at <= ${ts})`
  /** The columns a lease claim sets: PROCESSING, one fresh token (the uncorrelated sub-select is an InitPlan: one per claim), the lease. */
  const leaseSet = (ts: Fragment, leaseDuration: Duration.Duration, stamp: boolean) =>
    sql`status = 'PROCESSING', lock_token = (SELECT ${nextToken}),
          locked_until = ${plus(ts, leaseDuration)}${claimStamp(stamp, ts)}`
  /**
   * The rows of the CTE `locked` (`id, created_at`, the rows a claim
   * locked), as the claim's UPDATE finds them: by id among the partitions
   * their `created_at` spans. Ids are unique (one sequence), so the id
   * alone names a row; the window prunes the other partitions as the
   * statement runs (its bounds are InitPlans).
   *
   * Not a join with `locked`: the relay's claims are prepared statements,
   * and a generic plan made while a partition was new and unanalyzed (a
   * fresh table, each new day's partition until autovacuum's first ANALYZE)
   * joined by hashing the whole partition, scanned in full on every claim.
   * Measured in `bench:peers` W2 (500 events/s, defaults): that claim
   * took 3.1 ms of server time for ~1 row; this one's plan has no join to
   * choose, only index lookups of the locked ids.
   */
  const isLocked = sql.literal(
    "o.id = ANY(ARRAY(SELECT id FROM locked)) AND o.created_at >= (SELECT min(created_at) FROM locked) AND o.created_at <= (SELECT max(created_at) FROM locked)"
  )
  const claimedColumns = sql.literal(
    "o.id, o.tracking_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.metadata, o.retry_count, o.max_retries, o.created_at, o.locked_until, o.lock_token"
  )
  /** The CTEs of the unordered claims' oldest rows (`internal/oldestClaim.ts`). */
  const oldestClaimable = OldestClaim.make({ sql, table: T, limit: limitLiteral })
  // the unordered claims' horizon (migration 0013): the partitions below it are not read
  const [horizonFunction] = mode !== "plain" ? [] : yield* sql<{ ok: boolean }>`
    SELECT to_regprocedure('outbox_claim_horizon(regclass,interval)') IS NOT NULL AS ok`.pipe(mapSqlError("configure"))
  const claimHorizon = ClaimHorizon.make({
    sql,
    table: quotedT,
    enabled: options.claimHorizon !== false && horizonFunction?.ok === true
  })

  /** Claims from one table (the plain store, and the legacy table while the flag is unset). */
  const claimOne = (
    table: Fragment,
    stamp: boolean,
    ts: Fragment,
    options: { readonly limit: number; readonly leaseDuration: Duration.Duration },
    keyed = false,
    horizon: Fragment = sql.literal("")
  ) =>
    sql`
      WITH ${
      table === T
        ? oldestClaimable(ts, options.limit, sql.literal("o.id, o.created_at"), sql.literal(""), horizon)
        : sql`locked AS (
        SELECT id, created_at FROM ${table}
        WHERE ${claimable(ts)}
        ORDER BY id
        LIMIT ${limitLiteral(options.limit)}
        FOR UPDATE SKIP LOCKED
      )`
    }
      UPDATE ${table} o
      SET ${leaseSet(ts, options.leaseDuration, stamp)}
      WHERE ${isLocked}${horizon}
      RETURNING ${claimedColumns}${keyed ? keyColumns : sql.literal("")}`.values as Effect.Effect<ReadonlyArray<ClaimedValues>, SqlError.SqlError>

  // --- the ordered claim (OUTBOX_ORDERING=key) ---------------------------------------------------------------------
  // the id sequence the ordering trigger draws from (migration 0008), from its argument; none: not migrated
  const [orderingTrigger] = mode !== "plain" ? [] : yield* sql<{ seq: string | null }>`
    SELECT convert_from(substring(t.tgargs from 1 for position('\\x00'::bytea in t.tgargs) - 1), 'UTF8') AS seq
    FROM pg_trigger t WHERE t.tgrelid = to_regclass(${quotedT}) AND t.tgname = ${tables.orderingInsert}`.pipe(
    mapSqlError("configure")
  )
  const orderingSequence = orderingTrigger?.seq ?? undefined
  const ordered = orderingSequence === undefined
    ? undefined
    : OrderedClaim.make({ sql, table: T, sequence: orderingSequence, limit: limitLiteral })
  /** Why this store cannot claim in key order, or `undefined`. */
  const orderingRefusal = mode !== "plain"
    ? "per-key ordering (OUTBOX_ORDERING=key) is not available during an online migration (OUTBOX_ORDERING=none until it finishes)"
    : ordered === undefined
    ? `per-key ordering (OUTBOX_ORDERING=key) needs migration 0008_ordering on ${tableName}: run npx outbox migrate`
    : undefined

  /**
   * The CTE `claimed` of the ordered and fair lease claims: the rows of their
   * CTE `locked` leased (PROCESSING, one fresh token, `locked_until`), as
   * `toEvent` reads them.
   */
  const leaseLocked = (ts: Fragment, leaseDuration: Duration.Duration, horizon: Fragment = sql.literal("")) =>
    sql`claimed AS (
      UPDATE ${T} o
      SET ${leaseSet(ts, leaseDuration, stampT)}
      WHERE ${isLocked}${horizon}
      RETURNING ${claimedColumns}${keyColumns}
    )`

  /**
   * The ordered lease claim: the probe, then the claim (`OrderedClaim`). Under
   * a backlog the probe the last claim ran inside its statement stands in for
   * the round trip (`reusable`); if that claim then takes nothing, it runs
   * once more on the probe it just ran, which sees the ids drawn meanwhile.
   * With fairness it probes first every time: a reused probe is one claim
   * old, and another tenant's new event (its id drawn since) waited for the
   * claim after next. `bench:ordering` section 3 (tenant-fair with key
   * order, three alternating runs of 25–27 events): the second tenant's p50
   * pickup 76–81 ms against 91–99 (its p99, 117–174 against 130–184, within
   * the noise of so few events), the backlog's drain no slower (2.93–2.99 s
   * against 2.78–3.06).
   */
  const claimOrdered = (ts: Fragment, options: ClaimOptions & { readonly ordering: Ordering }) =>
    Effect.gen(function*() {
      if (ordered === undefined || orderingRefusal !== undefined) {
        return yield* new StoreError({ operation: "claim", message: orderingRefusal!, retryable: false })
      }
      const turn = yield* fairTurn(options.fairness, "claim")
      const run = (probe: OrderedClaim.Probe) =>
        Effect.map(
          sql`${
            ordered.statement(ts, options.limit, probe, options.ordering, {
              claimable: claimable(ts),
              select: sql.literal("o.id, o.created_at"),
              finish: sql`, ${leaseLocked(ts, options.leaseDuration)}
              SELECT c.*, ${ordered.trailer} FROM claimed c
              UNION ALL ${ordered.emptyRow(14)} WHERE NOT EXISTS (SELECT 1 FROM claimed)`
            }, turn)
          }`.values as Effect.Effect<ReadonlyArray<ClaimedValues>, SqlError.SqlError>,
          (rows) => {
            const claimed = ordered.advance(rows, options.limit, options.ordering.slice)
            return turn === undefined ? claimed : fair!.advance(claimed, 13)
          }
        )
      const reused = turn === undefined ? ordered.reusable() : undefined
      if (reused === undefined) return yield* run(yield* ordered.probe())
      const rows = yield* run(reused)
      return rows.length > 0 ? rows : yield* run(ordered.lastProbe() ?? (yield* ordered.probe()))
    })

  // --- the tenant-fair claim (OUTBOX_FAIRNESS=tenant) -----------------------------------------------------------
  const fair = mode === "plain" && hasTenant ? FairClaim.make({ sql, table: T, limit: limitLiteral }) : undefined
  /** Why this store cannot claim fairly across tenants, or `undefined`. */
  const fairnessRefusal = mode !== "plain"
    ? "tenant-fair claiming (OUTBOX_FAIRNESS=tenant) is not available during an online migration (OUTBOX_FAIRNESS=none until it finishes)"
    : fair === undefined
    ? `tenant-fair claiming (OUTBOX_FAIRNESS=tenant) needs migration 0009_tenant on ${tableName}: run npx outbox migrate`
    : undefined

  /**
   * The tenants' turn of an ordered claim with `fairness` (`OrderedClaim.Turn`;
   * `undefined` without fairness), or the refusal when the table has no tenant.
   */
  const fairTurn = (
    fairness: Fairness | undefined,
    operation: "claim" | "claimInTransaction"
  ): Effect.Effect<OrderedClaim.Turn | undefined, StoreError> =>
    fairness === undefined
      ? Effect.succeed(undefined)
      : fair === undefined || fairnessRefusal !== undefined
      ? Effect.fail(new StoreError({ operation, message: fairnessRefusal!, retryable: false }))
      : Effect.succeed(fair.orderedTurn(fairness))

  const claimFair = (ts: Fragment, options: ClaimOptions & { readonly fairness: Fairness }) =>
    Effect.gen(function*() {
      if (fair === undefined || fairnessRefusal !== undefined) {
        return yield* new StoreError({ operation: "claim", message: fairnessRefusal!, retryable: false })
      }
      const horizon = yield* claimHorizon.bound
      const rows = yield* (sql`${
        fair.statement(ts, options.limit, options.fairness, {
          claimable: claimable(ts),
          select: sql.literal("o.id, o.created_at"),
          finish: sql`, ${leaseLocked(ts, options.leaseDuration, horizon)} SELECT * FROM claimed`,
          horizon
        })
      }`.values as Effect.Effect<ReadonlyArray<ClaimedValues>, SqlError.SqlError>)
      return fair.advance(rows, 13)
    })

  const claim = Effect.fnUntraced(function*(options: ClaimOptions) {
    const ts = yield* now
    if (options.ordering !== undefined) {
      const rows = yield* claimOrdered(ts, { ...options, ordering: options.ordering }).pipe(
        Effect.catchTag("SqlError", (error) => Effect.fail(fromSqlError("claim")(error)))
      )
      return rows.map(toEvent).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    }
    if (options.fairness !== undefined) {
      const rows = yield* claimFair(ts, { ...options, fairness: options.fairness }).pipe(
        Effect.catchTag("SqlError", (error) => Effect.fail(fromSqlError("claim")(error)))
      )
      return rows.map(toEvent).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    }
    const statement: Effect.Effect<ReadonlyArray<ClaimedValues>, SqlError.SqlError> = mode === "plain"
      ? Effect.flatMap(claimHorizon.bound, (horizon) => claimOne(T, stampT, ts, options, true, horizon))
      : mode === "legacy"
      // The mirror is a second statement: its fresh snapshot sees a copy a
      // concurrent backfill committed while the claim waited for the row.
      ? sql.withTransaction(Effect.tap(claimOne(L, stampL, ts, options), (claimed) =>
        claimed.length === 0 ? Effect.void : Effect.asVoid(sql`
          UPDATE ${T} d SET ${mirrorSet("s")}
          FROM ${L} s
          WHERE s.id = ANY(${bigintArray(claimed.map((r) => r[0]))}::bigint[]) AND d.id = s.id AND d.created_at = s.created_at`)))
      // The union: partitioned rows, and legacy rows that have no copy (the
      // backfill marks a row in the same statement that copies it, and the
      // row lock re-check sees the mark). Copies' claims are mirrored.
      : sql`
        WITH pc AS (
          SELECT id, created_at FROM ${T} WHERE ${claimable(ts)}
          ORDER BY id LIMIT ${limitLiteral(options.limit)} FOR UPDATE SKIP LOCKED
        ), lc AS (
          SELECT id, created_at FROM ${L} WHERE ${claimable(ts)} AND ${migrated} IS NULL
          ORDER BY id LIMIT ${limitLiteral(options.limit)} FOR UPDATE SKIP LOCKED
        ), token AS (
          SELECT ${nextToken} AS t
        ), pick AS (
          SELECT id, created_at, true AS partitioned FROM pc
          UNION ALL
          SELECT id, created_at, false FROM lc
          ORDER BY id LIMIT ${limitLiteral(options.limit)}
        ), pu AS (
          UPDATE ${T} o SET status = 'PROCESSING', lock_token = (SELECT t FROM token), locked_until = ${
          plus(ts, options.leaseDuration)
        }${claimStamp(stampT, ts)}
          FROM pick WHERE pick.partitioned AND o.id = pick.id AND o.created_at = pick.created_at
          RETURNING ${claimedColumns}, o.status, o.last_error, o.processed_at, o.available_at
        ), lu AS (
          UPDATE ${L} o SET status = 'PROCESSING', lock_token = (SELECT t FROM token), locked_until = ${
          plus(ts, options.leaseDuration)
        }${claimStamp(stampL, ts)}
          FROM pick WHERE NOT pick.partitioned AND o.id = pick.id
          RETURNING ${claimedColumns}
        ), mirror AS (
          UPDATE ${L} d SET ${mirrorSet("pu")} FROM pu WHERE d.id = pu.id
        )
        SELECT id, tracking_id, aggregate_type, aggregate_id, event_type, payload, metadata, retry_count, max_retries,
               created_at, locked_until, lock_token FROM pu
        UNION ALL
        SELECT * FROM lu`.values as Effect.Effect<ReadonlyArray<ClaimedValues>, SqlError.SqlError>
    const rows = yield* mapSqlError("claim")(statement)
    // RETURNING does not keep the claim order
    return rows.map(toEvent).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  })

  /**
   * The CTEs of one fenced transition, ending in `updated(id)`: the plain
   * table; the copies (mirrored) and uncopied legacy rows while the flag is
   * set; the legacy table (mirrored onto copies) while it is unset.
   */
  const onCopiesOf = (group: ReturnType<typeof groupByToken>[number], ids: string) =>
    sql`id = ANY(${ids}::bigint[])
      AND created_at >= ${group.from} AND created_at < ${group.to} AND lock_token = ${group.token}${
      mode === "plain" ? claimHorizon.settleBound(group.from) : sql.literal("")
    }`
  const fencedUpdate = (set: Fragment, group: ReturnType<typeof groupByToken>[number], ids: string) => {
    const onCopies = onCopiesOf(group, ids)
    const onLegacy = sql`id = ANY(${ids}::bigint[]) AND lock_token = ${group.token}`
    switch (mode) {
      case "plain":
        return sql`updated AS (UPDATE ${T} SET ${set} WHERE ${onCopies} RETURNING id)`
      case "dual":
        return sql`p AS (UPDATE ${T} SET ${set} WHERE ${onCopies} RETURNING *),
          l AS (UPDATE ${L} SET ${set} WHERE ${onLegacy} AND ${migrated} IS NULL RETURNING id),
          mirror AS (UPDATE ${L} d SET ${mirrorSet("p")} FROM p WHERE d.id = p.id),
          updated AS (SELECT id FROM p UNION ALL SELECT id FROM l)`
      case "legacy":
        return sql`l AS (UPDATE ${L} SET ${set} WHERE ${onLegacy} RETURNING *),
          mirror AS (UPDATE ${T} d SET ${mirrorSet("l")} FROM l WHERE d.id = l.id AND d.created_at = l.created_at),
          updated AS (SELECT id FROM l)`
    }
  }

  const settleAsync = options.settleCommit !== "synchronous"
  /**
   * The fenced statement's tail that makes its implicit transaction commit
   * without waiting for the WAL flush (`Options.settleCommit`): a local
   * setting lasts until the transaction ends, and an implicit transaction
   * ends with its statement; the commit reads the setting before it is
   * reset. `set_config` is volatile, so the one-row sub-select is always run.
   */
  const asynchronousCommit = sql.literal(" FROM (SELECT set_config('synchronous_commit', 'off', true)) AS settle_commit")
  const noFrom = sql.literal("")
  /**
   * Runs a fenced batch transition, one statement per lock token. Every group
   * is applied; the fenced leases of all groups are reported together.
   */
  const fenced = (
    operation: LeaseLost["operation"],
    leases: ReadonlyArray<Lease>,
    set: (ts: Fragment) => Fragment,
    /** Delete the rows instead (`completed: "delete"`; plain tables only). */
    remove = false,
    /** Settling (not a renewal): commits asynchronously (`Options.settleCommit`) outside a transaction. */
    settle = true
  ): Effect.Effect<void, LeaseLost | StoreError> =>
    leases.length === 0 ? Effect.void : Effect.gen(function*() {
      const ts = yield* now
      const commit = settle && settleAsync && Option.isNone(yield* Effect.serviceOption(sql.transactionService))
        ? asynchronousCommit
        : noFrom
      const lost: Array<bigint> = []
      let lostToken: bigint | undefined
      for (const group of groupByToken(leases)) {
        const ids = bigintArray(group.ids)
        // only a count comes back, and the fenced ids only on a shortfall:
        // shipping every id back costs the relay more than the update itself
        const [result] = yield* sql<{ lost: ReadonlyArray<bigint | string> | null }>`
          WITH ${remove ? sql`updated AS (DELETE FROM ${T} WHERE ${onCopiesOf(group, ids)} RETURNING id)` : fencedUpdate(set(ts), group, ids)}
          SELECT CASE WHEN (SELECT count(*) FROM updated) = ${group.ids.length} THEN NULL
                      ELSE ARRAY(SELECT unnest(${ids}::bigint[]) EXCEPT SELECT id FROM updated) END AS lost${commit}`.pipe(
          mapSqlError(operation)
        )
        if (result?.lost == null) continue
        for (const id of result.lost) lost.push(BigInt(id))
        lostToken ??= group.token
      }
      if (lostToken !== undefined) return yield* new LeaseLost({ operation, lockToken: lostToken, eventIds: lost })
    })

  const renew = (leases: ReadonlyArray<Lease>, leaseDuration: Duration.Duration) =>
    fenced("renew", leases, (ts) => sql`locked_until = ${plus(ts, leaseDuration)}`, false, false)

  const complete = (leases: ReadonlyArray<Lease>) =>
    fenced(
      "complete",
      leases,
      (ts) => sql`status = 'COMPLETED', processed_at = ${ts}, locked_until = NULL, lock_token = NULL`,
      deleteCompleted
    )

  const retry = (lease: Lease, options: { readonly error: string; readonly delay: Duration.Duration }) =>
    fenced(
      "retry",
      [lease],
      (ts) =>
        sql`status = 'FAILED', retry_count = retry_count + 1, last_error = ${options.error},
            available_at = ${plus(ts, options.delay)}, locked_until = NULL, lock_token = NULL`
    )

  const deadLetter = (lease: Lease, options: { readonly error: string }) =>
    fenced(
      "deadLetter",
      [lease],
      (ts) =>
        sql`status = 'DEAD_LETTER', retry_count = retry_count + 1, last_error = ${options.error},
            processed_at = ${ts}, locked_until = NULL, lock_token = NULL`
    )

  const release = (leases: ReadonlyArray<Lease>) =>
    fenced("release", leases, () => sql`status = 'PENDING', locked_until = NULL, lock_token = NULL`)

  /** Reaping an expired lease counts an attempt; the last allowed one dead-letters. */
  const reapSet = (ts: Fragment) =>
    sql`status = CASE WHEN o.retry_count >= o.max_retries THEN 'DEAD_LETTER' ELSE 'PENDING' END,
        processed_at = CASE WHEN o.retry_count >= o.max_retries THEN ${ts} END,
        retry_count = o.retry_count + 1, locked_until = NULL, lock_token = NULL,
        last_error = 'lease expired at ' || to_char(o.locked_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || ' and was reaped'
          || CASE WHEN o.retry_count >= o.max_retries
                  THEN ': dead-lettered after ' || (o.retry_count + 1) || ' attempts' ELSE '' END`
  const expired = (table: Fragment, ts: Fragment, extra: Fragment = sql.literal("true")) =>
    sql`SELECT id, created_at FROM ${table}
        WHERE status = 'PROCESSING' AND locked_until < ${ts} AND ${extra}
        ORDER BY id
        FOR UPDATE SKIP LOCKED`
  const reapOne = (table: Fragment, ts: Fragment, extra?: Fragment) =>
    sql`UPDATE ${table} o SET ${reapSet(ts)}
        FROM (${expired(table, ts, extra)}) e
        WHERE o.id = e.id AND o.created_at = e.created_at
        RETURNING o.*`

  const reap = Effect.flatMap(now, (ts) =>
    (mode === "plain"
      ? sql<{ id: bigint; status: string }>`WITH r AS (${reapOne(T, ts)}) SELECT id, status FROM r`
      : mode === "dual"
      ? sql<{ id: bigint; status: string }>`
          WITH p AS (${reapOne(T, ts)}),
               l AS (${reapOne(L, ts, sql`${migrated} IS NULL`)}),
               mirror AS (UPDATE ${L} d SET ${mirrorSet("p")} FROM p WHERE d.id = p.id)
          SELECT id, status FROM p UNION ALL SELECT id, status FROM l`
      : sql<{ id: bigint; status: string }>`
          WITH l AS (${reapOne(L, ts)}),
               mirror AS (UPDATE ${T} d SET ${mirrorSet("l")} FROM l WHERE d.id = l.id AND d.created_at = l.created_at)
          SELECT id, status FROM l`).pipe(
        Effect.map((rows): ReapResult => {
          const requeued: Array<bigint> = []
          const deadLettered: Array<bigint> = []
          for (const r of rows) (r.status === "DEAD_LETTER" ? deadLettered : requeued).push(r.id)
          const byId = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0)
          return { requeued: requeued.sort(byId), deadLettered: deadLettered.sort(byId) }
        }),
        mapSqlError("reap")
      ))

  const fullColumns = sql.literal(`${columns}, status, processed_at, available_at, locked_until, lock_token, last_error`)
  const get = (id: bigint) =>
    (mode === "plain"
      ? sql<FullRow>`SELECT ${fullColumns}${keyColumnsNamed} FROM ${T} o WHERE id = ${id}`
      : mode === "dual"
      ? sql<FullRow>`SELECT ${fullColumns} FROM ${T} WHERE id = ${id}
          UNION ALL SELECT ${fullColumns} FROM ${L} WHERE id = ${id} AND ${migrated} IS NULL`
      : sql<FullRow>`SELECT ${fullColumns} FROM ${L} WHERE id = ${id}`).pipe(
        Effect.map((rows): Option.Option<EventRecord> => {
          const r = rows[0]
          if (r === undefined) return Option.none()
          return Option.some({
            ...toData(r),
            ...(r.ordering_key == null ? {} : { orderingKey: r.ordering_key }),
            ...(r.tenant == null ? {} : { tenant: r.tenant }),
            status: r.status,
            processedAt: r.processed_at,
            availableAt: r.available_at,
            lockedUntil: r.locked_until,
            lockToken: r.lock_token,
            lastError: r.last_error
          })
        }),
        mapSqlError("get")
      )

  const claimInTransaction = TransactionClaim.make({
    sql,
    table: T,
    timeSource,
    plus,
    claimable,
    oldestClaimable,
    claimHorizon: claimHorizon.bound,
    settleBound: claimHorizon.settleBound,
    limit: limitLiteral,
    columns: sql.literal(
      "o.id, o.tracking_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.metadata, o.retry_count, o.max_retries, o.created_at"
    ),
    toEvent,
    deleteCompleted,
    asynchronousSettle: settleAsync,
    transactionTimeout: hasTransactionTimeout,
    unsupported: mode === "plain"
      ? undefined
      : "claimInTransaction: not during an online migration (OUTBOX_CLAIM_MODE=lease until it finishes)",
    ordered: orderingRefusal ?? ordered!,
    fair: fairnessRefusal ?? fair!,
    keyColumns
  })

  return OutboxStore.of({ withTransaction, claim, renew, complete, retry, deadLetter, release, reap, claimInTransaction, get })
})

/**
 * The store, without running migrations (for deployments where the schema
 * is applied separately, e.g. `npx outbox migrate`). Its start-up reads of
 * the catalog wait for the database as `layer`'s do (`startupRetry`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWithoutMigrations = (options: Options = {}): Layer.Layer<OutboxStore, StoreError, SqlClient.SqlClient> =>
  Layer.effect(OutboxStore, make(options).pipe(retryStartup(options.startupRetry)))

/**
 * The store; runs the outbox migrations for its `table` first
 * (`OutboxMigrations.runFor`), unless `runMigrations` is `false`. During an
 * online migration (`legacy` set) it runs none: `OnlineMigration.prepare`
 * has applied them for the partitioned table. After the switch-over
 * (`table` the partitioned one, no `legacy`) they find everything in place,
 * where the migrations of `outbox` would refuse the plain legacy table.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<OutboxStore, StoreError, SqlClient.SqlClient> =>
  Layer.effect(
    OutboxStore,
    Effect.andThen(
      options.legacy !== undefined || options.runMigrations === false ? Effect.void : OutboxMigrations.runFor(options.tables ?? options.table ?? "outbox").pipe(
        Effect.mapError((e) => {
          const cause = findSqlError(e)
          return new StoreError({
            operation: "migrate",
            message: `migration failed: ${describe(e)}`,
            retryable: cause !== undefined && isTransient(cause),
            cause: e
          })
        })
      ),
      make(options)
    ).pipe(retryStartup(options.startupRetry))
  )

/**
 * Whether a start-up failure is worth another attempt: a `StoreError` that
 * says so, or anything wrapping a transient `SqlError` (`isTransient`).
 */
const startupTransient = (e: unknown): boolean => {
  if (e instanceof StoreError) return e.retryable
  const sqlError = findSqlError(e)
  return sqlError !== undefined && isTransient(sqlError)
}

/** The message of a failure, plus the server's or the socket's own words when it does not have them yet. */
const describe = (e: unknown): string => {
  const message = typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)
  const sqlError = findSqlError(e instanceof StoreError ? e.cause : e)
  const words = sqlError === undefined ? undefined : serverMessage(sqlError)
  return words === undefined || message.includes(words) ? message : `${message} (${words})`
}

/**
 * Retries `effect` (a start-up step that reads the database) on `schedule`
 * while its failure is transient (the database unreachable, starting up,
 * shutting down or out of connections), with a warning per failed attempt
 * and a line once it succeeds. `layer` runs its migrations and catalog reads
 * under it; an application's own start-up (its tables, a warm-up) can too,
 * so that the whole process waits for the database the same way.
 *
 * @category combinators
 * @since 0.1.0
 */
export const retryStartup = (schedule: Schedule.Schedule<unknown> = defaultStartupRetry) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    let attempt = 0
    return effect.pipe(
      Effect.tapError((e) =>
        startupTransient(e)
          ? Effect.logWarning(
            `start-up: the database is not reachable (attempt ${++attempt}), retrying with backoff: ${describe(e)}`
          )
          : Effect.void
      ),
      Effect.retry({ schedule, while: startupTransient }),
      Effect.tap(() => attempt > 0 ? Effect.logInfo(`start-up: the database answered after ${attempt} failed attempt(s)`) : Effect.void)
    )
  })
