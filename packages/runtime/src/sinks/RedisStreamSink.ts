/**
 * A sink that appends each event to a Redis stream with `XADD`, over one
 * `ioredis` connection (an optional peer dependency: `npm install ioredis`).
 *
 * Wire format: `XADD <stream> [MAXLEN ~ <maxLen>] * <field> <value> ...`,
 * the stream `outbox:<aggregateType>` by default (the `stream` option
 * overrides it), the fields, in this order:
 *
 * | field                   | value                                                      |
 * |-------------------------|------------------------------------------------------------|
 * | `outbox-tracking-id`    | the tracking id: the consumer's dedupe key                 |
 * | `outbox-event-type`     | the event type                                             |
 * | `outbox-aggregate-type` | the aggregate type                                         |
 * | `outbox-aggregate-id`   | the aggregate id                                           |
 * | `traceparent`           | W3C trace context, when the event is in a trace            |
 * | `tracestate`            | with `traceparent`, when the event has one                 |
 * | `body`                  | the JSON body (`WebhookSink.body`: tracking id, aggregate, |
 * |                         | event type, payload, metadata, `createdAt`)                |
 *
 * (the broker sinks' common headers, then the body: the same names every
 * broker sink's consumers read). The entry id is Redis's (`*`); delivery is
 * at-least-once, so a stream can hold an event twice and consumers dedupe
 * on `outbox-tracking-id` (e.g. with `PgInbox.processEvent`).
 *
 * Outcome: an event is delivered once Redis answered its `XADD` with an
 * entry id. `deliverBatch` sends a batch as one pipeline (one write, no
 * MULTI: an event is appended or not on its own), awaits the replies
 * together and reports each event's own: a `WRONGTYPE` on one stream fails
 * that event only.
 *
 * Classification (`isRetryableReply`): Redis's refusals of the event itself
 * are permanent (`WRONGTYPE`: the stream key holds another type; `ERR`: a
 * bad argument; `NOPERM`: an ACL forbids the key; `MOVED`/`ASK`: the key
 * lives on another Redis Cluster node, which this standalone connection
 * cannot follow). The server's state is retryable: `OOM`, `LOADING`,
 * `BUSY`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY` (a failover: the client
 * reconnects), `MASTERDOWN`, `NOREPLICAS`, `MISCONF`, `NOAUTH`/`WRONGPASS`
 * and any code not listed; so are a lost connection, Redis down and the
 * timeout. `OOM` is retryable because it says nothing about the event: any
 * event would be refused while Redis is full, and it clears once consumers
 * trim their streams (or the operator adds memory); dead-lettering would
 * empty the whole outbox into the dead-letter table during one incident,
 * while retrying keeps the events in PostgreSQL, the outbox's buffer, and
 * the retry policy still bounds the attempts.
 *
 * Connection: one `ioredis` client per layer. The layer waits for the
 * first connection attempt (at most `timeout`) only to fail at once when
 * Redis refuses the login (`SinkSetupError` `Connect`); a Redis that is
 * down or unreachable at start does not fail the layer: the client keeps
 * reconnecting in the background, forever (100 ms doubling to 2 s between
 * attempts). The client is closed with the layer's scope (`QUIT`, then a
 * disconnect). An `XADD` issued while disconnected waits
 * for the next connection attempt only: it fails retryably when that
 * attempt fails (`maxRetriesPerRequest: 0`), so an outage fails deliveries
 * within about 2 seconds instead of holding them up to the timeout, and
 * queued `XADD`s do not pile up to be replayed in a burst of duplicates
 * when Redis comes back. An `XADD` in flight when the connection drops is
 * failed too (retryable), never resent behind the relay's back. A reply
 * that does not come within `timeout` (a hung Redis, a dead TCP
 * connection) fails the delivery retryably, and the connection is then
 * dropped and re-established (`socketTimeout`). Either way the `XADD` may
 * still have been applied: the relay retries it and the stream holds the
 * event twice, which the at-least-once contract allows.
 *
 * **Example**
 *
 * ```ts
 * const AppLive = OutboxLive.layer().pipe(
 *   Layer.provide(RedisStreamSink.layer({ url: "redis://localhost:6379/0", maxLen: 1_000_000 })),
 *   Layer.provideMerge(OutboxLive.layerPg)
 * )
 * ```
 *
 * @since 0.1.0
 */
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { type BatchOutcome, type ConnectionStatus, OutboxSink } from "@outbox/core/OutboxSink"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Redis, RedisOptions } from "ioredis"
import * as brokerMessage from "../internal/brokerMessage.ts"
import { SinkSetupError } from "./SinkSetupError.ts"

/**
 * Options of `make` and `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /**
   * `redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS. The
   * user and password are URL-decoded. Query parameters reach `ioredis` as
   * client options (`?family=6`) and win over the sink's own settings, so
   * leave the reconnect and retry settings alone.
   */
  readonly url: string
  /**
   * The stream (key) of an event (default `defaultStream`:
   * `outbox:<aggregateType>`). A function that throws or returns an empty
   * string dead-letters the event (a permanent `DeliveryError`).
   */
  readonly stream?: ((event: OutboxEvent) => string) | undefined
  /**
   * Caps each stream at about this many entries (`XADD ... MAXLEN ~ n`:
   * Redis trims whole nodes, so a stream may hold somewhat more). Without
   * it streams grow until consumers trim them. A positive integer.
   */
  readonly maxLen?: number | undefined
  /**
   * How long a delivery waits for Redis's reply (default 10 seconds),
   * including a wait for the connection to come back.
   */
  readonly timeout?: Duration.Input | undefined
}

/**
 * The stream field names, in the order they are written (`traceparent`
 * and `tracestate` only when the event is in a trace).
 *
 * @category constants
 * @since 0.1.0
 */
export const fieldNames = {
  ...brokerMessage.headerNames,
  traceparent: "traceparent",
  tracestate: "tracestate",
  body: "body"
} as const

/**
 * The default stream of an event: `outbox:<aggregateType>` (the aggregate
 * type with dots, wildcards and whitespace turned into `_`, as in every
 * broker sink's default routing), so that a consumer group reads one
 * aggregate type's events in order.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultStream = (event: OutboxEvent): string => `outbox:${brokerMessage.token(event.aggregateType)}`

/** Reply error codes that refuse the event itself: no retry fixes them. */
const permanentCodes: ReadonlySet<string> = new Set(["WRONGTYPE", "ERR", "NOPERM", "MOVED", "ASK"])

/**
 * Whether a Redis error reply to `XADD` (its message, which starts with
 * the error code) is worth retrying: everything but `WRONGTYPE`, `ERR`,
 * `NOPERM`, `MOVED` and `ASK`. An unknown code is retryable: the relay's
 * retry policy still dead-letters the event once its attempts run out,
 * whereas a transient state taken for permanent would dead-letter events
 * at once.
 *
 * @category guards
 * @since 0.1.0
 */
export const isRetryableReply = (message: string): boolean => {
  const space = message.indexOf(" ")
  return !permanentCodes.has(space === -1 ? message : message.slice(0, space))
}

const invalid = (message: string, cause?: unknown) =>
  new SinkSetupError({ sink: "redis", reason: "InvalidOptions", message, cause })

/** Checks the URL's shape without echoing it (it may hold a password). */
const checkUrl = (url: string): Effect.Effect<void, SinkSetupError> => {
  const parsed = URL.canParse(url) ? new URL(url) : undefined
  if (parsed === undefined || (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:")) {
    return Effect.fail(invalid("the redis sink's url must look like redis://[user:pass@]host:port[/db] (or rediss:// for TLS)"))
  }
  if (parsed.pathname !== "" && parsed.pathname !== "/" && !/^\/\d+$/.test(parsed.pathname)) {
    return Effect.fail(invalid(`the redis sink's url names the database ${parsed.pathname.slice(1)}: it must be a number`))
  }
  return Effect.void
}

/** What one event becomes: the `XADD` arguments after the key. */
interface Entry {
  readonly key: string
  readonly args: Array<string>
}

/** An entry's reply not in yet. */
const pending: unique symbol = Symbol("pending")

/**
 * Builds the sink: an `ioredis` client connecting in the background,
 * closed with the scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<OutboxSink["Service"], SinkSetupError, Scope.Scope> =>
  Effect.gen(function*() {
    const timeout = yield* Option.match(Duration.fromInput(options.timeout ?? Duration.seconds(10)), {
      onNone: () => Effect.fail(invalid(`the redis sink's timeout is not a duration: ${String(options.timeout)}`)),
      onSome: Effect.succeed
    })
    const maxLen = options.maxLen
    if (maxLen !== undefined && !(Number.isSafeInteger(maxLen) && maxLen > 0)) {
      return yield* invalid(`the redis sink's maxLen must be a positive integer, not ${maxLen}`)
    }
    yield* checkUrl(options.url)
    const { Redis } = yield* brokerMessage.loadClient("redis", "ioredis", () => import("ioredis"))

    const timeoutMillis = Math.max(1, Math.ceil(Duration.toMillis(timeout)))
    const clientOptions: RedisOptions = {
      // connect now, in the background: the layer does not wait for Redis
      lazyConnect: false,
      // forever, 100 ms doubling to 2 s
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times - 1, 5), 2_000),
      // a command waits for the next connection attempt only: fails when it fails (see the module doc)
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // a failover turned the primary into a replica: reconnect (DNS / the proxy may lead to the new one)
      reconnectOnError: (error) => error.message.startsWith("READONLY") ? 1 : false,
      // replies that stop for a whole timeout: drop the (probably dead) connection and reconnect
      socketTimeout: timeoutMillis,
      keepAlive: 30_000,
      connectionName: "outbox-sink"
    }
    let lastError: Error | undefined
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const redis = new Redis(options.url, clientOptions)
          // without a listener ioredis prints every failed reconnect; kept for `connection`
          redis.on("error", (error: Error) => void (lastError = error))
          redis.on("ready", () => void (lastError = undefined))
          // a connection cut without an error (a proxy or server closing it) still says why it is down
          redis.on("close", () => void (lastError ??= new Error("the connection was closed")))
          return redis
        },
        catch: (cause) => invalid(`the redis sink could not create its client: ${String(cause)}`, cause)
      }),
      (redis) => close(redis, timeout)
    )

    // the first connection attempt's outcome, awaited at most `timeout`: Redis refusing the login fails the
    // layer (a misconfiguration no retry fixes); Redis down or slow does not (the client keeps reconnecting)
    const first = yield* firstOutcome(client).pipe(
      Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.succeed(undefined) })
    )
    if (first !== undefined && isLoginRefusal(first)) {
      return yield* new SinkSetupError({
        sink: "redis",
        reason: "Connect",
        message: `redis refused the sink's login: ${first.message}`,
        cause: first
      })
    }

    const describeConnection = (): string =>
      lastError === undefined ? client.status : `${client.status}: ${lastError.message}`

    const toDeliveryError = (key: string, error: Error): DeliveryError => {
      const command = (error as { readonly command?: { readonly name?: string } }).command
      if (error.name === "ReplyError" && command?.name === "xadd") {
        const retryable = isRetryableReply(error.message)
        return new DeliveryError({
          message: `redis refused XADD to "${key}": ${error.message}`,
          retryable,
          cause: error
        })
      }
      if (error.name === "MaxRetriesPerRequestError") {
        return DeliveryError.transient(
          `redis connection lost before XADD to "${key}" was acknowledged (connection ${describeConnection()})`,
          error
        )
      }
      // a refused handshake (INFO, AUTH) failed the queued commands, or the connection closed
      return DeliveryError.transient(`redis XADD to "${key}" failed: ${error.message} (connection ${describeConnection()})`, error)
    }

    const timedOut = (key: string): DeliveryError =>
      DeliveryError.transient(
        `redis did not acknowledge XADD to "${key}" within ${Duration.format(timeout)} (it may still be applied)${
          client.status === "ready" ? "" : ` (connection ${describeConnection()})`
        }`
      )

    const trim = maxLen === undefined ? [] : ["MAXLEN", "~", String(maxLen)]
    const streamOf = options.stream
    /** The event's stream, or why it has none (a permanent error: the `stream` option threw or named none). */
    const keyOf = (event: OutboxEvent): string | DeliveryError => {
      if (streamOf === undefined) return defaultStream(event)
      const key = brokerMessage.attempt(
        () => streamOf(event),
        (message) => `the redis sink's stream option failed for this event: ${message}`
      )
      return key instanceof DeliveryError || (typeof key === "string" && key.length > 0)
        ? key
        : DeliveryError.permanent("the redis sink's stream option returned no stream name for this event")
    }

    /** The event's `XADD`, or why it cannot have one (a permanent error, reported as its outcome). */
    const entry = (event: OutboxEvent, headers: Record<string, string>): Entry | DeliveryError => {
      const key = keyOf(event)
      if (key instanceof DeliveryError) return key
      const args = [...trim, "*"]
      for (const name in headers) args.push(name, headers[name]!)
      args.push(fieldNames.body, brokerMessage.body(event))
      return { key, args }
    }

    /** Sends the entries (one command, or one pipeline) and collects each reply, bounded by the timeout. */
    const send = (entries: ReadonlyArray<Entry | DeliveryError>): Effect.Effect<BatchOutcome> =>
      Effect.suspend(() => {
        const outcomes: Array<DeliveryError | undefined | typeof pending> = []
        let waiting = 0
        for (const item of entries) {
          const outcome = item instanceof DeliveryError ? item : pending
          if (outcome === pending) waiting++
          outcomes.push(outcome)
        }
        if (waiting === 0) return Effect.succeed(outcomes as BatchOutcome)
        return Effect.callback<BatchOutcome>((resume) => {
          // one event: a plain command; several: one pipeline (one write), each command with its own reply
          const pipeline = waiting === 1 ? undefined : client.pipeline()
          entries.forEach((item, i) => {
            if (item instanceof DeliveryError) return
            const done = (error: Error | null | undefined) => {
              outcomes[i] = error ? toDeliveryError(item.key, error) : undefined
              if (--waiting === 0) resume(Effect.succeed(outcomes as BatchOutcome))
            }
            if (pipeline === undefined) client.xadd(item.key, ...item.args, done)
            else pipeline.xadd(item.key, ...item.args, done)
          })
          // each command's callback carries its outcome; a standalone pipeline's exec never rejects
          if (pipeline !== undefined) pipeline.exec().catch(() => {})
        }).pipe(
          Effect.timeoutOrElse({
            duration: timeout,
            orElse: () =>
              Effect.sync(() =>
                outcomes.map((outcome, i) => outcome === pending ? timedOut((entries[i] as Entry).key) : outcome)
              )
          })
        )
      })

    const deliverBatch = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<BatchOutcome> =>
      events.length === 0 ? Effect.succeed([]) : Effect.flatMap(brokerMessage.buildAll(events, entry), send)

    const deliver = (event: OutboxEvent): Effect.Effect<void, DeliveryError> =>
      Effect.flatMap(
        brokerMessage.buildAll([event], entry).pipe(Effect.flatMap(send)),
        ([outcome]) => outcome === undefined ? Effect.void : Effect.fail(outcome)
      )

    const connection: Effect.Effect<ConnectionStatus> = Effect.sync(() =>
      client.status === "ready" ? { connected: true } : { connected: false, detail: describeConnection() }
    )

    return OutboxSink.of({ name: "redis", deliver, deliverBatch, connection })
  })

/** The first of: the client is ready (`undefined`), an error, the connection closed (`undefined`). */
const firstOutcome = (client: Redis): Effect.Effect<Error | undefined> =>
  Effect.callback<Error | undefined>((resume) => {
    if (client.status === "ready") return resume(Effect.succeed(undefined))
    const done = (outcome: Error | undefined) => {
      client.off("ready", onReady).off("close", onReady).off("error", onError)
      resume(Effect.succeed(outcome))
    }
    const onReady = () => done(undefined)
    const onError = (error: Error) => done(error)
    client.on("ready", onReady).on("close", onReady).on("error", onError)
    return Effect.sync(() => void client.off("ready", onReady).off("close", onReady).off("error", onError))
  })

/** Redis refused the login (a wrong password or user, a password missing). */
const isLoginRefusal = (error: Error): boolean =>
  error.name === "ReplyError" && /^(WRONGPASS|NOAUTH|ERR invalid password)/.test(error.message)

/**
 * Closes the client: `QUIT` when connected (Redis answers what it was sent
 * first), bounded by `timeout`, then a disconnect, which also stops a
 * client that is still reconnecting.
 */
const close = (client: Redis, timeout: Duration.Duration): Effect.Effect<void> =>
  Effect.suspend(() => {
    const disconnect = Effect.sync(() => {
      if (client.status !== "end") client.disconnect()
    })
    if (client.status !== "ready") return disconnect
    return Effect.callback<void>((resume) => {
      client.quit(() => resume(Effect.void))
    }).pipe(
      Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.void }),
      Effect.ensuring(disconnect)
    )
  })

/**
 * The Redis Streams sink as a layer. It fails (`SinkSetupError`) only when
 * `ioredis` is not installed (`MissingClient`), the options are wrong
 * (`InvalidOptions`) or Redis refuses the login (`Connect`), never because
 * Redis is down: the client keeps connecting in the background.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<OutboxSink, SinkSetupError> =>
  Layer.effect(OutboxSink, make(options))
