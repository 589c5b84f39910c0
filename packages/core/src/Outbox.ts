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
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { InvalidEvent, type StoreError } from "./OutboxError.ts"
import type { EventInput, PublishedEvent, ValidEvent } from "./OutboxEvent.ts"
import { OutboxStore, type Publisher } from "./OutboxStore.ts"
import { countEvents, eventsPublished, MetricLabels } from "./OutboxMetrics.ts"
import * as TraceContext from "./TraceContext.ts"
import { textProblem, toJson, utf8Length } from "./internal/json.ts"

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
  index = 0,
  trace?: TraceContext.TraceContext | undefined
): Effect.Effect<ValidEvent, InvalidEvent> => {
  const result = check(input, settings, index, trace)
  return result instanceof InvalidEvent ? Effect.fail(result) : Effect.succeed(result)
}

const requiredFields = ["aggregateType", "aggregateId", "eventType"] as const

/** The longest explicit ordering key: keys are indexed by their hash, but stored, logged and listed whole. */
const maxOrderingKeyLength = 1000

/** The longest explicit tenant: tenants are indexed as they are (a btree entry per pending row). */
const maxTenantLength = 200

/** `validate` without the Effect: publish checks a whole batch in one synchronous loop. */
const check = (
  input: EventInput,
  settings: PublishSettings,
  index: number,
  trace: TraceContext.TraceContext | undefined
): ValidEvent | InvalidEvent => {
  if (input === null || typeof input !== "object") {
    return invalid(index, "MissingField", "event", "the event must be an object")
  }
  for (const field of requiredFields) {
    const value: unknown = input[field]
    if (typeof value !== "string" || value.trim().length === 0) {
      return invalid(index, "MissingField", field, `${field} must be a non-empty string`)
    }
    const problem = textProblem(value)
    if (problem !== undefined) return invalid(index, "InvalidText", field, `${field} ${problem}`)
  }
  const payload = toJson(input.payload)
  if (!payload.ok) {
    return invalid(index, "NotSerializable", "payload", `payload is not JSON-serialisable: ${payload.problem}`)
  }
  // a UTF-16 code unit is at most 3 UTF-8 bytes: most payloads are under the limit without counting
  if (payload.json.length * 3 > settings.maxPayloadBytes) {
    const size = utf8Length(payload.json)
    if (size > settings.maxPayloadBytes) {
      return invalid(index, "PayloadTooLarge", "payload", `payload is ${size} bytes, over the limit of ${settings.maxPayloadBytes}`)
    }
  }
  let metadataJson = "{}"
  // no metadata and no trace context (the common case): `{}` as it is, without a walk
  if (input.metadata !== undefined || trace !== undefined) {
    const metadataValue = input.metadata ?? {}
    if (typeof metadataValue !== "object" || Array.isArray(metadataValue)) {
      return invalid(index, "NotSerializable", "metadata", "metadata must be an object")
    }
    // the producer's trace context rides along, unless the caller set one explicitly
    const metadata = toJson(
      trace === undefined || TraceContext.TRACEPARENT in metadataValue ? metadataValue : { ...metadataValue, ...trace }
    )
    if (!metadata.ok) {
      return invalid(index, "NotSerializable", "metadata", `metadata is not JSON-serialisable: ${metadata.problem}`)
    }
    metadataJson = metadata.json
  }
  const maxRetries = input.maxRetries ?? settings.maxRetries
  if (!Number.isInteger(maxRetries) || maxRetries < 0) {
    return invalid(index, "InvalidMaxRetries", "maxRetries", "maxRetries must be a non-negative integer")
  }
  let schedule: ValidEvent["schedule"]
  if (input.availableAt !== undefined || input.delay !== undefined) {
    if (input.availableAt !== undefined && input.delay !== undefined) {
      return invalid(index, "InvalidSchedule", "availableAt", "give availableAt or delay, not both")
    }
    if (input.availableAt !== undefined) {
      const at = input.availableAt
      if (!(at instanceof Date) || Number.isNaN(at.getTime())) {
        return invalid(index, "InvalidSchedule", "availableAt", "availableAt must be a valid Date")
      }
      schedule = { at }
    } else {
      const delay = Duration.fromInput(input.delay!)
      const millis = Option.isSome(delay) ? Duration.toMillis(delay.value) : Number.NaN
      if (!Number.isFinite(millis) || millis < 0) {
        return invalid(index, "InvalidSchedule", "delay", "delay must be a finite, non-negative duration (\"10 minutes\", milliseconds)")
      }
      schedule = millis === 0 ? undefined : { delayMillis: Math.round(millis) }
    }
  }
  const orderingKey = input.orderingKey
  if (orderingKey !== undefined) {
    if (typeof orderingKey !== "string" || orderingKey.length === 0 || orderingKey.length > maxOrderingKeyLength) {
      return invalid(
        index,
        "InvalidOrderingKey",
        "orderingKey",
        `orderingKey must be a non-empty string of at most ${maxOrderingKeyLength} characters`
      )
    }
    const problem = textProblem(orderingKey)
    if (problem !== undefined) return invalid(index, "InvalidOrderingKey", "orderingKey", `orderingKey ${problem}`)
  }
  const tenant = input.tenant
  if (tenant !== undefined) {
    if (typeof tenant !== "string" || tenant.length === 0 || tenant.length > maxTenantLength) {
      return invalid(index, "InvalidTenant", "tenant", `tenant must be a non-empty string of at most ${maxTenantLength} characters`)
    }
    const problem = textProblem(tenant)
    if (problem !== undefined) return invalid(index, "InvalidTenant", "tenant", `tenant ${problem}`)
  }
  return {
    aggregateType: input.aggregateType,
    aggregateId: input.aggregateId,
    eventType: input.eventType,
    payloadJson: payload.json,
    metadataJson,
    maxRetries,
    schedule,
    orderingKey,
    tenant
  }
}

/**
 * Validates a batch in one synchronous loop: the valid events, or the first
 * `InvalidEvent` (naming its index). What `publishAll` runs before writing;
 * exported for `@outbox/client`'s path without a fiber.
 *
 * @category validation
 * @since 0.1.0
 */
export const validateAllSync = (
  inputs: ReadonlyArray<EventInput>,
  settings: PublishSettings,
  trace?: TraceContext.TraceContext | undefined
): ReadonlyArray<ValidEvent> | InvalidEvent => {
  const events: Array<ValidEvent> = new Array(inputs.length)
  for (let i = 0; i < inputs.length; i++) {
    const event = check(inputs[i]!, settings, i, trace)
    if (event instanceof InvalidEvent) return event
    events[i] = event
  }
  return events
}

/**
 * Validates with the publish limits in force in `context` and hands the
 * batch to the transaction's publisher there: the fiber's context, read once
 * by `publishAll`'s `Effect.withFiber` (no `Effect.service` or
 * `Effect.context` step of its own per call).
 */
const publishIn = (
  context: Context.Context<never>,
  inputs: ReadonlyArray<EventInput>,
  trace: TraceContext.TraceContext | undefined
): Effect.Effect<ReadonlyArray<PublishedEvent>, InvalidEvent | StoreError> => {
  const events = validateAllSync(inputs, Context.get(context, PublishSettings), trace)
  return events instanceof InvalidEvent
    ? Effect.fail(events)
    : Context.get(context as Context.Context<OutboxTransaction>, OutboxTransaction).publish(events)
}

/**
 * Publishes several events with one multi-row INSERT. All are validated
 * first: one invalid event fails the call with `InvalidEvent` (naming its
 * index) and writes nothing.
 *
 * **Tracing**: under a tracer that exports spans (e.g. `@effect/opentelemetry`)
 * the call is a `publish <event type>` span (kind `producer`, OpenTelemetry
 * messaging attributes), and its W3C trace context is stored in each
 * event's `metadata.traceparent` / `metadata.tracestate` (unless the event's
 * metadata already has a `traceparent`). Under Effect's built-in tracer,
 * whose spans are recorded nowhere, there is neither span nor context: the
 * span's bookkeeping (and the stack trace Effect captures for it) cost
 * ~25–40 µs of Node CPU per publish on a loaded machine, a fifth of the
 * transaction (measured by `npm run bench:client`).
 *
 * **Cost**: one `Effect.withFiber` reads the tracer, the limits and the
 * transaction from the fiber, then validation runs in one synchronous loop
 * (`validateAllSync`), then the store's INSERT. `Outbox.transaction` around
 * one `publish` runs ~1.5 µs more JavaScript than the same BEGIN, INSERT,
 * COMMIT sent with `sql.unsafe`, and within ±1 µs of them written as an
 * `@effect/sql-pg` template (whose compilation costs ~2 µs); such a
 * transaction costs ~12 µs of JavaScript and ~110–170 µs of Node CPU with
 * the driver's I/O. It was +3 µs over the template (+6.5 µs over
 * `sql.unsafe`) before the context was read with `withFiber` and the JSON
 * walk became a fast pass (`npm run bench:producer`).
 *
 * @category publishing
 * @since 0.1.0
 */
export const publishAll = (
  inputs: ReadonlyArray<EventInput>
): Effect.Effect<ReadonlyArray<PublishedEvent>, InvalidEvent | StoreError, OutboxTransaction> =>
  inputs.length === 0 ? Effect.succeed([]) : Effect.withFiber((fiber) =>
    fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer ? publishIn(fiber.context, inputs, undefined) : Effect.withSpan(
      Effect.flatMap(TraceContext.current, (trace) => Effect.withFiber((inner) => publishIn(inner.context, inputs, trace))),
      publishSpanName(inputs),
      { kind: "producer", attributes: publishSpanAttributes(inputs), captureStackTrace: false }
    ))

/** `publish OrderCreated`, or `publish` when the batch mixes event types. */
const publishSpanName = (inputs: ReadonlyArray<EventInput>): string => {
  const type = inputs[0]?.eventType
  return typeof type === "string" && inputs.every((input) => input?.eventType === type) ? `publish ${type}` : "publish"
}

const publishSpanAttributes = (inputs: ReadonlyArray<EventInput>): Record<string, unknown> => {
  const type = inputs[0]?.eventType
  const attributes: Record<string, unknown> = {
    "messaging.system": TraceContext.MESSAGING_SYSTEM,
    "messaging.operation.type": "send",
    "messaging.operation.name": "publish"
  }
  if (typeof type === "string" && inputs.every((input) => input?.eventType === type)) {
    attributes["messaging.destination.name"] = type
  }
  if (inputs.length > 1) attributes["messaging.batch.message_count"] = inputs.length
  return attributes
}

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
 * Once the transaction has committed, `outbox_events_published_total` is
 * increased by the events it published.
 *
 * **Cost**: one `Effect.withFiber` reads the store and the context the
 * metric is counted in (no `Effect.service`, `Effect.suspend` or
 * `Effect.contextWith` step per transaction), and the count after COMMIT is
 * a synchronous `Effect.map`. Around a single `publish`, see `publishAll`.
 *
 * @category transactions
 * @since 0.1.0
 */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError, Exclude<R, OutboxTransaction> | OutboxStore> =>
  Effect.withFiber((fiber) => {
    const context = fiber.context
    const published: Array<ValidEvent> = []
    const rows: Array<PublishedEvent | undefined> = []
    return Effect.map(
      Context.get(context as Context.Context<OutboxStore>, OutboxStore).withTransaction((publish) =>
        Effect.provideService(effect, OutboxTransaction, {
          publish: (events) =>
            Effect.map(publish(events), (written) => {
              for (let i = 0; i < events.length; i++) {
                published.push(events[i]!)
                rows.push(written[i])
              }
              return written
            })
        } as OutboxTransaction["Service"])
      ),
      (a) => {
        if (published.length > 0) countPublished(published, rows, context)
        return a
      }
    )
  })

/**
 * Provides `OutboxTransaction` from a publisher bound to a transaction that
 * was opened outside Effect: the caller's `pg` client, Knex `trx`, Drizzle
 * `tx`, Kysely `trx` or Prisma interactive transaction (`@outbox/client`).
 * The caller vouches that `publish` writes in that open transaction; it also
 * owns its COMMIT, so nothing is counted here (`eventsPublished` counts only
 * what `transaction` saw commit).
 *
 * @category transactions
 * @since 0.1.0
 */
export const withPublisher = (publish: Publisher) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, OutboxTransaction>> =>
  Effect.provideService(effect, OutboxTransaction, { publish } as OutboxTransaction["Service"])

/** Adds the committed `events` to `outbox_events_published_total`, in the transaction's `context`. */
const countPublished = (
  events: ReadonlyArray<ValidEvent>,
  rows: ReadonlyArray<PublishedEvent | undefined>,
  context: Context.Context<never>
): void =>
  countEvents(events, {
    series: eventsPublished,
    extraLabels: Context.get(context, MetricLabels),
    context,
    labelSource: (event, i) => ({
      aggregateType: event.aggregateType,
      eventType: event.eventType,
      aggregateId: event.aggregateId,
      trackingId: rows[i]?.trackingId,
      metadata: JSON.parse(event.metadataJson)
    })
  })
