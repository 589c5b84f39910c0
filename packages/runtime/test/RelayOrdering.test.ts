/**
 * Per-key ordering through the relay (`OUTBOX_ORDERING=key`), on the memory
 * store and PostgreSQL under TestClock, with 4 workers: each key's events
 * reach the sink in id order, one at a time; a head waiting out its backoff
 * blocks its own key only, while every other key keeps flowing; and the
 * same workload without ordering does reorder (so the assertions can fail).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError } from "@outbox/core/OutboxError"
import type { EventInput, OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { type Ordering, OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import { advance, advanceUntil } from "@outbox/testing/RelayTestKit"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Relay from "../src/Relay.ts"

const stores = RelayTestKit.stores

const event = (key: string, n: number): EventInput => ({
  aggregateType: "Order",
  aggregateId: key,
  eventType: "Step",
  payload: { n }
})

/** A delivery as the sink saw it. */
interface Seen {
  readonly key: string
  readonly id: bigint
  readonly n: number
  readonly ok: boolean
}

/**
 * Runs the relay over `inputs` with a sink that takes 10 ms of (test) time
 * per event and fails the events `fails` says, until `done` holds.
 */
const run = (options: {
  readonly inputs: ReadonlyArray<EventInput>
  readonly ordering: "none" | "key"
  readonly fails: (event: OutboxEvent, attempt: number) => boolean
  readonly backoff: Duration.Duration
  readonly done: (seen: ReadonlyArray<Seen>) => boolean
  readonly during?: (seen: ReadonlyArray<Seen>) => Effect.Effect<void, Error>
  /**
   * Counts the store's claims running at once (each yields first, so that overlaps show on the memory store
   * too): claims of the whole key space in `running` / `most`, claims of a slice (`Ordering.slice`) in
   * `slices` (how many run now, per slice) / `slicedMost` (most at once, any slices) / `sliceClash` (two
   * claims of one slice at once).
   */
  readonly claims?: {
    running: number
    most: number
    nonEmpty?: number
    slices?: Map<number, number>
    slicedMost?: number
    sliceClash?: boolean
  }
  readonly claimMode?: "lease" | "transaction"
  readonly orderingRun?: number
}) =>
  Effect.gen(function*() {
    yield* Outbox.transaction(Outbox.publishAll(options.inputs))
    const seen: Array<Seen> = []
    const inFlight = new Map<string, number>()
    let maxInFlight = 0
    const attempts = new Map<bigint, number>()
    const sink = OutboxSink.layerHandler((e) =>
      Effect.gen(function*() {
        const now = (inFlight.get(e.aggregateId) ?? 0) + 1
        inFlight.set(e.aggregateId, now)
        maxInFlight = Math.max(maxInFlight, now)
        yield* Effect.sleep("10 millis")
        inFlight.set(e.aggregateId, inFlight.get(e.aggregateId)! - 1)
        const attempt = (attempts.get(e.id) ?? 0) + 1
        attempts.set(e.id, attempt)
        const ok = !options.fails(e, attempt)
        seen.push({ key: e.aggregateId, id: e.id, n: (e.payload as { n: number }).n, ok })
        if (!ok) return yield* DeliveryError.transient(`event ${e.id} fails its attempt ${attempt}`)
      })
    )
    const scope = yield* Scope.make()
    const claims = options.claims
    /** Runs a claim, counting it while it runs (see `claims`) and after it if it took anything. */
    const counted = <A extends ReadonlyArray<unknown>, E, R>(
      slice: Ordering["slice"],
      claim: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E, R> =>
      claims === undefined ? claim : Effect.acquireUseRelease(
        Effect.sync(() => {
          if (slice === undefined) {
            claims.most = Math.max(claims.most, ++claims.running)
            return
          }
          const slices = claims.slices ??= new Map()
          const same = (slices.get(slice.index) ?? 0) + 1
          slices.set(slice.index, same)
          if (same > 1) claims.sliceClash = true
          const all = Array.from(slices.values()).reduce((a, b) => a + b, 0)
          claims.slicedMost = Math.max(claims.slicedMost ?? 0, all)
        }),
        () =>
          Effect.andThen(
            Effect.yieldNow,
            Effect.tap(claim, (claimed) =>
              Effect.sync(() => {
                if (claimed.length > 0) claims.nonEmpty = (claims.nonEmpty ?? 0) + 1
              }))
          ),
        () =>
          Effect.sync(() => {
            if (slice === undefined) claims.running--
            else claims.slices!.set(slice.index, claims.slices!.get(slice.index)! - 1)
          })
      )
    const store = claims === undefined ? Layer.empty : Layer.effect(
      OutboxStore,
      Effect.map(Effect.service(OutboxStore), (inner) =>
        OutboxStore.of({
          ...inner,
          claimInTransaction: (claimOptions, use) =>
            counted(claimOptions.ordering?.slice, inner.claimInTransaction(claimOptions, use)),
          claim: (claimOptions) => counted(claimOptions.ordering?.slice, inner.claim(claimOptions))
        }))
    )
    yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(sink),
        Layer.provide(store),
        Layer.provide(OutboxConfig.layer({
          pollInterval: Duration.millis(50),
          concurrency: 4,
          minBatchSize: 4,
          batchSize: 8,
          ordering: options.ordering,
          claimMode: options.claimMode ?? "lease",
          ...(options.orderingRun === undefined ? {} : { orderingRun: options.orderingRun }),
          retryPolicy: RetryPolicy.exponential({ base: options.backoff, cap: options.backoff })
        }))
      ),
      scope
    )
    if (options.during !== undefined) yield* options.during(seen)
    yield* advanceUntil(Effect.sync(() => options.done(seen)), { step: "10 millis", max: "5 minutes" })
    yield* Scope.close(scope, Exit.void)
    return { seen, maxInFlight }
  })

/** Each key's successful deliveries, in the order the sink saw them. */
const successesByKey = (seen: ReadonlyArray<Seen>) => {
  const byKey = new Map<string, Array<number>>()
  for (const s of seen) {
    if (!s.ok) continue
    const list = byKey.get(s.key) ?? []
    list.push(s.n)
    byKey.set(s.key, list)
  }
  return byKey
}

const inOrder = (ns: ReadonlyArray<number>) => ns.every((n, i) => i === 0 || ns[i - 1]! < n)

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay with OUTBOX_ORDERING=key under TestClock", (it) => {
  for (const store of stores) {
    describe(store.name, () => {
      it.effect("4 workers, failing first attempts: every key's events in order, one in flight per key", () =>
        Effect.gen(function*() {
          const keys = ["a", "b", "c", "d", "e", "f"]
          const inputs = Array.from({ length: 8 }, (_, n) => keys.map((k) => event(k, n))).flat()
          // the first attempt of every third event fails: without ordering its successors overtake it
          const fails = (e: OutboxEvent, attempt: number) => attempt === 1 && (e.payload as { n: number }).n % 3 === 1
          const done = (seen: ReadonlyArray<Seen>) => seen.filter((s) => s.ok).length >= inputs.length
          const ordered = yield* run({ inputs, ordering: "key", fails, backoff: Duration.millis(200), done })
          const byKey = successesByKey(ordered.seen)
          assert.deepStrictEqual([...byKey.keys()].sort(), keys)
          for (const [key, ns] of byKey) assert.deepStrictEqual(ns, [0, 1, 2, 3, 4, 5, 6, 7], `key ${key}`)
          assert.strictEqual(ordered.maxInFlight, 1)
          assert.isAbove(ordered.seen.filter((s) => !s.ok).length, 0)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      it.effect("the same load without ordering: a failed event is overtaken by its key's later events", () =>
        Effect.gen(function*() {
          const keys = ["a", "b", "c", "d", "e", "f"]
          const inputs = Array.from({ length: 8 }, (_, n) => keys.map((k) => event(k, n))).flat()
          const fails = (e: OutboxEvent, attempt: number) => attempt === 1 && (e.payload as { n: number }).n % 3 === 1
          const done = (seen: ReadonlyArray<Seen>) => seen.filter((s) => s.ok).length >= inputs.length
          const unordered = yield* run({ inputs, ordering: "none", fails, backoff: Duration.millis(200), done })
          const byKey = successesByKey(unordered.seen)
          assert.isTrue([...byKey.values()].some((ns) => !inOrder(ns)), "unordered delivery kept every key's order")
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))

      for (const claimMode of ["lease", "transaction"] as const) {
      it.effect(`the workers of one relay claim their own slices of the keys side by side under ordering (${claimMode} claims), the whole key space one at a time (lease), and at once without ordering`, () =>
        Effect.gen(function*() {
          const keys = Array.from({ length: 40 }, (_, k) => `k${k}`)
          const inputs = Array.from({ length: 8 }, (_, n) => keys.map((k) => event(k, n))).flat()
          const done = (seen: ReadonlyArray<Seen>) => seen.length >= inputs.length
          const never = () => false
          // Concurrent ordered claims read the same oldest rows, and the later one found every head
          // locked by the earlier: empty claims (bench:ordering, 2 workers, claims of 100: 217 of 889).
          // Claims of disjoint slices read disjoint rows: after a full claim each worker claims its own.
          const ordered: NonNullable<Parameters<typeof run>[0]["claims"]> = { running: 0, most: 0 }
          const result = yield* run({ inputs, ordering: "key", fails: never, backoff: Duration.millis(200), done, claims: ordered, claimMode })
          assert.strictEqual(result.maxInFlight, 1)
          if (claimMode === "lease") assert.strictEqual(ordered.most, 1)
          assert.isAbove(ordered.slices?.size ?? 0, 1, "the workers claimed their slices")
          assert.notStrictEqual(ordered.sliceClash, true, "two claims of one slice at once")
          // side by side on PostgreSQL; the memory store answers within one scheduling round, where the
          // workers' lease claims seldom meet
          if (store.name.startsWith("PostgreSQL")) assert.isAbove(ordered.slicedMost ?? 0, 1, "slices claimed side by side")
          if (claimMode === "lease") {
            const unordered = { running: 0, most: 0 }
            yield* run({ inputs, ordering: "none", fails: never, backoff: Duration.millis(200), done, claims: unordered })
            assert.isAbove(unordered.most, 1)
          }
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }

      for (const claimMode of ["lease", "transaction"] as const) {
      it.effect(`over one key a claim takes a run of its events (${claimMode} claims): in order, in a few claims, a failure holding back the rest of its run; OUTBOX_ORDERING_RUN=1 heads only`, () =>
        Effect.gen(function*() {
          const inputs = Array.from({ length: 40 }, (_, n) => event("hot", n))
          // one failing first attempt mid-run: the events after it in its batch go back, and follow its retry
          const fails = (e: OutboxEvent, attempt: number) => attempt === 1 && (e.payload as { n: number }).n === 13
          const claims = { running: 0, most: 0, nonEmpty: 0 }
          const result = yield* run({
            inputs,
            ordering: "key",
            fails,
            backoff: Duration.millis(200),
            done: (seen) => seen.filter((s) => s.ok).length >= inputs.length,
            claims,
            claimMode
          })
          assert.deepStrictEqual(successesByKey(result.seen).get("hot"), Array.from({ length: 40 }, (_, n) => n))
          assert.strictEqual(result.maxInFlight, 1)
          // heads only, that was one claim per event (40); runs of up to 8 (the batch size, from 4) take about a third
          assert.isAtMost(claims.nonEmpty, 15)
          // OUTBOX_ORDERING_RUN=1: heads only, one claim per event
          const headsOnly = { running: 0, most: 0, nonEmpty: 0 }
          const again = yield* run({
            inputs,
            ordering: "key",
            fails: () => false,
            backoff: Duration.millis(200),
            done: (seen) => seen.filter((s) => s.ok).length >= inputs.length,
            claims: headsOnly,
            claimMode,
            orderingRun: 1
          })
          assert.deepStrictEqual(successesByKey(again.seen).get("hot"), Array.from({ length: 40 }, (_, n) => n))
          assert.strictEqual(headsOnly.nonEmpty, 40)
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
      }

      it.effect("a head waiting out a 1-minute backoff blocks its key only: the other keys drain meanwhile", () =>
        Effect.gen(function*() {
          const inputs = [
            ...Array.from({ length: 5 }, (_, n) => event("stuck", n)),
            ...Array.from({ length: 10 }, (_, n) => ["x", "y", "z"].map((k) => event(k, n))).flat()
          ]
          // the stuck key's head fails its first attempt and waits a minute
          const fails = (e: OutboxEvent, attempt: number) =>
            e.aggregateId === "stuck" && (e.payload as { n: number }).n === 0 && attempt === 1
          const result = yield* run({
            inputs,
            ordering: "key",
            fails,
            backoff: Duration.minutes(1),
            done: (seen) => seen.filter((s) => s.ok).length >= inputs.length,
            during: (seen) =>
              Effect.gen(function*() {
                // within 30 s of test time every other key is drained, and the stuck key sent nothing after its head
                yield* advanceUntil(Effect.sync(() => seen.filter((s) => s.ok && s.key !== "stuck").length === 30), {
                  step: "10 millis",
                  max: "30 seconds"
                })
                const stuck = seen.filter((s) => s.key === "stuck")
                assert.deepStrictEqual(stuck.map((s) => [s.n, s.ok]), [[0, false]])
                yield* advance("60 seconds", "1 second")
              })
          })
          assert.deepStrictEqual(successesByKey(result.seen).get("stuck"), [0, 1, 2, 3, 4])
          for (const key of ["x", "y", "z"]) {
            assert.deepStrictEqual(successesByKey(result.seen).get(key), Array.from({ length: 10 }, (_, n) => n))
          }
        }).pipe(Effect.provide(store.layer), Effect.provide(TestClock.layer())))
    })
  }
})
