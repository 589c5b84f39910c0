/**
 * The one mapping from `SqlError` to a module's own error, in the spirit of
 * Effect's `refail`: a module passes its error's constructor once and gets a
 * mapper per operation. Every module builds the message the same way,
 * `<operation>: <reason tag>: <text>`, and keeps the `SqlError` as `cause`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlError from "effect/sql/SqlError"

/**
 * What a module's error is built from.
 *
 * @internal
 */
export interface Fields {
  readonly operation: string
  /** `<operation>: <reason tag>: <text>` (no `: <text>` when there is none). */
  readonly message: string
  /** The driver's view (`SqlError.isRetryable`). */
  readonly retryable: boolean
  readonly cause: SqlError.SqlError
}

/** @internal */
export interface Options {
  /**
   * The text after the reason tag: the driver's message (`"driver"`, the
   * default, often generic such as "PgConnection: Query failed"), or
   * PostgreSQL's own message when the driver kept it (`"server"`).
   */
  readonly detail?: "driver" | "server" | undefined
}

/**
 * PostgreSQL's own message, when the driver kept the server's error as the
 * reason's `cause`.
 *
 * @internal
 */
export const serverMessage = (error: SqlError.SqlError): string | undefined => {
  const cause: unknown = error.reason.cause
  return typeof cause === "object" && cause !== null && "message" in cause && typeof cause.message === "string"
    ? cause.message
    : undefined
}

/**
 * `make` applied to the fields of a failed `operation`:
 * `fromSql(make)(operation)` is an `(error: SqlError) => E`.
 *
 * @internal
 */
export const fromSql = <E>(make: (fields: Fields) => E, options?: Options) =>
(operation: string) =>
(error: SqlError.SqlError): E => {
  const text = options?.detail === "server" ? serverMessage(error) ?? error.reason.message : error.reason.message
  return make({
    operation,
    message: `${operation}: ${error.reason._tag}${text ? `: ${text}` : ""}`,
    retryable: error.reason.isRetryable,
    cause: error
  })
}

/**
 * The pipeable form of `fromSql`: `effect.pipe(mapSql(make)(operation))`
 * turns the effect's `SqlError` into `E` and leaves its other errors alone.
 *
 * @internal
 */
export const mapSql = <E>(make: (fields: Fields) => E, options?: Options) => {
  const from = fromSql(make, options)
  return (operation: string) => {
    const refail = from(operation)
    return <A, E2, R>(effect: Effect.Effect<A, E2, R>): Effect.Effect<A, Exclude<E2, SqlError.SqlError> | E, R> =>
      Effect.mapError(effect, (error) =>
        SqlError.isSqlError(error) ? refail(error) : error as Exclude<E2, SqlError.SqlError>)
  }
}
