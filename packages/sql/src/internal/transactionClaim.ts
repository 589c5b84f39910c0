/**
 * The statements of `PgOutboxStore`'s transaction-scoped claim
 * (`OutboxStore.claimInTransaction`, `OUTBOX_CLAIM_MODE=transaction`), beside
 * the store that runs them.
 *
 * One batch is four round trips: `BEGIN`; the bounds and the claim in one
 * statement (`set_config(..., true)` of `statement_timeout`,
 * `idle_in_transaction_session_timeout` and, from PostgreSQL 17,
 * `transaction_timeout`, then `SELECT ... FOR UPDATE SKIP LOCKED`); the
 * settlement (the completions, one `UPDATE` or `DELETE` by id, and the
 * failures, one `UPDATE` from a JSON recordset, in one statement); `COMMIT`.
 * Nothing is written at claim time: the row lock is the lease, so an event
 * costs one write where the lease claim costs two (measured on this
 * machine's raw ceilings: claim + complete in one transaction 34.7k events/s
 * at batch 100 with an UPDATE, 76.7k/s at batch 1,000 with a DELETE, against
 * 19k / 28k for lease claim + completion).
 *
 * Partitions: completions and failures are matched by id within the
 * batch's `created_at` window (±1 ms, JavaScript dates keep milliseconds),
 * which prunes to the partitions the batch came from, DEFAULT included;
 * deleting from a partitioned table is routed like an update.
 *
 * @internal
 */
import { StoreError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import {
  type EventKey,
  inFlightCapRefusal,
  settleable,
  type TransactionClaimOptions,
  type TransactionOutcome
} from "@outbox/core/OutboxStore"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import type * as SqlClient from "effect/sql/SqlClient"
import * as SqlError from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import type * as FairClaim from "./fairClaim.ts"
import type * as OrderedClaim from "./orderedClaim.ts"
import { fromSqlError } from "./storeError.ts"

/**
 * What the statements need from the store.
 *
 * @internal
 */
export interface Options<V> {
  /** The store's client (without transforms). */
  readonly sql: SqlClient.SqlClient
  /** The outbox table, quoted. */
  readonly table: Fragment
  readonly timeSource: "database" | "clock"
  /** `base + duration`, as the store writes it. */
  readonly plus: (base: Fragment, duration: Duration.Duration) => Fragment
  /** The store's claimable-row predicate (the lease claim's). */
  readonly claimable: (ts: Fragment) => Fragment
  /** The store's CTEs `ready`, `due` and `locked` of the oldest claimable rows (`internal/oldestClaim.ts`). */
  readonly oldestClaimable: (ts: Fragment, limit: number, select: Fragment, from?: Fragment, horizon?: Fragment) => Fragment
  /** The unordered claims' horizon (`internal/claimHorizon.ts`). */
  readonly claimHorizon: Effect.Effect<Fragment>
  /** The horizon's bound for settling rows created at or after a time (`ClaimHorizon.settleBound`). */
  readonly settleBound: (from: Date) => Fragment
  /** The store's LIMIT literal. */
  readonly limit: (limit: number) => Fragment
  /** `o.id, ..., o.created_at`: the columns before `locked_until, lock_token` that `toEvent` reads. */
  readonly columns: Fragment
  readonly toEvent: (values: V) => OutboxEvent
  /** Completion deletes the row (`OUTBOX_COMPLETED=delete`). */
  readonly deleteCompleted: boolean
  /**
   * The settlement sets `synchronous_commit = off` for the claiming
   * transaction when that transaction is the store's own (not nested in a
   * caller's): `PgOutboxStore.Options.settleCommit`.
   */
  readonly asynchronousSettle: boolean
  /** The server has `transaction_timeout` (PostgreSQL ≥ 17). */
  readonly transactionTimeout: boolean
  /** `undefined`, or why this store cannot claim in a transaction (an online migration). */
  readonly unsupported: string | undefined
  /** The ordered claim's statements (`OUTBOX_ORDERING=key`), or why the store cannot claim in key order. */
  readonly ordered: ReturnType<typeof OrderedClaim.make> | string
  /** The fair claim's statement (`OUTBOX_FAIRNESS=tenant`), or why the store cannot claim fairly. */
  readonly fair: ReturnType<typeof FairClaim.make> | string
  /** `, <ordering key>, <tenant>` of the row `o`, as `toEvent` reads them after `lock_token`. */
  readonly keyColumns: Fragment
}

/**
 * How much longer than the claim's `timeout` the server waits before it ends
 * the transaction itself: the store's own bound (an interruption and a
 * `ROLLBACK`) fires first, and the server's is there for a stalled process.
 *
 * @internal
 */
export const serverMargin: Duration.Duration = Duration.seconds(1)

const operation = "claimInTransaction"

/** `use` failed: its error surfaces unchanged (not mapped as the store's). */
class UseFailure<E> {
  readonly error: E
  constructor(error: E) {
    this.error = error
  }
}

const byId = (a: OutboxEvent, b: OutboxEvent) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** jsonb and text refuse NUL: an error text with one must not fail the settlement (and roll the batch back). */
const safeText = (text: string) => text.includes("\u0000") ? text.replaceAll("\u0000", "\uFFFD") : text

/**
 * The store's `claimInTransaction`.
 *
 * @internal
 */
export const make = <V>(options: Options<V>) => {
  const { sql, table: T } = options
  /** "now" of each statement: in a transaction `now()` is frozen at BEGIN, so the database's clock is `statement_timestamp()`. */
  const now: Effect.Effect<Fragment> = options.timeSource === "database"
    ? Effect.succeed(sql.literal("statement_timestamp()"))
    : Effect.map(Clock.currentTimeMillis, (ms) => sql`${new Date(ms).toISOString()}::timestamptz`)

  /** The server-side bounds, set for this transaction only (`is_local`). */
  const bounds = (timeout: Duration.Duration) => {
    const ms = String(Math.ceil(Duration.toMillis(Duration.sum(timeout, serverMargin))))
    return options.transactionTimeout
      ? sql`SELECT set_config('statement_timeout', ${ms}, true) AS s, set_config('idle_in_transaction_session_timeout', ${ms}, true) AS i,
               set_config('transaction_timeout', ${ms}, true) AS t`
      : sql`SELECT set_config('statement_timeout', ${ms}, true) AS s, set_config('idle_in_transaction_session_timeout', ${ms}, true) AS i`
  }

  // The bounds ride in the claim: the CTE is evaluated when the first row is
  // found (nothing to bound otherwise), and `set_config` takes effect for the
  // next statement and the idle time after this one.
  const claim = (ts: Fragment, claimOptions: TransactionClaimOptions, horizon: Fragment) =>
    sql`
      WITH bounds AS MATERIALIZED (${bounds(claimOptions.timeout)}), ${
      options.oldestClaimable(
        ts,
        claimOptions.limit,
        sql`${options.columns}, ${options.plus(ts, claimOptions.timeout)} AS locked_until, 0::bigint AS lock_token`,
        sql.literal(" CROSS JOIN bounds"),
        horizon
      )
    }
      SELECT * FROM locked`.values as Effect.Effect<ReadonlyArray<V>, SqlError.SqlError>

  /**
   * The fair claim in the transaction: the bounds first (a statement of
   * their own: the fair claim is one statement), then the tenants' shares
   * locked.
   */
  const claimFair = (
    fair: ReturnType<typeof FairClaim.make>,
    ts: Fragment,
    claimOptions: TransactionClaimOptions & { readonly fairness: NonNullable<TransactionClaimOptions["fairness"]> },
    horizon: Fragment
  ) =>
    Effect.andThen(
      bounds(claimOptions.timeout),
      (sql`${
        fair.statement(ts, claimOptions.limit, claimOptions.fairness, {
          claimable: options.claimable(ts),
          select: sql`${options.columns}, ${options.plus(ts, claimOptions.timeout)} AS locked_until, 0::bigint AS lock_token${options.keyColumns}`,
          finish: sql.literal("SELECT * FROM locked"),
          horizon
        })
      }`.values as Effect.Effect<ReadonlyArray<V & ReadonlyArray<unknown>>, SqlError.SqlError>).pipe(
        Effect.map((rows) => fair.advance(rows, 13))
      )
    )

  /**
   * The ordered claim in the transaction: the probe (with the bounds) as the
   * transaction's first statement, then the heads locked: the row locks are
   * the leases, and an ordered claim elsewhere sees a locked head as its
   * key's lowest PENDING row, so it takes nothing of that key meanwhile.
   */
  const claimOrdered = (
    ordered: ReturnType<typeof OrderedClaim.make>,
    ts: Fragment,
    claimOptions: TransactionClaimOptions & { readonly ordering: NonNullable<TransactionClaimOptions["ordering"]> },
    fair?: ReturnType<typeof FairClaim.make>
  ) =>
    Effect.flatMap(ordered.probe(bounds(claimOptions.timeout)), (probe) =>
      (sql`${
        ordered.statement(
          ts,
          claimOptions.limit,
          probe,
          claimOptions.ordering,
          {
            claimable: options.claimable(ts),
            select: sql`${options.columns}, ${options.plus(ts, claimOptions.timeout)} AS locked_until, 0::bigint AS lock_token${options.keyColumns}`,
            finish: sql`SELECT l.*, ${ordered.trailer} FROM locked l
            UNION ALL ${ordered.emptyRow(14)} WHERE NOT EXISTS (SELECT 1 FROM locked)`
          },
          fair === undefined || claimOptions.fairness === undefined ? undefined : fair.orderedTurn(claimOptions.fairness)
        )
      }`.values as Effect.Effect<ReadonlyArray<V & ReadonlyArray<unknown>>, SqlError.SqlError>).pipe(
        Effect.map((rows) => {
          const claimed = ordered.advance(rows, claimOptions.limit, claimOptions.ordering.slice)
          return fair === undefined ? claimed : fair.advance(claimed, 13)
        })
      ))

  /** The batch's `created_at` window (±1 ms). */
  const window = (keys: ReadonlyArray<EventKey>) => {
    let min = Infinity
    let max = -Infinity
    for (const key of keys) {
      const t = key.createdAt.getTime()
      if (t < min) min = t
      if (t > max) max = t
    }
    const from = new Date(min - 1)
    return sql`created_at >= ${from} AND created_at < ${new Date(max + 1)}${options.settleBound(from)}`
  }
  const idArray = (keys: ReadonlyArray<EventKey>) => `{${keys.map((k) => k.id).join(",")}}`

  const completion = (ts: Fragment, completed: ReadonlyArray<EventKey>) =>
    options.deleteCompleted
      ? sql`DELETE FROM ${T} WHERE id = ANY(${idArray(completed)}::bigint[]) AND ${window(completed)}`
      : sql`UPDATE ${T} SET status = 'COMPLETED', processed_at = ${ts}
            WHERE id = ANY(${idArray(completed)}::bigint[]) AND ${window(completed)}`

  /** Retries and dead letters in one statement (`retry` / `deadLetter` of the lease store, row by row). */
  const failures = (ts: Fragment, outcome: TransactionOutcome) => {
    const rows = [
      ...outcome.deadLettered.map((f) => ({ id: String(f.event.id), error: safeText(f.error), delay_ms: 0, dead: true })),
      ...outcome.retried.map((f) => ({
        id: String(f.event.id),
        error: safeText(f.error),
        delay_ms: Duration.toMillis(f.delay),
        dead: false
      }))
    ]
    const keys = [...outcome.deadLettered.map((f) => f.event), ...outcome.retried.map((f) => f.event)]
    return sql`UPDATE ${T} o SET
        status = CASE WHEN f.dead THEN 'DEAD_LETTER' ELSE 'FAILED' END,
        retry_count = o.retry_count + 1,
        last_error = f.error,
        available_at = CASE WHEN f.dead THEN o.available_at ELSE ${ts} + f.delay_ms * interval '1 millisecond' END,
        processed_at = CASE WHEN f.dead THEN ${ts} ELSE o.processed_at END
      FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS f(id bigint, error text, delay_ms double precision, dead boolean)
      WHERE o.id = f.id AND ${window(keys)}`
  }

  /**
   * The settlement, one statement. `asynchronous`: it also sets
   * `synchronous_commit = off` until the claiming transaction ends, so its
   * commit does not wait for the WAL flush (data-modifying CTEs run whether
   * or not the final SELECT reads them). A commit a server crash undoes
   * leaves the batch PENDING, delivered again; a later event of a key may
   * have been delivered meanwhile, which a redelivery is allowed to follow
   * (README, "Guarantees").
   */
  const settle = (outcome: TransactionOutcome, asynchronous: boolean) =>
    Effect.flatMap(now, (ts): Effect.Effect<unknown, SqlError.SqlError> => {
      const failed = outcome.retried.length + outcome.deadLettered.length > 0
      const completed = outcome.completed.length > 0
      if (asynchronous && (completed || failed)) {
        const c = completed ? sql`c AS (${completion(ts, outcome.completed)})` : undefined
        const f = failed ? sql`f AS (${failures(ts, outcome)})` : undefined
        return sql`WITH ${c !== undefined && f !== undefined ? sql`${c}, ${f}` : (c ?? f)!}
          SELECT set_config('synchronous_commit', 'off', true)`
      }
      if (!completed) return failed ? failures(ts, outcome) : Effect.void
      if (!failed) return completion(ts, outcome.completed)
      return sql`WITH c AS (${completion(ts, outcome.completed)}), f AS (${failures(ts, outcome)}) SELECT 1`
    })

  return <E, R>(
    claimOptions: TransactionClaimOptions,
    use: (events: ReadonlyArray<OutboxEvent>) => Effect.Effect<TransactionOutcome, E, R>
  ): Effect.Effect<ReadonlyArray<OutboxEvent>, E | StoreError, R> => {
    if (options.unsupported !== undefined) {
      return Effect.fail(new StoreError({ operation, message: options.unsupported, retryable: false }))
    }
    const timedOut = () =>
      Effect.fail(
        new StoreError({
          operation,
          message: `${operation}: the batch was not settled within ${Duration.format(claimOptions.timeout)}; rolled back`,
          retryable: true
        })
      )
    const ordering = claimOptions.ordering
    const fairness = claimOptions.fairness
    if (fairness !== undefined && typeof options.fair === "string") {
      return Effect.fail(new StoreError({ operation, message: options.fair, retryable: false }))
    }
    if (fairness?.maxInFlight !== undefined) {
      return Effect.fail(new StoreError({ operation, message: `${operation}: ${inFlightCapRefusal}`, retryable: false }))
    }
    if (ordering !== undefined && typeof options.ordered === "string") {
      return Effect.fail(new StoreError({ operation, message: options.ordered, retryable: false }))
    }
    const body = (horizon: Fragment, asynchronous: boolean) => Effect.gen(function*() {
      const ts = yield* now
      const rows = ordering !== undefined
        ? yield* claimOrdered(
          options.ordered as ReturnType<typeof OrderedClaim.make>,
          ts,
          { ...claimOptions, ordering },
          fairness === undefined ? undefined : options.fair as ReturnType<typeof FairClaim.make>
        )
        : fairness !== undefined
        ? yield* claimFair(options.fair as ReturnType<typeof FairClaim.make>, ts, { ...claimOptions, fairness }, horizon)
        : yield* claim(ts, claimOptions, horizon)
      if (rows.length === 0) return [] as ReadonlyArray<OutboxEvent>
      // FOR UPDATE with ORDER BY may return rows out of order under concurrency
      const events = rows.map(options.toEvent).sort(byId)
      const outcome = yield* use(events).pipe(
        // the sink works outside this transaction: its own statements take their own connection
        Effect.updateContext((context: Context.Context<R>) => Context.omit(sql.transactionService)(context) as Context.Context<R>),
        Effect.mapError((error) => new UseFailure(error)),
        Effect.timeoutOrElse({ duration: claimOptions.timeout, orElse: timedOut })
      )
      yield* settle(settleable(events, outcome), asynchronous)
      return events
    })
    // the horizon is taken before the transaction: a failure to take it must not abort the claim's transaction
    const takeHorizon = ordering === undefined ? options.claimHorizon : Effect.succeed(sql.literal(""))
    return Effect.flatMap(takeHorizon, (horizon) =>
      Effect.flatMap(Effect.serviceOption(sql.transactionService), (outer) =>
        // nested in a caller's transaction, the commit is the caller's: its setting stays
        sql.withTransaction(body(horizon, options.asynchronousSettle && Option.isNone(outer))))).pipe(
      Effect.catch((error: UseFailure<E> | StoreError | SqlError.SqlError) =>
        Effect.fail(
          error instanceof UseFailure
            ? error.error
            : SqlError.isSqlError(error)
            ? fromSqlError(operation)(error)
            : error
        )
      ),
      // a connection lost mid-transaction (terminated by the server's bound, or an operator) fails its
      // ROLLBACK too, which `withTransaction` reports as a defect: it is the store's failure, retryable
      Effect.catchCause((cause) => {
        if (Cause.hasInterrupts(cause)) return Effect.failCause(cause)
        const defect = Cause.findDefect(cause)
        return Result.isSuccess(defect) && SqlError.isSqlError(defect.success)
          ? Effect.fail(fromSqlError(operation)(defect.success))
          : Effect.failCause(cause)
      })
    )
  }
}
