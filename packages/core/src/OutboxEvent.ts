/**
 * The outbox event model: what a producer publishes, what the relay claims,
 * and the statuses a row moves through.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"

/**
 * The lifecycle of an outbox row.
 *
 * - `PENDING`: waiting to be claimed (the column default, so plain-SQL inserts start here).
 * - `PROCESSING`: claimed under a lease (`locked_until`, `lock_token`).
 * - `COMPLETED`: delivered.
 * - `FAILED`: an attempt failed; claimable again once its backoff (`available_at`) passes.
 * - `DEAD_LETTER`: retries exhausted or a permanent failure; never claimed again.
 *
 * @category models
 * @since 0.1.0
 */
export const EventStatus = Schema.Literals(["PENDING", "PROCESSING", "COMPLETED", "FAILED", "DEAD_LETTER"])

/**
 * @category models
 * @since 0.1.0
 */
export type EventStatus = typeof EventStatus.Type

/**
 * What a producer passes to `Outbox.publish`.
 *
 * @category models
 * @since 0.1.0
 */
export interface EventInput {
  readonly aggregateType: string
  readonly aggregateId: string
  readonly eventType: string
  readonly payload: unknown
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
  /** Overrides the row's `max_retries` (default from config, then the column default 5). */
  readonly maxRetries?: number | undefined
  /**
   * A scheduled event: not delivered before this time (the row's
   * `available_at`). At most one of `availableAt` and `delay`.
   */
  readonly availableAt?: Date | undefined
  /**
   * A scheduled event: not delivered before this long after the publishing
   * transaction (a `Duration` input: `"10 minutes"`, milliseconds). At most
   * one of `availableAt` and `delay`.
   */
  readonly delay?: Duration.Input | undefined
  /**
   * The key whose events are delivered in order with `OUTBOX_ORDERING=key`
   * (the row's `ordering_key`). Default: `<aggregateType>:<aggregateId>`,
   * so one aggregate's events keep their order. Give one to order a wider
   * or narrower set (a customer's events across aggregates: `"customer:42"`).
   * At most 1,000 characters.
   */
  readonly orderingKey?: string | undefined
  /**
   * The tenant of tenant-fair claiming (`OUTBOX_FAIRNESS=tenant`: claims go
   * round-robin across tenants with work). Default: the metadata field
   * `tenant` when it is a string, else none (all such events are one
   * tenant, `""`). At most 200 characters.
   */
  readonly tenant?: string | undefined
}

/**
 * An event that passed validation: its payload and metadata are already
 * serialised to JSON text, so the store writes exactly what was checked.
 *
 * @category models
 * @since 0.1.0
 */
export interface ValidEvent {
  readonly aggregateType: string
  readonly aggregateId: string
  readonly eventType: string
  readonly payloadJson: string
  readonly metadataJson: string
  readonly maxRetries: number | undefined
  /** When it may be delivered: a time, a delay in milliseconds from the publishing transaction, or neither (at once). */
  readonly schedule?: { readonly at: Date } | { readonly delayMillis: number } | undefined
  /** The explicit ordering key; `undefined`: the default (`<aggregateType>:<aggregateId>`, set by the store). */
  readonly orderingKey?: string | undefined
  /** The explicit tenant; `undefined`: the default (`metadata.tenant`, computed by the store). */
  readonly tenant?: string | undefined
}

/**
 * The identity of a published row.
 *
 * @category models
 * @since 0.1.0
 */
export interface PublishedEvent {
  readonly id: bigint
  readonly trackingId: string
  readonly createdAt: Date
}

/**
 * The fencing identity of one claim of one row. Every transition after the
 * claim (renew, complete, retry, dead-letter, release) must present it; a row
 * re-claimed by someone else carries another `lockToken`, so a stale holder
 * changes nothing and gets `LeaseLost`.
 *
 * `createdAt` is carried so that updates can prune to the right partition.
 *
 * @category models
 * @since 0.1.0
 */
export interface Lease {
  readonly id: bigint
  readonly createdAt: Date
  readonly lockToken: bigint
}

/**
 * The default ordering key of an event: `<aggregateType>:<aggregateId>`, as
 * the stores compute it (PostgreSQL in a trigger, so plain-SQL producers get
 * it too).
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultOrderingKey = (event: { readonly aggregateType: string; readonly aggregateId: string }): string =>
  `${event.aggregateType}:${event.aggregateId}`

/**
 * The ordering key of an event: the explicit one, else the default
 * (`defaultOrderingKey`), as the stores keep it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const orderingKeyOf = (event: {
  readonly orderingKey?: string | undefined
  readonly aggregateType: string
  readonly aggregateId: string
}): string => event.orderingKey ?? defaultOrderingKey(event)

/**
 * The tenant of an event as the stores compute it for tenant-fair claiming:
 * the explicit one, else the metadata field `tenant` when it is a string,
 * else `""` (events without a tenant share one turn).
 *
 * @category constructors
 * @since 0.1.0
 */
export const effectiveTenant = (event: {
  readonly tenant?: string | undefined
  readonly metadata: Readonly<Record<string, unknown>>
}): string => event.tenant ?? (typeof event.metadata.tenant === "string" ? event.metadata.tenant : "")

/**
 * What every stored event carries, whatever its status.
 *
 * @category models
 * @since 0.1.0
 */
export interface EventData {
  readonly id: bigint
  readonly trackingId: string
  readonly aggregateType: string
  readonly aggregateId: string
  readonly eventType: string
  readonly payload: unknown
  readonly metadata: Readonly<Record<string, unknown>>
  /** Failed attempts so far (0 on first delivery). */
  readonly retryCount: number
  readonly maxRetries: number
  readonly createdAt: Date
  /**
   * The ordering key (`EventInput.orderingKey`, else
   * `<aggregateType>:<aggregateId>`). Stores that keep one return it;
   * `undefined` for rows written before the store had the column.
   */
  readonly orderingKey?: string | undefined
  /** The tenant (`EventInput.tenant`, else `metadata.tenant`, else `""`); stores that keep one return it. */
  readonly tenant?: string | undefined
}

/**
 * A claimed event, as handed to a sink.
 *
 * @category models
 * @since 0.1.0
 */
export interface OutboxEvent extends EventData, Lease {
  readonly lockedUntil: Date
}

/**
 * Extracts the fencing identity of an event.
 *
 * @category constructors
 * @since 0.1.0
 */
export const leaseOf = (event: Lease): Lease => ({
  id: event.id,
  createdAt: event.createdAt,
  lockToken: event.lockToken
})
