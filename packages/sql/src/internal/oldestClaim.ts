/**
 * The oldest claimable rows of the unordered claims (`PgOutboxStore`'s lease
 * claim and its transaction-scoped claim), locked, beside the store that
 * runs them.
 *
 * The claimable rows (PENDING, FAILED) are read from two indexes that split
 * them: those due at once (`available_at IS NULL`, `<outbox>_ready_idx`,
 * migration 0010) by id, and those with an `available_at` up to now
 * (`<outbox>_waiting_idx`, migration 0008) by it, each up to the claim's
 * limit and locked (`FOR UPDATE SKIP LOCKED`); then the oldest `limit` of
 * both by id. Read along the claimable index instead (as before 2026-12-05),
 * the rows scheduled ahead were read past on every claim: published before
 * the rows due now, they come first in id order. With 100,000 events
 * scheduled a week ahead in front of a backlog, a claim of 100 took 28 ms of
 * server time against 0.24 (`bench:ordering`, section 5). With few rows due
 * the planner may combine the two indexes by itself, which hid the cost in
 * small tests; behind a backlog it takes the claimable index in id order.
 *
 * **Gotcha**: the `due` rows beyond the claim's limit (when more than
 * `limit` are due, or when rows due at once fill it with lower ids) are
 * locked without being claimed until the statement's transaction ends: at
 * once for the lease claim (one statement), at the batch's commit for the
 * transaction claim. Another worker skips them meanwhile.
 *
 * @internal
 */
import type * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"

/**
 * What the statement needs from the store.
 *
 * @internal
 */
export interface Options {
  /** The store's client (without transforms). */
  readonly sql: SqlClient.SqlClient
  /** The outbox table, quoted. */
  readonly table: Fragment
  /** The store's LIMIT literal. */
  readonly limit: (limit: number) => Fragment
}

/**
 * The CTEs `ready`, `due` and `locked` (a statement's `WITH` list): `locked`
 * is the oldest `limit` claimable rows at `ts` (`select` of the row `o`,
 * joined to `from`, within the claim horizon `horizon`: `internal/claimHorizon.ts`),
 * locked, in id order.
 *
 * @internal
 */
export const make = (options: Options) => {
  const { sql, table: T } = options
  return (
    ts: Fragment,
    limit: number,
    select: Fragment,
    from: Fragment = sql.literal(""),
    horizon: Fragment = sql.literal("")
  ): Fragment =>
    sql`ready AS (
        SELECT ${select} FROM ${T} o${from}
        WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at IS NULL${horizon}
        ORDER BY o.id LIMIT ${options.limit(limit)}
        FOR UPDATE OF o SKIP LOCKED
      ), due AS (
        SELECT ${select} FROM ${T} o${from}
        WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at IS NOT NULL AND o.available_at <= ${ts}${horizon}
        ORDER BY o.available_at LIMIT ${options.limit(limit)}
        FOR UPDATE OF o SKIP LOCKED
      ), locked AS (
        SELECT * FROM ready UNION ALL SELECT * FROM due
        ORDER BY id LIMIT ${options.limit(limit)}
      )`
}
