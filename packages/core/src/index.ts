/**
 * `@outbox/core`: every public module as a namespace
 * (`packages/runtime/test/Barrels.test.ts` fails when one is missing here).
 *
 * @since 0.1.0
 */
export * as ArchiveStorage from "./ArchiveStorage.ts"
export * as Inbox from "./Inbox.ts"
export * as Outbox from "./Outbox.ts"
export * as OutboxConfig from "./OutboxConfig.ts"
export * as OutboxError from "./OutboxError.ts"
export * as OutboxEvent from "./OutboxEvent.ts"
export * as OutboxMetrics from "./OutboxMetrics.ts"
export * as OutboxSink from "./OutboxSink.ts"
export * as OutboxStore from "./OutboxStore.ts"
export * as PartitionPolicy from "./PartitionPolicy.ts"
export * as RetryPolicy from "./RetryPolicy.ts"
export * as TraceContext from "./TraceContext.ts"
