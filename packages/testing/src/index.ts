/**
 * @since 0.1.0
 */
export * as MemoryInbox from "./MemoryInbox.ts"
export * as MemoryOutboxStore from "./MemoryOutboxStore.ts"
export * as StoreContract from "./StoreContract.ts"
