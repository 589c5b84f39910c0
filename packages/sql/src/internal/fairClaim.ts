/**
 * The statement of the tenant-fair claim (`OUTBOX_FAIRNESS=tenant`,
 * `OutboxStore.Fairness`), shared by `PgOutboxStore`'s lease claim and its
 * transaction-scoped claim, beside the store that runs them.
 *
 * **Tenants in turn.** One statement walks the tenants that have claimable
 * rows along `<outbox>_tenant_due_idx` (a loose index scan: one descent per
 * tenant, whatever its backlog), from the one after the previous claim's
 * last tenant, wrapping around, at most `maxTenants`; keeps those with a due
 * row; gives each an equal share of the limit (at least one) and locks each
 * tenant's oldest due rows, `FOR UPDATE SKIP LOCKED`, in a lateral sub-query
 * over the same index (`<outbox>_tenant_due_idx`, by tenant, then
 * `available_at`, due at once first, then id: `oldestDue`). The last tenant
 * (in turn order) that got rows is the next claim's cursor, so a tenant the
 * limit ran out before goes first next time (kept by the store, shared by
 * its workers: a race only makes two claims overlap).
 *
 * **In-flight caps** (`Fairness.maxInFlight`): the claim counts each
 * tenant's rows PROCESSING once (`flying`: a scan of the in-flight rows,
 * over the partial index of leased rows, so its cost follows what is in
 * flight, not the backlog), leaves a tenant at its cap out of the turn and
 * gives the others at most the room they have left. Two claims at once may
 * both see the same room, so a tenant can briefly exceed its cap by what
 * one claim takes (at most `cap`); lease claims only.
 *
 * @internal
 */
import type { Fairness } from "@outbox/core/OutboxStore"
import type * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"
import * as TenantMigration from "../migrations/0009_tenant.ts"
import type * as OrderedClaim from "./orderedClaim.ts"

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

/** Tenants a claim visits unless `Fairness.maxTenants` says otherwise. */
const defaultMaxTenants = 64

/**
 * The fair claim's statement builder and its cursor.
 *
 * @internal
 */
export const make = (options: Options) => {
  const { sql, table: T } = options
  const tenant = (alias: string) => sql.literal(TenantMigration.effectiveTenant(alias))

  /**
   * The oldest rows due at `ts` of the tenant `t` (`select` of the row `o`,
   * which has its `id`, and `where` holds), at most `limit`, in id order;
   * locked (`FOR UPDATE SKIP LOCKED`) when `lock`. Read from the two ranges
   * of the tenant in `<outbox>_tenant_due_idx` (migration 0012): the rows
   * due at once (no `available_at`) by id, and the scheduled rows up to `ts`
   * by their time, each up to `limit`; so the rows scheduled ahead, at the
   * end of the tenant's range, are never read. Along one range by id instead (before
   * 2026-12-06), a claim read past every row of the tenant scheduled ahead.
   *
   * **Gotcha**: when locking, a part's rows beyond `limit` of both are
   * locked until the statement's transaction ends, without being taken
   * (another worker skips them meanwhile), as in `internal/oldestClaim.ts`.
   */
  const oldestDue = (
    t: Fragment,
    ts: Fragment,
    limit: Fragment,
    parts: { readonly select: Fragment; readonly where: Fragment; readonly lock: boolean }
  ) => {
    const lock = sql.literal(parts.lock ? "FOR UPDATE OF o SKIP LOCKED" : "")
    // the index's order in full (a tenant's rows due at once, then its scheduled rows): no sort
    const order = sql`${tenant("o")}, o.available_at NULLS FIRST, o.id`
    // each part a sub-query of its own: FOR UPDATE is not allowed in a UNION's branches
    return sql`SELECT b.* FROM (
          SELECT * FROM (SELECT ${parts.select} FROM ${T} o
           WHERE ${tenant("o")} = ${t} AND o.available_at IS NULL AND ${parts.where}
           ORDER BY ${order} LIMIT ${limit} ${lock}) r
          UNION ALL
          SELECT * FROM (SELECT ${parts.select} FROM ${T} o
           WHERE ${tenant("o")} = ${t} AND o.available_at IS NOT NULL AND o.available_at <= ${ts} AND ${parts.where}
           ORDER BY ${order} LIMIT ${limit} ${lock}) s) b
        ORDER BY b.id LIMIT ${limit}`
  }
  /** The last tenant the previous claim took (`undefined`: start from the first). */
  let cursor: string | undefined

  /** Tenants a claim visits: `Fairness.maxTenants`, else the default. */
  const maxTenants = (fairness: Fairness) => Math.max(1, Math.trunc(fairness.maxTenants ?? defaultMaxTenants))
  /** `Fairness.maxInFlight` as a whole number of at least 1; `undefined`: no cap. */
  const capOf = (fairness: Fairness) =>
    fairness.maxInFlight === undefined ? undefined : Math.max(1, Math.trunc(fairness.maxInFlight) || 1)

  /**
   * The CTEs `after`, `before` and `walked (t, n)` (the statement starts
   * `WITH RECURSIVE`): the tenants with claimable rows in turn order, from
   * the one after the cursor to the last, then from the first up to the
   * cursor, `n` their place in the turn, at most `max` of them; within the
   * claim horizon `horizon` (`internal/claimHorizon.ts`; none for the
   * ordered claim).
   */
  const turn = (max: number, horizon: Fragment = sql.literal("")) => {
    const from = cursor
    const walk = (name: string, first: Fragment, bound: Fragment) =>
      sql`${sql.literal(name)} AS (
        SELECT f.t, 1 AS n FROM (
          SELECT ${tenant("o")} AS t FROM ${T} o
          WHERE o.status IN ('PENDING', 'FAILED') AND ${first}${horizon}
          ORDER BY 1 LIMIT 1) f
        UNION ALL
        SELECT nx.t, w.n + 1 FROM ${sql.literal(name)} w CROSS JOIN LATERAL (
          SELECT ${tenant("o")} AS t FROM ${T} o
          WHERE o.status IN ('PENDING', 'FAILED') AND ${tenant("o")} > w.t AND ${bound}${horizon}
          ORDER BY 1 LIMIT 1) nx
        WHERE w.n < ${max}
      )`
    const noBound = sql.literal("true")
    const after = from === undefined
      ? walk("after", noBound, noBound)
      : walk("after", sql`${tenant("o")} > ${from}`, noBound)
    const before = from === undefined
      ? sql`before AS (SELECT NULL::text COLLATE "C" AS t, 0 AS n WHERE false)`
      : walk("before", noBound, sql`${tenant("o")} <= ${from}`)
    return sql`${after}, ${before}, walked AS (
        SELECT a.t, a.n FROM after a
        UNION ALL
        SELECT b.t, b.n + (SELECT count(*) FROM after) FROM before b
        ${from === undefined ? sql.literal("") : sql`WHERE b.t <= ${from}`}
      )`
  }

  /**
   * The claim: `select` (columns of `o`) of the rows locked, in the CTE
   * `locked`; `finish` turns it into the result, whose rows carry their
   * tenant at `tenantAt` (see `advance`).
   */
  const statement = (
    ts: Fragment,
    limit: number,
    fairness: Fairness,
    parts: {
      readonly claimable: Fragment
      readonly select: Fragment
      readonly finish: Fragment
      /** The claim horizon (`internal/claimHorizon.ts`). */
      readonly horizon?: Fragment | undefined
    }
  ) => {
    const horizon = parts.horizon ?? sql.literal("")
    const max = maxTenants(fairness)
    const cap = capOf(fairness)
    // the room each tenant has under its cap: its rows PROCESSING (the leased index), counted once per claim
    const room = cap === undefined
      ? sql.literal(String(Math.max(1, Math.trunc(limit))))
      : sql`${cap} - coalesce((SELECT f.c FROM flying f WHERE f.t = w.t), 0)`
    const flying = cap === undefined ? sql.literal("") : sql`, flying AS MATERIALIZED (
        SELECT ${tenant("o")} AS t, count(*) AS c FROM ${T} o WHERE o.status = 'PROCESSING' GROUP BY 1
      )`
    return sql`WITH RECURSIVE ${turn(max, horizon)}${flying}, roomy AS (
        SELECT w.t, w.n, ${room} AS room FROM walked w
      ), taken AS MATERIALIZED (
        SELECT w.t, w.n, w.room FROM roomy w
        WHERE w.room > 0 AND (EXISTS (
          SELECT 1 FROM ${T} o
          WHERE ${tenant("o")} = w.t AND o.status IN ('PENDING', 'FAILED') AND o.available_at IS NULL${horizon}
        ) OR EXISTS (
          SELECT 1 FROM ${T} o
          WHERE ${tenant("o")} = w.t AND o.status IN ('PENDING', 'FAILED') AND o.available_at <= ${ts}${horizon}))
        ORDER BY w.n LIMIT ${max}
      ), share AS (
        SELECT greatest(1, ceil(${limit}::numeric / greatest((SELECT count(*) FROM taken), 1)))::int AS s
      ), locked AS (
        SELECT l.* FROM taken tk CROSS JOIN LATERAL (${
      oldestDue(sql`tk.t`, ts, sql`least((SELECT s FROM share), tk.room)`, {
        select: parts.select,
        where: sql`${parts.claimable}${horizon}`,
        lock: true
      })
    }) l
        LIMIT ${options.limit(limit)}
      ) ${parts.finish}`
  }

  /**
   * Moves the cursor to the last tenant, in this claim's turn order (the
   * tenants after the cursor, then from the first), that got rows: `tenantAt`
   * is where a row carries its tenant. Nothing claimed: the cursor stays.
   */
  const advance = <V extends ReadonlyArray<unknown>>(rows: ReadonlyArray<V>, tenantAt: number): ReadonlyArray<V> => {
    const from = cursor
    /** Later in the turn order: after the cursor first, then from the start. */
    const later = (a: string, b: string) => {
      const wa = from !== undefined && a <= from ? 1 : 0
      const wb = from !== undefined && b <= from ? 1 : 0
      return wa !== wb ? wa > wb : a > b
    }
    let last: string | undefined
    for (const row of rows) {
      const t = row[tenantAt]
      if (typeof t === "string" && (last === undefined || later(t, last))) last = t
    }
    if (last !== undefined) cursor = last
    return rows
  }

  /** The tenants' turn of an ordered claim with `fairness` (`OrderedClaim.statement`). */
  const orderedTurn = (fairness: Fairness): OrderedClaim.Turn => ({
    turn,
    tenant,
    oldestDue,
    max: maxTenants(fairness),
    cap: capOf(fairness)
  })

  return { statement, advance, orderedTurn }
}
