import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as SinkContract from "@outbox/testing/SinkContract"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import { Admin, Consumer, murmur2, stringDeserializers } from "@platformatic/kafka"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as KafkaSink from "../src/sinks/KafkaSink.ts"

// Against a real Kafka broker, only where OUTBOX_TEST_KAFKA_BROKERS is set (`host:9092[,host:port]`):
// no broker runs on CI machines (KafkaSink.test.ts covers the mapping, the classification and the
// per-event outcomes without one). Every test creates its own topics (`outbox-it-<run>-<n>`, or
// `outbox.KafkaIt<run>n<n>` for the default routing) and deletes them at the end.
const brokers = (process.env.OUTBOX_TEST_KAFKA_BROKERS ?? "").split(",").map((b) => b.trim()).filter((b) => b.length > 0)
const run = randomUUID().slice(0, 8)
let fixtures = 0

const event = (n: number, overrides: Partial<OutboxEvent> = {}): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 1n,
  trackingId: randomUUID(),
  aggregateType: "Order",
  aggregateId: `o-${n}`,
  eventType: "OrderPlaced",
  payload: { n, note: "Zoë 🚚" },
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date("2026-11-23T10:00:00.000Z"),
  lockedUntil: new Date("2026-11-23T10:00:30.000Z"),
  ...overrides
})

/** The partition the Java client (and the sink) picks for `key` among `count`. */
const javaPartition = (key: string, count: number) => (murmur2(Buffer.from(key)) & 0x7fffffff) % count

/** A topic of its own (`name`, else a fresh one), with `partitions`, ready to produce to; deleted with the scope. */
const makeTopic = (
  options: { readonly partitions: number; readonly name?: string; readonly configs?: Array<{ name: string; value: string }> }
): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `outbox-it-${run}-${++fixtures}`
    const admin = yield* Effect.acquireRelease(
      Effect.sync(() => new Admin({ clientId: "outbox-it-admin", bootstrapBrokers: brokers })),
      (admin) => Effect.ignore(Effect.tryPromise(() => admin.close()))
    )
    yield* Effect.promise(() =>
      admin.createTopics({ topics: [name], partitions: options.partitions, replicas: 1, configs: options.configs ?? [] })
    )
    yield* Effect.addFinalizer(() => Effect.ignore(Effect.tryPromise(() => admin.deleteTopics({ topics: [name] }))))
    // a new topic has no leaders for a moment: wait until each partition has one
    yield* RelayTestKit.eventually(
      Effect.tryPromise(() => admin.metadata({ topics: [name], forceUpdate: true })).pipe(
        Effect.map((metadata) => {
          const topic = metadata.topics.get(name)
          return topic !== undefined && topic.partitionsCount === options.partitions && topic.partitions.every((p) => p.leader >= 0)
        }),
        Effect.orElseSucceed(() => false)
      ),
      { timeout: "30 seconds", message: `topic ${name} has no leaders` }
    ).pipe(Effect.orDie)
    return name
  })

interface Received {
  readonly partition: number
  readonly offset: bigint
  readonly key: string | undefined
  readonly value: string | undefined
  readonly headers: Readonly<Record<string, string>>
}

/**
 * A consumer of `topic` from its start; `all` waits until it has read everything the topic holds (its
 * end offsets) and returns it by partition and offset.
 */
const makeReader = (topic: string) =>
  Effect.gen(function*() {
    const consumer = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new Consumer({
          clientId: "outbox-it-reader",
          groupId: `${topic}-reader-${randomUUID().slice(0, 8)}`,
          bootstrapBrokers: brokers,
          deserializers: stringDeserializers,
          maxWaitTime: 100
        })
      ),
      (consumer) => Effect.ignore(Effect.tryPromise(() => consumer.close(true)))
    )
    const received: Array<Received> = []
    const stream = yield* Effect.acquireRelease(
      Effect.promise(() => consumer.consume({ topics: [topic], mode: "earliest", autocommit: false })),
      (stream) => Effect.ignore(Effect.tryPromise(() => stream.close()))
    )
    stream.on("data", (message) =>
      received.push({
        partition: message.partition,
        offset: message.offset,
        key: message.key,
        value: message.value,
        headers: Object.fromEntries(message.headers)
      }))
    const all = Effect.gen(function*() {
      const offsets = yield* Effect.promise(() => consumer.listOffsets({ topics: [topic] }))
      const end = (offsets.get(topic) ?? []).reduce((sum, offset) => sum + offset, 0n)
      yield* RelayTestKit.eventually(Effect.sync(() => BigInt(received.length) >= end), {
        timeout: "30 seconds",
        message: `the reader of ${topic} did not catch up`
      })
      return [...received].sort((a, b) => a.partition - b.partition || (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0))
    }).pipe(Effect.orDie)
    return { all }
  })

const sinkOf = Effect.service(OutboxSink)

describe.skipIf(!process.env.OUTBOX_TEST_KAFKA_BROKERS)(
  "KafkaSink against a real broker (skipped: OUTBOX_TEST_KAFKA_BROKERS is not set)",
  () => {
    // The contract's "succeed" behaviour, read back from the broker by a consumer of a one-partition
    // topic (so the arrival order is the produce order). A real broker cannot be told to fail or hang
    // on demand (and the brokers it advertises bypass a TCP proxy), so the other behaviours are
    // covered by KafkaSink.test.ts (classification, timeout under TestClock, interruption).
    SinkContract.suite("KafkaSink, real broker", {
      layer: Layer.unwrap(Effect.gen(function*() {
        const topic = yield* makeTopic({ partitions: 1 })
        const { all } = yield* makeReader(topic)
        const probe = SinkContract.SinkProbe.of({
          behave: (behaviour) => behaviour === "succeed" ? Effect.void : Effect.die(`a real broker cannot ${behaviour} on demand`),
          attempts: Effect.map(all, (messages) =>
            messages.map((m) => {
              const body = JSON.parse(m.value ?? "null")
              return { trackingId: m.headers["outbox-tracking-id"] ?? "", payload: body?.payload }
            }))
        })
        return Layer.merge(KafkaSink.layer({ brokers, topic: () => topic }), Layer.succeed(SinkContract.SinkProbe, probe))
      })),
      name: "kafka",
      behaviours: ["succeed"]
    })

    it.live("default routing: topic outbox.<aggregateType>, key = aggregate id (its Java partition), headers and body as read", () =>
      Effect.gen(function*() {
        const aggregateType = `KafkaIt${run}n${++fixtures}`
        const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        const e = event(1, { aggregateType, aggregateId: "order-42", metadata: { traceparent } })
        const topic = yield* makeTopic({ partitions: 3, name: `outbox.${aggregateType}` })
        assert.strictEqual(KafkaSink.defaultTopic(e), topic)
        const { all } = yield* makeReader(topic)
        const sink = yield* sinkOf
        yield* sink.deliver(e)
        const [message, ...others] = yield* all
        assert.strictEqual(others.length, 0)
        assert.strictEqual(message!.key, "order-42")
        assert.strictEqual(message!.partition, javaPartition("order-42", 3))
        assert.deepStrictEqual(message!.headers, {
          "outbox-tracking-id": e.trackingId,
          "outbox-event-type": "OrderPlaced",
          "outbox-aggregate-type": aggregateType,
          "outbox-aggregate-id": "order-42",
          traceparent
        })
        assert.deepStrictEqual(JSON.parse(message!.value!), {
          trackingId: e.trackingId,
          aggregateType,
          aggregateId: "order-42",
          eventType: "OrderPlaced",
          payload: { n: 1, note: "Zoë 🚚" },
          metadata: { traceparent },
          createdAt: "2026-11-23T10:00:00.000Z"
        })
        assert.deepStrictEqual(yield* sink.connection!, { connected: true })
      }).pipe(Effect.provide(KafkaSink.layer({ brokers }))), 120_000)

    it.live("a batch is acked together; one aggregate's events share a partition, in order", () =>
      Effect.gen(function*() {
        const topic = yield* makeTopic({ partitions: 3 })
        const { all } = yield* makeReader(topic)
        const aggregates = ["a-1", "b-2", "c-3"]
        const events = Array.from({ length: 9 }, (_, n) => event(n, { aggregateId: aggregates[n % 3]! }))
        const sink = yield* KafkaSink.make({ brokers, topic: () => topic })
        const outcome = yield* sink.deliverBatch!(events)
        assert.deepStrictEqual(outcome, events.map(() => undefined))
        const messages = yield* all
        assert.strictEqual(messages.length, 9)
        for (const key of aggregates) {
          const mine = messages.filter((m) => m.key === key)
          assert.strictEqual(mine.length, 3)
          assert.isTrue(mine.every((m) => m.partition === javaPartition(key, 3)), `${key} spread over partitions`)
          assert.deepStrictEqual(
            mine.map((m) => m.headers["outbox-tracking-id"]),
            events.filter((e) => e.aggregateId === key).map((e) => e.trackingId)
          )
        }
      }), 120_000)

    it.live("a batch with a record the broker rejects: the others are delivered, the rejected one is permanent", () =>
      Effect.gen(function*() {
        // the broker refuses a record batch over the topic's max.message.bytes: the whole batch to the
        // partition first, then the sink re-checks its events one by one
        const topic = yield* makeTopic({ partitions: 1, configs: [{ name: "max.message.bytes", value: "4096" }] })
        const { all } = yield* makeReader(topic)
        const big = event(2, { payload: { blob: "x".repeat(16_384) } })
        const events = [event(1), big, event(3)]
        const sink = yield* KafkaSink.make({ brokers, topic: () => topic })
        const outcome = yield* sink.deliverBatch!(events)
        assert.isUndefined(outcome[0])
        assert.isFalse(outcome[1]!.retryable, outcome[1]!.message)
        assert.include(outcome[1]!.message, "MESSAGE_TOO_LARGE")
        assert.isUndefined(outcome[2])
        assert.deepStrictEqual(
          (yield* all).map((m) => m.headers["outbox-tracking-id"]),
          [events[0]!.trackingId, events[2]!.trackingId]
        )
      }), 120_000)

    it.live("the layer builds while the broker is unreachable, fails retryably, and delivers once it is back", () =>
      Effect.gen(function*() {
        // the proxy stands in front of the bootstrap broker only (the brokers the cluster advertises are
        // reached directly): refusing it makes the cluster unreachable to a client that has not started yet
        const [host, port] = brokers[0]!.split(/:(?=\d+$)/)
        const proxy = yield* TcpProxy.make({ host: host!.replace(/^\[|\]$/g, ""), port: Number(port ?? 9092) })
        yield* proxy.setMode("refuse")
        const topic = yield* makeTopic({ partitions: 1 })
        const { all } = yield* makeReader(topic)
        const sink = yield* KafkaSink.make({ brokers: [proxy.address], topic: () => topic, timeout: "5 seconds" })
        const down = yield* Effect.flip(sink.deliver(event(1)))
        assert.isTrue(down.retryable, down.message)
        assert.isFalse((yield* sink.connection!).connected)
        yield* proxy.setMode("forward")
        const e = event(2)
        yield* sink.deliver(e)
        assert.deepStrictEqual((yield* all).map((m) => m.headers["outbox-tracking-id"]), [e.trackingId])
      }), 120_000)

    it.live("a consumer with PgInbox runs its handler once per tracking id (the docs' snippet)", () =>
      Effect.gen(function*() {
        const topic = yield* makeTopic({ partitions: 1 })
        const sink = yield* KafkaSink.make({ brokers, topic: () => topic })
        const [first, second] = [event(1), event(2)]
        yield* sink.deliver(first)
        yield* sink.deliver(second)
        yield* sink.deliver(first) // a redelivery: the relay retried after a lost ack
        const handled: Array<string> = []
        const handle = (event: { trackingId: string }) => Effect.sync(() => void handled.push(event.trackingId))
        const groupId = `billing-${run}-${++fixtures}`

        // -- the snippet ------------------------------------------------------------------------
        const consumer = yield* Effect.acquireRelease(
          Effect.sync(() => new Consumer({ groupId, clientId: "billing", bootstrapBrokers: brokers, deserializers: stringDeserializers })),
          (consumer) => Effect.promise(() => consumer.close(true))
        )
        const messages = yield* Effect.acquireRelease(
          Effect.promise(() => consumer.consume({ topics: [topic], mode: "committed", fallbackMode: "earliest", autocommit: false })),
          (messages) => Effect.promise(() => messages.close())
        )
        yield* Stream.fromAsyncIterable(messages, (error) => error).pipe(
          Stream.take(3), // (a real consumer runs forever)
          Stream.runForEach((message) => {
            const event = JSON.parse(message.value) as { trackingId: string; eventType: string; metadata: Record<string, unknown> }
            // Processed or Duplicate: commit either way. Kafka commits a position, not a message: a failing
            // handler is retried in place (the partition waits) rather than skipped
            return PgInbox.processEvent("billing", event, handle(event)).pipe(
              Effect.retry(Schedule.exponential("1 second")),
              Effect.andThen(Effect.callback<void>((resume) => void message.commit(() => resume(Effect.void))))
            )
          })
        )
        // ----------------------------------------------------------------------------------------
        assert.deepStrictEqual(handled, [first.trackingId, second.trackingId])
      }).pipe(
        Effect.provide(PgInbox.layer.pipe(
          Layer.provideMerge(OutboxMigrations.layer),
          Layer.provideMerge(TestDatabase.layer),
          Layer.orDie
        ))
      ), 120_000)

    it.live("the layer closes cleanly: its producer is closed with the scope", () =>
      Effect.gen(function*() {
        const topic = yield* makeTopic({ partitions: 1 })
        const sink = yield* Effect.scoped(Effect.gen(function*() {
          const sink = yield* KafkaSink.make({ brokers, topic: () => topic })
          yield* sink.deliver(event(1))
          assert.isTrue((yield* sink.connection!).connected)
          return sink
        }))
        // closed: a delivery now fails (retryably) instead of reaching the broker
        const error = yield* Effect.flip(sink.deliver(event(2)))
        assert.isTrue(error.retryable)
        assert.isFalse((yield* sink.connection!).connected)
      }), 120_000)
  }
)
