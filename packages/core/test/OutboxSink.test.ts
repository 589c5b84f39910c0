import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"

class Greeting extends Context.Service<Greeting, { readonly word: string }>()("test/Greeting") {}
class Other extends Context.Service<Other, { readonly n: number }>()("test/Other") {}

const event: OutboxEvent = {
  id: 1n,
  trackingId: "00000000-0000-4000-8000-000000000001",
  aggregateType: "Order",
  aggregateId: "o-1",
  eventType: "OrderCreated",
  payload: {},
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(0),
  lockedUntil: new Date(30_000),
  lockToken: 7n
}

/** A sink whose handler records the greeting it sees, built with `word`. */
const greetingSink = (word: string) =>
  Effect.gen(function*() {
    const seen = yield* Ref.make<Array<string>>([])
    const sink = yield* OutboxSink.fromHandler(() =>
      Effect.flatMap(Effect.service(Greeting), (greeting) => Ref.update(seen, (a) => [...a, greeting.word]))
    ).pipe(Effect.provideService(Greeting, { word }))
    return { sink, seen }
  })

describe("OutboxSink.fromHandler", () => {
  it.effect("provides the handler's services where the caller has none of them", () =>
    Effect.gen(function*() {
      const { seen, sink } = yield* greetingSink("hello")
      yield* sink.deliver(event)
      yield* sink.deliver(event)
      assert.deepStrictEqual(yield* Ref.get(seen), ["hello", "hello"])
    }))

  it.effect("the services it was built with win over the caller's, as provideContext's do", () =>
    Effect.gen(function*() {
      const { seen, sink } = yield* greetingSink("hello")
      yield* sink.deliver(event).pipe(Effect.provideService(Greeting, { word: "caller" }))
      // and from a context that holds the same service already, then a different one again
      yield* sink.deliver(event).pipe(Effect.provideService(Greeting, { word: "caller" }), Effect.provideService(Other, { n: 1 }))
      assert.deepStrictEqual(yield* Ref.get(seen), ["hello", "hello"])
    }))

  it.effect("from a context that already holds its services (the relay's usual case), then from one that does not", () =>
    Effect.gen(function*() {
      const hello = { word: "hello" }
      const seen = yield* Ref.make<Array<string>>([])
      const sink = yield* OutboxSink.fromHandler(() =>
        Effect.flatMap(Effect.service(Greeting), (greeting) => Ref.update(seen, (a) => [...a, greeting.word]))
      ).pipe(Effect.provideService(Greeting, hello))
      yield* Effect.provideService(sink.deliver(event), Greeting, hello)
      yield* Effect.provideService(sink.deliver(event), Greeting, { word: "caller" })
      yield* Effect.provideService(sink.deliver(event), Greeting, hello)
      yield* sink.deliver(event)
      assert.deepStrictEqual(yield* Ref.get(seen), ["hello", "hello", "hello", "hello"])
    }))

  it.effect("a failure becomes a retryable DeliveryError; a permanent DeliveryError stays permanent", () =>
    Effect.gen(function*() {
      const transient = yield* OutboxSink.fromHandler(() => Effect.fail("boom"))
      const error = yield* Effect.flip(transient.deliver(event))
      assert.instanceOf(error, DeliveryError)
      assert.isTrue(error.retryable)
      assert.strictEqual(error.message, "boom")
      const permanent = yield* OutboxSink.fromHandler(() => Effect.fail(DeliveryError.permanent("bad payload")))
      const kept = yield* Effect.flip(permanent.deliver(event))
      assert.isFalse(kept.retryable)
    }))

  it.effect("interruption passes through as interruption", () =>
    Effect.gen(function*() {
      const sink = yield* OutboxSink.fromHandler(() => Effect.never)
      const fiber = yield* Effect.forkChild(sink.deliver(event))
      yield* Effect.yieldNow
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber)))
      assert.isTrue(Exit.hasInterrupts(exit))
    }))

  it.effect("layerHandler: the handler's services come from the layer's inputs", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make<Array<string>>([])
      const layer = OutboxSink.layerHandler(() =>
        Effect.flatMap(Effect.service(Greeting), (greeting) => Ref.update(seen, (a) => [...a, greeting.word]))
      ).pipe(Layer.provide(Layer.succeed(Greeting, { word: "from the layer" })))
      const sink = yield* Effect.service(OutboxSink.OutboxSink).pipe(Effect.provide(layer))
      yield* sink.deliver(event)
      assert.deepStrictEqual(yield* Ref.get(seen), ["from the layer"])
    }))
})
