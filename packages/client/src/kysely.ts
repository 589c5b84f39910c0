/**
 * `@outbox/client` for Kysely (PostgresDialect): `publish` and
 * `processOnce` take the `trx` of `db.transaction().execute(async (trx) => ...)`.
 *
 * ```ts
 * import * as Outbox from "@outbox/client/kysely"
 *
 * await db.transaction().execute(async (trx) => {
 *   await trx.insertInto("orders").values({ id, total }).execute()
 *   await Outbox.publish(trx, { aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total } })
 * })
 * ```
 *
 * @since 0.1.0
 */
import { CompiledQuery } from "kysely"
import * as Adapter from "./internal/adapter.ts"
import type { Executor } from "./Publisher.ts"

/**
 * The part of a Kysely transaction the adapter uses.
 *
 * @category models
 * @since 0.1.0
 */
export interface KyselyTransaction {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly executeQuery: (query: CompiledQuery<any>) => PromiseLike<{ readonly rows: ReadonlyArray<any> }>
}

/**
 * Runs statements through `trx.executeQuery(CompiledQuery.raw(...))`: the
 * PostgreSQL dialect sends `$n` text and values as they are (an array is one
 * array parameter, as the batch publish's `unnest($1::text[], ...)` needs).
 *
 * @category constructors
 * @since 0.1.0
 */
export const executor = (trx: KyselyTransaction): Executor => ({
  query: (text, values) => trx.executeQuery(CompiledQuery.raw(text, values))
})

const adapter = Adapter.make(executor)

/**
 * `publish` (see `@outbox/client`) in a Kysely transaction.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publish = adapter.publish

/**
 * `processOnce` (see `@outbox/client`) in a Kysely transaction.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnce = adapter.processOnce
