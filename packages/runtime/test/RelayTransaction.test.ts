import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { DeliveryError, StoreError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as MemoryOutboxStore from "@outbox/testing/MemoryOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import * as OutboxEnv from "../src/OutboxEnv.ts"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as Relay from "../src/Relay.ts"

// OUTBOX_CLAIM_MODE=transaction on real PostgreSQL, in real time (the database clock, as in production).

/** The store over a truncated outbox, completed rows kept or deleted. */
const store = (completed: "keep" | "delete" = "keep") =>
  Layer.effect(
    OutboxStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      return yield* PgOutboxStore.make({ completed })
    })
  ).pipe(Layer.orDie)

/** A relay in its own scope (closed by the test), in transaction mode unless `config` says otherwise. */
const startRelay = <E>(handler: (event: OutboxEvent) => Effect.Effect<void, E>, config: Partial<OutboxConfig.Options> = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(handler)),
        Layer.provide(OutboxConfig.layer({ claimMode: "transaction", pollInterval: Duration.millis(20), ...config }))
      ),
      scope
    )
    return { scope, relay: Context.get(context, Relay.Relay) }
  })

const publish = (n: number, prefix = "o") =>
  Outbox.transaction(Outbox.publishAll(Array.from({ length: n }, (_, i) => ({
    aggregateType: "Order",
    aggregateId: `${prefix}-${i}`,
    eventType: "OrderCreated",
    payload: { i }
  }))))

const waitUntil = <E, R>(condition: Effect.Effect<boolean, E, R>, what: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

const countWhere = (where: "all" | "unsettled" | "completed") =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    Effect.map(
      where === "all"
        ? sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox`
        : where === "completed"
        ? sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status = 'COMPLETED'`
        : sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status <> 'COMPLETED'`,
      (rows) => rows[0]!.n
    )).pipe(Effect.orDie)

interface RowState {
  readonly aggregate_id: string
  readonly status: string
  readonly retry_count: number
  readonly last_error: string | null
  readonly lock_token: bigint | null
  readonly claimed_at: Date | null
  readonly available_at: Date | null
}
const rows = Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
  sql<RowState>`SELECT aggregate_id, status, retry_count, last_error, lock_token, claimed_at, available_at FROM outbox ORDER BY id`).pipe(Effect.orDie)

/** Counts deliveries per tracking id. */
const counter = () => {
  const deliveries = new Map<string, number>()
  return {
    deliveries,
    record: (event: OutboxEvent) => deliveries.set(event.trackingId, (deliveries.get(event.trackingId) ?? 0) + 1)
  }
}

/** A retry policy without jitter, and dead letters after 3 attempts. */
const quickRetries: Partial<OutboxConfig.Options> = {
  retryPolicy: Schedule.spaced("30 millis").pipe(Schedule.setInputType<RetryPolicy.FailedAttempt>()),
  deadLetterPolicy: RetryPolicy.maxAttempts(3)
}

layer(Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer).pipe(Layer.orDie), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Relay, OUTBOX_CLAIM_MODE=transaction (PostgreSQL)", (it) => {
  describe("delivery", () => {
    for (const completed of ["keep", "delete"] as const) {
      it.effect(`every event is delivered once and settled in its claiming transaction (completed rows: ${completed}); no lease is ever written`, () =>
        Effect.gen(function*() {
          const total = 1000
          yield* publish(total)
          const { deliveries, record } = counter()
          const { relay, scope } = yield* startRelay((event) => Effect.sync(() => record(event)), { batchSize: 100, minBatchSize: 100 })
          yield* waitUntil(Effect.map(countWhere(completed === "keep" ? "unsettled" : "all"), (n) => n === 0), "every event settled")
          yield* Scope.close(scope, Exit.void)
          assert.strictEqual(deliveries.size, total)
          assert.isTrue(Array.from(deliveries.values()).every((n) => n === 1), "an event was delivered twice")
          const stats = yield* relay.stats
          assert.deepStrictEqual([stats.claimed, stats.completed, stats.retried, stats.deadLettered], [total, total, 0, 0])
          const after = yield* rows
          if (completed === "delete") assert.strictEqual(after.length, 0)
          else {
            assert.strictEqual(after.length, total)
            // a lease claim stamps claimed_at and a lock token; the row lock writes nothing
            assert.isTrue(after.every((r) => r.status === "COMPLETED" && r.claimed_at === null && r.lock_token === null))
          }
        }).pipe(Effect.provide(store(completed))))
    }

    it.effect("the memory store (a test double) runs the same mode: delivered once, completed, failures retried", () =>
      Effect.gen(function*() {
        const published = yield* publish(20)
        const { deliveries, record } = counter()
        const { relay, scope } = yield* startRelay((event) =>
          Effect.suspend(() => {
            record(event)
            return event.aggregateId === "o-3" && event.retryCount === 0 ? Effect.fail(DeliveryError.transient("once")) : Effect.void
          }), { ...quickRetries, concurrency: 2, batchSize: 4, minBatchSize: 4 })
        const outbox = yield* OutboxStore
        const statuses = Effect.forEach(published, (p) => Effect.map(outbox.get(p.id), (r) => r._tag === "Some" ? r.value.status : "gone"))
        yield* waitUntil(Effect.map(statuses, (all) => all.every((s) => s === "COMPLETED")), "every event completed")
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(deliveries.size, 20)
        assert.deepStrictEqual(Array.from(deliveries.values()).filter((n) => n !== 1), [2])
        assert.strictEqual((yield* relay.stats).retried, 1)
      }).pipe(Effect.provide(MemoryOutboxStore.layer)))

    it.effect("concurrent workers of two relays never deliver one event twice (SKIP LOCKED)", () =>
      Effect.gen(function*() {
        const total = 3000
        yield* publish(total)
        const inFlight = new Set<string>()
        const { deliveries, record } = counter()
        let overlaps = 0
        const handler = (event: OutboxEvent) =>
          Effect.gen(function*() {
            if (inFlight.has(event.trackingId)) overlaps++
            inFlight.add(event.trackingId)
            record(event)
            yield* Effect.yieldNow
            inFlight.delete(event.trackingId)
          })
        yield* Effect.scoped(Effect.gen(function*() {
          const config = { concurrency: 4, batchSize: 25, minBatchSize: 25 }
          const a = yield* startRelay(handler, config)
          const b = yield* startRelay(handler, config)
          yield* Effect.addFinalizer(() => Effect.andThen(Scope.close(a.scope, Exit.void), Scope.close(b.scope, Exit.void)))
          yield* waitUntil(Effect.map(countWhere("unsettled"), (n) => n === 0), "every event completed")
        }))
        assert.strictEqual(overlaps, 0)
        assert.strictEqual(deliveries.size, total)
        assert.isTrue(Array.from(deliveries.values()).every((n) => n === 1), "an event was delivered twice")
      }).pipe(Effect.provide(store())))
  })

  describe("failures", () => {
    it.effect("a failing sink is retried and dead-lettered exactly as in lease mode", () =>
      Effect.gen(function*() {
        const outcome = (claimMode: OutboxConfig.Options["claimMode"]) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* sql`TRUNCATE outbox`
            yield* Outbox.transaction(Outbox.publishAll(["flaky", "poison", "fine"].map((id) => ({
              aggregateType: "Order",
              aggregateId: id,
              eventType: "OrderCreated",
              payload: {}
            }))))
            const { deliveries, record } = counter()
            const { relay, scope } = yield* startRelay((event) =>
              Effect.andThen(
                Effect.sync(() => record(event)),
                event.aggregateId === "flaky"
                  ? Effect.fail(DeliveryError.transient(`broker unavailable (attempt ${event.retryCount + 1})`))
                  : event.aggregateId === "poison"
                  ? Effect.fail(DeliveryError.permanent("cannot parse"))
                  : Effect.void
              ), { claimMode, ...quickRetries })
            yield* waitUntil(
              Effect.map(rows, (all) => all.every((r) => r.status === "COMPLETED" || r.status === "DEAD_LETTER")),
              `${claimMode}: every event settled for good`
            )
            const stats = yield* relay.stats
            yield* Scope.close(scope, Exit.void)
            return {
              rows: (yield* rows).map((r) => [r.aggregate_id, r.status, r.retry_count, r.last_error]),
              deliveries: Array.from(deliveries.values()),
              stats: [stats.completed, stats.retried, stats.deadLettered]
            }
          })
        const lease = yield* outcome("lease")
        const transaction = yield* outcome("transaction")
        assert.deepStrictEqual(transaction.rows, [
          ["flaky", "DEAD_LETTER", 3, "broker unavailable (attempt 3)"],
          ["poison", "DEAD_LETTER", 1, "cannot parse"],
          ["fine", "COMPLETED", 0, null]
        ])
        assert.deepStrictEqual(transaction.deliveries, [3, 1, 1])
        assert.deepStrictEqual(transaction.stats, [1, 2, 2])
        assert.deepStrictEqual(transaction, lease)
      }).pipe(Effect.provide(store())))

    it.effect("a hanging handler holds its rows no longer than the deadline: it is a failed attempt, the rest are delivered", () =>
      Effect.gen(function*() {
        yield* Outbox.transaction(Outbox.publishAll(["hangs", "b", "c"].map((id) => ({
          aggregateType: "Order",
          aggregateId: id,
          eventType: "OrderCreated",
          payload: {}
        }))))
        const hangStarted = yield* Deferred.make<number>()
        let deadline = 0
        const interrupted = yield* Deferred.make<void>()
        const delivered: Array<string> = []
        const hang = (event: OutboxEvent) =>
          Effect.gen(function*() {
            deadline = event.lockedUntil.getTime() // claim time + OUTBOX_TX_TIMEOUT_MS, on the database's clock
            yield* Deferred.succeed(hangStarted, yield* Clock.currentTimeMillis)
            return yield* Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined)))
          })
        const { scope } = yield* startRelay((event) =>
          event.aggregateId === "hangs" ? hang(event) : Effect.sync(() => delivered.push(event.aggregateId)), {
          transactionTimeout: Duration.millis(1000),
          retryPolicy: Schedule.spaced("1 hour").pipe(Schedule.setInputType<RetryPolicy.FailedAttempt>())
        })
        const started = yield* Deferred.await(hangStarted)
        yield* waitUntil(Effect.map(countWhere("completed"), (n) => n === 2), "b and c completed")
        const elapsed = (yield* Clock.currentTimeMillis) - started
        yield* Deferred.await(interrupted)
        yield* Scope.close(scope, Exit.void)
        // b and c went in the next transaction, after the first one gave up on "hangs"
        assert.isAtLeast(elapsed, 700)
        assert.isBelow(elapsed, 5000)
        assert.deepStrictEqual(delivered, ["b", "c"])
        const [hangs] = yield* rows
        assert.strictEqual(hangs!.status, "FAILED")
        assert.strictEqual(hangs!.retry_count, 1)
        assert.include(hangs!.last_error, "deadline")
        // settled (available_at = settle time + the 1 h backoff) after the delivery budget (3/4 of 1 s) and
        // before the deadline, both on the database's clock: the rows were not held past it
        const settledAt = hangs!.available_at!.getTime() - 3_600_000
        assert.isAtLeast(settledAt, deadline - 250 - 5)
        assert.isBelow(settledAt, deadline)
        // nothing is left idle in a transaction
        const sql = yield* SqlClient.SqlClient
        const [open] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND state LIKE 'idle in transaction%'`
        assert.strictEqual(open!.n, 0)
      }).pipe(Effect.provide(store())))
  })

  describe("crashes and shutdown", () => {
    it.effect("a worker interrupted mid-transaction (a crash) rolls its batch back: the rows are claimable at once and delivered again", () =>
      Effect.gen(function*() {
        yield* publish(3)
        const first = counter()
        const blocked = yield* Deferred.make<void>()
        const crashed = yield* startRelay((event) =>
          Effect.andThen(
            Effect.sync(() => first.record(event)),
            event.aggregateId === "o-1" ? Effect.andThen(Deferred.succeed(blocked, undefined), Effect.never) : Effect.void
          ), { shutdownTimeout: Duration.zero })
        yield* Deferred.await(blocked)
        yield* Scope.close(crashed.scope, Exit.void) // shutdown timeout 0: the worker is interrupted mid-batch
        assert.strictEqual(first.deliveries.size, 2)
        const rolledBack = yield* rows
        assert.isTrue(rolledBack.every((r) => r.status === "PENDING" && r.retry_count === 0 && r.lock_token === null))

        const second = counter()
        const { scope } = yield* startRelay((event) => Effect.sync(() => second.record(event)))
        yield* waitUntil(Effect.map(countWhere("unsettled"), (n) => n === 0), "every event completed")
        yield* Scope.close(scope, Exit.void)
        // at-least-once: what the crashed transaction delivered is delivered again
        assert.strictEqual(second.deliveries.size, 3)
      }).pipe(Effect.provide(store())))

    it.effect("the backend terminated mid-transaction: nothing is settled, the relay goes on and delivers the batch again", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* publish(2)
        const { deliveries, record } = counter()
        const inDelivery = yield* Deferred.make<void>()
        const terminated = yield* Deferred.make<void>()
        const { scope } = yield* startRelay((event) =>
          Effect.suspend(() => {
            record(event)
            return event.aggregateId === "o-0" && deliveries.get(event.trackingId) === 1
              ? Effect.andThen(Deferred.succeed(inDelivery, undefined), Deferred.await(terminated))
              : Effect.void
          }))
        yield* Deferred.await(inDelivery)
        const killed = yield* sql<{ ok: boolean }>`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
          WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()`
        assert.deepStrictEqual(killed.map((r) => r.ok), [true])
        yield* Deferred.succeed(terminated, undefined)
        yield* waitUntil(Effect.map(countWhere("unsettled"), (n) => n === 0), "every event completed")
        yield* Scope.close(scope, Exit.void)
        // both were delivered in the doomed transaction, and again after it
        assert.deepStrictEqual(Array.from(deliveries.values()), [2, 2])
      }).pipe(Effect.provide(store())))

    it.effect("shutdown stops claiming and lets the open transaction finish: its events are completed, none redelivered", () =>
      Effect.gen(function*() {
        yield* publish(5)
        const { deliveries, record } = counter()
        const started = yield* Deferred.make<void>()
        const { scope } = yield* startRelay((event) =>
          Effect.andThen(
            Effect.andThen(Deferred.succeed(started, undefined), Effect.sleep("50 millis")),
            Effect.sync(() => record(event))
          ), { batchSize: 10, minBatchSize: 10 })
        yield* Deferred.await(started)
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(yield* countWhere("completed"), 5)
        assert.isTrue(Array.from(deliveries.values()).every((n) => n === 1))
      }).pipe(Effect.provide(store())))
  })

  describe("configuration", () => {
    it.effect("OUTBOX_CLAIM_MODE=transaction and OUTBOX_COMPLETED=delete from the environment (OutboxLive)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        const { deliveries, record } = counter()
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(
            OutboxLive.layer().pipe(
              Layer.provide(OutboxSink.layerHandler((event) => Effect.sync(() => record(event)))),
              Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
                env: {
                  OUTBOX_CLAIM_MODE: "transaction",
                  OUTBOX_TX_TIMEOUT_MS: "2000",
                  OUTBOX_COMPLETED: "delete",
                  OUTBOX_POLL_INTERVAL_MS: "20",
                  OUTBOX_PARTITION_MODE: "off",
                  OUTBOX_METRICS: "false"
                }
              })))
            )
          )
          const config = Context.get(context, OutboxConfig.OutboxConfig)
          assert.strictEqual(config.claimMode, "transaction")
          assert.strictEqual(Duration.toMillis(config.transactionTimeout), 2000)
          yield* publish(50).pipe(Effect.provideContext(context))
          yield* waitUntil(Effect.map(countWhere("all"), (n) => n === 0), "every event delivered and deleted")
        }))
        assert.strictEqual(deliveries.size, 50)
      }))

    it.effect("the defaults: lease mode, 5 s, completed rows kept; bad values fail naming the variable", () =>
      Effect.gen(function*() {
        const defaults = yield* OutboxEnv.relay.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} }))))
        assert.strictEqual(defaults.claimMode, "lease")
        assert.strictEqual(Duration.toMillis(defaults.transactionTimeout), 5000)
        const storeDefaults = yield* OutboxEnv.store.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} }))))
        assert.strictEqual(storeDefaults.completed, "keep")
        for (const [name, value] of [["OUTBOX_CLAIM_MODE", "lock"], ["OUTBOX_TX_TIMEOUT_MS", "0"]] as const) {
          const error = yield* Effect.flip(
            OutboxEnv.relay.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { [name]: value } }))))
          )
          assert.include(String(error), name)
        }
        const refused = yield* Effect.flip(
          OutboxEnv.store.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
            env: { OUTBOX_COMPLETED: "delete", ENABLE_AUDIT: "true" }
          }))))
        )
        assert.include(String(refused), "OUTBOX_COMPLETED=delete")
        assert.include(String(refused), "ENABLE_AUDIT")
      }))
  })
})

layer(TestDatabase.layer, { timeout: "60 seconds", excludeTestServices: true })("PgOutboxStore, completed: delete", (it) => {
  it.effect("is refused at start on a table with the audit trail (it needs completed rows kept)", () =>
    Effect.gen(function*() {
      yield* OutboxMigrations.runWith({ audit: true })
      const error = yield* Effect.flip(PgOutboxStore.make({ completed: "delete" }))
      assert.instanceOf(error, StoreError)
      assert.strictEqual(error.operation, "configure")
      assert.include(error.message, "audit trail")
      // keeping them is fine
      yield* PgOutboxStore.make({ completed: "keep" })
    }))
})
