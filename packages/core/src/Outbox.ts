/**
 * The producer API: publish events in the same transaction as business rows.
 *
 * `publish` requires `OutboxTransaction`, which only `Outbox.transaction`
 * provides (around the store's transaction, i.e. `sql.withTransaction` for
 * PostgreSQL). Publishing outside a transaction therefore does not compile:
 * the requirement stays in the effect's `R` and nothing can satisfy it.
 *
 * **Example**
 *
 * ```ts
 * const placeOrder = (order: Order) =>
 *   Outbox.transaction(Effect.gen(function*() {
 *     const sql = yield* SqlClient.SqlClient
 *     yield* sql`INSERT INTO orders ${sql.insert(order)}`
 *     yield* Outbox.publish({
 *       aggregateType: "Order", aggregateId: order.id,
 *       eventType: "OrderCreated", payload: order
 *     })
 *   }))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { InvalidEvent, type StoreError } from "./OutboxError.ts"
import type { EventInput, PublishedEvent, ValidEvent } from "./OutboxEvent.ts"
import { OutboxStore, type Publisher } from "./OutboxStore.ts"
import { toJson, utf8Length } from "./internal/json.ts"

declare const TransactionBrand: unique symbol

/**
 * Proof of an open outbox transaction. There is no layer for it: only
 * `Outbox.transaction` provides it.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxTransaction extends Context.Service<OutboxTransaction, {
  readonly [TransactionBrand]: true
  readonly publish: Publisher
}>()("@outbox/core/OutboxTransaction") {}

/**
 * Limits applied by `publish` before anything is written.
 *
 * @category models
 * @since 0.1.0
 */
export interface PublishSettings {
  /** Largest accepted payload, in UTF-8 bytes of its JSON text. */
  readonly maxPayloadBytes: number
  /** `max_retries` written on each row unless the event says otherwise. */
  readonly maxRetries: number
}

/**
 * The publish limits in force; `OutboxConfig.layer` sets them from config.
 *
 * @category references
 * @since 0.1.0
 */
export const PublishSettings = Context.Reference<PublishSettings>("@outbox/core/Outbox/PublishSettings", {
  defaultValue: () => ({ maxPayloadBytes: 1024 * 1024, maxRetries: 5 })
})

const invalid = (index: number, reason: InvalidEvent["reason"], field: string, message: string) =>
  new InvalidEvent({ index, reason, field, message })

/**
 * Validates one event: non-empty `aggregateType`, `aggregateId` and
 * `eventType`, a strictly JSON-serialisable payload and metadata, and a
 * payload within the size limit.
 *
 * @category validation
 * @since 0.1.0
 */
export const validate = (
  input: EventInput,
  settings: PublishSettings,
  index = 0
): Effect.Effect<ValidEvent, InvalidEvent> => {
  if (input === null || typeof input !== "object") {
    return Effect.fail(invalid(index, "MissingField", "event", "the event must be an object"))
  }
  for (const field of ["aggregateType", "aggregateId", "eventType"] as const) {
    const value: unknown = input[field]
    if (typeof value !== "string" || value.trim().length === 0) {
      return Effect.fail(invalid(index, "MissingField", field, `${field} must be a non-empty string`))
    }
  }
  const payload = toJson(input.payload)
  if (!payload.ok) {
    return Effect.fail(invalid(index, "NotSerializable", "payload", `payload is not JSON-serialisable: ${payload.problem}`))
  }
  const size = utf8Length(payload.json)
  if (size > settings.maxPayloadBytes) {
    return Effect.fail(
      invalid(index, "PayloadTooLarge", "payload", `payload is ${size} bytes, over the limit of ${settings.maxPayloadBytes}`)
    )
  }
  const metadataValue = input.metadata ?? {}
  if (typeof metadataValue !== "object" || Array.isArray(metadataValue)) {
    return Effect.fail(invalid(index, "NotSerializable", "metadata", "metadata must be an object"))
  }
  const metadata = toJson(metadataValue)
  if (!metadata.ok) {
    return Effect.fail(invalid(index, "NotSerializable", "metadata", `metadata is not JSON-serialisable: ${metadata.problem}`))
  }
  const maxRetries = input.maxRetries ?? settings.maxRetries
  if (!Number.isInteger(maxRetries) || maxRetries < 0) {
    return Effect.fail(invalid(index, "InvalidMaxRetries", "maxRetries", "maxRetries must be a non-negative integer"))
  }
  return Effect.succeed({
    aggregateType: input.aggregateType,
    aggregateId: input.aggregateId,
    eventType: input.eventType,
    payloadJson: payload.json,
    metadataJson: metadata.json,
    maxRetries
  })
}

/**
 * Publishes several events with one multi-row INSERT. All are validated
 * first: one invalid event fails the call with `InvalidEvent` (naming its
 * index) and writes nothing.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publishAll = (
  inputs: ReadonlyArray<EventInput>
): Effect.Effect<ReadonlyArray<PublishedEvent>, InvalidEvent | StoreError, OutboxTransaction> =>
  Effect.flatMap(Effect.service(PublishSettings), (settings) =>
    Effect.flatMap(
      Effect.forEach(inputs, (input, index) => validate(input, settings, index)),
      (events) =>
        events.length === 0
          ? Effect.succeed([])
          : Effect.flatMap(Effect.service(OutboxTransaction), (tx) => tx.publish(events))
    ))

/**
 * Publishes one event in the current outbox transaction.
 *
 * @category publishing
 * @since 0.1.0
 */
export const publish = (
  input: EventInput
): Effect.Effect<PublishedEvent, InvalidEvent | StoreError, OutboxTransaction> =>
  Effect.map(publishAll([input]), (published) => published[0]!)

/**
 * Runs `effect` in one store transaction and provides `OutboxTransaction` to
 * it. Business statements of the same SQL client inside `effect` run in the
 * same transaction; any failure rolls everything back.
 *
 * @category transactions
 * @since 0.1.0
 */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError, Exclude<R, OutboxTransaction> | OutboxStore> =>
  Effect.flatMap(Effect.service(OutboxStore), (store) =>
    store.withTransaction((publish) =>
      Effect.provideService(effect, OutboxTransaction, { publish } as OutboxTransaction["Service"])
    ))
