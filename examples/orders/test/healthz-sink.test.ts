/**
 * `/healthz` reports the sink: the example relaying to a real Redis through
 * a TCP proxy answers 200 with the sink connected while the proxy forwards,
 * 503 with the sink not connected (and why) once it refuses, however
 * healthy the database, and 200 again when Redis is reachable again. A sink
 * without a connection of its own (the log) is named only.
 */
import { assert, describe, it } from "@effect/vitest"
import * as LogSink from "@outbox/runtime/sinks/LogSink"
import * as SinkUrl from "@outbox/runtime/sinks/SinkUrl"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as HttpServer from "effect/http/HttpServer"
import * as App from "../src/App.ts"

interface Healthz {
  readonly status: number
  readonly body: {
    readonly level: string
    readonly findings: ReadonlyArray<{ readonly name: string; readonly level: string; readonly message: string }>
    readonly sink: { readonly name: string; readonly connected?: boolean; readonly detail?: string }
  }
}

const healthz = Effect.flatMap(Effect.service(HttpServer.HttpServer), (server) =>
  Effect.promise(() =>
    fetch(`${HttpServer.formatAddress(server.address)}/healthz`).then((res) =>
      res.json().then((body): Healthz => ({ status: res.status, body: body as Healthz["body"] }))
    )
  ))

/** `/healthz` every 50 ms until `done` holds, for at most 15 s. */
const eventually = (done: (reply: Healthz) => boolean) =>
  healthz.pipe(
    Effect.repeat({ until: done, schedule: Schedule.spaced("50 millis") }),
    Effect.timeout("15 seconds")
  )

describe("orders example: /healthz reports the sink", () => {
  it.live("a Redis sink behind a proxy: 200 connected; refused: 503 not connected, with why; forwarding again: 200", () =>
    Effect.gen(function*() {
      const proxy = yield* TcpProxy.make({ port: 6379 })
      yield* Effect.gen(function*() {
        const up = yield* eventually((r) => r.body.sink.connected === true)
        assert.strictEqual(up.status, 200, JSON.stringify(up.body))
        assert.include(["OK", "WARN"], up.body.level)
        assert.deepStrictEqual(up.body.sink, { name: "redis", connected: true })
        assert.isFalse(up.body.findings.some((f) => f.name === "sink"))

        yield* proxy.setMode("refuse")
        const down = yield* eventually((r) => r.status === 503)
        assert.strictEqual(down.body.level, "CRITICAL")
        assert.strictEqual(down.body.sink.name, "redis")
        assert.strictEqual(down.body.sink.connected, false)
        assert.isString(down.body.sink.detail)
        assert.isAbove(down.body.sink.detail!.length, 0)
        // the database is fine: the sink alone makes it CRITICAL
        assert.deepStrictEqual(
          down.body.findings.filter((f) => f.level === "CRITICAL").map((f) => f.name),
          ["sink"]
        )

        yield* proxy.setMode("forward")
        const back = yield* eventually((r) => r.status === 200)
        assert.deepStrictEqual(back.body.sink, { name: "redis", connected: true })
        assert.include(["OK", "WARN"], back.body.level)
      }).pipe(
        Effect.provide(
          App.layer({ port: 0, sink: SinkUrl.layer(`redis://${proxy.address}`, { timeout: "2 seconds" }) }).pipe(
            Layer.provideMerge(TestDatabase.layer)
          )
        )
      )
    }).pipe(Effect.scoped), 60_000)

  it.live("a sink without a connection of its own (the log) is named only, and does not change the answer", () =>
    Effect.gen(function*() {
      const reply = yield* healthz
      assert.strictEqual(reply.status, 200, JSON.stringify(reply.body))
      assert.deepStrictEqual(reply.body.sink, { name: "log" })
    }).pipe(
      Effect.provide(App.layer({ port: 0, sink: LogSink.layer }).pipe(Layer.provideMerge(TestDatabase.layer))),
      Effect.scoped
    ), 60_000)
})
