import { assert, describe, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import * as Outbox from "@outbox/core/Outbox"
import type * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OutboxTables from "@outbox/sql/OutboxTables"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Clock from "effect/Clock"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as WakeupListener from "../src/WakeupListener.ts"

/** Delivered aggregate ids, with the time they were delivered (`Clock`, live here). */
type Deliveries = Queue.Queue<{ readonly id: string; readonly at: number }>

/**
 * `OutboxLive` on the test database, polling once an hour: anything
 * delivered within seconds was woken by a notification (or the listener's
 * claim at connect). `handler` runs before the delivery is recorded.
 */
const startLive = (
  deliveries: Deliveries,
  options: {
    readonly config?: Partial<OutboxConfig.Options>
    readonly env?: Record<string, string>
    readonly handler?: (id: string) => Effect.Effect<void>
    readonly wakeup?: OutboxLive.Options["wakeup"]
  } = {}
) =>
  Effect.map(
    Layer.build(
      OutboxLive.layer({ config: { pollInterval: Duration.hours(1), ...options.config }, wakeup: options.wakeup }).pipe(
        Layer.provide(OutboxSink.layerHandler((event) =>
          Effect.andThen(
            options.handler?.(event.aggregateId) ?? Effect.void,
            Effect.flatMap(Clock.currentTimeMillis, (at) => Queue.offer(deliveries, { id: event.aggregateId, at }))
          )
        )),
        Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(options.env ?? {})))
      )
    ),
    (context) => Context.get(context, WakeupListener.WakeupListener)
  )

const publish = (aggregateId: string) =>
  Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId, eventType: "OrderCreated", payload: {} }))

const insertPlain = (aggregateId: string) =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
        VALUES ('Order', ${aggregateId}, 'OrderCreated', '{"from":"psql"}')`)

/** The next delivery, within `within` of real time. */
const next = (deliveries: Deliveries, within: Duration.Input = "5 seconds") =>
  Queue.take(deliveries).pipe(
    Effect.timeoutOrElse({ duration: within, orElse: () => Effect.die(new Error(`nothing delivered within ${Duration.format(Duration.fromInputUnsafe(within))}`)) })
  )

/** Polls `condition` every 2 ms of real time until it holds; dies after `timeout` (the clock is live in this file). */
const eventually = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  options: { readonly timeout?: Duration.Input; readonly message?: string } = {}
) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("2 millis") }),
    Effect.timeoutOrElse({
      duration: options.timeout ?? "10 seconds",
      orElse: () => Effect.die(new Error(options.message ?? "condition did not hold in time"))
    })
  )

const armed = (listener: WakeupListener.WakeupListener["Service"]) =>
  eventually(Effect.map(listener.status, (s) => s.listening && s.armed), { message: "the listener did not take the gate" })

/** Notifications on the outbox's channel, heard by a session of the test's own. */
const eavesdrop = Effect.flatMap(Effect.service(PgClient.PgClient), (pg) => pg.listen(OutboxTables.defaults.channel))

const truncate = Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) => sql`TRUNCATE outbox`)

layer(Layer.provideMerge(PgOutboxStore.layer(), TestDatabase.layer), { timeout: "120 seconds", excludeTestServices: true })("wake-up by LISTEN/NOTIFY on PostgreSQL", (it) => {
  describe("an idle relay polling once an hour", () => {
    it.effect("is woken by an event published through the library, and by a row inserted with plain SQL", () =>
      Effect.gen(function*() {
        yield* truncate
        const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
        const listener = yield* startLive(deliveries)
        const latencies: Array<number> = []
        for (const [id, write] of [["library", publish], ["plain-sql", insertPlain]] as const) {
          yield* armed(listener)
          const t0 = yield* Clock.currentTimeMillis
          yield* write(id)
          const delivered = yield* next(deliveries)
          assert.strictEqual(delivered.id, id)
          latencies.push(delivered.at - t0)
        }
        // typically a few ms on a 2-core machine; the poll would have taken an hour
        for (const ms of latencies) assert.isBelow(ms, 1000)
        // the re-arming claim may deliver a row a moment before its notification is heard: wait for both
        yield* eventually(Effect.map(listener.status, (s) => s.notifications >= 2), { message: "fewer than 2 notifications heard" })
        const status = yield* listener.status
        assert.strictEqual(status.connects, 1)
        assert.strictEqual(status.channel, "outbox_wakeup")
        yield* Effect.logInfo(`wake-up latencies (ms): ${latencies.join(", ")}`)
      }).pipe(Effect.scoped))

    it.effect("a transaction notifies once however many events it writes; a rolled-back one not at all", () =>
      Effect.gen(function*() {
        yield* truncate
        const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
        const listener = yield* startLive(deliveries)
        const heard = yield* eavesdrop
        yield* armed(listener)
        const sql = yield* SqlClient.SqlClient
        yield* Outbox.transaction(Effect.gen(function*() {
          yield* Outbox.publish({ aggregateType: "Order", aggregateId: "a", eventType: "OrderCreated", payload: {} })
          yield* Outbox.publishAll([
            { aggregateType: "Order", aggregateId: "b", eventType: "OrderCreated", payload: {} },
            { aggregateType: "Order", aggregateId: "c", eventType: "OrderCreated", payload: {} }
          ])
          yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', 'd', 'OrderCreated', '{}')`
        }))
        const ids = [yield* next(deliveries), yield* next(deliveries), yield* next(deliveries), yield* next(deliveries)]
        assert.deepStrictEqual(ids.map((d) => d.id), ["a", "b", "c", "d"])
        // a rolled-back transaction while the gate is held again: nothing to hear
        yield* armed(listener)
        yield* sql.withTransaction(Effect.andThen(insertPlain("rolled-back"), Effect.fail("abort" as const))).pipe(Effect.flip)
        yield* Effect.sleep("200 millis")
        const notifications = yield* Queue.clear(heard)
        assert.strictEqual(notifications.length, 1)
        assert.strictEqual(notifications[0]!.channel, "outbox_wakeup")
      }).pipe(Effect.scoped))

    it.effect("while its worker is busy, producers commit without NOTIFY; what they wrote is relayed after the batch", () =>
      Effect.gen(function*() {
        yield* truncate
        const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
        const release = yield* Deferred.make<void>()
        const listener = yield* startLive(deliveries, {
          handler: (id) => id === "slow" ? Deferred.await(release) : Effect.void
        })
        yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined))
        const heard = yield* eavesdrop
        yield* armed(listener)
        yield* publish("slow")
        // the relay is woken, lets go of the gate, and its only worker is busy: it does not take it again
        yield* eventually(Effect.map(listener.status, (s) => s.notifications >= 1 && !s.armed))
        yield* Effect.sleep("100 millis")
        assert.isFalse((yield* listener.status).armed)
        yield* Queue.clear(heard)
        for (let i = 0; i < 5; i++) yield* publish(`quiet-${i}`)
        yield* insertPlain("quiet-plain")
        yield* Effect.sleep("200 millis")
        assert.strictEqual((yield* Queue.clear(heard)).length, 0, "no producer notified while the relay was busy")
        yield* Deferred.succeed(release, undefined)
        const ids: Array<string> = []
        for (let i = 0; i < 7; i++) ids.push((yield* next(deliveries)).id)
        assert.deepStrictEqual(ids, ["slow", "quiet-0", "quiet-1", "quiet-2", "quiet-3", "quiet-4", "quiet-plain"])
        // idle again: it takes the gate, and the next producer notifies
        yield* armed(listener)
        yield* publish("after")
        assert.strictEqual((yield* next(deliveries)).id, "after")
        assert.isAtLeast((yield* Queue.clear(heard)).length, 1)
      }).pipe(Effect.scoped))
  })

  describe("a trickle and a burst", () => {
    /** An empty outbox, a relay of 2 workers whose listener holds the gate, and the notifications from now on. */
    const twoWorkersArmed = Effect.gen(function*() {
      yield* truncate
      const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
      const listener = yield* startLive(deliveries, { config: { concurrency: 2 } })
      const heard = yield* eavesdrop
      yield* armed(listener)
      return { deliveries, heard, listener }
    })

    it.effect("events committed one at a time, 20 ms apart, with 2 workers: the gate is taken once and held, every producer notifies, each event relayed at once", () =>
      Effect.gen(function*() {
        const { deliveries, heard, listener } = yield* twoWorkersArmed
        const before = yield* listener.status
        for (let i = 0; i < 10; i++) {
          const t0 = yield* Clock.currentTimeMillis
          yield* publish(`trickle-${i}`)
          const delivered = yield* next(deliveries)
          assert.strictEqual(delivered.id, `trickle-${i}`)
          assert.isBelow(delivered.at - t0, 1000, "woken, not polled")
          yield* Effect.sleep("20 millis")
        }
        const after = yield* listener.status
        // before, the gate was let go at each notification and taken again: 10 arms for 10 events
        assert.isAtMost(after.arms - before.arms, 2, `arms ${before.arms} → ${after.arms}`)
        assert.isTrue(after.armed)
        assert.strictEqual((yield* Queue.clear(heard)).length, 10, "each producer notified")
      }).pipe(Effect.scoped))

    it.effect("a burst of producers committing together: the gate is let go, most of them commit without NOTIFY, all relayed", () =>
      Effect.gen(function*() {
        const { deliveries, heard } = yield* twoWorkersArmed
        // 8 producers × 10 transactions each, as fast as they go: commits well under 1 ms apart
        yield* Effect.forEach(
          Array.from({ length: 8 }, (_, p) => p),
          (p) => Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => publish(`burst-${p}-${i}`), { discard: true }),
          { concurrency: "unbounded", discard: true }
        )
        const ids = new Set<string>()
        while (ids.size < 80) ids.add((yield* next(deliveries)).id)
        const notified = (yield* Queue.clear(heard)).length
        // a gate held through the burst would have every one of the 80 notify
        yield* Effect.logInfo(`${notified} of 80 producers notified`)
        assert.isBelow(notified, 60, `${notified} of 80 producers notified`)
      }).pipe(Effect.scoped))
  })

  describe("a dropped listening connection", () => {
    it.effect("is reconnected, and the relay claims at once what was committed while nobody listened", () =>
      Effect.gen(function*() {
        yield* truncate
        const sql = yield* SqlClient.SqlClient
        const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
        // a reconnect delay long enough to commit an event while nobody listens
        const listener = yield* startLive(deliveries, { wakeup: { reconnectBase: "1 second" } })
        yield* armed(listener)
        const before = yield* listener.status
        yield* sql`SELECT pg_terminate_backend(${before.processId!})`
        yield* eventually(Effect.map(listener.status, (s) => !s.listening), { message: "the listener did not notice" })
        yield* insertPlain("while-down")
        assert.isFalse((yield* listener.status).listening, "the row was committed while nobody listened")
        const delivered = yield* next(deliveries)
        assert.strictEqual(delivered.id, "while-down")
        const after = yield* listener.status
        assert.isTrue(after.listening)
        assert.strictEqual(after.connects, 2)
        assert.strictEqual(after.failures, 1)
        assert.notStrictEqual(after.processId, before.processId)
        assert.match(after.lastError ?? "", /dropped|terminat/i)
        // and notifications work again
        yield* armed(listener)
        yield* publish("after-reconnect")
        assert.strictEqual((yield* next(deliveries)).id, "after-reconnect")
      }).pipe(Effect.scoped))
  })

  describe("OUTBOX_NOTIFY=false", () => {
    it.effect("opens no listening session; the relay only polls", () =>
      Effect.gen(function*() {
        yield* truncate
        const sql = yield* SqlClient.SqlClient
        const database = yield* TestDatabase.TestDatabase
        const deliveries: Deliveries = yield* Queue.unbounded<{ readonly id: string; readonly at: number }>()
        const listener = yield* startLive(deliveries, {
          config: { pollInterval: Duration.millis(1500) },
          env: { OUTBOX_NOTIFY: "false" }
        })
        const status = yield* listener.status
        assert.strictEqual(status.off, "OUTBOX_NOTIFY=false")
        assert.isFalse(status.listening)
        const [sessions] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${database.name} AND query ILIKE 'LISTEN%'`
        assert.strictEqual(sessions!.n, 0)
        // let the workers' first (empty) claims pass, then publish: only the next poll finds it
        yield* Effect.sleep("300 millis")
        const t0 = yield* Clock.currentTimeMillis
        yield* publish("polled")
        const early = yield* Queue.take(deliveries).pipe(Effect.timeoutOption("500 millis"))
        assert.strictEqual(early._tag, "None", "delivered before the poll: something woke the relay")
        const delivered = yield* next(deliveries)
        assert.strictEqual(delivered.id, "polled")
        assert.isAtLeast(delivered.at - t0, 500)
      }).pipe(Effect.scoped))
  })
})
