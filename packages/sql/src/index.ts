/**
 * @since 0.1.0
 */
export * as OutboxMigrations from "./OutboxMigrations.ts"
export * as PgOutboxStore from "./PgOutboxStore.ts"
export * as PgInbox from "./PgInbox.ts"
