import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as SinkContract from "@outbox/testing/SinkContract"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { type AddressInfo, createConnection, createServer, type Socket } from "node:net"
import * as RedisStreamSink from "../src/sinks/RedisStreamSink.ts"
import type { SinkSetupError } from "../src/sinks/SinkSetupError.ts"
import * as WebhookSink from "../src/sinks/WebhookSink.ts"

// The real Redis on this machine; every test works under its own key prefix and deletes it at the end.
const REDIS_PORT = 6379
const directUrl = `redis://127.0.0.1:${REDIS_PORT}`

/** Polls `condition` in real time (the live tests' counterpart of `RelayTestKit.eventually`). */
const eventually = <E, R>(condition: Effect.Effect<boolean, E, R>, message: string, limit = 10_000) =>
  Effect.gen(function*() {
    for (let waited = 0; waited < limit; waited += 20) {
      if (yield* condition) return
      yield* Effect.sleep("20 millis")
    }
    return yield* Effect.die(new Error(message))
  })

/** A fresh key prefix, so that runs and tests never share a stream. */
const newPrefix = () => `outbox-test:redis-sink:${randomUUID()}`

/** A plain client for the test's own reads, deleting `prefix*` (and `extraKeys`) when the scope closes. */
const adminClient = (prefix: string, extraKeys: Array<string> = []): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => new Redis(REDIS_PORT, "127.0.0.1", { lazyConnect: false })),
    (redis) =>
      Effect.promise(async () => {
        const keys = [...(await redis.keys(`${prefix}*`)), ...extraKeys]
        if (keys.length > 0) await redis.del(...keys)
        await redis.quit()
      })
  )

// ---------------------------------------------------------------------------------------------------------------
// What reached Redis, read back from Redis: its MONITOR feed lists every command it executed, including the XADDs
// it refused (WRONGTYPE), which no XRANGE can show.
// ---------------------------------------------------------------------------------------------------------------

/** Undoes Redis's `sdscatrepr` quoting of a MONITOR argument (`\"`, `\\`, `\n`, `\xHH` for every non-ASCII byte). */
const unquote = (raw: string): string => {
  const bytes: Array<number> = []
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== "\\") {
      bytes.push(raw.charCodeAt(i))
      continue
    }
    const next = raw[++i]!
    if (next === "x") {
      bytes.push(parseInt(raw.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      const escapes: Record<string, number> = { n: 10, r: 13, t: 9, a: 7, b: 8 }
      bytes.push(escapes[next] ?? next.charCodeAt(0))
    }
  }
  return Buffer.from(bytes).toString("utf8")
}

/** `+1796206856.048 [0 127.0.0.1:58076] "xadd" "key" ...` → `["xadd", "key", ...]`. */
const parseMonitorLine = (line: string): Array<string> => {
  const args: Array<string> = []
  let i = line.indexOf("] ") + 2
  while (i > 1 && i < line.length) {
    if (line[i] !== "\"") {
      i++
      continue
    }
    let j = i + 1
    while (j < line.length && line[j] !== "\"") j += line[j] === "\\" ? 2 : 1
    args.push(unquote(line.slice(i + 1, j)))
    i = j + 1
  }
  return args
}

interface Monitor {
  /** Every command Redis executed since the monitor started, as arguments. */
  readonly commands: ReadonlyArray<ReadonlyArray<string>>
  /** Resolves once the feed has caught up with everything Redis executed before the call. */
  readonly sync: (admin: Redis) => Promise<void>
}

const makeMonitor: Effect.Effect<Monitor, never, Scope.Scope> = Effect.map(
  Effect.acquireRelease(
    Effect.callback<{ socket: Socket; monitor: Monitor }>((resume) => {
      const commands: Array<ReadonlyArray<string>> = []
      const waiting = new Map<string, () => void>()
      const socket = createConnection({ host: "127.0.0.1", port: REDIS_PORT })
      let buffer = ""
      const monitor: Monitor = {
        commands,
        // a marker ECHOed after the call is executed after everything before it, and shows up after it in the feed
        sync: (admin) =>
          new Promise<void>((resolve) => {
            const marker = `sync-${randomUUID()}`
            waiting.set(marker, resolve)
            void admin.echo(marker)
          })
      }
      socket.on("connect", () => socket.write("MONITOR\r\n"))
      socket.on("data", (chunk) => {
        buffer += chunk.toString("latin1")
        for (let end = buffer.indexOf("\r\n"); end !== -1; end = buffer.indexOf("\r\n")) {
          const line = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          if (line === "+OK") {
            resume(Effect.succeed({ socket, monitor }))
            continue
          }
          const args = parseMonitorLine(line)
          if (args[0]?.toLowerCase() === "echo" && waiting.has(args[1]!)) {
            waiting.get(args[1]!)!()
            waiting.delete(args[1]!)
          }
          commands.push(args)
        }
      })
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  ),
  ({ monitor }) => monitor
)

/** The XADDs to streams under `prefix` that Redis saw, as the contract's attempts. */
const xaddsUnder = (monitor: Monitor, prefix: string): Array<SinkContract.Attempt> =>
  monitor.commands
    .filter((args) => args[0]?.toLowerCase() === "xadd" && args[1]!.startsWith(prefix))
    .map((args) => {
      const fields = entryFields(args.slice(args.indexOf("*", 2) + 1))
      return { trackingId: fields["outbox-tracking-id"]!, payload: JSON.parse(fields.body!).payload }
    })

/** `[f1, v1, f2, v2]` → `{ f1: v1, f2: v2 }`. */
const entryFields = (flat: ReadonlyArray<string>): Record<string, string> => {
  const fields: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
  return fields
}

// ---------------------------------------------------------------------------------------------------------------
// The fault-injecting far side: a proxy in front of the real Redis that, once a connection carries an XADD, either
// cuts it as soon as Redis answered (the XADD was applied, its reply is lost: a retryable failure) or withholds
// Redis's replies (a hung broker); the handshake of a (re)connection passes, so the failure hits the XADD itself.
// ---------------------------------------------------------------------------------------------------------------

type FaultMode = "forward" | "cut" | "withhold"

interface FaultProxy {
  readonly port: number
  /** Switches the mode; `"forward"` also hands over the replies withheld so far. */
  readonly setMode: (mode: FaultMode) => Effect.Effect<void>
}

const carriesXadd = (chunk: Buffer) => chunk.toString("latin1").toLowerCase().includes("\r\nxadd\r\n")

const makeFaultProxy: Effect.Effect<FaultProxy, never, Scope.Scope> = Effect.gen(function*() {
  let mode: FaultMode = "forward"
  interface Conn {
    readonly client: Socket
    readonly upstream: Socket
    armed: FaultMode
    held: Array<Buffer>
  }
  const conns = new Set<Conn>()
  const server = yield* Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createServer>>((resume) => {
      const s = createServer((client) => {
        const upstream = createConnection({ host: "127.0.0.1", port: REDIS_PORT })
        const conn: Conn = { client, upstream, armed: "forward", held: [] }
        conns.add(conn)
        const drop = () => {
          conns.delete(conn)
          client.destroy()
          upstream.destroy()
        }
        for (const socket of [client, upstream]) {
          socket.on("error", drop)
          socket.on("close", drop)
        }
        client.on("data", (chunk: Buffer) => {
          if (mode !== "forward" && conn.armed === "forward" && carriesXadd(chunk)) conn.armed = mode
          upstream.write(chunk)
        })
        upstream.on("data", (chunk: Buffer) => {
          if (conn.armed === "cut") return drop()
          if (conn.armed === "withhold") return void conn.held.push(chunk)
          client.write(chunk)
        })
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.callback<void>((resume) => {
        for (const conn of conns) {
          conn.client.destroy()
          conn.upstream.destroy()
        }
        s.close(() => resume(Effect.void))
      })
  )
  return {
    port: (server.address() as AddressInfo).port,
    setMode: (next) =>
      Effect.sync(() => {
        mode = next
        if (next !== "forward") return
        for (const conn of conns) {
          if (conn.armed === "withhold") for (const chunk of conn.held) conn.client.write(chunk)
          conn.armed = "forward"
          conn.held = []
        }
      })
  }
})

/**
 * The sink through the fault proxy, with its probe: `failTransiently` cuts the connection after Redis applied the
 * XADD, `failPermanently` routes to a key holding a plain string (WRONGTYPE), `hang` withholds Redis's replies;
 * attempts are the XADDs Redis's MONITOR feed shows.
 */
const contractSubject = (
  timeout: Duration.Input
): Layer.Layer<OutboxSink | SinkContract.SinkProbe, SinkSetupError> =>
  Layer.unwrap(Effect.gen(function*() {
    const prefix = newPrefix()
    const admin = yield* adminClient(prefix)
    const monitor = yield* makeMonitor
    const proxy = yield* makeFaultProxy
    const notAStream = `${prefix}:not-a-stream`
    yield* Effect.promise(() => admin.set(notAStream, "a plain string"))
    let permanent = false
    const probe = SinkContract.SinkProbe.of({
      behave: (behaviour) =>
        Effect.andThen(
          Effect.sync(() => void (permanent = behaviour === "failPermanently")),
          proxy.setMode(behaviour === "failTransiently" ? "cut" : behaviour === "hang" ? "withhold" : "forward")
        ),
      attempts: Effect.map(Effect.promise(() => monitor.sync(admin)), () => xaddsUnder(monitor, prefix))
    })
    const sink = Layer.effect(
      OutboxSink,
      Effect.tap(
        RedisStreamSink.make({
          url: `redis://127.0.0.1:${proxy.port}`,
          stream: (event) => permanent ? notAStream : `${prefix}:${RedisStreamSink.defaultStream(event)}`,
          timeout
        }),
        // released before the sink: a hung connection gets its replies, so that the sink's QUIT is answered
        () => Effect.addFinalizer(() => proxy.setMode("forward"))
      )
    )
    return Layer.merge(sink, Layer.succeed(SinkContract.SinkProbe, probe))
  }))

SinkContract.suite("RedisStreamSink", {
  layer: contractSubject("5 seconds"),
  name: "redis",
  behaviours: SinkContract.allBehaviours,
  timeout: "5 seconds"
})

// ---------------------------------------------------------------------------------------------------------------

const eventAt = (n: number, overrides: Partial<OutboxEvent> = {}): OutboxEvent => ({
  id: BigInt(n),
  lockToken: 1n,
  trackingId: `${randomUUID().slice(0, 24)}${String(n).padStart(12, "0")}`,
  aggregateType: "Order",
  aggregateId: `order-${n}`,
  eventType: "OrderPlaced",
  payload: { n, note: "Zoë \"quoted\"\nline 🚚" },
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(Date.UTC(2026, 10, 23, 10, 0, n % 60)),
  lockedUntil: new Date(Date.UTC(2026, 10, 23, 10, 1, 0)),
  ...overrides
})

/** The entries of `key`: `[id, fields]`. */
const readStream = (admin: Redis, key: string) =>
  Effect.map(
    Effect.promise(() => admin.xrange(key, "-", "+")),
    (entries) => entries.map(([id, flat]) => ({ id, fields: entryFields(flat), names: flat.filter((_, i) => i % 2 === 0) }))
  )

const trackingIdsIn = (admin: Redis, key: string) =>
  Effect.map(readStream(admin, key), (entries) => entries.map((e) => e.fields["outbox-tracking-id"]!))

/** The sink's connections Redis has open now (`CLIENT SETNAME outbox-sink`). */
const sinkConnections = (admin: Redis) =>
  Effect.map(
    Effect.promise(() => admin.client("LIST") as Promise<string>),
    (list) => list.split("\n").filter((line) => line.includes(" name=outbox-sink ")).length
  )

/** A free loopback port (the OS's pick, released at once). */
const freePort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A second, throw-away Redis (the same `redis-server` binary as the one on 6379) that is a replica of a primary that
 * does not exist: it refuses writes with READONLY, as the old primary does after a failover. Killed with the scope.
 */
const replicaRedis = Effect.gen(function*() {
  const port = yield* freePort
  yield* Effect.acquireRelease(
    Effect.sync(() =>
      spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", "1"], {
        stdio: "ignore"
      })
    ),
    (child) => Effect.sync(() => child.kill("SIGKILL"))
  )
  const admin = yield* Effect.acquireRelease(
    Effect.sync(() => new Redis(port, "127.0.0.1", { retryStrategy: () => 20 }).on("error", () => {})),
    (redis) => Effect.sync(() => redis.disconnect())
  )
  yield* Effect.promise(() => admin.ping())
  return { port, admin }
})

describe("RedisStreamSink", () => {
  it.live("XADDs to outbox:<aggregateType>: the header fields, then the JSON body, read back with XRANGE", () =>
    Effect.gen(function*() {
      const runId = randomUUID()
      const aggregateType = `Billing.Invoice ${runId}`
      const key = `outbox:Billing_Invoice_${runId}`
      const admin = yield* adminClient(newPrefix(), [key])
      const sink = yield* RedisStreamSink.make({ url: `${directUrl}/0` })
      const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
      const event = eventAt(1, {
        aggregateType,
        metadata: { traceparent, tracestate: "vendor=opaque", source: "test" }
      })
      yield* sink.deliver(event)
      const [entry, ...rest] = yield* readStream(admin, key)
      assert.strictEqual(rest.length, 0)
      assert.match(entry!.id, /^\d+-\d+$/)
      assert.deepStrictEqual(entry!.names, [
        "outbox-tracking-id",
        "outbox-event-type",
        "outbox-aggregate-type",
        "outbox-aggregate-id",
        "traceparent",
        "tracestate",
        "body"
      ])
      assert.deepStrictEqual(entry!.fields, {
        "outbox-tracking-id": event.trackingId,
        "outbox-event-type": "OrderPlaced",
        "outbox-aggregate-type": aggregateType,
        "outbox-aggregate-id": "order-1",
        traceparent,
        tracestate: "vendor=opaque",
        body: entry!.fields.body!
      })
      assert.deepStrictEqual(JSON.parse(entry!.fields.body!), JSON.parse(JSON.stringify(WebhookSink.body(event))))
      assert.strictEqual(JSON.parse(entry!.fields.body!).payload.note, "Zoë \"quoted\"\nline 🚚")
    }))

  it.live("an event outside a trace has no trace fields", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const sink = yield* RedisStreamSink.make({ url: directUrl, stream: () => `${prefix}:s` })
      yield* sink.deliver(eventAt(2))
      const [entry] = yield* readStream(admin, `${prefix}:s`)
      assert.deepStrictEqual(entry!.names, [
        "outbox-tracking-id",
        "outbox-event-type",
        "outbox-aggregate-type",
        "outbox-aggregate-id",
        "body"
      ])
    }))

  it.live("the stream option routes each event; maxLen sends MAXLEN ~ n and trims the stream", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const monitor = yield* makeMonitor
      const sink = yield* RedisStreamSink.make({
        url: directUrl,
        stream: (event) => `${prefix}:${event.eventType}`,
        maxLen: 50
      })
      const placed = Array.from({ length: 300 }, (_, i) => eventAt(i))
      const shipped = eventAt(1000, { eventType: "OrderShipped" })
      const outcomes = yield* sink.deliverBatch!([...placed, shipped])
      assert.isTrue(outcomes.every((o) => o === undefined))
      assert.deepStrictEqual(yield* trackingIdsIn(admin, `${prefix}:OrderShipped`), [shipped.trackingId])
      // approximate trimming drops whole stream nodes (100 entries each): between 50 and 150 stay
      const length = yield* Effect.promise(() => admin.xlen(`${prefix}:OrderPlaced`))
      assert.isAtLeast(length, 50)
      assert.isBelow(length, 300)
      yield* Effect.promise(() => monitor.sync(admin))
      const xadd = monitor.commands.find((args) => args[0] === "xadd" && args[1] === `${prefix}:OrderShipped`)!
      assert.deepStrictEqual(xadd.slice(0, 6), ["xadd", `${prefix}:OrderShipped`, "MAXLEN", "~", "50", "*"])
    }))

  it.live("deliverBatch: one pipeline, every event acked, in order", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const monitor = yield* makeMonitor
      const sink = yield* RedisStreamSink.make({ url: directUrl, stream: () => `${prefix}:s` })
      const events = Array.from({ length: 5 }, (_, i) => eventAt(i))
      const outcomes = yield* sink.deliverBatch!(events)
      assert.deepStrictEqual(outcomes, [undefined, undefined, undefined, undefined, undefined])
      assert.deepStrictEqual(yield* trackingIdsIn(admin, `${prefix}:s`), events.map((e) => e.trackingId))
      yield* Effect.promise(() => monitor.sync(admin))
      assert.strictEqual(monitor.commands.filter((args) => args[0] === "xadd" && args[1] === `${prefix}:s`).length, 5)
      assert.deepStrictEqual(yield* sink.deliverBatch!([]), [])
    }))

  it.live("deliverBatch: a WRONGTYPE or a failing stream option fails that event only (permanent), the rest are acked", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      yield* Effect.promise(() => admin.set(`${prefix}:string`, "not a stream"))
      const sink = yield* RedisStreamSink.make({
        url: directUrl,
        stream: (event) => {
          if (event.eventType === "Broken") throw new Error("no route for Broken")
          return event.eventType === "Rejected" ? `${prefix}:string` : `${prefix}:s`
        }
      })
      const events = [
        eventAt(1),
        eventAt(2, { eventType: "Rejected" }),
        eventAt(3),
        eventAt(4, { eventType: "Broken" }),
        eventAt(5)
      ]
      const outcomes = yield* sink.deliverBatch!(events)
      assert.deepStrictEqual([outcomes[0], outcomes[2], outcomes[4]], [undefined, undefined, undefined])
      assert.instanceOf(outcomes[1], DeliveryError)
      assert.isFalse(outcomes[1]!.retryable)
      assert.include(outcomes[1]!.message, "WRONGTYPE")
      assert.include(outcomes[1]!.message, `${prefix}:string`)
      assert.instanceOf(outcomes[3], DeliveryError)
      assert.isFalse(outcomes[3]!.retryable)
      assert.include(outcomes[3]!.message, "no route for Broken")
      assert.deepStrictEqual(yield* trackingIdsIn(admin, `${prefix}:s`), [events[0]!.trackingId, events[2]!.trackingId, events[4]!.trackingId])
      // deliver: the same classification, as a failure
      const error = yield* Effect.flip(sink.deliver(eventAt(6, { eventType: "Rejected" })))
      assert.isFalse(error.retryable)
    }))

  it("classifies Redis's error replies: the event's own refusals are permanent, the server's state retryable", () => {
    const permanent = [
      "WRONGTYPE Operation against a key holding the wrong kind of value",
      "ERR syntax error",
      "ERR The ID specified in XADD is equal or smaller than the target stream top item",
      "NOPERM this user has no permissions to access one of the keys used as arguments",
      "MOVED 3999 127.0.0.1:6381",
      "ASK 3999 127.0.0.1:6381"
    ]
    const retryable = [
      "OOM command not allowed when used memory > 'maxmemory'.",
      "LOADING Redis is loading the dataset in memory",
      "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
      "TRYAGAIN Multiple keys request during rehashing of slot",
      "CLUSTERDOWN The cluster is down",
      "READONLY You can't write against a read only replica.",
      "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
      "NOREPLICAS Not enough good replicas to write.",
      "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
      "NOAUTH Authentication required.",
      "SOMETHINGNEW we have never seen",
      "ERRATIC is not ERR"
    ]
    for (const message of permanent) assert.isFalse(RedisStreamSink.isRetryableReply(message), message)
    for (const message of retryable) assert.isTrue(RedisStreamSink.isRetryableReply(message), message)
  })

  it.live("wrong options fail the layer with SinkSetupError InvalidOptions, without echoing the URL", () =>
    Effect.gen(function*() {
      const cases: Array<RedisStreamSink.Options> = [
        { url: "http://user:s3cret@127.0.0.1:6379" },
        { url: "not a url" },
        { url: "redis://user:s3cret@127.0.0.1:6379/zero" },
        { url: directUrl, maxLen: 0 },
        { url: directUrl, maxLen: 1.5 },
        { url: directUrl, timeout: "soon" as never }
      ]
      for (const options of cases) {
        const exit = yield* Effect.exit(Layer.build(RedisStreamSink.layer(options)))
        assert.isTrue(Exit.isFailure(exit), JSON.stringify(options))
        const error = yield* Effect.flip(Layer.build(RedisStreamSink.layer(options)))
        assert.strictEqual(error._tag, "SinkSetupError")
        assert.strictEqual(error.reason, "InvalidOptions")
        assert.strictEqual(error.sink, "redis")
        assert.notInclude(error.message, "s3cret")
      }
    }))

  it.live("a login Redis refuses fails the layer with SinkSetupError Connect (without the password)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Layer.build(RedisStreamSink.layer({ url: "redis://nobody:s3cret@127.0.0.1:6379" })))
      assert.strictEqual(error.reason, "Connect")
      assert.include(error.message, "WRONGPASS")
      assert.notInclude(error.message, "s3cret")
    }))

  it.live("reports its connection; closing the layer QUITs (no connection left behind)", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const before = yield* sinkConnections(admin)
      yield* Effect.scoped(Effect.gen(function*() {
        const sink = yield* RedisStreamSink.make({ url: directUrl, stream: () => `${prefix}:s` })
        yield* sink.deliver(eventAt(1))
        assert.deepStrictEqual(yield* sink.connection!, { connected: true })
        assert.strictEqual(yield* sinkConnections(admin), before + 1)
      }))
      yield* eventually(Effect.map(sinkConnections(admin), (n) => n === before), "the sink's connection is still open after its scope closed")
    }))

  it.live("builds while Redis is unreachable; deliveries fail retryably (well before the timeout) until it is back", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const proxy = yield* TcpProxy.make({ port: REDIS_PORT })
      yield* proxy.setMode("refuse")
      const sink = yield* RedisStreamSink.make({ url: `redis://${proxy.address}`, stream: () => `${prefix}:s`, timeout: "30 seconds" })
      const status = yield* sink.connection!
      assert.isFalse(status.connected)
      const error = yield* Effect.flip(sink.deliver(eventAt(1))).pipe(Effect.timeout("10 seconds"))
      assert.isTrue(error.retryable)
      assert.include(error.message, "connection")
      const down = yield* sink.connection!
      assert.isFalse(down.connected)
      assert.isAbove(down.detail!.length, 0)
      yield* proxy.setMode("forward")
      yield* eventually(Effect.map(sink.connection!, (s) => s.connected), "never reconnected")
      const event = eventAt(2)
      yield* sink.deliver(event)
      assert.deepStrictEqual(yield* trackingIdsIn(admin, `${prefix}:s`), [event.trackingId])
    }))

  it.live("outage mid-drain: nothing counts as delivered without its XADD reply; after the outage the drain completes", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const proxy = yield* TcpProxy.make({ port: REDIS_PORT })
      const sink = yield* RedisStreamSink.make({ url: `redis://${proxy.address}`, stream: () => `${prefix}:s`, timeout: "5 seconds" })
      const events = Array.from({ length: 40 }, (_, i) => eventAt(i))
      const delivered = new Set<string>()
      let failures = 0
      let round = 0
      let left = events
      while (left.length > 0) {
        round++
        if (round === 3) yield* proxy.setMode("refuse")
        if (round === 6) yield* proxy.setMode("forward")
        const batch = left.slice(0, 4)
        const outcomes = yield* sink.deliverBatch!(batch)
        outcomes.forEach((outcome, i) => {
          if (outcome === undefined) return void delivered.add(batch[i]!.trackingId)
          failures++
          assert.isTrue(outcome.retryable, outcome.message)
        })
        // what the sink reported delivered is in the stream (read from Redis directly, not through the proxy)
        const inStream = new Set(yield* trackingIdsIn(admin, `${prefix}:s`))
        for (const trackingId of delivered) assert.isTrue(inStream.has(trackingId), `reported delivered but absent: ${trackingId}`)
        left = left.filter((e) => !delivered.has(e.trackingId))
        if (outcomes.some((o) => o !== undefined)) yield* Effect.sleep("100 millis")
        assert.isBelow(round, 200, "the drain never completed")
      }
      assert.isAbove(failures, 0, "the outage failed no delivery")
      const inStream = yield* trackingIdsIn(admin, `${prefix}:s`)
      for (const event of events) assert.include(inStream, event.trackingId)
      assert.isAbove(yield* proxy.connections, 1, "the sink never reconnected")
    }))

  it.live("a hung Redis (TCP accepted, no reply) fails deliveries retryably at the timeout; the sink recovers", () =>
    Effect.gen(function*() {
      const prefix = newPrefix()
      const admin = yield* adminClient(prefix)
      const proxy = yield* TcpProxy.make({ port: REDIS_PORT })
      const sink = yield* RedisStreamSink.make({ url: `redis://${proxy.address}`, stream: () => `${prefix}:s`, timeout: "300 millis" })
      yield* sink.deliver(eventAt(1))
      // open connections are cut, new ones accepted but never answered
      yield* proxy.setMode("blackhole")
      yield* eventually(Effect.map(sink.connection!, (s) => !s.connected), "the cut went unnoticed")
      for (const n of [2, 3]) {
        const started = Date.now()
        const [outcome] = yield* sink.deliverBatch!([eventAt(n)])
        // the sink's timeout, or the client dropping the silent connection after as long (socketTimeout)
        assert.isTrue(outcome!.retryable)
        assert.match(outcome!.message, /did not acknowledge|connection lost/)
        assert.isBelow(Date.now() - started, 1_000)
      }
      yield* proxy.setMode("forward")
      const event = eventAt(4)
      yield* eventually(Effect.map(Effect.exit(sink.deliver(event)), Exit.isSuccess), "the sink never recovered from the hang")
      assert.include(yield* trackingIdsIn(admin, `${prefix}:s`), event.trackingId)
    }))

  it.live("READONLY (a failover: the old primary is now a replica) is retryable; once it is a primary again, deliveries succeed", () =>
    Effect.gen(function*() {
      const { admin, port } = yield* replicaRedis
      const sink = yield* RedisStreamSink.make({ url: `redis://127.0.0.1:${port}`, stream: () => "failover:s" })
      const error = yield* Effect.flip(sink.deliver(eventAt(1)))
      assert.isTrue(error.retryable)
      assert.include(error.message, "READONLY")
      // the failover completes: the same address now leads to a primary
      yield* Effect.promise(() => admin.replicaof("NO", "ONE"))
      const event = eventAt(2)
      yield* eventually(Effect.map(Effect.exit(sink.deliver(event)), Exit.isSuccess), "never delivered after the failover")
      assert.deepStrictEqual(yield* trackingIdsIn(admin, "failover:s"), [event.trackingId])
    }))

  it.live("closing while Redis is down stops the reconnect loop", () =>
    Effect.gen(function*() {
      const proxy = yield* TcpProxy.make({ port: REDIS_PORT })
      yield* proxy.setMode("refuse")
      yield* Effect.scoped(Effect.gen(function*() {
        yield* RedisStreamSink.make({ url: `redis://${proxy.address}` })
        yield* eventually(Effect.map(proxy.connections, (n) => n >= 2), "no reconnect attempt")
      }))
      const after = yield* proxy.connections
      yield* Effect.sleep("2500 millis")
      assert.strictEqual(yield* proxy.connections, after, "the client kept reconnecting after its scope closed")
    }))
})
