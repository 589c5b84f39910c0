/**
 * A sink that produces each event to Apache Kafka, counted delivered only
 * once every in-sync replica has it (`acks=all`).
 *
 * - **Topic**: `outbox.<aggregateType>` by default (characters Kafka does
 *   not allow in a topic name become `_`), the outbox-router convention of
 *   Debezium (whose own default is `outbox.event.<aggregatetype>`: pass
 *   `topic: (event) => \`outbox.event.${event.aggregateType}\`` for that);
 *   any function of the event with the `topic` option.
 * - **Key**: the aggregate id (`key` option to change it), partitioned with
 *   the Java client's murmur2 partitioner, so one aggregate's events stay in
 *   one partition, in order, and land on the same partition as a Java,
 *   Debezium or kafkajs producer would put them.
 * - **Value**: the JSON body every broker sink sends (`WebhookSink.body`);
 *   **headers**: the tracking id (the consumer's dedupe key), event type,
 *   aggregate type and id, and `traceparent` / `tracestate`.
 * - **Producer**: idempotent (no duplicates from the client's own retries,
 *   order kept within a partition), `acks=all`; `deliverBatch` sends the
 *   whole batch in one `send` (one produce request per broker) and maps the
 *   broker's answer back per event: events in acknowledged partitions are
 *   delivered, the others get their partition's (or record's) error.
 * - **Failures**: a rejected record (too large, invalid, unauthorized or
 *   invalid topic, corrupt) is permanent; a broker down, a leader election,
 *   too few in-sync replicas, an unknown topic (it may yet be created), a
 *   timeout are retryable. See {@link classify}. A permanent error that a
 *   batch shares between several events (the broker rejects a partition's
 *   whole record batch when one record is too large) is re-checked event by
 *   event, so that one poison event does not dead-letter its neighbours.
 * - **Connection**: the client connects lazily (on the first delivery, and
 *   a warm-up at start) and reconnects on the next request after a broker
 *   is lost, so a broker that is down at start does not fail the layer: the
 *   deliveries fail retryably until it is back. The producer is closed with
 *   the layer's scope.
 *
 * **Client**: `@platformatic/kafka` (an optional peer dependency: `npm
 * install @platformatic/kafka`), pure JavaScript. Chosen over
 * `@confluentinc/kafka-javascript`, which wraps librdkafka (a native build
 * whose prebuilt-binary download fails on machines without access to its
 * host, and a compiler toolchain otherwise), and over `kafkajs`, which is in
 * maintenance mode.
 *
 * **Gotchas**
 *
 * - The client's own retries are kept finite (3, 250 ms apart): a send that
 *   outlives the sink's `timeout` is abandoned (a retryable `DeliveryError`)
 *   but still runs in the background until the client gives up, and may
 *   still land, a duplicate the consumer drops by tracking id.
 * - `autocreateTopics` (default true) asks the broker to create a missing
 *   topic, as the Java producer does; the broker's
 *   `auto.create.topics.enable` decides. Without it an unknown topic is a
 *   retryable failure until someone creates the topic.
 *
 * **Example**
 *
 * ```ts
 * const AppLive = OutboxLive.layer().pipe(
 *   Layer.provide(KafkaSink.layer({ brokers: ["kafka-1:9092", "kafka-2:9092"] })),
 *   Layer.provideMerge(OutboxLive.layerPg)
 * )
 * // or from a URL: Layer.unwrap(Effect.map(KafkaSink.fromUrl("kafka://kafka-1:9092,kafka-2:9092"), (brokers) => KafkaSink.layer({ brokers })))
 * ```
 *
 * @since 0.1.0
 */
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { type BatchOutcome, type ConnectionStatus, OutboxSink } from "@outbox/core/OutboxSink"
import type * as Kafka from "@platformatic/kafka"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ConnectionOptions as TlsOptions } from "node:tls"
import * as brokerMessage from "../internal/brokerMessage.ts"
import { SinkSetupError } from "./SinkSetupError.ts"

/**
 * Options of `make` and `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Bootstrap brokers, `host:port` (see {@link fromUrl} for `kafka://host:port[,host:port]`). */
  readonly brokers: ReadonlyArray<string>
  /** The client id the brokers see (quotas, logs; default `"outbox-relay"`). */
  readonly clientId?: string | undefined
  /** The topic of an event (default {@link defaultTopic}: `outbox.<aggregateType>`). */
  readonly topic?: ((event: OutboxEvent) => string) | undefined
  /** The key of an event (default {@link defaultKey}: the aggregate id), which picks its partition. */
  readonly key?: ((event: OutboxEvent) => string) | undefined
  /** How long a delivery waits for the brokers' acknowledgement (default 10 seconds). */
  readonly timeout?: Duration.Input | undefined
  /** Ask the broker to create a missing topic (default true; the broker's `auto.create.topics.enable` decides). */
  readonly autocreateTopics?: boolean | undefined
  /** SASL authentication, passed to the client as is (`{ mechanism: "SCRAM-SHA-512", username, password }`). */
  readonly sasl?: Kafka.SASLOptions | undefined
  /** TLS options (Node's `tls.connect` options), passed to the client as is; `{}` for TLS with the system CAs. */
  readonly tls?: TlsOptions | undefined
}

/**
 * What the sink produces for an event.
 *
 * @category models
 * @since 0.1.0
 */
export interface KafkaMessage {
  readonly topic: string
  readonly key: string
  /** The JSON body (`WebhookSink.body`). */
  readonly value: string
  readonly headers: Readonly<Record<string, string>>
}

/**
 * Where an event's message went: its topic and partition (`undefined` when
 * unknown, e.g. the send failed before the topic's metadata was known).
 *
 * @category models
 * @since 0.1.0
 */
export interface Placement {
  readonly topic: string
  readonly partition: number | undefined
}

const defaultTimeout = Duration.seconds(10)

/**
 * The default topic: `outbox.<aggregateType>`, with any character Kafka
 * does not allow in a topic name (anything but letters, digits, `.`, `_`
 * and `-`) replaced by `_`.
 *
 * @category routing
 * @since 0.1.0
 */
export const defaultTopic = (event: OutboxEvent): string =>
  `outbox.${event.aggregateType.length === 0 ? "_" : event.aggregateType.replace(/[^A-Za-z0-9._-]/g, "_")}`

/**
 * The default key: the aggregate id, so that one aggregate's events share a
 * partition and keep their order.
 *
 * @category routing
 * @since 0.1.0
 */
export const defaultKey = (event: OutboxEvent): string => event.aggregateId

/**
 * Whether Kafka accepts `topic` as a topic name: 1 to 249 letters, digits,
 * `.`, `_` or `-`, and not `.` or `..`. The client does not check it; an
 * event routed to an invalid name is refused (permanently) before the send,
 * so that it does not fail the rest of its batch.
 *
 * @category guards
 * @since 0.1.0
 */
export const isValidTopic = (topic: string): boolean =>
  topic.length <= 249 && /^[A-Za-z0-9._-]+$/.test(topic) && topic !== "." && topic !== ".."

/**
 * The message the sink produces for `event`: topic and key from `options`
 * (or the defaults), the shared broker headers (with the trace context of
 * the current span, else the producer's from the event's metadata) and body.
 *
 * @category constructors
 * @since 0.1.0
 */
export const toMessage = (
  event: OutboxEvent,
  options: Pick<Options, "topic" | "key"> = {}
): Effect.Effect<KafkaMessage> =>
  Effect.map(brokerMessage.headers(event), (headers) => messageIn(event, headers, options))

/** `toMessage` with the headers already built (`brokerMessage.buildAll`: one trace-context read per batch). */
const messageIn = (
  event: OutboxEvent,
  headers: Record<string, string>,
  options: Pick<Options, "topic" | "key">
): KafkaMessage => ({
  topic: (options.topic ?? defaultTopic)(event),
  key: (options.key ?? defaultKey)(event),
  value: brokerMessage.body(event),
  headers
})

const brokerPattern = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/

/**
 * The brokers of a `kafka://host:port[,host:port...]` URL, as `host:port`
 * (port 9092 when left out; IPv6 hosts in brackets). Anything else (another
 * scheme, a path, credentials, an empty or malformed host, a port out of
 * range) fails with an `InvalidOptions` `SinkSetupError`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromUrl = (url: string): Effect.Effect<ReadonlyArray<string>, SinkSetupError> =>
  Effect.suspend(() => {
    const invalid = (why: string) =>
      Effect.fail(
        new SinkSetupError({
          sink: "kafka",
          reason: "InvalidOptions",
          message: `invalid Kafka URL ${JSON.stringify(url)}: ${why} (expected kafka://host:port[,host:port])`
        })
      )
    const match = /^kafka:\/\/([^/?#]*)\/?$/i.exec(url.trim())
    if (match === null) return invalid("not a kafka:// URL with only brokers")
    const brokers: Array<string> = []
    for (const entry of match[1]!.split(",")) {
      const broker = brokerPattern.exec(entry.trim())
      if (broker === null) return invalid(`bad broker ${JSON.stringify(entry)}`)
      const port = broker[2] === undefined ? 9092 : Number(broker[2])
      if (port < 1 || port > 65535) return invalid(`port out of range in ${JSON.stringify(entry)}`)
      brokers.push(`${broker[1]}:${port}`)
    }
    return Effect.succeed(brokers)
  })

/**
 * Kafka error codes that no retry can fix for this record: it is too large
 * or invalid, or its topic is invalid or forbidden. (`CORRUPT_MESSAGE` is
 * retriable for the Java client, a CRC mismatch on the wire; the sink's
 * records are rebuilt identically on every attempt, so it is treated as
 * the record's fault here.)
 */
const permanentCodes = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
  "CORRUPT_MESSAGE",
  "INVALID_RECORD",
  "INVALID_TIMESTAMP",
  "POLICY_VIOLATION"
])

/** A property of an unknown value, if it is an object. */
const field = (value: unknown, name: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[name] : undefined

const text = (value: unknown): string | undefined => typeof value === "string" && value.length > 0 ? value : undefined

/** The innermost errors of an error tree (the client nests retries and per-broker failures in `MultipleErrors`). */
const leavesOf = (error: unknown): Array<unknown> => {
  const children = field(error, "errors")
  return Array.isArray(children) && children.length > 0 ? children.flatMap(leavesOf) : [error]
}

/** One leaf: whether it is retryable, and why it failed. */
const classifyLeaf = (error: unknown): { readonly retryable: boolean; readonly message: string } => {
  const message = text(field(error, "message")) ?? (typeof error === "string" ? error : String(error))
  const apiId = text(field(error, "apiId"))
  if (apiId !== undefined) {
    const server = text(field(error, "serverErrorMessage"))
    const detail = `${apiId} (${message}${server === undefined || server === message ? "" : ` ${server}`})`
    if (permanentCodes.has(apiId)) return { retryable: false, message: `Kafka rejected the message: ${detail}` }
    if (apiId === "UNKNOWN_TOPIC_OR_PARTITION") {
      return { retryable: true, message: `Kafka: unknown topic or partition, retried until it exists: ${detail}` }
    }
    return { retryable: true, message: `Kafka error ${detail}` }
  }
  const cause = text(field(field(error, "cause"), "message"))
  const withCause = cause === undefined ? message : `${message} (${cause})`
  switch (field(error, "code")) {
    case "PLT_KFK_NETWORK": // also the client's TimeoutError
    case "PLT_KFK_TIMEOUT":
      return { retryable: true, message: `Kafka broker unreachable: ${withCause}` }
    case "PLT_KFK_AUTHENTICATION":
      // wrong credentials are the deployment's fault, not the event's: retried until fixed
      return { retryable: true, message: `Kafka authentication failed: ${withCause}` }
    case "PLT_KFK_USER":
      // the client refused the request itself: retrying the same request cannot help, except for
      // a topic that does not exist yet (auto-creation off) and a client closed during shutdown
      if (/^Unknown topic/i.test(message)) {
        return { retryable: true, message: `Kafka: ${message.replace(/\.$/, "")}; retried until it exists` }
      }
      if (/closed/i.test(message)) return { retryable: true, message: `Kafka producer closed: ${message}` }
      return { retryable: false, message: `Kafka client refused the message: ${withCause}` }
    default:
      return { retryable: true, message: `Kafka delivery failed: ${withCause}` }
  }
}

const fromLeaves = (leaves: ReadonlyArray<unknown>, cause: unknown): DeliveryError => {
  if (leaves.length === 0) return DeliveryError.transient("Kafka did not acknowledge the message", cause)
  const classified = leaves.map(classifyLeaf)
  // a permanent leaf decides (the client stops retrying on it); else the latest attempt says why
  const permanent = classified.find((leaf) => !leaf.retryable)
  return permanent !== undefined
    ? DeliveryError.permanent(permanent.message, cause)
    : DeliveryError.transient(classified[classified.length - 1]!.message, cause)
}

/**
 * Classifies an error of the Kafka client (or anything else thrown at the
 * sink) as a `DeliveryError`: permanent for a record the broker rejects
 * (`MESSAGE_TOO_LARGE`, `RECORD_LIST_TOO_LARGE`, `INVALID_TOPIC_EXCEPTION`,
 * `TOPIC_AUTHORIZATION_FAILED`, `CORRUPT_MESSAGE`, `INVALID_RECORD`,
 * `INVALID_TIMESTAMP`, `POLICY_VIOLATION`) and for a request the client
 * itself refuses; retryable for everything else: connection errors and
 * timeouts, `NOT_LEADER_OR_FOLLOWER`, `LEADER_NOT_AVAILABLE`,
 * `REQUEST_TIMED_OUT`, `NETWORK_EXCEPTION`, `NOT_ENOUGH_REPLICAS(_AFTER_APPEND)`,
 * `UNKNOWN_TOPIC_OR_PARTITION` (the topic may yet be created), failed
 * authentication (a deployment fault, fixed without losing events), and
 * unknown errors. Nested errors (retries, several brokers) are looked
 * through: a permanent one decides, else the latest.
 *
 * @category error handling
 * @since 0.1.0
 */
export const classify = (error: unknown): DeliveryError =>
  error instanceof DeliveryError ? error : fromLeaves(leavesOf(error), error)

const partitionPath = /^\/responses\/(\d+)\/partition_responses\/(\d+)(?:\/record_errors\/(\d+))?$/

/**
 * The outcome of each event of a failed `send`, in order, from the
 * placement of its message and the client's error: delivered (`undefined`)
 * when its partition was acknowledged (a broker answered for it without an
 * error, or the client counted it produced); its record's error when the
 * broker named the record (permanent), with a retryable error for the
 * other records of that partition's batch (not appended because of it);
 * its partition's error when the broker failed the partition; otherwise
 * the classification of what is left of the error (a broker unreachable,
 * a timeout): nothing is counted delivered without an acknowledgement.
 *
 * @category error handling
 * @since 0.1.0
 */
export const outcomes = (placements: ReadonlyArray<Placement>, error: unknown): BatchOutcome => {
  const slot = (topic: unknown, partition: unknown) => `${String(topic)}\u0000${String(partition)}`
  const acked = new Set<string>()
  const partitionErrors = new Map<string, DeliveryError>()
  const recordErrors = new Map<string, Map<number, DeliveryError>>()
  const attributed = new Set<unknown>()

  const visit = (node: unknown): void => {
    const produced = field(field(node, "produced"), "offsets")
    if (Array.isArray(produced)) {
      for (const offset of produced) acked.add(slot(field(offset, "topic"), field(offset, "partition")))
    }
    const responses = field(field(node, "response"), "responses")
    const children = field(node, "errors")
    if (Array.isArray(responses)) {
      // a produce response: per topic, per partition, an error code (0: appended) and record errors
      responses.forEach((topic) => {
        const partitions = field(topic, "partitionResponses")
        if (!Array.isArray(partitions)) return
        for (const partition of partitions) {
          if (field(partition, "errorCode") === 0) acked.add(slot(field(topic, "name"), field(partition, "index")))
        }
      })
      if (!Array.isArray(children)) return
      const located = children.flatMap((child) => {
        const path = partitionPath.exec(text(field(child, "path")) ?? "")
        if (path === null) return []
        const topic = responses[Number(path[1])]
        const partition = (field(topic, "partitionResponses") as ReadonlyArray<unknown> | undefined)?.[Number(path[2])]
        if (partition === undefined) return []
        attributed.add(child)
        return [{ child, partition, key: slot(field(topic, "name"), field(partition, "index")), record: path[3] }]
      })
      // the partition's own error first: a record error is reported with its partition's code
      const codes = new Map<string, string>()
      for (const { child, key, record } of located) {
        if (record !== undefined) continue
        partitionErrors.set(key, classify(child))
        codes.set(key, text(field(child, "apiId")) ?? "INVALID_RECORD")
      }
      for (const { child, key, partition, record } of located) {
        if (record === undefined) continue
        const batchIndex = field((field(partition, "recordErrors") as ReadonlyArray<unknown> | undefined)?.[Number(record)], "batchIndex")
        if (typeof batchIndex !== "number") continue
        const records = recordErrors.get(key) ?? new Map<number, DeliveryError>()
        const why = text(field(child, "serverErrorMessage")) ?? "invalid record"
        records.set(batchIndex, DeliveryError.permanent(`Kafka rejected the message: ${codes.get(key) ?? "INVALID_RECORD"} (${why})`, child))
        recordErrors.set(key, records)
      }
      return
    }
    if (Array.isArray(children)) children.forEach(visit)
  }
  visit(error)

  const rest = fromLeaves(leavesOf(error).filter((leaf) => !attributed.has(leaf)), error)
  const positions = new Map<string, number>()
  return placements.map(({ partition, topic }) => {
    if (partition === undefined) return rest
    const key = slot(topic, partition)
    const index = positions.get(key) ?? 0
    positions.set(key, index + 1)
    if (acked.has(key)) return undefined
    const records = recordErrors.get(key)
    if (records !== undefined) {
      return records.get(index) ??
        DeliveryError.transient(`Kafka did not append the message: another record of its batch to ${topic}[${partition}] was invalid`)
    }
    return partitionErrors.get(key) ?? rest
  })
}

/**
 * Builds the sink: an idempotent producer (`acks=all`) on `options.brokers`,
 * created without connecting (a broker down at start is not an error),
 * closed with the scope. Fails with `SinkSetupError` when the client is not
 * installed (`MissingClient`) or the options are wrong (`InvalidOptions`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<OutboxSink["Service"], SinkSetupError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = (message: string, cause?: unknown) =>
      new SinkSetupError({ sink: "kafka", reason: "InvalidOptions", message, cause })
    if (options.brokers.length === 0) return yield* invalid("the Kafka sink needs at least one broker")
    const timeout = Duration.fromInputUnsafe(options.timeout ?? defaultTimeout)
    const timeoutMs = Math.max(1, Math.ceil(Duration.toMillis(timeout)))
    const kafka = yield* brokerMessage.loadClient<typeof Kafka>("kafka", "@platformatic/kafka", () => import("@platformatic/kafka"))

    // the partition the client picks for each message (the Java client's murmur2 partitioner), so that a
    // failed send can be mapped back per event
    const assigned = new WeakMap<object, number>()
    const producerOptions: Kafka.ProducerOptions<string, string, string, string> = {
      clientId: options.clientId ?? "outbox-relay",
      bootstrapBrokers: [...options.brokers],
      serializers: kafka.stringSerializers,
      idempotent: true,
      acks: kafka.ProduceAcks.ALL,
      // finite (an idempotent producer would retry forever): a send abandoned at the sink's timeout ends
      retries: 3,
      retryDelay: 250,
      timeout: timeoutMs,
      requestTimeout: timeoutMs,
      autocreateTopics: options.autocreateTopics ?? true,
      partitioner: (message, key) => {
        const partition = kafka.compatibilityPartitioner(message, key)
        assigned.set(message, partition)
        return partition
      },
      ...(options.sasl === undefined ? {} : { sasl: options.sasl }),
      ...(options.tls === undefined ? {} : { tls: options.tls })
    }
    // validated once here (the client checks its options only in its `strict` mode, and then on every send too)
    for (const validate of [kafka.baseOptionsValidator, kafka.producerOptionsValidator]) {
      if (validate(producerOptions)) continue
      const errors = (validate.errors ?? []).map((e) => `${e.instancePath || "options"} ${e.message ?? "is invalid"}`)
      return yield* invalid(`invalid Kafka options: ${errors.join("; ")}`)
    }
    const producer = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new kafka.Producer<string, string, string, string>(producerOptions),
        catch: (cause) => invalid(`invalid Kafka options: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
      }),
      (producer) => Effect.callback<void>((resume) => void producer.close(true, () => resume(Effect.void)))
    )

    // connection status: the client's pool, and the last broker it failed to reach
    let problem: string | undefined
    let warming = false
    producer.on("client:broker:connect", () => void (problem = undefined))
    producer.on("client:broker:failed", ({ broker }) => void (problem = `connection to ${broker.host}:${broker.port} failed`))
    producer.on("client:broker:disconnect", ({ broker }) => void (problem = `connection to ${broker.host}:${broker.port} lost`))
    /** Connects to the cluster in the background (at start, and when the health check finds no connection). */
    const warmUp = () => {
      if (warming || producer.closed) return
      warming = true
      producer.connectToBrokers(null, (error) => {
        warming = false
        if (error !== null) problem = classify(error).message
      })
    }
    warmUp()
    const connection: Effect.Effect<ConnectionStatus> = Effect.sync(() => {
      if (producer.isConnected()) return { connected: true }
      warmUp()
      return { connected: false, detail: problem ?? "connecting" }
    })

    const timedOut = DeliveryError.transient(`Kafka did not acknowledge within ${Duration.format(timeout)}`)

    /** One `send` of `messages`, awaited (a broker's ack per partition), mapped back per message. */
    const produce = (messages: ReadonlyArray<KafkaMessage>): Effect.Effect<BatchOutcome> => {
      const records = messages.map((m): Kafka.MessageToProduce<string, string, string, string> => ({
        topic: m.topic,
        key: m.key,
        value: m.value,
        headers: { ...m.headers }
      }))
      return Effect.callback<BatchOutcome>((resume) =>
        void producer.send({ messages: records }, (error) => {
          if (error === null) return resume(Effect.succeed(records.map(() => undefined)))
          const placements = records.map(({ topic }, i): Placement => {
            const partition = assigned.get(records[i]!)
            const count = producer.currentMetadata?.topics.get(topic)?.partitionsCount
            return { topic, partition: partition === undefined || !count ? undefined : partition % count }
          })
          resume(Effect.succeed(outcomes(placements, error)))
        })
      ).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.succeed(records.map(() => timedOut)) }))
    }

    const deliverBatch = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<BatchOutcome> =>
      Effect.flatMap(brokerMessage.buildAll(events, (event, headers) => messageIn(event, headers, options)), (messages) => {
        const result: Array<DeliveryError | undefined> = messages.map((m) =>
          isValidTopic(m.topic)
            ? undefined
            : DeliveryError.permanent(`invalid Kafka topic name ${JSON.stringify(m.topic)} (letters, digits, ".", "_", "-"; at most 249)`)
        )
        const sent = messages.flatMap((_, i) => result[i] === undefined ? [i] : [])
        if (sent.length === 0) return Effect.succeed(result)
        return Effect.flatMap(produce(sent.map((i) => messages[i]!)), (outcome) => {
          outcome.forEach((o, j) => void (result[sent[j]!] = o))
          // a permanent error shared by several events is the batch's, not necessarily each event's
          // (the broker rejects a partition's whole record batch): re-check those one by one
          const shared = new Map<DeliveryError, number>()
          for (const o of outcome) if (o !== undefined && !o.retryable) shared.set(o, (shared.get(o) ?? 0) + 1)
          const recheck = sent.filter((_, j) => (shared.get(outcome[j]!) ?? 0) > 1)
          if (recheck.length === 0 || sent.length === 1) return Effect.succeed(result)
          return Effect.as(
            Effect.forEach(recheck, (i) => Effect.map(produce([messages[i]!]), ([o]) => void (result[i] = o)), {
              discard: true
            }),
            result
          )
        })
      })

    const deliver = (event: OutboxEvent): Effect.Effect<void, DeliveryError> =>
      Effect.flatMap(deliverBatch([event]), ([error]) => error === undefined ? Effect.void : Effect.fail(error))

    return OutboxSink.of({ name: "kafka", deliver, deliverBatch, connection })
  })

/**
 * The Kafka sink as a layer: the producer lives as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<OutboxSink, SinkSetupError> => Layer.effect(OutboxSink, make(options))
