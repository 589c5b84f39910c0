/**
 * The brokers of `sinks.bench.ts`. For each: a fresh destination per run
 * (unique names, removed when the run's scope closes), the sink layer that
 * publishes there, the hand-written ceiling (the messages the sink would
 * build, built up front; the same client library with the sink's
 * connection settings; batches published at once and their acks awaited
 * together) and the broker's own count of what arrived.
 *
 * - NATS JetStream: a stream `BENCH_SINKS_<tag>` on `bench_sinks_<tag>.>`,
 *   created as the sink creates one (`jsm.streams.add({ name, subjects })`:
 *   file storage, the server's 2-minute duplicate window); `js.publish` with
 *   `msgID` = tracking id, the headers and the sink's client timeout.
 * - RabbitMQ: the durable topic exchange `bench_sinks_<tag>` (as the sink
 *   declares it), a durable queue bound with `#` (so every message is
 *   routable; `x-max-length` = the run's events as a guard); a confirm
 *   publisher (`rabbitmq-client`), `mandatory`, persistent, the sink's
 *   envelope (`RabbitMqSink.envelope`).
 * - Redis Streams: the key `bench:sinks:<tag>:<aggregateType>` (the sink's
 *   `stream` option), one pipeline of `XADD`s per batch.
 *
 * And a reference without a broker: a sink whose `deliverBatch` acks every
 * event at once (no ceiling), so that the relay's own cost (claims,
 * completions, its duties) shows beside the brokers'.
 */
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as NatsSink from "@outbox/runtime/sinks/NatsSink"
import * as RabbitMqSink from "@outbox/runtime/sinks/RabbitMqSink"
import * as RedisStreamSink from "@outbox/runtime/sinks/RedisStreamSink"
import type { SinkSetupError } from "@outbox/runtime/sinks/SinkSetupError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as brokerMessage from "../../packages/runtime/src/internal/brokerMessage.ts"

export const NATS_URL = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222"
export const RABBITMQ_URL = process.env.BENCH_RABBITMQ_URL ?? "amqp://guest:guest@127.0.0.1:5672"
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379"

/** The sink's own per-publish client timeout (its `timeout`, 10 s, plus 1 s): the ceiling's requests arm the same timers. */
const NATS_CLIENT_TIMEOUT = 11_000

/** One run's destination on a broker. */
export interface Destination {
  /** The sink publishing there (built before the relay's timing starts). */
  readonly sink: Layer.Layer<OutboxSink, SinkSetupError>
  /**
   * The hand-written ceiling: builds the events' messages (not timed) on a
   * connection of its own, and returns the publish loop to time: `batch`
   * messages published at once, their acks awaited together, `inFlight`
   * such batches at a time.
   */
  readonly ceiling?: (
    events: ReadonlyArray<OutboxEvent>,
    batch: number,
    inFlight: number,
    times: BatchTimes
  ) => Effect.Effect<() => Promise<void>, unknown, Scope.Scope>
  /** The messages the broker holds there now. */
  readonly count: Effect.Effect<number, unknown>
}

export interface Broker {
  readonly name: "nats" | "rabbitmq" | "redis" | "none"
  readonly label: string
  /** What the ceiling does and where both publish, for the printed settings. */
  readonly settings: string
  /** A fresh destination named after `tag`, for at most `events` messages; removed with the scope. */
  readonly open: (tag: string, events: number) => Effect.Effect<Destination, unknown, Scope.Scope>
}

/** Time spent publishing batches (publish to last ack), summed over batches: `batchMs` over `events`. */
export interface BatchTimes {
  batchMs: number
  batches: number
  events: number
}
export const batchTimes = (): BatchTimes => ({ batchMs: 0, batches: 0, events: 0 })

/**
 * Publishes `[0, count)` in batches of `batch`, `inFlight` batches at a time, each awaited whole before its
 * lane goes on; each batch's time is added to `times`.
 */
const inBatches = async (
  count: number,
  batch: number,
  inFlight: number,
  times: BatchTimes,
  publish: (from: number, to: number) => Promise<unknown>
): Promise<void> => {
  let next = 0
  const lane = async () => {
    while (next < count) {
      const from = next
      next = Math.min(count, next + batch)
      const t0 = performance.now()
      await publish(from, next)
      times.batchMs += performance.now() - t0
      times.batches++
      times.events += next - from
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, inFlight) }, lane))
}

/**
 * The shared broker headers of each event (no trace context in the bench: the four `outbox-*` headers), in
 * one fiber, as a sink builds a batch's.
 */
const headersOf = (events: ReadonlyArray<OutboxEvent>): ReadonlyArray<Record<string, string>> =>
  Effect.runSync(Effect.forEach(events, brokerMessage.headers))

const promise = <A>(evaluate: () => Promise<A>) => Effect.tryPromise({ try: evaluate, catch: (cause) => cause })

// --- NATS JetStream ----------------------------------------------------------

const nats: Broker = {
  name: "nats",
  label: "NATS JetStream",
  settings: "stream created like the sink's (file storage, 2-min duplicate window), js.publish with msgID, headers, body; " +
    "one connection (noAsyncTraces, as the sink); the awaited acks are JetStream PubAcks",
  open: (tag) =>
    Effect.gen(function*() {
      const transport = yield* promise(() => import("@nats-io/transport-node"))
      const js = yield* promise(() => import("@nats-io/jetstream"))
      const servers = NATS_URL.replace(/^nats:\/\//, "")
      const connect = (name: string) =>
        Effect.acquireRelease(
          promise(() => transport.connect({ servers, name, noAsyncTraces: true, timeout: 10_000 })),
          (nc) => Effect.promise(() => nc.close().catch(() => undefined))
        )
      const admin = yield* connect("outbox-bench-admin")
      const jsm = yield* promise(() => js.jetstreamManager(admin))
      const stream = `BENCH_SINKS_${tag}`
      const prefix = `bench_sinks_${tag}`
      yield* Effect.acquireRelease(
        promise(() => jsm.streams.add({ name: stream, subjects: [`${prefix}.>`] })),
        () => Effect.promise(() => jsm.streams.delete(stream).catch(() => false))
      )
      return {
        sink: NatsSink.layer({ url: NATS_URL, stream, subjectPrefix: prefix }),
        ceiling: (events, batch, inFlight, times) =>
          Effect.gen(function*() {
            const nc = yield* connect("outbox-bench-ceiling")
            const client = js.jetstream(nc)
            const fields = headersOf(events)
            const messages = events.map((event, i) => {
              const headers = transport.headers()
              for (const [key, value] of Object.entries(fields[i]!)) headers.set(key, value)
              return {
                subject: NatsSink.defaultSubject(event, prefix),
                body: brokerMessage.body(event),
                options: { msgID: event.trackingId, headers, timeout: NATS_CLIENT_TIMEOUT }
              }
            })
            return () =>
              inBatches(messages.length, batch, inFlight, times, (from, to) => {
                const acks: Array<Promise<unknown>> = []
                for (let i = from; i < to; i++) {
                  const m = messages[i]!
                  acks.push(client.publish(m.subject, m.body, m.options))
                }
                return Promise.all(acks)
              })
          }),
        count: Effect.map(promise(() => jsm.streams.info(stream)), (info) => info.state.messages)
      } satisfies Destination
    })
}

// --- RabbitMQ ----------------------------------------------------------------

const rabbitmq: Broker = {
  name: "rabbitmq",
  label: "RabbitMQ (confirms)",
  settings: "durable topic exchange, a durable classic queue bound with # (x-max-length = events); a confirm publisher " +
    "(rabbitmq-client, maxAttempts 1, frameMax 131072 as the sink) sending the sink's envelope (mandatory, persistent, " +
    "headers) and body; the awaited acks are publisher confirms",
  open: (tag, events) =>
    Effect.gen(function*() {
      const { Connection } = yield* promise(() => import("rabbitmq-client"))
      const connect = (connectionName: string) =>
        Effect.acquireRelease(
          Effect.gen(function*() {
            const connection = new Connection({ url: RABBITMQ_URL, frameMax: 131_072, connectionName })
            connection.on("error", () => undefined)
            yield* promise(() => connection.onConnect(10_000))
            return connection
          }),
          (connection) => Effect.promise(() => connection.close().catch(() => undefined))
        )
      const admin = yield* connect("outbox-bench-admin")
      const exchange = `bench_sinks_${tag}`
      const queue = `bench_sinks_${tag}`
      yield* Effect.acquireRelease(
        promise(async () => {
          await admin.exchangeDeclare({ exchange, type: "topic", durable: true })
          await admin.queueDeclare({ queue, durable: true, arguments: { "x-max-length": events } })
          await admin.queueBind({ queue, exchange, routingKey: "#" })
        }),
        () =>
          Effect.promise(async () => {
            await admin.queueDelete({ queue }).catch(() => undefined)
            await admin.exchangeDelete({ exchange }).catch(() => undefined)
          })
      )
      return {
        sink: RabbitMqSink.layer({ url: RABBITMQ_URL, exchange }),
        ceiling: (events, batch, inFlight, times) =>
          Effect.gen(function*() {
            const connection = yield* connect("outbox-bench-ceiling")
            const publisher = yield* Effect.acquireRelease(
              Effect.sync(() =>
                connection.createPublisher({ confirm: true, maxAttempts: 1, exchanges: [{ exchange, type: "topic", durable: true }] })
              ),
              (publisher) => Effect.promise(() => publisher.close().catch(() => undefined))
            )
            const headers = headersOf(events)
            const messages = events.map((event, i) => ({
              envelope: RabbitMqSink.envelope(event, exchange, RabbitMqSink.defaultRoutingKey(event), headers[i]!),
              body: Buffer.from(brokerMessage.body(event), "utf8")
            }))
            return () =>
              inBatches(messages.length, batch, inFlight, times, (from, to) => {
                const confirms: Array<Promise<void>> = []
                for (let i = from; i < to; i++) confirms.push(publisher.send(messages[i]!.envelope, messages[i]!.body))
                return Promise.all(confirms)
              })
          }),
        count: Effect.map(promise(() => admin.queueDeclare({ queue, passive: true })), (ok) => ok.messageCount)
      } satisfies Destination
    })
}

// --- Redis Streams -----------------------------------------------------------

const redis: Broker = {
  name: "redis",
  label: "Redis Streams",
  settings: "one stream per aggregate type (the sink's stream option), no MAXLEN; the XADD arguments the sink builds " +
    "(the headers as fields, then body), one ioredis pipeline per batch; the awaited acks are the XADD replies",
  open: (tag) =>
    Effect.gen(function*() {
      const { Redis } = yield* promise(() => import("ioredis"))
      const connect = (connectionName: string) =>
        Effect.acquireRelease(
          Effect.gen(function*() {
            const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false, connectionName })
            client.on("error", () => undefined)
            yield* promise(() => client.ping())
            return client
          }),
          (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
        )
      const admin = yield* connect("outbox-bench-admin")
      const prefix = `bench:sinks:${tag}`
      const keyOf = (event: OutboxEvent) => `${prefix}:${brokerMessage.token(event.aggregateType)}`
      // every event of the bench is an "Order"
      const key = `${prefix}:Order`
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.del(key).catch(() => 0)))
      return {
        sink: RedisStreamSink.layer({ url: REDIS_URL, stream: keyOf }),
        ceiling: (events, batch, inFlight, times) =>
          Effect.gen(function*() {
            const client = yield* connect("outbox-bench-ceiling")
            const fields = headersOf(events)
            const entries = events.map((event, i) => {
              const args = ["*"]
              const headers = fields[i]!
              for (const name in headers) args.push(name, headers[name]!)
              args.push(RedisStreamSink.fieldNames.body, brokerMessage.body(event))
              return { key: keyOf(event), args }
            })
            return () =>
              inBatches(entries.length, batch, inFlight, times, async (from, to) => {
                const pipeline = client.pipeline()
                for (let i = from; i < to; i++) pipeline.xadd(entries[i]!.key, ...entries[i]!.args)
                const replies = await pipeline.exec()
                const failed = replies?.find(([error]) => error !== null)
                if (failed !== undefined) throw failed[0]
              })
          }),
        count: promise(() => admin.xlen(key))
      } satisfies Destination
    })
}

// --- no broker ---------------------------------------------------------------

const none: Broker = {
  name: "none",
  label: "no broker (batch sink acking at once)",
  settings: "a sink whose deliverBatch acks every event of the batch at once: the relay's own cost",
  open: () =>
    Effect.sync(() => {
      let acked = 0
      return {
        sink: Layer.succeed(OutboxSink)(OutboxSink.of({
          name: "noop",
          deliver: () => Effect.sync(() => void acked++),
          deliverBatch: (events) =>
            Effect.sync(() => {
              acked += events.length
              return events.map(() => undefined)
            })
        })),
        count: Effect.sync(() => acked)
      } satisfies Destination
    })
}

export const brokers: ReadonlyArray<Broker> = [nats, rabbitmq, redis, none]
