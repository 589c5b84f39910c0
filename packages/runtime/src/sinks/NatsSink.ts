/**
 * A sink that publishes each event to NATS JetStream and counts it delivered
 * only once JetStream has acknowledged it (the `PubAck`: the message is
 * stored in a stream).
 *
 * - Subject: `outbox.<aggregateType>.<eventType>` (`subjectPrefix`, default
 *   `outbox`; each part made subject-safe), or the `subject` option's.
 * - Stream: `OUTBOX` (`stream`), created with the subjects `outbox.>`
 *   (`subjects`) when it does not exist; an existing stream is left as it is
 *   (`createStream: false` skips the check, for streams that operations
 *   manage).
 * - Message: the shared broker body and headers (tracking id, event type,
 *   aggregate type and id, `traceparent` / `tracestate`), plus `Nats-Msg-Id`
 *   = tracking id, so that JetStream drops a redelivered event inside the
 *   stream's duplicate window (its ack says `duplicate`: delivered).
 * - Batches: `deliverBatch` publishes the whole batch at once (the client
 *   pipelines the requests), then awaits the acks together.
 *
 * Outcome: acked (duplicate or not) is delivered. Retryable: not connected,
 * connection lost before the ack, no ack within `timeout` (default 10
 * seconds), JetStream unavailable or out of resources (status 5xx, e.g. a
 * full stream with `discard: new`), and no answer on a subject that the
 * sink's own stream should capture (the stream was deleted: it is created
 * again before the next publish). Permanent (dead-lettered at once): a
 * subject that no stream captures (unroutable), a message larger than the
 * server's `max_payload` or the stream's `max_msg_size`, an invalid subject
 * or headers, a publish permission violation, any other JetStream 4xx.
 *
 * Connection: the client reconnects by itself, forever. A server that is
 * down when the layer starts does not fail the layer: the sink keeps
 * connecting in the background, and a delivery waits for the connection
 * (at most its timeout). A bad login or a stream that cannot be set up while
 * the server answers fails the layer (`SinkSetupError`). The connection is
 * closed with the layer's scope.
 *
 * **Example**
 *
 * ```ts
 * const AppLive = OutboxLive.layer().pipe(
 *   Layer.provide(NatsSink.layer({ url: "nats://nats-1:4222,nats://nats-2:4222" })),
 *   Layer.provideMerge(OutboxLive.layerPg)
 * )
 * ```
 *
 * @since 0.1.0
 */
import type * as JetStream from "@nats-io/jetstream"
import type * as Nats from "@nats-io/transport-node"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { type BatchOutcome, type ConnectionStatus, OutboxSink } from "@outbox/core/OutboxSink"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
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
   * The server(s): `nats://host:4222`, or a comma-separated list
   * (`nats://a:4222,nats://b:4222`). Credentials may be given in the
   * userinfo: `nats://user:pass@host:4222`, or `nats://token@host:4222`.
   */
  readonly url: string
  /** The JetStream stream (default `"OUTBOX"`). */
  readonly stream?: string | undefined
  /** The first token(s) of the default subject (default `"outbox"`). */
  readonly subjectPrefix?: string | undefined
  /** The subjects of the stream when the sink creates it (default `["<subjectPrefix>.>"]`). */
  readonly subjects?: ReadonlyArray<string> | undefined
  /** The subject of an event (default `defaultSubject(event, subjectPrefix)`). */
  readonly subject?: ((event: OutboxEvent) => string) | undefined
  /**
   * Create the stream when it does not exist (default true). False: the
   * stream is managed elsewhere, the sink only publishes.
   */
  readonly createStream?: boolean | undefined
  /** How long a delivery may wait for the connection and its ack (default 10 seconds). */
  readonly timeout?: Duration.Input | undefined
  /** User name (overrides the URL's). */
  readonly user?: string | undefined
  /** Password (overrides the URL's). */
  readonly pass?: string | undefined
  /** Authentication token (overrides the URL's). */
  readonly token?: string | undefined
  /** The connection's name, shown in the server's monitoring (default `"outbox-relay"`). */
  readonly name?: string | undefined
}

/**
 * The default subject of an event: `<prefix>.<aggregateType>.<eventType>`,
 * each part with the characters that would change a subject's meaning
 * (dots, wildcards, whitespace) replaced by `_`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultSubject = (event: OutboxEvent, prefix = "outbox"): string =>
  `${prefix}.${brokerMessage.token(event.aggregateType)}.${brokerMessage.token(event.eventType)}`

/**
 * Whether `subject` is one of the subjects `pattern` (a stream subject, with
 * `*` for one token and a final `>` for one or more) stands for.
 *
 * @category guards
 * @since 0.1.0
 */
export const subjectMatches = (pattern: string, subject: string): boolean => {
  const wanted = pattern.split(".")
  const tokens = subject.split(".")
  for (let i = 0; i < wanted.length; i++) {
    if (wanted[i] === ">") return tokens.length > i
    if (i >= tokens.length) return false
    if (wanted[i] !== "*" && wanted[i] !== tokens[i]) return false
  }
  return wanted.length === tokens.length
}

/** The servers and credentials of a NATS URL. */
interface Endpoint {
  readonly servers: ReadonlyArray<string>
  readonly user?: string | undefined
  readonly pass?: string | undefined
  readonly token?: string | undefined
}

const invalidOptions = (message: string, cause?: unknown) =>
  new SinkSetupError({ sink: "nats", reason: "InvalidOptions", message, cause })

const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : String(error)

/** Parses `nats://[user[:pass]@]host[:port][,...]`; the servers without their credentials. */
const parseUrl = (url: string): Effect.Effect<Endpoint, SinkSetupError> =>
  Effect.gen(function*() {
    const parts = url.split(",").map((part) => part.trim()).filter((part) => part.length > 0)
    if (parts.length === 0) return yield* invalidOptions(`the NATS URL names no server: "${url}"`)
    const servers: Array<string> = []
    let credentials: Omit<Endpoint, "servers"> = {}
    for (const part of parts) {
      const parsed = yield* Effect.try({
        try: () => new URL(part.includes("://") ? part : `nats://${part}`),
        catch: (cause) => invalidOptions(`invalid NATS URL "${part}"`, cause)
      })
      if (parsed.protocol !== "nats:" && parsed.protocol !== "tls:") {
        return yield* invalidOptions(`unsupported NATS URL scheme "${parsed.protocol}" (nats: or tls:)`)
      }
      if (parsed.hostname === "") return yield* invalidOptions(`the NATS URL "${part}" has no host`)
      if (parsed.username !== "") {
        const user = decodeURIComponent(parsed.username)
        credentials = parsed.password === ""
          ? { token: user }
          : { user, pass: decodeURIComponent(parsed.password) }
      }
      servers.push(`${parsed.protocol}//${parsed.host}`)
    }
    return { servers, ...credentials }
  })

/** One connected period of a connection: its client, and the callbacks to run when it drops. */
interface Session {
  readonly nc: Nats.NatsConnection
  readonly js: JetStream.JetStreamClient
  lost: boolean
  readonly onLost: Set<() => void>
}

/** A message ready to publish, or why the event cannot become one. */
interface Prepared {
  readonly subject: string
  readonly body: string
  readonly headers: Nats.MsgHdrs
  readonly msgID: string
}

/** JetStream `err_code`s of errors that go away by themselves (quotas freed by consumers or retention). */
const retryableApiCodes: ReadonlySet<number> = new Set([
  10002, // resource limits exceeded for account
  10023, // insufficient resources
  10028, // insufficient memory resources available
  10047 // insufficient storage resources available
])

/** `err_code` of "message size exceeds maximum allowed" (the stream's `max_msg_size`). */
const messageTooLargeCode = 10054
/** `err_code` of "stream name already in use" (created concurrently by another relay). */
const streamNameInUseCode = 10058

/**
 * Builds the sink: connects (in the background when the server does not
 * answer yet), makes sure the stream exists, and closes the connection
 * with the scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<OutboxSink["Service"], SinkSetupError, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = yield* parseUrl(options.url)
    const timeout = yield* Effect.try({
      try: () => Duration.fromInputUnsafe(options.timeout ?? Duration.seconds(10)),
      catch: (cause) => invalidOptions(`invalid NATS sink timeout: ${String(options.timeout)}`, cause)
    })
    const timeoutMs = Math.max(1, Math.ceil(Duration.toMillis(timeout)))
    const [nats, jetstream] = yield* Effect.all([
      brokerMessage.loadClient("nats", "@nats-io/transport-node", () => import("@nats-io/transport-node")),
      brokerMessage.loadClient("nats", "@nats-io/jetstream", () => import("@nats-io/jetstream"))
    ])

    const stream = options.stream ?? "OUTBOX"
    const subjectPrefix = options.subjectPrefix ?? "outbox"
    const streamSubjects = options.subjects ?? [`${subjectPrefix}.>`]
    const subjectOf = options.subject ?? ((event: OutboxEvent) => defaultSubject(event, subjectPrefix))
    const createStream = options.createStream ?? true
    const where = endpoint.servers.join(",")
    const user = options.user ?? endpoint.user
    const pass = options.pass ?? endpoint.pass
    const token = options.token ?? endpoint.token
    const connectOptions: Nats.NodeConnectionOptions = {
      servers: [...endpoint.servers],
      name: options.name ?? "outbox-relay",
      reconnect: true,
      maxReconnectAttempts: -1,
      // the handshake of one attempt: a server that accepts but never answers is given up on
      timeout: timeoutMs,
      // the client would capture an `Error` (a stack) per request to enrich a later error's trace:
      // without it a publish is cheaper, and the sink's own messages say what failed
      noAsyncTraces: true,
      ...(user !== undefined ? { user } : {}),
      ...(pass !== undefined ? { pass } : {}),
      ...(token !== undefined ? { token } : {})
    }

    const state = {
      /** Done (with the session) while connected; pending while connecting or reconnecting. */
      ready: Deferred.makeUnsafe<Session>(),
      session: undefined as Session | undefined,
      /** The connection the sink uses now (closed with the scope). */
      current: undefined as Nats.NatsConnection | undefined,
      /** Why not connected, for `connection` and timeouts. */
      detail: `connecting to ${where}`,
      /** The last error the server reported while not connected. */
      lastError: undefined as string | undefined,
      /** Whether the stream is known to exist (checked again after a subject it should capture gets no answer). */
      streamReady: !createStream,
      /** The subjects of the stream, once known: a subject among them that gets no answer is not unroutable. */
      capturing: undefined as ReadonlyArray<string> | undefined
    }

    const notConnected = () => state.lastError === undefined ? state.detail : `${state.detail} (${state.lastError})`
    const up = (nc: Nats.NatsConnection) => {
      const session: Session = { nc, js: jetstream.jetstream(nc), lost: false, onLost: new Set() }
      state.session = session
      state.lastError = undefined
      if (Deferred.isDoneUnsafe(state.ready)) state.ready = Deferred.makeUnsafe<Session>()
      Deferred.doneUnsafe(state.ready, Exit.succeed(session))
    }
    const down = (detail: string) => {
      state.detail = detail
      const session = state.session
      state.session = undefined
      if (Deferred.isDoneUnsafe(state.ready)) state.ready = Deferred.makeUnsafe<Session>()
      if (session !== undefined && !session.lost) {
        session.lost = true
        for (const lost of session.onLost) lost()
        session.onLost.clear()
      }
    }

    // ---- error classification -------------------------------------------------------------------
    const causes = (error: unknown): Array<unknown> => {
      const chain: Array<unknown> = []
      for (let e: unknown = error; e !== undefined && chain.length < 4; e = e instanceof Error ? e.cause : undefined) {
        chain.push(e)
      }
      return chain
    }
    const isNoResponders = (error: unknown) =>
      causes(error).some((e) =>
        e instanceof nats.errors.NoRespondersError || (e instanceof nats.errors.RequestError && e.isNoResponders())
      )
    const apiError = (error: unknown): JetStream.JetStreamApiError | undefined =>
      causes(error).find((e): e is JetStream.JetStreamApiError => e instanceof jetstream.JetStreamApiError)
    const classify = (error: unknown, subject: string): DeliveryError => {
      if (isNoResponders(error)) {
        if (state.capturing !== undefined && state.capturing.some((pattern) => subjectMatches(pattern, subject))) {
          // our own stream should have answered: it was deleted (or JetStream is unavailable); check it again
          state.streamReady = !createStream
          return DeliveryError.transient(
            `no JetStream stream answered on "${subject}", which stream "${stream}" captures (deleted? JetStream unavailable?)`,
            error
          )
        }
        return DeliveryError.permanent(
          `no JetStream stream captures the subject "${subject}" (unroutable: add a stream for it, or change the sink's subject)`,
          error
        )
      }
      const api = apiError(error)
      if (api !== undefined) {
        const what = `${api.message} (status ${api.status}, err_code ${api.code})`
        if (api.code === messageTooLargeCode) {
          return DeliveryError.permanent(`message too large for the JetStream stream on "${subject}": ${what}`, error)
        }
        return api.status >= 500 || retryableApiCodes.has(api.code)
          ? DeliveryError.transient(`JetStream could not store the message on "${subject}": ${what}`, error)
          : DeliveryError.permanent(`JetStream rejected the message on "${subject}": ${what}`, error)
      }
      if (error instanceof nats.errors.TimeoutError) {
        return DeliveryError.transient(`no JetStream ack on "${subject}" in time`, error)
      }
      if (error instanceof nats.errors.InvalidArgumentError) {
        // e.g. "max_payload size exceeded": the client refuses a message larger than the server accepts
        return DeliveryError.permanent(`the NATS client refused the message on "${subject}": ${error.message}`, error)
      }
      if (error instanceof nats.errors.InvalidSubjectError) {
        return DeliveryError.permanent(`invalid NATS subject "${subject}"`, error)
      }
      if (error instanceof nats.errors.PermissionViolationError) {
        return DeliveryError.permanent(`not permitted to publish on "${subject}": ${error.message}`, error)
      }
      // closed or draining connection, disconnection, protocol errors: worth another try
      return DeliveryError.transient(`NATS publish on "${subject}" failed: ${errorMessage(error)}`, error)
    }

    // ---- the stream ------------------------------------------------------------------------------
    const isApiCode = (code: number) => (error: unknown) => apiError(error)?.code === code
    const setUpStream = (nc: Nats.NatsConnection): Effect.Effect<ReadonlyArray<string>, unknown> =>
      Effect.gen(function*() {
        const jsm = yield* Effect.tryPromise({ try: () => jetstream.jetstreamManager(nc), catch: (e) => e })
        const info = () => Effect.tryPromise({ try: () => jsm.streams.info(stream), catch: (e) => e })
        const add = Effect.tryPromise({
          try: () => jsm.streams.add({ name: stream, subjects: [...streamSubjects] }),
          catch: (e) => e
        })
        const existing = yield* info().pipe(
          Effect.catchIf(isApiCode(jetstream.JetStreamApiCodes.StreamNotFound), () =>
            // created by another relay in between: use theirs
            Effect.catchIf(add, isApiCode(streamNameInUseCode), info))
        )
        return existing.config.subjects ?? []
      })
    const streamLock = yield* Semaphore.make(1)
    const ensureStream = (session: Session): Effect.Effect<void, DeliveryError> =>
      state.streamReady ? Effect.void : streamLock.withPermit(Effect.suspend(() =>
        state.streamReady ? Effect.void : setUpStream(session.nc).pipe(
          Effect.tap((subjects) =>
            Effect.sync(() => {
              state.capturing = subjects
              state.streamReady = true
            })
          ),
          Effect.asVoid,
          Effect.mapError((error) =>
            DeliveryError.transient(`cannot set up the JetStream stream "${stream}": ${errorMessage(error)}`, error)
          )
        )
      ))

    // ---- the connection --------------------------------------------------------------------------
    /**
     * `connect`, interruptible: a connection that arrives after the interruption is closed at once,
     * and `onAbandon` runs (to stop the client's retry loop).
     */
    const connect = (connectionOptions: Nats.NodeConnectionOptions, onAbandon?: () => void) =>
      Effect.callback<Nats.NatsConnection, unknown>((resume) => {
        let abandoned = false
        nats.connect(connectionOptions).then(
          (nc) => abandoned ? void nc.close().catch(() => undefined) : resume(Effect.succeed(nc)),
          (error) => abandoned ? undefined : resume(Effect.fail(error))
        )
        return Effect.sync(() => {
          abandoned = true
          onAbandon?.()
        })
      })

    /**
     * Connects with the client's own retry loop (every 2 seconds, forever). The loop cannot be
     * cancelled from outside: once abandoned, its next attempt asks `reconnectToServer`, which
     * throws, and that ends it.
     */
    const connectInBackground = Effect.suspend(() => {
      let cancelled = false
      return connect({
        ...connectOptions,
        waitOnFirstConnect: true,
        reconnectToServer: () => {
          if (cancelled) throw new Error("the NATS sink was closed")
          return null
        }
      }, () => void (cancelled = true))
    })

    const onStatus = (nc: Nats.NatsConnection) => (status: Nats.Status): Effect.Effect<void> => {
      if (state.current !== nc) return Effect.void
      switch (status.type) {
        case "disconnect":
          return Effect.andThen(
            Effect.sync(() => down(`disconnected from ${status.server}; reconnecting`)),
            Effect.logWarning(`NATS connection to ${status.server} lost; reconnecting`)
          )
        case "reconnect":
          return Effect.andThen(Effect.sync(() => up(nc)), Effect.logInfo(`NATS reconnected to ${status.server}`))
        case "error":
          return Effect.andThen(
            Effect.sync(() => void (state.lastError = status.error.message)),
            Effect.logWarning(`NATS error: ${status.error.message}`)
          )
        case "ldm":
          return Effect.logInfo(`NATS server ${status.server} is entering lame duck mode`)
        default:
          return Effect.void
      }
    }

    /** Uses `nc` until it closes (the client gave up, e.g. after repeated authentication errors). */
    const use = (nc: Nats.NatsConnection) =>
      Stream.fromAsyncIterable(nc.status(), (error) => error).pipe(
        Stream.runForEach(onStatus(nc)),
        Effect.ignore,
        Effect.andThen(Effect.promise(() => nc.closed())),
        Effect.flatMap((why) =>
          Effect.andThen(
            Effect.sync(() => down(`connection closed${why instanceof Error ? `: ${why.message}` : ""}; connecting again`)),
            Effect.logWarning(`NATS connection closed${why instanceof Error ? `: ${why.message}` : ""}; connecting again`)
          )
        )
      )
    const adopt = (nc: Nats.NatsConnection) =>
      Effect.sync(() => {
        state.current = nc
        up(nc)
      })

    const reconnectForever: Effect.Effect<never> = connectInBackground.pipe(
      Effect.matchEffect({
        // not expected (the client's loop retries by itself), but never give up
        onFailure: (error) =>
          Effect.andThen(
            Effect.sync(() => void (state.detail = `cannot connect to ${where}: ${errorMessage(error)}`)),
            Effect.sleep("2 seconds")
          ),
        onSuccess: (nc) => Effect.andThen(adopt(nc), use(nc))
      }),
      Effect.forever
    )

    let supervisor: Fiber.Fiber<unknown> | undefined
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (supervisor !== undefined) yield* Fiber.interrupt(supervisor)
        const nc = state.current
        state.current = undefined
        down("the NATS sink is closed")
        // `close`, not `drain`: every publish that counts is awaited by its delivery, and draining a
        // connection to a server that does not answer would never end
        if (nc !== undefined && !nc.isClosed()) yield* Effect.promise(() => nc.close().catch(() => undefined))
      })
    )

    const first = yield* Effect.exit(connect({ ...connectOptions, waitOnFirstConnect: false }))
    if (Exit.isSuccess(first)) {
      const nc = first.value
      if (createStream) {
        const subjects = yield* setUpStream(nc).pipe(
          Effect.mapError((cause) =>
            new SinkSetupError({
              sink: "nats",
              reason: "Connect",
              message: `cannot set up the JetStream stream "${stream}" (subjects ${streamSubjects.join(", ")}): ${errorMessage(cause)}`,
              cause
            })
          ),
          Effect.tapError(() => Effect.promise(() => nc.close().catch(() => undefined)))
        )
        state.capturing = subjects
        state.streamReady = true
      }
      yield* adopt(nc)
      supervisor = yield* Effect.forkDetach(Effect.andThen(use(nc), reconnectForever))
    } else {
      if (Cause.hasInterruptsOnly(first.cause)) return yield* Effect.failCause(first.cause as Cause.Cause<never>)
      const error = Cause.squash(first.cause)
      if (error instanceof nats.errors.AuthorizationError || error instanceof nats.errors.UserAuthenticationExpiredError) {
        return yield* new SinkSetupError({
          sink: "nats",
          reason: "Connect",
          message: `NATS refused the login at ${where}: ${error.message}`,
          cause: error
        })
      }
      state.detail = `cannot connect to ${where}: ${errorMessage(error)}; retrying`
      yield* Effect.logWarning(`NATS is not reachable at ${where} (${errorMessage(error)}); connecting in the background`)
      supervisor = yield* Effect.forkDetach(reconnectForever)
    }

    // ---- delivery --------------------------------------------------------------------------------
    const prepare = (event: OutboxEvent, fields: Record<string, string>): Prepared | DeliveryError =>
      brokerMessage.attempt((): Prepared => {
        const headers = nats.headers()
        for (const key in fields) headers.set(key, fields[key]!)
        return { subject: subjectOf(event), body: brokerMessage.body(event), headers, msgID: event.trackingId }
      }, (message) => `cannot build the NATS message: ${message}`)

    const clientTimeout = timeoutMs + 1_000 // the client's own timer only cleans up: ours fires first
    const publishAll = (events: ReadonlyArray<OutboxEvent>): Effect.Effect<BatchOutcome> =>
      Effect.suspend(() => {
        const outcome: Array<DeliveryError | undefined> = events.map(() => undefined)
        const settled: Array<boolean> = events.map(() => false)
        let sealed = false
        let phase: "connect" | "stream" | "ack" = "connect"
        const settle = (i: number, result: DeliveryError | undefined) => {
          if (sealed || settled[i]) return
          outcome[i] = result
          settled[i] = true
        }
        const settleRest = (error: DeliveryError) => {
          for (let i = 0; i < events.length; i++) settle(i, error)
          sealed = true
        }
        const acks = (session: Session, prepared: ReadonlyArray<Prepared | DeliveryError>) =>
          Effect.callback<void>((resume) => {
            let pending = 0
            let abandoned = false
            const lost = () => {
              settleRest(DeliveryError.transient("the NATS connection was lost before the JetStream ack"))
              resume(Effect.void)
            }
            const done = () => {
              if (--pending === 0 && !abandoned) {
                session.onLost.delete(lost)
                resume(Effect.void)
              }
            }
            if (session.lost) return lost()
            prepared.forEach((message, i) => {
              if (message instanceof DeliveryError) return settle(i, message)
              pending++
              session.js.publish(message.subject, message.body, {
                msgID: message.msgID,
                headers: message.headers,
                timeout: clientTimeout
              }).then(
                // a duplicate (`ack.duplicate`) was stored before: delivered all the same
                () => {
                  settle(i, undefined)
                  done()
                },
                (error) => {
                  if (!sealed && !abandoned) settle(i, classify(error, message.subject))
                  done()
                }
              )
            })
            if (pending === 0) return resume(Effect.void)
            session.onLost.add(lost)
            return Effect.sync(() => {
              abandoned = true
              session.onLost.delete(lost)
            })
          })
        const attempt = Effect.gen(function*() {
          const session = yield* Effect.suspend(() => Deferred.await(state.ready))
          phase = "stream"
          yield* ensureStream(session)
          phase = "ack"
          const prepared = yield* brokerMessage.buildAll(events, prepare)
          yield* acks(session, prepared)
        })
        const timedOut = () =>
          DeliveryError.transient(
            phase === "connect"
              ? `NATS not connected within ${Duration.format(timeout)}: ${notConnected()}`
              : phase === "stream"
              ? `the JetStream stream "${stream}" could not be checked within ${Duration.format(timeout)}`
              : `no JetStream ack within ${Duration.format(timeout)}`
          )
        return attempt.pipe(
          Effect.catch((error) => Effect.sync(() => settleRest(error))),
          Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.sync(() => settleRest(timedOut())) }),
          Effect.map(() => {
            sealed = true
            return outcome
          })
        )
      })

    const deliver = (event: OutboxEvent): Effect.Effect<void, DeliveryError> =>
      Effect.flatMap(publishAll([event]), ([error]) => error === undefined ? Effect.void : Effect.fail(error))

    const connection: Effect.Effect<ConnectionStatus> = Effect.sync(() =>
      Deferred.isDoneUnsafe(state.ready) && state.current?.isClosed() === false
        ? { connected: true }
        : { connected: false, detail: notConnected() }
    )

    return OutboxSink.of({ name: "nats", deliver, deliverBatch: publishAll, connection })
  })

/**
 * The NATS JetStream sink as a layer: its connection lives as long as the
 * layer. Fails with `SinkSetupError` when the client is not installed
 * (`MissingClient`), the URL or timeout is malformed (`InvalidOptions`), or
 * the server answers but refuses the login or the stream (`Connect`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<OutboxSink, SinkSetupError> => Layer.effect(OutboxSink, make(options))
