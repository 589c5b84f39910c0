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
import type { EventInput } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { type Fairness, OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advanceUntil } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
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
    const store = Layer.effect(
      OutboxStore,
      Effect.map(Effect.service(OutboxStore), (inner) =>
        OutboxStore.of({
          ...inner,
          claim: (options) => Effect.andThen(Effect.sync(() => asked.push(options.fairness)), inner.claim(options))
        }))
    )
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
    const seen: Array<{ readonly key: string; readonly id: bigint; readonly tenant: string }> = []
    const sink = OutboxSink.layerHandler((e) =>
      Effect.andThen(
        Effect.sync(() => seen.push({ key: e.orderingKey ?? e.aggregateId, id: e.id, tenant: e.tenant ?? "" })),
        Effect.sleep("10 millis")
      )
    )
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(sink),
        Layer.provide(OutboxConfig.layer({
          pollInterval: Duration.millis(50),
          concurrency: 2,
          minBatchSize: 4,
          batchSize: 4,
          ordering: "key",
          fairness,
          claimMode
        }))
      ),
      scope
    )
    yield* advanceUntil(Effect.sync(() => seen.length >= inputs.length), { step: "10 millis", max: "5 minutes" })
    // the sink records a delivery as it starts: the last one still sleeps, and the relay lets it finish
    const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
    yield* advanceUntil(Effect.sync(() => closing.pollUnsafe() !== undefined), { step: "10 millis", max: "1 minute" })
    return seen
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
      }
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
