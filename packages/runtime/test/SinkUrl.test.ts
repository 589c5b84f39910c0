import { assert, describe, it } from "@effect/vitest"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as Cause from "effect/Cause"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { Redis } from "ioredis"
import * as LogSink from "../src/sinks/LogSink.ts"
import * as SinkUrl from "../src/sinks/SinkUrl.ts"

describe("SinkUrl.parse", () => {
  it.effect("picks the sink by scheme, with hosts, credentials, path and options", () =>
    Effect.gen(function*() {
      const nats = yield* SinkUrl.parse("nats://alice:s%3Acret@n1:4222,n2:4223?stream=ORDERS")
      assert.deepStrictEqual(
        { kind: nats.kind, hosts: nats.hosts, username: nats.username, password: nats.password, options: nats.options },
        { kind: "nats", hosts: ["n1:4222", "n2:4223"], username: "alice", password: "s:cret", options: { stream: "ORDERS" } }
      )
      const amqp = yield* SinkUrl.parse("amqp://guest:guest@127.0.0.1:5672/%2Fprod?exchange=events")
      assert.deepStrictEqual([amqp.kind, amqp.path, amqp.options.exchange], ["rabbitmq", "/prod", "events"])
      const redis = yield* SinkUrl.parse("rediss://:pw@cache:6380/2?maxLen=1000")
      assert.deepStrictEqual([redis.kind, redis.username, redis.password, redis.path, redis.options.maxLen], ["redis", "", "pw", "2", "1000"])
      const kafka = yield* SinkUrl.parse("kafka://k1:9092,k2:9092")
      assert.deepStrictEqual([kafka.kind, kafka.hosts], ["kafka", ["k1:9092", "k2:9092"]])
      // a webhook's query belongs to the webhook
      const webhook = yield* SinkUrl.parse("https://example.com/hooks?token=abc")
      assert.deepStrictEqual([webhook.kind, webhook.url, webhook.options], ["webhook", "https://example.com/hooks?token=abc", {}])
      const ipv6 = yield* SinkUrl.parse("redis://[::1]:6379")
      assert.deepStrictEqual(ipv6.hosts, ["[::1]:6379"])
    }))

  it.effect("refuses what it cannot use, saying why, without the password", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["ftp://host/x", "unknown scheme ftp://"],
        ["nats://n1:4222?strem=X", `has no option "strem"`],
        ["https://", "not a URL"],
        ["amqp://a:5672,b:5672", "takes one host"],
        ["kafka://k1:99999", `malformed host "k1:99999"`],
        ["redis://user:hunter2@ho st:6379", "malformed host"],
        ["not a url", "not a URL"]
      ]
      for (const [url, expected] of cases) {
        const error = yield* Effect.flip(SinkUrl.parse(url))
        assert.strictEqual(error._tag, "SinkSetupError")
        assert.strictEqual(error.reason, "InvalidOptions")
        assert.include(error.message, expected, url)
        assert.notInclude(error.message, "hunter2")
      }
    }))

  it("redacts the password of a URL for logs", () => {
    assert.strictEqual(SinkUrl.redact("amqp://guest:secret@127.0.0.1:5672/"), "amqp://guest:***@127.0.0.1:5672/")
    assert.strictEqual(SinkUrl.redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222")
    assert.strictEqual(SinkUrl.redact("redis://:pw@cache:6379"), "redis://:***@cache:6379")
  })
})

const event = (n: number): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 1n,
  trackingId: `5f0c3c1e-0000-4000-8000-${String(n).padStart(12, "0")}`,
  aggregateType: "SinkUrlTest",
  aggregateId: `a-${n}`,
  eventType: "Checked",
  payload: { n },
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(Date.UTC(2026, 11, 2)),
  lockedUntil: new Date(Date.UTC(2026, 11, 2, 0, 1))
})

const deliverVia = (layer: Layer.Layer<OutboxSink, unknown>, n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const sink = Context.get(yield* Layer.build(layer), OutboxSink)
    yield* sink.deliver(event(n))
    return sink.name
  }))

describe("SinkUrl.layer against the brokers on this machine", () => {
  const run = Math.random().toString(36).slice(2, 8)

  it.live("redis:// appends to outbox-style streams, with maxLen from the query", () =>
    Effect.gen(function*() {
      const name = yield* deliverVia(SinkUrl.layer("redis://127.0.0.1:6379/0?maxLen=1000"), 1)
      assert.strictEqual(name, "redis")
      const redis = new Redis("redis://127.0.0.1:6379/0")
      const entries = yield* Effect.promise(() => redis.xrange("outbox:SinkUrlTest", "-", "+"))
      yield* Effect.promise(() => redis.del("outbox:SinkUrlTest").then(() => redis.quit()))
      assert.isTrue(entries.some(([, fields]) => fields.includes(event(1).trackingId)))
    }))

  it.live("nats:// publishes to the stream and subject prefix of the query", () =>
    Effect.gen(function*() {
      const stream = `SINKURL_${run}`
      const name = yield* deliverVia(SinkUrl.layer(`nats://127.0.0.1:4222?stream=${stream}&subjectPrefix=sinkurl_${run}`), 2)
      assert.strictEqual(name, "nats")
      const nc = yield* Effect.promise(() => connect({ servers: "127.0.0.1:4222" }))
      const jsm = yield* Effect.promise(() => jetstreamManager(nc))
      const info = yield* Effect.promise(() => jsm.streams.info(stream))
      yield* Effect.promise(() => jsm.streams.delete(stream).then(() => nc.close()))
      assert.strictEqual(info.state.messages, 1)
      assert.deepStrictEqual(info.config.subjects, [`sinkurl_${run}.>`])
    }))

  it.live("amqp:// publishes to the exchange of the query (unroutable: a permanent DeliveryError, not a loss)", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(deliverVia(SinkUrl.layer(`amqp://guest:guest@127.0.0.1:5672?exchange=sinkurl_${run}`), 3))
      // no queue is bound to the new exchange: the broker returns the message
      assert.isTrue(Exit.isFailure(exit))
      const error = Cause.squash((exit as Exit.Failure<unknown, unknown>).cause)
      assert.instanceOf(error, DeliveryError)
      assert.isFalse((error as DeliveryError).retryable)
    }))

  it.live("https:// is the webhook; kafka:// builds without a broker and refuses credentials in the URL", () =>
    Effect.gen(function*() {
      const webhook = Context.get(yield* Effect.scoped(Layer.build(SinkUrl.layer("https://example.invalid/hook"))), OutboxSink)
      assert.strictEqual(webhook.name, "webhook")
      const kafka = yield* Effect.scoped(Effect.map(Layer.build(SinkUrl.layer("kafka://127.0.0.1:1")), (c) => Context.get(c, OutboxSink).name))
      assert.strictEqual(kafka, "kafka")
      const refused = yield* Effect.flip(Effect.scoped(Layer.build(SinkUrl.layer("kafka://u:p@127.0.0.1:9092"))))
      assert.include(refused.message, "no credentials")
    }))

  it.effect("layerConfig: OUTBOX_SINK_URL picks the sink; unset, the fallback, or a ConfigError without one", () =>
    Effect.gen(function*() {
      const build = (env: Record<string, string>, orElse?: Layer.Layer<OutboxSink>) =>
        Effect.scoped(Layer.build(SinkUrl.layerConfig({ orElse })).pipe(
          Effect.map((c) => Context.get(c, OutboxSink).name),
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
        ))
      assert.strictEqual(yield* build({ OUTBOX_SINK_URL: "http://127.0.0.1:1/events" }), "webhook")
      assert.strictEqual(yield* build({}, LogSink.layer), "log")
      const missing = yield* Effect.flip(build({}))
      assert.strictEqual(missing._tag, "ConfigError")
      assert.include(String(missing), "OUTBOX_SINK_URL")
      const bad = yield* Effect.flip(build({ OUTBOX_SINK_URL: "mqtt://127.0.0.1:1883" }))
      assert.strictEqual(bad._tag, "SinkSetupError")
    }))
})
