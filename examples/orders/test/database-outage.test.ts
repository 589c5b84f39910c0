/**
 * The service and the database going away, through a TCP proxy in front of
 * the real PostgreSQL (`TcpProxy`: "refuse" cuts every open connection and
 * closes new ones at once, as a stopped or restarting server does):
 *
 * - started while the database refuses, the service waits (the store's and
 *   the example's start-up retry with backoff) and comes up by itself once
 *   it answers: no process restart;
 * - refused while running: `/healthz` answers 503 with the reason, an order
 *   is answered 503 with `Retry-After` (not taken, not a 500), and once the
 *   database answers again `/healthz` is 200, orders are taken, and every
 *   order taken before, during or after is relayed by the same relay, its
 *   workers, listener and duties having survived the outage.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as HttpServer from "effect/http/HttpServer"
import * as App from "../src/App.ts"

interface Reply {
  readonly status: number
  readonly retryAfter: string | null
  readonly body: Record<string, unknown>
}

const request = (base: string, path: string, init?: RequestInit) =>
  Effect.promise(() =>
    fetch(`${base}${path}`, init).then((res) =>
      res.json().then((body): Reply => ({
        status: res.status,
        retryAfter: res.headers.get("retry-after"),
        body: body as Record<string, unknown>
      }))
    )
  )

const order = (base: string, customerId: string) =>
  request(base, "/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ customerId, items: [{ sku: "A-1", quantity: 1, unitPrice: 5 }] })
  })

/** `get` every 50 ms until `done` holds, for at most 20 s. */
const eventually = <A>(get: Effect.Effect<A>, done: (a: A) => boolean, what: string) =>
  get.pipe(
    Effect.repeat({ until: done, schedule: Schedule.spaced("50 millis") }),
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

describe("orders example: the database going away", () => {
  it.live("started while refused it comes up by itself; refused while running: /healthz 503, orders 503; back: 200, every order relayed", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.freshDatabase(yield* TestDatabase.serverUrlOrEmbedded)
      const target = new URL(database.url)
      const proxy = yield* TcpProxy.make({ host: target.hostname, port: Number(target.port || 5432) })
      yield* proxy.setMode("refuse")
      const viaProxy = new URL(database.url)
      viaProxy.hostname = "127.0.0.1"
      viaProxy.port = String(proxy.port)

      const delivered = new Map<string, number>()
      const sink = OutboxSink.layerHandler((event: OutboxEvent) =>
        Effect.sync(() => {
          const orderId = event.aggregateId
          delivered.set(orderId, (delivered.get(orderId) ?? 0) + 1)
        })
      )
      // A claim the cut interrupts may have committed on the server while its reply was lost: its events wait
      // out their lease, then the reaper's pass (every lease/2), before they are claimed again: up to 45 s with
      // the default lease of 30 s. CI once saw 9 of the 10 orders relayed and the 10th not within 20 s, which
      // such a claim explains. A 4 s lease keeps that recovery inside this test's 20 s.
      const service = App.layer({ port: 0, sink, config: { pollInterval: Duration.millis(50), leaseDuration: Duration.seconds(4) } }).pipe(
        Layer.provideMerge(PgClient.layer({ url: Redacted.make(viaProxy.toString()), maxConnections: 6 }))
      )

      // 1. started while the database refuses: still starting, retrying, after a second
      const starting = yield* Layer.build(service).pipe(Effect.forkScoped)
      yield* eventually(proxy.connections, (n) => n >= 3, "three connection attempts")
      assert.isUndefined(starting.pollUnsafe(), "the service must wait for the database, not exit")
      yield* proxy.setMode("forward")
      const context = yield* Fiber.join(starting)
      const server = Context.get(context, HttpServer.HttpServer)
      const base = HttpServer.formatAddress(server.address)

      const taken: Array<string> = []
      const take = (customerId: string) =>
        Effect.gen(function*() {
          const reply = yield* order(base, customerId)
          assert.strictEqual(reply.status, 201, JSON.stringify(reply.body))
          taken.push(reply.body.orderId as string)
        })
      for (let i = 0; i < 5; i++) yield* take(`before-${i}`)
      const ok = yield* eventually(request(base, "/healthz"), (r) => r.status === 200, "/healthz 200")
      assert.include(["OK", "WARN"], ok.body.level)

      // 2. refused while running
      yield* proxy.setMode("refuse")
      const down = yield* eventually(request(base, "/healthz"), (r) => r.status === 503, "/healthz 503")
      assert.strictEqual(down.body.level, "CRITICAL")
      assert.isString(down.body.error)
      const refused = yield* order(base, "during")
      assert.strictEqual(refused.status, 503, JSON.stringify(refused.body))
      assert.strictEqual(refused.retryAfter, "1")
      // the relay's workers, listener and duties keep failing and backing off meanwhile
      yield* Effect.sleep("1500 millis")

      // 3. back
      yield* proxy.setMode("forward")
      yield* eventually(request(base, "/healthz"), (r) => r.status === 200, "/healthz 200 again")
      for (let i = 0; i < 5; i++) yield* take(`after-${i}`)
      yield* eventually(
        Effect.sync(() => taken.every((id) => delivered.has(id))),
        (all) => all,
        "every order taken relayed"
      )
      assert.strictEqual(taken.length, 10)
      // the refused order was not taken: no event of it reached the sink
      assert.strictEqual(delivered.size, 10)
    }).pipe(Effect.scoped), 90_000)
})
