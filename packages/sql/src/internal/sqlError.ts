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
  /** Whether the same statement may succeed later (`isTransient`). */
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
 * SQLSTATEs the driver classifies as `UnknownError` (not retryable) but after
 * which the same statement may succeed on a new connection: the server shut
 * down or crashed under the session (`57P01`, `57P02`; a restart), is not
 * accepting connections yet (`57P03`: starting up or in recovery), or has
 * no connection slot left (`53300`: too many clients). A relay or a start-up
 * seeing one of these waits and tries again; the chaos suite's restart and
 * pool-exhaustion scenarios produce each of them.
 */
const transientCodes: ReadonlySet<string> = new Set(["57P01", "57P02", "57P03", "53300"])

/**
 * The server's SQLSTATE, when the driver kept the server's error as the
 * reason's `cause`.
 *
 * @internal
 */
export const serverCode = (error: SqlError.SqlError): string | undefined => {
  const cause: unknown = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

/**
 * Whether running the statement again (on a new connection, after a wait)
 * may succeed: the driver's view (`SqlError.isRetryable`: connection lost or
 * refused, deadlock, serialization, lock timeout) plus `transientCodes`.
 *
 * @internal
 */
export const isTransient = (error: SqlError.SqlError): boolean => {
  if (error.reason.isRetryable) return true
  const code = serverCode(error)
  return code !== undefined && transientCodes.has(code)
}

/**
 * The first `SqlError` along a chain of `cause`s (a migration's
 * `MigrationError` wraps the statement's), so that a wrapped failure can be
 * classified with `isTransient`.
 *
 * @internal
 */
export const findSqlError = (error: unknown): SqlError.SqlError | undefined => {
  let current = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    if (SqlError.isSqlError(current)) return current
    current = (current as { readonly cause?: unknown }).cause
  }
  return undefined
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
    retryable: isTransient(error),
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
