import { assert, describe, layer } from "@effect/vitest"
import * as LogSink from "@outbox/runtime/sinks/LogSink"
import * as WebhookSink from "@outbox/runtime/sinks/WebhookSink"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as SqlClient from "effect/sql/SqlClient"
import * as Net from "node:net"
import * as App from "../src/App.ts"

/** A real webhook receiver on a free loopback port (`@outbox/testing/HttpReceiver`). */
const Receiver = HttpReceiver.HttpReceiver

/** The example's layers, on a free port, against a fresh database, relaying to the receiver. */
const AppUnderTest = Layer.unwrap(Effect.gen(function*() {
  const { url } = yield* Receiver
  return App.layer({
    port: 0,
    sink: WebhookSink.layer({ url, timeout: "5 seconds" }),
    config: { pollInterval: Duration.millis(20) }
  })
})).pipe(Layer.provideMerge(Receiver.layer), Layer.provideMerge(TestDatabase.layer))

const baseUrl = Effect.map(Effect.service(HttpServer.HttpServer), (server) => HttpServer.formatAddress(server.address))

interface Reply {
  readonly status: number
  readonly json: any
}

/** The status and the JSON body (`undefined` when the answer is not JSON, e.g. an empty 413 from the server). */
const request = (path: string, init?: RequestInit) =>
  Effect.flatMap(baseUrl, (base) =>
    Effect.promise(() =>
      fetch(`${base}${path}`, init).then((res) =>
        (res.headers.get("content-type") ?? "").includes("json")
          ? res.json().then((json): Reply => ({ status: res.status, json }))
          : res.text().then((): Reply => ({ status: res.status, json: undefined }))
      )
    ))

/** `POST /orders` with `body`, sent as `contentType` (`null`: no content-type header). */
const post = (body: string | Uint8Array | Blob | ReadableStream<Uint8Array>, contentType: string | null = "application/json") =>
  request("/orders", {
    method: "POST",
    ...(contentType === null ? {} : { headers: { "content-type": contentType } }),
    body,
    // a ReadableStream body (sent chunked, without content-length) needs it
    duplex: "half"
  } as RequestInit)

/** A valid order whose customerId is `customerId`. */
const order = (customerId: string) => JSON.stringify({ customerId, items: [{ sku: "A", quantity: 1, unitPrice: 1 }] })

/** `size` bytes of body in 64 KiB chunks, as a stream (sent with `transfer-encoding: chunked`, no content-length). */
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

/**
 * Writes `head` and then `body` on a raw connection to the app, never ending
 * the request, and succeeds with the status of the first answer. That the app
 * answers at all proves that it did not wait for (or buffer) the rest of the
 * body.
 */
const rawStatus = (head: string, body: ReadonlyArray<Uint8Array>) =>
  Effect.flatMap(baseUrl, (base) =>
    Effect.callback<number, Error>((resume) => {
      const url = new URL(base)
      const socket = Net.connect(Number(url.port), url.hostname)
      let received = ""
      socket.on("data", (data) => {
        received += data.toString("latin1")
        const status = /^HTTP\/1\.1 (\d{3})/.exec(received)
        if (status === null) return
        resume(Effect.succeed(Number(status[1])))
        socket.destroy()
      })
      socket.on("error", (error) => resume(Effect.fail(error)))
      socket.on("close", () => resume(Effect.fail(new Error(`closed without an answer: ${JSON.stringify(received)}`))))
      socket.write(head)
      for (const chunk of body) socket.write(chunk)
      return Effect.sync(() => socket.destroy())
    })).pipe(Effect.timeout("10 seconds"))

const MiB = 1024 * 1024

/** The `error` of a JSON response built by the app (not sent). */
const errorOf = (response: HttpServerResponse.HttpServerResponse): string =>
  response.body._tag === "Uint8Array" ? JSON.parse(new TextDecoder().decode(response.body.body)).error : ""

const count = (table: "orders" | "outbox") =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

layer(AppUnderTest, { timeout: "60 seconds", excludeTestServices: true })("orders example", (it) => {
  describe("POST /orders", () => {
    it.effect("writes the order and relays OrderCreated to the webhook", () =>
      Effect.gen(function*() {
        const { received } = yield* Receiver
        const created = yield* post(
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }] })
        )
        assert.strictEqual(created.status, 201)
        const orderId: string = created.json.orderId
        assert.match(orderId, /^[0-9a-f-]{36}$/)

        const event = yield* Queue.take(received).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(event.body.eventType, "OrderCreated")
        assert.strictEqual(event.body.aggregateType, "Order")
        assert.strictEqual(event.body.aggregateId, orderId)
        assert.deepStrictEqual(event.body.payload, {
          orderId,
          customerId: "c-1",
          items: [{ sku: "A", quantity: 2, unitPrice: 9.5 }],
          total: 19
        })
        assert.strictEqual(event.headers["idempotency-key"], event.body.trackingId)

        const read = yield* request(`/orders/${orderId}`)
        assert.strictEqual(read.status, 200)
        assert.strictEqual(read.json.orderId, orderId)
        assert.strictEqual(read.json.customerId, "c-1")
        assert.deepStrictEqual(read.json.items, [{ sku: "A", quantity: 2, unitPrice: 9.5 }])
        assert.strictEqual(read.json.total, 19)
      }))

    it.effect("answers 400 with a message on bad input, and writes nothing", () =>
      Effect.gen(function*() {
        const orders = yield* count("orders")
        const events = yield* count("outbox")

        const notJson = yield* post("{ nope")
        assert.strictEqual(notJson.status, 400)
        assert.include(notJson.json.error, "JSON")
        const noItems = yield* post(JSON.stringify({ customerId: "c-1", items: [] }))
        assert.strictEqual(noItems.status, 400)
        assert.include(noItems.json.error, "items")
        const negative = yield* post(
          JSON.stringify({ customerId: "c-1", items: [{ sku: "A", quantity: -1, unitPrice: 1 }] })
        )
        assert.strictEqual(negative.status, 400)
        assert.include(negative.json.error, "quantity")

        assert.strictEqual(yield* count("orders"), orders)
        assert.strictEqual(yield* count("outbox"), events)
      }))
  })

  describe("POST /orders with hostile input", () => {
    /** The counts of `orders` and `outbox` rows. */
    const counts = Effect.all([count("orders"), count("outbox")])

    it.effect("400 naming the field for text PostgreSQL cannot store (NUL, lone surrogates), and writes nothing", () =>
      Effect.gen(function*() {
        const before = yield* counts
        const cases: ReadonlyArray<readonly [string, unknown, string]> = [
          ["customerId", { customerId: "c\u0000-1", items: [{ sku: "A", quantity: 1, unitPrice: 1 }] }, "NUL"],
          ["customerId", { customerId: "\u0000", items: [{ sku: "A", quantity: 1, unitPrice: 1 }] }, "NUL"],
          ["customerId", { customerId: "c-\ud800", items: [{ sku: "A", quantity: 1, unitPrice: 1 }] }, "surrogate"],
          ["customerId", { customerId: "\udc00c", items: [{ sku: "A", quantity: 1, unitPrice: 1 }] }, "surrogate"],
          ["sku", { customerId: "c-1", items: [{ sku: "A\u0000", quantity: 1, unitPrice: 1 }] }, "NUL"],
          ["sku", {
            customerId: "c-1",
            items: [{ sku: "A", quantity: 1, unitPrice: 1 }, { sku: "\ud83d", quantity: 1, unitPrice: 1 }]
          }, "surrogate"]
        ]
        for (const [field, body, problem] of cases) {
          // JSON.stringify escapes a lone surrogate as \ud800 and NUL as \u0000: the body is valid JSON and UTF-8
          const reply = yield* post(JSON.stringify(body))
          assert.strictEqual(reply.status, 400, JSON.stringify(body))
          assert.include(reply.json.error, field, JSON.stringify(body))
          assert.include(reply.json.error, problem, JSON.stringify(body))
        }
        // the same characters raw in the body: NUL and a CESU-8 style surrogate are not valid UTF-8 JSON
        const rawNul = yield* post(new Uint8Array([...Buffer.from('{"customerId":"c'), 0, ...Buffer.from('","items":[{"sku":"A","quantity":1,"unitPrice":1}]}')]))
        assert.strictEqual(rawNul.status, 400)
        const rawSurrogate = yield* post(new Uint8Array([...Buffer.from('{"customerId":"c'), 0xed, 0xa0, 0x80, ...Buffer.from('","items":[{"sku":"A","quantity":1,"unitPrice":1}]}')]))
        assert.strictEqual(rawSurrogate.status, 400)
        assert.deepStrictEqual(yield* counts, before)
      }))

    it.effect("accepts what PostgreSQL can store: surrogate pairs, other control characters; drops unknown keys", () =>
      Effect.gen(function*() {
        const emoji = yield* post(order("c-\ud83d\ude00-\u0001\u001f"))
        assert.strictEqual(emoji.status, 201)
        const read = yield* request(`/orders/${emoji.json.orderId}`)
        assert.strictEqual(read.json.customerId, "c-😀-\u0001\u001f")
        // unknown keys are not stored, so their content cannot reach PostgreSQL
        const extra = yield* post(JSON.stringify({
          customerId: "c-extra",
          "note\u0000": "\ud800",
          items: [{ sku: "A", quantity: 1, unitPrice: 1, "\u0000": "\u0000", note: "\udfff" }]
        }))
        assert.strictEqual(extra.status, 201)
        const stored = yield* request(`/orders/${extra.json.orderId}`)
        assert.deepStrictEqual(stored.json.items, [{ sku: "A", quantity: 1, unitPrice: 1 }])
      }))

    it.effect("400 for a total no number can hold (quantity × unitPrice overflows), and writes nothing", () =>
      Effect.gen(function*() {
        const before = yield* counts
        const huge = yield* post(JSON.stringify({
          customerId: "c-1",
          items: [{ sku: "A", quantity: Number.MAX_SAFE_INTEGER, unitPrice: Number.MAX_VALUE }]
        }))
        assert.strictEqual(huge.status, 400)
        // refused by the request schema (before any SQL), not by the outbox's JSON check
        assert.include(huge.json.error, "total")
        assert.include(huge.json.error, `at ["items"]`)
        const infinite = yield* post('{"customerId":"c-1","items":[{"sku":"A","quantity":1,"unitPrice":1e400}]}')
        assert.strictEqual(infinite.status, 400)
        assert.include(infinite.json.error, "unitPrice")
        assert.deepStrictEqual(yield* counts, before)
      }))

    it.effect("400 for malformed JSON or a non-object body, 415 for a body that is not JSON", () =>
      Effect.gen(function*() {
        const before = yield* counts
        for (const body of ["{ nope", "", "null", "[]", "\"c-1\"", "{\"customerId\":\"c-1\",\"items\":[", "{}}"]) {
          const reply = yield* post(body)
          assert.strictEqual(reply.status, 400, body)
          assert.isString(reply.json.error, body)
        }
        const text = yield* post(order("c-1"), "text/plain")
        assert.strictEqual(text.status, 415)
        assert.include(text.json.error, "application/json")
        const form = yield* post("customerId=c-1", "application/x-www-form-urlencoded")
        assert.strictEqual(form.status, 415)
        const none = yield* post(new Blob([order("c-1")]), null)
        assert.strictEqual(none.status, 415)
        // parameters and case do not matter
        const charset = yield* post(order("c-charset"), "Application/JSON; charset=utf-8")
        assert.strictEqual(charset.status, 201)
        assert.deepStrictEqual(yield* counts, [before[0] + 1, before[1] + 1])
      }))

    it.effect("413 above the body limit (1 MiB by default), with or without content-length, and writes nothing", () =>
      Effect.gen(function*() {
        const before = yield* counts
        // 20 MB with a content-length
        const big = yield* post(order("c".repeat(20 * MiB)))
        assert.strictEqual(big.status, 413)
        assert.include(big.json.error, "1 MiB")
        // 20 MB chunked: no content-length to look at, the limit stops the read
        const stream = yield* post(chunked(20 * MiB))
        assert.strictEqual(stream.status, 413)
        // one byte over the limit
        const over = yield* post(order("c".repeat(MiB)))
        assert.strictEqual(over.status, 413)
        // just under the limit is fine
        const under = yield* post(order("c".repeat(MiB - 200)))
        assert.strictEqual(under.status, 201)
        assert.deepStrictEqual(yield* counts, [before[0] + 1, before[1] + 1])
      }))

    it.effect("413 without reading the body: answered before the client has sent it", () =>
      Effect.gen(function*() {
        const chunk = new Uint8Array(64 * 1024).fill(0x20)
        // announces 20 MB and sends 64 KiB of it: the content-length alone gets the answer
        const announced = yield* rawStatus(
          "POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n" +
            `content-length: ${20 * MiB}\r\n\r\n`,
          [chunk]
        )
        assert.strictEqual(announced, 413)
        // chunked, 2 MiB sent and never finished: the app stops reading at the limit
        const chunkHead = new TextEncoder().encode(`${chunk.length.toString(16)}\r\n`)
        const crlf = new TextEncoder().encode("\r\n")
        const endless = yield* rawStatus(
          "POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
          Array.from({ length: 32 }, () => [chunkHead, chunk, crlf]).flat()
        )
        assert.strictEqual(endless, 413)
      }))

    it.effect("backstop: PostgreSQL refusing the client's text (22021, 22P05, 22P02) is a 400, never a 500", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const before = yield* counts
        const items = [{ sku: "A", quantity: 1, unitPrice: 1 }] as const
        // the request schema is bypassed, so these reach PostgreSQL: the INSERT of the order (text, then jsonb) ...
        const nul = yield* App.answerFailures(App.placeOrder({ customerId: "c\u0000", items }))
        assert.strictEqual(nul.status, 400)
        assert.include(errorOf(nul), "PostgreSQL cannot store")
        const surrogateSku = yield* App.answerFailures(
          App.placeOrder({ customerId: "c", items: [{ sku: "\ud800", quantity: 1, unitPrice: 1 }] })
        )
        assert.strictEqual(surrogateSku.status, 400)
        // ... and the outbox's INSERT of the event (the order's text column took U+FFFD): both rolled back
        const surrogateCustomer = yield* App.answerFailures(App.placeOrder({ customerId: "c\udc00", items }))
        assert.strictEqual(surrogateCustomer.status, 400)
        // an event over the outbox's payload limit (1 MiB) is the client's too: 413
        const huge = yield* App.answerFailures(App.placeOrder({ customerId: "c".repeat(MiB + 1), items }))
        assert.strictEqual(huge.status, 413)
        assert.include(errorOf(huge), "too large")
        assert.deepStrictEqual(yield* counts, before)
        // each SQLSTATE on its own
        const statements = [
          sql`SELECT ${"a\u0000b"}::text`, // 22021 invalid byte sequence
          sql`SELECT ${'"\\u0000"'}::jsonb`, // 22P05 untranslatable character
          sql`SELECT ${'"\\ud800"'}::jsonb` // 22P02 invalid json (lone surrogate)
        ]
        for (const statement of statements) {
          const response = yield* App.answerFailures(Effect.as(statement, HttpServerResponse.empty()))
          assert.strictEqual(response.status, 400)
        }
        // any other database error is still a 500
        const other = yield* App.answerFailures(Effect.as(sql`SELECT * FROM no_such_table`, HttpServerResponse.empty()))
        assert.strictEqual(other.status, 500)
      }))
  })

  describe("GET /metrics and GET /healthz", () => {
    it.effect("/metrics is Prometheus text with the outbox catalog; /healthz answers the health level", () =>
      Effect.gen(function*() {
        const { received } = yield* Receiver
        const created = yield* post(JSON.stringify({ customerId: "c-2", items: [{ sku: "B", quantity: 1, unitPrice: 3 }] }))
        assert.strictEqual(created.status, 201)
        yield* Queue.take(received).pipe(Effect.timeout("20 seconds"))
        const base = yield* baseUrl
        const metrics = yield* Effect.promise(() =>
          fetch(`${base}/metrics`).then((res) => res.text().then((text) => ({ status: res.status, type: res.headers.get("content-type"), text })))
        )
        assert.strictEqual(metrics.status, 200)
        assert.match(metrics.type ?? "", /^text\/plain/)
        assert.match(metrics.text, /^outbox_events_published_total\{aggregate_type="Order",event_type="OrderCreated"\} [1-9]/m)
        assert.match(metrics.text, /^# TYPE outbox_pending_events gauge$/m)
        assert.match(metrics.text, /^outbox_handler_duration_seconds_bucket\{event_type="OrderCreated",outcome="completed",le="\+Inf"\} [1-9]/m)

        const health = yield* request("/healthz")
        assert.include(["OK", "WARN"], health.json.level, JSON.stringify(health.json))
        assert.strictEqual(health.status, 200)
        assert.isArray(health.json.findings)
      }))
  })

  describe("GET /orders/:id", () => {
    it.effect("404 for an unknown order, 400 for a malformed id", () =>
      Effect.gen(function*() {
        const missing = yield* request("/orders/00000000-0000-4000-8000-000000000000")
        assert.strictEqual(missing.status, 404)
        const malformed = yield* request("/orders/nope")
        assert.strictEqual(malformed.status, 400)
      }))
  })
})

/** The same app with a 2 KiB body limit (`Options.maxBodySize`; `MAX_BODY_SIZE` in `main.ts`). */
const SmallLimitApp = App.layer({ port: 0, sink: LogSink.layer, maxBodySize: "2 KiB" }).pipe(
  Layer.provideMerge(TestDatabase.layer)
)

layer(SmallLimitApp, { timeout: "60 seconds", excludeTestServices: true })("orders example, maxBodySize: 2 KiB", (it) => {
  it.effect("413 above the configured limit, with the limit in the message; 201 below it", () =>
    Effect.gen(function*() {
      const over = yield* post(order("c".repeat(2048)))
      assert.strictEqual(over.status, 413)
      assert.include(over.json.error, "2 KiB")
      const streamed = yield* post(chunked(4096))
      assert.strictEqual(streamed.status, 413)
      assert.strictEqual(yield* count("orders"), 0)
      const under = yield* post(order("c".repeat(1900)))
      assert.strictEqual(under.status, 201)
      assert.strictEqual(yield* count("orders"), 1)
    }))
})
