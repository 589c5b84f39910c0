/**
 * Maps `SqlError` to the port's `StoreError` at the store boundary.
 *
 * @internal
 */
import { StoreError } from "@outbox/core/OutboxError"
import * as Effect from "effect/Effect"
import type * as SqlError from "effect/sql/SqlError"

/** @internal */
export const fromSqlError = (operation: string) => (error: SqlError.SqlError): StoreError =>
  new StoreError({
    operation,
    message: `${operation}: ${error.reason._tag}${error.reason.message ? `: ${error.reason.message}` : ""}`,
    retryable: error.reason.isRetryable,
    cause: error
  })

/** @internal */
export const mapSqlError = (operation: string) =>
<A, R>(effect: Effect.Effect<A, SqlError.SqlError, R>): Effect.Effect<A, StoreError, R> =>
  Effect.mapError(effect, fromSqlError(operation))
