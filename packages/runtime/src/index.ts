/**
 * @since 0.1.0
 */
export * as OutboxLive from "./OutboxLive.ts"
export * as Relay from "./Relay.ts"
export * as LogSink from "./LogSink.ts"
export * as WebhookSink from "./WebhookSink.ts"
