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
  /** Reads one row. */
  readonly get: (id: bigint) => Effect.Effect<Option.Option<EventRecord>, StoreError>
}>()("@outbox/core/OutboxStore") {}
