import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import {
  AuthenticationError,
  MultipleErrors,
  NetworkError,
  ProtocolError,
  ResponseError,
  TimeoutError,
  UserError
} from "@platformatic/kafka"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Tracer from "effect/Tracer"
import { TestClock } from "effect/testing"
import * as KafkaSink from "../src/sinks/KafkaSink.ts"

// No Kafka broker runs on CI machines: this file tests what does not need one (the mapping, the URL,
// the classification, the per-event outcomes of a failed send) and the sink against a refused port.
// KafkaSink.integration.test.ts runs against a real broker where OUTBOX_TEST_KAFKA_BROKERS is set.

const event = (n: number, overrides: Partial<OutboxEvent> = {}): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 3n,
  trackingId: `6f0c3c3e-8d3e-4a51-9b7e-${String(n).padStart(12, "0")}`,
  aggregateType: "Order",
  aggregateId: `o-${n}`,
  eventType: "OrderCreated",
  payload: { total: 19, note: "Zoë 🚚" },
  metadata: { source: "test" },
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date("2026-11-23T10:00:00.000Z"),
  lockedUntil: new Date("2026-11-23T10:00:30.000Z"),
  ...overrides
})

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

describe("KafkaSink.toMessage", () => {
  it.effect("topic outbox.<aggregateType>, key = aggregate id, the JSON body, the shared headers", () =>
    Effect.gen(function*() {
      const e = event(1)
      const message = yield* KafkaSink.toMessage(e)
      assert.strictEqual(message.topic, "outbox.Order")
      assert.strictEqual(message.key, "o-1")
      assert.deepStrictEqual(JSON.parse(message.value), {
        trackingId: e.trackingId,
        aggregateType: "Order",
        aggregateId: "o-1",
        eventType: "OrderCreated",
        payload: { total: 19, note: "Zoë 🚚" },
        metadata: { source: "test" },
        createdAt: "2026-11-23T10:00:00.000Z"
      })
      assert.deepStrictEqual(message.headers, {
        "outbox-tracking-id": e.trackingId,
        "outbox-event-type": "OrderCreated",
        "outbox-aggregate-type": "Order",
        "outbox-aggregate-id": "o-1"
      })
    }))

  it.effect("traceparent and tracestate from the event's metadata (the producer's trace)", () =>
    Effect.gen(function*() {
      const message = yield* KafkaSink.toMessage(event(2, { metadata: { traceparent, tracestate: "vendor=1" } }))
      assert.strictEqual(message.headers.traceparent, traceparent)
      assert.strictEqual(message.headers.tracestate, "vendor=1")
    }))

  it.effect("a malformed traceparent in the metadata is left out", () =>
    Effect.gen(function*() {
      const message = yield* KafkaSink.toMessage(event(3, { metadata: { traceparent: "00-x" } }))
      assert.isUndefined(message.headers.traceparent)
    }))

  it.effect("in a trace, the current span's context wins over the metadata", () =>
    Effect.gen(function*() {
      const parent = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: true })
      const message = yield* KafkaSink.toMessage(event(4, { metadata: { traceparent } })).pipe(Effect.withParentSpan(parent))
      assert.strictEqual(message.headers.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    }))

  it.effect("characters Kafka forbids in a topic become _; the topic and key can be overridden", () =>
    Effect.gen(function*() {
      const odd = yield* KafkaSink.toMessage(event(5, { aggregateType: "billing/Invoice Line" }))
      assert.strictEqual(odd.topic, "outbox.billing_Invoice_Line")
      assert.isTrue(KafkaSink.isValidTopic(odd.topic))
      const dotted = yield* KafkaSink.toMessage(event(5, { aggregateType: "com.acme.Order" }))
      assert.strictEqual(dotted.topic, "outbox.com.acme.Order")
      const custom = yield* KafkaSink.toMessage(event(5), {
        topic: (e) => `outbox.event.${e.aggregateType.toLowerCase()}`,
        key: (e) => `${e.aggregateType}:${e.aggregateId}`
      })
      assert.strictEqual(custom.topic, "outbox.event.order")
      assert.strictEqual(custom.key, "Order:o-5")
    }))

  it("isValidTopic follows Kafka's rules", () => {
    for (const topic of ["outbox.Order", "a", "a-b_c.d", "x".repeat(249)]) assert.isTrue(KafkaSink.isValidTopic(topic), topic)
    for (const topic of ["", ".", "..", "a b", "a/b", "ä", "x".repeat(250)]) assert.isFalse(KafkaSink.isValidTopic(topic), topic)
  })
})

describe("KafkaSink.fromUrl", () => {
  it.effect("kafka://host:port[,host:port]: the brokers, port 9092 by default", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* KafkaSink.fromUrl("kafka://localhost:9092"), ["localhost:9092"])
      assert.deepStrictEqual(yield* KafkaSink.fromUrl("kafka://k1:9093,k2:9094/"), ["k1:9093", "k2:9094"])
      assert.deepStrictEqual(yield* KafkaSink.fromUrl("KAFKA://broker"), ["broker:9092"])
      assert.deepStrictEqual(yield* KafkaSink.fromUrl("kafka://[::1]:9092, 10.0.0.2"), ["[::1]:9092", "10.0.0.2:9092"])
    }))

  it.effect("anything else is an InvalidOptions SinkSetupError", () =>
    Effect.gen(function*() {
      for (
        const url of [
          "http://localhost:9092",
          "localhost:9092",
          "kafka://",
          "kafka://a:9092,",
          "kafka://a:0",
          "kafka://a:70000",
          "kafka://user:pw@a:9092",
          "kafka://a:9092/topic",
          "kafka://a:9092?clientId=x",
          "kafka://a b:9092"
        ]
      ) {
        const error = yield* Effect.flip(KafkaSink.fromUrl(url))
        assert.strictEqual(error._tag, "SinkSetupError", url)
        assert.strictEqual(error.reason, "InvalidOptions", url)
        assert.strictEqual(error.sink, "kafka")
        assert.include(error.message, "kafka://host:port", url)
      }
    }))
})

describe("KafkaSink.classify", () => {
  const permanent = [
    "MESSAGE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_TOPIC_EXCEPTION",
    "TOPIC_AUTHORIZATION_FAILED",
    "CORRUPT_MESSAGE",
    "INVALID_RECORD",
    "INVALID_TIMESTAMP",
    "POLICY_VIOLATION"
  ]
  const retryable = [
    "NOT_LEADER_OR_FOLLOWER",
    "LEADER_NOT_AVAILABLE",
    "REQUEST_TIMED_OUT",
    "NETWORK_EXCEPTION",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "KAFKA_STORAGE_ERROR",
    "THROTTLING_QUOTA_EXCEEDED",
    "BROKER_NOT_AVAILABLE"
  ]

  it("the broker's error codes: a rejected record is permanent, the rest retryable, each with its code in the message", () => {
    for (const code of permanent) {
      const error = KafkaSink.classify(new ProtocolError(code, "broker detail"))
      assert.isFalse(error.retryable, code)
      assert.include(error.message, code)
      assert.include(error.message, "broker detail")
      assert.instanceOf(error.cause, ProtocolError)
    }
    for (const code of retryable) {
      const error = KafkaSink.classify(new ProtocolError(code))
      assert.isTrue(error.retryable, code)
      assert.include(error.message, code)
    }
    // by numeric code too (10 = MESSAGE_TOO_LARGE, 6 = NOT_LEADER_OR_FOLLOWER)
    assert.isFalse(KafkaSink.classify(new ProtocolError(10)).retryable)
    assert.isTrue(KafkaSink.classify(new ProtocolError(6)).retryable)
  })

  it("an unknown topic is retryable (it may yet be created), and says so", () => {
    const byCode = KafkaSink.classify(new ProtocolError("UNKNOWN_TOPIC_OR_PARTITION"))
    assert.isTrue(byCode.retryable)
    assert.include(byCode.message, "retried until it exists")
    // what the client reports when the metadata request finds no such topic (auto-creation off)
    const byClient = KafkaSink.classify(new UserError("Unknown topic outbox.Order."))
    assert.isTrue(byClient.retryable)
    assert.include(byClient.message, "Unknown topic outbox.Order")
  })

  it("the client's own errors: connection and timeout retryable, a refused request permanent", () => {
    const refused = new NetworkError("Connection to 127.0.0.1:1 failed.", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") })
    const network = KafkaSink.classify(refused)
    assert.isTrue(network.retryable)
    assert.include(network.message, "unreachable")
    assert.include(network.message, "ECONNREFUSED")
    assert.isTrue(KafkaSink.classify(new TimeoutError("Request timed out.")).retryable)
    assert.isTrue(KafkaSink.classify(new NetworkError("Client is closed.", { canRetry: false, closed: true })).retryable)
    assert.isTrue(KafkaSink.classify(new AuthenticationError("SASL authentication failed.")).retryable)
    assert.isTrue(KafkaSink.classify(new UserError("Client closed while retrying produce.")).retryable)
    const serialize = KafkaSink.classify(new UserError("Failed to serialize a message."))
    assert.isFalse(serialize.retryable)
    assert.include(serialize.message, "Failed to serialize")
    assert.isTrue(KafkaSink.classify(new Error("socket hang up")).retryable)
    assert.isTrue(KafkaSink.classify("boom").retryable)
    const already = DeliveryError.permanent("as is")
    assert.strictEqual(KafkaSink.classify(already), already)
  })

  it("nested errors (the client's retries, several brokers): a permanent one decides, else the latest", () => {
    const retries = new MultipleErrors("produce failed 3 times.", [
      new MultipleErrors("Cannot connect to any broker.", [new NetworkError("Connection to a:9092 failed.")]),
      new ProtocolError("NOT_LEADER_OR_FOLLOWER"),
      new ProtocolError("REQUEST_TIMED_OUT")
    ])
    const transient = KafkaSink.classify(retries)
    assert.isTrue(transient.retryable)
    assert.include(transient.message, "REQUEST_TIMED_OUT")
    const mixed = new MultipleErrors("Producing messages failed.", [new NetworkError("lost"), new ProtocolError("MESSAGE_TOO_LARGE")])
    assert.isFalse(KafkaSink.classify(mixed).retryable)
    assert.isTrue(KafkaSink.classify(new MultipleErrors("empty", [])).retryable)
  })
})

describe("KafkaSink.outcomes", () => {
  const produceApi = 0
  /** A produce response as the client parses it: per topic, per partition, an error code and record errors. */
  const response = (
    name: string,
    partitions: ReadonlyArray<{ index: number; errorCode: number; recordErrors?: Array<{ batchIndex: number; batchIndexErrorMessage: string }> }>
  ) => ({
    responses: [{
      name,
      partitionResponses: partitions.map((p) => ({ baseOffset: 0n, errorMessage: null, recordErrors: [], ...p }))
    }],
    throttleTimeMs: 0
  })
  /** The client's error for a failed send: one error per failed broker, what was produced on the others. */
  const sendError = (errors: Array<Error>, produced: Array<{ topic: string; partition: number }> = []) => {
    const error = new MultipleErrors("Producing messages failed.", errors)
    error.produced = { offsets: produced.map((p) => ({ ...p, offset: 1n })) }
    return error
  }

  it("a partly failed batch: acked partitions delivered, a rejected partition permanent, a lost broker retryable", () => {
    // broker A leads Order[0] (appended) and Order[1] (too large); broker B (Order[2]) is unreachable;
    // broker C leads Customer[0], produced
    const fromA = new ResponseError(produceApi, 11, { "/responses/0/partition_responses/1": [10, "too big"] }, response("outbox.Order", [
      { index: 0, errorCode: 0 },
      { index: 1, errorCode: 10 }
    ]))
    const error = sendError([fromA, new NetworkError("Connection to b:9092 failed.")], [{ topic: "outbox.Customer", partition: 0 }])
    const result = KafkaSink.outcomes([
      { topic: "outbox.Order", partition: 0 },
      { topic: "outbox.Order", partition: 1 },
      { topic: "outbox.Order", partition: 2 },
      { topic: "outbox.Customer", partition: 0 },
      { topic: "outbox.Order", partition: 0 },
      { topic: "outbox.Order", partition: undefined }
    ], error)
    assert.strictEqual(result.length, 6)
    assert.isUndefined(result[0])
    assert.isFalse(result[1]!.retryable)
    assert.include(result[1]!.message, "MESSAGE_TOO_LARGE")
    assert.isTrue(result[2]!.retryable)
    assert.include(result[2]!.message, "b:9092")
    assert.isUndefined(result[3])
    assert.isUndefined(result[4])
    // unknown partition: the error that is not any partition's (the lost broker), never the rejection
    assert.isTrue(result[5]!.retryable)
    assert.include(result[5]!.message, "b:9092")
  })

  it("a record the broker names is permanent; the others of its partition's batch are retryable", () => {
    const fromA = new ResponseError(
      produceApi,
      11,
      {
        "/responses/0/partition_responses/0": [87, "One or more records have been rejected"],
        "/responses/0/partition_responses/0/record_errors/0": [-1, "Compacted topic cannot accept message without key"]
      },
      response("outbox.Order", [{ index: 0, errorCode: 87, recordErrors: [{ batchIndex: 1, batchIndexErrorMessage: "Compacted topic cannot accept message without key" }] }])
    )
    const result = KafkaSink.outcomes(
      [0, 0, 0].map((partition) => ({ topic: "outbox.Order", partition })),
      sendError([fromA])
    )
    assert.isTrue(result[0]!.retryable)
    assert.include(result[0]!.message, "another record")
    assert.isFalse(result[1]!.retryable)
    assert.include(result[1]!.message, "INVALID_RECORD")
    assert.include(result[1]!.message, "Compacted topic")
    assert.isTrue(result[2]!.retryable)
  })

  it("a partition that failed on one attempt and was appended on a retry is delivered", () => {
    const attempt1 = new ResponseError(produceApi, 11, { "/responses/0/partition_responses/0": [6, null] }, response("t", [{ index: 0, errorCode: 6 }, { index: 1, errorCode: 7 }]))
    const attempt2 = new ResponseError(produceApi, 11, { "/responses/0/partition_responses/1": [7, null] }, response("t", [{ index: 0, errorCode: 0 }, { index: 1, errorCode: 7 }]))
    const result = KafkaSink.outcomes(
      [{ topic: "t", partition: 0 }, { topic: "t", partition: 1 }],
      sendError([new MultipleErrors("produce failed 2 times.", [attempt1, attempt2])])
    )
    assert.isUndefined(result[0])
    assert.isTrue(result[1]!.retryable)
    assert.include(result[1]!.message, "REQUEST_TIMED_OUT")
  })

  it("a send that failed as a whole gives every event that error", () => {
    const whole = new MultipleErrors("initProducerId failed 4 times.", [new NetworkError("Connection to k:9092 failed.")])
    const result = KafkaSink.outcomes([{ topic: "a", partition: 0 }, { topic: "b", partition: undefined }], whole)
    assert.isTrue(result.every((o) => o !== undefined && o.retryable && o.message.includes("k:9092")))
    const refused = KafkaSink.outcomes([{ topic: "a", partition: 0 }, { topic: "a", partition: 1 }], new UserError("Failed to serialize a message."))
    assert.isTrue(refused.every((o) => o !== undefined && !o.retryable))
  })
})

/** The sink on a refused port: nothing listens on 127.0.0.1:1. */
const unreachable = (timeout: Duration.Input) => KafkaSink.layer({ brokers: ["127.0.0.1:1"], timeout })

describe("KafkaSink.make, no broker", () => {
  it.effect("the layer builds with the broker down; a delivery fails retryably at the sink's timeout (TestClock)", () =>
    Effect.gen(function*() {
      const sink = yield* OutboxSink
      assert.strictEqual(sink.name, "kafka")
      const fiber = yield* Effect.forkChild(sink.deliver(event(1)), { startImmediately: true })
      yield* TestClock.adjust("2 seconds")
      yield* RelayTestKit.eventually(Effect.sync(() => fiber.pollUnsafe() !== undefined), {
        timeout: "5 seconds",
        message: "the delivery did not end at its timeout"
      })
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.instanceOf(error, DeliveryError)
      assert.isTrue(error.retryable)
      assert.include(error.message, "did not acknowledge within 2s")
    }).pipe(Effect.provide(unreachable("2 seconds"))))

  it.live("the client's own failure (connection refused, after its retries) is retryable, per event of a batch", () =>
    Effect.gen(function*() {
      const sink = yield* OutboxSink
      const badTopic = event(2, { aggregateType: "x" })
      const result = yield* sink.deliverBatch!([event(1), badTopic, event(3)])
      assert.strictEqual(result.length, 3)
      for (const i of [0, 2]) {
        assert.isTrue(result[i]!.retryable, result[i]!.message)
        assert.include(result[i]!.message, "127.0.0.1:1")
      }
      // the bad topic (from the override) is refused on its own, before the send
      assert.isFalse(result[1]!.retryable)
      assert.include(result[1]!.message, "invalid Kafka topic name")
      const status = yield* sink.connection!
      assert.isFalse(status.connected)
      assert.isString(status.detail)
    }).pipe(
      Effect.provide(KafkaSink.layer({
        brokers: ["127.0.0.1:1"],
        timeout: "30 seconds",
        topic: (e) => e.aggregateType === "x" ? "not a topic" : KafkaSink.defaultTopic(e)
      }))
    ), 15_000)

  it.effect("a hung broker (TcpProxy blackhole): the delivery fails retryably at the sink's timeout, not before", () =>
    Effect.gen(function*() {
      // the proxy accepts the client's connection and never answers, as a broker behind a dropping network
      const proxy = yield* TcpProxy.make({ port: 1 })
      yield* proxy.setMode("blackhole")
      const sink = yield* KafkaSink.make({ brokers: [proxy.address], timeout: "10 seconds" })
      const fiber = yield* Effect.forkChild(sink.deliver(event(1)), { startImmediately: true })
      yield* RelayTestKit.eventually(Effect.map(proxy.connections, (n) => n > 0), { message: "the client never connected" })
      yield* TestClock.adjust(Duration.subtract(Duration.seconds(10), Duration.millis(1)))
      assert.isUndefined(fiber.pollUnsafe(), "the delivery ended before its timeout")
      yield* TestClock.adjust(Duration.millis(1))
      yield* RelayTestKit.eventually(Effect.sync(() => fiber.pollUnsafe() !== undefined), {
        timeout: "5 seconds",
        message: "the delivery did not end at its timeout"
      })
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.isTrue(error.retryable)
      assert.include(error.message, "did not acknowledge within 10s")
      // a batch too: every event gets the timeout
      const batch = yield* Effect.forkChild(sink.deliverBatch!([event(2), event(3)]), { startImmediately: true })
      yield* TestClock.adjust(Duration.seconds(10))
      const outcome = yield* Fiber.join(batch)
      assert.isTrue(outcome.every((o) => o !== undefined && o.retryable && o.message.includes("did not acknowledge")))
    }))

  it.effect("interrupting a delivery in flight interrupts it: no DeliveryError", () =>
    Effect.gen(function*() {
      const proxy = yield* TcpProxy.make({ port: 1 })
      yield* proxy.setMode("blackhole")
      const sink = yield* KafkaSink.make({ brokers: [proxy.address] })
      const fiber = yield* Effect.forkChild(sink.deliver(event(1)), { startImmediately: true })
      yield* RelayTestKit.eventually(Effect.map(proxy.connections, (n) => n > 0), { message: "the client never connected" })
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `not an interruption: ${String(exit)}`)
    }))

  it.effect("an empty batch sends nothing", () =>
    Effect.gen(function*() {
      const sink = yield* OutboxSink
      assert.deepStrictEqual(yield* sink.deliverBatch!([]), [])
    }).pipe(Effect.provide(unreachable("10 seconds"))))

  it.effect("no brokers, or options the client refuses: an InvalidOptions SinkSetupError", () =>
    Effect.gen(function*() {
      const none = yield* Effect.flip(Layer.build(KafkaSink.layer({ brokers: [] })))
      assert.strictEqual(none.reason, "InvalidOptions")
      const badId = yield* Effect.flip(Layer.build(KafkaSink.layer({ brokers: ["127.0.0.1:1"], clientId: "two words" })))
      assert.strictEqual(badId.reason, "InvalidOptions")
      assert.include(badId.message, "clientId")
      const badSasl = yield* Effect.flip(Layer.build(KafkaSink.layer({
        brokers: ["127.0.0.1:1"],
        sasl: { mechanism: "PLAIN-TEXT" as "PLAIN", username: "u", password: "p" }
      })))
      assert.strictEqual(badSasl.reason, "InvalidOptions")
      assert.include(badSasl.message, "sasl")
    }))
})
