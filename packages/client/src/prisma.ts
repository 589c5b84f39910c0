/**
 * `@outbox/client` for Prisma (7, with a driver adapter such as
 * `@prisma/adapter-pg`): `publish` and `processOnce` take the client of an
 * interactive transaction, `prisma.$transaction(async (tx) => ...)`.
 *
 * ```ts
 * import * as Outbox from "@outbox/client/prisma"
 *
 * await prisma.$transaction(async (tx) => {
 *   await tx.order.create({ data: { id, total } })
 *   await Outbox.publish(tx, { aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total } })
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Adapter from "./internal/adapter.ts"
import type { Executor } from "./Publisher.ts"

/**
 * The part of a Prisma interactive transaction client the adapter uses.
 *
 * @category models
 * @since 0.1.0
 */
export interface PrismaTransaction {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly $queryRawUnsafe: (query: string, ...values: Array<any>) => PromiseLike<any>
}

/**
 * What Prisma says about a failed raw query: `code` is its own `P2010`
 * ("raw query failed"); the SQLSTATE is in `meta.code` (query engine) or in
 * `meta.driverAdapterError.cause.originalCode` (driver adapters, Prisma 7).
 */
interface PrismaError {
  readonly message?: unknown
  readonly meta?: {
    readonly code?: unknown
    readonly message?: unknown
    readonly driverAdapterError?: {
      readonly cause?: { readonly originalCode?: unknown; readonly originalMessage?: unknown; readonly code?: unknown }
    }
  }
}

/**
 * A failed statement as an `Error` whose `code` is PostgreSQL's SQLSTATE
 * and whose message is PostgreSQL's (the Prisma error is its `cause`):
 * `StoreError.retryable` reads the SQLSTATE (a serialization failure or a
 * deadlock is retryable; Prisma's `P2010` says nothing), and so does
 * `processOnce`'s "needs an open transaction" check. Errors without one
 * (connection, transaction timeout) pass through unchanged.
 */
const driverError = (error: unknown): unknown => {
  const meta = (error as PrismaError | null)?.meta
  const adapter = meta?.driverAdapterError?.cause
  const code = adapter?.originalCode ?? adapter?.code ?? meta?.code
  if (typeof code !== "string") return error
  const text = adapter?.originalMessage ?? meta?.message ?? (error as PrismaError).message
  return Object.assign(new Error(typeof text === "string" ? text : String(error), { cause: error }), { code })
}

/**
 * Runs statements through `tx.$queryRawUnsafe` (`$n` placeholders, values
 * as parameters: an array is one array parameter; Prisma reads `bigint`
 * columns as `bigint`). Statements that return no rows (`processOnce`'s
 * `SAVEPOINT`s) go through it too and resolve with no rows (checked with
 * `@prisma/adapter-pg`). A failure rejects with PostgreSQL's SQLSTATE and
 * message (see `driverError`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const executor = (tx: PrismaTransaction): Executor => ({
  query: (text, values) =>
    Promise.resolve(tx.$queryRawUnsafe(text, ...values)).then(
      (rows: ReadonlyArray<unknown> | undefined) => ({ rows: Array.isArray(rows) ? rows : [] }),
      (error: unknown) => Promise.reject(driverError(error))
    )
})

const adapter = Adapter.make(executor)

/**
 * `publish` (see `@outbox/client`) in a Prisma interactive transaction.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publish = adapter.publish

/**
 * `processOnce` (see `@outbox/client`) in a Prisma interactive transaction.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnce = adapter.processOnce
