/**
 * The orders service: `POST /orders` writes an order and an `OrderCreated`
 * event in one outbox transaction; `POST /orders/:id/cancel` cancels it and
 * publishes `OrderCancelled` the same way (with `OUTBOX_ORDERING=key` a
 * consumer gets each order's events in that order, whatever the number of
 * workers and retries); `GET /orders/:id` reads it back. The
 * in-process relay delivers each event to `OUTBOX_SINK_URL` (webhook) or,
 * when that is unset, to the log. `GET /metrics` serves the outbox metrics
 * to Prometheus and `GET /healthz` the outbox health and the sink's
 * connection to a probe (200 for OK or WARN, 503 for CRITICAL or a sink
 * that cannot connect). Traces go to `OTEL_EXPORTER_OTLP_ENDPOINT`
 * when it is set (`OutboxTelemetry.layerConfig`).
 *
 * Bad client input is answered 4xx, never 500: 415 when the body is not
 * sent as JSON, 413 when it is over `maxBodySize` (1 MiB by default), 400
 * when it is not UTF-8 JSON or not a valid order (the message names the
 * field, including text that PostgreSQL cannot store).
 *
 * Everything is a layer so that tests can start the same service against a
 * test database and a local webhook receiver; `main.ts` only launches it.
 */
import { NodeHttpServer } from "@effect/platform-node"
import * as Outbox from "@outbox/core/Outbox"
import type * as OutboxConfig from "@outbox/core/OutboxConfig"
import { InvalidEvent, StoreError } from "@outbox/core/OutboxError"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as LogSink from "@outbox/runtime/sinks/LogSink"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import { OutboxHealth } from "@outbox/sql/OutboxHealth"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as SinkSetupError from "@outbox/runtime/sinks/SinkSetupError"
import * as SinkUrl from "@outbox/runtime/sinks/SinkUrl"
import * as ByteSize from "effect/ByteSize"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as SqlError from "effect/sql/SqlError"
import * as HttpIncomingMessage from "effect/http/HttpIncomingMessage"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import { randomUUID } from "node:crypto"
import { createServer } from "node:http"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** A UTF-16 code unit of a surrogate pair without its other half. */
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * A non-empty string that PostgreSQL can store in `text` and in `jsonb`.
 * Every string of the order goes to one or both (`orders.customer_id`,
 * `orders.items`, the event's payload), and PostgreSQL refuses NUL (`22021`
 * in text, `22P05` in jsonb) and a lone surrogate's `\ud800` escape in jsonb
 * (`22P02`); in a text column the driver would even store a lone surrogate
 * silently as U+FFFD. Checking here makes each of them a 400 that names the
 * field, before any SQL runs; JSON allows both as escapes, so a valid JSON
 * body can carry them.
 */
export const PgText = Schema.NonEmptyString.check(
  Schema.makeFilter((s: string) =>
    !s.includes("\u0000") || "must not contain the NUL character (\\u0000), which PostgreSQL cannot store"
  ),
  Schema.makeFilter((s: string) =>
    !loneSurrogate.test(s) ||
    "must not contain a lone surrogate (\\ud800-\\udfff without its pair), which is not Unicode text and PostgreSQL cannot store"
  )
)

/** The sum of quantity × unitPrice. */
const orderTotal = (items: ReadonlyArray<{ readonly quantity: number; readonly unitPrice: number }>) =>
  items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0)

/**
 * The body of `POST /orders`. Unknown keys are dropped by decoding, so only
 * the checked fields reach the database. The total must be a finite number:
 * a huge quantity × unitPrice overflows to `Infinity`, which the event's JSON
 * payload cannot carry.
 */
export const CreateOrder = Schema.Struct({
  customerId: PgText,
  items: Schema.NonEmptyArray(Schema.Struct({
    sku: PgText,
    quantity: PositiveInt,
    unitPrice: NonNegative
  }))
}).check(Schema.makeFilter((order) =>
  Number.isFinite(orderTotal(order.items)) ||
  { path: ["items"], issue: "the order total (the sum of quantity × unitPrice) is too large to be a number" }
))

/** The payload of the `OrderCreated` event. */
export interface OrderCreated {
  readonly orderId: string
  readonly customerId: string
  readonly items: typeof CreateOrder.Type["items"]
  readonly total: number
}

/** `Expected …\n  at ["a"]\nExpected …` → `Expected … at ["a"]; Expected …` */
const oneLine = (message: string) => message.replace(/\n\s+at /g, " at ").replace(/\n/g, "; ")

/**
 * The default of `Options.maxBodySize` (and `MAX_BODY_SIZE`): 1 MiB, the
 * outbox's default payload limit too, and far more than any real order.
 */
export const defaultMaxBodySize: ByteSize.ByteSize = ByteSize.mebibytes(1)

const json = (body: unknown, status: number) => HttpServerResponse.jsonUnsafe(body, { status })
const badRequest = (error: string) => json({ error }, 400)

/**
 * A request the client has to fix. `answerFailures` answers it with its
 * `status` and `{ error: message }` and does not log it as a server failure.
 */
export class ClientError extends Data.TaggedError("ClientError")<{
  readonly status: 400 | 413 | 415
  readonly message: string
}> {}

/**
 * The SQLSTATEs PostgreSQL raises for text it cannot store: 22021 (invalid
 * byte sequence: NUL in text), 22P05 (untranslatable character: `\u0000` in
 * jsonb) and 22P02 (invalid text representation: a lone surrogate's escape in
 * jsonb). In this app every text value comes from the request (the order id
 * is generated, and the id of `GET /orders/:id` is checked first), so these
 * mean bad input, not a server fault.
 */
const clientDataSqlStates: ReadonlySet<string> = new Set(["22021", "22P05", "22P02"])

/**
 * The PostgreSQL error fields under `error`: `SqlError` → its reason → the
 * driver's `Error` carrying `code`, possibly wrapped in a `StoreError` first.
 * Follows `cause` a few levels only, as a cause chain may loop.
 */
const postgresError = (error: unknown): { readonly code: string; readonly message: string } | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const { code, message } = current as { readonly code?: unknown; readonly message?: unknown }
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) {
      return { code, message: typeof message === "string" ? message : code }
    }
    current = (current as { readonly cause?: unknown }).cause
  }
  return undefined
}

/**
 * The client's share of a failure, if it is one: a `ClientError`; an event
 * the outbox refused (`InvalidEvent`: 413 for its size, 400 otherwise), as
 * the only free content of the `OrderCreated` event is the client's order;
 * or PostgreSQL refusing the client's text. The last two are backstops: the
 * request schema and the body limit refuse such input first.
 */
const clientFailure = (error: unknown): ClientError | undefined => {
  if (error instanceof ClientError) return error
  if (error instanceof InvalidEvent) {
    return error.reason === "PayloadTooLarge"
      ? new ClientError({ status: 413, message: `the order is too large: ${error.message}` })
      : new ClientError({ status: 400, message: `invalid order: ${error.message}` })
  }
  const pg = postgresError(error)
  return pg !== undefined && clientDataSqlStates.has(pg.code)
    ? new ClientError({ status: 400, message: `invalid order: PostgreSQL cannot store its text (${pg.message})` })
    : undefined
}

/** A failure of the database being unavailable for now (`StoreError.retryable`, a connection lost or refused). */
const unavailable = (error: unknown): boolean =>
  error instanceof StoreError
    ? error.retryable
    : SqlError.isSqlError(error) && error.reason._tag === "ConnectionError"

const describe = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)

/**
 * Answers every failure of a route: 4xx for the client's failures
 * (`clientFailure`), 503 (`Retry-After: 1`) while the database is
 * unavailable (`unavailable`), and for anything else a logged 500. Interruptions are
 * left alone. A backstop answer is logged as a warning, because it means the
 * request schema let bad input through.
 */
export const answerFailures = <E, R>(
  self: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchCause(self, (cause) => {
    if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
    const error = Option.getOrUndefined(Cause.findErrorOption(cause))
    const client = clientFailure(error)
    if (client === undefined) {
      // the database unreachable, restarting or out of connections: not the client's fault and not a bug,
      // so 503 with a hint to retry (the order was not taken: its transaction did not commit)
      return unavailable(error)
        ? Effect.as(
          Effect.logWarning(`request refused: the database is unavailable: ${describe(error)}`),
          json({ error: "the database is unavailable; retry shortly" }, 503).pipe(
            HttpServerResponse.setHeader("retry-after", "1")
          )
        )
        : Effect.as(Effect.logError("request failed", cause), json({ error: "internal error" }, 500))
    }
    const answer = json({ error: client.message }, client.status)
    return error instanceof ClientError
      ? Effect.succeed(answer)
      : Effect.as(
        Effect.logWarning(`a request that passed validation was refused by the outbox or PostgreSQL: answered ${client.status}`, cause),
        answer
      )
  })

/**
 * The media types `POST /orders` reads: `application/json` and the
 * `+json` suffix (RFC 6839), with any parameters and in any case.
 */
const isJson = (contentType: string | undefined) => {
  const mediaType = (contentType ?? "").split(";")[0]!.trim().toLowerCase()
  return mediaType === "application/json" || /^application\/[^/]+\+json$/.test(mediaType)
}

/** Strict: a body that is not UTF-8 is refused, not decoded to U+FFFD replacement characters. */
const utf8 = new TextDecoder("utf-8", { fatal: true })

/** 413, with the limit in the message so that the client knows what fits. */
const tooLarge = (limit: ByteSize.ByteSize) =>
  new ClientError({
    status: 413,
    message: `the body is larger than the limit of ${ByteSize.format(limit, { system: "binary" })}`
  })

/**
 * The request's body as JSON, or a `ClientError`: 415 unless it is sent as
 * JSON, 413 above the `HttpIncomingMessage.MaxBodySize` limit (the default
 * limit when none is set, so that `Routes` served elsewhere are bounded too),
 * 400 when it is not UTF-8 JSON. A `content-length` over the limit is refused
 * before anything is read; a chunked body is read only up to the limit.
 */
const readJson = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (!isJson(request.headers["content-type"])) {
    return yield* new ClientError({ status: 415, message: "the body must be JSON, sent with content-type: application/json" })
  }
  const limit = (yield* HttpIncomingMessage.MaxBodySize) ?? defaultMaxBodySize
  const length = request.headers["content-length"]
  // Number(…) of a malformed header is NaN, which compares false; Node refuses those anyway
  if (length !== undefined && Number(length) > Number(limit)) return yield* tooLarge(limit)
  const bytes = yield* request.arrayBuffer.pipe(
    Effect.provideService(HttpIncomingMessage.MaxBodySize, limit),
    Effect.mapError((error) =>
      error.reason._tag === "RequestParseError" && error.reason.reason === "BodyTooLarge"
        ? tooLarge(limit)
        : new ClientError({ status: 400, message: "the body could not be read" }))
  )
  const text = yield* Effect.try({
    try: () => utf8.decode(bytes),
    catch: () => new ClientError({ status: 400, message: "the body must be UTF-8 encoded JSON" })
  })
  return yield* Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: () => new ClientError({ status: 400, message: "the body must be valid JSON" })
  })
})

/** The body of `POST /orders`, decoded: a `ClientError` (4xx) when it is not a valid order. */
const readOrder = Effect.flatMap(readJson, (body) =>
  Effect.mapError(
    Schema.decodeUnknownEffect(CreateOrder)(body, { errors: "all" }),
    (error) => new ClientError({ status: 400, message: `invalid order: ${oneLine(error.message)}` })
  ))

/**
 * Creates the example's own table (idempotent); waits for the database like
 * the outbox's own start-up (`PgOutboxStore.retryStartup`).
 */
export const migrate = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS orders (
      id          uuid        PRIMARY KEY,
      customer_id text        NOT NULL,
      items       jsonb       NOT NULL,
      total       numeric     NOT NULL,
      created_at  timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`ALTER TABLE orders ADD COLUMN IF NOT EXISTS cancelled_at timestamptz`
}).pipe(PgOutboxStore.retryStartup())

/**
 * Writes the order and its `OrderCreated` event in one transaction and
 * answers 201 `{ orderId }`. It trusts `order` to be a decoded `CreateOrder`;
 * exported so that tests can bypass the schema and check the backstop.
 */
export const placeOrder = Effect.fnUntraced(function*(order: typeof CreateOrder.Type) {
  const orderId = randomUUID()
  const total = orderTotal(order.items)
  const sql = yield* SqlClient.SqlClient
  const payload: OrderCreated = { orderId, customerId: order.customerId, items: order.items, total }
  // the order row and its event commit (or roll back) together
  yield* Outbox.transaction(Effect.gen(function*() {
    yield* sql`INSERT INTO orders (id, customer_id, items, total)
               VALUES (${orderId}, ${order.customerId}, ${JSON.stringify(order.items)}::jsonb, ${total})`
    yield* Outbox.publish({ aggregateType: "Order", aggregateId: orderId, eventType: "OrderCreated", payload })
  }))
  return json({ orderId }, 201)
})

/**
 * `POST /orders`: 201 `{ orderId }`; 400 `{ error }` on bad JSON or an
 * invalid order, 413 above the body limit, 415 when the body is not JSON.
 */
const createOrder = HttpRouter.add(
  "POST",
  "/orders",
  Effect.flatMap(readOrder, placeOrder).pipe(answerFailures)
)

const Uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * `POST /orders/:id/cancel`: cancels the order and publishes `OrderCancelled`
 * in one transaction; 200 `{ orderId }`, 404 for an unknown order, 409 for
 * one cancelled already, 400 when the id is not a UUID.
 */
const cancelOrder = HttpRouter.add(
  "POST",
  "/orders/:id/cancel",
  Effect.gen(function*() {
    const { id } = yield* HttpRouter.schemaPathParams(Schema.Struct({ id: Schema.String }))
    if (!Uuid.test(id)) return badRequest("the order id must be a UUID")
    const sql = yield* SqlClient.SqlClient
    return yield* Outbox.transaction(Effect.gen(function*() {
      const cancelled = yield* sql<{ id: string }>`
        UPDATE orders SET cancelled_at = now() WHERE id = ${id} AND cancelled_at IS NULL RETURNING id`
      if (cancelled.length === 0) {
        const exists = yield* sql<{ id: string }>`SELECT id FROM orders WHERE id = ${id}`
        return exists.length === 0 ? json({ error: "not found" }, 404) : json({ error: "the order is cancelled already" }, 409)
      }
      yield* Outbox.publish({ aggregateType: "Order", aggregateId: id, eventType: "OrderCancelled", payload: { orderId: id } })
      return json({ orderId: id }, 200)
    }))
  }).pipe(answerFailures)
)

/** `GET /orders/:id`: 200 with the order, 404, or 400 when the id is not a UUID. */
const getOrder = HttpRouter.add(
  "GET",
  "/orders/:id",
  Effect.gen(function*() {
    const { id } = yield* HttpRouter.schemaPathParams(Schema.Struct({ id: Schema.String }))
    if (!Uuid.test(id)) return badRequest("the order id must be a UUID")
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ id: string; customer_id: string; items: unknown; total: string; created_at: Date }>`
      SELECT id, customer_id, items, total::text AS total, created_at FROM orders WHERE id = ${id}`
    const row = rows[0]
    if (row === undefined) return json({ error: "not found" }, 404)
    return json({
      orderId: row.id,
      customerId: row.customer_id,
      items: row.items,
      total: Number(row.total),
      createdAt: row.created_at.toISOString()
    }, 200)
  }).pipe(answerFailures)
)

/**
 * The sink's part of `/healthz`: its name, and for a sink with a connection
 * of its own (a broker) whether it is connected and, when not, why.
 */
interface SinkHealth {
  readonly name: string
  readonly connected?: boolean
  readonly detail?: string
}

/**
 * The sink's connection, as `/healthz` shows it. A sink that does not
 * answer within 2 seconds counts as not connected: a probe must get an
 * answer, and such a sink delivers nothing either.
 */
const sinkHealth = Effect.gen(function*() {
  const sink = yield* OutboxSink
  if (sink.connection === undefined) return { name: sink.name } satisfies SinkHealth
  const status = yield* sink.connection.pipe(
    Effect.timeoutOrElse({
      duration: Duration.seconds(2),
      orElse: () => Effect.succeed({ connected: false, detail: "the sink did not report its connection within 2 seconds" })
    })
  )
  return status.connected
    ? { name: sink.name, connected: true } satisfies SinkHealth
    : { name: sink.name, connected: false, detail: status.detail ?? "not connected" } satisfies SinkHealth
})

/**
 * `GET /healthz`: the outbox health (`OutboxHealth.health`) and the sink's
 * connection, for a probe. The body is `{ level, findings, sink }`, `sink`
 * being `{ name, connected, detail? }` for a sink with a connection of its
 * own (a broker) and `{ name }` otherwise (a webhook, the log). 200 when
 * OK or WARN; 503 when CRITICAL, when the database cannot be read
 * (`{ level, error, sink }`), or when the sink reports itself not connected:
 * the relay then delivers nothing, however healthy the database, which the
 * body says as the CRITICAL finding `sink`.
 */
const healthz = HttpRouter.add(
  "GET",
  "/healthz",
  Effect.gen(function*() {
    const health = yield* OutboxHealth
    const [report, sink] = yield* Effect.all([Effect.result(health.health), sinkHealth], { concurrency: 2 })
    const sinkDown = sink.connected === false
    if (report._tag === "Failure") return json({ level: "CRITICAL", error: report.failure.message, sink }, 503)
    const findings = sinkDown
      ? [...report.success.findings, {
        name: "sink",
        level: "CRITICAL",
        subject: sink.name,
        value: 0,
        threshold: 1,
        message: `the ${sink.name} sink is not connected: ${sink.detail ?? "not connected"}`
      }]
      : report.success.findings
    const level = sinkDown ? "CRITICAL" : report.success.level
    return json({ level, findings, sink }, level === "CRITICAL" ? 503 : 200)
  }).pipe(answerFailures)
)

/** The HTTP routes (with `/metrics` for Prometheus). */
export const Routes = Layer.mergeAll(createOrder, cancelOrder, getOrder, healthz, OutboxTelemetry.layerPrometheusRoute())

/**
 * The sink: the one `OUTBOX_SINK_URL` names (a webhook, NATS JetStream,
 * RabbitMQ, Redis Streams or Kafka, by scheme: `SinkUrl`), the log when it
 * is unset.
 */
export const SinkLive: Layer.Layer<OutboxSink, Config.ConfigError | SinkSetupError.SinkSetupError> = SinkUrl.layerConfig({
  orElse: Layer.unwrap(Effect.as(Effect.logInfo("OUTBOX_SINK_URL is unset: events are delivered to the log"), LogSink.layer))
})

/** Logs one line of relay progress every `every` (default 3 seconds), only when it changed. */
export const progressLayer = (every: Duration.Input = Duration.seconds(3)): Layer.Layer<never, never, Relay.Relay> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const relay = yield* Relay.Relay
    const last = yield* Ref.make("")
    yield* Effect.gen(function*() {
      const s = yield* relay.stats
      const line =
        `relay: ${s.claimed} claimed, ${s.completed} completed, ${s.retried} retried, ${s.deadLettered} dead-lettered`
      if ((yield* Ref.getAndSet(last, line)) !== line) yield* Effect.logInfo(line)
    }).pipe(Effect.repeat(Schedule.spaced(every)), Effect.forkScoped)
  }))

/** Logs where the server listens. */
const ListenLog = Layer.effectDiscard(
  HttpServer.addressFormattedWith((address) => Effect.logInfo(`orders service listening on ${address}`))
)

/** Options of `layer`. */
export interface Options {
  /** 0 picks a free port. */
  readonly port: number
  /** Default `127.0.0.1`. */
  readonly host?: string | undefined
  /** Default `SinkLive` (the sink `OUTBOX_SINK_URL` names, the log when it is unset). */
  readonly sink?: Layer.Layer<OutboxSink, Config.ConfigError | SinkSetupError.SinkSetupError> | undefined
  /** Overrides of the outbox configuration (e.g. a short poll interval in tests). */
  readonly config?: Partial<OutboxConfig.Options> | undefined
  /** How often to log relay progress (default 3 seconds). */
  readonly progressEvery?: Duration.Input | undefined
  /**
   * The largest request body read (default 1 MiB, e.g. `"256 KiB"`); a larger
   * one is answered 413. An order is far smaller, and without a limit a
   * client could make the server buffer a body of any size.
   */
  readonly maxBodySize?: ByteSize.Input | undefined
}


/**
 * The whole service: the `orders` table, the outbox store and relay with its
 * sink, the progress log, and the HTTP server. Needs a `SqlClient`; exposes
 * `HttpServer` (for its address), `Relay` and `OutboxStore`.
 *
 * The body limit is the server's `HttpIncomingMessage.MaxBodySize`, so every
 * body read stops there (the Node adapter then drains or closes instead of
 * buffering the rest). An invalid `maxBodySize` is a defect when the layer is
 * built: it is the caller's code, and `main.ts` has validated its variable.
 */
export const layer = (options: Options) =>
  HttpRouter.serve(Routes, { disableListenLog: true }).pipe(
    Layer.provide(Layer.sync(HttpIncomingMessage.MaxBodySize, () =>
      options.maxBodySize === undefined ? defaultMaxBodySize : ByteSize.fromInputUnsafe(options.maxBodySize))),
    Layer.merge(ListenLog),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: options.port, host: options.host ?? "127.0.0.1" })),
    Layer.provideMerge(progressLayer(options.progressEvery)),
    Layer.provideMerge(OutboxLive.layer({ config: options.config })),
    Layer.provide(options.sink ?? SinkLive),
    Layer.provideMerge(Layer.effectDiscard(migrate))
  )
