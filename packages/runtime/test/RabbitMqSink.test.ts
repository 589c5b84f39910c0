import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as SinkContract from "@outbox/testing/SinkContract"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { createConnection, createServer, type Server, type Socket } from "node:net"
import { Connection, type SyncMessage } from "rabbitmq-client"
import * as RabbitMqSink from "../src/sinks/RabbitMqSink.ts"
import * as WebhookSink from "../src/sinks/WebhookSink.ts"

// Against the real RabbitMQ on 127.0.0.1:5672 (guest/guest). Every test declares its own exchange
// (`outbox_test_<random>`) and exclusive queues, and deletes the exchange when it ends.

const BROKER_PORT = 5672
const urlTo = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`

const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 10)}`

const eventAt = (n: number, overrides: Partial<OutboxEvent> = {}): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 1n,
  trackingId: `4d7c2a1e-0f3b-4c5d-8e9f-${String(n).padStart(12, "0")}`,
  aggregateType: "Order",
  aggregateId: `order-${n}`,
  eventType: "OrderPlaced",
  payload: { n, note: "Zoë 🚚" },
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(Date.UTC(2026, 2, 1, 12, 0, n)),
  lockedUntil: new Date(Date.UTC(2026, 2, 1, 12, 1, n)),
  ...overrides
})

/** A plain connection of the test's own, straight to the broker: topology and reading messages back. */
const admin = Effect.acquireRelease(
  Effect.promise(() => {
    const connection = new Connection({ url: urlTo(BROKER_PORT), retryLow: 100, retryHigh: 500 })
    connection.on("error", () => {})
    return connection.onConnect().then(() => connection)
  }),
  (connection) => Effect.promise(() => connection.close())
)

interface Binding {
  readonly key: string
  /** A queue that refuses every message (max length 0, overflow reject-publish): the broker nacks. */
  readonly full?: boolean
}

/**
 * Declares `exchange` (durable topic, as the sink does) and one exclusive queue per binding; deletes the
 * exchange when the scope closes. Returns the queues' names, in order.
 */
const topology = (connection: Connection, exchange: string, bindings: ReadonlyArray<Binding>) =>
  Effect.gen(function*() {
    yield* Effect.acquireRelease(
      Effect.promise(() => connection.exchangeDeclare({ exchange, type: "topic", durable: true })),
      () => Effect.promise(() => connection.exchangeDelete({ exchange }).catch(() => undefined))
    )
    return yield* Effect.forEach(bindings, (binding) =>
      Effect.promise(() =>
        connection.queueDeclare({
          queue: "",
          exclusive: true,
          autoDelete: true,
          ...(binding.full === true ? { arguments: { "x-max-length": 0, "x-overflow": "reject-publish" } } : {})
        }).then(({ queue }) => connection.queueBind({ queue, exchange, routingKey: binding.key }).then(() => queue))
      ))
  })

/** Every message in `queue`, in order (consumed). */
const drain = (connection: Connection, queue: string) =>
  Effect.promise(() => {
    const messages: Array<SyncMessage> = []
    const next = (): Promise<Array<SyncMessage>> =>
      connection.basicGet({ queue, noAck: true }).then((message) => {
        if (message === undefined) return messages
        messages.push(message)
        return next()
      })
    return next()
  })

const trackingIdsIn = (connection: Connection, queue: string) =>
  Effect.map(drain(connection, queue), (messages) => messages.map((m) => m.messageId))

/**
 * A TCP proxy in front of the broker that reads the AMQP frames going through it: every `basic.publish`
 * that reached the broker is recorded (its JSON body's tracking id and payload), whether the broker then
 * routed it, returned it (unroutable: no queue has it, so no consumer could see it) or nacked it. In
 * `"mute"` mode it drops the broker's publisher confirms (`basic.ack` / `basic.nack`) and passes everything
 * else: the broker has the message, the client never hears back about it (a hung broker). `cut` closes
 * every connection.
 */
const makeTap = Effect.gen(function*() {
  let mode: "forward" | "mute" = "forward"
  const published: Array<SinkContract.Attempt> = []
  const clients = new Set<Socket>()
  const sockets = new Set<Socket>()
  const cut = () => {
    for (const socket of sockets) socket.destroy()
  }
  const server = yield* Effect.acquireRelease(
    Effect.callback<Server>((resume) => {
      const s = createServer((client) => {
        const upstream = createConnection({ host: "127.0.0.1", port: BROKER_PORT })
        clients.add(client)
        sockets.add(client)
        sockets.add(upstream)
        const bodies = new Map<number, { size: number; received: number; chunks: Array<Buffer> }>()
        const toBroker = frames(true, (raw, frame) => {
          upstream.write(raw)
          if (frame === undefined) return
          const body = bodies.get(frame.channel)
          if (frame.type === 1 && frame.payload.readUInt16BE(0) === 60 && frame.payload.readUInt16BE(2) === 40) {
            bodies.set(frame.channel, { size: -1, received: 0, chunks: [] }) // basic.publish
          } else if (frame.type === 2 && body !== undefined) {
            body.size = Number(frame.payload.readBigUInt64BE(4)) // content header: the body's size
          } else if (frame.type === 3 && body !== undefined) {
            body.chunks.push(frame.payload)
            body.received += frame.payload.length
            if (body.received >= body.size) {
              bodies.delete(frame.channel)
              const parsed = JSON.parse(Buffer.concat(body.chunks).toString("utf8"))
              published.push({ trackingId: parsed.trackingId, payload: parsed.payload })
            }
          }
        })
        const fromBroker = frames(false, (raw, frame) => {
          const confirm = frame !== undefined && frame.type === 1 && frame.payload.readUInt16BE(0) === 60 &&
            (frame.payload.readUInt16BE(2) === 80 || frame.payload.readUInt16BE(2) === 120)
          if (!(confirm && mode === "mute")) client.write(raw)
        })
        client.on("data", toBroker)
        upstream.on("data", fromBroker)
        const end = () => {
          client.destroy()
          upstream.destroy()
          clients.delete(client)
          sockets.delete(client)
          sockets.delete(upstream)
        }
        for (const socket of [client, upstream]) {
          socket.on("error", end)
          socket.on("close", end)
        }
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.callback<void>((resume) => {
        cut()
        s.close(() => resume(Effect.void))
      })
  )
  const port = (server.address() as { port: number }).port
  return {
    url: urlTo(port),
    published,
    setMode: (next: "forward" | "mute") => Effect.sync(() => void (mode = next)),
    cut: Effect.sync(cut),
    /** Client connections open now. */
    open: Effect.sync(() => clients.size)
  }
})

interface Frame {
  readonly type: number
  readonly channel: number
  readonly payload: Buffer
}

/**
 * Splits an AMQP 0-9-1 byte stream into whole frames (the client's stream starts with the 8-byte protocol
 * header, handed on as a piece without a frame), calling `onPiece` with each piece's bytes.
 */
const frames = (protocolHeader: boolean, onPiece: (raw: Buffer, frame: Frame | undefined) => void) => {
  let buffer = Buffer.alloc(0)
  let started = !protocolHeader
  return (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk])
    if (!started) {
      if (buffer.length < 8) return
      onPiece(buffer.subarray(0, 8), undefined)
      buffer = buffer.subarray(8)
      started = true
    }
    while (buffer.length >= 7) {
      const size = buffer.readUInt32BE(3)
      if (buffer.length < 8 + size) return
      const raw = Buffer.from(buffer.subarray(0, 8 + size))
      buffer = buffer.subarray(8 + size)
      onPiece(raw, { type: raw.readUInt8(0), channel: raw.readUInt16BE(1), payload: raw.subarray(7, 7 + size) })
    }
  }
}

const sinkIn = (options: RabbitMqSink.Options) =>
  Effect.flatMap(Effect.service(Scope.Scope), (scope) => Layer.buildWithScope(RabbitMqSink.layer(options), scope)).pipe(
    Effect.map(Context.get(OutboxSink))
  )

/** Waits (real time, for `it.live` tests) until `condition` holds. */
const eventually = (condition: Effect.Effect<boolean>, options: { readonly timeout?: number; readonly message?: string } = {}) =>
  Effect.gen(function*() {
    for (let waited = 0; waited <= (options.timeout ?? 10_000); waited += 20) {
      if (yield* condition) return
      yield* Effect.sleep("20 millis")
    }
    return yield* Effect.die(new Error(options.message ?? "condition did not hold in time"))
  })

const failureOf = <A>(effect: Effect.Effect<A, DeliveryError>) =>
  Effect.map(Effect.flip(effect), (error) => {
    assert.instanceOf(error, DeliveryError)
    return error
  })

// The contract, against the real broker through the tap: "succeed" and "hang" route to a bound queue (the
// tap dropping the confirms for "hang"), "failTransiently" to a queue that refuses every message (the broker
// nacks), "failPermanently" to a key no queue is bound to (the broker returns it). The attempts are the
// publishes the broker received, read off the wire: the returned and nacked ones reach no queue.

const contractSubject = Layer.unwrap(Effect.gen(function*() {
  const connection = yield* admin
  const exchange = unique("outbox_test")
  const tap = yield* makeTap
  yield* topology(connection, exchange, [{ key: "ok.#" }, { key: "full.#", full: true }])
  const prefix: Record<SinkContract.Behaviour, string> = {
    succeed: "ok",
    hang: "ok",
    failTransiently: "full",
    failPermanently: "nowhere"
  }
  let behaviour: SinkContract.Behaviour = "succeed"
  const probe = SinkContract.SinkProbe.of({
    behave: (next) =>
      Effect.andThen(Effect.sync(() => void (behaviour = next)), tap.setMode(next === "hang" ? "mute" : "forward")),
    attempts: Effect.sync(() => [...tap.published])
  })
  const sink = RabbitMqSink.layer({
    url: tap.url,
    exchange,
    timeout: "5 seconds",
    routingKey: (event) => `${prefix[behaviour]}.${event.eventType}`
  })
  return Layer.merge(sink, Layer.succeed(SinkContract.SinkProbe, probe))
}))

SinkContract.suite("RabbitMqSink", {
  layer: contractSubject,
  name: "rabbitmq",
  behaviours: SinkContract.allBehaviours,
  timeout: "5 seconds"
})

describe("RabbitMqSink", () => {
  it.live("publishes to the topic exchange: routing key <aggregateType>.<eventType>, messageId, persistent JSON, headers", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "Order.OrderPlaced" }])
      const sink = yield* sinkIn({ url: urlTo(BROKER_PORT), exchange })
      const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
      const event = eventAt(1, { metadata: { traceparent, tracestate: "vendor=1", source: "test" } })
      yield* sink.deliver(event)
      const [message, ...rest] = yield* drain(connection, queue!)
      assert.strictEqual(rest.length, 0)
      assert.strictEqual(message!.exchange, exchange)
      assert.strictEqual(message!.routingKey, "Order.OrderPlaced")
      assert.strictEqual(message!.messageId, event.trackingId)
      assert.isTrue(message!.durable) // delivery mode 2
      assert.strictEqual(message!.contentType, "application/json")
      assert.strictEqual(message!.type, "OrderPlaced")
      assert.strictEqual(message!.timestamp, Math.floor(event.createdAt.getTime() / 1000))
      assert.deepStrictEqual(message!.headers, {
        "outbox-tracking-id": event.trackingId,
        "outbox-event-type": "OrderPlaced",
        "outbox-aggregate-type": "Order",
        "outbox-aggregate-id": "order-1",
        traceparent,
        tracestate: "vendor=1"
      })
      // the client parses application/json bodies
      assert.deepStrictEqual(message!.body, JSON.parse(JSON.stringify(WebhookSink.body(event))))
    }))

  it.live("declares the exchange, a durable topic exchange, when it is missing", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      yield* Effect.addFinalizer(() => Effect.promise(() => connection.exchangeDelete({ exchange }).catch(() => undefined)))
      yield* sinkIn({ url: urlTo(BROKER_PORT), exchange })
      yield* Effect.promise(() => connection.exchangeDeclare({ exchange, passive: true })) // exists
      // redeclaring it with other properties would fail (PRECONDITION_FAILED); with these it is a no-op
      yield* Effect.promise(() => connection.exchangeDeclare({ exchange, type: "topic", durable: true }))
    }))

  it.live("the default routing key escapes dots and wildcards; the routingKey option overrides it", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [escaped, custom] = yield* topology(connection, exchange, [{ key: "billing_Invoice.Issued_v2" }, { key: "custom.#" }])
      const event = eventAt(2, { aggregateType: "billing.Invoice", eventType: "Issued#v2" })
      assert.strictEqual(RabbitMqSink.defaultRoutingKey(event), "billing_Invoice.Issued_v2")
      yield* Effect.flatMap(sinkIn({ url: urlTo(BROKER_PORT), exchange }), (sink) => sink.deliver(event))
      yield* Effect.flatMap(
        sinkIn({ url: urlTo(BROKER_PORT), exchange, routingKey: (e) => `custom.${e.aggregateId}` }),
        (sink) => sink.deliver(event)
      )
      assert.deepStrictEqual(yield* trackingIdsIn(connection, escaped!), [event.trackingId])
      const [routed] = yield* drain(connection, custom!)
      assert.strictEqual(routed!.routingKey, "custom.order-2")
    }))

  it.live("a message no queue takes is returned by the broker: a permanent DeliveryError, not a silent loss", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "Order.*" }])
      const sink = yield* sinkIn({ url: urlTo(BROKER_PORT), exchange })
      const error = yield* failureOf(sink.deliver(eventAt(3, { aggregateType: "Invoice" })))
      assert.isFalse(error.retryable)
      assert.include(error.message, "unroutable")
      assert.include(error.message, "Invoice.OrderPlaced")
      // the same sink goes on delivering
      yield* sink.deliver(eventAt(4))
      assert.deepStrictEqual(yield* trackingIdsIn(connection, queue!), [eventAt(4).trackingId])
    }))

  it.live("deliverBatch publishes the whole batch and awaits the confirms together", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "#" }])
      const sink = yield* sinkIn({ url: urlTo(BROKER_PORT), exchange })
      const events = Array.from({ length: 50 }, (_, i) => eventAt(100 + i))
      const outcomes = yield* sink.deliverBatch!(events)
      assert.deepStrictEqual(outcomes, events.map(() => undefined))
      // in order, once each
      assert.deepStrictEqual(yield* trackingIdsIn(connection, queue!), events.map((e) => e.trackingId))
      assert.deepStrictEqual(yield* sink.deliverBatch!([]), [])
    }))

  it.live("a partly failing batch: the confirmed delivered, the returned permanent, the nacked retryable", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "ok" }, { key: "full", full: true }])
      const routes = ["ok", "nowhere", "ok", "full", "ok", "nowhere", "throw"]
      const sink = yield* sinkIn({
        url: urlTo(BROKER_PORT),
        exchange,
        routingKey: (event) => {
          const route = routes[Number(event.id)]!
          if (route === "throw") throw new Error("no route for this one")
          return route
        }
      })
      const events = routes.map((_, i) => eventAt(i))
      const outcomes = yield* sink.deliverBatch!(events)
      const summary = outcomes.map((o) => o === undefined ? "delivered" : o.retryable ? "retryable" : "permanent")
      assert.deepStrictEqual(summary, ["delivered", "permanent", "delivered", "retryable", "delivered", "permanent", "permanent"])
      assert.include(outcomes[1]!.message, "unroutable")
      assert.include(outcomes[3]!.message, "nack")
      assert.include(outcomes[6]!.message, "no route for this one")
      assert.deepStrictEqual(yield* trackingIdsIn(connection, queue!), [events[0]!, events[2]!, events[4]!].map((e) => e.trackingId))
    }))

  it.live("access refused to the exchange is permanent, for every message of a batch", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      // an internal exchange: RabbitMQ refuses publishes to it (ACCESS_REFUSED), as for a user without write permission
      yield* Effect.acquireRelease(
        Effect.promise(() => connection.exchangeDeclare({ exchange, type: "topic", internal: true, durable: false })),
        () => Effect.promise(() => connection.exchangeDelete({ exchange }).catch(() => undefined))
      )
      const sink = yield* sinkIn({ url: urlTo(BROKER_PORT), exchange, declareExchange: false })
      const error = yield* failureOf(sink.deliver(eventAt(1)))
      assert.isFalse(error.retryable)
      assert.include(error.message, "ACCESS_REFUSED")
      const outcomes = yield* sink.deliverBatch!([eventAt(2), eventAt(3), eventAt(4)])
      for (const outcome of outcomes) {
        assert.instanceOf(outcome, DeliveryError)
        assert.isFalse(outcome.retryable, outcome.message)
        assert.include(outcome.message, "ACCESS_REFUSED")
      }
    }))

  it.effect("a batch whose confirms do not come is retryable for every event once the timeout passes (TestClock)", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      yield* topology(connection, exchange, [{ key: "#" }])
      const tap = yield* makeTap
      const sink = yield* sinkIn({ url: tap.url, exchange, timeout: "3 seconds" })
      yield* sink.deliver(eventAt(1))
      yield* tap.setMode("mute")
      const events = [eventAt(2), eventAt(3), eventAt(4)]
      const fiber = yield* Effect.forkChild(sink.deliverBatch!(events), { startImmediately: true })
      yield* RelayTestKit.eventually(Effect.sync(() => tap.published.length === 4))
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const outcomes = yield* Fiber.join(fiber)
      for (const outcome of outcomes) {
        assert.instanceOf(outcome, DeliveryError)
        assert.isTrue(outcome.retryable)
        assert.include(outcome.message, "did not confirm")
      }
    }))

  it.live("a connection lost while confirms are outstanding: every unconfirmed event is retryable, none delivered", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "#" }])
      const tap = yield* makeTap
      const sink = yield* sinkIn({ url: tap.url, exchange, reconnectDelay: { min: "50 millis", max: "200 millis" } })
      yield* sink.deliver(eventAt(1))
      yield* tap.setMode("mute")
      const events = Array.from({ length: 10 }, (_, i) => eventAt(10 + i))
      const fiber = yield* Effect.forkChild(sink.deliverBatch!(events), { startImmediately: true })
      // the broker has them all, its confirms dropped by the tap; then the connection is lost
      yield* eventually(
        Effect.map(Effect.promise(() => connection.queueDeclare({ queue: queue!, passive: true })), (q) => q.messageCount === 11)
      )
      yield* tap.cut
      const outcomes = yield* Fiber.join(fiber)
      for (const outcome of outcomes) {
        assert.instanceOf(outcome, DeliveryError)
        assert.isTrue(outcome.retryable, outcome.message)
      }
      // the broker did take them (the confirms were lost): at-least-once, the relay will publish them again
      assert.strictEqual((yield* trackingIdsIn(connection, queue!)).length, 11)
      // the sink reconnects by itself
      yield* tap.setMode("forward")
      yield* eventually(Effect.map(sink.connection!, (status) => status.connected))
      yield* sink.deliver(eventAt(30))
    }))

  it.live("outage mid-drain (TcpProxy refuse, then forward): retryable failures, then it reconnects and delivers again", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "#" }])
      const proxy = yield* TcpProxy.make({ port: BROKER_PORT })
      const sink = yield* sinkIn({
        url: urlTo(proxy.port),
        exchange,
        timeout: "2 seconds",
        reconnectDelay: { min: "50 millis", max: "200 millis" }
      })
      assert.deepStrictEqual(yield* sink.connection!, { connected: true })
      const delivered: Array<string> = []
      const failed: Array<DeliveryError> = []
      let n = 0
      const deliverNext = Effect.suspend(() => {
        const event = eventAt(n++)
        return Effect.match(sink.deliver(event), {
          onSuccess: () => void delivered.push(event.trackingId),
          onFailure: (error) => void failed.push(error)
        })
      })
      // a drain in the background, one event after the other
      const drainer = yield* Effect.forkChild(
        Effect.forever(Effect.andThen(deliverNext, Effect.sleep("5 millis"))),
        { startImmediately: true }
      )
      yield* eventually(Effect.sync(() => delivered.length >= 5))
      yield* proxy.setMode("refuse")
      yield* eventually(Effect.sync(() => failed.length >= 5))
      const status = yield* sink.connection!
      assert.isFalse(status.connected)
      assert.isString(status.detail)
      const deliveredBefore = delivered.length
      yield* proxy.setMode("forward")
      yield* eventually(Effect.sync(() => delivered.length >= deliveredBefore + 5), { timeout: 15_000 })
      yield* Fiber.interrupt(drainer)
      for (const error of failed) assert.isTrue(error.retryable, error.message)
      // nothing reported delivered without the broker's confirm
      const received = new Set(yield* trackingIdsIn(connection, queue!))
      for (const trackingId of delivered) assert.isTrue(received.has(trackingId), `${trackingId} delivered but not in the queue`)
      assert.deepStrictEqual(yield* sink.connection!, { connected: true })
    }), 30_000)

  it.live("the layer builds while the broker is unreachable; deliveries fail retryably until it is back", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      const [queue] = yield* topology(connection, exchange, [{ key: "#" }])
      const proxy = yield* TcpProxy.make({ port: BROKER_PORT })
      yield* proxy.setMode("refuse")
      const sink = yield* sinkIn({ url: urlTo(proxy.port), exchange, reconnectDelay: { min: "50 millis", max: "200 millis" } })
      const status = yield* sink.connection!
      assert.isFalse(status.connected)
      const error = yield* failureOf(sink.deliver(eventAt(1)))
      assert.isTrue(error.retryable)
      assert.include(error.message, "unreachable")
      yield* proxy.setMode("forward")
      yield* eventually(Effect.map(sink.connection!, (s) => s.connected))
      yield* sink.deliver(eventAt(2))
      assert.deepStrictEqual(yield* trackingIdsIn(connection, queue!), [eventAt(2).trackingId])
    }))

  it.live("the layer fails when the broker refuses the login, or the exchange", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const login = yield* Effect.flip(sinkIn({ url: "amqp://guest:wrong@127.0.0.1:5672", exchange: unique("outbox_test") }))
      assert.strictEqual(login._tag, "SinkSetupError")
      assert.strictEqual(login.reason, "Connect")
      assert.include(login.message, "ACCESS_REFUSED")
      assert.notInclude(login.message, "wrong")

      const fanout = unique("outbox_test")
      yield* Effect.acquireRelease(
        Effect.promise(() => connection.exchangeDeclare({ exchange: fanout, type: "fanout", autoDelete: true })),
        () => Effect.promise(() => connection.exchangeDelete({ exchange: fanout }).catch(() => undefined))
      )
      const inequivalent = yield* Effect.flip(sinkIn({ url: urlTo(BROKER_PORT), exchange: fanout }))
      assert.strictEqual(inequivalent.reason, "Connect")
      assert.include(inequivalent.message, "PRECONDITION_FAILED")

      const missing = yield* Effect.flip(sinkIn({ url: urlTo(BROKER_PORT), exchange: unique("outbox_test"), declareExchange: false }))
      assert.strictEqual(missing.reason, "Connect")
      assert.include(missing.message, "NOT_FOUND")

      const badUrl = yield* Effect.flip(sinkIn({ url: "http://guest:secret@127.0.0.1:5672" }))
      assert.strictEqual(badUrl.reason, "InvalidOptions")
      assert.notInclude(badUrl.message, "secret")
      const badTimeout = yield* Effect.flip(sinkIn({ url: urlTo(BROKER_PORT), timeout: "soon" as Duration.Input }))
      assert.strictEqual(badTimeout.reason, "InvalidOptions")
    }))

  it.live("the layer closes its channel and connection with its scope, also while the broker is down", () =>
    Effect.gen(function*() {
      const connection = yield* admin
      const exchange = unique("outbox_test")
      yield* topology(connection, exchange, [{ key: "#" }])
      const tap = yield* makeTap
      const scope = yield* Scope.make()
      const sink = yield* Scope.provide(sinkIn({ url: tap.url, exchange }), scope)
      yield* sink.deliver(eventAt(1))
      assert.strictEqual(yield* tap.open, 1)
      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.map(tap.open, (open) => open === 0))

      // closing a sink whose broker is unreachable does not wait for it
      const proxy = yield* TcpProxy.make({ port: BROKER_PORT })
      yield* proxy.setMode("refuse")
      const down = yield* Scope.make()
      yield* Scope.provide(sinkIn({ url: urlTo(proxy.port), exchange }), down)
      const started = Date.now()
      yield* Scope.close(down, Exit.void)
      assert.isBelow(Date.now() - started, 1_000)
    }))

  it.live("connection reports the client's state", () =>
    Effect.gen(function*() {
      const exchange = unique("outbox_test")
      yield* topology(yield* admin, exchange, [])
      const sink = yield* sinkIn({ url: urlTo(BROKER_PORT), exchange })
      assert.deepStrictEqual(yield* sink.connection!, { connected: true })
      assert.strictEqual(sink.name, "rabbitmq")
    }))
})

describe("RabbitMqSink.classify", () => {
  /** What rabbitmq-client rejects a publish with: an Error with the AMQP reply code's name as `code`. */
  const amqpError = (code: string, message: string) => Object.assign(new Error(message), { code })
  const tooLarge = amqpError(
    "PRECONDITION_FAILED",
    "BasicPublish: PRECONDITION_FAILED - message size 200000 is larger than configured max size 100000"
  )
  it("a message over the broker's max_message_size is permanent; another one closed with it is retryable", () => {
    const big = RabbitMqSink.classify(tooLarge, 200_000, "outbox")
    assert.isFalse(big.retryable)
    assert.include(big.message, "too large")
    assert.isTrue(RabbitMqSink.classify(tooLarge, 10, "outbox").retryable)
    // the others of the batch see only CH_CLOSE: their own size decides
    const closed: RabbitMqSink.ChannelClosed = { _tag: "TooLarge", max: 100_000 }
    const chClose = amqpError("CH_CLOSE", "channel is closed")
    assert.isFalse(RabbitMqSink.classify(chClose, 150_000, "outbox", closed).retryable)
    assert.isTrue(RabbitMqSink.classify(chClose, 10, "outbox", closed).retryable)
    assert.isTrue(RabbitMqSink.classify(chClose, 10, "outbox").retryable)
  })

  it("connection loss, timeouts, nacks and a missing exchange are retryable; encoding errors permanent", () => {
    for (const code of ["CONN_CLOSE", "CH_CLOSE", "TIMEOUT", "SOCKET_TIMEOUT", "NACK", "NOT_FOUND", "ECONNREFUSED"]) {
      assert.isTrue(RabbitMqSink.classify(amqpError(code, code), 10, "outbox").retryable, code)
    }
    assert.isTrue(RabbitMqSink.classify("weird", 10, "outbox").retryable)
    assert.isFalse(RabbitMqSink.classify(amqpError("CODEC", "frame size too big"), 10, "outbox").retryable)
    assert.isFalse(RabbitMqSink.classify(amqpError("ACCESS_REFUSED", "no"), 10, "outbox").retryable)
  })
})
