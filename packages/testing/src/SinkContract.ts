/**
 * The `OutboxSink` contract: one conformance suite that every sink must pass
 * (`WebhookSink`, `OutboxSink.fromHandler` / `layerHandler`, `LogSink`), so
 * that the relay can rely on what a sink does with an event whatever is
 * behind it:
 *
 * - `name` is the sink's short name (logs, spans, metrics);
 * - a successful delivery succeeds, and the far side sees the event once and
 *   intact (its tracking id, the key receivers deduplicate on, and its
 *   payload);
 * - a failure worth retrying is a `DeliveryError` with `retryable: true`, a
 *   failure no retry can fix one with `retryable: false` (dead-lettered at
 *   once), both with a message (the dead letter's reason); a failure does not
 *   stick to the next delivery;
 * - interrupting a delivery in flight (shutdown, a lost lease) interrupts
 *   it: it never turns into a `DeliveryError`, which would count an attempt;
 * - a sink with a timeout fails a delivery that hangs past it with a
 *   retryable `DeliveryError`;
 * - several events handed over at once (`OutboxSink.deliverAll`: the sink's
 *   `deliverBatch`, or `deliver` one after the other) each reach the far
 *   side once, and each failed one has a `DeliveryError` of its own.
 *
 * The sink under test comes with a {@link SinkProbe}: a way to make its far
 * side succeed, fail transiently, fail permanently or hang, and to see what
 * reached it. Two fault-injecting far sides ship here: {@link layerReceiver}
 * (a real HTTP receiver answering 204 / 503 / 422 / never, for HTTP sinks)
 * and {@link layerHandler} (a handler doing the same, for handler sinks).
 * Every test builds the sink anew and runs under `TestClock`: a timeout is
 * reached with `TestClock.adjust`, never by real waiting.
 *
 * **Example**
 *
 * ```ts
 * SinkContract.suite("webhook", {
 *   layer: SinkContract.layerReceiver((url) => WebhookSink.layer({ url, timeout: "5 seconds" })),
 *   name: "webhook",
 *   behaviours: SinkContract.allBehaviours,
 *   timeout: "5 seconds"
 * })
 * SinkContract.suite("handler", {
 *   layer: SinkContract.layerHandler((handler) => OutboxSink.layerHandler(handler)),
 *   name: "handler",
 *   behaviours: SinkContract.allBehaviours
 * })
 * ```
 *
 * @since 0.1.0
 */
import { assert, describe, it } from "@effect/vitest"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { deliverAll, OutboxSink } from "@outbox/core/OutboxSink"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as HttpReceiver from "./HttpReceiver.ts"
import * as RelayTestKit from "./RelayTestKit.ts"

/**
 * What the far side of the sink does with the next deliveries: accept them,
 * fail in a way worth retrying (an outage, a 503), fail in a way no retry
 * fixes (a rejected event, a 422), or never answer.
 *
 * @category models
 * @since 0.1.0
 */
export type Behaviour = "succeed" | "failTransiently" | "failPermanently" | "hang"

/**
 * Every behaviour, for a sink whose far side can do them all.
 *
 * @category constants
 * @since 0.1.0
 */
export const allBehaviours: ReadonlyArray<Behaviour> = ["succeed", "failTransiently", "failPermanently", "hang"]

/**
 * One delivery attempt as the far side saw it: the event's tracking id and
 * payload (`undefined` for a sink that does not pass the payload on, such as
 * `LogSink`).
 *
 * @category models
 * @since 0.1.0
 */
export interface Attempt {
  readonly trackingId: string
  readonly payload: unknown
}

/**
 * The test's handle on the sink's far side: `behave` sets what it does with
 * the next deliveries (initially `"succeed"`), `attempts` lists what reached
 * it, in arrival order, whatever the outcome.
 *
 * @category services
 * @since 0.1.0
 */
export class SinkProbe extends Context.Service<SinkProbe, {
  readonly behave: (behaviour: Behaviour) => Effect.Effect<void>
  readonly attempts: Effect.Effect<ReadonlyArray<Attempt>>
}>()("@outbox/testing/SinkContract/SinkProbe") {}

/**
 * A sink under test and what it claims to support.
 *
 * @category models
 * @since 0.1.0
 */
export interface Subject {
  /** The sink and its probe, built anew for every test. */
  readonly layer: Layer.Layer<OutboxSink | SinkProbe, unknown>
  /** The `name` the sink must report. */
  readonly name: string
  /** What its far side can be made to do: the tests of the others are left out (`LogSink`: only `"succeed"`). */
  readonly behaviours: ReadonlyArray<Behaviour>
  /** The sink's own delivery timeout, when it has one: a hung delivery must fail retryably once it passes. */
  readonly timeout?: Duration.Input | undefined
  /** Whether the far side receives the payload (default true); false checks only the tracking id. */
  readonly forwardsPayload?: boolean | undefined
}

/**
 * The typed failure of {@link layerHandler}'s handler when told to fail
 * transiently: an ordinary error, which a handler sink must treat as
 * retryable.
 *
 * @category errors
 * @since 0.1.0
 */
export class InjectedFault extends Schema.TaggedError<InjectedFault>("@outbox/testing/InjectedFault")("InjectedFault", {
  message: Schema.String
}) {}

/** The mutable far side shared by the fault-injecting sides: current behaviour and attempts seen. */
const makeState = () => {
  const state = { behaviour: "succeed" as Behaviour, attempts: [] as Array<Attempt> }
  const probe = SinkProbe.of({
    behave: (behaviour) => Effect.sync(() => void (state.behaviour = behaviour)),
    attempts: Effect.sync(() => [...state.attempts])
  })
  return { state, probe }
}

/**
 * A fault-injecting HTTP far side: a real receiver on a loopback port
 * (`HttpReceiver`) that answers 204, 503, 422 or never as its probe says,
 * and records each request as an attempt (by default the JSON body's
 * `trackingId` and `payload`, the webhook body). Closed with its scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeReceiver = (
  attempt: (request: HttpReceiver.Received) => Attempt = (request) => ({
    trackingId: request.body?.trackingId,
    payload: request.body?.payload
  })
): Effect.Effect<{ readonly url: string; readonly probe: SinkProbe["Service"] }, never, Scope.Scope> =>
  Effect.suspend(() => {
    const { probe, state } = makeState()
    return Effect.map(
    HttpReceiver.make((res, request) => {
      state.attempts.push(attempt(request))
      switch (state.behaviour) {
        case "succeed":
          return void res.writeHead(204).end()
        case "failTransiently":
          return void res.writeHead(503, { "content-type": "text/plain" }).end("injected outage")
        case "failPermanently":
          return void res.writeHead(422, { "content-type": "text/plain" }).end("injected rejection")
        case "hang":
          return
      }
    }),
    (receiver) => ({ url: receiver.url, probe })
  )
  })

/**
 * The sink `sink(url)` builds, pointed at a {@link makeReceiver} far side,
 * with its probe: the subject layer of an HTTP sink.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerReceiver = <E, R>(
  sink: (url: string) => Layer.Layer<OutboxSink, E, R>,
  attempt?: (request: HttpReceiver.Received) => Attempt
): Layer.Layer<OutboxSink | SinkProbe, E, R> =>
  Layer.unwrap(
    Effect.map(makeReceiver(attempt), ({ probe, url }) => Layer.merge(sink(url), Layer.succeed(SinkProbe, probe)))
  )

/**
 * A fault-injecting handler: it records each event as an attempt, then
 * succeeds, fails with {@link InjectedFault} (an ordinary error: transient),
 * fails with `DeliveryError.permanent`, or never completes, as its probe says.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeHandler = (): {
  readonly handler: (event: OutboxEvent) => Effect.Effect<void, InjectedFault | DeliveryError>
  readonly probe: SinkProbe["Service"]
} => {
  const { probe, state } = makeState()
  const handler = (event: OutboxEvent): Effect.Effect<void, InjectedFault | DeliveryError> =>
    Effect.suspend((): Effect.Effect<void, InjectedFault | DeliveryError> => {
      state.attempts.push({ trackingId: event.trackingId, payload: event.payload })
      switch (state.behaviour) {
        case "succeed":
          return Effect.void
        case "failTransiently":
          return Effect.fail(new InjectedFault({ message: "injected outage" }))
        case "failPermanently":
          return Effect.fail(DeliveryError.permanent("injected rejection"))
        case "hang":
          return Effect.never
      }
    })
  return { handler, probe }
}

/**
 * The sink `sink(handler)` builds over a {@link makeHandler} handler, with
 * its probe: the subject layer of a handler sink.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerHandler = <E, R>(
  sink: (handler: (event: OutboxEvent) => Effect.Effect<void, InjectedFault | DeliveryError>) => Layer.Layer<OutboxSink, E, R>
): Layer.Layer<OutboxSink | SinkProbe, E, R> =>
  Layer.unwrap(Effect.sync(() => {
    const { handler, probe } = makeHandler()
    return Layer.merge(sink(handler), Layer.succeed(SinkProbe, probe))
  }))

/** The contract's events: distinct tracking ids, payloads with nesting, unicode, null and big numbers. */
const eventAt = (n: number): OutboxEvent => ({
  id: BigInt(100 + n),
  lockToken: BigInt(7 + n),
  trackingId: `0b6d1e52-3f4c-4a8e-9d21-${String(n).padStart(12, "0")}`,
  aggregateType: "Order",
  aggregateId: `order-${n}`,
  eventType: "OrderPlaced",
  payload: { n, customer: { name: "Zoë Ñúñez", tags: ["vip", null] }, total: 12_345.67, note: "line\nbreak \"quoted\" 🚚" },
  metadata: { source: "sink-contract" },
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(Date.UTC(2026, 0, 15, 9, 0, n)),
  lockedUntil: new Date(Date.UTC(2026, 0, 15, 9, 0, 30 + n))
})

const deliver = (event: OutboxEvent) => Effect.flatMap(OutboxSink, (sink) => sink.deliver(event))

const attempts = Effect.flatMap(SinkProbe, (probe) => probe.attempts)

const behave = (behaviour: Behaviour) => Effect.flatMap(SinkProbe, (probe) => probe.behave(behaviour))

/** Starts delivering `event` in the background and waits until it has reached the far side. */
const inFlight = (event: OutboxEvent) =>
  Effect.gen(function*() {
    const before = (yield* attempts).length
    const fiber = yield* Effect.forkChild(deliver(event), { startImmediately: true })
    yield* RelayTestKit.eventually(Effect.map(attempts, (seen) => seen.length > before), {
      message: "the delivery never reached the far side"
    })
    return fiber
  })

type Body = Effect.Effect<void, unknown, OutboxSink | SinkProbe | Scope.Scope>

/**
 * Registers the contract suite for one sink: the tests that `subject`'s
 * behaviours (and timeout) make applicable.
 *
 * @category suites
 * @since 0.1.0
 */
export const suite = (title: string, subject: Subject): void => {
  describe(`OutboxSink contract (${title})`, () => {
    const supports = (behaviour: Behaviour) => subject.behaviours.includes(behaviour)
    const forwardsPayload = subject.forwardsPayload ?? true
    const expected = (event: OutboxEvent): Attempt => ({
      trackingId: event.trackingId,
      payload: forwardsPayload ? event.payload : undefined
    })
    const seen = Effect.map(attempts, (all) => all.map((a) => forwardsPayload ? a : { ...a, payload: undefined }))
    // `Layer.fresh`: a new sink and far side per test, never one memoized from an earlier test
    const layer = Layer.fresh(subject.layer)
    const test = (name: string, body: Body) => it.effect(name, () => Effect.provide(body, layer), 30_000)

    test(
      `reports its name ("${subject.name}")`,
      Effect.gen(function*() {
        const sink = yield* OutboxSink
        assert.strictEqual(sink.name, subject.name)
        assert.isAbove(sink.name.length, 0)
      })
    )

    if (supports("succeed")) {
      test(
        `a successful delivery succeeds; the far side sees each event once, intact (tracking id${forwardsPayload ? ", payload" : ""})`,
        Effect.gen(function*() {
          const [first, second] = [eventAt(1), eventAt(2)]
          yield* deliver(first)
          yield* deliver(second)
          assert.deepStrictEqual(yield* seen, [expected(first), expected(second)])
        })
      )

      test(
        "concurrent deliveries each reach the far side once",
        Effect.gen(function*() {
          const events = Array.from({ length: 8 }, (_, i) => eventAt(10 + i))
          yield* Effect.forEach(events, deliver, { concurrency: "unbounded", discard: true })
          const trackingIds = (yield* seen).map((a) => a.trackingId).sort()
          assert.deepStrictEqual(trackingIds, events.map((e) => e.trackingId).sort())
        })
      )
    }

    if (supports("succeed")) {
      test(
        "a batch (deliverBatch, or deliver one after the other) reaches the far side once per event, every outcome delivered",
        Effect.gen(function*() {
          const sink = yield* OutboxSink
          const events = Array.from({ length: 6 }, (_, i) => eventAt(30 + i))
          const outcomes = yield* deliverAll(sink, events)
          assert.deepStrictEqual(outcomes, events.map(() => undefined))
          assert.deepStrictEqual(
            [...(yield* seen)].sort((a, b) => a.trackingId.localeCompare(b.trackingId)),
            events.map(expected)
          )
        })
      )
    }

    const assertBatchFailure = (retryable: boolean) =>
      Effect.gen(function*() {
        const sink = yield* OutboxSink
        const events = [eventAt(40), eventAt(41)]
        const outcomes = yield* deliverAll(sink, events)
        assert.strictEqual(outcomes.length, events.length)
        for (const outcome of outcomes) {
          assert.instanceOf(outcome, DeliveryError, "a failed event of a batch is a DeliveryError")
          assert.strictEqual(outcome!.retryable, retryable)
          assert.isAbove(outcome!.message.length, 0)
        }
      })

    const assertFailure = (retryable: boolean) =>
      Effect.gen(function*() {
        const event = eventAt(3)
        const exit = yield* Effect.exit(deliver(event))
        assert.isTrue(Exit.isFailure(exit), "the delivery succeeded")
        const cause = (exit as Exit.Failure<void, DeliveryError>).cause
        assert.isFalse(Cause.hasDies(cause), `a defect, not a DeliveryError: ${Cause.pretty(cause)}`)
        const error = Cause.squash(cause)
        assert.instanceOf(error, DeliveryError)
        assert.strictEqual((error as DeliveryError).retryable, retryable)
        assert.isAbove((error as DeliveryError).message.length, 0, "a DeliveryError says why (the dead letter's reason)")
        assert.deepStrictEqual(yield* seen, [expected(event)])
      })

    if (supports("failTransiently")) {
      test(
        "a transient failure is a retryable DeliveryError with a message",
        Effect.andThen(behave("failTransiently"), assertFailure(true))
      )
      test(
        "in a batch, each transiently failing event is a retryable DeliveryError of its own",
        Effect.andThen(behave("failTransiently"), assertBatchFailure(true))
      )
    }

    if (supports("failPermanently")) {
      test(
        "a permanent failure is a non-retryable DeliveryError with a message (dead-lettered at once)",
        Effect.andThen(behave("failPermanently"), assertFailure(false))
      )
      test(
        "in a batch, each permanently failing event is a non-retryable DeliveryError of its own",
        Effect.andThen(behave("failPermanently"), assertBatchFailure(false))
      )
    }

    if (supports("succeed") && (supports("failTransiently") || supports("failPermanently"))) {
      test(
        "a failure does not stick: the next delivery succeeds",
        Effect.gen(function*() {
          yield* behave(supports("failTransiently") ? "failTransiently" : "failPermanently")
          yield* Effect.flip(deliver(eventAt(4)))
          yield* behave("succeed")
          yield* deliver(eventAt(5))
          assert.deepStrictEqual((yield* seen).map((a) => a.trackingId), [eventAt(4).trackingId, eventAt(5).trackingId])
        })
      )
    }

    if (supports("hang")) {
      test(
        "interrupting a delivery in flight interrupts it: no DeliveryError",
        Effect.gen(function*() {
          yield* behave("hang")
          const fiber = yield* inFlight(eventAt(6))
          yield* Fiber.interrupt(fiber)
          const exit = yield* Fiber.await(fiber)
          assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), `not an interruption: ${String(exit)}`)
        })
      )
    }

    if (supports("hang") && subject.timeout !== undefined) {
      const timeout = Duration.fromInputUnsafe(subject.timeout)
      test(
        `a delivery that hangs past the sink's timeout (${Duration.format(timeout)}) is a retryable DeliveryError`,
        Effect.gen(function*() {
          yield* behave("hang")
          const fiber = yield* inFlight(eventAt(7))
          yield* TestClock.adjust(Duration.subtract(timeout, Duration.millis(1)))
          assert.isUndefined(fiber.pollUnsafe(), "the delivery ended before its timeout")
          yield* TestClock.adjust(Duration.millis(1))
          yield* RelayTestKit.eventually(Effect.sync(() => fiber.pollUnsafe() !== undefined), {
            timeout: "5 seconds",
            message: "the delivery did not end at its timeout"
          })
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.instanceOf(error, DeliveryError)
          assert.isTrue(error.retryable)
          assert.isAbove(error.message.length, 0)
        })
      )
    }
  })
}
