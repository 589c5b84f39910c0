import { assert, describe, it } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as MemoryOutboxStore from "@outbox/testing/MemoryOutboxStore"
import { settle } from "@outbox/testing/RelayTestKit"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"
import * as Wakeup from "../src/Wakeup.ts"
import * as WakeupListener from "../src/WakeupListener.ts"

const publish = (aggregateId: string) =>
  Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId, eventType: "OrderCreated", payload: {} }))

/** Lets the relay's fibers run (the memory store does no I/O); virtual time stays put. */
const turn = Effect.andThen(settle, settle)

/**
 * A memory store counting its claims in `counter.claims`; `counter.onClaim`
 * runs inside each claim, after its rows were taken (to act "while it
 * claims").
 */
interface ClaimCounter {
  claims: number
  onClaim: ((store: OutboxStore["Service"]) => Effect.Effect<void>) | undefined
}

const countingStore = (counter: ClaimCounter) =>
  Layer.effect(
    OutboxStore,
    Effect.map(MemoryOutboxStore.make, (store) => {
      const counting: OutboxStore["Service"] = OutboxStore.of({
        ...store,
        claim: (options) =>
          Effect.tap(store.claim(options), () => {
            counter.claims++
            return counter.onClaim?.(counting) ?? Effect.void
          })
      })
      return counting
    })
  )

/** The relay's workers (no reaper) over the store in context, with `Wakeup` from context and a long poll. */
const relayLayer = (handler: (aggregateId: string) => Effect.Effect<void>, config: Partial<OutboxConfig.Options> = {}) =>
  Relay.layerWorkers.pipe(
    Layer.provide(OutboxSink.layerHandler((event) => handler(event.aggregateId))),
    Layer.provide(OutboxConfig.layer({ pollInterval: Duration.minutes(1), ...config }))
  )

describe("Wakeup", () => {
  it.effect("a wake-up between reading the generation and awaiting it is not lost", () =>
    Effect.gen(function*() {
      const wakeup = yield* Wakeup.make
      const seen = yield* wakeup.generation
      yield* wakeup.wake
      // returns at once: no virtual time passes, no further wake-up
      const done = yield* wakeup.await(seen).pipe(Effect.timeoutOption("1 millis"), Effect.forkChild)
      yield* Effect.yieldNow
      assert.strictEqual((yield* Fiber.join(done))._tag, "Some")
      // a waiter from the current generation waits for the next wake-up
      const later = yield* wakeup.await(yield* wakeup.generation).pipe(Effect.forkChild)
      yield* Effect.yieldNow
      assert.isUndefined(later.pollUnsafe())
      yield* wakeup.wake
      yield* Fiber.join(later)
    }))

  it.effect("counts idle workers and signals each change", () =>
    Effect.gen(function*() {
      const wakeup = yield* Wakeup.make
      const before = yield* wakeup.idleWorkers
      const change = yield* wakeup.awaitIdleChange(before.version).pipe(Effect.forkChild)
      yield* Effect.yieldNow
      assert.isUndefined(change.pollUnsafe())
      yield* wakeup.setIdle(true)
      yield* wakeup.setIdle(true)
      yield* Fiber.join(change)
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 2)
      yield* wakeup.setIdle(false)
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 1)
    }))

  it.effect("an idle worker claims at once when woken; without a wake-up it waits for the poll", () =>
    Effect.gen(function*() {
      const wakeup = yield* Wakeup.Wakeup
      const delivered = yield* Ref.make<Array<string>>([])
      yield* Layer.build(relayLayer((id) => Ref.update(delivered, (a) => [...a, id])))
      yield* turn
      yield* publish("woken")
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), [], "no claim before the wake-up or the poll")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["woken"])

      yield* publish("polled")
      yield* TestClock.adjust("59 seconds")
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["woken"])
      yield* TestClock.adjust("1 second")
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["woken", "polled"])
    }).pipe(Effect.scoped, Effect.provide([MemoryOutboxStore.layer, Wakeup.layer])))

  it.effect("a wake-up that comes while a worker claims (and finds nothing) sends it to claim again at once", () => {
    const counter: ClaimCounter = { claims: 0, onClaim: undefined }
    return Effect.gen(function*() {
      const wakeup = yield* Wakeup.Wakeup
      const delivered = yield* Ref.make<Array<string>>([])
      // the first (empty) claim: an event commits and its notification arrives after the claim read the table
      counter.onClaim = (store) => {
        counter.onClaim = undefined
        return Effect.andThen(publish("during-claim"), wakeup.wake).pipe(Effect.provideService(OutboxStore, store), Effect.orDie)
      }
      yield* Layer.build(relayLayer((id) => Ref.update(delivered, (a) => [...a, id])))
      yield* turn
      // delivered with no virtual time passing: the poll (1 minute) played no part
      assert.deepStrictEqual(yield* Ref.get(delivered), ["during-claim"])
      assert.strictEqual(counter.claims, 3, "the empty claim, the one the wake-up asked for, and the next empty one")
    }).pipe(Effect.scoped, Effect.provide([countingStore(counter), Wakeup.layer]))
  })

  it.effect("a wake-up sends one idle worker to claim, not every one; the others wait for the next", () => {
    const counter: ClaimCounter = { claims: 0, onClaim: undefined }
    return Effect.gen(function*() {
      const wakeup = yield* Wakeup.Wakeup
      const delivered = yield* Ref.make<Array<string>>([])
      yield* Layer.build(relayLayer((id) => Ref.update(delivered, (a) => [...a, id]), { concurrency: 3 }))
      yield* turn
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 3)
      const idleClaims = counter.claims
      yield* publish("one")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["one"])
      // the woken worker's claim (it took "one") and the one after it (nothing): the other two stayed waiting
      assert.strictEqual(counter.claims - idleClaims, 2)
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 3)
      // the next wake-up sends one of them again
      yield* wakeup.wake
      yield* turn
      assert.strictEqual(counter.claims - idleClaims, 3)
      // and the poll still ends every worker's wait
      yield* TestClock.adjust("1 minute")
      yield* turn
      assert.isAtLeast(counter.claims - idleClaims, 5)
    }).pipe(Effect.scoped, Effect.provide([countingStore(counter), Wakeup.layer]))
  })

  it.effect("while a listener listens, a short claim is not followed by one that finds nothing; the next wake-up claims", () => {
    const counter: ClaimCounter = { claims: 0, onClaim: undefined }
    return Effect.gen(function*() {
      const wakeup = yield* Wakeup.Wakeup
      yield* wakeup.setListening(true)
      const delivered = yield* Ref.make<Array<string>>([])
      yield* Layer.build(relayLayer((id) => Ref.update(delivered, (a) => [...a, id])))
      yield* turn
      const idleClaims = counter.claims
      yield* publish("one")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["one"])
      // the claim that took "one" (short of its limit), and no other: the worker waits again
      assert.strictEqual(counter.claims - idleClaims, 1)
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 1)
      // an event committed after it: its notification (or the listener's next arm) wakes the worker
      yield* publish("two")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["one", "two"])
      assert.strictEqual(counter.claims - idleClaims, 2)
      // the listener stops listening (its session dropped): short claims are followed by another at once again
      yield* wakeup.setListening(false)
      yield* publish("three")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["one", "two", "three"])
      assert.strictEqual(counter.claims - idleClaims, 4)
    }).pipe(Effect.scoped, Effect.provide([countingStore(counter), Wakeup.layer]))
  })

  it.effect("a burst of wake-ups while the worker is busy costs it one extra claim, not one per wake-up", () => {
    const counter: ClaimCounter = { claims: 0, onClaim: undefined }
    return Effect.gen(function*() {
      const wakeup = yield* Wakeup.Wakeup
      const release = yield* Deferred.make<void>()
      const delivered = yield* Ref.make<Array<string>>([])
      yield* Layer.build(
        relayLayer((id) => Effect.andThen(Ref.update(delivered, (a) => [...a, id]), Deferred.await(release)))
      )
      // (after the relay's: runs first) a failed assertion must not leave the handler blocking its shutdown
      yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined))
      yield* turn
      const idleClaims = counter.claims
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 1)

      yield* publish("slow")
      yield* wakeup.wake
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["slow"])
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 0, "a worker with work is not idle")
      for (let i = 0; i < 100; i++) yield* wakeup.wake
      const beforeRelease = counter.claims
      yield* Deferred.succeed(release, undefined)
      yield* turn
      // after the batch: the claim that finds nothing, and one more for the wake-ups that came meanwhile
      assert.strictEqual(counter.claims - beforeRelease, 2)
      assert.strictEqual((yield* wakeup.idleWorkers).workers, 1)
      assert.isAtLeast(beforeRelease, idleClaims + 1)
      // and then it waits: no claims until the next wake-up or poll
      yield* turn
      assert.strictEqual(counter.claims - beforeRelease, 2)
    }).pipe(Effect.scoped, Effect.provide([countingStore(counter), Wakeup.layer]))
  })

  it.effect("without a Wakeup in context the relay only polls", () =>
    Effect.gen(function*() {
      const delivered = yield* Ref.make<Array<string>>([])
      yield* Layer.build(relayLayer((id) => Ref.update(delivered, (a) => [...a, id])))
      yield* turn
      yield* publish("polled")
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), [])
      yield* TestClock.adjust("1 minute")
      yield* turn
      assert.deepStrictEqual(yield* Ref.get(delivered), ["polled"])
    }).pipe(Effect.scoped, Effect.provide(MemoryOutboxStore.layer)))

  it.effect("the listener without a PgClient (a SqlClient of another kind) is off and says why; the relay polls", () =>
    Effect.gen(function*() {
      const listener = yield* WakeupListener.WakeupListener
      const status = yield* listener.status
      assert.match(status.off ?? "", /no PgClient/)
      assert.isFalse(status.listening)
      assert.strictEqual(status.channel, "outbox_wakeup")
      const off = yield* Effect.service(WakeupListener.WakeupListener).pipe(
        Effect.provide(WakeupListener.layer({ enabled: false }).pipe(Layer.provide(Wakeup.layer)))
      )
      assert.strictEqual((yield* off.status).off, "OUTBOX_NOTIFY=false")
    }).pipe(Effect.provide(WakeupListener.layer().pipe(Layer.provideMerge(Wakeup.layer)))))
})
