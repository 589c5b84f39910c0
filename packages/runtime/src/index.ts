/**
 * `@outbox/runtime`: every public module as a namespace. The `outbox` bin's
 * entry point (`bin.ts`) is left out on purpose: importing it runs the
 * command line. `test/Barrels.test.ts` fails when a module is missing here.
 *
 * @since 0.1.0
 */
export * as AuditSealer from "./AuditSealer.ts"
export * as Cli from "./Cli.ts"
export * as Duty from "./Duty.ts"
export * as KafkaSink from "./sinks/KafkaSink.ts"
export * as LogSink from "./sinks/LogSink.ts"
export * as NatsSink from "./sinks/NatsSink.ts"
export * as OutboxEnv from "./OutboxEnv.ts"
export * as OutboxLive from "./OutboxLive.ts"
export * as OutboxTelemetry from "./OutboxTelemetry.ts"
export * as PartitionMaintenance from "./PartitionMaintenance.ts"
export * as RabbitMqSink from "./sinks/RabbitMqSink.ts"
export * as Reaper from "./Reaper.ts"
export * as RedisStreamSink from "./sinks/RedisStreamSink.ts"
export * as Relay from "./Relay.ts"
export * as SinkSetupError from "./sinks/SinkSetupError.ts"
export * as SinkUrl from "./sinks/SinkUrl.ts"
export * as Wakeup from "./Wakeup.ts"
export * as WakeupListener from "./WakeupListener.ts"
export * as WebhookSink from "./sinks/WebhookSink.ts"
