import { assert, layer } from "@effect/vitest"
import * as WakeupListener from "@outbox/runtime/WakeupListener"
import * as WebhookSink from "@outbox/runtime/sinks/WebhookSink"
import * as HttpReceiver from "@outbox/testing/HttpReceiver"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as HttpServer from "effect/http/HttpServer"
import * as App from "../src/App.ts"

const Receiver = HttpReceiver.HttpReceiver

/** The example with the relay's defaults (poll 1 s, wake-up by LISTEN/NOTIFY on), relaying to a real webhook. */
const AppWithDefaults = Layer.unwrap(Effect.gen(function*() {
  const { url } = yield* Receiver
  return App.layer({ port: 0, sink: WebhookSink.layer({ url, timeout: "5 seconds" }) })
})).pipe(Layer.provideMerge(Receiver.layer), Layer.provideMerge(TestDatabase.layer))

const postOrder = (customerId: string) =>
  Effect.flatMap(Effect.service(HttpServer.HttpServer), (server) =>
    Effect.promise(() =>
      fetch(`${HttpServer.formatAddress(server.address)}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ customerId, items: [{ sku: "A", quantity: 1, unitPrice: 1 }] })
      }).then((res) => res.status)
    ))

layer(AppWithDefaults, { timeout: "60 seconds", excludeTestServices: true })("orders example with the defaults", (it) => {
  it.effect("a single order reaches the webhook within tens of milliseconds, not at the next 1 s poll", () =>
    Effect.gen(function*() {
      const { received } = yield* Receiver
      const listener = yield* WakeupListener.WakeupListener
      const latencies: Array<number> = []
      for (let i = 0; i < 5; i++) {
        // the relay idle, holding the gate: the next commit notifies. After a delivery, the listener decides within
        // its `hold` (10 ms) of the notification whether to keep the gate (a worker waits again) or let it go (the
        // one worker still busy with the webhook) and take it again: wait that out, then for the gate
        yield* Effect.sleep("30 millis")
        yield* listener.status.pipe(
          Effect.repeat({ until: (s) => s.armed, schedule: Schedule.spaced("2 millis") }),
          Effect.timeout("10 seconds")
        )
        const t0 = yield* Clock.currentTimeMillis
        assert.strictEqual(yield* postOrder(`latency-${i}`), 201)
        const event = yield* Queue.take(received).pipe(Effect.timeout("5 seconds"))
        latencies.push((yield* Clock.currentTimeMillis) - t0)
        assert.strictEqual(event.body.payload.customerId, `latency-${i}`)
      }
      latencies.sort((a, b) => a - b)
      yield* Effect.logInfo(`POST /orders → webhook (ms): ${latencies.join(", ")}`)
      // each order was announced by a notification (the gate was held at each commit); a claim may take an order
      // a moment before its notification is read: wait for all five
      yield* listener.status.pipe(
        Effect.repeat({ until: (s) => s.notifications >= 5, schedule: Schedule.spaced("2 millis") }),
        Effect.timeoutOption("5 seconds")
      )
      assert.isAtLeast((yield* listener.status).notifications, 5)
      // by the poll alone they would spread over 0-1000 ms (median ~500); woken, a few ms to a few tens
      // (HTTP in, one transaction, the wake-up, a claim, the webhook's HTTP round trip)
      assert.isBelow(latencies[2]!, 200)
      assert.isBelow(latencies[3]!, 500)
    }))
})
