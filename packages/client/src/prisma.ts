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
 * Runs statements through `tx.$queryRawUnsafe` (`$n` placeholders, values
 * as parameters; Prisma reads `bigint` columns as `bigint`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const executor = (tx: PrismaTransaction): Executor => ({
  query: (text, values) =>
    Promise.resolve(tx.$queryRawUnsafe(text, ...values)).then((rows: ReadonlyArray<unknown> | undefined) => ({
      rows: Array.isArray(rows) ? rows : []
    }))
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
