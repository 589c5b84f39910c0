/**
 * `@outbox/client` for Drizzle on node-postgres: `publish` and
 * `processOnce` take the `tx` of `db.transaction(async (tx) => ...)`.
 *
 * ```ts
 * import * as Outbox from "@outbox/client/drizzle"
 *
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values({ id, total })
 *   await Outbox.publish(tx, { aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total } })
 * })
 * ```
 *
 * @since 0.1.0
 */
import { type SQL, sql } from "drizzle-orm"
import * as Adapter from "./internal/adapter.ts"
import type { Executor } from "./Publisher.ts"

/**
 * The part of a Drizzle (node-postgres) transaction the adapter uses.
 *
 * @category models
 * @since 0.1.0
 */
export interface DrizzleTransaction {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly execute: (query: SQL) => PromiseLike<any>
}

/**
 * The driver's own error inside Drizzle's `DrizzleQueryError` (0.44+), which
 * says only "Failed query: <text> params: <values>": the driver's error has
 * the SQLSTATE (`code`) that `StoreError.retryable` and `processOnce`'s
 * "needs an open transaction" check read, and its message does not repeat
 * the parameters (the event payloads). Matched by shape, not by class, so
 * older Drizzle versions (which throw the driver's error as is) load too.
 */
const driverError = (error: unknown): unknown => {
  const cause = (error as { readonly cause?: { readonly code?: unknown } } | null)?.cause
  return typeof cause?.code === "string" ? cause : error
}

/**
 * Runs statements through `tx.execute`: the text becomes Drizzle `sql`
 * chunks, each value one parameter (`sql.param`, so an array stays one
 * array parameter instead of a list, which is what the batch publish's
 * `unnest($1::text[], ...)` needs). A failure rejects with the driver's
 * error, unwrapped from Drizzle's `DrizzleQueryError` (see `driverError`).
 *
 * Drizzle's node-postgres session reads `timestamptz` as text: the
 * published `createdAt` is parsed from it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const executor = (tx: DrizzleTransaction): Executor => ({
  query: (text, values) => {
    const split = Adapter.splitPlaceholders(text, values)
    const chunks: Array<SQL> = [sql.raw(split.parts[0]!)]
    for (let i = 0; i < split.values.length; i++) {
      chunks.push(sql`${sql.param(split.values[i])}`, sql.raw(split.parts[i + 1]!))
    }
    return Promise.resolve(tx.execute(sql.join(chunks))).then(
      (result: { readonly rows?: ReadonlyArray<unknown> } | ReadonlyArray<unknown>) => ({
        rows: Array.isArray(result) ? result : (result as { readonly rows?: ReadonlyArray<unknown> }).rows ?? []
      }),
      (error: unknown) => Promise.reject(driverError(error))
    )
  }
})

const adapter = Adapter.make(executor)

/**
 * `publish` (see `@outbox/client`) in a Drizzle transaction.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publish = adapter.publish

/**
 * `processOnce` (see `@outbox/client`) in a Drizzle transaction.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnce = adapter.processOnce
