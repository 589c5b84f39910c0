/**
 * A broker outage in the middle of a drain, through the whole relay: the
 * sink reaches NATS, RabbitMQ or Redis through a TCP proxy that starts
 * refusing connections after a part of the backlog was delivered, then
 * forwards again. While it refuses, events fail retryably and wait out
 * their backoff; no event is completed without its ack (every COMPLETED
 * row is on the broker); once it forwards, every event is delivered and
 * completed, none dead-lettered, none lost.
 */
import { assert, describe, layer } from "@effect/vitest"
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import * as Outbox from "@outbox/core/Outbox"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { Redis } from "ioredis"
import { Connection } from "rabbitmq-client"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as NatsSink from "../src/sinks/NatsSink.ts"
import * as RabbitMqSink from "../src/sinks/RabbitMqSink.ts"
import * as RedisStreamSink from "../src/sinks/RedisStreamSink.ts"

const EVENTS = 600
const run = Math.random().toString(36).slice(2, 8)

/** One broker: the sink through the proxy, and how to read back the tracking ids it holds. */
interface Broker {
  readonly name: string
  readonly port: number
  readonly sink: (proxy: TcpProxy.TcpProxy) => Layer.Layer<OutboxSink, unknown>
  /** Sets the broker side up (a queue to receive), and reads the tracking ids that reached it, duplicates included. */
  readonly received: Effect.Effect<Effect.Effect<ReadonlyArray<string>>, never, Scope.Scope>
}

const brokers: ReadonlyArray<Broker> = [
  {
    name: "NATS JetStream",
    port: 4222,
    sink: (proxy) =>
      NatsSink.layer({ url: `nats://${proxy.address}`, stream: `OUTAGE_${run}`, subjectPrefix: `outage_${run}`, timeout: "1 second" }),
    received: Effect.gen(function*() {
      const nc = yield* Effect.acquireRelease(
        Effect.promise(() => connect({ servers: "127.0.0.1:4222" })),
        (nc) => Effect.promise(() => nc.close())
      )
      const jsm = yield* Effect.promise(() => jetstreamManager(nc))
      yield* Effect.addFinalizer(() => Effect.promise(() => jsm.streams.delete(`OUTAGE_${run}`).catch(() => false)))
      return Effect.promise(async () => {
        const ids: Array<string> = []
        const info = await jsm.streams.info(`OUTAGE_${run}`).catch(() => undefined)
        if (info === undefined || info.state.messages === 0) return ids
        const consumer = await jetstream(nc).consumers.get(`OUTAGE_${run}`, { deliver_policy: DeliverPolicy.All })
        const batch = await consumer.fetch({ max_messages: info.state.messages, expires: 2000 })
        for await (const m of batch) {
          ids.push(m.headers?.get("outbox-tracking-id") ?? "")
          if (ids.length === info.state.messages) break
        }
        return ids
      })
    })
  },
  {
    name: "RabbitMQ",
    port: 5672,
    sink: (proxy) =>
      RabbitMqSink.layer({
        url: `amqp://guest:guest@${proxy.address}`,
        exchange: `outage_${run}`,
        timeout: "1 second",
        reconnectDelay: { min: "50 millis", max: "200 millis" }
      }),
    received: Effect.gen(function*() {
      const rabbit = yield* Effect.acquireRelease(
        Effect.sync(() => new Connection("amqp://guest:guest@127.0.0.1:5672")),
        (c) => Effect.promise(() => c.close())
      )
      const exchange = `outage_${run}`
      const queue = `outage_${run}`
      yield* Effect.promise(() => rabbit.exchangeDeclare({ exchange, type: "topic", durable: true }))
      yield* Effect.promise(() => rabbit.queueDeclare({ queue, exclusive: true }))
      yield* Effect.promise(() => rabbit.queueBind({ queue, exchange, routingKey: "#" }))
      yield* Effect.addFinalizer(() => Effect.promise(() => rabbit.exchangeDelete({ exchange }).catch(() => undefined)))
      const ids: Array<string> = []
      return Effect.promise(async () => {
        // drains what arrived since the last read (basicGet consumes): the ids accumulate
        for (;;) {
          const m = await rabbit.basicGet({ queue, noAck: true })
          if (m === undefined) return [...ids]
          ids.push(m.messageId ?? "")
        }
      })
    })
  },
  {
    name: "Redis Streams",
    port: 6379,
    sink: (proxy) =>
      RedisStreamSink.layer({
        url: `redis://${proxy.address}`,
        stream: () => `outage:${run}`,
        timeout: "1 second"
      }),
    received: Effect.gen(function*() {
      const redis = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis("redis://127.0.0.1:6379")),
        (r) => Effect.promise(() => r.del(`outage:${run}`).then(() => r.quit()))
      )
      return Effect.promise(() =>
        redis.xrange(`outage:${run}`, "-", "+").then((entries) =>
          entries.map(([, flat]) => flat[flat.indexOf("outbox-tracking-id") + 1] ?? "")
        )
      )
    })
  }
]

const rows = Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
  sql<{ tracking_id: string; status: string }>`SELECT tracking_id::text, status FROM outbox`)

const countWhere = (status: string) => Effect.map(rows, (all) => all.filter((r) => r.status === status).length)

const until = <E, R>(condition: Effect.Effect<boolean, E, R>, within: Duration.Input, message: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("25 millis") }),
    Effect.timeoutOrElse({ duration: within, orElse: () => Effect.die(new Error(message)) })
  )

layer(Layer.provideMerge(PgOutboxStore.layer(), TestDatabase.layer), { timeout: "120 seconds", excludeTestServices: true })(
  "a broker outage mid-drain, through the relay",
  (it) => {
    for (const broker of brokers) {
      describe(broker.name, () => {
        it.effect("refused mid-drain: retried with backoff, nothing completed without an ack; all delivered once it is back", () =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* sql`TRUNCATE outbox`
            const received = yield* broker.received
            const proxy = yield* TcpProxy.make({ port: broker.port })
            for (let i = 0; i < EVENTS; i += 50) {
              yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 50 }, (_, j) => ({
                aggregateType: "Order",
                aggregateId: `o-${i + j}`,
                eventType: "OrderPlaced",
                payload: { n: i + j }
              }))))
            }
            // small batches so that the outage lands mid-drain; quick backoff so that the test is short
            yield* Layer.build(OutboxLive.layer({
              config: {
                batchSize: 20,
                minBatchSize: 20,
                pollInterval: Duration.millis(50),
                retryPolicy: RetryPolicy.exponential({ base: "100 millis", cap: "400 millis" }),
                maxRetries: 1000
              }
            }).pipe(Layer.provide(broker.sink(proxy))))
            yield* until(Effect.map(countWhere("COMPLETED"), (n) => n >= 40), "20 seconds", "nothing was delivered")
            yield* proxy.setMode("refuse")
            // the relay keeps trying: failures pile up as FAILED rows waiting out their backoff
            yield* until(Effect.map(countWhere("FAILED"), (n) => n > 0), "20 seconds", "no delivery failed while refused")
            yield* Effect.sleep("1 second")
            const during = yield* rows
            const onBroker = new Set(yield* received)
            const completedDuring = during.filter((r) => r.status === "COMPLETED")
            assert.isBelow(completedDuring.length, EVENTS, "the outage came after the drain")
            for (const r of completedDuring) assert.isTrue(onBroker.has(r.tracking_id), `completed without an ack: ${r.tracking_id}`)
            const failedRetries = yield* sql<{ n: number }>`SELECT max(retry_count)::int AS n FROM outbox`
            assert.isAtLeast(failedRetries[0]!.n, 1)

            yield* proxy.setMode("forward")
            yield* until(Effect.map(countWhere("COMPLETED"), (n) => n === EVENTS), "60 seconds", "not everything was delivered after the outage")
            const after = yield* rows
            const all = new Set([...onBroker, ...(yield* received)])
            for (const r of after) assert.isTrue(all.has(r.tracking_id), `completed but not on the broker: ${r.tracking_id}`)
            assert.strictEqual(after.filter((r) => r.status === "DEAD_LETTER").length, 0)
            assert.isAtLeast(yield* proxy.connections, 2, "the sink reconnected")
          }).pipe(Effect.scoped), 90_000)
      })
    }
  }
)
