/**
 * @since 0.1.0
 */
export * as HttpReceiver from "./HttpReceiver.ts"
export * as LegacyOutbox from "./LegacyOutbox.ts"
export * as MemoryInbox from "./MemoryInbox.ts"
export * as MemoryOutboxStore from "./MemoryOutboxStore.ts"
export * as RelayTestKit from "./RelayTestKit.ts"
export * as StoreContract from "./StoreContract.ts"
export * as TestDatabase from "./TestDatabase.ts"
