/**
 * One variable picks the sink: `OUTBOX_SINK_URL`'s scheme says where the
 * relay delivers, so the orders example, the CLI's relay and any app relay
 * to a webhook or a broker without code.
 *
 * | scheme | sink | destination | query options |
 * | --- | --- | --- | --- |
 * | `http://`, `https://` | `WebhookSink` | POST to the URL as given (its query included) | — |
 * | `nats://host:port[,host:port]` | `NatsSink` | stream `OUTBOX`, subject `outbox.<aggregateType>.<eventType>` | `stream`, `subjectPrefix` |
 * | `amqp://`, `amqps://user:pass@host:port[/vhost]` | `RabbitMqSink` | topic exchange `outbox`, routing key `<aggregateType>.<eventType>` | `exchange` |
 * | `redis://`, `rediss://[user:pass@]host:port[/db]` | `RedisStreamSink` | stream `outbox:<aggregateType>` | `maxLen` |
 * | `kafka://host:port[,host:port]` | `KafkaSink` | topic `outbox.<aggregateType>`, key = aggregate id | `clientId` |
 *
 * `OUTBOX_SINK_TIMEOUT` (default 10 seconds) bounds each delivery (a
 * webhook request, a broker's ack). Credentials go in the URL's userinfo;
 * they never appear in logs (`redact`).
 *
 * @since 0.1.0
 */
import type { OutboxSink } from "@outbox/core/OutboxSink"
import type * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as OutboxEnv from "../OutboxEnv.ts"
import * as KafkaSink from "./KafkaSink.ts"
import * as NatsSink from "./NatsSink.ts"
import * as RabbitMqSink from "./RabbitMqSink.ts"
import * as RedisStreamSink from "./RedisStreamSink.ts"
import { SinkSetupError } from "./SinkSetupError.ts"
import * as WebhookSink from "./WebhookSink.ts"

/**
 * The sink kinds, by scheme.
 *
 * @category models
 * @since 0.1.0
 */
export type Kind = "webhook" | "nats" | "rabbitmq" | "redis" | "kafka"

/**
 * A parsed sink URL: its kind, the URL (as given), its hosts (`host:port`,
 * several for NATS and Kafka), its userinfo, path and query options.
 *
 * @category models
 * @since 0.1.0
 */
export interface Target {
  readonly kind: Kind
  readonly url: string
  readonly scheme: string
  readonly hosts: ReadonlyArray<string>
  readonly username: string | undefined
  readonly password: string | undefined
  /** The path without its leading `/` (a RabbitMQ vhost, a Redis db), decoded; empty when none. */
  readonly path: string
  readonly options: Readonly<Record<string, string>>
}

const kinds: Record<string, Kind> = {
  http: "webhook",
  https: "webhook",
  nats: "nats",
  amqp: "rabbitmq",
  amqps: "rabbitmq",
  redis: "redis",
  rediss: "redis",
  kafka: "kafka"
}

/**
 * The query options each kind reads; any other is refused, so that a typo
 * (`?strem=X`) is an error rather than a silent default.
 *
 * @category constants
 * @since 0.1.0
 */
export const optionNames: Record<Kind, ReadonlyArray<string>> = {
  webhook: [],
  nats: ["stream", "subjectPrefix"],
  rabbitmq: ["exchange"],
  redis: ["maxLen"],
  kafka: ["clientId"]
}

const invalid = (message: string) =>
  new SinkSetupError({ sink: "url", reason: "InvalidOptions", message })

/**
 * The URL with its password replaced by `***`, for logs.
 *
 * @category utils
 * @since 0.1.0
 */
export const redact = (url: string): string => url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*:)[^@/?#]*@/i, "$1***@")

/** Percent-decoding that never throws (a malformed sequence becomes U+FFFD); `+` stays a plus. */
const decode = (text: string): string =>
  new URLSearchParams(`v=${text.replace(/[+&#]/g, (c) => encodeURIComponent(c))}`).get("v") ?? ""

/**
 * Parses a sink URL. Fails with `SinkSetupError` (`InvalidOptions`) on an
 * unknown scheme, a malformed host list, a port out of range or an option
 * the kind does not read.
 *
 * @category parsing
 * @since 0.1.0
 */
export const parse = (url: string): Effect.Effect<Target, SinkSetupError> =>
  Effect.suspend((): Effect.Effect<Target, SinkSetupError> => {
    const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/i.exec(url.trim())
    if (match === null) return Effect.fail(invalid(`not a URL: ${redact(url)}`))
    const scheme = match[1]!.toLowerCase()
    const kind = kinds[scheme]
    if (kind === undefined) {
      return Effect.fail(invalid(`unknown scheme ${scheme}:// in ${redact(url)} (one of ${Object.keys(kinds).map((s) => `${s}://`).join(", ")})`))
    }
    if (kind === "webhook") {
      const parsed = URL.canParse(url.trim()) ? new URL(url.trim()) : undefined
      if (parsed === undefined || parsed.hostname === "") return Effect.fail(invalid(`not a URL: ${redact(url)}`))
      return Effect.succeed({
        kind,
        url: url.trim(),
        scheme,
        hosts: [parsed.host],
        username: parsed.username === "" ? undefined : decode(parsed.username),
        password: parsed.password === "" ? undefined : decode(parsed.password),
        path: parsed.pathname.replace(/^\//, ""),
        options: {}
      })
    }
    const authority = match[2]!
    const at = authority.lastIndexOf("@")
    const userinfo = at >= 0 ? authority.slice(0, at) : undefined
    const hostList = at >= 0 ? authority.slice(at + 1) : authority
    const colon = userinfo?.indexOf(":") ?? -1
    const username = userinfo === undefined ? undefined : decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo)
    const password = userinfo === undefined || colon < 0 ? undefined : decode(userinfo.slice(colon + 1))
    const hosts = hostList.split(",").map((h) => h.trim())
    if (hosts.length > 1 && kind !== "nats" && kind !== "kafka") {
      return Effect.fail(invalid(`${scheme}:// takes one host, not ${hosts.length}: ${redact(url)}`))
    }
    for (const host of hosts) {
      const hostMatch = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/i.exec(host)
      const port = hostMatch?.[2] === undefined ? undefined : Number(hostMatch[2])
      if (hostMatch === null || (port !== undefined && (port < 1 || port > 65535))) {
        return Effect.fail(invalid(`malformed host "${host}" in ${redact(url)}`))
      }
    }
    const path = decode(match[3]!.replace(/^\//, ""))
    const options: Record<string, string> = {}
    for (const [name, value] of new URLSearchParams(match[4] ?? "")) {
      if (!optionNames[kind].includes(name)) {
        const known = optionNames[kind]
        return Effect.fail(invalid(
          `${scheme}:// has no option "${name}" (${known.length === 0 ? "it takes none" : `it takes ${known.join(", ")}`})`
        ))
      }
      options[name] = value
    }
    return Effect.succeed({ kind, url: url.trim(), scheme, hosts, username, password, path, options })
  })

/**
 * Options of `layer` and `layerConfig` besides the URL.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Each delivery's bound: the webhook's request, the broker's ack (default 10 seconds). */
  readonly timeout?: Duration.Input | undefined
}

/** The URL without its query (the sink's options, read here) and fragment. */
const withoutQuery = (url: string) => url.replace(/[?#].*$/, "")

const positiveInt = (name: string, value: string | undefined): Effect.Effect<number | undefined, SinkSetupError> => {
  if (value === undefined) return Effect.succeed(undefined)
  const n = Number(value)
  return Number.isSafeInteger(n) && n > 0 ? Effect.succeed(n) : Effect.fail(invalid(`${name} must be a positive integer, not "${value}"`))
}

/**
 * The sink `url` names, as a layer: `WebhookSink`, `NatsSink`,
 * `RabbitMqSink`, `RedisStreamSink` or `KafkaSink`, by scheme (see the
 * module's table). Fails with `SinkSetupError` when the URL is invalid or
 * the sink cannot be set up.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (url: string, options: Options = {}): Layer.Layer<OutboxSink, SinkSetupError> =>
  Layer.unwrap(Effect.gen(function*() {
    const target = yield* parse(url)
    const timeout = options.timeout
    switch (target.kind) {
      case "webhook":
        return WebhookSink.layer({ url: target.url, timeout })
      case "nats":
        return NatsSink.layer({
          url: withoutQuery(target.url),
          stream: target.options.stream,
          subjectPrefix: target.options.subjectPrefix,
          timeout
        })
      case "rabbitmq":
        return RabbitMqSink.layer({ url: withoutQuery(target.url), exchange: target.options.exchange, timeout })
      case "redis":
        return RedisStreamSink.layer({
          url: withoutQuery(target.url),
          maxLen: yield* positiveInt("maxLen", target.options.maxLen),
          timeout
        })
      case "kafka":
        if (target.username !== undefined) {
          return yield* invalid("kafka:// takes no credentials in the URL: give KafkaSink.layer({ sasl }) in code")
        }
        return KafkaSink.layer({
          brokers: target.hosts.map((host) => /:\d+$/.test(host) ? host : `${host}:9092`),
          clientId: target.options.clientId,
          timeout
        })
    }
  }))

/**
 * The sink `OUTBOX_SINK_URL` names (`OutboxEnv.sink`), with
 * `OUTBOX_SINK_TIMEOUT`; when it is unset, `orElse` (e.g. `LogSink.layer`),
 * or, without one, a `ConfigError` naming the variable.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = <E = never, R = never>(options: {
  readonly orElse?: Layer.Layer<OutboxSink, E, R> | undefined
} = {}): Layer.Layer<OutboxSink, SinkSetupError | Config.ConfigError | E, R> =>
  Layer.unwrap(Effect.gen(function*(): Effect.fn.Return<Layer.Layer<OutboxSink, SinkSetupError | E, R>, Config.ConfigError> {
    const { timeout, url } = options.orElse === undefined
      ? yield* Effect.map(OutboxEnv.sinkRequired, (c) => ({ ...c, url: Option.some(c.url) }))
      : yield* OutboxEnv.sink
    if (Option.isNone(url)) return options.orElse!
    yield* Effect.logInfo(`events are delivered to ${redact(url.value)}`)
    return layer(url.value, { timeout })
  }))
