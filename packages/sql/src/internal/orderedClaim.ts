/**
 * The statements of the ordered claim (`OUTBOX_ORDERING=key`,
 * `OutboxStore.Ordering`), shared by `PgOutboxStore`'s lease claim and its
 * transaction-scoped claim, beside the store that runs them.
 *
 * **A probe, then the claim** (two statements, or one while a backlog drains:
 * see below). The *probe*: the id sequence's last value `w`,
 * then (in a sub-plan run after it) the lanes a producer holds, read from
 * `pg_locks` (no lock taken: a producer never waits on a probe). Then the
 * *claim*, whose READ COMMITTED
 * snapshot is taken after the probe: every id ≤ `w` of a free lane was
 * drawn by a transaction that has ended, so it is visible now or never will
 * be (migration `0008_ordering` draws ids under the lane lock). A head is
 * claimed only when its id is ≤ `w` and its lane was free: a key never
 * overtakes an uncommitted lower id of its own. Every claim also runs the
 * probe inside its statement (after its snapshot), which any later claim
 * may use instead of probing first: the lease claim does after a full claim
 * (`reusable`), saving a round trip per claim while a backlog drains, but
 * not with fairness, where another tenant's new event, drawn after that
 * probe, would wait for the claim after next. The
 * transaction claim probes first every time (its probe statement also reads
 * the transaction's bounds), so there the in-statement probe (~0.05 ms) goes
 * unused.
 *
 * **Heads.** A key's head is its lowest PENDING/FAILED id (the first entry
 * of `<outbox>_ordering_idx` for its hash). It is claimable when it is due,
 * its key has nothing PROCESSING (in flight: any id, so a redriven lower
 * event waits for it too) and, with `hold`, no dead letter below it. The
 * claim finds heads in two ways:
 * - the *window*: the oldest `2 × limit` due rows (one range scan of the
 *   claimable index, as the unordered claim), and of each key there the
 *   oldest. It is the key's head unless a lower row of the key is not due
 *   (every due lower row would be in the window): the rows not yet due are
 *   read once per claim (`<outbox>_waiting_idx`), or, past `maxWaiting`,
 *   each candidate is checked with an index probe;
 * - the *walk*, only when the window found fewer heads than `limit` (one
 *   key's backlog, or blocked keys, in front): from a cursor, one index
 *   descent per key along `<outbox>_ordering_idx` (a loose index scan), at
 *   most 64 keys per claim. The cursor moves on between claims and wraps
 *   around, so a backlog of one key, or thousands of blocked keys, cannot
 *   starve the others. A walk that finds no key at or after its cursor
 *   starts over from the first key in the same statement: before
 *   2026-12-04 it found nothing and kept its cursor, so once the cursor
 *   had passed the last key, a key blocked in front (a head in backoff, or
 *   a held dead letter) whose due rows filled the window stalled every other
 *   key until it was unblocked (store contract: "never stalls the other
 *   keys").
 *
 * With runs the window is `limit` rows, not `2 × limit`: the runs fill the
 * claim, and the window's rows cost ~3 µs each (bench:ordering, claims of
 * 1,000: 6 ms of a 27 ms claim).
 *
 * **Slices** (`Ordering.slice`): the window, the rows in flight, the rows
 * not yet due and the walk are all limited to the slice's range of key
 * hashes (the walk's cursor is kept per slice), so claims of disjoint
 * slices read disjoint rows. The window's filter is written as a function
 * call (`range_contains_elem`): as an operator on the hash expression the
 * planner estimated 0.5 % of the rows and read the whole partition and
 * sorted it instead of scanning the claimable index in id order (22 ms of
 * a 25 ms claim of 250).
 *
 * **With fairness** (`Turn`, `OUTBOX_FAIRNESS=tenant`): the heads also come
 * from the oldest due rows of each tenant in turn (`tenantRows` of each of up
 * to `Fairness.maxTenants`, along `<outbox>_tenant_due_idx`), each checked as its
 * key's lowest PENDING/FAILED row, whatever the slice (against every key in
 * flight, then: `inflight_all`); and the heads are locked tenant by tenant in
 * turn (each head's rank within its tenant, then its id) instead of oldest
 * first. So another tenant's new event, newer than a backlog that fills the
 * window, is taken by the next claim.
 *
 * Then the heads are locked oldest first and re-checked on their newest
 * version (`FOR UPDATE SKIP LOCKED`, `lockAll`): two claimers never both take
 * a head, and a head another claimer holds makes room for the next. With
 * fairness, in the tenants' turn instead, each head in a lateral sub-query.
 *
 * **Runs** (`Ordering.run` above 1): then the events after each locked
 * head fill the room left under the limit (`runCtes`): from the window's
 * rows when those fill it, else along the ordering index, key by key. Only
 * the holder of a key's head takes its run, so no other claimer competes
 * for those rows.
 *
 * Measured at 1M pending rows (plans in `bench/ordering.bench.ts`): index
 * scans throughout; a claim of 100 heads over 1,000 keys 4.6–6.1 ms against
 * 3.7 ms for the unordered claim.
 *
 * @internal
 */
import type { Ordering } from "@outbox/core/OutboxStore"
import * as Effect from "effect/Effect"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import * as Ordering0008 from "../migrations/0008_ordering.ts"

/**
 * What the statements need from the store.
 *
 * @internal
 */
export interface Options {
  /** The store's client (without transforms). */
  readonly sql: SqlClient.SqlClient
  /** The outbox table, quoted. */
  readonly table: Fragment
  /** The id sequence the ordering trigger draws from (a `regclass` text, sent as a parameter). */
  readonly sequence: string
  /** The store's LIMIT literal. */
  readonly limit: (limit: number) => Fragment
}

/**
 * The probe's outcome: the claim's id bound and busy lanes.
 *
 * @internal
 */
export interface Probe {
  /** Ids up to this were drawn before the lanes were probed (`null`: the sequence never drew one). */
  readonly w: bigint | string | null
  /**
   * The lanes a producer holds, as a PostgreSQL array literal: usually none
   * or a few, so that checking a candidate against them is cheap (checking
   * against the 256 free ones was a linear search per window row).
   */
  readonly busy: string
}

/**
 * Tenant-fair ordered claims (`OUTBOX_ORDERING=key` with
 * `OUTBOX_FAIRNESS=tenant`): the tenants in turn (`FairClaim`'s walk of
 * `<outbox>_tenant_due_idx`, CTE `walked (t, n)`), a row's tenant and a
 * tenant's oldest due rows.
 *
 * @internal
 */
export interface Turn {
  /** The CTEs ending in `walked (t, n)`, at most `max` tenants (the ordered claim has no claim horizon). */
  readonly turn: (max: number) => Fragment
  /** The tenant of the row `alias`, as the tenant index has it. */
  readonly tenant: (alias: string) => Fragment
  /** The oldest due rows of a tenant, along the tenant index (`FairClaim`'s `oldestDue`). */
  readonly oldestDue: (
    t: Fragment,
    ts: Fragment,
    limit: Fragment,
    parts: { readonly select: Fragment; readonly where: Fragment; readonly lock: boolean }
  ) => Fragment
  /** Tenants a claim visits. */
  readonly max: number
  /**
   * `Fairness.maxInFlight`: a tenant's heads are taken only up to its room
   * under the cap (its rows PROCESSING counted once per claim), and the
   * claim takes heads only (no runs: a run's events are all in flight at
   * once).
   */
  readonly cap?: number | undefined
}

/**
 * Each visited tenant's oldest due rows a fair ordered claim looks at for
 * heads: a tenant whose new event is newer than another tenant's backlog has
 * it found here, not only when the window reaches it. Four, so that a
 * blocked key (in flight, in backoff) at a tenant's front does not hide the
 * tenant's other keys from this part of the claim.
 */
const tenantRows = 4

/** The walk's most keys per claim. */
const maxSteps = 64

/**
 * The most not-yet-due rows (backoffs, schedules) a claim reads to rule out
 * window candidates with a lower id waiting: up to this many, one range scan
 * of `<outbox>_waiting_idx` answers for every candidate; above it (many
 * scheduled events), each candidate is checked with an index probe instead.
 * Measured at 200k pending rows: the probes were ~1.2 ms of a 2.4 ms claim
 * of 100 on a table of 5 partitions (each probe descends every partition).
 */
const maxWaiting = 1_000

/** The smallest bigint: the walk's cursor starts (and wraps around) here. */
const minKey = -9223372036854775808n
/** The largest bigint. */
const maxKey = 9223372036854775807n

/**
 * The key hashes of `Ordering.slice` (inclusive bounds): the 2^64 hash values
 * cut into `count` ranges of equal width, the last one ending at `maxKey`.
 */
const sliceBounds = (slice: Ordering["slice"]): { readonly lo: bigint; readonly hi: bigint } => {
  if (slice === undefined || slice.count <= 1) return { lo: minKey, hi: maxKey }
  const count = BigInt(slice.count)
  const index = BigInt(Math.min(Math.max(slice.index, 0), slice.count - 1))
  const width = (1n << 64n) / count
  const lo = minKey + index * width
  return { lo, hi: index === count - 1n ? maxKey : lo + width - 1n }
}

/**
 * The ordered claim's statements. `cursor` is the walk's position, kept by
 * the store between claims (shared by its workers: a race only makes two
 * walks overlap).
 *
 * @internal
 */
export const make = (options: Options) => {
  const { sql, table: T } = options
  const k = (alias: string) => sql.literal(Ordering0008.keyHash(alias))
  const ns = sql.literal(Ordering0008.laneNamespace)
  const laneMask = sql.literal(String(Ordering0008.lanes - 1))
  /** The walk's cursor of each slice (`"index/count"`; `""` for the whole space). */
  const cursors = new Map<string, bigint>()
  const sliceKey = (slice: Ordering["slice"]) =>
    slice === undefined || slice.count <= 1 ? "" : `${slice.index}/${slice.count}`

  /**
   * The probe's query: the id bound `w`, then (a sub-plan run after it, `s.r`)
   * the lanes a producer holds, read from `pg_locks`. A producer takes its
   * lane (a shared advisory lock, granted, in the main lock table: advisory
   * locks never take the fast path) before it draws an id and keeps it until
   * its transaction has ended, so a lane absent there had no producer
   * between drawing an id ≤ `w` and ending. Reading the lock table replaced
   * taking each of the 256 lanes exclusively for an instant: 0.05 ms against
   * 0.14–0.25 ms of server time (pgbench, prepared), and a producer never
   * waits on a probe.
   */
  const probeQuery = (extra?: Fragment) =>
    sql`SELECT s.w, ARRAY(
          SELECT DISTINCT l.objid::int FROM pg_catalog.pg_locks l
          WHERE s.r AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
            AND l.classid = (${ns})::oid
            AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        )::text AS busy
        FROM (SELECT pg_sequence_last_value(${options.sequence}::regclass) AS w, true AS r) s${
      extra === undefined ? sql.literal("") : sql` CROSS JOIN (${extra}) extra`
    }`

  /**
   * The probe as a statement of its own; `extra` (a one-row query, e.g. a
   * transaction's bounds) is evaluated in the same statement.
   */
  const probe = (extra?: Fragment): Effect.Effect<Probe, SqlError.SqlError> =>
    Effect.map(sql<{ w: bigint | string | null; busy: string }>`${probeQuery(extra)}`, (rows) => rows[0] ?? { w: null, busy: "{}" })

  /**
   * The probe the last claim ran inside its statement (CTE `next_probe`), and
   * whether that claim was full. Any later statement may use it: its lanes
   * were free and its ids drawn before that statement ended, so before a
   * later one takes its snapshot. Its only cost is staleness: ids drawn since
   * are not claimed, and lanes busy then stay excluded, until the next probe.
   */
  let carried: { readonly probe: Probe; readonly full: boolean } | undefined

  /**
   * The probe for the next claim without a round trip of its own, when the
   * last claim was full: a backlog, where claims follow each other closely
   * and the ids it cannot see yet come after the backlog's anyway. After a
   * short or empty claim (a trickle, where a new event is what the claim is
   * for), `undefined`: the claim probes first. Under 2 workers draining
   * 1,000 keys the separate probe was 0.9 ms of a 6 ms claim
   * (bench:ordering, claims of 100).
   */
  const reusable = (): Probe | undefined => carried?.full === true ? carried.probe : undefined

  /** The probe the last claim ran inside its statement, full or not (`undefined` before the first claim). */
  const lastProbe = (): Probe | undefined => carried?.probe

  /**
   * Whether the key `alias.k`'s head `alias.id` may be claimed (not in flight, committed below, not held).
   * The in-flight check is `NOT IN` (a hashed sub-plan): as a correlated `NOT EXISTS` the planner ran it as
   * a nested loop over the in-flight CTE (estimated at 5 rows), 100 candidates × every key in flight; with
   * 200 keys in flight a claim of 100 over the whole key space took 3.30 ms against 1.44 (bench:ordering,
   * section 5). The keys are never NULL (a hash of a NOT NULL text).
   */
  const eligible = (alias: string, p: Probe, ordering: Ordering, inflight = "inflight") => {
    const a = sql.literal(alias)
    const held = ordering.deadLetter === "hold"
      ? sql`AND coalesce((
          SELECT d.id FROM ${T} d
          WHERE d.status = 'DEAD_LETTER' AND ${k("d")} = ${a}.k
          ORDER BY ${k("d")}, d.id LIMIT 1) > ${a}.id, true)`
      : sql.literal("")
    return sql`${a}.k NOT IN (SELECT i.k FROM ${sql.literal(inflight)} i)
      AND ${a}.id <= ${p.w ?? "0"}::bigint AND NOT (((${a}.k & ${laneMask})::int) = ANY (${p.busy}::int[]))
      ${held}`
  }

  /**
   * The CTEs up to `heads (k, id, created_at)` and `cursor (nf)`, for a
   * claim of at most `limit` (the statement starts `WITH RECURSIVE`).
   */
  const headsCtes = (ts: Fragment, limit: number, p: Probe, ordering: Ordering, fair?: Turn) => {
    const due = sql`(o.available_at IS NULL OR o.available_at <= ${ts})`
    const sliced = ordering.slice !== undefined && ordering.slice.count > 1
    const { lo, hi } = sliceBounds(ordering.slice)
    const cursor = cursors.get(sliceKey(ordering.slice)) ?? lo
    // A filter in function form: the planner gives an operator on an expression without statistics 0.5 %
    // selectivity, and then read the whole partition and sorted it (22 ms of a 25 ms claim of 250) rather
    // than scan the claimable rows in id order until the window is full; a function call gets 1/3
    const inSlice = sliced
      ? sql`AND range_contains_elem(int8range(${String(lo)}::bigint, ${
        hi === maxKey ? null : String(hi + 1n)
      }::bigint), ${k("o")})`
      : sql.literal("")
    // win: the oldest due rows of the slice, from the rows due at once by id (`<outbox>_ready_idx`) and the
    // scheduled ones due by now (`win_due`, by their time). Along the claimable index, the window read past
    // every row scheduled ahead of the backlog on every claim: 26.6–27.6 ms against 4.7–4.9 for a sliced
    // claim of 100 with 100,000 of them (bench:ordering section 5; with none, 1.44–1.64 against 1.47–1.51).
    // When `win_due` is full it may miss a due row below the window's last id, and the window must hold every
    // due row up to its last id (the heads' and the runs' rules): then it is read along the claimable index.
    //
    // window_heads: the rows not yet due join the window's rows in the sort that picks each key's lowest row,
    // so a key whose lowest row is not due has no head there (a correlated NOT EXISTS scanned `waiting` once
    // per candidate: 8.45 ms against 3.19 for a sliced claim of 100 beside 3,000 rows not due, section 5);
    // past `maxWaiting` (`waiting` cut short) each candidate is also checked with an index probe
    const windowRows = options.limit((ordering.run ?? 1) > 1 ? limit : 2 * limit)
    return sql`next_probe AS MATERIALIZED (${probeQuery()}), inflight AS MATERIALIZED (
        SELECT DISTINCT ${k("o")} AS k FROM ${T} o WHERE o.status = 'PROCESSING' ${inSlice}
      ), win_due AS MATERIALIZED (
        SELECT o.id, o.created_at, ${k("o")} AS k FROM ${T} o
        WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at IS NOT NULL AND o.available_at <= ${ts} ${inSlice}
        ORDER BY o.available_at LIMIT ${windowRows}
      ), win AS (
        (SELECT u.id, u.created_at, u.k FROM (
           (SELECT o.id, o.created_at, ${k("o")} AS k FROM ${T} o
            WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at IS NULL ${inSlice}
            ORDER BY o.id LIMIT ${windowRows})
           UNION ALL
           SELECT wd.id, wd.created_at, wd.k FROM win_due wd) u
         WHERE (SELECT count(*) FROM win_due) < ${windowRows}
         ORDER BY u.id LIMIT ${windowRows})
        UNION ALL
        (SELECT o.id, o.created_at, ${k("o")} AS k FROM ${T} o
         WHERE o.status IN ('PENDING', 'FAILED') AND ${due} ${inSlice}
           AND (SELECT count(*) FROM win_due) >= ${windowRows}
         ORDER BY o.id LIMIT ${windowRows})
      ), waiting AS MATERIALIZED (
        SELECT ${k("o")} AS k, o.id FROM ${T} o
        WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at > ${ts} ${inSlice}
        LIMIT ${options.limit(maxWaiting + 1)}
      ), window_heads AS MATERIALIZED (
        SELECT fw.k, fw.id, fw.created_at
        FROM (SELECT DISTINCT ON (u.k) u.k, u.id, u.created_at, u.due FROM (
                SELECT wi.k, wi.id, wi.created_at, true AS due FROM win wi
                UNION ALL
                SELECT x.k, x.id, NULL::timestamptz, false FROM waiting x
              ) u ORDER BY u.k, u.id) fw
        WHERE fw.due AND ${eligible("fw", p, ordering)}
          AND CASE WHEN (SELECT count(*) FROM waiting) <= ${maxWaiting} THEN true
            ELSE fw.id = (SELECT o.id FROM ${T} o WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} = fw.k
                          ORDER BY ${k("o")}, o.id LIMIT 1) END
      ), budget AS (
        SELECT least(${maxSteps}, ${limit}::int - (SELECT count(*) FROM window_heads))::int AS steps
      ), walk AS (
        SELECT f.k, f.id, f.created_at, f.due, 1 AS steps
        FROM ((SELECT ${k("o")} AS k, o.id, o.created_at, ${due} AS due
               FROM ${T} o
               WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} >= ${String(cursor)}::bigint
                 AND ${k("o")} <= ${String(hi)}::bigint
               ORDER BY ${k("o")}, o.id LIMIT 1)
              UNION ALL
              -- no key at or after the cursor: the walk starts over from the first (else, with a key in front
              -- whose due rows fill the window, a cursor past the last key found nothing on every claim)
              (SELECT ${k("o")} AS k, o.id, o.created_at, ${due} AS due
               FROM ${T} o
               WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} >= ${String(lo)}::bigint
                 AND ${k("o")} < ${String(cursor)}::bigint
               ORDER BY ${k("o")}, o.id LIMIT 1)
              LIMIT 1) f
        WHERE (SELECT steps FROM budget) > 0
        UNION ALL
        SELECT nx.k, nx.id, nx.created_at, nx.due, wk.steps + 1
        FROM walk wk CROSS JOIN LATERAL (
          SELECT ${k("o")} AS k, o.id, o.created_at, ${due} AS due
          FROM ${T} o
          WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} > wk.k AND ${k("o")} <= ${String(hi)}::bigint
          ORDER BY ${k("o")}, o.id LIMIT 1) nx
        WHERE wk.steps < (SELECT steps FROM budget)
      )${
      fair === undefined ? sql.literal("") : sql`, ${fair.turn(fair.max)}${
        // not limited to the slice: a tenant's new event is found by the next claim, whichever slice it has;
        // so its key's rows in flight are looked up outside the slice too
        sliced
          ? sql`, inflight_all AS MATERIALIZED (SELECT DISTINCT ${k("o")} AS k FROM ${T} o WHERE o.status = 'PROCESSING')`
          : sql.literal("")
      }, tenant_heads AS MATERIALIZED (
        SELECT c.k, c.id, c.created_at FROM walked w CROSS JOIN LATERAL (${
        fair.oldestDue(sql`w.t`, ts, sql.literal(String(tenantRows)), {
          select: sql`${k("o")} AS k, o.id, o.created_at`,
          where: sql.literal("o.status IN ('PENDING', 'FAILED')"),
          lock: false
        })
      }) c
        WHERE ${eligible("c", p, ordering, sliced ? "inflight_all" : "inflight")}
          AND c.id = (SELECT o.id FROM ${T} o WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} = c.k
                      ORDER BY ${k("o")}, o.id LIMIT 1)
      )`
    }, heads AS (
        SELECT wh.k, wh.id, wh.created_at FROM window_heads wh
        UNION
        SELECT wk.k, wk.id, wk.created_at FROM walk wk WHERE wk.due AND ${eligible("wk", p, ordering)}${
      fair === undefined ? sql.literal("") : sql`
        UNION
        SELECT th.k, th.id, th.created_at FROM tenant_heads th`
    }
      ), cursor AS (
        SELECT CASE WHEN max(wk.steps) IS NULL THEN ${String(cursor)}::bigint
                    WHEN max(wk.steps) < (SELECT steps FROM budget) OR max(wk.k) >= ${String(hi)}::bigint
                    THEN ${String(lo)}::bigint ELSE max(wk.k) + 1 END AS nf
        FROM walk wk
      )`
  }

  /**
   * The rows of the CTE `rows` (`id, created_at`) still claimable, locked in
   * id order with `FOR UPDATE SKIP LOCKED` (re-checked on their newest
   * version; a row another claimer holds is passed over), at most `limit`:
   * one scan of the ids within their `created_at` bounds (InitPlans, which
   * prune partitions at run time), as the lease claim's `UPDATE` finds its
   * rows, so no plan can hash a partition to join them. It replaced a
   * lateral sub-query per row (an index lookup in each partition, set up
   * again for every row): server CPU per ordered event at claims of 100
   * 34.6–35.3 µs against 37.1–41.2 (bench:ordering, two alternating runs of
   * 2 rounds each way); at 250 and 1,000 no difference beyond the noise.
   */
  const lockAll = (
    rows: string,
    parts: { readonly claimable: Fragment; readonly select: Fragment },
    limit?: number
  ) => {
    const r = sql.literal(rows)
    return sql`
        SELECT ${parts.select} FROM ${T} o
        WHERE o.id = ANY(ARRAY(SELECT r.id FROM ${r} r))
          AND o.created_at >= (SELECT min(r.created_at) FROM ${r} r)
          AND o.created_at <= (SELECT max(r.created_at) FROM ${r} r)
          AND ${parts.claimable}
        ORDER BY o.id${limit === undefined ? sql.literal("") : sql` LIMIT ${options.limit(limit)}`}
        FOR UPDATE OF o SKIP LOCKED`
  }

  /**
   * The claim's statement: `select` (columns of `o`, a locked head's row)
   * of the heads, oldest first, each locked with `FOR UPDATE SKIP LOCKED`
   * and re-checked as claimable (`claimable`), at most `limit`; `finish`
   * turns the CTE `locked` of those rows into the statement's result, each
   * row's last value being the walk's next cursor (`next_from`).
   */
  const statement = (
    ts: Fragment,
    limit: number,
    p: Probe,
    ordering: Ordering,
    parts: {
      readonly claimable: Fragment
      readonly select: Fragment
      readonly finish: Fragment
    },
    fair?: Turn
  ) => {
    // a capped claim takes heads only: a run's events would all be in flight at once
    const order: Ordering = fair?.cap === undefined ? ordering : { ...ordering, run: 1 }
    const runs = (order.run ?? 1) > 1
    return sql`WITH RECURSIVE ${headsCtes(ts, limit, p, order, fair)}${
      fair?.cap === undefined ? sql.literal("") : sql`, flying AS MATERIALIZED (
        SELECT ${fair.tenant("o")} AS t, count(*) AS c FROM ${T} o WHERE o.status = 'PROCESSING' GROUP BY 1
      )`
    }, ${runs ? sql`locked_heads AS MATERIALIZED` : sql.literal("locked AS")} (${
      fair === undefined
        ? lockAll("heads", parts, limit)
        // tenant by tenant in turn: each head's rank in its tenant, then its id (the tenant read by id: a
        // nested loop of index lookups, so no plan can hash a partition to join the heads); under a cap,
        // only the ranks within the tenant's room; each head locked on its own, in that order
        : sql`
        SELECT l.* FROM (
          SELECT h.id, h.created_at FROM (
            SELECT h.id, h.created_at, x.t, row_number() OVER (PARTITION BY x.t ORDER BY h.id) AS rn
            FROM heads h CROSS JOIN LATERAL (
              SELECT ${fair.tenant("o")} AS t FROM ${T} o WHERE o.id = h.id AND o.created_at = h.created_at) x
          ) h ${
          fair.cap === undefined
            ? sql.literal("")
            : sql`WHERE h.rn <= ${fair.cap}::int - coalesce((SELECT f.c FROM flying f WHERE f.t = h.t), 0)`
        } ORDER BY h.rn, h.id) h
        CROSS JOIN LATERAL (
          SELECT ${parts.select} FROM ${T} o
          WHERE o.id = h.id AND o.created_at = h.created_at AND ${parts.claimable}
          FOR UPDATE OF o SKIP LOCKED) l
        LIMIT ${options.limit(limit)}`
    }
      )${runs ? runCtes(ts, limit, p, order, parts) : sql.literal("")} ${parts.finish}`
  }

  /**
   * With `Ordering.run` above 1: the CTE `locked` of the heads taken
   * (`locked_heads`) and the runs that follow them. The keys of the oldest
   * taken heads, at most as many as the room left (`run_keys`: a claim of
   * 250 that took 246 heads read all 246 keys' runs for 4 events, 6.5 ms of
   * 15, and the ordered drain at claims of 250 went from 62–66 % of the
   * unordered one to 68–71 %), are read on along `<outbox>_ordering_idx`
   * (one range scan per key, at most its share of the room left), up to the first event not
   * claimable now (not due, above the probe's `w`, past a held dead
   * letter: `bool_and` over the key's events in id order); the oldest of
   * those, up to the room, are locked in id order (`SKIP LOCKED`), and a
   * run keeps only its events up to the first it could not lock (its n-th
   * locked event must be its n-th candidate).
   *
   * **From the window first** (`window_runs`): the window is every due
   * claimable row of the slice up to its last id, so a key's rows there
   * after its head are the start of its run, once the rows not yet due
   * (`waiting`) and, with `hold`, dead letters between are ruled out by the
   * same rules. When those fill the room, they are the candidates: every
   * event the range scans would add has a higher id than all of them, so
   * the oldest up to the room are the same rows. Only when they fall short
   * do the range scans run (a one-time filter skips them otherwise). While
   * 1,000 keys drain, a sliced claim of 1,000 finds its 754 run events in
   * the window: 9.3–10.2 ms against 10.9–11.2 ms per claim (`EXPLAIN
   * ANALYZE` at 200,000 pending rows), the range scans being one descent
   * of each partition's index per key (5 partitions, 4 of them the empty
   * days ahead).
   */
  const runCtes = (
    ts: Fragment,
    limit: number,
    p: Probe,
    ordering: Ordering,
    parts: { readonly claimable: Fragment; readonly select: Fragment }
  ) => {
    const run = (ordering.run ?? 1) - 1
    const share = sql`least(${run}::int, ceil((SELECT n FROM room)::numeric / (SELECT keys FROM room))::int)`
    /** No dead letter of the run's key between its head `rk.id` and the event `alias.id` (with `hold`). */
    const held = (alias: string) =>
      ordering.deadLetter === "hold"
        ? sql`AND NOT EXISTS (
          SELECT 1 FROM ${T} d
          WHERE d.status = 'DEAD_LETTER' AND ${k("d")} = rk.k AND d.id > rk.id AND d.id < ${sql.literal(alias)}.id)`
        : sql.literal("")
    return sql`, taken_keys AS MATERIALIZED (
        SELECT h.k, h.id FROM heads h WHERE h.id IN (SELECT lh.id FROM locked_heads lh)
      ), room AS MATERIALIZED (
        SELECT t.n, greatest(least(t.taken, t.n), 1) AS keys
        FROM (SELECT (${limit}::int - count(*))::int AS n, count(*)::int AS taken FROM taken_keys) t
      ), run_keys AS MATERIALIZED (
        SELECT tk.k, tk.id FROM taken_keys tk ORDER BY tk.id LIMIT greatest((SELECT n FROM room), 0)
      ), window_runs AS MATERIALIZED (
        -- the rows not yet due in the same running bool_and: one ends its key's run (none is below a head)
        SELECT c.k, c.id, c.created_at, c.rn FROM (
          SELECT u.k, u.id, u.created_at, u.real,
                 bool_and(u.ok) OVER (PARTITION BY u.k ORDER BY u.id) AS prefix,
                 row_number() OVER (PARTITION BY u.k ORDER BY u.id) AS rn
          FROM (
            SELECT wi.k, wi.id, wi.created_at, (wi.id <= ${p.w ?? "0"}::bigint ${held("wi")}) AS ok, true AS real
            FROM win wi JOIN run_keys rk ON rk.k = wi.k AND wi.id > rk.id
            UNION ALL
            SELECT x.k, x.id, NULL::timestamptz, false, false FROM waiting x
          ) u
          WHERE (SELECT n FROM room) > 0 AND (SELECT count(*) FROM waiting) <= ${maxWaiting}
        ) c
        WHERE c.real AND c.prefix AND c.rn <= ${share}
        ORDER BY c.id
        LIMIT greatest((SELECT n FROM room), 0)
      ), candidates AS MATERIALIZED (
        SELECT wr.k, wr.id, wr.created_at, wr.rn FROM window_runs wr
        WHERE (SELECT count(*) FROM window_runs) >= (SELECT n FROM room)
        UNION ALL
        (SELECT c.k, c.id, c.created_at, c.rn FROM run_keys rk CROSS JOIN LATERAL (
          SELECT s.k, s.id, s.created_at, bool_and(s.ok) OVER (ORDER BY s.id) AS prefix,
                 row_number() OVER (ORDER BY s.id) AS rn
          FROM (
            SELECT ${k("o")} AS k, o.id, o.created_at,
                   ((o.available_at IS NULL OR o.available_at <= ${ts}) AND o.id <= ${p.w ?? "0"}::bigint ${held("o")}) AS ok
            FROM ${T} o
            WHERE o.status IN ('PENDING', 'FAILED') AND ${k("o")} = rk.k AND o.id > rk.id
            ORDER BY ${k("o")}, o.id
            LIMIT ${share}
          ) s
        ) c
        WHERE c.prefix AND (SELECT n FROM room) > 0 AND (SELECT count(*) FROM window_runs) < (SELECT n FROM room)
        ORDER BY c.id
        LIMIT greatest((SELECT n FROM room), 0))
      ), locked_runs AS MATERIALIZED (${lockAll("candidates", parts)}
      ), run_prefix AS (
        SELECT x.id FROM (
          SELECT c.id, c.rn, row_number() OVER (PARTITION BY c.k ORDER BY c.id) AS got
          FROM candidates c WHERE c.id IN (SELECT r.id FROM locked_runs r)
        ) x WHERE x.got = x.rn
      ), locked AS (
        SELECT * FROM locked_heads
        UNION ALL
        SELECT r.* FROM locked_runs r WHERE r.id IN (SELECT p.id FROM run_prefix p)
      )`
  }

  /**
   * The columns every row of a claim ends with: the probe run inside the
   * statement (`w`, `busy`) and the walk's next cursor.
   */
  const trailer = sql.literal("(SELECT w FROM next_probe), (SELECT busy FROM next_probe), (SELECT nf FROM cursor)")

  /**
   * Records the walk's next cursor and the statement's probe from a claim of
   * at most `limit` (each row's last three values), and returns the claimed
   * rows (the row of a claim that took nothing, which only carries them,
   * dropped).
   */
  const advance = <V extends ReadonlyArray<unknown>>(
    rows: ReadonlyArray<V>,
    limit: number,
    slice?: Ordering["slice"]
  ): ReadonlyArray<V> => {
    const first = rows[0]
    if (first === undefined) return rows
    const n = first.length
    const next = first[n - 1]
    if (next !== undefined && next !== null) cursors.set(sliceKey(slice), BigInt(next as string | bigint))
    const claimed = first[0] === null ? [] : rows
    carried = {
      probe: { w: first[n - 3] as bigint | string | null, busy: (first[n - 2] as string | null) ?? "{}" },
      full: claimed.length >= limit
    }
    return claimed
  }

  /** `SELECT NULL, ..., trailer`: the one row of a claim that took nothing (`columns` NULLs before the trailer). */
  const emptyRow = (columns: number) =>
    sql`${sql.literal(`SELECT ${Array.from({ length: columns }, () => "NULL").join(", ")}`)}, ${trailer}`

  return { probe, reusable, lastProbe, statement, advance, emptyRow, trailer }
}
