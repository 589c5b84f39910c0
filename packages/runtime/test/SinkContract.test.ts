import * as OutboxSink from "@outbox/core/OutboxSink"
import * as SinkContract from "@outbox/testing/SinkContract"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as LogSink from "../src/sinks/LogSink.ts"
import * as WebhookSink from "../src/sinks/WebhookSink.ts"

// The webhook sink against a real HTTP receiver answering 204 / 503 / 422 / never; its timeout is
// reached with TestClock, so it can be as long as in production.
SinkContract.suite("WebhookSink", {
  layer: SinkContract.layerReceiver((url) => WebhookSink.layer({ url, timeout: "5 seconds" })),
  name: "webhook",
  behaviours: SinkContract.allBehaviours,
  timeout: "5 seconds"
})

// A handler sink has no timeout of its own (the relay's lease bounds it): no timeout test.
SinkContract.suite("OutboxSink.layerHandler", {
  layer: SinkContract.layerHandler((handler) => OutboxSink.layerHandler(handler)),
  name: "handler",
  behaviours: SinkContract.allBehaviours
})

SinkContract.suite("OutboxSink.fromHandler, named", {
  layer: SinkContract.layerHandler((handler) => Layer.effect(OutboxSink.OutboxSink, OutboxSink.fromHandler(handler, "orders"))),
  name: "orders",
  behaviours: SinkContract.allBehaviours
})

// LogSink always succeeds and logs the event's identity, not its payload: its far side is the log, each
// line annotated with the tracking id counting as one attempt.
const logSinkWithProbe = Layer.unwrap(Effect.sync(() => {
  const attempts: Array<SinkContract.Attempt> = []
  const capture = Logger.make((options) => {
    const trackingId = options.fiber.getRef(References.CurrentLogAnnotations).trackingId
    if (typeof trackingId === "string") attempts.push({ trackingId, payload: undefined })
  })
  const probe = SinkContract.SinkProbe.of({
    behave: (behaviour) => behaviour === "succeed" ? Effect.void : Effect.die(`LogSink cannot ${behaviour}`),
    attempts: Effect.sync(() => [...attempts])
  })
  return Layer.mergeAll(LogSink.layer, Layer.succeed(SinkContract.SinkProbe, probe), Logger.layer([capture]))
}))

SinkContract.suite("LogSink", {
  layer: logSinkWithProbe,
  name: "log",
  behaviours: ["succeed"],
  forwardsPayload: false
})
