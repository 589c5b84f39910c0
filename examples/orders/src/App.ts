/**
 * The orders service: `POST /orders` writes an order and an `OrderCreated`
 * event in one outbox transaction; `GET /orders/:id` reads it back. The
 * in-process relay delivers each event to `OUTBOX_SINK_URL` (webhook) or,
 * when that is unset, to the log. `GET /metrics` serves the outbox metrics
 * to Prometheus and `GET /healthz` the outbox health to a probe (200 for OK
 * or WARN, 503 for CRITICAL). Traces go to `OTEL_EXPORTER_OTLP_ENDPOINT`
 * when it is set (`OutboxTelemetry.layerConfig`).
 *
 * Everything is a layer so that tests can start the same service against a
 * test database and a local webhook receiver; `main.ts` only launches it.
 */
import { NodeHttpServer } from "@effect/platform-node"
import * as Outbox from "@outbox/core/Outbox"
import type * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import * as LogSink from "@outbox/runtime/LogSink"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import { OutboxHealth } from "@outbox/sql/OutboxHealth"
import * as WebhookSink from "@outbox/runtime/WebhookSink"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import { randomUUID } from "node:crypto"
import { createServer } from "node:http"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** The body of `POST /orders`. */
export const CreateOrder = Schema.Struct({
  customerId: Schema.NonEmptyString,
  items: Schema.NonEmptyArray(Schema.Struct({
    sku: Schema.NonEmptyString,
    quantity: PositiveInt,
    unitPrice: NonNegative
  }))
})

/** The payload of the `OrderCreated` event. */
export interface OrderCreated {
  readonly orderId: string
  readonly customerId: string
  readonly items: typeof CreateOrder.Type["items"]
  readonly total: number
}

/** `Expected …\n  at ["a"]\nExpected …` → `Expected … at ["a"]; Expected …` */
const oneLine = (message: string) => message.replace(/\n\s+at /g, " at ").replace(/\n/g, "; ")

const json = (body: unknown, status: number) => HttpServerResponse.jsonUnsafe(body, { status })
const badRequest = (error: string) => json({ error }, 400)

/** Logs unexpected failures and answers 500 (interruptions are left alone). */
const internalError = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.catchCause(self, (cause) =>
    Cause.hasInterruptsOnly(cause)
      ? Effect.failCause(cause as Cause.Cause<never>)
      : Effect.as(Effect.logError("request failed", cause), json({ error: "internal error" }, 500)))

/** Creates the example's own table (idempotent). */
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
})

/** `POST /orders`: 201 `{ orderId }`, or 400 `{ error }` on bad JSON or an invalid order. */
const createOrder = HttpRouter.add(
  "POST",
  "/orders",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const body = yield* Effect.option(request.json)
    if (Option.isNone(body)) return badRequest("the body must be valid JSON")
    const decoded = yield* Effect.result(Schema.decodeUnknownEffect(CreateOrder)(body.value, { errors: "all" }))
    if (decoded._tag === "Failure") return badRequest(`invalid order: ${oneLine(decoded.failure.message)}`)
    const order = decoded.success
    const orderId = randomUUID()
    const total = order.items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0)
    const sql = yield* SqlClient.SqlClient
    const payload: OrderCreated = { orderId, customerId: order.customerId, items: order.items, total }
    // the order row and its event commit (or roll back) together
    yield* Outbox.transaction(Effect.gen(function*() {
      yield* sql`INSERT INTO orders (id, customer_id, items, total)
                 VALUES (${orderId}, ${order.customerId}, ${JSON.stringify(order.items)}::jsonb, ${total})`
      yield* Outbox.publish({ aggregateType: "Order", aggregateId: orderId, eventType: "OrderCreated", payload })
    }))
    return json({ orderId }, 201)
  }).pipe(internalError)
)

const Uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

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
  }).pipe(internalError)
)

/**
 * `GET /healthz`: the outbox health (`OutboxHealth.health`) for a probe:
 * 200 when OK or WARN, 503 when CRITICAL or when the database cannot be read;
 * the body is `{ level, findings }`.
 */
const healthz = HttpRouter.add(
  "GET",
  "/healthz",
  Effect.gen(function*() {
    const health = yield* OutboxHealth
    const report = yield* Effect.result(health.health)
    if (report._tag === "Failure") return json({ level: "CRITICAL", error: report.failure.message }, 503)
    const { findings, level } = report.success
    return json({ level, findings }, level === "CRITICAL" ? 503 : 200)
  }).pipe(internalError)
)

/** The HTTP routes (with `/metrics` for Prometheus). */
export const Routes = Layer.mergeAll(createOrder, getOrder, healthz, OutboxTelemetry.layerPrometheusRoute())

/** The sink: a webhook when `OUTBOX_SINK_URL` is set, the log otherwise. */
export const SinkLive: Layer.Layer<OutboxSink, Config.ConfigError> = Layer.unwrap(Effect.gen(function*() {
  const url = yield* Config.option(Config.URL("OUTBOX_SINK_URL"))
  if (Option.isNone(url)) {
    yield* Effect.logInfo("OUTBOX_SINK_URL is unset: events are delivered to the log")
    return LogSink.layer
  }
  yield* Effect.logInfo(`events are delivered to the webhook ${url.value}`)
  return WebhookSink.layer({ url: url.value.toString() })
}))

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
  /** Default `SinkLive` (webhook when `OUTBOX_SINK_URL` is set, log otherwise). */
  readonly sink?: Layer.Layer<OutboxSink, Config.ConfigError> | undefined
  /** Overrides of the outbox configuration (e.g. a short poll interval in tests). */
  readonly config?: Partial<OutboxConfig.Options> | undefined
  /** How often to log relay progress (default 3 seconds). */
  readonly progressEvery?: Duration.Input | undefined
}

/**
 * The whole service: the `orders` table, the outbox store and relay with its
 * sink, the progress log, and the HTTP server. Needs a `SqlClient`; exposes
 * `HttpServer` (for its address), `Relay` and `OutboxStore`.
 */
export const layer = (options: Options) =>
  HttpRouter.serve(Routes, { disableListenLog: true }).pipe(
    Layer.merge(ListenLog),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: options.port, host: options.host ?? "127.0.0.1" })),
    Layer.provideMerge(progressLayer(options.progressEvery)),
    Layer.provideMerge(OutboxLive.layer({ config: options.config })),
    Layer.provide(options.sink ?? SinkLive),
    Layer.provideMerge(Layer.effectDiscard(migrate))
  )
