/**
 * The orders service: `POST /orders` writes an order and an `OrderCreated`
 * event in one transaction; `GET /orders/:id` reads it back. The in-process
 * relay delivers each event to `OUTBOX_SINK_URL` (webhook) or to the log.
 */
import { NodeHttpServer } from "@effect/platform-node"
import * as Outbox from "@outbox/core/Outbox"
import type * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import * as LogSink from "@outbox/runtime/LogSink"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as Relay from "@outbox/runtime/Relay"
import * as WebhookSink from "@outbox/runtime/WebhookSink"
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
const NonNegative = Schema.Number.check(Schema.isGreaterThanOrEqualTo(0))

/** The body of `POST /orders`. */
export const CreateOrder = Schema.Struct({
  customerId: Schema.NonEmptyString,
  items: Schema.NonEmptyArray(Schema.Struct({
    sku: Schema.NonEmptyString,
    quantity: PositiveInt,
    unitPrice: NonNegative
  }))
})

const badRequest = (error: string) => HttpServerResponse.jsonUnsafe({ error }, { status: 400 })

/** Creates the example's own table. */
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

const createOrder = HttpRouter.add(
  "POST",
  "/orders",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const json = yield* Effect.option(request.json)
    if (Option.isNone(json)) return badRequest("the body must be valid JSON")
    const decoded = yield* Effect.result(Schema.decodeUnknownEffect(CreateOrder)(json.value))
    if (decoded._tag === "Failure") return badRequest(`invalid order: ${decoded.failure.message}`)
    const order = decoded.success
    const orderId = randomUUID()
    const total = order.items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0)
    const sql = yield* SqlClient.SqlClient
    yield* Outbox.transaction(Effect.gen(function*() {
      yield* sql`INSERT INTO orders (id, customer_id, items, total)
                 VALUES (${orderId}, ${order.customerId}, ${JSON.stringify(order.items)}::jsonb, ${total})`
      yield* Outbox.publish({
        aggregateType: "Order",
        aggregateId: orderId,
        eventType: "OrderCreated",
        payload: { orderId, customerId: order.customerId, items: order.items, total }
      })
    }))
    return HttpServerResponse.jsonUnsafe({ orderId }, { status: 201 })
  }).pipe(
    Effect.catchCause((cause) =>
      Effect.as(Effect.logError("POST /orders failed", cause), HttpServerResponse.jsonUnsafe({ error: "internal error" }, { status: 500 }))
    )
  )
)

const getOrder = HttpRouter.add(
  "GET",
  "/orders/:id",
  Effect.gen(function*() {
    const { id } = yield* HttpRouter.schemaPathParams(Schema.Struct({ id: Schema.String }))
    if (!/^[0-9a-f-]{36}$/i.test(id)) return badRequest("the order id must be a UUID")
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ id: string; customer_id: string; items: unknown; total: string }>`
      SELECT id, customer_id, items, total::text FROM orders WHERE id = ${id}`
    const row = rows[0]
    if (row === undefined) return HttpServerResponse.jsonUnsafe({ error: "not found" }, { status: 404 })
    return HttpServerResponse.jsonUnsafe({ orderId: row.id, customerId: row.customer_id, items: row.items, total: Number(row.total) })
  }).pipe(Effect.orDie)
)

/** The HTTP routes. */
export const Routes = Layer.mergeAll(createOrder, getOrder)

/** The sink: a webhook when `OUTBOX_SINK_URL` is set, the log otherwise. */
export const SinkLive = Layer.unwrap(Effect.gen(function*() {
  const url = yield* Config.option(Config.URL("OUTBOX_SINK_URL"))
  return Option.isSome(url) ? WebhookSink.layer({ url: url.value.toString() }) : LogSink.layer
}))

/** Logs one line of relay progress every few seconds, when something changed. */
export const ProgressLive = Layer.effectDiscard(Effect.gen(function*() {
  const relay = yield* Relay.Relay
  const last = yield* Ref.make("")
  yield* Effect.gen(function*() {
    const s = yield* relay.stats
    const line = `relay: ${s.claimed} claimed, ${s.completed} completed, ${s.retried} retried, ${s.deadLettered} dead-lettered`
    if ((yield* Ref.getAndSet(last, line)) !== line) yield* Effect.logInfo(line)
  }).pipe(Effect.repeat(Schedule.spaced(Duration.seconds(3))), Effect.forkScoped)
}))

/**
 * The whole service on a port (0 = any free port): HTTP server, relay with
 * its sink (default: `SinkLive`), and progress log. Needs a `SqlClient`.
 */
export const layer = (options: {
  readonly port: number
  readonly sink?: Layer.Layer<OutboxSink, Config.ConfigError> | undefined
  readonly config?: Partial<OutboxConfig.Options> | undefined
}) =>
  HttpRouter.serve(Routes).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: options.port, host: "127.0.0.1" })),
    Layer.provideMerge(ProgressLive),
    Layer.provideMerge(OutboxLive.layer({ config: options.config })),
    Layer.provide(options.sink ?? SinkLive),
    Layer.provideMerge(Layer.effectDiscard(migrate))
  )

/** Logs where the server listens. */
export const logAddress = HttpServer.addressFormattedWith((address) => Effect.logInfo(`orders service listening on ${address}`))
