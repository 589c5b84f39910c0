/**
 * Tenant-fair claiming through the relay (`OUTBOX_FAIRNESS=tenant`) with a
 * per-tenant in-flight cap (`OUTBOX_FAIRNESS_MAX_IN_FLIGHT`), on the memory
 * store and PostgreSQL under TestClock, with 4 workers and a sink that takes
 * 10 ms per event: the cap reaches every claim, a capped tenant never has
 * more events in the sink at once than its cap, and every event is
 * delivered; without the cap the same load has more (so the assertion can
 * fail); the same with per-key ordering (`OUTBOX_ORDERING=key`). And
 * fairness with per-key ordering, in both claim modes: each key in id order,
 * and another tenant's new event taken by the first claims, not behind a
 * backlog (as it is without fairness).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import type { EventInput, OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { StoreError } from "@outbox/core/OutboxError"
import { type ClaimOptions, type Fairness, OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advanceUntil } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

const event = (tenant: string, n: number): EventInput => ({
  aggregateType: "Order",
  aggregateId: `${tenant}-${n}`,
  eventType: "Placed",
  payload: { n },
  tenant
})

/** The store in context with its `claim` replaced by `claim(inner, options)`. */
const withClaim = (
  claim: (inner: OutboxStore["Service"], options: ClaimOptions) => Effect.Effect<ReadonlyArray<OutboxEvent>, StoreError>
) =>
  Layer.effect(
    OutboxStore,
    Effect.map(Effect.service(OutboxStore), (inner) => OutboxStore.of({ ...inner, claim: (options) => claim(inner, options) }))
  )

/** Relays 24 events of tenant `a` and 4 of `b`; returns the most of each tenant's events in the sink at once. */
const run = (maxInFlight: number | undefined, ordering: "none" | "key" = "none") =>
  Effect.gen(function*() {
    const inputs = [
      ...Array.from({ length: 24 }, (_, n) => event("a", n)),
      ...Array.from({ length: 4 }, (_, n) => event("b", n))
    ]
    yield* Outbox.transaction(Outbox.publishAll(inputs))
    const inSink = new Map<string, number>()
    const most = new Map<string, number>()
    let delivered = 0
    const sink = OutboxSink.layerHandler((e) =>
      Effect.gen(function*() {
        const tenant = e.tenant ?? ""
        const now = (inSink.get(tenant) ?? 0) + 1
        inSink.set(tenant, now)
        most.set(tenant, Math.max(most.get(tenant) ?? 0, now))
        yield* Effect.sleep("10 millis")
        inSink.set(tenant, inSink.get(tenant)! - 1)
        delivered++
      })
    )
    const asked: Array<Fairness | undefined> = []
    const store = withClaim((inner, options) => Effect.andThen(Effect.sync(() => asked.push(options.fairness)), inner.claim(options)))
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(sink),
        Layer.provide(store),
        Layer.provide(OutboxConfig.layer({
          pollInterval: Duration.millis(50),
          concurrency: 4,
          minBatchSize: 2,
          batchSize: 4,
          fairness: "tenant",
          fairnessMaxInFlight: maxInFlight,
          ordering
        }))
      ),
      scope
    )
    yield* advanceUntil(Effect.sync(() => delivered >= inputs.length), { step: "10 millis", max: "5 minutes" })
    yield* Scope.close(scope, Exit.void)
    return { most, asked, delivered }
  })

type Seen = { readonly key: string; readonly id: bigint; readonly tenant: string }

/**
 * Runs the relay with `config` and a sink taking 10 ms an event until it has
 * delivered `count` events: the deliveries in the order the sink saw them.
 */
const deliveries = (count: number, config: Partial<OutboxConfig.Options>) =>
  Effect.gen(function*() {
    const seen: Array<Seen> = []
    const sink = OutboxSink.layerHandler((e) =>
      Effect.andThen(
        Effect.sync(() => seen.push({ key: e.orderingKey ?? e.aggregateId, id: e.id, tenant: e.tenant ?? "" })),
        Effect.sleep("10 millis")
      )
    )
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(
      Relay.layer.pipe(Layer.provide(sink), Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(50), ...config }))),
      scope
    )
    yield* advanceUntil(Effect.sync(() => seen.length >= count), { step: "10 millis", max: "5 minutes" })
    // the sink records a delivery as it starts: the last one still sleeps, and the relay lets it finish
    const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
    yield* advanceUntil(Effect.sync(() => closing.pollUnsafe() !== undefined), { step: "10 millis", max: "1 minute" })
    return seen
  })

/**
 * Relays tenant `a`'s 80 events (2 on each of 40 keys, interleaved) and then
 * tenant `b`'s 2 (one key) with per-key ordering, 2 workers, claims of 4:
 * the deliveries in the order the sink saw them.
 */
const runOrdered = (fairness: "none" | "tenant", claimMode: "lease" | "transaction") =>
  Effect.gen(function*() {
    const inputs: ReadonlyArray<EventInput> = [
      ...Array.from({ length: 80 }, (_, n) => ({ ...event("a", n), aggregateId: `a-${n % 40}` })),
      ...Array.from({ length: 2 }, (_, n) => ({ ...event("b", n), aggregateId: "b-0" }))
    ]
    yield* Outbox.transaction(Outbox.publishAll(inputs))
    return yield* deliveries(inputs.length, { concurrency: 2, minBatchSize: 4, batchSize: 4, ordering: "key", fairness, claimMode })
  })

/**
 * Relays tenant `a`'s 20 events (one key each), then, in a later
 * transaction, tenant `b`'s one, with 1 worker and claims of 8: the
 * deliveries in the order the sink saw them. The first claim takes b's
 * event with a share of a's older ones.
 */
const runTurns = (ordering: "none" | "key", claimMode: "lease" | "transaction") =>
  Effect.gen(function*() {
    yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 20 }, (_, n) => event("a", n))))
    yield* Outbox.transaction(Outbox.publish(event("b", 0)))
    return yield* deliveries(21, { concurrency: 1, minBatchSize: 8, batchSize: 8, ordering, fairness: "tenant", claimMode })
  })

/**
 * Drains tenant `a`'s 400 events with 2 workers, fixed claims of 20 and a
 * sink taking 10 ms an event (a cycle of ~200 ms per worker): when each
 * claim started (on the clock), whether it came back full, and when the
 * last event was delivered.
 */
const runStaggered = (fairness: "none" | "tenant", claimMode: "lease" | "transaction") =>
  Effect.gen(function*() {
    yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 400 }, (_, n) => event("a", n))))
    let delivered = 0
    let drainedAt = 0
    const sink = OutboxSink.layerHandler(() =>
      Effect.andThen(
        Effect.sleep("10 millis"),
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            if (++delivered === 400) drainedAt = now
          }))
      )
    )
    const claims: Array<{ readonly at: number; readonly full: boolean }> = []
    const record = <A extends ReadonlyArray<unknown>, E, R>(claimed: Effect.Effect<A, E, R>) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) =>
        Effect.tap(claimed, (events) => Effect.sync(() => claims.push({ at, full: events.length >= 20 }))))
    const store = Layer.effect(
      OutboxStore,
      Effect.map(Effect.service(OutboxStore), (inner) =>
        OutboxStore.of({
          ...inner,
          claim: (options) => record(inner.claim(options)),
          claimInTransaction: (options, use) => record(inner.claimInTransaction(options, use))
        }))
    )
    const start = yield* Clock.currentTimeMillis
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(sink),
        Layer.provide(store),
        Layer.provide(OutboxConfig.layer({
          pollInterval: Duration.millis(50),
          concurrency: 2,
          minBatchSize: 20,
          batchSize: 20,
          fairness,
          claimMode
        }))
      ),
      scope
    )
    yield* advanceUntil(Effect.sync(() => delivered >= 400), { step: "10 millis", max: "5 minutes" })
    yield* Scope.close(scope, Exit.void)
    return { claims: claims.map((c) => ({ ...c, at: c.at - start })), drainMs: drainedAt - start }
  })

/**
 * Tenant `a`'s 40 events (one key each), 1 worker, claims of 2 to 8 (or
 * fixed at 8), a sink taking 10 ms an event; tenant `b`'s event is
 * committed while the first claim of 8 runs, after it read the table (in
 * the claim, once the store returned). The deliveries in order, and the ids
 * that claim took.
 */
const runCatchUp = (minBatchSize: number, failCatchUp = false) =>
  Effect.gen(function*() {
    yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 40 }, (_, n) => event("a", n))))
    const during: Array<bigint> = []
    let lastFull = false
    const store = withClaim((inner, options) =>
      failCatchUp && lastFull && options.limit === minBatchSize
        ? Effect.suspend(() => {
          lastFull = false
          return Effect.fail(new StoreError({ operation: "claim", message: "the catch-up claim fails", retryable: true }))
        })
        : Effect.tap(inner.claim(options), (events) => {
          lastFull = options.limit > minBatchSize && events.length === options.limit
          return options.limit === 8 && during.length === 0 && events.length === 8
            ? Effect.andThen(
              Effect.sync(() => during.push(...events.map((e) => e.id))),
              Outbox.transaction(Outbox.publish(event("b", 0))).pipe(Effect.provideService(OutboxStore, inner), Effect.orDie)
            )
            : Effect.void
        })
    )
    const start = yield* Clock.currentTimeMillis
    const seen = yield* deliveries(41, { concurrency: 1, minBatchSize, batchSize: 8, fairness: "tenant" }).pipe(
      Effect.provide(store)
    )
    return { seen, during, tookMs: (yield* Clock.currentTimeMillis) - start }
  })

/** Every key's deliveries in strictly increasing id order, each event once. */
const assertInKeyOrder = (seen: ReadonlyArray<{ readonly key: string; readonly id: bigint }>) => {
  const last = new Map<string, bigint>()
  for (const { id, key } of seen) {
    const before = last.get(key)
    assert.isTrue(before === undefined || before < id, `${key}: ${id} after ${before}`)
    last.set(key, id)
  }
  assert.strictEqual(new Set(seen.map((s) => s.id)).size, seen.length)
}

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay with OUTBOX_FAIRNESS=tenant under TestClock: with key order, and with an in-flight cap", (it) => {
  for (const store of RelayTestKit.stores) {
    describe(store.name, () => {
      for (const claimMode of ["lease", "transaction"] as const) {
      it.effect(`${claimMode} claims: each key in id order; tenant b's new event goes in the first claims, not behind a's backlog (as it does without fairness)`, () =>
        Effect.gen(function*() {
          const fair = yield* runOrdered("tenant", claimMode)
          assert.strictEqual(fair.length, 82)
          assertInKeyOrder(fair)
          // the first claims of the two workers (4 each) include b's first event
          const firstOfB = fair.findIndex((s) => s.tenant === "b")
          assert.isAtMost(firstOfB, 7)
          const unfair = yield* runOrdered("none", claimMode)
          assert.strictEqual(unfair.length, 82)
          assertInKeyOrder(unfair)
          // measured: 66-80th without fairness (3rd-6th with it); half of a's events is a margin no slicing luck crosses
          assert.isAbove(unfair.findIndex((s) => s.tenant === "b"), 40, "without fairness b waits behind a's heads")
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      for (const ordering of ["none", "key"] as const) {
      it.effect(`${claimMode} claims${ordering === "key" ? " with OUTBOX_ORDERING=key" : ""}: a batch is delivered in tenant turns, so b's new event goes second, not after a's share (last in id order)`, () =>
        Effect.gen(function*() {
          const seen = yield* runTurns(ordering, claimMode)
          assert.strictEqual(seen.length, 21)
          assertInKeyOrder(seen)
          assert.deepStrictEqual(seen.slice(0, 2).map((s) => s.tenant), ["a", "b"])
          // a's own events keep their id order
          const ofA = seen.filter((s) => s.tenant === "a").map((s) => s.id)
          assert.deepStrictEqual(ofA, [...ofA].sort((x, y) => (x < y ? -1 : 1)))
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }
      it.effect(`${claimMode} claims: 2 workers draining a backlog claim apart, not in step; the drain takes no longer`, () =>
        Effect.gen(function*() {
          const fair = yield* runStaggered("tenant", claimMode)
          const full = fair.claims.filter((c) => c.full).map((c) => c.at).sort((x, y) => x - y)
          assert.strictEqual(full.length, 20)
          // a cycle is 200 ms (20 events × 10 ms): after the first two claims (both at the start), one every ~100
          const gaps = full.slice(2).map((at, i) => at - full[i + 1]!)
          for (const gap of gaps) assert.isAtLeast(gap, 50, `claims at ${full.join(", ")}`)
          // without fairness the same workers claim in step: together, then 200 ms later together again
          const unfair = yield* runStaggered("none", claimMode)
          const inStep = unfair.claims.filter((c) => c.full).map((c) => c.at).sort((x, y) => x - y)
          assert.isTrue(inStep.slice(2).some((at, i) => at - inStep[i + 1]! < 50), `claims at ${inStep.join(", ")}`)
          // staggering costs one worker one wait of half a cycle (on the memory store, whose claims take no
          // time: under TestClock each PostgreSQL claim's real time moves the clock on too, and staggered
          // claims no longer overlap)
          if (store.name === "memory store") assert.isAtMost(fair.drainMs, unfair.drainMs + 110, `drained in ${fair.drainMs} ms, claims at ${JSON.stringify(fair.claims)}; without fairness ${unfair.drainMs}, ${JSON.stringify(unfair.claims)}`)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }
      it.effect("lease claims: tenant b's event committed during a full claim is taken by the small claim that follows it and delivered in that batch, not after it", () =>
        Effect.gen(function*() {
          const { during, seen } = yield* runCatchUp(2)
          assert.strictEqual(seen.length, 41)
          assert.strictEqual(during.length, 8)
          const b = seen.findIndex((s) => s.tenant === "b")
          const lastOfClaim = Math.max(...during.map((id) => seen.findIndex((s) => s.id === id)))
          assert.isBelow(b, lastOfClaim, `b delivered ${b}th, the claim's last event ${lastOfClaim}th`)
          // fixed claims (no smaller claim to make): b waits for the next claim, after that batch
          const fixed = yield* runCatchUp(8)
          assert.strictEqual(fixed.seen.length, 41)
          const bFixed = fixed.seen.findIndex((s) => s.tenant === "b")
          const lastFixed = Math.max(...fixed.during.map((id) => fixed.seen.findIndex((s) => s.id === id)))
          assert.isAbove(bFixed, lastFixed, `b delivered ${bFixed}th, the claim's last event ${lastFixed}th`)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      it.effect("lease claims: a shutdown during a catch-up claim releases the batch it follows (claimable at once)", () =>
        Effect.gen(function*() {
          yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 40 }, (_, n) => event("a", n))))
          let full = false
          let waiting = false
          // the first claim of 8 comes back full; the claim after it (the catch-up) never returns
          const store = withClaim((inner, options) =>
            full
              ? Effect.andThen(Effect.sync(() => (waiting = true)), Effect.never)
              : Effect.tap(inner.claim(options), (events) =>
                Effect.sync(() => {
                  full = options.limit === 8 && events.length === 8
                }))
          )
          const scope = yield* Scope.make()
          yield* Layer.buildWithScope(
            Relay.layer.pipe(
              Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
              Layer.provide(store),
              Layer.provide(OutboxConfig.layer({ pollInterval: Duration.millis(50), concurrency: 1, minBatchSize: 2, batchSize: 8, fairness: "tenant" }))
            ),
            scope
          )
          yield* advanceUntil(Effect.sync(() => waiting), { step: "10 millis", max: "1 minute" })
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
          yield* advanceUntil(Effect.sync(() => closing.pollUnsafe() !== undefined), { step: "10 millis", max: "1 minute" })
          // the claims of 2, 4 (and their catch-ups of 2) were delivered: 8 of a's 40; the batch of 8 was released
          const store0 = yield* OutboxStore
          const left = yield* store0.claim({ limit: 100, leaseDuration: Duration.seconds(30) })
          assert.strictEqual(left.length, 40 - 8)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      it.effect("lease claims: a failed catch-up claim leaves the batch it follows to be delivered at once (not at its leases' expiry)", () =>
        Effect.gen(function*() {
          const { seen, tookMs } = yield* runCatchUp(2, true)
          assert.strictEqual(seen.length, 41)
          assert.strictEqual(new Set(seen.map((s) => s.id)).size, 41)
          // 41 deliveries of 10 ms and a few polls; a batch left to its leases would wait 30 s (the default lease)
          assert.isBelow(tookMs, 5_000)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      // OUTBOX_FAIRNESS=tenant with an in-flight cap
      for (const ordering of ["none", "key"] as const) {
      it.effect(`${ordering === "key" ? "with OUTBOX_ORDERING=key: " : ""}every claim carries the cap; a capped tenant never has more than its cap in the sink; all delivered`, () =>
        Effect.gen(function*() {
          // ordered claims deliver fewer events at once (a claim's keys go one after the other): a cap of 1
          const cap = ordering === "key" ? 1 : 2
          const capped = yield* run(cap, ordering)
          assert.strictEqual(capped.delivered, 28)
          assert.isAbove(capped.asked.length, 0)
          for (const fairness of capped.asked) assert.strictEqual(fairness?.maxInFlight, cap)
          // the memory store claims atomically; two PostgreSQL claims at once may each see the same room
          // (documented: a tenant can exceed its cap by what one claim takes)
          if (store.name === "memory store") assert.isAtMost(capped.most.get("a") ?? 0, cap)
          else assert.isAtMost(capped.most.get("a") ?? 0, 2 * cap)
          const uncapped = yield* run(undefined, ordering)
          for (const fairness of uncapped.asked) assert.isUndefined(fairness?.maxInFlight)
          assert.isAbove(uncapped.most.get("a") ?? 0, cap, "without a cap, more of a's events were in the sink at once")
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }
    })
  }
})
