import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"

interface Post {
  readonly path: string
  readonly body: string
}

/** A real OTLP/HTTP receiver on a free port, recording every POST. */
const receiver = Effect.acquireRelease(
  Effect.callback<{ readonly server: ReturnType<typeof createServer>; readonly posts: Array<Post> }>((resume) => {
    const posts: Array<Post> = []
    const server = createServer((req, res) => {
      let body = ""
      req.on("data", (chunk) => (body += chunk))
      req.on("end", () => {
        posts.push({ path: req.url ?? "", body })
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, posts })))
  }),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

describe("OTLP export", () => {
  it.live("OTEL_EXPORTER_OTLP_ENDPOINT switches on traces and metrics over OTLP/HTTP", () =>
    Effect.gen(function*() {
      const { posts, server } = yield* receiver
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      const config = ConfigProvider.layer(ConfigProvider.fromUnknown({
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
        OTEL_SERVICE_NAME: "outbox-otlp-test"
      }))
      // the layer's scope closes at the end: spans and metrics are flushed to the collector
      yield* Effect.scoped(
        Effect.gen(function*() {
          const context = yield* Layer.build(OutboxTelemetry.layerConfig.pipe(Layer.provide(config)))
          yield* Effect.gen(function*() {
            yield* Metric.update(OutboxTelemetry.eventsClaimed(), 3)
            yield* Effect.void.pipe(Effect.withSpan("otlp-probe-span"))
          }).pipe(Effect.provideContext(context))
        })
      )
      const traces = posts.filter((p) => p.path === "/v1/traces")
      const metrics = posts.filter((p) => p.path === "/v1/metrics")
      assert.isAtLeast(traces.length, 1, JSON.stringify(posts.map((p) => p.path)))
      assert.include(traces.map((p) => p.body).join(""), "otlp-probe-span")
      assert.include(traces.map((p) => p.body).join(""), "outbox-otlp-test")
      assert.isAtLeast(metrics.length, 1, JSON.stringify(posts.map((p) => p.path)))
      assert.include(metrics.map((p) => p.body).join(""), "outbox_events_claimed_total")
    }))
})
