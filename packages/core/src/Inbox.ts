/**
 * The idempotency store (inbox) port: consumers record which tracking ids
 * they processed, so an at-least-once redelivery has no second effect.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { StoreError } from "./OutboxError.ts"

/**
 * The outcome of `Inbox.process`.
 *
 * @category models
 * @since 0.1.0
 */
export type ProcessResult<A> =
  | { readonly _tag: "Processed"; readonly value: A }
  | { readonly _tag: "Duplicate" }

/**
 * @category services
 * @since 0.1.0
 */
export class Inbox extends Context.Service<Inbox, {
  readonly isProcessed: (consumer: string, trackingId: string) => Effect.Effect<boolean, StoreError>
  /** Records the id; returns false if it was already recorded. */
  readonly markProcessed: (consumer: string, trackingId: string) => Effect.Effect<boolean, StoreError>
  /**
   * Runs `effect` and records `trackingId` for `consumer` in one transaction.
   * A duplicate (already recorded, or recorded concurrently) does not run it.
   * If `effect` fails, nothing is recorded and its error surfaces unchanged.
   */
  readonly process: <A, E, R>(
    consumer: string,
    trackingId: string,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<ProcessResult<A>, E | StoreError, R>
}>()("@outbox/core/Inbox") {}
