import { assert, describe, it } from "@effect/vitest"
import { AckPolicy, DiscardPolicy, jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as SinkContract from "@outbox/testing/SinkContract"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import * as NatsSink from "../src/sinks/NatsSink.ts"

// The real NATS server with JetStream on 127.0.0.1:4222. Every test uses its own stream
// (`OUTBOX_TEST_<run>_<n>`) and subject prefix (`otest_<run>_<n>`), and deletes its streams at the end.
const NATS = "nats://127.0.0.1:4222"
const run = randomUUID().slice(0, 8)
let fixtures = 0

/** An admin connection to the real server, closed with the scope. */
const adminConnection: Effect.Effect<NatsConnection, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(() => connect({ servers: "127.0.0.1:4222", name: "natssink-test-admin" })),
  (nc) => Effect.promise(() => nc.close())
)

interface Fixture {
  readonly prefix: string
  readonly stream: string
  readonly nc: NatsConnection
  readonly jsm: JetStreamManager
  /** Creates a stream deleted with the scope. */
  readonly addStream: (config: Parameters<JetStreamManager["streams"]["add"]>[0]) => Effect.Effect<void>
}

/** Unique names for one test, an admin connection, and the deletion of the test's streams at the end. */
const fixture: Effect.Effect<Fixture, never, Scope.Scope> = Effect.gen(function*() {
  const n = ++fixtures
  const prefix = `otest_${run}_${n}`
  const stream = `OUTBOX_TEST_${run}_${n}`
  const nc = yield* adminConnection
  const jsm = yield* Effect.promise(() => jetstreamManager(nc))
  const created = new Set([stream])
  yield* Effect.addFinalizer(() =>
    Effect.forEach(created, (name) => Effect.promise(() => jsm.streams.delete(name).catch(() => false)), { discard: true })
  )
  const addStream = (config: Parameters<JetStreamManager["streams"]["add"]>[0]) =>
    Effect.promise(() => jsm.streams.add(config)).pipe(Effect.tap(() => Effect.sync(() => created.add(config.name))), Effect.asVoid)
  return { prefix, stream, nc, jsm, addStream }
})

const eventOf = (n: number, overrides: Partial<OutboxEvent> = {}): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 1n,
  trackingId: randomUUID(),
  aggregateType: "Order",
  aggregateId: `order-${n}`,
  eventType: "OrderPlaced",
  payload: { n, total: 12.5, note: "Zoë 🚚" },
  metadata: { source: "nats-test" },
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(Date.UTC(2026, 0, 15, 9, 0, n % 60)),
  lockedUntil: new Date(Date.UTC(2026, 0, 15, 9, 1, 0)),
  ...overrides
})

/** The messages of a stream, in order: subject, headers and parsed body. */
const storedMessages = (jsm: JetStreamManager, stream: string) =>
  Effect.gen(function*() {
    const info = yield* Effect.promise(() => jsm.streams.info(stream))
    const out: Array<{ subject: string; trackingId: string | undefined; msgId: string | undefined; body: any }> = []
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const msg = yield* Effect.promise(() => jsm.streams.getMessage(stream, { seq }))
      if (msg === null) continue
      out.push({
        subject: msg.subject,
        trackingId: msg.header?.get("outbox-tracking-id"),
        msgId: msg.header?.get("Nats-Msg-Id"),
        body: msg.json()
      })
    }
    return out
  })

/** Builds the sink in the current scope (closed with it). */
const sinkOf = <E>(layer: Layer.Layer<OutboxSink, E>) => Effect.map(Layer.build(layer), (context) => Context.get(context, OutboxSink))

const connected = (sink: OutboxSink["Service"]) => Effect.map(sink.connection!, (status) => status.connected)

const failureOf = <A>(exit: Exit.Exit<A, DeliveryError>): DeliveryError => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const error = Cause.squash((exit as Exit.Failure<A, DeliveryError>).cause)
  assert.instanceOf(error, DeliveryError)
  return error as DeliveryError
}

// ---- the contract ---------------------------------------------------------------------------------

/**
 * The far side for the contract: the real server. Attempts are what reached it, read back by a core
 * subscription on the test's whole prefix (every message published under it, stored or not, whatever
 * the outcome). Behaviours route the next deliveries (the sink's `subject` option) to:
 * - succeed: the sink's own stream;
 * - failTransiently: a stream that is full, with `discard: new` (JetStream 503 "maximum messages exceeded");
 * - failPermanently: a stream whose `max_msg_size` is 1 byte (JetStream 400 "message size exceeds maximum");
 * - hang: a subject no stream captures, where the probe's subscription receives the request and never
 *   answers (no ack ever comes).
 */
const contractLayer = (timeout: Duration.Input): Layer.Layer<OutboxSink | SinkContract.SinkProbe, unknown> =>
  Layer.unwrap(Effect.gen(function*() {
    const { addStream, nc, prefix, stream } = yield* fixture
    yield* addStream({ name: `${stream}_FULL`, subjects: [`${prefix}.full.>`], max_msgs: 1, discard: DiscardPolicy.New })
    yield* Effect.promise(() => jetstream(nc).publish(`${prefix}.full.first`, "fills the stream"))
    yield* addStream({ name: `${stream}_SMALL`, subjects: [`${prefix}.small.>`], max_msg_size: 1 })
    const attempts: Array<SinkContract.Attempt> = []
    nc.subscribe(`${prefix}.>`, {
      callback: (error, msg) => {
        if (error !== null) return
        const body = msg.json<{ trackingId: string; payload: unknown }>()
        attempts.push({ trackingId: body.trackingId, payload: body.payload })
      }
    })
    yield* Effect.promise(() => nc.flush())
    let behaviour: SinkContract.Behaviour = "succeed"
    const route: Record<SinkContract.Behaviour, string> = {
      succeed: "main",
      failTransiently: "full",
      failPermanently: "small",
      hang: "hang"
    }
    const probe = SinkContract.SinkProbe.of({
      behave: (next) => Effect.sync(() => void (behaviour = next)),
      // a round trip on the probe's connection first: every message routed before it has been received
      attempts: Effect.promise(() => nc.flush()).pipe(Effect.map(() => [...attempts]))
    })
    const sink = NatsSink.layer({
      url: NATS,
      stream,
      subjectPrefix: `${prefix}.main`,
      subject: (event) => NatsSink.defaultSubject(event, `${prefix}.${route[behaviour]}`),
      timeout
    })
    return Layer.merge(sink, Layer.succeed(SinkContract.SinkProbe, probe))
  }))

SinkContract.suite("NatsSink", {
  layer: contractLayer("5 seconds"),
  name: "nats",
  behaviours: SinkContract.allBehaviours,
  timeout: "5 seconds"
})

// ---- the sink on its own --------------------------------------------------------------------------

describe("NatsSink", () => {
  it.effect("publishes to outbox.<aggregateType>.<eventType> in its stream, with the broker headers, Nats-Msg-Id and the JSON body", () =>
    Effect.gen(function*() {
      const { nc, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      const event = eventOf(1, {
        aggregateType: "Billing.Invoice",
        eventType: "Invoice Paid",
        metadata: {
          traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
          tracestate: "vendor=abc"
        }
      })
      yield* sink.deliver(event)

      // read by a real consumer (an ordered consumer on the stream)
      const consumer = yield* Effect.promise(() => jetstream(nc).consumers.get(stream))
      const msg = yield* Effect.promise(() => consumer.next({ expires: 5_000 }))
      assert.isNotNull(msg)
      assert.strictEqual(msg!.subject, `${prefix}.Billing_Invoice.Invoice_Paid`)
      assert.strictEqual(msg!.info.stream, stream)
      const headers = msg!.headers!
      assert.strictEqual(headers.get("Nats-Msg-Id"), event.trackingId)
      assert.strictEqual(headers.get("outbox-tracking-id"), event.trackingId)
      assert.strictEqual(headers.get("outbox-event-type"), "Invoice Paid")
      assert.strictEqual(headers.get("outbox-aggregate-type"), "Billing.Invoice")
      assert.strictEqual(headers.get("outbox-aggregate-id"), "order-1")
      assert.strictEqual(headers.get("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
      assert.strictEqual(headers.get("tracestate"), "vendor=abc")
      assert.deepStrictEqual(msg!.json(), {
        trackingId: event.trackingId,
        aggregateType: "Billing.Invoice",
        aggregateId: "order-1",
        eventType: "Invoice Paid",
        payload: event.payload,
        metadata: event.metadata,
        createdAt: event.createdAt.toISOString()
      })
    }), 30_000)

  it.effect("creates its stream with the subjects <prefix>.> when it is missing, and reports the connection", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      const info = yield* Effect.promise(() => jsm.streams.info(stream))
      assert.deepStrictEqual(info.config.subjects, [`${prefix}.>`])
      assert.deepStrictEqual(yield* sink.connection!, { connected: true })
      assert.strictEqual(sink.name, "nats")
    }), 30_000)

  it.effect("leaves an existing stream's configuration alone", () =>
    Effect.gen(function*() {
      const { addStream, jsm, prefix, stream } = yield* fixture
      yield* addStream({ name: stream, subjects: [`${prefix}.orders.>`, `${prefix}.extra`], max_msgs: 1_000, description: "ops" })
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: `${prefix}.orders` }))
      yield* sink.deliver(eventOf(1))
      const info = yield* Effect.promise(() => jsm.streams.info(stream))
      assert.deepStrictEqual(info.config.subjects, [`${prefix}.orders.>`, `${prefix}.extra`])
      assert.strictEqual(info.config.max_msgs, 1_000)
      assert.strictEqual(info.config.description, "ops")
      assert.strictEqual(info.state.messages, 1)
    }), 30_000)

  it.effect("a redelivered event is stored once: JetStream deduplicates on Nats-Msg-Id, and the duplicate ack counts as delivered", () =>
    Effect.gen(function*() {
      const { jsm, nc, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      const event = eventOf(1)
      yield* sink.deliver(event)
      yield* sink.deliver(event) // succeeds: the broker's ack says duplicate
      assert.deepStrictEqual(yield* sink.deliverBatch!([event, eventOf(2)]), [undefined, undefined])
      const stored = yield* storedMessages(jsm, stream)
      assert.strictEqual(stored.filter((m) => m.trackingId === event.trackingId).length, 1)
      assert.strictEqual(stored.length, 2)
      // the ack of the same message id says duplicate
      const ack = yield* Effect.promise(() =>
        jetstream(nc).publish(NatsSink.defaultSubject(event, prefix), "again", { msgID: event.trackingId })
      )
      assert.isTrue(ack.duplicate)
    }), 30_000)

  it.effect("deliverBatch publishes the whole batch and awaits the acks together: stored in order", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      const events = Array.from({ length: 25 }, (_, i) => eventOf(i))
      const outcome = yield* sink.deliverBatch!(events)
      assert.deepStrictEqual(outcome, events.map(() => undefined))
      const stored = yield* storedMessages(jsm, stream)
      assert.deepStrictEqual(stored.map((m) => m.trackingId), events.map((e) => e.trackingId))
      assert.deepStrictEqual(stored.map((m) => m.msgId), events.map((e) => e.trackingId))
    }), 30_000)

  it.effect("a batch with rejected events: the acked ones delivered, the others retryable or permanent, in order", () =>
    Effect.gen(function*() {
      const { addStream, jsm, nc, prefix, stream } = yield* fixture
      yield* addStream({ name: `${stream}_FULL`, subjects: [`${prefix}_full.>`], max_msgs: 1, discard: DiscardPolicy.New })
      yield* Effect.promise(() => jetstream(nc).publish(`${prefix}_full.first`, "fills the stream"))
      yield* addStream({ name: `${stream}_SMALL`, subjects: [`${prefix}_small.>`], max_msg_size: 64 })
      const sink = yield* sinkOf(NatsSink.layer({
        url: NATS,
        stream,
        subjectPrefix: prefix,
        subject: (event) =>
          event.eventType === "Full"
            ? `${prefix}_full.x`
            : event.eventType === "TooLargeForStream"
            ? `${prefix}_small.x`
            : event.eventType === "Unrouted"
            ? `${prefix}_nowhere.x`
            : event.eventType === "BadSubject"
            ? `${prefix}.bad subject`
            : NatsSink.defaultSubject(event, prefix)
      }))
      const events = [
        eventOf(0),
        eventOf(1, { eventType: "TooLargeForStream" }),
        eventOf(2),
        eventOf(3, { eventType: "Full" }),
        eventOf(4, { eventType: "Unrouted" }),
        eventOf(5, { payload: { blob: "x".repeat(1_100_000) } }), // over the server's max_payload (1 MB)
        eventOf(6, { eventType: "BadSubject" }),
        eventOf(7)
      ]
      const outcome = yield* sink.deliverBatch!(events)
      assert.strictEqual(outcome.length, events.length)
      assert.isUndefined(outcome[0])
      assert.isUndefined(outcome[2])
      assert.isUndefined(outcome[7])
      const [tooLarge, full, unrouted, overMaxPayload, badSubject] = [outcome[1]!, outcome[3]!, outcome[4]!, outcome[5]!, outcome[6]!]
      assert.isFalse(tooLarge.retryable)
      assert.include(tooLarge.message, "message too large")
      assert.isTrue(full.retryable)
      assert.include(full.message, "maximum messages exceeded")
      assert.isFalse(unrouted.retryable)
      assert.include(unrouted.message, "no JetStream stream captures")
      assert.isFalse(overMaxPayload.retryable)
      assert.include(overMaxPayload.message, "max_payload")
      assert.isFalse(badSubject.retryable)
      const stored = yield* storedMessages(jsm, stream)
      assert.deepStrictEqual(stored.map((m) => m.trackingId), [events[0]!.trackingId, events[2]!.trackingId, events[7]!.trackingId])
    }), 30_000)

  it.effect("a stream deleted behind the sink's back: retryable (not unroutable), then created again", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      yield* sink.deliver(eventOf(1))
      yield* Effect.promise(() => jsm.streams.delete(stream))
      const error = yield* Effect.flip(sink.deliver(eventOf(2)))
      assert.isTrue(error.retryable)
      assert.include(error.message, stream)
      yield* sink.deliver(eventOf(3))
      const stored = yield* storedMessages(jsm, stream)
      assert.strictEqual(stored.length, 1)
    }), 30_000)

  it.effect("a malformed URL fails the layer with InvalidOptions", () =>
    Effect.gen(function*() {
      for (const url of ["http://127.0.0.1:4222", " , ", "nats://"]) {
        const error = yield* Effect.flip(sinkOf(NatsSink.layer({ url })))
        assert.strictEqual(error._tag, "SinkSetupError")
        assert.strictEqual(error.reason, "InvalidOptions")
      }
    }))

  it.effect("the layer builds and closes cleanly: its connection is closed with the scope", () =>
    Effect.gen(function*() {
      const { prefix, stream } = yield* fixture
      const sockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length
      const before = sockets()
      yield* Effect.scoped(Effect.gen(function*() {
        const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
        yield* sink.deliver(eventOf(1))
        assert.isAbove(sockets(), before)
      }))
      yield* RelayTestKit.eventually(Effect.sync(() => sockets() === before), { message: "the connection was not closed" })
    }), 30_000)

  it.effect("a consumer with PgInbox runs its handler once per tracking id (the docs' snippet)", () =>
    Effect.gen(function*() {
      const { nc: admin, prefix, stream } = yield* fixture
      const sink = yield* sinkOf(NatsSink.layer({ url: NATS, stream, subjectPrefix: prefix }))
      const [first, second] = [eventOf(1), eventOf(2)]
      yield* sink.deliver(first)
      yield* sink.deliver(second)
      // the same event again under another message id: a redelivery after the duplicate window
      yield* Effect.promise(() =>
        jetstream(admin).publish(NatsSink.defaultSubject(first, prefix), JSON.stringify({ trackingId: first.trackingId, eventType: first.eventType, payload: first.payload, metadata: {} }), {
          msgID: randomUUID()
        })
      )
      const handled: Array<string> = []
      const handle = (event: { trackingId: string }) => Effect.sync(() => void handled.push(event.trackingId))

      // -- the snippet ------------------------------------------------------------------------
      const nc = yield* Effect.acquireRelease(
        Effect.promise(() => connect({ servers: NATS, name: "billing" })),
        (nc) => Effect.promise(() => nc.drain())
      )
      const jsm = yield* Effect.promise(() => jetstreamManager(nc))
      yield* Effect.promise(() =>
        jsm.consumers.add(stream, { durable_name: "billing", ack_policy: AckPolicy.Explicit, filter_subject: `${prefix}.>` })
      )
      const consumer = yield* Effect.promise(() => jetstream(nc).consumers.get(stream, "billing"))
      const messages = yield* Effect.promise(() => consumer.consume())
      yield* Stream.fromAsyncIterable(messages, (error) => error).pipe(
        Stream.take(3), // (a real consumer runs forever)
        Stream.runForEach((msg) => {
          const event = msg.json<{ trackingId: string; eventType: string; metadata: Record<string, unknown> }>()
          // Processed or Duplicate: ack either way; a failure is redelivered 5 s later (the loop goes on)
          return PgInbox.processEvent("billing", event, handle(event)).pipe(
            Effect.andThen(Effect.sync(() => msg.ack())),
            Effect.catch(() => Effect.sync(() => msg.nak(5_000)))
          )
        })
      )
      // ----------------------------------------------------------------------------------------
      assert.deepStrictEqual(handled, [first.trackingId, second.trackingId])
      // `msg.ack()` does not wait for the server: its last ack may still be on the way (CI saw 1 pending)
      const info = () => Effect.promise(() => jsm.consumers.info(stream, "billing"))
      yield* RelayTestKit.eventually(Effect.map(info(), (i) => i.num_ack_pending === 0), {
        message: "the consumer's acks did not all arrive"
      })
      assert.strictEqual((yield* info()).delivered.stream_seq, 3)
    }).pipe(
      Effect.provide(PgInbox.layer.pipe(
        Layer.provideMerge(OutboxMigrations.layer),
        Layer.provideMerge(TestDatabase.layer),
        Layer.orDie
      ))
    ), 60_000)

  it.effect("subjectMatches follows NATS wildcards", () =>
    Effect.sync(() => {
      assert.isTrue(NatsSink.subjectMatches("outbox.>", "outbox.Order.Placed"))
      assert.isFalse(NatsSink.subjectMatches("outbox.>", "outbox"))
      assert.isTrue(NatsSink.subjectMatches("outbox.*.Placed", "outbox.Order.Placed"))
      assert.isFalse(NatsSink.subjectMatches("outbox.*", "outbox.Order.Placed"))
      assert.isFalse(NatsSink.subjectMatches("orders.>", "outbox.Order.Placed"))
    }))
})

// ---- outages, through a TCP proxy in front of the real server --------------------------------------

describe("NatsSink outages", () => {
  it.effect("the server refused mid-drain: no unacked event counts as delivered; after it is back the sink reconnects and delivers", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const proxy = yield* TcpProxy.make({ port: 4222 })
      const sink = yield* sinkOf(NatsSink.layer({ url: `nats://${proxy.address}`, stream, subjectPrefix: prefix, timeout: "3 seconds" }))
      const events = Array.from({ length: 150 }, (_, i) => eventOf(i))
      const drain = yield* Effect.forkChild(
        Effect.forEach(events, (event) => Effect.exit(sink.deliver(event))),
        { startImmediately: true }
      )
      yield* RelayTestKit.eventually(
        Effect.map(Effect.promise(() => jsm.streams.info(stream)), (info) => info.state.messages >= 10),
        { message: "the drain did not start" }
      )
      yield* proxy.setMode("refuse")
      yield* RelayTestKit.eventually(Effect.map(connected(sink), (up) => !up), { message: "the outage was not noticed" })
      const status = yield* sink.connection!
      assert.include(status.detail ?? "", "reconnecting")

      // while refused: a delivery waits for the connection, then fails retryably at its timeout
      const during = yield* Effect.forkChild(sink.deliver(eventOf(100)), { startImmediately: true })
      yield* RelayTestKit.settle
      yield* TestClock.adjust("3 seconds")
      const refused = failureOf(yield* Fiber.await(during))
      assert.isTrue(refused.retryable)
      assert.include(refused.message, "not connected")

      yield* proxy.setMode("forward")
      yield* RelayTestKit.eventually(connected(sink), { timeout: "20 seconds", message: "the sink did not reconnect" })
      const exits = yield* Fiber.join(drain)

      const storedIds = new Set((yield* storedMessages(jsm, stream)).map((m) => m.trackingId))
      const failed: Array<OutboxEvent> = []
      exits.forEach((exit, i) => {
        if (Exit.isSuccess(exit)) assert.isTrue(storedIds.has(events[i]!.trackingId), `event ${i} reported delivered but not stored`)
        else {
          assert.isTrue(failureOf(exit).retryable)
          failed.push(events[i]!)
        }
      })
      // at least the delivery that waited for the connection when the clock passed its timeout
      assert.isAtLeast(failed.length, 1)
      // the retries of the failed ones succeed; the stream holds every event exactly once
      assert.deepStrictEqual(yield* sink.deliverBatch!(failed), failed.map(() => undefined))
      const stored = yield* storedMessages(jsm, stream)
      assert.deepStrictEqual(stored.map((m) => m.trackingId).sort(), events.map((e) => e.trackingId).sort())
    }), 60_000)

  it.effect("the layer builds while the server is unreachable; deliveries fail retryably, then succeed once it is back", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const proxy = yield* TcpProxy.make({ port: 4222 })
      yield* proxy.setMode("refuse")
      const sink = yield* sinkOf(NatsSink.layer({ url: `nats://${proxy.address}`, stream, subjectPrefix: prefix, timeout: "5 seconds" }))
      const status = yield* sink.connection!
      assert.isFalse(status.connected)
      assert.include(status.detail ?? "", "cannot connect")

      const early = yield* Effect.forkChild(sink.deliverBatch!([eventOf(1), eventOf(2)]), { startImmediately: true })
      yield* RelayTestKit.settle
      yield* TestClock.adjust("5 seconds")
      const outcome = yield* Fiber.join(early)
      assert.isTrue(outcome.every((error) => error !== undefined && error.retryable))

      yield* proxy.setMode("forward")
      yield* RelayTestKit.eventually(connected(sink), { timeout: "20 seconds", message: "the sink never connected" })
      const event = eventOf(3)
      yield* sink.deliver(event)
      const stored = yield* storedMessages(jsm, stream) // the stream was created once connected
      assert.deepStrictEqual(stored.map((m) => m.trackingId), [event.trackingId])
    }), 60_000)

  it.effect("a hung server (blackhole): a delivery fails retryably at its timeout, and the sink recovers", () =>
    Effect.gen(function*() {
      const { jsm, prefix, stream } = yield* fixture
      const proxy = yield* TcpProxy.make({ port: 4222 })
      const sink = yield* sinkOf(NatsSink.layer({ url: `nats://${proxy.address}`, stream, subjectPrefix: prefix, timeout: "4 seconds" }))
      yield* sink.deliver(eventOf(1))
      yield* proxy.setMode("blackhole")
      yield* RelayTestKit.eventually(Effect.map(connected(sink), (up) => !up), { message: "the cut was not noticed" })
      const hung = yield* Effect.forkChild(sink.deliver(eventOf(2)), { startImmediately: true })
      yield* RelayTestKit.settle
      yield* TestClock.adjust("3999 millis")
      assert.isUndefined(hung.pollUnsafe(), "the delivery ended before its timeout")
      yield* TestClock.adjust("1 millis")
      const error = failureOf(yield* Fiber.await(hung))
      assert.isTrue(error.retryable)

      yield* proxy.setMode("forward")
      yield* RelayTestKit.eventually(connected(sink), { timeout: "30 seconds", message: "the sink did not reconnect" })
      yield* sink.deliver(eventOf(3))
      assert.strictEqual((yield* storedMessages(jsm, stream)).length, 2)
    }), 60_000)

  it.live("closing the layer while it is still connecting stops the connection attempts", () =>
    Effect.gen(function*() {
      const { prefix, stream } = yield* fixture
      const proxy = yield* TcpProxy.make({ port: 4222 })
      yield* proxy.setMode("refuse")
      yield* Effect.scoped(Effect.gen(function*() {
        const sink = yield* sinkOf(NatsSink.layer({ url: `nats://${proxy.address}`, stream, subjectPrefix: prefix }))
        assert.isFalse(yield* connected(sink))
        // the client's own loop tries again at once, then every 2 seconds
        while ((yield* proxy.connections) < 2) yield* Effect.sleep("10 millis")
      }))
      const atClose = yield* proxy.connections
      yield* Effect.sleep("3 seconds") // longer than the client's reconnect wait (2 s + jitter)
      assert.strictEqual(yield* proxy.connections, atClose)
    }), 30_000)
})
