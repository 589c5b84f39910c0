/**
 * `@outbox/sql`: every public module as a namespace
 * (`packages/runtime/test/Barrels.test.ts` fails when one is missing here).
 *
 * @since 0.1.0
 */
export * as AuditTrail from "./AuditTrail.ts"
export * as BlockedKeys from "./BlockedKeys.ts"
export * as DeadLetters from "./DeadLetters.ts"
export * as FileArchiveStorage from "./FileArchiveStorage.ts"
export * as HealthCheck from "./HealthCheck.ts"
export * as Identifier from "./Identifier.ts"
export * as OnlineMigration from "./OnlineMigration.ts"
export * as OutboxHealth from "./OutboxHealth.ts"
export * as OutboxMigrations from "./OutboxMigrations.ts"
export * as OutboxRoles from "./OutboxRoles.ts"
export * as OutboxTables from "./OutboxTables.ts"
export * as PartitionArchive from "./PartitionArchive.ts"
export * as PartitionManager from "./PartitionManager.ts"
export * as Partman from "./Partman.ts"
export * as PgInbox from "./PgInbox.ts"
export * as PgOutboxStore from "./PgOutboxStore.ts"
export * as PgWakeup from "./PgWakeup.ts"
export * as PublishStatement from "./PublishStatement.ts"
export * as SqlEnv from "./SqlEnv.ts"
export * as TenantPartitions from "./TenantPartitions.ts"
