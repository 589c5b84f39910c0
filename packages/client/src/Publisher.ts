/**
 * `publish` for code that does not use Effect: writes events in the caller's
 * open transaction, through whatever runs its SQL (a `pg` `Client` or
 * `PoolClient`, or an ORM's transaction through the adapters
 * `@outbox/client/knex`, `/drizzle`, `/kysely`, `/prisma`).
 *
 * It runs the core's `Outbox.publishAll`, so validation, limits, typed
 * errors (`InvalidEvent`, `StoreError`), the producer span and the stored
 * W3C trace context are those of the Effect API; the INSERT is
 * `@outbox/sql`'s `PublishStatement`, the one `PgOutboxStore` sends.
 *
 * ```ts
 * const client = await pool.connect()
 * try {
 *   await client.query("BEGIN")
 *   await client.query("INSERT INTO orders (id, total) VALUES ($1, $2)", [id, total])
 *   await publish(client, { aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total } })
 *   await client.query("COMMIT")
 * } catch (error) {
 *   await client.query("ROLLBACK")
 *   throw error
 * } finally {
 *   client.release()
 * }
 * ```
 *
 * @since 0.1.0
 */
import * as Outbox from "@outbox/core/Outbox"
import { InvalidEvent, type StoreError } from "@outbox/core/OutboxError"
import type { EventInput, PublishedEvent, ValidEvent } from "@outbox/core/OutboxEvent"
import * as Identifier from "@outbox/sql/Identifier"
import * as PublishStatement from "@outbox/sql/PublishStatement"
import * as Effect from "effect/Effect"
import { otelRegistered, run, storeError } from "./internal/runtime.ts"

/**
 * Anything that runs one parameterized statement (`$1`, `$2`, …) in the
 * caller's open transaction and resolves with its rows: a `pg` `Client` or
 * `PoolClient` as it is, or an adapter's wrapper of an ORM transaction.
 *
 * @category models
 * @since 0.1.0
 */
export interface Executor {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly query: (text: string, values: Array<any>) => PromiseLike<{ readonly rows: ReadonlyArray<any> }>
}

/**
 * Options of `publish`; the defaults are those of the Effect API.
 *
 * @category models
 * @since 0.1.0
 */
export interface PublishOptions {
  /** The outbox table (default `outbox`); validated and quoted, never interpolated raw. */
  readonly table?: string | undefined
  /** Largest accepted payload, in UTF-8 bytes of its JSON text (default 1 MiB). */
  readonly maxPayloadBytes?: number | undefined
  /** `max_retries` written on each row unless the event says otherwise (default 5). */
  readonly maxRetries?: number | undefined
}

const defaults = Outbox.PublishSettings.defaultValue()

/** Validated and quoted table names, by name. */
const quoted = new Map<string, string>()

const quoteTable = (table: string): Effect.Effect<string, StoreError> => {
  const known = quoted.get(table)
  return known !== undefined ? Effect.succeed(known) : Identifier.validate(table, "outbox table").pipe(
    Effect.map((name) => {
      const q = Identifier.quote(name)
      quoted.set(table, q)
      return q
    }),
    Effect.mapError(storeError("configure"))
  )
}

/** The core's `Publisher` over an executor: `PublishStatement`'s INSERT, its rows as `PublishedEvent`s. */
const publisher = (executor: Executor, table: string) => (events: ReadonlyArray<ValidEvent>) => {
  const statement = PublishStatement.insert(table, events)
  return Effect.tryPromise({
    try: () => executor.query(statement.text, statement.values as Array<unknown>),
    catch: storeError("publish")
  }).pipe(Effect.map((result) => result.rows.map(PublishStatement.toPublished)))
}

/**
 * The effect behind `publish` (always through a fiber and, under an
 * exporting tracer, a span): for Effect code that holds a transaction opened
 * outside Effect.
 *
 * @category constructors
 * @since 0.1.0
 */
export const publishEffect = (
  executor: Executor,
  events: ReadonlyArray<EventInput>,
  options?: PublishOptions
): Effect.Effect<ReadonlyArray<PublishedEvent>, InvalidEvent | StoreError> =>
  Effect.flatMap(quoteTable(options?.table ?? "outbox"), (table) => {
    const effect = Outbox.withPublisher(publisher(executor, table))(Outbox.publishAll(events))
    return options?.maxPayloadBytes === undefined && options?.maxRetries === undefined
      ? effect
      : Effect.provideService(effect, Outbox.PublishSettings, settingsOf(options))
  })

/**
 * Publishes one event, or several with one INSERT, in the caller's open
 * transaction: they commit or roll back with it. Rejects with
 * `InvalidEvent` (nothing written; the transaction is the caller's to
 * decide) or `StoreError` (the statement failed; PostgreSQL has aborted the
 * transaction). With an OpenTelemetry SDK registered, a `publish <type>`
 * producer span is a child of the active span and its context is stored in
 * each event's `metadata.traceparent`, for the relay to continue the trace.
 *
 * Not counted in `outbox_events_published_total`: the caller owns the
 * COMMIT, which only the Effect API's `Outbox.transaction` sees.
 *
 * @category publishing
 * @since 0.1.0
 */
export function publish(executor: Executor, event: EventInput, options?: PublishOptions): Promise<PublishedEvent>
export function publish(
  executor: Executor,
  events: ReadonlyArray<EventInput>,
  options?: PublishOptions
): Promise<ReadonlyArray<PublishedEvent>>
export function publish(
  executor: Executor,
  input: EventInput | ReadonlyArray<EventInput>,
  options?: PublishOptions
): Promise<PublishedEvent | ReadonlyArray<PublishedEvent>> {
  const many = Array.isArray(input)
  const inputs: ReadonlyArray<EventInput> = many ? input : [input as EventInput]
  const viaEffect = (): Promise<PublishedEvent | ReadonlyArray<PublishedEvent>> => {
    const effect = publishEffect(executor, inputs, options)
    return many ? run(effect) : run(Effect.map(effect, (rows) => rows[0]!))
  }
  if (otelRegistered()) return viaEffect()
  // Without an OpenTelemetry SDK there is no span to open and no trace context to store, so the core's
  // validation and statement run without a fiber: a fiber per call cost 12–27 µs of Node CPU on a loaded
  // machine, 10–15 % of a one-row business transaction (`npm run bench:client`). Same checks, same INSERT,
  // same errors as `publishEffect`.
  if (inputs.length === 0) return Promise.resolve([])
  const table = quoted.get(options?.table ?? "outbox")
  if (table === undefined) return viaEffect() // the table's first use: validates its name
  const events = Outbox.validateAllSync(inputs, settingsOf(options))
  if (events instanceof InvalidEvent) return Promise.reject(events)
  const statement = PublishStatement.insert(table, events)
  // a driver that throws instead of rejecting (a closed client) still rejects, with a StoreError
  return new Promise<{ readonly rows: ReadonlyArray<any> }>((resolve) =>
    resolve(executor.query(statement.text, statement.values as Array<unknown>))
  ).then(
    (result) => many ? result.rows.map(PublishStatement.toPublished) : PublishStatement.toPublished(result.rows[0]),
    (error: unknown) => Promise.reject(storeError("publish")(error))
  )
}

const settingsOf = (options: PublishOptions | undefined): Outbox.PublishSettings =>
  options?.maxPayloadBytes === undefined && options?.maxRetries === undefined ? defaults : {
    maxPayloadBytes: options.maxPayloadBytes ?? defaults.maxPayloadBytes,
    maxRetries: options.maxRetries ?? defaults.maxRetries
  }
