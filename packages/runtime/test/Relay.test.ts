import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError, StoreError } from "@outbox/core/OutboxError"
import { leaseOf, type OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advance, advanceUntil, eventually } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

// Each test gets an empty store: a new memory store, or the PostgreSQL store
// (driven by Effect's Clock, i.e. TestClock) over a truncated outbox.
const stores = RelayTestKit.stores

const startRelay = <E>(
  handler: (event: OutboxEvent) => Effect.Effect<void, E>,
  config: Partial<OutboxConfig.Options> = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(handler)),
        Layer.provide(OutboxConfig.layer({ leaseDuration: Duration.seconds(30), pollInterval: Duration.millis(100), ...config }))
      ),
      scope
    )
    return { scope, relay: Context.get(context, Relay.Relay) }
  })

const publishEvents = (...eventTypes: ReadonlyArray<string>) =>
  Outbox.transaction(
    Outbox.publishAll(eventTypes.map((eventType, i) => ({
      aggregateType: "Order",
      aggregateId: `order-${i}`,
      eventType,
      payload: { n: i }
    })))
  )

const statusOf = (id: bigint) =>
  Effect.flatMap(Effect.service(OutboxStore), (store) =>
    Effect.map(store.get(id), (row) => Option.getOrThrow(row)))

/**
 * The store in context, whose first `failures` claims fail with a StoreError;
 * with `times`, the (TestClock) time of every claim is recorded there.
 */
const flakyClaims = (failures: number, times?: Array<number>) =>
  Layer.effect(
    OutboxStore,
    Effect.map(Effect.service(OutboxStore), (store) => {
      let left = failures
      return OutboxStore.of({
        ...store,
        claim: (options) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            times?.push(now)
            return left-- > 0
              ? Effect.fail(new StoreError({ operation: "claim", message: "connection refused", retryable: true }))
              : store.claim(options)
          })
      })
    })
  )

/** A logger keeping every line's level and text. */
const captureLogs = (lines: Array<{ readonly level: string; readonly text: string }>) =>
  Logger.layer([Logger.make((options) => {
    const message = options.message
    lines.push({ level: options.logLevel, text: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
  })])

/** A retry policy without jitter, so the progression can be asserted exactly. */
const doubling: RetryPolicy.Policy = Schedule.exponential("1 second").pipe(Schedule.setInputType<RetryPolicy.FailedAttempt>())

// The shared database is built outside the test services (its pool must not
// wait on TestClock when it closes); each test runs under its own TestClock.
layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "60 seconds",
  excludeTestServices: true
})("Relay under TestClock", (it) => {
  for (const store of stores) {
    describe(store.name, () => {
      it.effect("heartbeat keeps the lease of a long handler; it is delivered once", () =>
        Effect.gen(function*() {
          const release = yield* Deferred.make<void>()
          const deliveries = yield* Ref.make(0)
          const [event] = yield* publishEvents("OrderCreated")
          const { relay, scope } = yield* startRelay(() =>
            Effect.andThen(Ref.update(deliveries, (n) => n + 1), Deferred.await(release))
          )
          yield* advanceUntil(Effect.map(Ref.get(deliveries), (n) => n === 1))
          const before = yield* statusOf(event!.id)
          assert.strictEqual(before.status, "PROCESSING")

          // four lease lengths pass while the handler runs
          yield* advance("120 seconds", "5 seconds")
          const during = yield* statusOf(event!.id)
          assert.strictEqual(during.status, "PROCESSING")
          assert.strictEqual(during.lockToken, before.lockToken)
          assert.isTrue(during.lockedUntil!.getTime() >= before.lockedUntil!.getTime() + 90_000)
          assert.strictEqual((yield* relay.stats).reaped, 0)

          yield* Deferred.succeed(release, undefined)
          yield* eventually(Effect.map(statusOf(event!.id), (r) => r.status === "COMPLETED"))
          assert.strictEqual(yield* Ref.get(deliveries), 1)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("a lease a renewal finds lost mid-batch is skipped: never delivered, completed or released by this worker", () =>
        Effect.gen(function*() {
          const outbox = yield* OutboxStore
          const release = yield* Deferred.make<void>()
          const delivered = yield* Ref.make<Array<string>>([])
          const [first, second, third] = yield* publishEvents("A", "B", "C")
          const { relay, scope } = yield* startRelay((event) =>
            Effect.andThen(
              Ref.update(delivered, (a) => [...a, event.eventType]),
              event.eventType === "A" ? Deferred.await(release) : Effect.void
            )
          )
          yield* advanceUntil(Effect.map(Ref.get(delivered), (a) => a.length === 1))
          // while A's handler runs, C's lease is taken from the relay: released and claimed by someone else
          const held = yield* statusOf(third!.id)
          yield* outbox.release([{ id: held.id, createdAt: held.createdAt, lockToken: held.lockToken! }])
          const [stolen] = yield* outbox.claim({ limit: 1, leaseDuration: Duration.minutes(10) })
          assert.strictEqual(stolen!.id, third!.id)
          // the next heartbeat (lease/3) finds it lost
          yield* advanceUntil(Effect.map(relay.stats, (s) => s.leaseLost === 1), { step: "1 second" })
          yield* Deferred.succeed(release, undefined)
          yield* eventually(Effect.map(relay.stats, (s) => s.completed === 2))
          assert.deepStrictEqual(yield* Ref.get(delivered), ["A", "B"])
          assert.strictEqual((yield* statusOf(first!.id)).status, "COMPLETED")
          assert.strictEqual((yield* statusOf(second!.id)).status, "COMPLETED")
          const after = yield* statusOf(third!.id)
          assert.strictEqual(after.status, "PROCESSING")
          assert.strictEqual(after.lockToken, stolen!.lockToken)
          yield* Scope.close(scope, Exit.void)
          // shutting down releases nothing it does not hold
          assert.strictEqual((yield* relay.stats).released, 0)
          assert.strictEqual((yield* statusOf(third!.id)).lockToken, stolen!.lockToken)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("a stopped worker's lease is reaped after expiry and redelivered; its late complete is fenced", () =>
        Effect.gen(function*() {
          const outbox = yield* OutboxStore
          const deliveredAt = yield* Ref.make<Array<number>>([])
          const [event] = yield* publishEvents("OrderCreated")
          // a worker claims the event and then stops (crashed: no heartbeat, no complete)
          const stale = yield* outbox.claim({ limit: 10, leaseDuration: Duration.seconds(30) })
          assert.strictEqual(stale.length, 1)

          const { relay, scope } = yield* startRelay(() =>
            Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(deliveredAt, (a) => [...a, now]))
          )
          yield* advance("29 seconds")
          assert.deepStrictEqual(yield* Ref.get(deliveredAt), [])
          assert.strictEqual((yield* statusOf(event!.id)).status, "PROCESSING")

          yield* advanceUntil(Effect.map(Ref.get(deliveredAt), (a) => a.length === 1), { step: "1 second" })
          assert.isAtLeast((yield* Ref.get(deliveredAt))[0]!, 30_000)
          yield* eventually(Effect.map(statusOf(event!.id), (r) => r.status === "COMPLETED"))
          assert.strictEqual((yield* relay.stats).reaped, 1)

          const late = yield* Effect.flip(outbox.complete([leaseOf(stale[0]!)]))
          assert.strictEqual(late._tag, "LeaseLost")
          if (late._tag === "LeaseLost") assert.deepStrictEqual(late.eventIds, [event!.id])
          assert.strictEqual((yield* statusOf(event!.id)).status, "COMPLETED")
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("failed attempts back off by the retry policy, then dead-letter after max retries", () =>
        Effect.gen(function*() {
          const attempts = yield* Ref.make<Array<number>>([])
          const [event] = yield* Outbox.transaction(Outbox.publishAll([{
            aggregateType: "Order",
            aggregateId: "o-1",
            eventType: "OrderCreated",
            payload: {},
            maxRetries: 3
          }]))
          const { relay, scope } = yield* startRelay(
            () =>
              Effect.flatMap(Clock.currentTimeMillis, (now) =>
                Effect.andThen(
                  Ref.update(attempts, (a) => [...a, now]),
                  Effect.fail(new Error("downstream unavailable"))
                )),
            { retryPolicy: doubling }
          )
          yield* advanceUntil(Effect.map(Ref.get(attempts), (a) => a.length === 1))
          yield* eventually(Effect.map(statusOf(event!.id), (r) => r.status === "FAILED"))
          const failed = yield* statusOf(event!.id)
          assert.strictEqual(failed.retryCount, 1)
          assert.strictEqual(failed.lastError, "downstream unavailable")
          assert.isNull(failed.lockToken)

          yield* advanceUntil(Effect.map(statusOf(event!.id), (r) => r.status === "DEAD_LETTER"), { max: "1 minute" })
          const times = yield* Ref.get(attempts)
          // 1 attempt + 3 retries, 1 s, 2 s and 4 s apart: never earlier, and less than half a backoff later
          // (a poll interval and a step, plus what the virtual clock moves while a PostgreSQL round trip is in
          // flight on a loaded machine: up to 400 ms seen); a wrong policy (constant, or twice as long) fails
          assert.strictEqual(times.length, 4)
          const gaps = times.slice(1).map((t, i) => t - times[i]!)
          for (const [i, expected] of [1000, 2000, 4000].entries()) {
            assert.isAtLeast(gaps[i]!, expected)
            assert.isBelow(gaps[i]!, expected * 1.5)
          }
          const dead = yield* statusOf(event!.id)
          assert.strictEqual(dead.retryCount, 4)
          const stats = yield* relay.stats
          assert.strictEqual(stats.retried, 3)
          assert.strictEqual(stats.deadLettered, 1)
          // nothing more happens to a dead letter
          yield* advance("1 minute", "5 seconds")
          assert.strictEqual((yield* Ref.get(attempts)).length, 4)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("a poison event is dead-lettered at once and does not block the others", () =>
        Effect.gen(function*() {
          const delivered = yield* Ref.make<Array<string>>([])
          const [poison, good1, good2] = yield* publishEvents("Poison", "OrderCreated", "OrderCreated")
          const { scope } = yield* startRelay((event) =>
            event.eventType === "Poison"
              ? Effect.fail(DeliveryError.permanent("cannot parse payload"))
              : Ref.update(delivered, (a) => [...a, event.trackingId])
          )
          yield* advanceUntil(Effect.map(Ref.get(delivered), (a) => a.length === 2))
          yield* eventually(Effect.map(statusOf(poison!.id), (r) => r.status === "DEAD_LETTER"))
          const dead = yield* statusOf(poison!.id)
          assert.strictEqual(dead.retryCount, 1)
          assert.strictEqual(dead.lastError, "cannot parse payload")
          assert.deepStrictEqual(yield* Ref.get(delivered), [good1!.trackingId, good2!.trackingId])
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("a failing iteration (store error, handler defect) is logged and the loop goes on", () =>
        Effect.gen(function*() {
          const delivered = yield* Ref.make<Array<number>>([])
          const [event] = yield* publishEvents("OrderCreated")
          const { relay, scope } = yield* startRelay(
            () =>
              Effect.flatMap(Ref.updateAndGet(delivered, (a) => [...a, a.length]), (a) =>
                // the first delivery dies with a defect, the second succeeds
                a.length === 1 ? Effect.die(new Error("handler bug")) : Effect.void),
            { retryPolicy: doubling }
          )
          yield* advanceUntil(Effect.map(statusOf(event!.id), (r) => r.status === "COMPLETED"), { max: "1 minute" })
          assert.strictEqual((yield* Ref.get(delivered)).length, 2)
          const stats = yield* relay.stats
          assert.strictEqual(stats.retried, 1)
          assert.strictEqual(stats.completed, 1)
          yield* Scope.close(scope, Exit.void)
        }).pipe(Effect.provide(flakyClaims(3)), Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("failed claims: the worker backs off (100 ms doubling, ±20 %, at most 5 s), not the poll interval; logs the first failure, then 2, 4, 8 in a row, then the recovery", () => {
        const times: Array<number> = []
        const lines: Array<{ readonly level: string; readonly text: string }> = []
        return Effect.gen(function*() {
          const delivered = yield* Ref.make(0)
          yield* publishEvents("OrderCreated")
          const { scope } = yield* startRelay(() => Ref.update(delivered, (n) => n + 1), {
            concurrency: 1,
            pollInterval: Duration.minutes(10)
          })
          yield* advanceUntil(Effect.map(Ref.get(delivered), (n) => n === 1), { step: "50 millis", max: "1 minute" })
          yield* Scope.close(scope, Exit.void)

          // 10 failed claims, then the one that delivered
          assert.isAtLeast(times.length, 11)
          for (let n = 1; n <= 10; n++) {
            const gap = times[n]! - times[n - 1]!
            const expected = Math.min(100 * 2 ** (n - 1), 5000)
            assert.isAtLeast(gap, Math.floor(expected * 0.8), `wait after failure ${n}`)
            // + one 50 ms step of the virtual clock
            assert.isAtMost(gap, Math.ceil(expected * 1.2) + 50, `wait after failure ${n}`)
          }
          const relayLines = lines.filter((l) => l.text.startsWith("relay iteration"))
          assert.deepStrictEqual(relayLines.map((l) => l.level), ["Warn", "Warn", "Warn", "Warn", "Info"], JSON.stringify(relayLines))
          assert.match(relayLines[0]!.text, /^relay iteration failed; retrying with backoff/)
          assert.match(relayLines[1]!.text, /still failing: 2 in a row over .*connection refused/)
          assert.match(relayLines[3]!.text, /still failing: 8 in a row/)
          assert.match(relayLines[4]!.text, /succeed again after 10 failed in a row/)
        }).pipe(
          Effect.provide(flakyClaims(10, times)),
          Effect.provide(store.layer),
          Effect.provide(captureLogs(lines)),
          Effect.provide(TestClock.layer())
        )
      })

      it.effect("a worker whose leases run short (renewals failing, a pause) delivers none of the rest of its batch and releases it", () =>
        Effect.gen(function*() {
          const [e1, e2, e3] = yield* publishEvents("A", "B", "C")
          const delivered = yield* Ref.make<Array<readonly [bigint, bigint]>>([])
          // the first delivery takes 25 s of a 30 s lease while every renewal fails: at the second event only
          // 5 s of the lease are left, less than a heartbeat period (10 s)
          const { relay, scope } = yield* startRelay(
            (event) =>
              Effect.andThen(
                Ref.update(delivered, (a) => [...a, [event.id, event.lockToken] as const]),
                event.eventType === "A" ? Effect.sleep("25 seconds") : Effect.void
              ),
            { batchSize: 3, minBatchSize: 3, concurrency: 1, pollInterval: Duration.minutes(10) }
          )
          yield* advanceUntil(
            Effect.map(Effect.all([statusOf(e1!.id), statusOf(e2!.id), statusOf(e3!.id)]), (rows) => rows.every((r) => r.status === "COMPLETED")),
            { step: "1 second", max: "2 minutes" }
          )
          const log = yield* Ref.get(delivered)
          // under the first claim's lease only the first event went out; the other two were released
          // undelivered (no attempt counted) and delivered under a new claim
          const [first] = log
          assert.deepStrictEqual(first, [e1!.id, first![1]])
          assert.deepStrictEqual(log.filter(([, token]) => token === first![1]).map(([id]) => id), [e1!.id])
          assert.deepStrictEqual(log.slice(1).map(([id]) => id), [e2!.id, e3!.id])
          assert.strictEqual((yield* relay.stats).released, 2)
          for (const e of [e2!, e3!]) assert.strictEqual((yield* statusOf(e.id)).retryCount, 0)
          yield* Scope.close(scope, Exit.void)
        }).pipe(
          Effect.provide(Layer.effect(
            OutboxStore,
            Effect.map(Effect.service(OutboxStore), (store) =>
              OutboxStore.of({
                ...store,
                renew: () => Effect.fail(new StoreError({ operation: "renew", message: "connection lost", retryable: true }))
              }))
          )),
          Effect.provide(store.layer),
          Effect.provide(TestClock.layer())
        ))

      it.effect("graceful shutdown: stops claiming, lets in-flight finish within the deadline, releases the rest", () =>
        Effect.gen(function*() {
          const gate = yield* Deferred.make<void>()
          const started = yield* Ref.make<Array<bigint>>([])
          const [e1, e2, e3] = yield* publishEvents("A", "B", "C")
          const { relay, scope } = yield* startRelay(
            (event) =>
              Effect.andThen(
                Ref.update(started, (a) => [...a, event.id]),
                event.eventType === "A" ? Deferred.await(gate) : Effect.never
              ),
            { batchSize: 2, shutdownTimeout: Duration.seconds(5) }
          )
          yield* advanceUntil(Effect.map(Ref.get(started), (a) => a.length === 1))
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
          // the first handler finishes after shutdown began; the second hangs past the deadline
          yield* Deferred.succeed(gate, undefined)
          yield* advanceUntil(Effect.map(Ref.get(started), (a) => a.length === 2))
          yield* advance("6 seconds", "500 millis")
          yield* Fiber.join(closing)

          assert.strictEqual((yield* statusOf(e1!.id)).status, "COMPLETED")
          const released = yield* statusOf(e2!.id)
          assert.strictEqual(released.status, "PENDING")
          assert.strictEqual(released.retryCount, 0)
          assert.isNull(released.lockToken)
          // the third event was never claimed: claiming stopped
          assert.strictEqual((yield* statusOf(e3!.id)).status, "PENDING")
          assert.deepStrictEqual(yield* Ref.get(started), [e1!.id, e2!.id])
          const stats = yield* relay.stats
          assert.strictEqual(stats.completed, 1)
          assert.strictEqual(stats.released, 1)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
    })
  }
})
