/**
 * The PostgreSQL idempotency store (inbox), table `outbox_inbox`, keyed by
 * `(consumer, tracking_id)`.
 *
 * `process` inserts the key first, inside the transaction that runs the
 * consumer's effect: a concurrent redelivery of the same event blocks on the
 * key until the first transaction ends, then sees the conflict and skips; a
 * failed effect rolls back the key together with the effect's own writes.
 * Put the consumer's database writes on the same `SqlClient` so they share
 * the transaction.
 *
 * `processEvent` is the consumer helper: it continues the producer's trace
 * carried by the event (`metadata.traceparent`, as in the webhook body).
 *
 * @since 0.1.0
 */
import { Inbox, type ProcessResult } from "@outbox/core/Inbox"
import type { StoreError } from "@outbox/core/OutboxError"
import * as TraceContext from "@outbox/core/TraceContext"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as Tracer from "effect/Tracer"
import * as Identifier from "./Identifier.ts"
import { fromSqlError, mapSqlError } from "./internal/storeError.ts"
import * as OutboxTables from "./OutboxTables.ts"

class BodyFailure<E> {
  readonly error: E
  constructor(error: E) {
    this.error = error
  }
}

/**
 * Builds the inbox over the current `SqlClient`, on the inbox table of
 * `tables` (`tables.inbox`, created by the outbox migrations).
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeWith = (tables: OutboxTables.OutboxTables) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const inbox = sql.literal(Identifier.quote(tables.inbox))

    const insertKey = (consumer: string, trackingId: string) =>
      sql<{ inserted: number }>`
        INSERT INTO ${inbox} (consumer, tracking_id) VALUES (${consumer}, ${trackingId})
        ON CONFLICT (consumer, tracking_id) DO NOTHING
        RETURNING 1 AS inserted`.pipe(Effect.map((rows) => rows.length > 0))

    const isProcessed = (consumer: string, trackingId: string) =>
      sql`SELECT 1 FROM ${inbox} WHERE consumer = ${consumer} AND tracking_id = ${trackingId}`.pipe(
        Effect.map((rows) => rows.length > 0),
        mapSqlError("inbox.isProcessed")
      )

    const markProcessed = (consumer: string, trackingId: string) =>
      insertKey(consumer, trackingId).pipe(mapSqlError("inbox.markProcessed"))

    const process = <A, E, R>(
      consumer: string,
      trackingId: string,
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<ProcessResult<A>, E | StoreError, R> =>
      sql.withTransaction(
        Effect.flatMap(
          insertKey(consumer, trackingId),
          (fresh): Effect.Effect<ProcessResult<A>, BodyFailure<E>, R> =>
            fresh
              ? Effect.map(Effect.mapError(effect, (e) => new BodyFailure(e)), (value) => ({ _tag: "Processed", value }))
              : Effect.succeed({ _tag: "Duplicate" })
        )
      ).pipe(
        Effect.catch((e: BodyFailure<E> | SqlError.SqlError) =>
          Effect.fail(e instanceof BodyFailure ? e.error : fromSqlError("inbox.process")(e))
        )
      )

    return Inbox.of({ isProcessed, markProcessed, process })
  })

/**
 * Builds the inbox on `outbox_inbox` (`makeWith` of `OutboxTables.defaults`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = makeWith(OutboxTables.defaults)

/**
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<Inbox, never, SqlClient.SqlClient> = Layer.effect(Inbox, make)

/**
 * The inbox on `tables.inbox`, as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWith = (tables: OutboxTables.OutboxTables): Layer.Layer<Inbox, never, SqlClient.SqlClient> =>
  Layer.effect(Inbox, makeWith(tables))

/**
 * What `processEvent` reads from a received event (the webhook body fits).
 *
 * @category models
 * @since 0.1.0
 */
export interface ReceivedEvent {
  readonly trackingId: string
  readonly eventType?: string | undefined
  readonly metadata?: Readonly<Record<string, unknown>> | null | undefined
}

/**
 * Runs `effect` at most once for `(consumer, event.trackingId)` through the
 * `Inbox` in context, in a `process <event type>` span (kind consumer,
 * OpenTelemetry messaging attributes) that continues the event's trace:
 *
 * - when the current span is already in the event's trace (e.g. the HTTP
 *   server span of the webhook request, which continued its `traceparent`
 *   header), the span is its child;
 * - otherwise it is a child of the producer's span from
 *   `metadata.traceparent`;
 * - without a trace context, it is a child of whatever span is current.
 *
 * @category constructors
 * @since 0.1.0
 */
export const processEvent = <A, E, R>(
  consumer: string,
  event: ReceivedEvent,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<ProcessResult<A>, E | StoreError, R | Inbox> =>
  // serviceOption, not option(currentParentSpan): no NoSuchElementError (an Error and its stack) per event
  Effect.flatMap(Effect.serviceOption(Tracer.ParentSpan), (current) => {
    const carried = TraceContext.fromMetadata(event.metadata)
    const parent = carried !== undefined && (Option.isNone(current) || current.value.traceId !== carried.traceId)
      ? TraceContext.externalSpan(carried)
      : undefined
    return Effect.withSpan(
      Effect.flatMap(Effect.service(Inbox), (inbox) => inbox.process(consumer, event.trackingId, effect)),
      event.eventType === undefined ? "process" : `process ${event.eventType}`,
      {
        kind: "consumer",
        ...(parent === undefined ? {} : { parent }),
        attributes: {
          "messaging.system": TraceContext.MESSAGING_SYSTEM,
          "messaging.operation.type": "process",
          "messaging.operation.name": "process",
          "messaging.consumer.group.name": consumer,
          "messaging.message.id": event.trackingId,
          ...(event.eventType === undefined ? {} : { "messaging.destination.name": event.eventType })
        }
      }
    )
  })
