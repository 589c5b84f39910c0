/**
 * `@outbox/client` for Knex (PostgreSQL client): `publish` and
 * `processOnce` take the transaction `trx` of `knex.transaction(...)`.
 *
 * ```ts
 * import * as Outbox from "@outbox/client/knex"
 *
 * await knex.transaction(async (trx) => {
 *   await trx("orders").insert({ id, total })
 *   await Outbox.publish(trx, { aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total } })
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Adapter from "./internal/adapter.ts"
import type { Executor } from "./Publisher.ts"

/**
 * The part of a Knex transaction the adapter uses: `raw` with `?` bindings.
 *
 * @category models
 * @since 0.1.0
 */
export interface KnexTransaction {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly raw: (sql: string, bindings: ReadonlyArray<any>) => PromiseLike<any>
}

/**
 * Runs statements through `trx.raw`: `$n` placeholders become Knex's `?`
 * (a literal `?`, such as jsonb's `?` and `?|` operators, is escaped as
 * `\?`), and the rows come from the `pg` result Knex returns. An array
 * binding stays one array parameter (`raw` does not expand it into a list),
 * which the batch publish's `unnest($1::text[], ...)` needs.
 *
 * @category constructors
 * @since 0.1.0
 */
export const executor = (trx: KnexTransaction): Executor => ({
  query: (text, values) => {
    const split = Adapter.splitPlaceholders(text, values)
    return Promise.resolve(trx.raw(split.parts.map((p) => p.replaceAll("?", "\\?")).join("?"), split.values)).then(
      (result: { readonly rows?: ReadonlyArray<unknown> }) => ({ rows: result.rows ?? [] })
    )
  }
})

const adapter = Adapter.make(executor)

/**
 * `publish` (see `@outbox/client`) in a Knex transaction.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publish = adapter.publish

/**
 * `processOnce` (see `@outbox/client`) in a Knex transaction.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnce = adapter.processOnce
