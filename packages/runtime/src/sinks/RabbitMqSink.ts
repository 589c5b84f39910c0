/**
 * A sink that publishes each event to a RabbitMQ topic exchange, and counts
 * it delivered only once the broker has confirmed it (publisher confirms).
 *
 * **The message**
 *
 * - exchange `outbox` (option `exchange`), a durable topic exchange, declared
 *   when missing (unless `declareExchange: false`, then it must exist);
 * - routing key `<aggregateType>.<eventType>` (dots, wildcards and spaces in
 *   either become `_`), or the option `routingKey(event)`;
 * - `messageId` = the tracking id (the consumer's dedupe key), persistent
 *   (delivery mode 2), `contentType: application/json`, `type` = the event
 *   type, `timestamp` = the event's creation (seconds);
 * - the headers and body every broker sink sends (`outbox-tracking-id`,
 *   `outbox-event-type`, `outbox-aggregate-type`, `outbox-aggregate-id`,
 *   `traceparent` / `tracestate`; the body is the webhook's JSON body).
 *
 * **Outcome**
 *
 * Every message is published `mandatory` on a confirm channel: delivered
 * when the broker acks it; a message no queue takes is returned by the
 * broker (`basic.return`, before the ack), which is a permanent
 * `DeliveryError` (unroutable), never a silent loss. Permanent too: a message
 * over the broker's `max_message_size`, headers that do not fit in a frame, a
 * routing key the broker cannot take, access refused to the exchange (e.g.
 * an internal exchange, or a user without write permission). Retryable: a
 * nack (a queue refused it, e.g. full with `x-overflow: reject-publish`), the
 * connection or channel lost, the broker unreachable or blocking publishers
 * (resource alarm), the exchange missing (`declareExchange: false`), no
 * confirm within `timeout` (default 10 seconds).
 *
 * **Connection**
 *
 * One connection and one confirm channel per sink, reconnecting by itself
 * forever (backoff between `reconnectDelay.min` and `.max`, default 1 and 15
 * seconds). A broker that is down when the layer starts does not fail the
 * layer (nor does one that does not answer within `timeout`): deliveries
 * fail retryably (at once, without waiting for the timeout, while the
 * connection is known to be down) until it is back. A broker that refuses the login or the exchange
 * (declared with another type, or missing with `declareExchange: false`)
 * fails the layer with a `SinkSetupError` (`Connect`). `connection` reports
 * the client's state (for `/healthz`). The layer's scope closes the channel
 * and the connection (forcibly once `timeout` has passed).
 *
 * **Why `rabbitmq-client`** (an optional peer dependency, loaded when the
 * layer starts, not when this module is imported): it reconnects by itself
 * (re-declaring the exchange on the new channel), its publisher has
 * publisher confirms built in (one promise per publish, settled by the
 * broker's ack or nack), and it has no dependencies. amqplib leaves
 * reconnection to the application (or to amqp-connection-manager on top of
 * it) and brings dependencies of its own.
 *
 * **Returned messages**: `rabbitmq-client` does not fail a publish the broker
 * returned. The broker sends `basic.return` and then acks the message, and
 * the client resolves the publish on the ack while it emits the return as an
 * event one macrotask later. The sink matches returns to publishes by message
 * id and settles a publish only after that macrotask, so an unroutable
 * message is reported, never counted delivered.
 *
 * **Example**
 *
 * ```ts
 * const AppLive = OutboxLive.layer().pipe(
 *   Layer.provide(RabbitMqSink.layer({ url: "amqp://app:secret@rabbit:5672/orders" })),
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
import type { Connection, Envelope, Publisher, ReturnedMessage } from "rabbitmq-client"
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
   * `amqp://user:password@host:5672/vhost`, or `amqps://` for TLS (the
   * query parameters `heartbeat`, `connection_timeout` and `channel_max` are
   * honoured). Never logged nor put in an error message.
   */
  readonly url: string
  /** The topic exchange to publish to (default `"outbox"`). */
  readonly exchange?: string | undefined
  /** The routing key of an event (default {@link defaultRoutingKey}: `<aggregateType>.<eventType>`). */
  readonly routingKey?: ((event: OutboxEvent) => string) | undefined
  /**
   * How long to wait for the broker's confirm of a publish (or of a whole
   * batch) before a retryable failure (default 10 seconds). Also bounds the
   * layer's start (the first connection and the exchange check) and its
   * graceful close (then the connection is destroyed).
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * Declare the exchange (durable, topic) when missing (default true). With
   * false it must exist: the layer fails when the broker says it does not.
   * Use false when the exchange is declared elsewhere with other properties
   * or arguments (an alternate exchange...): redeclaring it differently is an
   * error.
   */
  readonly declareExchange?: boolean | undefined
  /** The reconnection backoff: a random delay that doubles from `min` up to `max` (default 1 and 15 seconds). */
  readonly reconnectDelay?: {
    readonly min?: Duration.Input | undefined
    readonly max?: Duration.Input | undefined
  } | undefined
}

/**
 * The default routing key: `<aggregateType>.<eventType>`, each part with
 * dots, wildcards and whitespace replaced by `_` (so that `Order.Placed`
 * binds as `Order.*`, `*.OrderPlaced` or `#`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultRoutingKey = (event: OutboxEvent): string =>
  `${brokerMessage.token(event.aggregateType)}.${brokerMessage.token(event.eventType)}`

/**
 * The AMQP envelope (exchange, routing key, properties) of an event with its
 * headers: what `deliver` publishes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const envelope = (
  event: OutboxEvent,
  exchange: string,
  routingKey: string,
  headers: Record<string, string>
): Envelope => ({
  exchange,
  routingKey,
  mandatory: true,
  messageId: event.trackingId,
  durable: true,
  contentType: "application/json",
  type: event.eventType,
  timestamp: Math.floor(event.createdAt.getTime() / 1000),
  headers
})

const SINK = "rabbitmq"

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : String(error)

const codeOf = (error: unknown): string | undefined => {
  const code = typeof error === "object" && error !== null ? (error as { readonly code?: unknown }).code : undefined
  return typeof code === "string" ? code : undefined
}

/** The broker's `message size N is larger than configured max size M` (channel closed with PRECONDITION_FAILED). */
const maxSizeOf = (error: unknown): number | undefined => {
  const match = /larger than configured max size (\d+)/.exec(messageOf(error))
  return match === null ? undefined : Number(match[1])
}

/**
 * Why the broker just closed the publishing channel, remembered until the
 * next macrotask: the client rejects the first unconfirmed publish with the
 * broker's reason and every other one with a bare `CH_CLOSE`, all in the same
 * tick, so the others learn the reason from here (a batch where one message
 * is too large: the others are retryable; access refused: all are refused).
 *
 * @category models
 * @since 0.1.0
 */
export type ChannelClosed =
  | { readonly _tag: "TooLarge"; readonly max: number }
  | { readonly _tag: "Refused"; readonly error: DeliveryError }
  | { readonly _tag: "Other"; readonly message: string }

/**
 * The failure of one publish, from the client's error (`code`: the AMQP
 * reply code name, or the client's own code) and the size of the message's
 * body. `closed` is why the broker just closed the channel, when it did
 * (see {@link ChannelClosed}).
 *
 * @category error handling
 * @since 0.1.0
 */
export const classify = (
  error: unknown,
  bodySize: number,
  exchange: string,
  closed?: ChannelClosed | undefined
): DeliveryError => {
  const code = codeOf(error)
  const text = messageOf(error)
  const tooLarge = (max: number) =>
    DeliveryError.permanent(
      `message too large for RabbitMQ: ${bodySize} bytes, the broker's max_message_size is ${max}`,
      error
    )
  switch (code) {
    case "PRECONDITION_FAILED": {
      const max = maxSizeOf(error)
      if (max !== undefined) {
        return bodySize > max
          ? tooLarge(max)
          : DeliveryError.transient(`RabbitMQ closed the channel: another message was too large (${text})`, error)
      }
      return DeliveryError.transient(`RabbitMQ closed the channel: ${text}`, error)
    }
    case "ACCESS_REFUSED":
      return DeliveryError.permanent(`RabbitMQ refused to let the sink publish to exchange "${exchange}": ${text}`, error)
    case "CODEC":
      return DeliveryError.permanent(`the message cannot be encoded for RabbitMQ (headers or routing key too long?): ${text}`, error)
    case "NACK":
      return DeliveryError.transient(
        "RabbitMQ rejected the message (nack): a queue refused it (full, with overflow reject-publish) or could not store it",
        error
      )
    case "NOT_FOUND":
      return DeliveryError.transient(`RabbitMQ has no exchange "${exchange}" (deleted, or not declared yet): ${text}`, error)
    case "CH_CLOSE":
      if (closed?._tag === "TooLarge") {
        return bodySize > closed.max
          ? tooLarge(closed.max)
          : DeliveryError.transient("RabbitMQ closed the channel: another message was too large", error)
      }
      if (closed?._tag === "Refused") return closed.error
      return DeliveryError.transient(
        `RabbitMQ channel closed before the confirm${closed?._tag === "Other" ? ` (${closed.message})` : ""}`,
        error
      )
    default:
      return DeliveryError.transient(`RabbitMQ publish failed: ${text}`, error)
  }
}

/** A publish awaiting its confirm: `returned` when the broker returned it; `abandoned` once nobody awaits it (timed out). */
interface Tracked {
  returned: ReturnedMessage | undefined
  abandoned: boolean
}

const PENDING: unique symbol = Symbol("pending")

const duration = (input: Duration.Input | undefined, fallback: Duration.Duration, name: string) =>
  input === undefined
    ? Effect.succeed(fallback)
    : Option.match(Duration.fromInput(input), {
      onNone: () =>
        Effect.fail(new SinkSetupError({ sink: SINK, reason: "InvalidOptions", message: `invalid RabbitMQ sink ${name}: ${String(input)}` })),
      onSome: Effect.succeed
    })

/** A callback in the next macrotask: after every `setImmediate` scheduled before it (how the client emits `basic.return`). */
const afterPendingEvents = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * Builds the sink: its connection and confirm channel are resources of the
 * current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<OutboxSink["Service"], SinkSetupError, Scope.Scope> =>
  Effect.gen(function*() {
    const exchange = options.exchange ?? "outbox"
    const declareExchange = options.declareExchange ?? true
    const routingKeyOf = options.routingKey ?? defaultRoutingKey
    const timeout = yield* duration(options.timeout, Duration.seconds(10), "timeout")
    const retryLow = yield* duration(options.reconnectDelay?.min, Duration.seconds(1), "reconnectDelay.min")
    const retryHigh = yield* duration(options.reconnectDelay?.max, Duration.seconds(15), "reconnectDelay.max")
    const rabbit = yield* brokerMessage.loadClient(SINK, "rabbitmq-client", () => import("rabbitmq-client"))
    const log = Effect.runForkWith(yield* Effect.context<never>())
    const annotate = Effect.annotateLogs({ sink: SINK, exchange })

    const state = {
      /** The last connection error, until the next successful connection. */
      lastError: undefined as unknown,
      /** Why the broker is blocking publishers, while it is. */
      blocked: undefined as string | undefined,
      closed: undefined as ChannelClosed | undefined
    }
    const isConnectionError = (error: unknown) =>
      !(error instanceof rabbit.AMQPChannelError) || error instanceof rabbit.AMQPConnectionError

    const { connection, publisher } = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const connection: Connection = new rabbit.Connection({
            url: options.url,
            retryLow: Math.max(1, Duration.toMillis(retryLow)),
            retryHigh: Math.max(1, Duration.toMillis(retryHigh)),
            // RabbitMQ's own default: headers up to ~128 KiB fit, and big bodies take fewer frames than with 8 KiB
            frameMax: 131_072,
            connectionName: "outbox"
          })
          connection.on("connection", () => {
            const was = state.lastError
            state.lastError = undefined
            state.blocked = undefined
            if (was !== undefined) log(annotate(Effect.logInfo("RabbitMQ reconnected")))
          })
          // Always listened to: an EventEmitter's unheard "error" would crash the process. The client emits the
          // first error after each connection loss (not every failed retry), and channel errors it cannot pin on a call.
          connection.on("error", (error: unknown) => {
            if (isConnectionError(error)) {
              state.lastError = error
              log(annotate(Effect.logWarning(`RabbitMQ connection failed (reconnecting): ${messageOf(error)}`)))
            } else {
              log(annotate(Effect.logWarning(`RabbitMQ channel error: ${messageOf(error)}`)))
            }
          })
          connection.on("connection.blocked", (reason: string) => {
            state.blocked = reason
            log(annotate(Effect.logWarning(`RabbitMQ is blocking publishers: ${reason}`)))
          })
          connection.on("connection.unblocked", () => {
            state.blocked = undefined
            log(annotate(Effect.logInfo("RabbitMQ unblocked publishers")))
          })
          const publisher: Publisher = connection.createPublisher({
            confirm: true,
            maxAttempts: 1,
            ...(declareExchange ? { exchanges: [{ exchange, type: "topic", durable: true }] } : {})
          })
          return { connection, publisher }
        },
        catch: (cause) =>
          new SinkSetupError({
            sink: SINK,
            reason: "InvalidOptions",
            // neither the URL nor the error as cause (Node's "Invalid URL" error holds the input): it has the password
            message: `invalid RabbitMQ sink options (url must be amqp:// or amqps://): ${messageOf(cause)}`
          })
      }),
      ({ connection, publisher }) =>
        Effect.promise((): Promise<unknown> =>
          connection.ready
            // the channel first: a connection closing while a channel still closes waits for ever if the socket
            // drops meanwhile (the client checks for "no channels left" only while in its closing state)
            ? publisher.close().then(() => connection.close(), () => connection.close()).catch(() => undefined)
            // (re)connecting: closing the connection stops the retries and fails the channel's pending set-up
            : Promise.allSettled([connection.close(), publisher.close()])
        ).pipe(
          // a broker that stopped answering would keep the graceful close waiting for ever
          Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.sync(() => connection.unsafeDestroy()) })
        )
    )

    // The first connection attempt: a refused login or exchange fails the layer; a broker that is down or slow does not.
    const first = yield* Effect.callback<{ readonly connected: true } | { readonly connected: false; readonly error: unknown }>(
      (resume) => {
        if (connection.ready) return resume(Effect.succeed({ connected: true }))
        if (state.lastError !== undefined) return resume(Effect.succeed({ connected: false, error: state.lastError }))
        const onConnection = () => {
          off()
          resume(Effect.succeed({ connected: true }))
        }
        const onError = (error: unknown) => {
          if (!isConnectionError(error)) return
          off()
          resume(Effect.succeed({ connected: false, error }))
        }
        const off = () => {
          connection.off("connection", onConnection)
          connection.off("error", onError)
        }
        connection.on("connection", onConnection)
        connection.on("error", onError)
        return Effect.sync(off)
      }
    ).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.succeed(undefined) }))

    if (first !== undefined && !first.connected) {
      const code = codeOf(first.error)
      if (code === "ACCESS_REFUSED" || code === "NOT_ALLOWED") {
        return yield* new SinkSetupError({
          sink: SINK,
          reason: "Connect",
          message: `RabbitMQ refused the connection: ${messageOf(first.error)}`,
          cause: first.error
        })
      }
    }
    if (first?.connected === true) {
      // Check the exchange now, on a channel of its own, so that a wrong one fails the layer rather than every delivery.
      const checked = yield* Effect.tryPromise({
        try: () =>
          connection.acquire().then((channel) =>
            channel.exchangeDeclare(
              declareExchange ? { exchange, type: "topic", durable: true } : { exchange, passive: true }
            ).finally(() => channel.close())
          ),
        catch: (cause) => cause
      }).pipe(
        Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.void }),
        Effect.result
      )
      if (checked._tag === "Failure" && !isConnectionError(checked.failure)) {
        return yield* new SinkSetupError({
          sink: SINK,
          reason: "Connect",
          message: declareExchange
            ? `RabbitMQ refused to declare the topic exchange "${exchange}": ${messageOf(checked.failure)}`
            : `RabbitMQ has no exchange "${exchange}" (declareExchange is false): ${messageOf(checked.failure)}`,
          cause: checked.failure
        })
      }
    }

    // Returned messages, by message id (the tracking id), while their publish awaits its confirm. The same id
    // twice (an event published again after a timeout while its first publish still awaits a confirm): a return
    // goes to the publish someone still awaits, so that an unroutable retry is never counted delivered.
    const awaitingConfirm = new Map<string, Array<Tracked>>()
    publisher.on("basic.return", (message) => {
      const waiting = message.messageId === undefined ? undefined : awaitingConfirm.get(message.messageId)
      const tracked = waiting?.find((t) => t.returned === undefined && !t.abandoned) ??
        waiting?.find((t) => t.returned === undefined)
      if (tracked !== undefined) tracked.returned = message
    })
    const untrack = (id: string, tracked: Tracked) => {
      const waiting = awaitingConfirm.get(id)
      if (waiting === undefined) return
      const rest = waiting.filter((t) => t !== tracked)
      if (rest.length === 0) awaitingConfirm.delete(id)
      else awaitingConfirm.set(id, rest)
    }
    const noteClosed = (closed: ChannelClosed) => {
      if (state.closed === undefined) setImmediate(() => void (state.closed = undefined))
      state.closed = closed
    }

    const failure = (error: unknown, bodySize: number): DeliveryError => {
      const outcome = classify(error, bodySize, exchange, state.closed)
      switch (codeOf(error)) {
        case "PRECONDITION_FAILED": {
          const max = maxSizeOf(error)
          noteClosed(max === undefined ? { _tag: "Other", message: messageOf(error) } : { _tag: "TooLarge", max })
          break
        }
        case "ACCESS_REFUSED":
          noteClosed({ _tag: "Refused", error: outcome })
          break
        case "NOT_FOUND":
          noteClosed({ _tag: "Other", message: messageOf(error) })
          break
      }
      return outcome
    }

    /** Publishes one message; resolves (never rejects) with its outcome once confirmed, returned or failed. */
    const publishOne = (event: OutboxEvent, routingKey: string, headers: Record<string, string>, tracked: Tracked) => {
      const body = Buffer.from(brokerMessage.body(event), "utf8")
      const id = event.trackingId
      const waiting = awaitingConfirm.get(id)
      if (waiting === undefined) awaitingConfirm.set(id, [tracked])
      else waiting.push(tracked)
      return publisher.send(envelope(event, exchange, routingKey, headers), body).then(
        // The broker sends basic.return before the ack, but the client emits the return in a `setImmediate`
        // and resolves the publish at once: the return is known only one macrotask after the ack.
        () =>
          afterPendingEvents().then(() =>
            tracked.returned === undefined ? undefined : DeliveryError.permanent(
              `RabbitMQ returned the message as unroutable (${tracked.returned.replyCode} ${tracked.returned.replyText}): ` +
                `no queue is bound to exchange "${tracked.returned.exchange}" for routing key "${tracked.returned.routingKey}"`
            )
          ),
        (error: unknown) => failure(error, body.length)
      ).finally(() => untrack(id, tracked))
    }

    /** Why nothing can be published now (broker known down, or blocking publishers), without waiting for the timeout. */
    const unavailable = (): DeliveryError | undefined =>
      state.blocked !== undefined
        ? DeliveryError.transient(`RabbitMQ is blocking publishers (${state.blocked})`)
        : state.lastError !== undefined && !connection.ready
        ? DeliveryError.transient(`RabbitMQ is unreachable (reconnecting): ${messageOf(state.lastError)}`, state.lastError)
        : undefined

    const timedOut = DeliveryError.transient(`RabbitMQ did not confirm the message within ${Duration.format(timeout)}`)

    /** The event's routing key and headers; a throwing `routingKey` option is a permanent failure of that event. */
    const prepare = (
      event: OutboxEvent,
      headers: Record<string, string>
    ): readonly [key: string | DeliveryError, headers: Record<string, string>] =>
      [
        brokerMessage.attempt(
          () => routingKeyOf(event),
          (message) => `the routingKey option failed for this event: ${message}`
        ),
        headers
      ] as const

    const publishAll = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<BatchOutcome> =>
      events.length === 0 ? Effect.succeed([]) : Effect.flatMap(
        brokerMessage.buildAll(events, prepare),
        (prepared) =>
          Effect.suspend(() => {
            const down = unavailable()
            if (down !== undefined) return Effect.succeed(events.map(() => down))
            const outcomes: Array<DeliveryError | undefined | typeof PENDING> = events.map(() => PENDING)
            let left = events.length
            let wake: (() => void) | undefined
            const tracked = events.map((): Tracked => ({ returned: undefined, abandoned: false }))
            // all published now, in order, on the one channel; their confirms are awaited together
            events.forEach((event, i) => {
              const [key, headers] = prepared[i]!
              const settled = typeof key === "string" ? publishOne(event, key, headers, tracked[i]!) : Promise.resolve(key)
              void settled.then((outcome) => {
                outcomes[i] = outcome
                if (--left === 0) wake?.()
              })
            })
            return Effect.callback<void>((resume) => {
              if (left === 0) return resume(Effect.void)
              wake = () => resume(Effect.void)
              // timed out or interrupted
              return Effect.sync(() => {
                wake = undefined
                for (const t of tracked) t.abandoned = true
              })
            }).pipe(
              Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.void }),
              Effect.map(() => outcomes.map((outcome) => outcome === PENDING ? timedOut : outcome))
            )
          })
      )

    const connectionStatus: Effect.Effect<ConnectionStatus> = Effect.sync(() =>
      connection.ready
        ? { connected: true }
        : {
          connected: false,
          detail: state.blocked !== undefined
            ? `blocked by the broker: ${state.blocked}`
            : state.lastError !== undefined
            ? `reconnecting: ${messageOf(state.lastError)}`
            : "connecting"
        }
    )

    return OutboxSink.of({
      name: SINK,
      deliver: (event) =>
        Effect.flatMap(publishAll([event]), ([outcome]) => outcome === undefined ? Effect.void : Effect.fail(outcome)),
      deliverBatch: publishAll,
      connection: connectionStatus
    })
  })

/**
 * The RabbitMQ sink as a layer: its connection lives as long as the layer.
 * Fails with a `SinkSetupError` when `rabbitmq-client` is not installed
 * (`MissingClient`), the options are invalid (`InvalidOptions`), or the
 * broker refuses the login or the exchange (`Connect`); not when the broker
 * is merely down.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<OutboxSink, SinkSetupError> => Layer.effect(OutboxSink, make(options))
