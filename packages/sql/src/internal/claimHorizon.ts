/**
 * The claim horizon of `PgOutboxStore`'s unordered claims (lease,
 * transaction, tenant-fair): the oldest `created_at` they read, taken from
 * `outbox_claim_horizon` (migration `0013_claim_horizon`) and kept for
 * `refreshMillis`, as a literal bound `AND o.created_at >= '...'` the
 * planner prunes the older partitions with.
 *
 * **Why a literal**: with a parameter the plan cache's generic plan prunes
 * at run time, after locking and opening every partition: a claim of 100
 * at 370 partitions took 1.12 ms against 0.29 with a literal (prepared
 * statements, 2026-12-06). The horizon is a partition's lower bound, so the
 * statement's text changes once a day, not at every refresh.
 *
 * **Not for the ordered claim**: a key's head must be its lowest unfinished
 * row wherever that row is, and a row committed below a horizon already
 * taken (a transaction begun before a partition boundary and open longer
 * than `lagSeconds`) would let its key's next event overtake it. Unordered,
 * such a row only waits for the next refresh (at most `refreshMillis`).
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"

/**
 * How long a horizon is kept before it is taken again: the longest a row
 * committed below it (see the module) waits. Taking it probes every leaf
 * partition once, ~0.13 ms a leaf (49–50 ms at 370 daily partitions, 136
 * in a new session), on the claim that finds it due: at 370 partitions one
 * claim in 10 s waits that long, where every claim read every partition
 * before (7.8 ms each).
 *
 * @internal
 */
export const refreshMillis = 10_000

/**
 * How far before now the horizon reaches at least, in seconds: a producer's
 * transaction stamps `created_at` when it begins, so one begun before a
 * partition boundary commits its rows below it. Within an hour they are
 * claimed at once; past it, at the next refresh.
 *
 * @internal
 */
export const lagSeconds = 3_600

/**
 * What the horizon needs from the store.
 *
 * @internal
 */
export interface Options {
  /** The store's client (without transforms). */
  readonly sql: SqlClient.SqlClient
  /** The outbox table's name, quoted (sent as a `regclass` parameter). */
  readonly table: string
  /** Whether `outbox_claim_horizon` exists (migration 0013) and the store is plain (not during an online migration). */
  readonly enabled: boolean
}

/**
 * The claim horizon of a store.
 *
 * @internal
 */
export interface ClaimHorizon {
  /**
   * The bound of the row `o` an unordered claim adds to each scan of the
   * outbox (`AND o.created_at >= '...'`, or nothing: no horizon), taken
   * again once `refreshMillis` have passed on Effect's `Clock`.
   */
  readonly bound: Effect.Effect<Fragment>
  /**
   * The bound a statement settling leased rows whose `created_at` are all at
   * or after `from` may add (`AND created_at >= '...'`, unqualified): the
   * horizon last taken when `from` is not below it, else nothing (a row an
   * ordered claim took below it). Every row of such a batch is at or after
   * it, so the bound changes nothing but the plan: the partitions below it
   * are pruned when the statement is planned, not locked and checked at
   * run time. A completion of 100 at 370 partitions: 0.9–1.0 ms against
   * 1.8 (generic plans, psql).
   */
  readonly settleBound: (from: Date) => Fragment
}

/**
 * The claim horizon of the outbox `options.table`.
 *
 * @internal
 */
export const make = (options: Options): ClaimHorizon => {
  const { sql } = options
  const none = sql.literal("")
  if (!options.enabled) return { bound: Effect.succeed(none), settleBound: () => none }
  let kept: { readonly bound: Fragment; readonly at: Date | undefined; readonly settle: Fragment; readonly takenAt: number } | undefined
  const bound = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    // taken again once `refreshMillis` have passed, or when the clock went back
    kept !== undefined && now >= kept.takenAt && now - kept.takenAt < refreshMillis
      ? Effect.succeed(kept.bound)
      : Effect.map(
        // a horizon that cannot be taken (EXECUTE revoked, a statement timeout) is no horizon until the next
        // refresh: the claims read every partition, as before it, rather than fail
        sql<{ h: Date | string | null }>`SELECT outbox_claim_horizon(${options.table}::regclass, ${lagSeconds} * interval '1 second') AS h`
          .pipe(Effect.catch(() => Effect.succeed([] as ReadonlyArray<{ h: Date | string | null }>))),
        (rows) => {
          const h = rows[0]?.h
          if (h === null || h === undefined) {
            kept = { bound: none, at: undefined, settle: none, takenAt: now }
            return none
          }
          const at = new Date(h)
          const literal = `'${at.toISOString()}'::timestamptz`
          kept = {
            bound: sql.literal(` AND o.created_at >= ${literal}`),
            at,
            settle: sql.literal(` AND created_at >= ${literal}`),
            takenAt: now
          }
          return kept.bound
        }
      ))
  return {
    bound,
    settleBound: (from) =>
      kept === undefined || kept.at === undefined || from.getTime() < kept.at.getTime() ? none : kept.settle
  }
}
