/**
 * An in-memory `OutboxStore` with the semantics of `PgOutboxStore`, for unit
 * tests of producers and of the relay without a database.
 *
 * **Semantics** (the same contract suite runs against both stores):
 *
 * - `withTransaction` buffers what its body publishes; the rows become
 *   visible, all at once, only when the body succeeds. A failed or
 *   interrupted body publishes nothing and its error surfaces unchanged.
 *   Nested transactions behave like savepoints: a failed inner body discards
 *   only its own rows.
 * - Ids are increasing `bigint`s handed out at publish time (like a
 *   sequence: a rolled-back transaction leaves a gap). Tracking ids are
 *   random UUIDs; `created_at` is the `Clock` time of the publish.
 * - `claim` takes PENDING rows and FAILED rows whose backoff has passed,
 *   oldest id first, stamps one fresh lock token per claim and a lease.
 * - Every later transition is fenced by lock token and `PROCESSING` status;
 *   leases that do not match are reported in `LeaseLost` and left unchanged,
 *   and the other leases of the same call are applied.
 * - `reap` returns every expired lease to PENDING.
 * - `claimInTransaction` locks rows (a set of ids, the row locks): both
 *   claims skip them, readers see them unchanged; `use`'s outcome is applied
 *   in one step when it succeeds, nothing when it fails, is interrupted or
 *   outlives `timeout` (a `StoreError`, like the server's bound).
 * - `completed: "delete"` (`makeWith`, `layerWith`): completing removes the
 *   row, as `PgOutboxStore` with `OUTBOX_COMPLETED=delete`.
 * - Every row keeps its ordering key (`EventInput.orderingKey`, else
 *   `<aggregateType>:<aggregateId>`) and returns it as `orderingKey`.
 * - An ordered claim (`ordering`, `OUTBOX_ORDERING=key`, either claim) takes
 *   only each key's *head* (its lowest-id row that is not COMPLETED, nor
 *   DEAD_LETTER unless `deadLetter: "hold"`), when it is PENDING or FAILED,
 *   due and unlocked; oldest head first, and with `run` above 1 then the
 *   events after each taken head (`Ordering.run`). A key is
 *   blocked while any of its rows is PROCESSING or locked by an open
 *   `claimInTransaction`, and while an open transaction of this store holds
 *   an unpublished row of the key with a lower id than the head (its id was
 *   drawn first, so it must be delivered first once it commits; PostgreSQL
 *   guards the same case).
 * - Every row keeps its tenant (`EventInput.tenant`, else the metadata field
 *   `tenant` when it is a string, else `""`: `effectiveTenant`) and returns
 *   it as `tenant`.
 * - A fair claim (`fairness`, `OUTBOX_FAIRNESS=tenant`, either claim) takes
 *   the tenants with at least one claimable row, in tenant order (JavaScript
 *   string order), starting after the last tenant the previous fair claim of
 *   this store visited and wrapping around, at most `maxTenants` (default
 *   64) of them and at most `limit`; each gets a share of
 *   `ceil(limit / tenants)` of its oldest claimable rows, until `limit`
 *   rows are taken. Unused shares are not handed on. The next fair claim
 *   starts after the last tenant that got rows (so a tenant the limit ran
 *   out before goes first). The cursor moves when the claim is made (a
 *   rolled-back `claimInTransaction` keeps it moved). With `ordering` too,
 *   the claim is ordered and takes the claimable heads tenant by tenant in
 *   turn (every tenant's oldest head, then every tenant's second, ..., the
 *   oldest first within a turn), then the runs (as `Fairness` documents;
 *   this store sees every head, so `maxTenants` does not apply there; with
 *   `maxInFlight`, heads only, each tenant's up to its room); a
 *   `maxTenants` under 1 counts as 1. With `maxInFlight`, a
 *   tenant with that many rows PROCESSING is left out of the turn, and one
 *   with fewer gets at most the room left; `claimInTransaction` refuses a
 *   cap (a `StoreError`), as PostgreSQL does.
 *
 * **Time**: every "now" comes from Effect's `Clock`, so `TestClock` drives
 * leases, reaping and backoff.
 *
 * **Concurrency**: each operation reads the clock, then applies its change
 * in one synchronous step, so concurrent fibers never see a half-applied
 * change and a row is never handed to two claimers (nor two events of one
 * ordering key to two ordered claimers).
 *
 * @since 0.1.0
 */
import { LeaseLost, StoreError } from "@outbox/core/OutboxError"
import {
  effectiveTenant,
  orderingKeyOf,
  type EventData,
  type EventStatus,
  type Lease,
  type OutboxEvent,
  type PublishedEvent,
  type ValidEvent
} from "@outbox/core/OutboxEvent"
import {
  type ClaimOptions,
  type EventRecord,
  type Fairness,
  inFlightCapRefusal,
  type Ordering,
  OutboxStore,
  type Publisher,
  type ReapResult,
  settleable,
  type TransactionClaimOptions,
  type TransactionOutcome
} from "@outbox/core/OutboxStore"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { randomUUID } from "node:crypto"

/** The column default of `max_retries`. */
const defaultMaxRetries = 5

/** The default of `Fairness.maxTenants`. */
const defaultMaxTenants = 64

interface Row {
  readonly id: bigint
  readonly trackingId: string
  readonly aggregateType: string
  readonly aggregateId: string
  readonly eventType: string
  /** Kept as JSON text and parsed on every read, so callers never share objects with the store. */
  readonly payloadJson: string
  readonly metadataJson: string
  readonly maxRetries: number
  readonly createdAt: number
  /** The explicit ordering key, else `<aggregateType>:<aggregateId>` (what PostgreSQL's trigger fills in). */
  readonly orderingKey: string
  /** The tenant of fair claims: `effectiveTenant` of the published event (explicit, else `metadata.tenant`, else `""`). */
  readonly tenant: string
  status: EventStatus
  retryCount: number
  processedAt: number | null
  availableAt: number | null
  lockedUntil: number | null
  lockToken: bigint | null
  lastError: string | null
}

/** The rows published by one (possibly nested) transaction, not yet visible. */
interface TransactionBuffer {
  readonly rows: Array<Row>
}

/** The open transactions of the current fiber, innermost per store. */
const OpenTransactions = Context.Reference<ReadonlyMap<symbol, TransactionBuffer>>(
  "@outbox/testing/MemoryOutboxStore/OpenTransactions",
  { defaultValue: () => new Map() }
)

/**
 * The slice (`Ordering.slice`) of `count` that an ordering key falls in: its
 * 32-bit FNV-1a hash, the hash space cut into `count` equal ranges.
 * PostgreSQL slices its own key hash the same way; which slice a key falls
 * in differs between the stores, and nothing depends on it.
 */
const sliceOf = (key: string, count: number): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return Math.floor(((h >>> 0) * count) / 2 ** 32)
}

/**
 * `heads` (in id order) tenant by tenant in turn, as an ordered fair claim
 * takes them: each one's rank within its tenant, then its id.
 */
const byTurn = (heads: ReadonlyArray<Row>): Array<Row> => {
  const seen = new Map<string, number>()
  return heads
    .map((row) => {
      const rank = (seen.get(row.tenant) ?? 0) + 1
      seen.set(row.tenant, rank)
      return { row, rank }
    })
    .sort((a, b) => a.rank - b.rank || byId(a.row, b.row))
    .map(({ row }) => row)
}

/** Marks an ordering key with a row in flight in `pickOrdered`. */
const blocked: unique symbol = Symbol("blocked")

const toDate = (ms: number | null): Date | null => ms === null ? null : new Date(ms)

const toData = (row: Row): EventData => ({
  id: row.id,
  trackingId: row.trackingId,
  aggregateType: row.aggregateType,
  aggregateId: row.aggregateId,
  eventType: row.eventType,
  payload: JSON.parse(row.payloadJson),
  metadata: JSON.parse(row.metadataJson),
  retryCount: row.retryCount,
  maxRetries: row.maxRetries,
  createdAt: new Date(row.createdAt),
  orderingKey: row.orderingKey,
  tenant: row.tenant
})

const toRecord = (row: Row): EventRecord => ({
  ...toData(row),
  status: row.status,
  processedAt: toDate(row.processedAt),
  availableAt: toDate(row.availableAt),
  lockedUntil: toDate(row.lockedUntil),
  lockToken: row.lockToken,
  lastError: row.lastError
})

const toEvent = (row: Row): OutboxEvent => ({
  ...toData(row),
  lockedUntil: new Date(row.lockedUntil!),
  lockToken: row.lockToken!
})

const byId = (a: Row, b: Row) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** Groups leases by lock token, in first-seen order (the order `PgOutboxStore` runs its statements in). */
const groupByToken = (leases: ReadonlyArray<Lease>) => {
  const groups = new Map<bigint, Array<Lease>>()
  for (const lease of leases) {
    const group = groups.get(lease.lockToken)
    if (group === undefined) groups.set(lease.lockToken, [lease])
    else group.push(lease)
  }
  return groups
}

/**
 * Options of `makeWith` / `layerWith`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** What completing does to a row: `keep` (status COMPLETED, the default) or `delete` (the row goes). */
  readonly completed?: "keep" | "delete" | undefined
}

/**
 * Builds an empty store with `options`. Each call gives an independent store.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeWith = (options: Options = {}): Effect.Effect<OutboxStore["Service"]> => Effect.sync(() => {
  const deleteCompleted = options.completed === "delete"
  /** Visible rows; kept in id order (see `ordered`). */
  let rows = new Map<bigint, Row>()
  /** False once a row was made visible after a row with a higher id (a later commit of an earlier id). */
  let inIdOrder = true
  let lastVisibleId = 0n
  let lastId = 0n
  let lastToken = 0n
  /** The last tenant a fair claim visited: the next fair claim starts at the first tenant after it (wrapping around). */
  let lastTenant: string | undefined
  /** Identifies this store's transactions in `OpenTransactions`. */
  const storeKey = Symbol("MemoryOutboxStore")
  /** Rows locked by an open `claimInTransaction` (PostgreSQL's row locks): both claims skip them. */
  const locked = new Set<bigint>()
  /**
   * The buffers of this store's open transactions (nested ones too), from
   * every fiber: their rows already have ids but are not visible yet. An
   * ordered claim reads them so that a row committed later with a lower id
   * is never overtaken by a higher id of its key.
   */
  const openBuffers = new Set<TransactionBuffer>()
  const claimable = (row: Row, now: number) =>
    (row.status === "PENDING" || row.status === "FAILED") &&
    (row.availableAt === null || row.availableAt <= now) &&
    !locked.has(row.id)

  const makeVisible = (row: Row) => {
    rows.set(row.id, row)
    if (row.id < lastVisibleId) inIdOrder = false
    else lastVisibleId = row.id
  }

  /** The visible rows in id order. */
  const ordered = (): Iterable<Row> => {
    if (!inIdOrder) {
      rows = new Map(Array.from(rows).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      inIdOrder = true
    }
    return rows.values()
  }

  /**
   * Writes into the innermost open transaction of this store in the current
   * fiber, like the PostgreSQL publisher writes on the transaction's
   * connection; outside any transaction the rows are visible at once (an
   * autocommitted INSERT).
   */
  const publish: Publisher = (events: ReadonlyArray<ValidEvent>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.flatMap(OpenTransactions, (open) =>
        Effect.sync((): ReadonlyArray<PublishedEvent> => {
          const buffer = open.get(storeKey)
          return events.map((event) => {
            const metadata: Readonly<Record<string, unknown>> = JSON.parse(event.metadataJson)
            const row: Row = {
              id: ++lastId,
              trackingId: randomUUID(),
              aggregateType: event.aggregateType,
              aggregateId: event.aggregateId,
              eventType: event.eventType,
              // parsed and serialised again, like the jsonb cast (whitespace is not kept)
              payloadJson: JSON.stringify(JSON.parse(event.payloadJson)),
              metadataJson: JSON.stringify(metadata),
              maxRetries: event.maxRetries ?? defaultMaxRetries,
              createdAt: now,
              orderingKey: orderingKeyOf(event),
              tenant: effectiveTenant({ tenant: event.tenant, metadata }),
              status: "PENDING",
              retryCount: 0,
              processedAt: null,
              availableAt: event.schedule === undefined
                ? null
                : "at" in event.schedule
                ? event.schedule.at.getTime()
                : now + event.schedule.delayMillis,
              lockedUntil: null,
              lockToken: null,
              lastError: null
            }
            if (buffer === undefined) makeVisible(row)
            else buffer.rows.push(row)
            return { id: row.id, trackingId: row.trackingId, createdAt: new Date(row.createdAt) }
          })
        })))

  /**
   * Runs `f` with a fresh buffer as this store's innermost transaction. On
   * success the buffer is merged into the enclosing transaction (a released
   * savepoint) or, at the top level, made visible (a commit); on failure or
   * interruption it is dropped (a rollback). While `f` runs the buffer is in
   * `openBuffers` (registered and removed uninterruptibly, so an interrupted
   * transaction cannot leave a key blocked).
   */
  const withTransaction = <A, E, R>(
    f: (publish: Publisher) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | StoreError, R> =>
    Effect.flatMap(OpenTransactions, (open) => {
      const parent = open.get(storeKey)
      const buffer: TransactionBuffer = { rows: [] }
      return Effect.uninterruptibleMask((restore) =>
        Effect.andThen(
          Effect.sync(() => openBuffers.add(buffer)),
          restore(f(publish).pipe(Effect.provideService(OpenTransactions, new Map(open).set(storeKey, buffer)))).pipe(
            Effect.onExit((exit) =>
              Effect.sync(() => {
                // one step: the rows leave the registry as they reach the parent or become visible
                openBuffers.delete(buffer)
                if (Exit.isFailure(exit)) return
                if (parent !== undefined) parent.rows.push(...buffer.rows)
                else buffer.rows.forEach(makeVisible)
              })
            )
          )
        )
      )
    })

  /** Each tenant's rows PROCESSING: what a per-tenant cap (`Fairness.maxInFlight`) counts. */
  const processingByTenant = (): Map<string, number> => {
    const counts = new Map<string, number>()
    for (const row of rows.values()) {
      if (row.status === "PROCESSING") counts.set(row.tenant, (counts.get(row.tenant) ?? 0) + 1)
    }
    return counts
  }

  /**
   * The rows an ordered claim takes (see `Ordering`), in one pass over the
   * visible rows: each key's head, unless the key is blocked by a row in
   * flight (PROCESSING, or locked by an open `claimInTransaction`) or by an
   * uncommitted row of a lower id; then the claimable heads, oldest first,
   * up to `limit`.
   */
  const pickOrdered = (
    ordering: Ordering,
    limit: number,
    now: number,
    fair = false,
    maxInFlight?: number | undefined
  ): Array<Row> => {
    const hold = ordering.deadLetter === "hold"
    /** The lowest uncommitted id of each key. */
    const uncommitted = new Map<string, bigint>()
    for (const buffer of openBuffers) {
      for (const row of buffer.rows) {
        const lowest = uncommitted.get(row.orderingKey)
        if (lowest === undefined || row.id < lowest) uncommitted.set(row.orderingKey, row.id)
      }
    }
    /** Per key: its head, or `blocked` once a row of it is in flight. */
    const keys = new Map<string, Row | typeof blocked>()
    /** The heads, in id order (the order they are found in). */
    const heads: Array<Row> = []
    const slice = ordering.slice !== undefined && ordering.slice.count > 1 ? ordering.slice : undefined
    for (const row of ordered()) {
      if (slice !== undefined && sliceOf(row.orderingKey, slice.count) !== slice.index) continue
      const state = keys.get(row.orderingKey)
      if (state === blocked) continue
      if (row.status === "PROCESSING" || locked.has(row.id)) {
        keys.set(row.orderingKey, blocked)
      } else if (
        state === undefined && row.status !== "COMPLETED" && (hold || row.status !== "DEAD_LETTER")
      ) {
        keys.set(row.orderingKey, row)
        heads.push(row)
      }
    }
    const free = heads.filter((head) => {
      if (keys.get(head.orderingKey) !== head || !claimable(head, now)) return false
      const lowest = uncommitted.get(head.orderingKey)
      return lowest === undefined || lowest > head.id
    })
    // with fairness, tenant by tenant in turn: every tenant's oldest head, then every tenant's second, ...;
    // under a cap, each tenant's heads up to its room (its rows PROCESSING counted)
    const turned = fair ? byTurn(free) : free
    const inFlight = maxInFlight === undefined ? undefined : processingByTenant()
    const capped = inFlight === undefined ? turned : turned.filter((head) => {
      const used = inFlight.get(head.tenant) ?? 0
      if (used >= maxInFlight!) return false
      inFlight.set(head.tenant, used + 1)
      return true
    })
    const picked = capped.slice(0, Math.max(limit, 0))
    const left = limit - picked.length
    // a capped claim takes heads only: a run's events would all be in flight at once
    const run = maxInFlight === undefined ? ordering.run ?? 1 : 1
    if (run <= 1 || left <= 0 || picked.length === 0) return picked.sort(byId)
    // the runs (`Ordering.run`): each taken head's next events, up to an equal share of the room, each run
    // up to the first event not claimable now; then the oldest of them, up to the room
    // a room smaller than the heads taken goes to the oldest heads' keys (as PgOutboxStore reads only theirs)
    const runHeads = picked.length > left ? [...picked].sort(byId).slice(0, left) : picked
    const share = Math.min(run - 1, Math.ceil(left / runHeads.length))
    const runs = new Map<string, { readonly head: Row; readonly rows: Array<Row>; open: boolean }>()
    for (const head of runHeads) runs.set(head.orderingKey, { head, rows: [], open: true })
    for (const row of ordered()) {
      const r = runs.get(row.orderingKey)
      if (r === undefined || !r.open || row.id <= r.head.id) continue
      if (row.status === "DEAD_LETTER") {
        if (hold) r.open = false
        continue
      }
      if (row.status !== "PENDING" && row.status !== "FAILED") continue
      const lowest = uncommitted.get(row.orderingKey)
      if (r.rows.length >= share || !claimable(row, now) || (lowest !== undefined && lowest < row.id)) r.open = false
      else r.rows.push(row)
    }
    const followers = Array.from(runs.values()).flatMap((r) => r.rows).sort((a, b) => (a.id < b.id ? -1 : 1))
    // in id order, as PostgreSQL returns a claim: a key's run after its head
    return [...picked, ...followers.slice(0, left)].sort((a, b) => (a.id < b.id ? -1 : 1))
  }

  /**
   * The rows a fair claim takes (see `Fairness`): the tenants with a
   * claimable row, in tenant order from the first one after `lastTenant`
   * (wrapping around), at most `maxTenants` and at most `limit` of them;
   * from each, its oldest claimable rows up to an equal share of `limit`
   * (`ceil(limit / tenants)`), until `limit` rows are taken. Moves
   * `lastTenant` to the last tenant that got rows. The rows come back in id
   * order.
   */
  const pickFair = (maxTenants: number, maxInFlight: number | undefined, limit: number, now: number): Array<Row> => {
    if (limit === 0) return []
    /** Each tenant's rows PROCESSING, when a cap applies. */
    const inFlight = maxInFlight === undefined ? new Map<string, number>() : processingByTenant()
    /** Each tenant's oldest claimable rows (no tenant can take more than `limit`, nor than its room under the cap). */
    const byTenant = new Map<string, Array<Row>>()
    for (const row of ordered()) {
      if (!claimable(row, now)) continue
      const room = maxInFlight === undefined ? limit : Math.min(limit, maxInFlight - (inFlight.get(row.tenant) ?? 0))
      if (room <= 0) continue
      const candidates = byTenant.get(row.tenant)
      if (candidates === undefined) byTenant.set(row.tenant, [row])
      else if (candidates.length < room) candidates.push(row)
    }
    if (byTenant.size === 0) return []
    const tenants = Array.from(byTenant.keys()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const after = lastTenant
    const next = after === undefined ? 0 : tenants.findIndex((tenant) => tenant > after)
    const from = next === -1 ? 0 : next
    // no more tenants than rows: each of them gets at least one
    const visited = Math.min(maxTenants, tenants.length, limit)
    const share = Math.max(1, Math.ceil(limit / visited))
    const picked: Array<Row> = []
    for (let i = 0; i < visited && picked.length < limit; i++) {
      const tenant = tenants[(from + i) % tenants.length]!
      picked.push(...byTenant.get(tenant)!.slice(0, Math.min(share, limit - picked.length)))
      // only a tenant that got rows counts as visited: one the limit ran out before goes first next time (no starving it)
      lastTenant = tenant
    }
    return picked.sort(byId)
  }

  /**
   * The rows a claim takes: `pickOrdered` with `ordering`, `pickFair` with
   * `fairness`, else the claimable rows in id order. A `StoreError` (nothing
   * taken) for a negative `limit` (rounded like PostgreSQL's LIMIT), and
   * for a per-tenant cap in `claimInTransaction`. With both `ordering` and
   * `fairness`, the ordered claim takes its heads tenant by tenant.
   */
  const pick = (
    operation: "claim" | "claimInTransaction",
    options: {
      readonly limit: number
      readonly ordering?: Ordering | undefined
      readonly fairness?: Fairness | undefined
    },
    now: number
  ): Array<Row> | StoreError => {
    const refuse = (message: string) => new StoreError({ operation, message: `${operation}: ${message}`, retryable: false })
    const limit = Math.round(options.limit)
    if (!(limit >= 0)) return refuse("LIMIT must not be negative")
    const rawCap = options.fairness?.maxInFlight
    if (rawCap !== undefined && operation === "claimInTransaction") return refuse(inFlightCapRefusal)
    const cap = rawCap === undefined ? undefined : Math.max(1, Math.trunc(rawCap) || 1)
    if (options.ordering !== undefined) return pickOrdered(options.ordering, limit, now, options.fairness !== undefined, cap)
    if (options.fairness !== undefined) {
      const maxTenants = Math.max(1, Math.trunc(options.fairness.maxTenants ?? defaultMaxTenants) || 1)
      return pickFair(maxTenants, cap, limit, now)
    }
    const picked: Array<Row> = []
    for (const row of ordered()) {
      if (picked.length >= limit) break
      if (claimable(row, now)) picked.push(row)
    }
    return picked
  }

  const claim = (options: ClaimOptions) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<OutboxEvent>, StoreError> => {
        const claimed = pick("claim", options, now)
        if (claimed instanceof StoreError) return Effect.fail(claimed)
        if (claimed.length === 0) return Effect.succeed([])
        const token = ++lastToken
        const lockedUntil = now + Duration.toMillis(options.leaseDuration)
        for (const row of claimed) {
          row.status = "PROCESSING"
          row.lockToken = token
          row.lockedUntil = lockedUntil
        }
        return Effect.succeed(claimed.map(toEvent))
      }))

  /**
   * Applies `update` to every lease that still holds its row (same lock
   * token, still PROCESSING, matching `createdAt`). As the port documents,
   * the other leases are applied even when some are fenced; the failure
   * lists every fenced id, with the first lock token that had one.
   */
  const fenced = (
    operation: LeaseLost["operation"],
    leases: ReadonlyArray<Lease>,
    update: (row: Row, now: number) => void
  ): Effect.Effect<void, LeaseLost | StoreError> =>
    leases.length === 0 ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        const lost: Array<bigint> = []
        let lostToken: bigint | undefined
        for (const [token, group] of groupByToken(leases)) {
          // the created_at window PgOutboxStore prunes partitions with (±1 ms)
          let from = Infinity
          let to = -Infinity
          for (const lease of group) {
            from = Math.min(from, lease.createdAt.getTime() - 1)
            to = Math.max(to, lease.createdAt.getTime() + 1)
          }
          const ids = Array.from(new Set(group.map((lease) => lease.id)))
          for (const id of ids) {
            const row = rows.get(id)
            if (
              row !== undefined && row.lockToken === token && row.status === "PROCESSING" &&
              row.createdAt >= from && row.createdAt < to
            ) {
              update(row, now)
            } else {
              lost.push(id)
              if (lostToken === undefined) lostToken = token
            }
          }
        }
        return lostToken === undefined
          ? Effect.void
          : Effect.fail(new LeaseLost({ operation, eventIds: lost, lockToken: lostToken }))
      }))

  const clearLease = (row: Row) => {
    row.lockedUntil = null
    row.lockToken = null
  }

  const renew = (leases: ReadonlyArray<Lease>, leaseDuration: Duration.Duration) =>
    fenced("renew", leases, (row, now) => {
      row.lockedUntil = now + Duration.toMillis(leaseDuration)
    })

  const completeRow = (row: Row, now: number) => {
    if (deleteCompleted) {
      rows.delete(row.id)
      return
    }
    row.status = "COMPLETED"
    row.processedAt = now
    clearLease(row)
  }

  const complete = (leases: ReadonlyArray<Lease>) => fenced("complete", leases, completeRow)

  /** Applies a transaction-scoped claim's outcome, in one step (the commit). */
  const settle = (outcome: TransactionOutcome, now: number) => {
    for (const key of outcome.completed) completeRow(rows.get(key.id)!, now)
    for (const { error, event } of outcome.deadLettered) {
      const row = rows.get(event.id)!
      row.status = "DEAD_LETTER"
      row.retryCount += 1
      row.lastError = error
      row.processedAt = now
    }
    for (const { delay, error, event } of outcome.retried) {
      const row = rows.get(event.id)!
      row.status = "FAILED"
      row.retryCount += 1
      row.lastError = error
      row.availableAt = now + Duration.toMillis(delay)
    }
  }

  const claimInTransaction = <E, R>(
    options: TransactionClaimOptions,
    use: (events: ReadonlyArray<OutboxEvent>) => Effect.Effect<TransactionOutcome, E, R>
  ): Effect.Effect<ReadonlyArray<OutboxEvent>, E | StoreError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const picked = pick("claimInTransaction", options, now)
        if (picked instanceof StoreError) return Effect.fail(picked)
        if (picked.length === 0) return Effect.succeed([])
        for (const row of picked) locked.add(row.id)
        const lockedUntil = new Date(now + Duration.toMillis(options.timeout))
        const events = picked.map((row): OutboxEvent => ({ ...toData(row), lockedUntil, lockToken: 0n }))
        return restore(use(events).pipe(
          Effect.timeoutOrElse({
            duration: options.timeout,
            orElse: () =>
              Effect.fail(
                new StoreError({
                  operation: "claimInTransaction",
                  message: `claimInTransaction: the batch was not settled within ${Duration.format(options.timeout)}; rolled back`,
                  retryable: true
                })
              )
          })
        )).pipe(
          Effect.flatMap((outcome) =>
            Effect.map(Clock.currentTimeMillis, (at) => {
              settle(settleable(events, outcome), at)
              return events
            })
          ),
          Effect.ensuring(Effect.sync(() => {
            for (const row of picked) locked.delete(row.id)
          }))
        )
      })
    )

  const retry = (lease: Lease, options: { readonly error: string; readonly delay: Duration.Duration }) =>
    fenced("retry", [lease], (row, now) => {
      row.status = "FAILED"
      row.retryCount += 1
      row.lastError = options.error
      row.availableAt = now + Duration.toMillis(options.delay)
      clearLease(row)
    })

  const deadLetter = (lease: Lease, options: { readonly error: string }) =>
    fenced("deadLetter", [lease], (row, now) => {
      row.status = "DEAD_LETTER"
      row.retryCount += 1
      row.lastError = options.error
      row.processedAt = now
      clearLease(row)
    })

  const release = (leases: ReadonlyArray<Lease>) =>
    fenced("release", leases, (row) => {
      row.status = "PENDING"
      clearLease(row)
    })

  const reap = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.sync((): ReapResult => {
      const requeued: Array<bigint> = []
      const deadLettered: Array<bigint> = []
      for (const row of ordered()) {
        if (row.status === "PROCESSING" && row.lockedUntil !== null && row.lockedUntil < now) {
          const exhausted = row.retryCount >= row.maxRetries
          row.lastError = `lease expired at ${new Date(row.lockedUntil).toISOString()} and was reaped` +
            (exhausted ? `: dead-lettered after ${row.retryCount + 1} attempts` : "")
          row.retryCount += 1
          row.status = exhausted ? "DEAD_LETTER" : "PENDING"
          if (exhausted) row.processedAt = now
          clearLease(row)
          ;(exhausted ? deadLettered : requeued).push(row.id)
        }
      }
      return { requeued, deadLettered }
    }))

  const get = (id: bigint) =>
    Effect.sync((): Option.Option<EventRecord> => {
      const row = rows.get(id)
      return row === undefined ? Option.none() : Option.some(toRecord(row))
    })

  return OutboxStore.of({ withTransaction, claim, renew, complete, retry, deadLetter, release, reap, claimInTransaction, get })
})

/**
 * Builds an empty store (completed rows kept). Each run gives an independent store.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<OutboxStore["Service"]> = makeWith()

/**
 * A fresh, empty in-memory store per build of the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<OutboxStore> = Layer.effect(OutboxStore, make)

/**
 * A fresh, empty in-memory store with `options` per build of the layer
 * (`{ completed: "delete" }`: the store of `OUTBOX_COMPLETED=delete`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWith = (options: Options): Layer.Layer<OutboxStore> => Layer.effect(OutboxStore, makeWith(options))
