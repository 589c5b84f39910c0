/**
 * The `OutboxStore` contract: one conformance suite that every store must
 * pass (`MemoryOutboxStore`, and `PgOutboxStore` with
 * `timeSource: "clock"`).
 *
 * Every test runs against an empty store built from `layer` for that test,
 * under its own `TestClock` set to {@link start}: leases, backoff and reaping
 * are driven by `TestClock.adjust`, never by real waiting. Expensive
 * resources (a database) go in `shared`, built once for the suite; `layer`
 * is then built per test on top of it and must start empty (e.g. truncate).
 * The tests of one suite run one after the other.
 *
 * **Example**
 *
 * ```ts
 * // a new memory store per test
 * StoreContract.suite("memory", MemoryOutboxStore.layer)
 *
 * // one migrated database for the suite, a truncated outbox per test
 * const emptyOutbox = Layer.effect(OutboxStore, Effect.gen(function*() {
 *   const sql = yield* SqlClient.SqlClient
 *   yield* sql`TRUNCATE outbox`
 *   return yield* OutboxStore
 * }))
 * StoreContract.suite(
 *   "PostgreSQL",
 *   emptyOutbox,
 *   PgOutboxStore.layer({ timeSource: "clock" }).pipe(Layer.provideMerge(TestDatabase.layer))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { assert, describe, layer as layerTest } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { InvalidEvent, LeaseLost, StoreError } from "@outbox/core/OutboxError"
import type { EventInput, OutboxEvent, PublishedEvent } from "@outbox/core/OutboxEvent"
import { leaseOf } from "@outbox/core/OutboxEvent"
import { type EventRecord, type Ordering, OutboxStore, type TransactionOutcome } from "@outbox/core/OutboxStore"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { settle } from "./RelayTestKit.ts"

/**
 * The `TestClock` time every contract test starts at (2026-01-15T09:00:00Z).
 *
 * @category constants
 * @since 0.1.0
 */
export const start: number = Date.UTC(2026, 0, 15, 9, 0, 0)

const lease = Duration.seconds(30)

class Boom {
  readonly _tag = "Boom"
}

const input = (n: number, overrides: Partial<EventInput> = {}): EventInput => ({
  aggregateType: "Order",
  aggregateId: `order-${n}`,
  eventType: "OrderCreated",
  payload: { n },
  ...overrides
})

const publishAll = (count: number): Effect.Effect<ReadonlyArray<PublishedEvent>, unknown, OutboxStore> =>
  Outbox.transaction(Outbox.publishAll(Array.from({ length: count }, (_, i) => input(i + 1))))

const claim = (limit = 100, leaseDuration: Duration.Duration = lease) =>
  Effect.flatMap(OutboxStore, (store) => store.claim({ limit, leaseDuration }))

/** An ordered claim (`OUTBOX_ORDERING=key`). */
const claimOrdered = (limit = 100, deadLetter: Ordering["deadLetter"] = "continue", run?: number) =>
  Effect.flatMap(OutboxStore, (store) => store.claim({ limit, leaseDuration: lease, ordering: { deadLetter, run } }))

/** A tenant-fair claim (`OUTBOX_FAIRNESS=tenant`); `maxTenants` `undefined`: the default (64). */
const claimFair = (limit = 100, maxTenants?: number) =>
  Effect.flatMap(OutboxStore, (store) => store.claim({ limit, leaseDuration: lease, fairness: { maxTenants } }))

/** Event `n` of tenant `tenant`. */
const ofTenant = (n: number, tenant: string, overrides: Partial<EventInput> = {}): EventInput =>
  input(n, { tenant, ...overrides })

const completeAll = (events: ReadonlyArray<OutboxEvent>) => OutboxStore.use((s) => s.complete(events.map(leaseOf)))

/** Event `n` of aggregate `Order:<aggregateId>`, whose default ordering key is `Order:<aggregateId>`. */
const onKey = (n: number, aggregateId: string, overrides: Partial<EventInput> = {}): EventInput =>
  input(n, { aggregateId, ...overrides })

/** Publishes `events` in one transaction; returns their ids. */
const publishIds = (events: ReadonlyArray<EventInput>) => Effect.map(Outbox.transaction(Outbox.publishAll(events)), ids)

const reapAll = Effect.flatMap(OutboxStore, (store) => store.reap)
const reap = Effect.map(reapAll, (result) => result.requeued)

const row = (id: bigint): Effect.Effect<EventRecord, unknown, OutboxStore> =>
  Effect.flatMap(OutboxStore, (store) => store.get(id)).pipe(
    Effect.flatMap((found) =>
      Option.isSome(found) ? Effect.succeed(found.value) : Effect.die(new Error(`row ${id} not found`))
    )
  )

const ids = (events: ReadonlyArray<{ readonly id: bigint }>) => events.map((e) => e.id)

/**
 * A dead letter above a key's head, as rows claimed before ordering was
 * switched on leave one: an unordered claim takes the two oldest events,
 * `head` and `next` (of one key), dead-letters `next` and releases `head`.
 */
const deadLetterAboveHead = (head: bigint, next: bigint) =>
  Effect.gen(function*() {
    const plain = yield* claim(2)
    assert.deepStrictEqual(ids(plain), [head, next])
    yield* OutboxStore.use((s) => s.deadLetter(leaseOf(plain[1]!), { error: "cannot parse" }))
    yield* OutboxStore.use((s) => s.release([leaseOf(plain[0]!)]))
  })

/** Publishes `count` events of each tenant, one tenant after the other; returns each tenant's ids, oldest first. */
const publishTenants = (tenants: ReadonlyArray<string>, count: number) =>
  Effect.gen(function*() {
    const byTenant = new Map<string, ReadonlyArray<bigint>>()
    let n = 0
    for (const tenant of tenants) {
      byTenant.set(tenant, yield* publishIds(Array.from({ length: count }, () => ofTenant(++n, tenant))))
    }
    return byTenant
  })

/**
 * Follows successive fair claims over the tenants of `byTenant` (given in
 * tenant order, all with work): the returned check asserts that a claim took
 * the next `width` tenants in turn (wrapping around), `share` oldest
 * unclaimed events of each, in id order, and returns those tenants. The
 * first claim may start at any tenant (a store's cursor may outlive a
 * test); each later one must go on right after the previous one.
 */
const rotation = (byTenant: ReadonlyMap<string, ReadonlyArray<bigint>>) => {
  const tenants = Array.from(byTenant.keys())
  const taken = new Map(tenants.map((tenant) => [tenant, 0]))
  const turnAt = (position: number, width: number) =>
    Array.from({ length: width }, (_, i) => tenants[(position + i) % tenants.length]!)
  let position: number | undefined
  return (claimed: ReadonlyArray<OutboxEvent>, width: number, share: number): ReadonlyArray<string> => {
    if (position === undefined) {
      const seen = new Set(claimed.map((event) => event.tenant))
      position = tenants.findIndex((_, start) => turnAt(start, width).every((tenant) => seen.has(tenant)))
      assert.notStrictEqual(position, -1, `the first claim took tenants ${Array.from(seen).join(", ")}, not ${width} in turn`)
    }
    const turn = turnAt(position, width)
    position = (position + width) % tenants.length
    const expected = turn.flatMap((tenant) => {
      const from = taken.get(tenant)!
      taken.set(tenant, from + share)
      return byTenant.get(tenant)!.slice(from, from + share)
    })
    assert.deepStrictEqual(ids(claimed), sorted(expected), `expected the turn of ${turn.join(", ")}`)
    return turn
  }
}

/** No one holds `record`: no fencing token, no lease end (never claimed, or settled, released, reaped). */
const assertUnleased = (record: EventRecord) => {
  assert.isNull(record.lockToken)
  assert.isNull(record.lockedUntil)
}
const sorted = (values: ReadonlyArray<bigint>) => [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
const at = (offsetMs: number) => new Date(start + offsetMs)

/** Claims one row, lets its lease expire, reaps it and claims it again: returns the stale and the fresh claim. */
const staleAndFresh = Effect.gen(function*() {
  const [published] = yield* publishAll(1)
  const [stale] = yield* claim()
  yield* TestClock.adjust(Duration.sum(lease, Duration.millis(1)))
  assert.deepStrictEqual(yield* reap, [published!.id])
  const [fresh] = yield* claim()
  assert.notStrictEqual(fresh!.lockToken, stale!.lockToken)
  return { stale: stale!, fresh: fresh! }
})

const assertLeaseLost = (
  error: unknown,
  expected: { readonly operation: LeaseLost["operation"]; readonly eventIds: ReadonlyArray<bigint>; readonly lockToken: bigint }
) => {
  assert.instanceOf(error, LeaseLost)
  const lost = error as LeaseLost
  assert.strictEqual(lost.operation, expected.operation)
  assert.deepStrictEqual(sorted(lost.eventIds), sorted(expected.eventIds))
  assert.strictEqual(lost.lockToken, expected.lockToken)
}

type Body = Effect.Effect<void, unknown, OutboxStore | Scope.Scope>

/** The timeout of the contract's transaction-scoped claims. */
const txTimeout = Duration.seconds(5)

/** An outcome completing every event. */
const settled = (events: ReadonlyArray<OutboxEvent>): TransactionOutcome => ({ completed: events, retried: [], deadLettered: [] })

/**
 * Options of `suite`.
 *
 * @category models
 * @since 0.1.0
 */
export interface SuiteOptions {
  /**
   * `"supported"` (the default): the transaction-scoped claim's cases run.
   * `"refused"`: the store refuses `claimInTransaction` (`PgOutboxStore`
   * during an online migration), and the suite checks that it fails with a
   * non-retryable `StoreError` and changes nothing.
   */
  readonly claimInTransaction?: "supported" | "refused" | undefined
  /**
   * `"supported"` (the default): the per-key ordering cases run.
   * `"refused"`: the store refuses an ordered claim (`PgOutboxStore` during
   * an online migration, before the ordering key is backfilled, could not
   * keep the order), and the suite checks that an ordered `claim` fails
   * with a non-retryable `StoreError` and claims nothing.
   */
  readonly ordering?: "supported" | "refused" | undefined
  /**
   * `"supported"` (the default): the tenant-fair claiming cases run.
   * `"refused"`: the store refuses a fair claim (`PgOutboxStore` during an
   * online migration, before the tenant column is in place), and the suite
   * checks that a fair `claim` fails with a non-retryable `StoreError` and
   * claims nothing.
   */
  readonly fairness?: "supported" | "refused" | undefined
}

/**
 * Registers the contract suite for one store.
 *
 * - `layer`: the store under test, built anew for every test; it must start
 *   empty and take "now" from Effect's `Clock`.
 * - `shared` (optional): what `layer` needs, built once for the suite.
 * - `options` (optional): see `SuiteOptions`.
 *
 * @category suites
 * @since 0.1.0
 */
export const suite: {
  (name: string, layer: Layer.Layer<OutboxStore, unknown>, shared?: undefined, options?: SuiteOptions): void
  <R>(name: string, layer: Layer.Layer<OutboxStore, unknown, R>, shared: Layer.Layer<R, unknown>, options?: SuiteOptions): void
} = <R>(
  name: string,
  layer: Layer.Layer<OutboxStore, unknown, R>,
  shared?: Layer.Layer<R, unknown>,
  options: SuiteOptions = {}
): void =>
  layerTest(shared ?? (Layer.empty as Layer.Layer<R>), {
    timeout: "60 seconds",
    concurrent: false,
    excludeTestServices: true
  })(`OutboxStore contract (${name})`, (it) => {
    const test = (title: string, body: Body) =>
      it.effect(
        title,
        () =>
          Effect.andThen(TestClock.setTime(start), body).pipe(
            Effect.provide(layer),
            Effect.provide(TestClock.layer())
          ),
        30_000
      )

    describe("publish and claim", () => {
      test(
        "events published in a transaction are claimed in id order: PROCESSING, one lock token, lockedUntil = now + lease",
        Effect.gen(function*() {
          const published = yield* Outbox.transaction(Effect.gen(function*() {
            const a = yield* Outbox.publish(input(1, { metadata: { source: "api" } }))
            const b = yield* Outbox.publish(input(2, { maxRetries: 2 }))
            const c = yield* Outbox.publish(input(3, { payload: { nested: { list: [1, "two", null, true] }, text: "żółw ✓" } }))
            return [a, b, c]
          }))
          const publishedIds = ids(published)
          assert.deepStrictEqual(publishedIds, sorted(publishedIds))
          assert.strictEqual(new Set(publishedIds).size, 3)
          assert.strictEqual(new Set(published.map((p) => p.trackingId)).size, 3)
          for (const p of published) {
            assert.match(p.trackingId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
            assert.instanceOf(p.createdAt, Date)
          }

          yield* TestClock.adjust("5 seconds")
          const claimed = yield* claim(10)
          assert.deepStrictEqual(ids(claimed), publishedIds)
          const token = claimed[0]!.lockToken
          for (const [i, event] of claimed.entries()) {
            assert.strictEqual(event.lockToken, token)
            assert.strictEqual(event.lockedUntil.getTime(), start + 5_000 + 30_000)
            assert.strictEqual(event.trackingId, published[i]!.trackingId)
            assert.strictEqual(event.createdAt.getTime(), published[i]!.createdAt.getTime())
            assert.strictEqual(event.aggregateType, "Order")
            assert.strictEqual(event.aggregateId, `order-${i + 1}`)
            assert.strictEqual(event.eventType, "OrderCreated")
            assert.strictEqual(event.retryCount, 0)
          }
          assert.deepStrictEqual(claimed.map((e) => e.maxRetries), [5, 2, 5])
          assert.deepStrictEqual(claimed.map((e) => e.metadata), [{ source: "api" }, {}, {}])
          assert.deepStrictEqual(claimed.map((e) => e.payload), [
            { n: 1 },
            { n: 2 },
            { nested: { list: [1, "two", null, true] }, text: "żółw ✓" }
          ])

          for (const event of claimed) {
            const record = yield* row(event.id)
            assert.strictEqual(record.status, "PROCESSING")
            assert.strictEqual(record.lockToken, token)
            assert.strictEqual(record.lockedUntil!.getTime(), start + 35_000)
            assert.strictEqual(record.retryCount, 0)
            assert.isNull(record.processedAt)
            assert.isNull(record.lastError)
            assert.deepStrictEqual(record.payload, event.payload)
          }
          assert.deepStrictEqual(yield* claim(10), [])
        })
      )

      test(
        "publishAll writes several rows in one call, all PENDING",
        Effect.gen(function*() {
          const published = yield* Outbox.transaction(
            Outbox.publishAll([input(1), input(2, { eventType: "OrderPaid" }), input(3, { aggregateType: "Invoice" })])
          )
          assert.strictEqual(published.length, 3)
          assert.deepStrictEqual(ids(published), sorted(ids(published)))
          assert.strictEqual(new Set(published.map((p) => p.trackingId)).size, 3)
          const records = yield* Effect.forEach(published, (p) => row(p.id))
          assert.deepStrictEqual(records.map((r) => r.status), ["PENDING", "PENDING", "PENDING"])
          assert.deepStrictEqual(records.map((r) => r.eventType), ["OrderCreated", "OrderPaid", "OrderCreated"])
          assert.deepStrictEqual(records.map((r) => r.aggregateType), ["Order", "Order", "Invoice"])
          for (const [i, r] of records.entries()) {
            assert.strictEqual(r.trackingId, published[i]!.trackingId)
            assert.strictEqual(r.retryCount, 0)
            assert.strictEqual(r.maxRetries, 5)
            assertUnleased(r)
            assert.isNull(r.availableAt)
            assert.isNull(r.processedAt)
          }
          assert.deepStrictEqual(ids(yield* claim()), ids(published))
        })
      )

      test(
        "rows are invisible to claimers until the transaction commits",
        Effect.gen(function*() {
          const published = yield* Deferred.make<void>()
          const commit = yield* Deferred.make<void>()
          const writer = yield* Outbox.transaction(
            Effect.tap(Outbox.publish(input(1)), () => Effect.andThen(Deferred.succeed(published, undefined), Deferred.await(commit)))
          ).pipe(Effect.forkChild({ startImmediately: true }))
          yield* Deferred.await(published)
          assert.deepStrictEqual(yield* claim(), [])
          yield* Deferred.succeed(commit, undefined)
          const event = yield* Fiber.join(writer)
          assert.deepStrictEqual(ids(yield* claim()), [event.id])
        })
      )

      test(
        "a failing transaction body publishes nothing and its error surfaces unchanged",
        Effect.gen(function*() {
          const attempted = yield* Ref.make<ReadonlyArray<bigint>>([])
          const boom = new Boom()
          const error = yield* Outbox.transaction(Effect.gen(function*() {
            const events = yield* Outbox.publishAll([input(1), input(2)])
            yield* Ref.set(attempted, ids(events))
            return yield* Effect.fail(boom)
          })).pipe(Effect.flip)
          assert.strictEqual(error, boom)

          const died = yield* Outbox.transaction(Effect.gen(function*() {
            const event = yield* Outbox.publish(input(3))
            yield* Ref.update(attempted, (all) => [...all, event.id])
            return yield* Effect.die("defect")
          })).pipe(Effect.exit)
          assert.isTrue(Exit.isFailure(died))

          const rolledBack = yield* Ref.get(attempted)
          assert.strictEqual(rolledBack.length, 3)
          for (const id of rolledBack) assert.isTrue(Option.isNone(yield* OutboxStore.use((s) => s.get(id))))
          assert.deepStrictEqual(yield* claim(), [])

          // the store stays usable, and new rows get new ids
          const [after] = yield* publishAll(1)
          assert.isTrue(after!.id > rolledBack[2]!)
          assert.deepStrictEqual(ids(yield* claim()), [after!.id])
        })
      )

      test(
        "a nested transaction that fails discards only its own events",
        Effect.gen(function*() {
          const committed = yield* Outbox.transaction(Effect.gen(function*() {
            const outer = yield* Outbox.publish(input(1))
            const failed = yield* Outbox.transaction(
              Effect.andThen(Outbox.publish(input(2)), Effect.fail(new Boom()))
            ).pipe(Effect.flip)
            assert.instanceOf(failed, Boom)
            const inner = yield* Outbox.transaction(Outbox.publish(input(3)))
            return [outer, inner]
          }))
          const claimed = yield* claim()
          assert.deepStrictEqual(ids(claimed), ids(committed))
          assert.deepStrictEqual(claimed.map((e) => e.aggregateId), ["order-1", "order-3"])
        })
      )

      test(
        "payload and metadata come back as the JSON that was published",
        Effect.gen(function*() {
          const payload = { id: "o-1", total: 12.5, lines: [{ sku: "A", qty: 2 }], note: null, flags: [true, false] }
          const metadata = { traceparent: "00-abc-def-01", tenant: "acme", depth: 3 }
          const event = yield* Outbox.transaction(Outbox.publish(input(1, { payload, metadata })))
          const record = yield* row(event.id)
          assert.deepStrictEqual(record.payload, payload)
          assert.deepStrictEqual(record.metadata, metadata)
          const [claimed] = yield* claim()
          assert.deepStrictEqual(claimed!.payload, payload)
          assert.deepStrictEqual(claimed!.metadata, metadata)
          // a scalar payload is a valid JSON document too
          const scalar = yield* Outbox.transaction(Outbox.publish(input(2, { payload: "just text" })))
          assert.strictEqual((yield* row(scalar.id)).payload, "just text")
        })
      )

      test(
        "get returns none for an unknown id",
        Effect.gen(function*() {
          assert.isTrue(Option.isNone(yield* OutboxStore.use((s) => s.get(987_654_321n))))
          const [event] = yield* publishAll(1)
          assert.isTrue(Option.isNone(yield* OutboxStore.use((s) => s.get(event!.id + 1000n))))
        })
      )
    })

    describe("claiming", () => {
      test(
        "claim respects limit, oldest id first",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(5))
          assert.deepStrictEqual(yield* claim(0), [])
          const first = yield* claim(2)
          const second = yield* claim(2)
          const third = yield* claim(2)
          assert.deepStrictEqual(ids(first), published.slice(0, 2))
          assert.deepStrictEqual(ids(second), published.slice(2, 4))
          assert.deepStrictEqual(ids(third), published.slice(4))
          assert.deepStrictEqual(yield* claim(2), [])
          // one fresh lock token per claim
          assert.strictEqual(new Set([first[0]!.lockToken, second[0]!.lockToken, third[0]!.lockToken]).size, 3)
          assert.strictEqual(first[1]!.lockToken, first[0]!.lockToken)
        })
      )

      test(
        "a negative limit fails with StoreError and claims nothing",
        Effect.gen(function*() {
          const [event] = yield* publishAll(1)
          const error = yield* Effect.flip(claim(-1))
          assert.instanceOf(error, StoreError)
          assert.strictEqual((yield* row(event!.id)).status, "PENDING")
        })
      )

      test(
        "concurrent claims never return the same row",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(40))
          const rounds = yield* Effect.all(
            Array.from({ length: 8 }, () => claim(5)),
            { concurrency: "unbounded" }
          )
          const claimed = rounds.flatMap(ids)
          assert.strictEqual(new Set(claimed).size, claimed.length, "a row was handed to two claimers")
          const tokens = rounds.filter((r) => r.length > 0).map((r) => r[0]!.lockToken)
          assert.strictEqual(new Set(tokens).size, tokens.length, "two claims shared a lock token")
          for (const round of rounds) {
            assert.deepStrictEqual(ids(round), sorted(ids(round)))
            for (const event of round) assert.strictEqual(event.lockToken, round[0]!.lockToken)
          }
          // whatever the concurrent round skipped is still there, exactly once
          const rest = yield* claim(100)
          const all = [...claimed, ...ids(rest)]
          assert.strictEqual(new Set(all).size, all.length)
          assert.deepStrictEqual(sorted(all), published)
        })
      )
    })

    describe("scheduled events", () => {
      test(
        "an event published with availableAt or delay is not claimable before its time, and is claimable at it",
        Effect.gen(function*() {
          const [now, later, delayed, mixed] = yield* Outbox.transaction(Outbox.publishAll([
            input(1),
            input(2, { availableAt: at(5 * 60_000) }),
            input(3, { delay: "10 minutes" }),
            input(4, { delay: 0 })
          ]))
          const first = yield* claim()
          assert.deepStrictEqual(ids(first), [now!.id, mixed!.id])
          assert.deepStrictEqual((yield* row(later!.id)).availableAt, at(5 * 60_000))
          yield* TestClock.adjust(Duration.subtract(Duration.minutes(5), Duration.millis(1)))
          assert.deepStrictEqual(yield* claim(), [])
          yield* TestClock.adjust("1 millis")
          assert.deepStrictEqual(ids(yield* claim()), [later!.id])
          yield* TestClock.adjust(Duration.subtract(Duration.minutes(5), Duration.millis(1)))
          assert.deepStrictEqual(yield* claim(), [])
          yield* TestClock.adjust("1 millis")
          assert.deepStrictEqual(ids(yield* claim()), [delayed!.id])
          assert.deepStrictEqual((yield* row(delayed!.id)).availableAt, at(10 * 60_000))
        })
      )

      test(
        "a schedule that cannot be is refused with InvalidEvent (InvalidSchedule) and writes nothing",
        Effect.gen(function*() {
          const cases: ReadonlyArray<readonly [Partial<EventInput>, string]> = [
            [{ availableAt: at(0), delay: "1 minute" }, "availableAt"],
            [{ availableAt: new Date(Number.NaN) }, "availableAt"],
            [{ delay: -5 }, "delay"],
            [{ delay: "soon" as Duration.Input }, "delay"],
            [{ delay: Number.POSITIVE_INFINITY }, "delay"]
          ]
          for (const [overrides, field] of cases) {
            const error = yield* Effect.flip(Outbox.transaction(Outbox.publishAll([input(1), input(2, overrides)])))
            assert.instanceOf(error, InvalidEvent)
            assert.strictEqual((error as InvalidEvent).reason, "InvalidSchedule")
            assert.strictEqual((error as InvalidEvent).field, field)
            assert.strictEqual((error as InvalidEvent).index, 1)
          }
          assert.deepStrictEqual(yield* claim(), [])
        })
      )
    })

    describe("fenced transitions", () => {
      test(
        "complete marks COMPLETED, clears the lease, and the row is never claimed again",
        Effect.gen(function*() {
          const [event] = yield* publishAll(1)
          const [claimed] = yield* claim()
          yield* TestClock.adjust("1 second")
          yield* OutboxStore.use((s) => s.complete([leaseOf(claimed!)]))
          const record = yield* row(event!.id)
          assert.strictEqual(record.status, "COMPLETED")
          assert.strictEqual(record.processedAt!.getTime(), start + 1_000)
          assertUnleased(record)
          assert.strictEqual(record.retryCount, 0)
          assert.deepStrictEqual(yield* claim(), [])
          yield* TestClock.adjust("1 hour")
          assert.deepStrictEqual(yield* reap, [])
          assert.deepStrictEqual(yield* claim(), [])
          assert.strictEqual((yield* row(event!.id)).status, "COMPLETED")
        })
      )

      test(
        "completing twice fails with LeaseLost listing the id; the row stays COMPLETED",
        Effect.gen(function*() {
          yield* publishAll(2)
          const claimed = yield* claim()
          yield* OutboxStore.use((s) => s.complete(claimed.map(leaseOf)))
          const before = yield* Effect.forEach(claimed, (e) => row(e.id))
          yield* TestClock.adjust("1 second")
          const error = yield* Effect.flip(OutboxStore.use((s) => s.complete(claimed.map(leaseOf))))
          assertLeaseLost(error, { operation: "complete", eventIds: ids(claimed), lockToken: claimed[0]!.lockToken })
          assert.deepStrictEqual(yield* Effect.forEach(claimed, (e) => row(e.id)), before)
        })
      )

      test(
        "renew extends lockedUntil from now and keeps the token",
        Effect.gen(function*() {
          const [event] = yield* publishAll(1)
          const [claimed] = yield* claim()
          assert.strictEqual(claimed!.lockedUntil.getTime(), start + 30_000)
          yield* TestClock.adjust("20 seconds")
          yield* OutboxStore.use((s) => s.renew([leaseOf(claimed!)], lease))
          const renewed = yield* row(event!.id)
          assert.strictEqual(renewed.status, "PROCESSING")
          assert.strictEqual(renewed.lockToken, claimed!.lockToken)
          assert.strictEqual(renewed.lockedUntil!.getTime(), start + 50_000)

          // past the original lease, not past the renewed one: still held
          yield* TestClock.adjust("25 seconds")
          assert.deepStrictEqual(yield* reap, [])
          assert.deepStrictEqual(yield* claim(), [])
          // the lease still fences: complete with it works
          yield* OutboxStore.use((s) => s.complete([leaseOf(claimed!)]))
          assert.strictEqual((yield* row(event!.id)).status, "COMPLETED")
        })
      )

      test(
        "retry marks FAILED with retry_count + 1 and last_error; invisible until the delay passes, then claimable again",
        Effect.gen(function*() {
          const [event] = yield* publishAll(1)
          const [first] = yield* claim()
          yield* OutboxStore.use((s) => s.retry(leaseOf(first!), { error: "broker unavailable", delay: Duration.seconds(10) }))
          const failed = yield* row(event!.id)
          assert.strictEqual(failed.status, "FAILED")
          assert.strictEqual(failed.retryCount, 1)
          assert.strictEqual(failed.lastError, "broker unavailable")
          assert.strictEqual(failed.availableAt!.getTime(), start + 10_000)
          assertUnleased(failed)
          assert.isNull(failed.processedAt)

          assert.deepStrictEqual(yield* claim(), [])
          yield* TestClock.adjust(Duration.millis(9_999))
          assert.deepStrictEqual(yield* claim(), [])
          yield* TestClock.adjust(Duration.millis(1))
          const [second] = yield* claim()
          assert.strictEqual(second!.id, event!.id)
          assert.strictEqual(second!.retryCount, 1)
          assert.notStrictEqual(second!.lockToken, first!.lockToken)
          assert.strictEqual(second!.lockedUntil.getTime(), start + 10_000 + 30_000)
          assert.strictEqual((yield* row(event!.id)).status, "PROCESSING")

          yield* OutboxStore.use((s) => s.retry(leaseOf(second!), { error: "still down", delay: Duration.zero }))
          const again = yield* row(event!.id)
          assert.strictEqual(again.retryCount, 2)
          assert.strictEqual(again.lastError, "still down")
          // a zero delay is claimable at once
          assert.deepStrictEqual(ids(yield* claim()), [event!.id])
        })
      )

      test(
        "a FAILED row waiting for its backoff does not block younger rows",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(3))
          const [first] = yield* claim(1)
          yield* OutboxStore.use((s) => s.retry(leaseOf(first!), { error: "e", delay: Duration.minutes(1) }))
          assert.deepStrictEqual(ids(yield* claim()), published.slice(1))
          yield* TestClock.adjust("1 minute")
          assert.deepStrictEqual(ids(yield* claim()), [published[0]!])
        })
      )

      test(
        "deadLetter marks DEAD_LETTER; the row is never claimed again and does not block others",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(2))
          const [poison] = yield* claim(1)
          yield* TestClock.adjust("2 seconds")
          yield* OutboxStore.use((s) => s.deadLetter(leaseOf(poison!), { error: "cannot parse" }))
          const dead = yield* row(published[0]!)
          assert.strictEqual(dead.status, "DEAD_LETTER")
          assert.strictEqual(dead.retryCount, 1)
          assert.strictEqual(dead.lastError, "cannot parse")
          assert.strictEqual(dead.processedAt!.getTime(), start + 2_000)
          assertUnleased(dead)

          assert.deepStrictEqual(ids(yield* claim()), [published[1]!])
          yield* TestClock.adjust("1 day")
          assert.deepStrictEqual(yield* reap, [published[1]!])
          assert.deepStrictEqual(ids(yield* claim()), [published[1]!])
          assert.strictEqual((yield* row(published[0]!)).status, "DEAD_LETTER")
        })
      )

      test(
        "release returns rows to PENDING, claimable again at once, retry_count unchanged",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(2))
          const [first] = yield* claim(1)
          yield* OutboxStore.use((s) => s.retry(leaseOf(first!), { error: "e", delay: Duration.zero }))
          const claimed = yield* claim()
          assert.deepStrictEqual(ids(claimed), published)
          yield* OutboxStore.use((s) => s.release(claimed.map(leaseOf)))
          const records = yield* Effect.forEach(published, row)
          assert.deepStrictEqual(records.map((r) => r.status), ["PENDING", "PENDING"])
          assert.deepStrictEqual(records.map((r) => r.retryCount), [1, 0])
          records.forEach(assertUnleased)
          const again = yield* claim()
          assert.deepStrictEqual(ids(again), published)
          assert.deepStrictEqual(again.map((e) => e.retryCount), [1, 0])
          assert.notStrictEqual(again[0]!.lockToken, claimed[0]!.lockToken)
        })
      )

      test(
        "a lease listed twice in one batch is applied once and reports nothing",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const [event] = yield* publishAll(1)
          const [claimed] = yield* claim()
          yield* store.renew([leaseOf(claimed!), leaseOf(claimed!)], lease)
          yield* store.complete([leaseOf(claimed!), leaseOf(claimed!)])
          assert.strictEqual((yield* row(event!.id)).status, "COMPLETED")
        })
      )

      test(
        "empty batches are a no-op",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          yield* store.complete([])
          yield* store.renew([], lease)
          yield* store.release([])
        })
      )

      for (
        const [operation, run] of [
          ["renew", (s: OutboxStore["Service"], e: OutboxEvent) => s.renew([leaseOf(e)], lease)],
          ["complete", (s: OutboxStore["Service"], e: OutboxEvent) => s.complete([leaseOf(e)])],
          ["retry", (s: OutboxStore["Service"], e: OutboxEvent) =>
            s.retry(leaseOf(e), { error: "late", delay: Duration.seconds(5) })],
          ["deadLetter", (s: OutboxStore["Service"], e: OutboxEvent) => s.deadLetter(leaseOf(e), { error: "late" })],
          ["release", (s: OutboxStore["Service"], e: OutboxEvent) => s.release([leaseOf(e)])]
        ] as const
      ) {
        test(
          `${operation} with a stale token (reaped and re-claimed) fails with LeaseLost and changes nothing`,
          Effect.gen(function*() {
            const store = yield* OutboxStore
            const { fresh, stale } = yield* staleAndFresh
            yield* TestClock.adjust("1 second")
            const before = yield* row(fresh.id)
            const error = yield* Effect.flip(run(store, stale))
            assertLeaseLost(error, { operation, eventIds: [stale.id], lockToken: stale.lockToken })
            assert.deepStrictEqual(yield* row(fresh.id), before)
            // the current holder is unaffected
            yield* store.complete([leaseOf(fresh)])
            assert.strictEqual((yield* row(fresh.id)).status, "COMPLETED")
          })
        )
      }

      test(
        "a stale token after a reap (not yet re-claimed) is fenced too",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const [event] = yield* publishAll(1)
          const [stale] = yield* claim()
          yield* TestClock.adjust(Duration.sum(lease, Duration.millis(1)))
          assert.deepStrictEqual(yield* reap, [event!.id])
          const before = yield* row(event!.id)
          for (const attempt of [store.complete([leaseOf(stale!)]), store.renew([leaseOf(stale!)], lease)]) {
            assert.instanceOf(yield* Effect.flip(attempt), LeaseLost)
          }
          assert.instanceOf(yield* Effect.flip(store.retry(leaseOf(stale!), { error: "x", delay: lease })), LeaseLost)
          assert.deepStrictEqual(yield* row(event!.id), before)
          assert.strictEqual(before.status, "PENDING")
        })
      )

      test(
        "a batch with a fenced lease applies the others and reports only the fenced one",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const { fresh, stale } = yield* staleAndFresh
          const [other] = yield* publishAll(1)
          const [otherClaim] = yield* claim()
          assert.strictEqual(otherClaim!.id, other!.id)
          const error = yield* Effect.flip(store.complete([leaseOf(stale), leaseOf(otherClaim!)]))
          assertLeaseLost(error, { operation: "complete", eventIds: [stale.id], lockToken: stale.lockToken })
          assert.strictEqual((yield* row(other!.id)).status, "COMPLETED")
          const held = yield* row(fresh.id)
          assert.strictEqual(held.status, "PROCESSING")
          assert.strictEqual(held.lockToken, fresh.lockToken)
        })
      )
    })

    describe("reaping", () => {
      test(
        "reap returns only expired leases to PENDING and yields their ids",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(2))
          const [short] = yield* claim(1, Duration.seconds(10))
          yield* TestClock.adjust("5 seconds")
          const [long] = yield* claim(1, lease)
          assert.deepStrictEqual([short!.id, long!.id], published)

          assert.deepStrictEqual(yield* reap, [])
          // exactly at lockedUntil the lease is not expired yet
          yield* TestClock.adjust("5 seconds")
          assert.deepStrictEqual(yield* reap, [])
          assert.strictEqual((yield* row(short!.id)).status, "PROCESSING")
          yield* TestClock.adjust(Duration.millis(1))
          assert.deepStrictEqual(yield* reap, [short!.id])

          const reaped = yield* row(short!.id)
          assert.strictEqual(reaped.status, "PENDING")
          assertUnleased(reaped)
          assert.strictEqual(reaped.retryCount, 1, "a reaped lease counts as an attempt")
          assert.strictEqual(reaped.lastError, `lease expired at ${at(10_000).toISOString()} and was reaped`)
          const kept = yield* row(long!.id)
          assert.strictEqual(kept.status, "PROCESSING")
          assert.strictEqual(kept.lockToken, long!.lockToken)

          assert.deepStrictEqual(yield* reap, [])
          assert.deepStrictEqual(ids(yield* claim()), [short!.id])
          yield* TestClock.adjust("1 minute")
          assert.deepStrictEqual(sorted(yield* reap), published)
        })
      )

      test(
        "an event whose holders keep crashing is dead-lettered once its retries are used up, and stops being claimed",
        Effect.gen(function*() {
          const [poison] = yield* Outbox.transaction(Outbox.publishAll([input(1, { maxRetries: 1 }), input(2)]))
          const expire = TestClock.adjust(Duration.sum(lease, Duration.millis(1)))

          assert.deepStrictEqual(ids(yield* claim(1)), [poison!.id])
          yield* expire
          assert.deepStrictEqual(yield* reapAll, { requeued: [poison!.id], deadLettered: [] })
          assert.strictEqual((yield* row(poison!.id)).retryCount, 1)

          assert.deepStrictEqual(ids(yield* claim(1)), [poison!.id])
          yield* expire
          const lockedUntil = at(2 * (Duration.toMillis(lease) + 1) - 1)
          assert.deepStrictEqual(yield* reapAll, { requeued: [], deadLettered: [poison!.id] })

          const dead = yield* row(poison!.id)
          assert.strictEqual(dead.status, "DEAD_LETTER")
          assert.strictEqual(dead.retryCount, 2)
          assertUnleased(dead)
          assert.isNotNull(dead.processedAt)
          assert.strictEqual(dead.lastError, `lease expired at ${lockedUntil.toISOString()} and was reaped: dead-lettered after 2 attempts`)
          // the other event is claimable, the dead letter is not
          assert.deepStrictEqual(ids(yield* claim()), [poison!.id + 1n])
        })
      )
    })

    if (options.claimInTransaction === "refused") {
      test(
        "claimInTransaction is refused: a non-retryable StoreError, use not called, nothing changed",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(2))
          const error = yield* Effect.flip(
            store.claimInTransaction({ limit: 10, timeout: txTimeout }, () => Effect.die("use must not be called"))
          )
          assert.instanceOf(error, StoreError)
          assert.isFalse((error as StoreError).retryable)
          assert.deepStrictEqual(ids(yield* claim()), published)
        })
      )
    }

    if (options.claimInTransaction !== "refused") describe("claiming in a transaction (OUTBOX_CLAIM_MODE=transaction)", () => {
      test(
        "use gets the claimable rows in id order, unleased and unchanged for readers; one commit settles completions, retries and dead letters; unlisted rows stay claimable, no attempt counted",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(5))
          yield* TestClock.adjust("5 seconds")
          const seen: Array<OutboxEvent> = []
          const claimed = yield* store.claimInTransaction({ limit: 4, timeout: txTimeout }, (events) =>
            Effect.gen(function*() {
              seen.push(...events)
              for (const event of events) {
                // nothing is written at claim time: the row lock is the lease
                const record = yield* row(event.id)
                assert.strictEqual(record.status, "PENDING")
                assertUnleased(record)
              }
              yield* TestClock.adjust("1 second")
              return {
                completed: [events[0]!],
                retried: [{ event: events[1]!, error: "broker unavailable", delay: Duration.seconds(10) }],
                deadLettered: [{ event: events[2]!, error: "cannot parse" }]
              }
            }))
          assert.deepStrictEqual(ids(claimed), published.slice(0, 4))
          assert.deepStrictEqual(ids(seen), published.slice(0, 4))
          for (const [i, event] of claimed.entries()) {
            assert.strictEqual(event.lockToken, 0n, "no lease: lock token 0")
            assert.strictEqual(event.lockedUntil.getTime(), start + 5_000 + Duration.toMillis(txTimeout))
            assert.strictEqual(event.aggregateId, `order-${i + 1}`)
            assert.deepStrictEqual(event.payload, { n: i + 1 })
            assert.strictEqual(event.retryCount, 0)
          }

          const [done, retried, dead, untouched, unclaimed] = yield* Effect.forEach(published, row)
          assert.strictEqual(done!.status, "COMPLETED")
          assert.strictEqual(done!.processedAt!.getTime(), start + 6_000)
          assert.strictEqual(done!.retryCount, 0)
          assertUnleased(done!)
          assert.strictEqual(retried!.status, "FAILED")
          assert.strictEqual(retried!.retryCount, 1)
          assert.strictEqual(retried!.lastError, "broker unavailable")
          assert.strictEqual(retried!.availableAt!.getTime(), start + 16_000)
          assert.isNull(retried!.processedAt)
          assertUnleased(retried!)
          assert.strictEqual(dead!.status, "DEAD_LETTER")
          assert.strictEqual(dead!.retryCount, 1)
          assert.strictEqual(dead!.lastError, "cannot parse")
          assert.strictEqual(dead!.processedAt!.getTime(), start + 6_000)
          for (const record of [untouched!, unclaimed!]) {
            assert.strictEqual(record.status, "PENDING")
            assert.strictEqual(record.retryCount, 0)
            assert.isNull(record.lastError)
            assertUnleased(record)
          }
          assert.deepStrictEqual(ids(yield* claim()), published.slice(3))
          // the retry is claimable once its backoff passes, in a transaction too
          yield* TestClock.adjust("10 seconds")
          const again = yield* store.claimInTransaction({ limit: 10, timeout: txTimeout }, (events) => Effect.succeed(settled(events)))
          assert.deepStrictEqual(ids(again), [published[1]!])
          assert.strictEqual(again[0]!.retryCount, 1)
          assert.strictEqual((yield* row(published[1]!)).status, "COMPLETED")
        })
      )

      test(
        "rows locked by an open transaction are skipped by both claims (SKIP LOCKED); leased rows are not claimed in a transaction",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(5))
          const [leased] = yield* claim(1)
          assert.strictEqual(leased!.id, published[0]!)
          const claimed = yield* store.claimInTransaction({ limit: 2, timeout: txTimeout }, (events) =>
            Effect.gen(function*() {
              assert.deepStrictEqual(ids(events), published.slice(1, 3))
              // a second transaction and a lease claim, while this one holds its rows
              const inner = yield* store.claimInTransaction(
                { limit: 10, timeout: txTimeout },
                (more) => Effect.succeed(settled(more))
              )
              assert.deepStrictEqual(ids(inner), published.slice(3))
              assert.deepStrictEqual(yield* claim(), [])
              return settled(events)
            }))
          assert.strictEqual(claimed.length, 2)
          const records = yield* Effect.forEach(published, row)
          assert.deepStrictEqual(records.map((r) => r.status), ["PROCESSING", "COMPLETED", "COMPLETED", "COMPLETED", "COMPLETED"])
          assert.strictEqual(records[0]!.lockToken, leased!.lockToken)
        })
      )

      test(
        "concurrent transactions never lock the same row",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(40))
          const rounds = yield* Effect.all(
            Array.from({ length: 6 }, () =>
              store.claimInTransaction({ limit: 5, timeout: txTimeout }, (events) => Effect.succeed(settled(events)))),
            { concurrency: "unbounded" }
          )
          const claimed = rounds.flatMap(ids)
          assert.strictEqual(new Set(claimed).size, claimed.length, "a row was handed to two transactions")
          for (const round of rounds) assert.deepStrictEqual(ids(round), sorted(ids(round)))
          const rest = yield* claim(100)
          assert.deepStrictEqual(sorted([...claimed, ...ids(rest)]), published)
        })
      )

      test(
        "a failing, dying or interrupted use rolls back: nothing changes, the error surfaces unchanged, the rows are claimable at once",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(2))
          const boom = new Boom()
          const error = yield* Effect.flip(store.claimInTransaction({ limit: 10, timeout: txTimeout }, () => Effect.fail(boom)))
          assert.strictEqual(error, boom)
          const died = yield* Effect.exit(store.claimInTransaction({ limit: 10, timeout: txTimeout }, () => Effect.die("crash")))
          assert.isTrue(Exit.isFailure(died))

          const started = yield* Deferred.make<void>()
          const fiber = yield* store.claimInTransaction(
            { limit: 10, timeout: txTimeout },
            () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never)
          ).pipe(Effect.forkChild({ startImmediately: true }))
          yield* Deferred.await(started)
          yield* Fiber.interrupt(fiber)

          for (const record of yield* Effect.forEach(published, row)) {
            assert.strictEqual(record.status, "PENDING")
            assert.strictEqual(record.retryCount, 0)
            assertUnleased(record)
          }
          assert.deepStrictEqual(ids(yield* claim()), published)
        })
      )

      test(
        "a use that outlives the timeout is interrupted and rolled back with a retryable StoreError",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(2))
          const started = yield* Deferred.make<void>()
          const fiber = yield* store.claimInTransaction(
            { limit: 10, timeout: Duration.seconds(2) },
            () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never)
          ).pipe(Effect.forkChild({ startImmediately: true }))
          yield* Deferred.await(started)
          yield* settle
          yield* TestClock.adjust(Duration.millis(1_999))
          yield* settle
          assert.strictEqual((yield* row(published[0]!)).status, "PENDING")
          yield* TestClock.adjust(Duration.millis(1))
          const exit = yield* Fiber.await(fiber)
          assert.isTrue(Exit.isFailure(exit))
          const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
          assert.instanceOf(error, StoreError)
          assert.isTrue((error as StoreError).retryable)
          assert.deepStrictEqual(ids(yield* claim()), published)
        })
      )

      test(
        "an outcome naming a row the transaction did not lock is ignored there; a row listed twice is settled once",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const published = ids(yield* publishAll(3))
          const [leased] = yield* claim(1)
          yield* store.claimInTransaction({ limit: 1, timeout: txTimeout }, (events) =>
            Effect.succeed({
              completed: [events[0]!, leased!],
              retried: [{ event: events[0]!, error: "twice", delay: Duration.seconds(1) }],
              deadLettered: []
            }))
          const [held, done, left] = yield* Effect.forEach(published, row)
          assert.strictEqual(held!.status, "PROCESSING")
          assert.strictEqual(held!.lockToken, leased!.lockToken)
          assert.strictEqual(done!.status, "COMPLETED")
          assert.strictEqual(done!.retryCount, 0)
          assert.isNull(done!.lastError)
          assert.strictEqual(left!.status, "PENDING")
        })
      )

      test(
        "nothing claimable: use is not called and nothing is returned; a negative limit fails with StoreError",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const calls = yield* Ref.make(0)
          const use = (events: ReadonlyArray<OutboxEvent>) => Effect.as(Ref.update(calls, (n) => n + 1), settled(events))
          assert.deepStrictEqual(yield* store.claimInTransaction({ limit: 10, timeout: txTimeout }, use), [])
          const [event] = yield* publishAll(1)
          assert.deepStrictEqual(yield* store.claimInTransaction({ limit: 0, timeout: txTimeout }, use), [])
          assert.strictEqual(yield* Ref.get(calls), 0)
          assert.instanceOf(yield* Effect.flip(store.claimInTransaction({ limit: -1, timeout: txTimeout }, use)), StoreError)
          assert.strictEqual((yield* row(event!.id)).status, "PENDING")
        })
      )
    })

    if (options.ordering === "refused") {
      test(
        "an ordered claim is refused: a non-retryable StoreError, nothing claimed",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(2))
          const error = yield* Effect.flip(claimOrdered())
          assert.instanceOf(error, StoreError)
          assert.isFalse((error as StoreError).retryable)
          for (const id of published) assert.strictEqual((yield* row(id)).status, "PENDING")
          assert.deepStrictEqual(ids(yield* claim()), published)
        })
      )
    }

    if (options.ordering !== "refused") describe("per-key ordering (OUTBOX_ORDERING=key)", () => {
      test(
        "each row keeps its ordering key (explicit, else <aggregateType>:<aggregateId>); claims and get return it",
        Effect.gen(function*() {
          const longest = "k".repeat(1000)
          const published = yield* publishIds([
            input(1),
            input(2, { aggregateType: "Invoice", orderingKey: "customer:42" }),
            input(3, { orderingKey: longest })
          ])
          const expected = ["Order:order-1", "customer:42", longest]
          assert.deepStrictEqual((yield* Effect.forEach(published, row)).map((r) => r.orderingKey), expected)
          const claimed = yield* claimOrdered()
          assert.deepStrictEqual(ids(claimed), published)
          assert.deepStrictEqual(claimed.map((e) => e.orderingKey), expected)
          // an unordered claim returns the key too
          const [other] = yield* publishIds([input(4, { aggregateType: "Invoice", aggregateId: "inv-7" })])
          const [plain] = yield* claim()
          assert.strictEqual(plain!.id, other!)
          assert.strictEqual(plain!.orderingKey, "Invoice:inv-7")
        })
      )

      test(
        "an invalid orderingKey (empty, over 1,000 characters, containing NUL) is refused with InvalidEvent (InvalidOrderingKey) and writes nothing",
        Effect.gen(function*() {
          for (const orderingKey of ["", "k".repeat(1001), "customer\u000042"]) {
            const error = yield* Effect.flip(publishIds([input(1), input(2, { orderingKey })]))
            assert.instanceOf(error, InvalidEvent)
            const invalid = error as InvalidEvent
            assert.strictEqual(invalid.reason, "InvalidOrderingKey")
            assert.strictEqual(invalid.field, "orderingKey")
            assert.strictEqual(invalid.index, 1)
          }
          assert.deepStrictEqual(yield* claim(), [])
        })
      )

      test(
        "an ordered claim takes each key's head, oldest first, one per key, up to limit; a key's next event only after its head completes",
        Effect.gen(function*() {
          // keys: a = [0, 2, 4], b = [1, 5], c = [3]
          const p = yield* publishIds([
            onKey(1, "a"),
            onKey(2, "b"),
            onKey(3, "a"),
            onKey(4, "c"),
            onKey(5, "a"),
            onKey(6, "b")
          ])
          const first = yield* claimOrdered(2)
          assert.deepStrictEqual(ids(first), [p[0]!, p[1]!])
          assert.strictEqual(first[0]!.lockToken, first[1]!.lockToken)
          // a and b are in flight: only c's head is left
          const second = yield* claimOrdered(10)
          assert.deepStrictEqual(ids(second), [p[3]!])
          assert.deepStrictEqual(yield* claimOrdered(10), [])
          yield* completeAll([first[0]!])
          const third = yield* claimOrdered(10)
          assert.deepStrictEqual(ids(third), [p[2]!])
          yield* completeAll([first[1]!, second[0]!])
          assert.deepStrictEqual(ids(yield* claimOrdered(10)), [p[5]!])
          yield* completeAll(third)
          assert.deepStrictEqual(ids(yield* claimOrdered(10)), [p[4]!])
          assert.deepStrictEqual(yield* claimOrdered(10), [])
        })
      )

      for (const run of [undefined, 4]) test(
        `a key whose head waits out a backoff, with its later events filling the oldest rows, never stalls the other keys: they drain claim after claim (${run === undefined ? "heads only" : "with runs"})`,
        Effect.gen(function*() {
          {
            const [stuckKey, ...others] = ["stuck", "x", "y", "z"]
            const stuck = yield* publishIds(Array.from({ length: 12 }, (_, i) => onKey(i + 1, stuckKey!)))
            for (let n = 0; n < 10; n++) yield* publishIds(others.map((k, i) => onKey(100 + 10 * n + i, k)))
            const [head] = yield* claimOrdered(1)
            assert.strictEqual(head!.id, stuck[0]!)
            yield* OutboxStore.use((s) => s.retry(leaseOf(head!), { error: "e", delay: Duration.minutes(1) }))
            // claims of 4: their window of the oldest due rows holds only the stuck key's; the walk finds the rest
            const taken: Array<OutboxEvent> = []
            for (let i = 0; i < 40 && taken.length < 30; i++) {
              const batch = yield* claimOrdered(4, "continue", run)
              taken.push(...batch)
              yield* completeAll(batch)
            }
            assert.strictEqual(taken.length, 30, `run ${run}: the other keys' 30 events`)
            for (const key of others) {
              const of = ids(taken.filter((e) => e.aggregateId === key))
              assert.strictEqual(of.length, 10, key)
              assert.deepStrictEqual(of, [...of].sort((a, b) => (a < b ? -1 : 1)), `${key} in order`)
            }
          }
        })
      )

      test(
        "with slice, an ordered claim takes only its slice's keys: the slices of a count partition the keys, each key's rules unchanged (window, walk and runs)",
        Effect.gen(function*() {
          const sliced = (index: number, count: number, limit: number, run?: number) =>
            Effect.flatMap(OutboxStore, (store) =>
              store.claim({ limit, leaseDuration: lease, ordering: { deadLetter: "continue", run, slice: { index, count } } }))
          // key z's backlog in front (the window of a small claim sees only z), then 24 keys of 3 events each
          const z = yield* publishIds(Array.from({ length: 20 }, (_, i) => onKey(i + 1, "z")))
          const keys = Array.from({ length: 24 }, (_, i) => `k${i}`)
          const rest = yield* publishIds(keys.flatMap((k, i) => [onKey(100 + i, k), onKey(200 + i, k), onKey(300 + i, k)]))
          const firstOf = new Map<string, bigint>([["Order:z", z[0]!]])
          keys.forEach((k, i) => firstOf.set(`Order:${k}`, rest[3 * i]!))
          // claims of 3 per slice, each slice until it comes back empty: heads only, each key in one slice only
          const count = 3
          const sliceOfKey = new Map<string, number>()
          const taken: Array<OutboxEvent> = []
          for (let index = 0; index < count; index++) {
            for (let round = 0; round < 30; round++) {
              const batch = yield* sliced(index, count, 3)
              if (batch.length === 0) break
              for (const event of batch) {
                const key = event.orderingKey ?? ""
                assert.strictEqual(sliceOfKey.get(key) ?? index, index, `${key} claimed by two slices`)
                sliceOfKey.set(key, index)
                assert.strictEqual(event.id, firstOf.get(key), `${key}: not its head`)
                taken.push(event)
              }
            }
          }
          assert.strictEqual(taken.length, 25, "every key's head, once")
          assert.isAbove(new Set(sliceOfKey.values()).size, 1, "the keys spread over the slices")
          // every head in flight: no slice, and no unsliced claim, takes a key's next event
          for (let index = 0; index < count; index++) assert.deepStrictEqual(yield* sliced(index, count, 100), [])
          assert.deepStrictEqual(yield* claimOrdered(100), [])
          yield* completeAll(taken)
          // with runs: each slice's keys' next events in id order, nothing of another slice
          const seen: Array<bigint> = []
          for (let index = 0; index < count; index++) {
            const batch = yield* sliced(index, count, 1000, 50)
            for (const event of batch) assert.strictEqual(sliceOfKey.get(event.orderingKey ?? ""), index)
            assert.deepStrictEqual(ids(batch), [...ids(batch)].sort((a, b) => (a < b ? -1 : 1)))
            seen.push(...ids(batch))
          }
          const expected = [...z.slice(1), ...keys.flatMap((_, i) => [rest[3 * i + 1]!, rest[3 * i + 2]!])]
          assert.deepStrictEqual(seen.sort((a, b) => (a < b ? -1 : 1)), expected.sort((a, b) => (a < b ? -1 : 1)))
        })
      )

      test(
        "with run, an ordered claim takes the heads, then fills the room with the events after them: an equal share per key, in id order",
        Effect.gen(function*() {
          // keys: a = [0, 2, 4, 6], b = [1, 3], c = [5]
          const p = yield* publishIds([
            onKey(1, "a"),
            onKey(2, "b"),
            onKey(3, "a"),
            onKey(4, "b"),
            onKey(5, "a"),
            onKey(6, "c"),
            onKey(7, "a")
          ])
          // 3 heads, room 2: one more event each of the two oldest runs
          const first = yield* claimOrdered(5, "continue", 10)
          assert.deepStrictEqual(ids(first), [p[0]!, p[1]!, p[2]!, p[3]!, p[5]!])
          assert.strictEqual(new Set(first.map((e) => e.lockToken)).size, 1)
          assert.deepStrictEqual(yield* claimOrdered(5, "continue", 10), [])
          yield* completeAll(first)
          // one key left: its head and the rest of its run
          assert.deepStrictEqual(ids(yield* claimOrdered(5, "continue", 10)), [p[4]!, p[6]!])
          // run 2 caps a key at two events per claim
          const [q1, q2, q3] = yield* publishIds([onKey(8, "d"), onKey(9, "d"), onKey(10, "d")])
          assert.deepStrictEqual(ids(yield* claimOrdered(10, "continue", 2)), [q1!, q2!])
          assert.strictEqual((yield* row(q3!)).status, "PENDING")
        })
      )

      test(
        "with run, when the room is smaller than the heads taken, it goes to the oldest heads' keys, one event each",
        Effect.gen(function*() {
          // keys: a = [0, 5], b = [1, 2], c = [3, 4]; heads 0, 1, 3; room 1
          const p = yield* publishIds([
            onKey(1, "a"),
            onKey(2, "b"),
            onKey(3, "b"),
            onKey(4, "c"),
            onKey(5, "c"),
            onKey(6, "a")
          ])
          // a's run (the oldest head's), not b's lower-id event: the claim reads one run, not all three
          assert.deepStrictEqual(ids(yield* claimOrdered(4, "continue", 10)), [p[0]!, p[1]!, p[3]!, p[5]!])
          // room 2 of 3 heads: a's and b's runs
          const q = yield* publishIds([onKey(7, "d"), onKey(8, "e"), onKey(9, "f"), onKey(10, "f"), onKey(11, "e"), onKey(12, "d")])
          assert.deepStrictEqual(ids(yield* claimOrdered(5, "continue", 10)), [q[0]!, q[1]!, q[2]!, q[4]!, q[5]!])
        })
      )

      // A claim may read its runs from the oldest due rows it already holds (PgOutboxStore: the window) instead
      // of the key's own index; these room-of-one claims are where a run read there, without the rules, is wrong
      test(
        "with run, a run from the claim's oldest rows still stops before an event that is not due",
        Effect.gen(function*() {
          // keys: a = [a1, a2 (not due), a3], b = [b1]; the 3 oldest due rows are a1, a3, b1: heads a1, b1, room 1
          const [a1, a2, a3, b1] = yield* publishIds([
            onKey(1, "a"),
            onKey(2, "a", { availableAt: at(5 * 60_000) }),
            onKey(3, "a"),
            onKey(4, "b")
          ])
          assert.deepStrictEqual(ids(yield* claimOrdered(3, "continue", 10)), [a1!, b1!])
          assert.strictEqual((yield* row(a2!)).status, "PENDING")
          assert.strictEqual((yield* row(a3!)).status, "PENDING")
        })
      )

      for (const deadLetter of ["continue", "hold"] as const) {
        test(
          `with run, a run from the claim's oldest rows goes past a dead letter only with deadLetter continue (${deadLetter})`,
          Effect.gen(function*() {
            // keys: b = [b1, b2 (dead letter), b3], a = [a1], c = [c1]; the 4 oldest due rows are b1, a1, b3, c1
            const [b1, b2, a1, b3, c1] = yield* publishIds([
              onKey(1, "b"),
              onKey(2, "b"),
              onKey(3, "a"),
              onKey(4, "b"),
              onKey(5, "c")
            ])
            yield* deadLetterAboveHead(b1!, b2!)
            // heads b1, a1 and c1, room 1: b's run (the oldest head's) is b3, past the dead letter or not at all
            const claimed = yield* claimOrdered(4, deadLetter, 10)
            assert.deepStrictEqual(ids(claimed), deadLetter === "continue" ? [b1!, a1!, b3!, c1!] : [b1!, a1!, c1!])
          })
        )
      }

      for (const deadLetter of ["continue", "hold"] as const) {
        test(
          `a run stops before an event that is not due${
            deadLetter === "continue" ? ", and goes past a dead letter with deadLetter continue" : " and, with hold, before a dead letter"
          }`,
          Effect.gen(function*() {
            const [a1, a2, a3, a4, a5, b1] = yield* publishIds([
              onKey(1, "a"),
              onKey(2, "a"),
              onKey(3, "a"),
              onKey(4, "a", { availableAt: at(5 * 60_000) }),
              onKey(5, "a"),
              onKey(6, "b")
            ])
            yield* deadLetterAboveHead(a1!, a2!)
            const claimed = yield* claimOrdered(100, deadLetter, 100)
            assert.deepStrictEqual(ids(claimed), deadLetter === "continue" ? [a1!, a3!, b1!] : [a1!, b1!])
            assert.strictEqual((yield* row(a4!)).status, "PENDING")
            assert.strictEqual((yield* row(a5!)).status, "PENDING")
          })
        )
      }

      test(
        "a key with an event in flight is blocked even when that event is not its head (rows claimed before ordering was switched on)",
        Effect.gen(function*() {
          const [a1, a2, b1] = yield* publishIds([onKey(1, "a"), onKey(2, "a"), onKey(3, "b")])
          // an unordered claim takes the whole key; its head fails at once, a2 stays in flight
          const plain = yield* claim(2)
          assert.deepStrictEqual(ids(plain), [a1!, a2!])
          yield* OutboxStore.use((s) => s.retry(leaseOf(plain[0]!), { error: "e", delay: Duration.zero }))
          assert.deepStrictEqual(ids(yield* claimOrdered()), [b1!])
          yield* completeAll([plain[1]!])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [a1!])
        })
      )

      test(
        "a failed head blocks its key until its backoff passes, other keys flow meanwhile; then the head goes first",
        Effect.gen(function*() {
          const [a1, a2, b1] = yield* publishIds([onKey(1, "a"), onKey(2, "a"), onKey(3, "b")])
          const first = yield* claimOrdered()
          assert.deepStrictEqual(ids(first), [a1!, b1!])
          yield* OutboxStore.use((s) => s.retry(leaseOf(first[0]!), { error: "broker unavailable", delay: Duration.seconds(10) }))
          yield* completeAll([first[1]!])
          const [b2] = yield* publishIds([onKey(4, "b")])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [b2!])
          yield* TestClock.adjust(Duration.millis(9_999))
          assert.deepStrictEqual(yield* claimOrdered(), [])
          assert.strictEqual((yield* row(a2!)).status, "PENDING")
          yield* TestClock.adjust(Duration.millis(1))
          const [again] = yield* claimOrdered()
          assert.strictEqual(again!.id, a1!)
          assert.strictEqual(again!.retryCount, 1)
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* completeAll([again!])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [a2!])
        })
      )

      for (const deadLetter of ["continue", "hold"] as const) {
        test(
          `a dead-lettered head with deadLetter "${deadLetter}": the key's next event ${
            deadLetter === "continue" ? "goes next" : "stays blocked"
          }, other keys flow`,
          Effect.gen(function*() {
            const [a1, a2, b1] = yield* publishIds([onKey(1, "a"), onKey(2, "a"), onKey(3, "b")])
            const first = yield* claimOrdered(100, deadLetter)
            assert.deepStrictEqual(ids(first), [a1!, b1!])
            yield* OutboxStore.use((s) => s.deadLetter(leaseOf(first[0]!), { error: "cannot parse" }))
            yield* completeAll([first[1]!])
            const [b2] = yield* publishIds([onKey(4, "b")])
            const next = yield* claimOrdered(100, deadLetter)
            if (deadLetter === "continue") {
              assert.deepStrictEqual(ids(next), [a2!, b2!])
            } else {
              assert.deepStrictEqual(ids(next), [b2!])
              yield* completeAll(next)
              yield* TestClock.adjust("1 day")
              assert.deepStrictEqual(yield* claimOrdered(100, deadLetter), [])
              assert.strictEqual((yield* row(a2!)).status, "PENDING")
              assert.strictEqual((yield* row(a1!)).status, "DEAD_LETTER")
            }
          })
        )
      }

      test(
        "a scheduled head blocks its key's later events until it is due",
        Effect.gen(function*() {
          const [a1, a2, b1] = yield* publishIds([
            onKey(1, "a", { availableAt: at(5 * 60_000) }),
            onKey(2, "a"),
            onKey(3, "b")
          ])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [b1!])
          yield* TestClock.adjust(Duration.subtract(Duration.minutes(5), Duration.millis(1)))
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* TestClock.adjust("1 millis")
          const [head] = yield* claimOrdered()
          assert.strictEqual(head!.id, a1!)
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* completeAll([head!])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [a2!])
        })
      )

      test(
        "an explicit orderingKey orders events of different aggregates as one key, and splits one aggregate into independent keys",
        Effect.gen(function*() {
          const [order, invoice, x1, y1, x2] = yield* publishIds([
            input(1, { orderingKey: "customer:42" }),
            input(2, { aggregateType: "Invoice", aggregateId: "inv-1", orderingKey: "customer:42" }),
            onKey(3, "shared", { orderingKey: "x" }),
            onKey(4, "shared", { orderingKey: "y" }),
            onKey(5, "shared", { orderingKey: "x" })
          ])
          const first = yield* claimOrdered()
          assert.deepStrictEqual(ids(first), [order!, x1!, y1!])
          yield* completeAll(first)
          assert.deepStrictEqual(ids(yield* claimOrdered()), [invoice!, x2!])
        })
      )

      test(
        "an event of a key in a transaction that has not committed yet holds back the key's events committed after it (higher ids) until it commits and completes",
        Effect.gen(function*() {
          const published = yield* Deferred.make<PublishedEvent>()
          const commit = yield* Deferred.make<void>()
          // forked outside any transaction: the writer's transaction is its own (its own connection on PostgreSQL)
          const writer = yield* Outbox.transaction(
            Effect.tap(
              Outbox.publish(onKey(1, "a")),
              (event) => Effect.andThen(Deferred.succeed(published, event), Deferred.await(commit))
            )
          ).pipe(Effect.forkChild({ startImmediately: true }))
          const a1 = (yield* Deferred.await(published)).id
          const [a2, b1] = yield* publishIds([onKey(2, "a"), onKey(3, "b")])
          assert.isTrue(a2! > a1)
          // a2 is the lowest visible row of key a, but a1 was drawn first
          assert.deepStrictEqual(ids(yield* claimOrdered()), [b1!])
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* Deferred.succeed(commit, undefined)
          assert.strictEqual((yield* Fiber.join(writer)).id, a1)
          const [head] = yield* claimOrdered()
          assert.strictEqual(head!.id, a1)
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* completeAll([head!])
          assert.deepStrictEqual(ids(yield* claimOrdered()), [a2!])
        })
      )

      test(
        "after a full claim (a backlog), the next claims still see events committed since and still hold back a key with an uncommitted lower id",
        Effect.gen(function*() {
          // full claims: PostgreSQL's next claim reuses the probe the full one ran inside its statement
          const [x1, y1] = yield* publishIds([onKey(1, "x"), onKey(2, "y")])
          const backlog = yield* claimOrdered(2)
          assert.deepStrictEqual(ids(backlog), [x1!, y1!])
          yield* completeAll(backlog)
          // committed after that probe: the reused probe cannot see it, the claim must not come back empty
          const [z1] = yield* publishIds([onKey(3, "z")])
          assert.deepStrictEqual(ids(yield* claimOrdered(1)), [z1!])
          // z1's claim was full too: a transaction draws a1 and stays open, a2 and b1 commit after it
          const published = yield* Deferred.make<PublishedEvent>()
          const commit = yield* Deferred.make<void>()
          const writer = yield* Outbox.transaction(
            Effect.tap(
              Outbox.publish(onKey(4, "a")),
              (event) => Effect.andThen(Deferred.succeed(published, event), Deferred.await(commit))
            )
          ).pipe(Effect.forkChild({ startImmediately: true }))
          const a1 = (yield* Deferred.await(published)).id
          const [a2, b1] = yield* publishIds([onKey(5, "a"), onKey(6, "b")])
          const [b] = yield* claimOrdered(1)
          assert.strictEqual(b!.id, b1!)
          // full again, while a1 is uncommitted: a2 stays behind it
          assert.deepStrictEqual(yield* claimOrdered(1), [])
          yield* Deferred.succeed(commit, undefined)
          assert.strictEqual((yield* Fiber.join(writer)).id, a1)
          const [head] = yield* claimOrdered(1)
          assert.strictEqual(head!.id, a1)
          yield* completeAll([head!, b!])
          assert.deepStrictEqual(ids(yield* claimOrdered(1)), [a2!])
        })
      )

      test(
        "a rolled-back transaction's lower id does not hold a key back once it is gone",
        Effect.gen(function*() {
          const published = yield* Deferred.make<void>()
          const rollBack = yield* Deferred.make<void>()
          const writer = yield* Outbox.transaction(
            Effect.andThen(
              Outbox.publish(onKey(1, "a")),
              Effect.andThen(Deferred.succeed(published, undefined), Effect.andThen(Deferred.await(rollBack), Effect.fail(new Boom())))
            )
          ).pipe(Effect.forkChild({ startImmediately: true }))
          yield* Deferred.await(published)
          const [a2] = yield* publishIds([onKey(2, "a")])
          assert.deepStrictEqual(yield* claimOrdered(), [])
          yield* Deferred.succeed(rollBack, undefined)
          assert.instanceOf(yield* Effect.flip(Fiber.join(writer)), Boom)
          assert.deepStrictEqual(ids(yield* claimOrdered()), [a2!])
        })
      )

      if (options.claimInTransaction !== "refused") {
        test(
          "claimInTransaction with ordering and run locks each key's run; the events it leaves unsettled stay claimable, in order",
          Effect.gen(function*() {
            const store = yield* OutboxStore
            // keys: a = [0, 1, 2], b = [3]
            const p = yield* publishIds([onKey(1, "a"), onKey(2, "a"), onKey(3, "a"), onKey(4, "b")])
            const claimed = yield* store.claimInTransaction(
              { limit: 10, timeout: txTimeout, ordering: { deadLetter: "continue", run: 10 } },
              (events) =>
                Effect.gen(function*() {
                  assert.deepStrictEqual(ids(events), [p[0]!, p[1]!, p[2]!, p[3]!])
                  // while it holds them, no other ordered claim takes any of the keys
                  assert.deepStrictEqual(yield* claimOrdered(10, "continue", 10), [])
                  // a's first event delivered, its second failed: the third is left as it was
                  return {
                    completed: [events[0]!, events[3]!],
                    retried: [{ event: events[1]!, error: "failed", delay: Duration.zero }],
                    deadLettered: []
                  }
                })
            )
            assert.strictEqual(claimed.length, 4)
            assert.strictEqual((yield* row(p[2]!)).status, "PENDING")
            assert.strictEqual((yield* row(p[2]!)).retryCount, 0)
            // the retried event is a's head again, the one left unsettled follows it
            assert.deepStrictEqual(ids(yield* claimOrdered(10, "continue", 10)), [p[1]!, p[2]!])
          })
        )

        test(
          "claimInTransaction with ordering locks one head per key, skips keys in flight, and its locks hold the keys for other ordered claims",
          Effect.gen(function*() {
            const store = yield* OutboxStore
            const ordering: Ordering = { deadLetter: "continue" }
            // keys: c = [0, 4], a = [1, 2], b = [3, 5]
            const p = yield* publishIds([
              onKey(1, "c"),
              onKey(2, "a"),
              onKey(3, "a"),
              onKey(4, "b"),
              onKey(5, "c"),
              onKey(6, "b")
            ])
            const [leased] = yield* claimOrdered(1)
            assert.strictEqual(leased!.id, p[0]!)
            const claimed = yield* store.claimInTransaction({ limit: 10, timeout: txTimeout, ordering }, (events) =>
              Effect.gen(function*() {
                assert.deepStrictEqual(ids(events), [p[1]!, p[3]!])
                assert.deepStrictEqual(events.map((e) => e.orderingKey), ["Order:a", "Order:b"])
                // while this transaction holds a and b, and c is leased: nothing for other ordered claims
                assert.deepStrictEqual(yield* claimOrdered(), [])
                const inner = yield* store.claimInTransaction(
                  { limit: 10, timeout: txTimeout, ordering },
                  (more) => Effect.succeed(settled(more))
                )
                assert.deepStrictEqual(inner, [])
                return settled(events)
              }))
            assert.deepStrictEqual(ids(claimed), [p[1]!, p[3]!])
            const next = yield* store.claimInTransaction(
              { limit: 10, timeout: txTimeout, ordering },
              (events) => Effect.succeed(settled(events))
            )
            assert.deepStrictEqual(ids(next), [p[2]!, p[5]!])
            assert.strictEqual((yield* row(p[4]!)).status, "PENDING")
            yield* completeAll([leased!])
            assert.deepStrictEqual(ids(yield* claimOrdered()), [p[4]!])
          })
        )
      }
    })

    if (options.fairness === "refused") {
      test(
        "a fair claim is refused: a non-retryable StoreError, nothing claimed",
        Effect.gen(function*() {
          const published = ids(yield* publishAll(2))
          const error = yield* Effect.flip(claimFair())
          assert.instanceOf(error, StoreError)
          assert.isFalse((error as StoreError).retryable)
          for (const id of published) assert.strictEqual((yield* row(id)).status, "PENDING")
          assert.deepStrictEqual(ids(yield* claim()), published)
        })
      )
    }

    if (options.fairness !== "refused") describe("tenant-fair claiming (OUTBOX_FAIRNESS=tenant)", () => {
      test(
        "each row keeps its tenant (explicit, else metadata.tenant when a string, else \"\"); claims and get return it",
        Effect.gen(function*() {
          const longest = "t".repeat(200)
          const published = yield* publishIds([
            input(1),
            input(2, { metadata: { tenant: "acme" } }),
            input(3, { metadata: { tenant: 42 } }),
            input(4, { tenant: "globex", metadata: { tenant: "acme" } }),
            input(5, { tenant: longest })
          ])
          const expected = ["", "acme", "", "globex", longest]
          assert.deepStrictEqual((yield* Effect.forEach(published, row)).map((r) => r.tenant), expected)
          const claimed = yield* claimFair()
          assert.deepStrictEqual(ids(claimed), published)
          assert.deepStrictEqual(claimed.map((e) => e.tenant), expected)
          // an unfair claim returns the tenant too
          const [other] = yield* publishIds([input(6, { metadata: { tenant: "initech" } })])
          const [plain] = yield* claim()
          assert.strictEqual(plain!.id, other!)
          assert.strictEqual(plain!.tenant, "initech")
        })
      )

      test(
        "an invalid tenant (empty, over 200 characters, containing NUL) is refused with InvalidEvent (InvalidTenant) and writes nothing",
        Effect.gen(function*() {
          for (const tenant of ["", "t".repeat(201), "acme\u0000corp"]) {
            const error = yield* Effect.flip(publishIds([input(1), input(2, { tenant })]))
            assert.instanceOf(error, InvalidEvent)
            const invalid = error as InvalidEvent
            assert.strictEqual(invalid.reason, "InvalidTenant")
            assert.strictEqual(invalid.field, "tenant")
            assert.strictEqual(invalid.index, 1)
          }
          assert.deepStrictEqual(yield* claim(), [])
        })
      )

      test(
        "a tenant's backlog does not hold back another tenant's new events: each tenant with work gets ceil(limit / tenants), oldest first; an unused share is not handed on",
        Effect.gen(function*() {
          const backlog = yield* publishIds(Array.from({ length: 50 }, (_, i) => ofTenant(i + 1, "a")))
          const fresh = yield* publishIds([ofTenant(51, "b"), ofTenant(52, "b"), ofTenant(53, "b")])
          // without fairness: oldest first, so b waits for the whole backlog
          const unfair = yield* claim(10)
          assert.deepStrictEqual(ids(unfair), backlog.slice(0, 10))
          yield* OutboxStore.use((s) => s.release(unfair.map(leaseOf)))
          // with fairness: a and b get 5 each; b has only 3, the other 2 stay unclaimed
          const fair = yield* claimFair(10)
          assert.deepStrictEqual(ids(fair), [...backlog.slice(0, 5), ...fresh])
          assert.deepStrictEqual(fair.map((e) => e.tenant), ["a", "a", "a", "a", "a", "b", "b", "b"])
          const token = fair[0]!.lockToken
          for (const event of fair) {
            assert.strictEqual(event.lockToken, token)
            assert.strictEqual(event.lockedUntil.getTime(), start + 30_000)
            assert.strictEqual((yield* row(event.id)).status, "PROCESSING")
          }
          // b's events are in flight: a is the only tenant with work and gets the whole limit
          assert.deepStrictEqual(ids(yield* claimFair(10)), backlog.slice(5, 15))
        })
      )

      test(
        "with more tenants with work than maxTenants, each fair claim takes maxTenants of them, going on from where the previous one stopped (wrapping around): every tenant has a turn within ceil(tenants / maxTenants) claims",
        Effect.gen(function*() {
          const byTenant = yield* publishTenants(["t1", "t2", "t3", "t4", "t5"], 4)
          const check = rotation(byTenant)
          // limit 4 over 2 tenants: 2 events each, e.g. (t1, t2), (t3, t4), (t5, t1), (t2, t3), (t4, t5)
          const turns: Array<ReadonlyArray<string>> = []
          for (let round = 0; round < 5; round++) turns.push(check(yield* claimFair(4, 2), 2, 2))
          assert.deepStrictEqual(new Set(turns.slice(0, 3).flat()), new Set(byTenant.keys()))
          assert.deepStrictEqual(yield* claimFair(4, 2), [])
        })
      )

      test(
        "a tenant the limit runs out before gets no event and goes first in the next fair claim: no tenant starves",
        Effect.gen(function*() {
          // limit 4 over 3 tenants: a share of 2, so the third tenant of a claim gets none
          const byTenant = yield* publishTenants(["x", "y", "z"], 4)
          const check = rotation(byTenant)
          const turns: Array<ReadonlyArray<string>> = []
          for (let round = 0; round < 3; round++) turns.push(check(yield* claimFair(4), 2, 2))
          assert.deepStrictEqual(new Set(turns.slice(0, 2).flat()), new Set(byTenant.keys()))
          assert.deepStrictEqual(yield* claimFair(4), [])
          // limit 1: one tenant per claim, each in turn
          const single = yield* publishTenants(["p", "q", "r"], 2)
          const checkSingle = rotation(single)
          for (let round = 0; round < 6; round++) checkSingle(yield* claimFair(1), 1, 1)
          assert.deepStrictEqual(yield* claimFair(1), [])
        })
      )

      test(
        "a tenant whose events are all in flight, waiting out a backoff or scheduled later takes no turn and no share",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const [c1] = yield* publishIds([ofTenant(1, "c")])
          const [inFlight] = yield* claim(1)
          assert.strictEqual(inFlight!.id, c1!)
          const [d1] = yield* publishIds([ofTenant(2, "d")])
          const [failing] = yield* claim(1)
          assert.strictEqual(failing!.id, d1!)
          yield* store.retry(leaseOf(failing!), { error: "broker unavailable", delay: Duration.seconds(10) })
          const [b1] = yield* publishIds([ofTenant(3, "b", { availableAt: at(60_000) })])
          const a = yield* publishIds(Array.from({ length: 8 }, (_, i) => ofTenant(4 + i, "a")))
          // only a has due work: it gets the whole limit
          assert.deepStrictEqual(ids(yield* claimFair(4)), a.slice(0, 4))
          // d's backoff has passed: a and d get 2 each; d has one event, its other share is not handed to a
          yield* TestClock.adjust("10 seconds")
          assert.deepStrictEqual(ids(yield* claimFair(4)), [d1!, ...a.slice(4, 6)])
          // b's event is due; c's is still PROCESSING (its lease expired, but nobody reaped it)
          yield* TestClock.adjust("50 seconds")
          assert.strictEqual((yield* row(c1!)).status, "PROCESSING")
          assert.deepStrictEqual(ids(yield* claimFair(4)), [b1!, ...a.slice(6, 8)])
          assert.deepStrictEqual(yield* claimFair(4), [])
        })
      )

      test(
        "with ordering and fairness together: one event per key in id order, heads taken tenant by tenant in turn, so another tenant's new event is not held back by a backlog",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const both = (limit: number, run?: number) =>
            store.claim({ limit, leaseDuration: lease, ordering: { deadLetter: "continue", run }, fairness: {} })
          // tenant a: 3 events on each of 20 keys (interleaved), then tenant b: 2 events of one key
          const a = yield* publishIds(Array.from({ length: 60 }, (_, i) => ofTenant(i + 1, "a", { aggregateId: `a-${i % 20}` })))
          const b = yield* publishIds([ofTenant(61, "b", { aggregateId: "b-0" }), ofTenant(62, "b", { aggregateId: "b-0" })])
          // a's oldest head, b's head (the turn's first of each tenant, oldest first), then a's next heads
          const first = yield* both(4)
          assert.deepStrictEqual(ids(first), [a[0]!, a[1]!, a[2]!, b[0]!])
          // b's key is in flight: its second event waits; a's next keys' heads
          assert.deepStrictEqual(ids(yield* both(4)), [a[3]!, a[4]!, a[5]!, a[6]!])
          yield* completeAll(first)
          // b's second event is its key's head now; a's keys 0-2 have their second events as heads again
          assert.deepStrictEqual(ids(yield* both(3)), [a[7]!, a[8]!, b[1]!])
          // with runs: a head per key in turn first, then the runs of the heads taken
          const rest = yield* both(1000, 1000)
          const seen = new Map<string, bigint>()
          for (const event of rest) {
            const before = seen.get(event.orderingKey!)
            assert.isTrue(before === undefined || before < event.id, "a key's events in id order")
            seen.set(event.orderingKey!, event.id)
            assert.strictEqual(event.tenant, "a")
          }
          // the rest of every key not in flight: keys a-3 to a-8 and b-0 are, so none of their events is taken
          const expected = a.filter((_, i) => {
            const key = i % 20
            return key <= 2 ? i >= 20 : key >= 9
          })
          assert.deepStrictEqual(ids(rest), expected)
        })
      )

      test(
        "with ordering and fairness, a claim of one slice of the keys never takes the next event of a key in flight, whichever slice the key has",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const [x1, x2] = yield* publishIds([ofTenant(1, "a", { aggregateId: "x" }), ofTenant(2, "a", { aggregateId: "x" })])
          const [first] = yield* claimOrdered(1)
          assert.strictEqual(first!.id, x1!)
          for (const index of [0, 1]) {
            const claimed = yield* store.claim({
              limit: 10,
              leaseDuration: lease,
              ordering: { deadLetter: "continue", slice: { index, count: 2 } },
              fairness: {}
            })
            assert.notInclude(ids(claimed), x2!, `slice ${index} of 2`)
          }
          yield* completeAll([first!])
          // once x's first event is completed, its second is a head (some slice's claim, or the whole space's, takes it)
          assert.deepStrictEqual(ids(yield* claimOrdered(10)), [x2!])
        })
      )

      test(
        "with ordering, fairness and maxInFlight: heads only, each tenant's up to the room under its cap; settling makes room",
        Effect.gen(function*() {
          const store = yield* OutboxStore
          const capped = (limit: number, run?: number) =>
            store.claim({ limit, leaseDuration: lease, ordering: { deadLetter: "continue", run }, fairness: { maxInFlight: 2 } })
          // a: 2 events on each of 4 keys; b: 2 events on one key
          const a = yield* publishIds(Array.from({ length: 8 }, (_, i) => ofTenant(i + 1, "a", { aggregateId: `a-${i % 4}` })))
          const b = yield* publishIds([ofTenant(9, "b", { aggregateId: "b-0" }), ofTenant(10, "b", { aggregateId: "b-0" })])
          // heads in turn, 2 of a (its cap), b's one head; no run even when asked for (a run would be in flight at once)
          const first = yield* capped(10, 10)
          assert.deepStrictEqual(ids(first), [a[0]!, a[1]!, b[0]!])
          // a is at its cap; b's key is in flight
          assert.deepStrictEqual(yield* capped(10, 10), [])
          // one of a's settles: room for one more of a's heads (the next key's; a-0's second event too is a head now)
          yield* completeAll([first[0]!])
          assert.deepStrictEqual(ids(yield* capped(10)), [a[2]!])
          // in flight: a-1, a-2 (a at its cap) and b-0
          const rows = yield* Effect.forEach([...a, ...b], row)
          assert.strictEqual(rows.filter((r) => r.status === "PROCESSING" && r.tenant === "a").length, 2)
        })
      )

      test(
        "with maxInFlight, a tenant at its cap is left out of the turn and one below it gets at most the room left; settling makes room",
        Effect.gen(function*() {
          const a = yield* publishIds(Array.from({ length: 6 }, (_, i) => ofTenant(i + 1, "a")))
          const b = yield* publishIds(Array.from({ length: 6 }, (_, i) => ofTenant(i + 7, "b")))
          const capped = (limit: number) =>
            OutboxStore.use((s) => s.claim({ limit, leaseDuration: lease, fairness: { maxInFlight: 2 } }))
          // shares of 5 each, cut to the cap of 2
          const first = yield* capped(10)
          assert.deepStrictEqual(ids(first), [a[0]!, a[1]!, b[0]!, b[1]!])
          // both tenants at their cap: nothing, though 8 events wait
          assert.deepStrictEqual(ids(yield* capped(10)), [])
          // one of a's settles: a has room for one, b still none
          yield* completeAll([first[0]!])
          assert.deepStrictEqual(ids(yield* capped(10)), [a[2]!])
          // a tenant below its cap gets no more than the room left, whatever its share
          yield* completeAll(first.slice(2))
          assert.deepStrictEqual(ids(yield* capped(1)), [b[2]!])
          assert.deepStrictEqual(ids(yield* capped(10)), [b[3]!])
          // without a cap the same claim takes what waits
          assert.deepStrictEqual(ids(yield* claimFair(10)), [a[3]!, a[4]!, a[5]!, b[4]!, b[5]!])
        })
      )

      if (options.claimInTransaction !== "refused") {
        test(
          "claimInTransaction refuses a per-tenant in-flight cap, ordered or not: a non-retryable StoreError, nothing locked",
          Effect.gen(function*() {
            const store = yield* OutboxStore
            const published = yield* publishIds([ofTenant(1, "a"), ofTenant(2, "b")])
            for (const ordering of [undefined, { deadLetter: "continue" } as const]) {
              const error = yield* Effect.flip(
                store.claimInTransaction(
                  { limit: 10, timeout: txTimeout, fairness: { maxInFlight: 1 }, ordering },
                  (events) => Effect.succeed(settled(events))
                )
              )
              assert.instanceOf(error, StoreError)
              assert.isFalse((error as StoreError).retryable)
              assert.include((error as StoreError).message, "maxInFlight")
            }
            assert.deepStrictEqual(ids(yield* claim()), published)
          })
        )
      }

      if (options.claimInTransaction !== "refused") {
        test(
          "claimInTransaction with fairness locks the same shares; other fair claims never take the rows it holds",
          Effect.gen(function*() {
            const store = yield* OutboxStore
            const a = yield* publishIds(Array.from({ length: 6 }, (_, i) => ofTenant(i + 1, "a")))
            const [b1] = yield* publishIds([ofTenant(7, "b")])
            const claimed = yield* store.claimInTransaction({ limit: 4, timeout: txTimeout, fairness: {} }, (events) =>
              Effect.gen(function*() {
                assert.deepStrictEqual(ids(events), [a[0]!, a[1]!, b1!])
                assert.deepStrictEqual(events.map((e) => e.tenant), ["a", "a", "b"])
                // b's only event is locked here: never claimed by the other claim, and a gets at least its share
                // (PostgreSQL still counts b's turn, its row being visible, so a gets 2; the memory store gives a all 4)
                const leased = yield* claimFair(4)
                assert.includeMembers(a.slice(2, 6), ids(leased))
                assert.isAtLeast(leased.length, 2)
                assert.notInclude(ids(leased), b1!)
                return settled(events)
              }))
            assert.deepStrictEqual(ids(claimed), [a[0]!, a[1]!, b1!])
            const records = yield* Effect.forEach([...a, b1!], row)
            assert.deepStrictEqual(records.slice(0, 2).map((r) => r.status), ["COMPLETED", "COMPLETED"])
            assert.strictEqual(records[6]!.status, "COMPLETED")
          })
        )

        test(
          "claimInTransaction with ordering and fairness takes heads tenant by tenant in turn",
          Effect.gen(function*() {
            const store = yield* OutboxStore
            const a = yield* publishIds(Array.from({ length: 12 }, (_, i) => ofTenant(i + 1, "a", { aggregateId: `a-${i % 6}` })))
            const [b1] = yield* publishIds([ofTenant(13, "b", { aggregateId: "b-0" })])
            const claimed = yield* store.claimInTransaction(
              { limit: 3, timeout: txTimeout, ordering: { deadLetter: "continue" }, fairness: {} },
              (events) => Effect.succeed(settled(events))
            )
            assert.deepStrictEqual(ids(claimed), [a[0]!, a[1]!, b1!])
            assert.strictEqual((yield* row(b1!)).status, "COMPLETED")
          })
        )
      }
    })

    describe("validation", () => {
      const circular: Record<string, unknown> = { name: "loop" }
      circular.self = circular
      const cases: ReadonlyArray<
        readonly [string, EventInput, InvalidEvent["reason"], string, Outbox.PublishSettings | undefined]
      > = [
        ["an empty eventType", input(1, { eventType: "" }), "MissingField", "eventType", undefined],
        ["a blank aggregateId", input(1, { aggregateId: "  " }), "MissingField", "aggregateId", undefined],
        ["a bigint in the payload", input(1, { payload: { amount: 10n } }), "NotSerializable", "payload", undefined],
        ["a circular payload", input(1, { payload: circular }), "NotSerializable", "payload", undefined],
        ["a function in the metadata", input(1, { metadata: { f: () => 1 } }), "NotSerializable", "metadata", undefined],
        ["a negative maxRetries", input(1, { maxRetries: -1 }), "InvalidMaxRetries", "maxRetries", undefined],
        [
          "an oversized payload",
          input(1, { payload: { text: "x".repeat(100) } }),
          "PayloadTooLarge",
          "payload",
          { maxPayloadBytes: 64, maxRetries: 5 }
        ]
      ]
      for (const [title, event, reason, field, settings] of cases) {
        test(
          `publish refuses ${title} with InvalidEvent(${reason}) and writes nothing`,
          Effect.gen(function*() {
            const publish = Outbox.publish(event)
            const error = yield* Outbox.transaction(
              settings === undefined ? publish : Effect.provideService(publish, Outbox.PublishSettings, settings)
            ).pipe(Effect.flip)
            assert.instanceOf(error, InvalidEvent)
            const invalid = error as InvalidEvent
            assert.strictEqual(invalid.reason, reason)
            assert.strictEqual(invalid.field, field)
            assert.strictEqual(invalid.index, 0)
            assert.deepStrictEqual(yield* claim(), [])
          })
        )
      }

      test(
        "an invalid event in publishAll writes none of the batch; the transaction can still commit other events",
        Effect.gen(function*() {
          const valid = yield* Outbox.transaction(Effect.gen(function*() {
            const error = yield* Effect.flip(
              Outbox.publishAll([input(1), input(2, { payload: { big: 1n } }), input(3)])
            )
            assert.instanceOf(error, InvalidEvent)
            assert.strictEqual((error as InvalidEvent).index, 1)
            assert.strictEqual((error as InvalidEvent).reason, "NotSerializable")
            return yield* Outbox.publish(input(4))
          }))
          const claimed = yield* claim()
          assert.deepStrictEqual(ids(claimed), [valid.id])
          assert.strictEqual(claimed[0]!.aggregateId, "order-4")
        })
      )
    })
  })

/**
 * The contract of a store that deletes completed rows
 * (`OUTBOX_COMPLETED=delete`: `PgOutboxStore` with `completed: "delete"`,
 * `MemoryOutboxStore.layerWith({ completed: "delete" })`), in both claim
 * modes: completing removes the row, failures keep it, and fencing still
 * holds. Run it beside `suite` (which covers everything else with the rows
 * kept); same `layer` / `shared` rules.
 *
 * @category suites
 * @since 0.1.0
 */
export const deleteSuite: {
  (name: string, layer: Layer.Layer<OutboxStore, unknown>): void
  <R>(name: string, layer: Layer.Layer<OutboxStore, unknown, R>, shared: Layer.Layer<R, unknown>): void
} = <R>(name: string, layer: Layer.Layer<OutboxStore, unknown, R>, shared?: Layer.Layer<R, unknown>): void =>
  layerTest(shared ?? (Layer.empty as Layer.Layer<R>), {
    timeout: "60 seconds",
    concurrent: false,
    excludeTestServices: true
  })(`OutboxStore contract, completed rows deleted (${name})`, (it) => {
    const test = (title: string, body: Body) =>
      it.effect(
        title,
        () =>
          Effect.andThen(TestClock.setTime(start), body).pipe(
            Effect.provide(layer),
            Effect.provide(TestClock.layer())
          ),
        30_000
      )
    const gone = (id: bigint) => Effect.map(OutboxStore.use((s) => s.get(id)), Option.isNone)

    test(
      "complete deletes the rows: get finds none, no claim or reap returns them",
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const published = ids(yield* publishAll(3))
        const claimed = yield* claim(2)
        yield* store.complete(claimed.map(leaseOf))
        assert.deepStrictEqual(yield* Effect.forEach(published, gone), [true, true, false])
        assert.deepStrictEqual(ids(yield* claim()), [published[2]!])
        yield* TestClock.adjust("1 hour")
        assert.deepStrictEqual(yield* reap, [published[2]!])
        assert.deepStrictEqual(yield* Effect.forEach(published, gone), [true, true, false])
      })
    )

    test(
      "a fenced complete deletes nothing and reports LeaseLost; the current holder's complete deletes",
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const { fresh, stale } = yield* staleAndFresh
        const error = yield* Effect.flip(store.complete([leaseOf(stale)]))
        assertLeaseLost(error, { operation: "complete", eventIds: [stale.id], lockToken: stale.lockToken })
        assert.strictEqual((yield* row(fresh.id)).status, "PROCESSING")
        yield* store.complete([leaseOf(fresh)])
        assert.isTrue(yield* gone(fresh.id))
      })
    )

    test(
      "claimInTransaction deletes the completed rows and keeps retried and dead-lettered ones",
      Effect.gen(function*() {
        const store = yield* OutboxStore
        const published = ids(yield* publishAll(4))
        yield* store.claimInTransaction({ limit: 3, timeout: txTimeout }, (events) =>
          Effect.succeed({
            completed: [events[0]!],
            retried: [{ event: events[1]!, error: "later", delay: Duration.seconds(1) }],
            deadLettered: [{ event: events[2]!, error: "never" }]
          }))
        assert.isTrue(yield* gone(published[0]!))
        assert.strictEqual((yield* row(published[1]!)).status, "FAILED")
        assert.strictEqual((yield* row(published[2]!)).status, "DEAD_LETTER")
        assert.strictEqual((yield* row(published[3]!)).status, "PENDING")
        yield* TestClock.adjust("1 second")
        const rest = yield* store.claimInTransaction({ limit: 10, timeout: txTimeout }, (events) => Effect.succeed(settled(events)))
        assert.deepStrictEqual(ids(rest), [published[1]!, published[3]!])
        assert.deepStrictEqual(yield* Effect.forEach(published, gone), [true, true, false, true])
      })
    )
  })
