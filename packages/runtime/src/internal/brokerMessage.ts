/**
 * What every broker sink puts on the wire for an event, in one place so
 * that NATS, RabbitMQ, Redis and Kafka consumers read the same thing:
 *
 * - the body: the webhook's JSON body (`WebhookSink.body`: tracking id,
 *   aggregate, event type, payload, metadata, `createdAt`);
 * - the headers: the tracking id (the consumer's dedupe key, also the
 *   broker's own message id where it has one), the event type, the
 *   aggregate type and id, and `traceparent` / `tracestate`, so that the
 *   consumer's span continues the producer's trace;
 * - the default routing names (`outbox.<aggregateType>.<eventType>` and
 *   friends).
 *
 * Also: loading an optional client library lazily, so that importing
 * `@outbox/runtime` does not load four broker clients, and a missing one is
 * a typed error naming the package to install.
 *
 * @internal
 */
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as TraceContext from "@outbox/core/TraceContext"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { SinkSetupError } from "../sinks/SinkSetupError.ts"
import * as WebhookSink from "../sinks/WebhookSink.ts"

/**
 * Header names, lower-case (AMQP, NATS and Kafka keep case; HTTP folds it).
 *
 * @internal
 */
export const headerNames = {
  trackingId: "outbox-tracking-id",
  eventType: "outbox-event-type",
  aggregateType: "outbox-aggregate-type",
  aggregateId: "outbox-aggregate-id"
} as const

/**
 * The message headers of `event`: the four `headerNames` and, when the
 * event is in a trace, `traceparent` (and `tracestate`).
 *
 * @internal
 */
export const headers = (event: OutboxEvent): Effect.Effect<Record<string, string>> =>
  Effect.map(TraceContext.current, (current) => headersIn(event, current))

/**
 * `headers` with the current span's context already read (`current`).
 *
 * @internal
 */
export const headersIn = (event: OutboxEvent, current: TraceContext.TraceContext | undefined): Record<string, string> => {
  const fields: Record<string, string> = {
    [headerNames.trackingId]: event.trackingId,
    [headerNames.eventType]: event.eventType,
    [headerNames.aggregateType]: event.aggregateType,
    [headerNames.aggregateId]: event.aggregateId
  }
  const trace = WebhookSink.traceHeadersIn(event, current)
  for (const name in trace) fields[name] = trace[name]!
  return fields
}

/**
 * Builds each event's message with `build`, given its headers, reading the
 * fiber's trace context once for the batch: no effect per event. `build`
 * runs plain code (routing functions, client message objects), so a batch
 * of 100 costs one effect instead of several hundred; in
 * `RedisStreamSink` the per-event effects and their garbage were about as
 * much Node CPU as the `ioredis` pipeline itself. `build` must not throw:
 * it returns a `DeliveryError` for an event it cannot build (see
 * `attempt`), as (part of) its `A`.
 *
 * @internal
 */
export const buildAll = <A>(
  events: ReadonlyArray<OutboxEvent>,
  build: (event: OutboxEvent, headers: Record<string, string>) => A
): Effect.Effect<Array<A>> =>
  Effect.map(TraceContext.current, (current) => events.map((event) => build(event, headersIn(event, current))))

/**
 * Runs a user's function (a routing option) for one event; a throw becomes
 * that event's permanent `DeliveryError`, described by `describe`.
 *
 * @internal
 */
export const attempt = <A>(f: () => A, describe: (message: string) => string): A | DeliveryError =>
  Result.getOrElse(
    Result.try({
      try: f,
      catch: (cause) => DeliveryError.permanent(describe(cause instanceof Error ? cause.message : String(cause)), cause)
    }),
    (error): A | DeliveryError => error
  )

/**
 * The message body of `event`: `WebhookSink.body` as JSON text.
 *
 * @internal
 */
export const body = (event: OutboxEvent): string => JSON.stringify(WebhookSink.body(event))

/**
 * A routing name part from an event field: dots, wildcards and whitespace
 * would change a subject's or routing key's meaning, so they become `_`.
 *
 * @internal
 */
export const token = (value: string): string => value.length === 0 ? "_" : value.replace(/[.*>#\s]/g, "_")

/**
 * Imports an optional client library (`specifier`), failing with a
 * `SinkSetupError` that says which package to install when it is missing.
 *
 * @internal
 */
export const loadClient = <M>(sink: string, specifier: string, load: () => Promise<M>): Effect.Effect<M, SinkSetupError> =>
  Effect.tryPromise({
    try: load,
    catch: (cause) =>
      new SinkSetupError({
        sink,
        reason: "MissingClient",
        message: `the ${sink} sink needs ${specifier}: npm install ${specifier}`,
        cause
      })
  })
