/**
 * The orders example relaying to the real brokers on this machine, each
 * chosen by its URL alone (`SinkUrl`, what `OUTBOX_SINK_URL` does): an
 * order posted over HTTP arrives in NATS JetStream (stream `OUTBOX`,
 * subject `outbox.Order.OrderCreated`, `Nats-Msg-Id` = tracking id), in
 * RabbitMQ (exchange `outbox`, routing key `Order.OrderCreated`,
 * `message_id` = tracking id) and in Redis (stream `outbox:Order`).
 */
import { assert, describe, it } from "@effect/vitest"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import * as SinkUrl from "@outbox/runtime/sinks/SinkUrl"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as HttpServer from "effect/http/HttpServer"
import { Redis } from "ioredis"
import { Connection } from "rabbitmq-client"
import * as App from "../src/App.ts"

const postOrder = (customerId: string) =>
  Effect.flatMap(Effect.service(HttpServer.HttpServer), (server) =>
    Effect.promise(() =>
      fetch(`${HttpServer.formatAddress(server.address)}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ customerId, items: [{ sku: "A", quantity: 1, unitPrice: 1 }] })
      }).then((res) => res.status)
    ))

/** Polls `find` every 20 ms until it finds something, for at most 10 s. */
const eventually = <A>(find: Effect.Effect<Option.Option<A>>) =>
  find.pipe(
    Effect.repeat({ until: Option.isSome, schedule: Schedule.spaced("20 millis") }),
    Effect.timeout("10 seconds"),
    Effect.map(Option.getOrThrow)
  )

/** The example relaying to `url`, with an order posted: the customer id to look for. */
const withApp = <A, E>(url: string, check: (customerId: string) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const customerId = `broker-${Math.random().toString(36).slice(2, 10)}`
    assert.strictEqual(yield* postOrder(customerId), 201)
    return yield* check(customerId)
  }).pipe(
    Effect.provide(App.layer({ port: 0, sink: SinkUrl.layer(url) }).pipe(Layer.provideMerge(TestDatabase.layer))),
    Effect.scoped
  )

interface Body {
  readonly trackingId: string
  readonly aggregateType: string
  readonly eventType: string
  readonly payload: { readonly customerId: string }
}

describe("orders example → brokers, chosen by URL", () => {
  it.live("nats://127.0.0.1:4222: stream OUTBOX, subject outbox.Order.OrderCreated, Nats-Msg-Id = tracking id", () =>
    Effect.gen(function*() {
      const nc = yield* Effect.acquireRelease(
        Effect.promise(() => connect({ servers: "127.0.0.1:4222" })),
        (nc) => Effect.promise(() => nc.close())
      )
      const jsm = yield* Effect.promise(() => jetstreamManager(nc))
      const message = yield* withApp("nats://127.0.0.1:4222", (customerId) =>
        eventually(Effect.promise(() =>
          jsm.streams.getMessage("OUTBOX", { last_by_subj: "outbox.Order.OrderCreated" }).then((m) =>
            m !== null && m.json<Body>().payload.customerId === customerId ? Option.some(m) : Option.none(),
            () => Option.none()
          )
        )))
      const body = message.json<Body>()
      assert.strictEqual(message.subject, "outbox.Order.OrderCreated")
      assert.strictEqual(message.header.get("Nats-Msg-Id"), body.trackingId)
      assert.strictEqual(message.header.get("outbox-tracking-id"), body.trackingId)
      assert.strictEqual(body.eventType, "OrderCreated")
    }).pipe(Effect.scoped), 60_000)

  it.live("amqp://guest:guest@127.0.0.1:5672: exchange outbox, routing key Order.OrderCreated, message_id = tracking id", () =>
    Effect.gen(function*() {
      const rabbit = yield* Effect.acquireRelease(
        Effect.sync(() => new Connection("amqp://guest:guest@127.0.0.1:5672")),
        (c) => Effect.promise(() => c.close())
      )
      // a queue bound first: a message no queue takes is a permanent error (mandatory), never a silent loss
      yield* Effect.promise(() => rabbit.exchangeDeclare({ exchange: "outbox", type: "topic", durable: true }))
      const { queue } = yield* Effect.promise(() => rabbit.queueDeclare({ exclusive: true }))
      yield* Effect.promise(() => rabbit.queueBind({ queue, exchange: "outbox", routingKey: "Order.OrderCreated" }))
      const message = yield* withApp("amqp://guest:guest@127.0.0.1:5672", (customerId) =>
        eventually(Effect.promise(() =>
          rabbit.basicGet({ queue, noAck: true }).then((m) => {
            if (m === undefined) return Option.none()
            // rabbitmq-client decodes an application/json body itself
            const body = (Buffer.isBuffer(m.body) ? JSON.parse(m.body.toString()) : m.body) as Body
            return body.payload.customerId === customerId ? Option.some({ m, body }) : Option.none()
          })
        )))
      assert.strictEqual(message.m.exchange, "outbox")
      assert.strictEqual(message.m.routingKey, "Order.OrderCreated")
      assert.strictEqual(message.m.messageId, message.body.trackingId)
      assert.strictEqual(message.m.durable, true)
    }).pipe(Effect.scoped), 60_000)

  it.live("redis://127.0.0.1:6379: stream outbox:Order, the tracking id in a field", () =>
    Effect.gen(function*() {
      const redis = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis("redis://127.0.0.1:6379")),
        (r) => Effect.promise(() => r.quit())
      )
      const fields = yield* withApp("redis://127.0.0.1:6379", (customerId) =>
        eventually(Effect.promise(() =>
          redis.xrevrange("outbox:Order", "+", "-", "COUNT", 50).then((entries) => {
            for (const [, flat] of entries) {
              const f: Record<string, string> = {}
              for (let i = 0; i < flat.length; i += 2) f[flat[i]!] = flat[i + 1]!
              if ((JSON.parse(f.body ?? "{}") as Body).payload?.customerId === customerId) return Option.some(f)
            }
            return Option.none()
          })
        )))
      const body = JSON.parse(fields.body!) as Body
      assert.strictEqual(fields["outbox-tracking-id"], body.trackingId)
      assert.strictEqual(fields["outbox-event-type"], "OrderCreated")
      assert.strictEqual(fields["outbox-aggregate-type"], "Order")
    }).pipe(Effect.scoped), 60_000)
})
