/**
 * The storage port of the outbox: everything the relay and the publisher
 * need from a store. Implemented for PostgreSQL by `@outbox/sql`'s
 * `PgOutboxStore` and in memory by `@outbox/testing`'s `MemoryOutboxStore`;
 * both pass the same contract suite.
 *
 * **Time**: the port takes durations, never absolute timestamps. Each store
 * resolves "now" from its own time source (the database clock in production,
 * Effect's `Clock` in tests), so lease expiry, heartbeats, reaping and backoff
 * all compare against one clock.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import type * as Option from "effect/Option"
import type { LeaseLost, StoreError } from "./OutboxError.ts"
import type { EventData, EventStatus, Lease, OutboxEvent, PublishedEvent, ValidEvent } from "./OutboxEvent.ts"

/**
 * Writes validated events in the transaction it was handed out for.
 *
 * @category models
 * @since 0.1.0
 */
export type Publisher = (events: ReadonlyArray<ValidEvent>) => Effect.Effect<ReadonlyArray<PublishedEvent>, StoreError>

/**
 * The full state of a row, for inspection (tests, CLI, health).
 *
 * @category models
 * @since 0.1.0
 */
export interface EventRecord extends EventData {
  readonly status: EventStatus
  readonly processedAt: Date | null
  readonly availableAt: Date | null
  readonly lockedUntil: Date | null
  readonly lockToken: bigint | null
  readonly lastError: string | null
}

/**
 * What one reap recovered. A reaped lease counts as a failed attempt (its
 * holder crashed or stalled): the row goes back to PENDING with
 * `retry_count + 1`, or to DEAD_LETTER once it had already used
 * `max_retries` retries, so an event that crashes every worker that takes
 * it cannot loop forever.
 *
 * @category models
 * @since 0.1.0
 */
export interface ReapResult {
  /** Ids returned to PENDING. */
  readonly requeued: ReadonlyArray<bigint>
  /** Ids dead-lettered because their attempts were used up. */
  readonly deadLettered: ReadonlyArray<bigint>
}

/**
 * Options of one claim.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClaimOptions {
  /** Most rows to claim. */
  readonly limit: number
  /** Lease length: the row is reapable once it passes without a renewal. */
  readonly leaseDuration: Duration.Duration
  /** Per-key ordering (`OUTBOX_ORDERING=key`); `undefined`: claim in id order, keys ignored. */
  readonly ordering?: Ordering | undefined
  /** Tenant-fair claiming (`OUTBOX_FAIRNESS=tenant`); `undefined`: oldest first, tenants ignored. */
  readonly fairness?: Fairness | undefined
}

/**
 * A claim fair across tenants (`OUTBOX_FAIRNESS=tenant`): the claim takes
 * the tenants that have due work (`effectiveTenant`) in turn, from a cursor
 * that moves on between claims, at most `maxTenants` of them, and gives each
 * an equal share of `limit` (at least one), each tenant's oldest due events
 * first. So a tenant with a backlog of 100,000 events takes about
 * `limit / tenants` per claim, and another tenant's new event is claimed by
 * the next claim, not after the backlog. Shares one tenant does not use are
 * not handed to the others within the claim (the next claim evens it out).
 * With `ordering` too, the claim is ordered (heads and runs, as `Ordering`
 * says) and takes its heads tenant by tenant in turn: every tenant's oldest
 * claimable head, then every tenant's second, ..., the oldest first within a
 * turn; besides the heads an ordered claim finds by age, it looks at the
 * oldest due events of up to `maxTenants` tenants in turn (PostgreSQL), so
 * another tenant's new event is still claimed by the next claim. With
 * `maxInFlight` too, an ordered claim takes heads only (a run's events would
 * all be in flight at once), each tenant's up to its room under the cap.
 *
 * @category models
 * @since 0.1.0
 */
export interface Fairness {
  /**
   * Most tenants one claim visits (default 64): with more tenants with
   * work, the next claim goes on from where this one stopped.
   */
  readonly maxTenants?: number | undefined
  /**
   * Most events of one tenant leased at once (PROCESSING), across every
   * worker and relay process; `undefined`: no cap. A tenant at its cap gets
   * no share of a claim until some of its events settle, and one below it
   * at most the room left, so a tenant whose events are slow to deliver
   * (a slow webhook) cannot hold every worker. Lease claims only: a claim
   * in a transaction (`claimInTransaction`) with a cap is refused, since
   * rows locked by other transactions cannot be counted. A lease that ran
   * out and is not reaped yet still counts.
   */
  readonly maxInFlight?: number | undefined
}

/**
 * Why a claim in a transaction (`claimInTransaction`) refuses
 * `Fairness.maxInFlight`: every store says it the same way.
 *
 * @category constants
 * @since 0.1.0
 */
export const inFlightCapRefusal =
  "a per-tenant in-flight cap (Fairness.maxInFlight, OUTBOX_FAIRNESS_MAX_IN_FLIGHT) needs lease claims (OUTBOX_CLAIM_MODE=lease): rows that other transactions hold locked cannot be counted"

/**
 * A claim in per-key order (`OUTBOX_ORDERING=key`). Each ordering key's
 * events are claimed strictly in id order, at most one in flight per key,
 * whoever claims (any worker of any process):
 *
 * - a key's *head* is its lowest-id event that is not COMPLETED (nor
 *   DEAD_LETTER, unless `deadLetter` is `hold`); only a head is claimable,
 *   and only when it is PENDING or FAILED and due;
 * - so a key with an event PROCESSING, or whose head waits out a backoff or
 *   a schedule, is *blocked*: none of its events is claimed, while every
 *   other key's head is;
 * - one claim takes each key's head, oldest head first, and with `run`
 *   above 1 also the events that follow a taken head (a *run*).
 *
 * PostgreSQL also guards against a transaction that drew a lower id of the
 * key and has not committed yet (see `PgOutboxStore`).
 *
 * @category models
 * @since 0.1.0
 */
export interface Ordering {
  /**
   * A dead-lettered head: `continue` (the default) lets the key's next
   * event go; `hold` blocks the key until the dead letter is redriven (or
   * deleted). Why `continue` by default: a dead letter is an event the
   * operator decided (through the retry policy) to stop trying, and holding
   * would turn one poison event into an outage of its key that lasts until
   * somebody acts; `hold` is for consumers for which a gap is worse than a
   * stall (a ledger, a state machine that cannot skip a transition).
   */
  readonly deadLetter: "continue" | "hold"
  /**
   * Most events of one key a claim takes (default 1: heads only). Above 1,
   * once the heads are taken the claim fills the room left under `limit`
   * with the events that follow each taken head in id order: at most
   * `run - 1` and at most an equal share of the room per key
   * (`ceil(room / keys)`), so every key with a free head gets its head
   * before any key gets a second event. When the room is smaller than the
   * heads taken, it goes to the keys of the oldest heads, one event each:
   * a claim then reads as many runs as it has room for, not every taken
   * key's (on PostgreSQL a claim of 250 read 246 runs for 4 events, 6.5 of
   * its 15 ms). A run stops before the first event
   * that is not claimable now: not due (a backoff, a schedule), above what
   * the claim may see of its key (an uncommitted lower id), or, with
   * `hold`, past a dead letter.
   *
   * **Why**: heads only, one key's events go one per claim → deliver →
   * complete round (~4.6 ms on PostgreSQL: 219 events/s over one key), and a
   * drain over few keys is bound by the rounds.
   *
   * **The caller's duty**: a run's events are all in flight at once, so
   * the caller delivers them in id order, one after the other, and once one
   * fails (a retry, a dead letter, a lost lease) it must not deliver the
   * rest of that key's run but give their leases back (`release`): else a
   * later event would reach the consumer before its predecessor's retry.
   */
  readonly run?: number | undefined
  /**
   * Only keys of this slice (default: all): the keys' hash space cut into
   * `count` equal ranges, of which this claim looks at the `index`-th
   * (0-based). The workers of one relay draining a backlog each claim their
   * own slice, so their claims read disjoint rows and run side by side;
   * without slices two ordered claims at once read the same oldest rows and
   * the later one finds the heads the earlier one locked. A slice changes
   * which keys a claim considers, never the ordering rules within a key:
   * any slicing is correct, and a store may ignore it.
   */
  readonly slice?: { readonly index: number; readonly count: number } | undefined
}

/**
 * The identity of a row in a transaction-scoped claim's outcome: its id, and
 * `createdAt`, which prunes the settling statement to the right partitions.
 *
 * @category models
 * @since 0.1.0
 */
export type EventKey = Pick<EventData, "id" | "createdAt">

/**
 * Options of one transaction-scoped claim (`claimInTransaction`).
 *
 * @category models
 * @since 0.1.0
 */
export interface TransactionClaimOptions {
  /** Most rows to lock. */
  readonly limit: number
  /** Per-key ordering, as in `ClaimOptions`. */
  readonly ordering?: Ordering | undefined
  /** Tenant-fair claiming, as in `ClaimOptions`. */
  readonly fairness?: Fairness | undefined
  /**
   * The longest the transaction may stay open. `use` must return within it;
   * if it does not, it is interrupted and the transaction rolled back. On
   * PostgreSQL the server enforces it too (`statement_timeout`,
   * `idle_in_transaction_session_timeout`, and `transaction_timeout` from
   * PostgreSQL 17), so a stalled process cannot hold the rows, or pin the
   * xmin horizon, for longer than about this (plus a second of margin).
   */
  readonly timeout: Duration.Duration
}

/**
 * How the events of one transaction-scoped claim are settled, in the same
 * transaction. Every event not listed stays as it was: claimable at once, no
 * attempt counted. An event listed twice is settled by its first listing, in
 * the order `completed`, `deadLettered`, `retried`; an event this claim did
 * not lock is ignored.
 *
 * @category models
 * @since 0.1.0
 */
export interface TransactionOutcome {
  /** Delivered: COMPLETED (or deleted, with a store that deletes completed rows). */
  readonly completed: ReadonlyArray<EventKey>
  /** Failed attempts: FAILED, `retry_count + 1`, `last_error`, invisible for `delay` (as `retry`). */
  readonly retried: ReadonlyArray<{ readonly event: EventKey; readonly error: string; readonly delay: Duration.Duration }>
  /** Final failures: DEAD_LETTER, `retry_count + 1`, `last_error` (as `deadLetter`). */
  readonly deadLettered: ReadonlyArray<{ readonly event: EventKey; readonly error: string }>
}

/**
 * `outcome` as the stores apply it: only events of `claimed`, each once
 * (first listing wins, in the order `completed`, `deadLettered`, `retried`).
 * Shared by the stores so that they agree.
 *
 * @category combinators
 * @since 0.1.0
 */
export const settleable = (
  claimed: ReadonlyArray<{ readonly id: bigint }>,
  outcome: TransactionOutcome
): TransactionOutcome => {
  const open = new Set<bigint>()
  for (const event of claimed) open.add(event.id)
  const take = (key: EventKey) => open.delete(key.id)
  const completed = outcome.completed.filter(take)
  const deadLettered = outcome.deadLettered.filter((f) => take(f.event))
  const retried = outcome.retried.filter((f) => take(f.event))
  return { completed, deadLettered, retried }
}

/**
 * The outbox storage port.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxStore extends Context.Service<OutboxStore, {
  /**
   * Runs `f` in a store transaction and hands it a publisher bound to that
   * transaction. Failures of `f` roll back everything, including what was
   * published, and surface unchanged; only the store's own failures become
   * `StoreError`.
   */
  readonly withTransaction: <A, E, R>(
    f: (publish: Publisher) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | StoreError, R>
  /**
   * Claims up to `limit` claimable rows (PENDING, or FAILED whose backoff has
   * passed), oldest id first, skipping rows locked by concurrent claimers.
   * The claimed rows get one fresh lock token and a lease of `leaseDuration`.
   */
  readonly claim: (options: ClaimOptions) => Effect.Effect<ReadonlyArray<OutboxEvent>, StoreError>
  /** Extends the leases; the leases it could not renew are reported in `LeaseLost` (the others are renewed). */
  readonly renew: (
    leases: ReadonlyArray<Lease>,
    leaseDuration: Duration.Duration
  ) => Effect.Effect<void, LeaseLost | StoreError>
  /** Marks the events COMPLETED; fenced leases are reported in `LeaseLost` (the others are completed). */
  readonly complete: (leases: ReadonlyArray<Lease>) => Effect.Effect<void, LeaseLost | StoreError>
  /** Records a failed attempt: FAILED, `retry_count + 1`, `last_error`, invisible for `delay`. */
  readonly retry: (
    lease: Lease,
    options: { readonly error: string; readonly delay: Duration.Duration }
  ) => Effect.Effect<void, LeaseLost | StoreError>
  /** Records a final failure: DEAD_LETTER, `retry_count + 1`, `last_error`. */
  readonly deadLetter: (lease: Lease, options: { readonly error: string }) => Effect.Effect<void, LeaseLost | StoreError>
  /** Gives leases back without counting an attempt (graceful shutdown): PENDING again. */
  readonly release: (leases: ReadonlyArray<Lease>) => Effect.Effect<void, LeaseLost | StoreError>
  /**
   * Recovers every expired lease, counting it as an attempt: PENDING again,
   * or DEAD_LETTER when `retry_count` had reached `max_retries`.
   */
  readonly reap: Effect.Effect<ReapResult, StoreError>
  /**
   * The transaction-scoped claim (`OUTBOX_CLAIM_MODE=transaction`): opens a
   * transaction, locks up to `limit` claimable rows (the rows `claim` would
   * take, oldest id first) with `FOR UPDATE SKIP LOCKED`, hands them to
   * `use` and, in the same transaction, settles them as `use`'s outcome says
   * (`TransactionOutcome`), then commits. Returns the locked events (none:
   * `use` was not called).
   *
   * **Why**: the row lock is the lease. Nothing is written at claim time (no
   * PROCESSING, no lock token, no heartbeat, no reaper), so a row costs one
   * write instead of two (one UPDATE, or one DELETE with a store that deletes
   * completed rows), and a crash releases the rows by itself: the
   * transaction rolls back and they are claimable again at once (no attempt
   * is counted for them).
   *
   * **Details**: the events carry `lockToken` 0 (no lease) and
   * `lockedUntil` = claim time + `timeout`. Concurrent claims (of either
   * kind) skip the locked rows; readers see them unchanged. If `use` fails,
   * is interrupted or outlives `timeout`, the transaction rolls back: no row
   * changes, `use`'s error surfaces unchanged, a timeout is a `StoreError`.
   * `use` runs outside the store's transaction (a sink that writes to the
   * same database uses a connection of its own).
   *
   * **Gotchas**: the transaction holds the xmin horizon back while it is
   * open (vacuum cannot reclaim dead tuples younger than it), hence the
   * bound. Not for slow sinks: `use` must finish within `timeout`. Not inside
   * another transaction.
   */
  readonly claimInTransaction: <E, R>(
    options: TransactionClaimOptions,
    use: (events: ReadonlyArray<OutboxEvent>) => Effect.Effect<TransactionOutcome, E, R>
  ) => Effect.Effect<ReadonlyArray<OutboxEvent>, E | StoreError, R>
  /** Reads one row. */
  readonly get: (id: bigint) => Effect.Effect<Option.Option<EventRecord>, StoreError>
}>()("@outbox/core/OutboxStore") {}
