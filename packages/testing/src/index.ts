/**
 * `@outbox/testing`: every public module as a namespace. `vitestGlobalSetup.ts`
 * is left out on purpose: it is vitest's `globalSetup` entry (named in
 * `vitest.config.ts`), not an API. `packages/runtime/test/Barrels.test.ts`
 * fails when a module is missing here.
 *
 * @since 0.1.0
 */
export * as HttpReceiver from "./HttpReceiver.ts"
export * as LegacyOutbox from "./LegacyOutbox.ts"
export * as MemoryInbox from "./MemoryInbox.ts"
export * as MemoryOutboxStore from "./MemoryOutboxStore.ts"
export * as RelayTestKit from "./RelayTestKit.ts"
export * as SinkContract from "./SinkContract.ts"
export * as StoreContract from "./StoreContract.ts"
export * as TcpProxy from "./TcpProxy.ts"
export * as TestDatabase from "./TestDatabase.ts"
