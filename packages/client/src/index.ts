/**
 * `@outbox/client`: the outbox for code that does not use Effect. Publish in
 * the caller's transaction (`pg` here; Knex, Drizzle, Kysely and Prisma
 * through `@outbox/client/knex`, `/drizzle`, `/kysely`, `/prisma`),
 * deduplicate consumers with `processOnce`, and relay with `createRelay`.
 * The same core as the Effect API: same validation, limits, typed errors,
 * trace context and relay.
 *
 * @since 0.1.0
 */
export { type Executor, publish, type PublishOptions } from "./Publisher.ts"
export { processOnce, type ProcessResult } from "./ProcessOnce.ts"
export { createRelay, type OutboxRelay, PermanentError, type PoolLike, type RelayOptions } from "./Relay.ts"
export { DeliveryError, InvalidEvent, StoreError } from "@outbox/core/OutboxError"
export type { EventInput, OutboxEvent, PublishedEvent } from "@outbox/core/OutboxEvent"
export type { RelayStats } from "@outbox/runtime/Relay"
