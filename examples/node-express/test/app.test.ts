import { assert, describe, layer } from "@effect/vitest"
import { createRelay, InvalidEvent, type OutboxEvent, type OutboxRelay, StoreError } from "@outbox/client"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import knex, { type Knex } from "knex"
import { spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { type AppOptions, createApp, httpError, type LogLevel, migrate, placeOrder } from "../src/app.ts"

/** What every test of the file shares: a fresh database, a Knex on it, and a relay recording what it delivers. */
class Harness extends Context.Service<Harness, {
  readonly url: string
  readonly db: Knex
  /** Every event the relay delivered, in delivery order. */
  readonly events: Array<OutboxEvent>
  readonly relay: OutboxRelay
}>()("examples/node-express/test/Harness") {}

/** A Knex on `url`, destroyed with the scope (`quiet`: without Knex's own warnings, for a database that is down on purpose). */
const connect = (url: string, quiet = false) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      knex({
        client: "pg",
        connection: url,
        pool: { min: 0, max: 4 },
        acquireConnectionTimeout: 5_000,
        ...(quiet ? { log: { warn: () => {}, error: () => {} } } : {})
      })
    ),
    (db) => Effect.promise(() => db.destroy())
  )

const HarnessLive = Layer.effect(
  Harness,
  Effect.gen(function*() {
    const { url } = yield* TestDatabase.TestDatabase
    const db = yield* connect(url)
    yield* Effect.promise(() => migrate(db))
    const events: Array<OutboxEvent> = []
    // as in main.ts: createRelay applies the outbox migrations before it resolves
    const relay = yield* Effect.acquireRelease(
      Effect.promise(() =>
        createRelay({ connectionString: url, pollInterval: 20, maxConnections: 4, handler: (event) => void events.push(event) })
      ),
      (r) => Effect.promise(() => r.stop())
    )
    return { url, db, events, relay }
  })
).pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

interface LogEntry {
  readonly level: LogLevel
  readonly message: string
  readonly fields: Readonly<Record<string, unknown>>
}

/** Serves `createApp` on a free loopback port for the test's scope; `logs` records what it logged. */
const serve = (options: AppOptions = {}, db?: Knex) =>
  Effect.gen(function*() {
    const harness = yield* Harness
    const logs: Array<LogEntry> = []
    const app = createApp(db ?? harness.db, { log: (level, message, fields = {}) => void logs.push({ level, message, fields }), ...options })
    const server = yield* Effect.acquireRelease(
      Effect.promise(() =>
        new Promise<Server>((resolve) => {
          const s = createServer(app)
          s.listen(0, "127.0.0.1", () => resolve(s))
        })
      ),
      (s) =>
        Effect.promise(() =>
          new Promise<void>((resolve) => {
            s.closeAllConnections()
            s.close(() => resolve())
          })
        )
    )
    return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, logs }
  })

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly json: any
}

/** The status, headers and JSON body (`undefined` when the answer is not JSON). */
const request = (url: string, init?: RequestInit) =>
  Effect.promise(() =>
    fetch(url, init).then(async (res): Promise<Reply> => {
      const text = await res.text()
      const json = (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined
      return { status: res.status, headers: res.headers, json }
    })
  )

type Body = string | Uint8Array | ReadableStream<Uint8Array>

/** `POST /orders` with `body`, sent as `contentType` (`null`: no content-type header; a string body would add text/plain). */
const post = (base: string, body: Body, contentType: string | null = "application/json", headers: Record<string, string> = {}) =>
  request(`${base}/orders`, {
    method: "POST",
    headers: { ...(contentType === null ? {} : { "content-type": contentType }), ...headers },
    body: contentType === null && typeof body === "string" ? new TextEncoder().encode(body) : body,
    // a ReadableStream body (sent chunked, without content-length) needs it
    duplex: "half"
  } as RequestInit)

/** A valid order of one item. */
const order = (customerId: string, unitPrice = 10, quantity = 1) => JSON.stringify({ customerId, items: [{ sku: "A-1", quantity, unitPrice }] })

/** `size` bytes of spaces in 64 KiB chunks, as a stream (sent with `transfer-encoding: chunked`, no content-length). */
const chunked = (size: number) => {
  let sent = 0
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= size) return controller.close()
      const n = Math.min(64 * 1024, size - sent)
      controller.enqueue(new Uint8Array(n).fill(0x20))
      sent += n
    }
  })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The first relayed event matching `predicate`, waiting up to 15 seconds for it (then `undefined`). */
const relayed = (predicate: (event: OutboxEvent) => boolean) =>
  Effect.flatMap(Effect.service(Harness), ({ events }) =>
    Effect.promise(async () => {
      for (let i = 0; i < 600; i++) {
        const event = events.find(predicate)
        if (event !== undefined) return event
        await sleep(25)
      }
      return undefined
    }))

const customerOf = (event: OutboxEvent) => (event.payload as { readonly customerId?: unknown }).customerId

/** Rows of `orders` and of the outbox, in all or for one customer. */
const counts = (customerId?: string) =>
  Effect.flatMap(Effect.service(Harness), ({ db }) =>
    Effect.promise(async () => {
      const where = customerId === undefined ? "true" : "customer_id = ?"
      const whereEvent = customerId === undefined ? "true" : "payload->>'customerId' = ?"
      const values = customerId === undefined ? [] : [customerId, customerId]
      const result = await db.raw<{ rows: Array<{ orders: number; outbox: number }> }>(
        `SELECT (SELECT count(*) FROM orders WHERE ${where})::int AS orders, (SELECT count(*) FROM outbox WHERE ${whereEvent})::int AS outbox`,
        values
      )
      return result.rows[0]!
    }))

const uniqueCustomer = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`

layer(HarnessLive, { timeout: "60 seconds", excludeTestServices: true })("node-express example", (it) => {
  describe("POST /orders", () => {
    it.effect("201: the order is stored, reads back, and the relay delivers its OrderCreated", () =>
      Effect.gen(function*() {
        const { db } = yield* Harness
        const { base, logs } = yield* serve()
        // a surrogate pair is well-formed text, and +json is JSON
        const customerId = uniqueCustomer("cust-😀")
        const created = yield* post(base, JSON.stringify({
          customerId,
          items: [{ sku: "A-1", quantity: 2, unitPrice: 9.5 }, { sku: "B-2", quantity: 1, unitPrice: 1 }],
          ignored: "unknown keys are dropped"
        }), "application/vnd.orders+json; charset=utf-8")
        assert.strictEqual(created.status, 201)
        const orderId = created.json.orderId as string
        assert.match(orderId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        assert.strictEqual(created.headers.get("location"), `/orders/${orderId}`)

        const read = yield* request(`${base}/orders/${orderId}`)
        assert.strictEqual(read.status, 200)
        assert.deepStrictEqual({ ...read.json, createdAt: undefined }, {
          orderId,
          customerId,
          items: [{ sku: "A-1", quantity: 2, unitPrice: 9.5 }, { sku: "B-2", quantity: 1, unitPrice: 1 }],
          total: 20,
          createdAt: undefined
        })

        const event = yield* relayed((e) => e.aggregateId === orderId)
        assert.isDefined(event)
        assert.strictEqual(event!.aggregateType, "Order")
        assert.strictEqual(event!.eventType, "OrderCreated")
        assert.deepStrictEqual(event!.payload, {
          orderId,
          customerId,
          items: [{ sku: "A-1", quantity: 2, unitPrice: 9.5 }, { sku: "B-2", quantity: 1, unitPrice: 1 }],
          total: 20
        })
        // the relay marks it delivered
        const status = yield* Effect.promise(async () => {
          for (let i = 0; i < 200; i++) {
            const row = await db("outbox").where({ aggregate_id: orderId }).first("status")
            if (row?.status === "COMPLETED") return row.status as string
            await sleep(25)
          }
          return "not completed"
        })
        assert.strictEqual(status, "COMPLETED")
        assert.deepStrictEqual(yield* counts(customerId), { orders: 1, outbox: 1 })
        assert.deepStrictEqual(logs, [])
      }))

    it.effect("422 over the credit limit, checked after publish: the transaction rolls back, nothing is stored or relayed", () =>
      Effect.gen(function*() {
        const { base, logs } = yield* serve({ creditLimit: 100 })
        const customerId = uniqueCustomer("cust-credit")
        const first = yield* post(base, order(customerId, 60))
        assert.strictEqual(first.status, 201)
        const refused = yield* post(base, order(customerId, 60))
        assert.strictEqual(refused.status, 422)
        assert.include(refused.json.error, "credit limit exceeded")
        assert.include(refused.json.error, "above the limit of 100")
        const last = yield* post(base, order(customerId, 30))
        assert.strictEqual(last.status, 201)
        // the order after the refused one is relayed: the refused one never had an event to relay
        assert.isDefined(yield* relayed((e) => e.aggregateId === last.json.orderId))
        assert.isDefined(yield* relayed((e) => e.aggregateId === first.json.orderId))
        const { events } = yield* Harness
        assert.deepStrictEqual(
          events.filter((e) => customerOf(e) === customerId).map((e) => e.aggregateId).sort(),
          [first.json.orderId, last.json.orderId].sort()
        )
        assert.deepStrictEqual(yield* counts(customerId), { orders: 2, outbox: 2 })
        assert.deepStrictEqual(logs, [])
      }))

    it.effect("bad input is a 400/413/415 with a JSON message; nothing is written, nothing is logged", () =>
      Effect.gen(function*() {
        const { base, logs } = yield* serve()
        const before = yield* counts()
        const item = { sku: "A-1", quantity: 1, unitPrice: 1 }
        const withItem = (patch: Record<string, unknown>) => JSON.stringify({ customerId: "c-1", items: [{ ...item, ...patch }] })
        const twoMiB = 2 * 1024 * 1024
        const cases: ReadonlyArray<readonly [name: string, body: () => Body, contentType: string | null, status: number, message: string, headers?: Record<string, string>]> = [
          // text PostgreSQL cannot store: JSON allows both as escapes
          ["NUL in customerId", () => '{"customerId":"a\\u0000b","items":[{"sku":"A-1","quantity":1,"unitPrice":1}]}', "application/json", 400, "customerId must not contain the NUL character"],
          ["NUL in a sku", () => withItem({ sku: "A\u0000" }), "application/json", 400, "items[0].sku must not contain the NUL character"],
          ["lone high surrogate in customerId", () => '{"customerId":"\\ud800","items":[{"sku":"A-1","quantity":1,"unitPrice":1}]}', "application/json", 400, "customerId must not contain a lone surrogate"],
          ["lone low surrogate in a sku", () => withItem({ sku: "x\udc00" }), "application/json", 400, "items[0].sku must not contain a lone surrogate"],
          // not an order
          ["empty customerId", () => order(""), "application/json", 400, "customerId must not be empty"],
          ["numeric customerId", () => JSON.stringify({ customerId: 7, items: [item] }), "application/json", 400, "customerId must be a string"],
          ["no items", () => JSON.stringify({ customerId: "c-1" }), "application/json", 400, "items must be a non-empty array"],
          ["empty items", () => JSON.stringify({ customerId: "c-1", items: [] }), "application/json", 400, "items must be a non-empty array"],
          ["an item that is not an object", () => JSON.stringify({ customerId: "c-1", items: [1] }), "application/json", 400, "items[0] must be an object"],
          ["quantity 0", () => withItem({ quantity: 0 }), "application/json", 400, "items[0].quantity must be a positive integer"],
          ["fractional quantity", () => withItem({ quantity: 1.5 }), "application/json", 400, "items[0].quantity must be a positive integer"],
          ["quantity as text", () => withItem({ quantity: "1" }), "application/json", 400, "items[0].quantity must be a positive integer"],
          ["negative unitPrice", () => withItem({ unitPrice: -1 }), "application/json", 400, "items[0].unitPrice must be a number of at least 0"],
          ["total of 0", () => withItem({ unitPrice: 0 }), "application/json", 400, "must be above 0"],
          ["total overflowing to Infinity", () => withItem({ quantity: Number.MAX_SAFE_INTEGER, unitPrice: 1e300 }), "application/json", 400, "too large to be a number"],
          ["every problem at once", () => JSON.stringify({ customerId: "", items: [{ sku: "", quantity: 0, unitPrice: -1 }] }), "application/json", 400, "customerId must not be empty; items[0].sku must not be empty; items[0].quantity"],
          ["an array", () => "[]", "application/json", 400, "the body must be a JSON object"],
          ["null", () => "null", "application/json", 400, "the body must be valid JSON"],
          ["a string", () => '"order"', "application/json", 400, "the body must be valid JSON"],
          // express.json reads an empty body as {}
          ["an empty body", () => "", "application/json", 400, "customerId must be a string; items must be a non-empty array"],
          // not JSON
          ["malformed JSON", () => '{"customerId":', "application/json", 400, "the body must be valid JSON"],
          ["invalid UTF-8", () => Uint8Array.from([...new TextEncoder().encode('{"customerId":"'), 0xff, 0xfe, ...new TextEncoder().encode('"}')]), "application/json", 400, "UTF-8"],
          // too large: with content-length, and chunked without one
          ["2 MiB with content-length", () => order("x".repeat(twoMiB)), "application/json", 413, "larger than the limit of 1mb"],
          ["2 MiB chunked", () => chunked(twoMiB), "application/json", 413, "larger than the limit of 1mb"],
          // not sent as JSON
          ["text/plain", () => order("c-1"), "text/plain", 415, "content-type: application/json"],
          ["no content-type", () => order("c-1"), null, 415, "content-type: application/json"],
          ["a form", () => "customerId=c-1", "application/x-www-form-urlencoded", 415, "content-type: application/json"],
          ["JSON in latin1", () => order("c-1"), "application/json; charset=iso-8859-1", 415, "UTF-8"],
          ["JSON in UTF-16", () => order("c-1"), "application/json; charset=utf-16", 415, "UTF-8"],
          ["an unknown content-encoding", () => order("c-1"), "application/json", 415, "content-encoding", { "content-encoding": "compress" }]
        ]
        for (const [name, body, contentType, status, message, headers] of cases) {
          const reply = yield* post(base, body(), contentType, headers)
          assert.strictEqual(reply.status, status, name)
          assert.include(reply.headers.get("content-type") ?? "", "application/json", name)
          assert.include(reply.json?.error, message, name)
        }
        assert.deepStrictEqual(yield* counts(), before)
        // none of them reached a backstop (a warning) or failed the server (an error)
        assert.deepStrictEqual(logs, [])
        // and the server still works
        assert.strictEqual((yield* post(base, order(uniqueCustomer("cust-after")))).status, 201)
      }))

    it.effect("a body limit of the caller's choice", () =>
      Effect.gen(function*() {
        const { base } = yield* serve({ bodyLimit: 100 })
        assert.strictEqual((yield* post(base, order("c-1"))).status, 201)
        const refused = yield* post(base, order("x".repeat(100)))
        assert.strictEqual(refused.status, 413)
        assert.include(refused.json.error, "the limit of 100 bytes")
      }))
  })

  describe("GET", () => {
    it.effect("/orders/:id: 400 for a non-UUID, 404 for an unknown order; an unknown route is a JSON 404", () =>
      Effect.gen(function*() {
        const { base, logs } = yield* serve()
        const bad = yield* request(`${base}/orders/not-a-uuid`)
        assert.deepStrictEqual([bad.status, bad.json], [400, { error: "the order id must be a UUID" }])
        const unknown = yield* request(`${base}/orders/${randomUUID()}`)
        assert.deepStrictEqual([unknown.status, unknown.json], [404, { error: "not found" }])
        const malformed = yield* request(`${base}/orders/%E0%A4%A`)
        assert.strictEqual(malformed.status, 400)
        const route = yield* request(`${base}/nothing-here`)
        assert.deepStrictEqual([route.status, route.json], [404, { error: "not found" }])
        assert.deepStrictEqual(logs, [])
      }))

    it.effect("/healthz: 200 with the relay's counters", () =>
      Effect.gen(function*() {
        const { relay } = yield* Harness
        const { base } = yield* serve({ relayStats: relay.stats })
        const health = yield* request(`${base}/healthz`)
        assert.strictEqual(health.status, 200)
        assert.strictEqual(health.json.status, "ok")
        assert.isNumber(health.json.relay.completed)
      }))
  })

  describe("backstops and server failures", () => {
    it.effect("an event publish refuses (InvalidEvent) rolls the order back and is the client's 400/413, logged as a warning", () =>
      Effect.gen(function*() {
        const { db } = yield* Harness
        // bypassing parseOrder: the driver stores a lone surrogate in text as U+FFFD, publish refuses it in the payload
        const customerId = uniqueCustomer("cust-backstop")
        const error = yield* Effect.promise(() =>
          placeOrder(db, { customerId: `${customerId}\ud800`, items: [{ sku: "A-1", quantity: 1, unitPrice: 1 }] }).then(
            () => assert.fail("expected a rejection"),
            (e: unknown) => e
          )
        )
        assert.instanceOf(error, InvalidEvent)
        assert.strictEqual((error as InvalidEvent).reason, "NotSerializable")
        assert.deepStrictEqual(httpError(error), { status: 400, message: `invalid order: ${(error as InvalidEvent).message}`, log: "warn" })
        const stored = yield* Effect.promise(() => db("orders").where("customer_id", "like", `${customerId}%`).count({ n: "*" }))
        assert.strictEqual(Number(stored[0]!.n), 0)

        // over the outbox's payload limit, through HTTP
        const { base, logs } = yield* serve({ maxEventBytes: 200 })
        const large = uniqueCustomer("cust-large")
        const reply = yield* post(base, JSON.stringify({ customerId: large, items: [{ sku: "S".repeat(300), quantity: 1, unitPrice: 1 }] }))
        assert.strictEqual(reply.status, 413)
        assert.include(reply.json.error, "the order is too large")
        assert.deepStrictEqual(yield* counts(large), { orders: 0, outbox: 0 })
        assert.deepStrictEqual(logs.map((l) => l.level), ["warn"])
      }))

    it.effect("a failing outbox store is a logged 500 that says nothing of the internals; the order is rolled back", () =>
      Effect.gen(function*() {
        const { base, logs } = yield* serve({ outboxTable: "no_such_outbox" })
        const customerId = uniqueCustomer("cust-store")
        const reply = yield* post(base, order(customerId))
        assert.deepStrictEqual([reply.status, reply.json], [500, { error: "internal error" }])
        assert.deepStrictEqual(yield* counts(customerId), { orders: 0, outbox: 0 })
        assert.strictEqual(logs.length, 1)
        assert.strictEqual(logs[0]!.level, "error")
        assert.instanceOf(logs[0]!.fields.error, StoreError)
        assert.include((logs[0]!.fields.error as StoreError).message, "42P01")
      }))

    it.effect("an unreachable database is a logged 503 with Retry-After, and /healthz says 503", () =>
      Effect.gen(function*() {
        const unreachable = yield* connect("postgres://postgres@127.0.0.1:1/none", true)
        const { base, logs } = yield* serve({}, unreachable)
        const reply = yield* post(base, order("c-1"))
        assert.deepStrictEqual([reply.status, reply.json], [503, { error: "service unavailable, try again" }])
        assert.strictEqual(reply.headers.get("retry-after"), "1")
        const health = yield* request(`${base}/healthz`)
        assert.strictEqual(health.status, 503)
        assert.deepStrictEqual(logs.map((l) => l.level), ["error", "error"])
      }))
  })

  describe("main.ts", () => {
    const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))
    const mainPath = fileURLToPath(new URL("../src/main.ts", import.meta.url))

    /** `node --import tsx main.ts` with `env`; its output so far, a way to wait for a line, and its exit. */
    const startMain = (env: Record<string, string | undefined>) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@outbox/source", mainPath], {
            cwd: repoRoot,
            env: { ...process.env, ...env },
            stdio: ["ignore", "pipe", "pipe"]
          })
          const output = { stdout: "", stderr: "" }
          child.stdout.on("data", (chunk: Buffer) => (output.stdout += chunk.toString()))
          child.stderr.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()))
          const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
          const waitFor = async (pattern: RegExp, timeoutMs = 30_000) => {
            for (let waited = 0; waited < timeoutMs; waited += 25) {
              const match = pattern.exec(output.stdout)
              if (match !== null) return match
              if (child.exitCode !== null) break
              await sleep(25)
            }
            throw new Error(`no line matching ${pattern} in:\n${output.stdout}\n${output.stderr}`)
          }
          return { child, output, exit, waitFor }
        }),
        ({ child, exit }) =>
          Effect.promise(() => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
            return exit
          })
      )

    it.effect("exits 1 with a clear message when DATABASE_URL is missing", () =>
      Effect.gen(function*() {
        const main = yield* startMain({ DATABASE_URL: "" })
        const code = yield* Effect.promise(() => main.exit)
        assert.strictEqual(code, 1)
        assert.include(main.output.stderr, "DATABASE_URL is required")
      }), 60_000)

    it.effect("serves, relays each event to its log, and stops cleanly on SIGTERM", () =>
      Effect.gen(function*() {
        // a database of its own, so that the relay of the harness does not take its events
        const database = yield* TestDatabase.freshDatabase(yield* TestDatabase.resolveServerUrl)
        const main = yield* startMain({ DATABASE_URL: database.url, PORT: "0", HOST: "127.0.0.1" })
        const listening = yield* Effect.promise(() => main.waitFor(/listening on (http:\/\/[^"\s]+)/))
        const base = listening[1]!
        const created = yield* post(base, order("cust-main"))
        assert.strictEqual(created.status, 201)
        const orderId = created.json.orderId as string
        const line = yield* Effect.promise(() => main.waitFor(new RegExp(`^.*"event relayed".*${orderId}.*$`, "m")))
        const logged = JSON.parse(line[0])
        assert.strictEqual(logged.eventType, "OrderCreated")
        assert.strictEqual(logged.payload.orderId, orderId)
        assert.isString(logged.id)
        assert.strictEqual((yield* post(base, "{", "application/json")).status, 400)
        main.child.kill("SIGTERM")
        const code = yield* Effect.promise(() => main.exit)
        assert.strictEqual(code, 0, main.output.stderr)
        assert.include(main.output.stdout, "orders service stopped")
        assert.strictEqual(main.output.stderr, "")
      }), 60_000)
  })
})
