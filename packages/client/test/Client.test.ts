import { assert, describe, layer } from "@effect/vitest"
import { createRelay, InvalidEvent, PermanentError, processOnce, publish, StoreError } from "@outbox/client"
import type { OutboxEvent } from "@outbox/client"
import * as RetryPolicy from "@outbox/core/RetryPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import pg from "pg"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** A `pg` pool on the test database, closed with the test's scope. */
const pool = Effect.acquireRelease(
  Effect.map(Effect.service(TestDatabase.TestDatabase), (db) => new pg.Pool({ connectionString: db.url, max: 4 })),
  (p) => Effect.promise(() => p.end())
)

/** Runs `f` in a `pg` transaction on one pooled client: COMMIT, or ROLLBACK when it throws. */
const inTransaction = <A>(p: pg.Pool, f: (client: pg.PoolClient) => Promise<A>) =>
  Effect.promise(async () => {
    const client = await p.connect()
    try {
      await client.query("BEGIN")
      const a = await f(client)
      await client.query("COMMIT")
      return a
    } catch (error) {
      await client.query("ROLLBACK")
      throw error
    } finally {
      client.release()
    }
  })

/** The error `promise` rejects with. */
const rejection = (promise: () => Promise<unknown>) =>
  Effect.promise(() => promise().then(() => assert.fail("expected a rejection"), (e: unknown) => e))

const order = (id: string) => ({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id } })

const count = (p: pg.Pool, where: string, values: Array<unknown> = []) =>
  Effect.promise(() => p.query(`SELECT count(*)::int AS n FROM outbox WHERE ${where}`, values)).pipe(
    Effect.map((r) => r.rows[0].n as number)
  )

layer(Live, { timeout: "60 seconds" })("@outbox/client with pg", (it) => {
  describe("publish", () => {
    it.effect("schedules an event with availableAt or delay (the row's available_at; a delay on the server's clock)", () =>
      Effect.gen(function*() {
        const p = yield* pool
        const at = new Date(Date.UTC(2031, 0, 1, 12, 0, 0))
        const [fixed, delayed, plain] = yield* inTransaction(p, (c) =>
          publish(c, [{ ...order("sched-1"), availableAt: at }, { ...order("sched-2"), delay: "90 minutes" }, order("sched-3")]))
        const rows = yield* Effect.promise(() =>
          p.query(
            `SELECT id::text, available_at, extract(epoch FROM available_at - created_at)::float8 AS after FROM outbox
             WHERE id = ANY($1::bigint[]) ORDER BY id`,
            [[fixed!.id, delayed!.id, plain!.id].map(String)]
          )
        )
        assert.deepStrictEqual(rows.rows[0].available_at, at)
        assert.closeTo(rows.rows[1].after, 90 * 60, 1)
        assert.isNull(rows.rows[2].available_at)
        const refused = yield* rejection(() => publish(p, { ...order("sched-4"), delay: "later" as never }))
        assert.instanceOf(refused, InvalidEvent)
        assert.strictEqual((refused as InvalidEvent).reason, "InvalidSchedule")
      }))

    it.effect("stores an explicit orderingKey (ordering_key; NULL is the default key) and refuses an invalid one", () =>
      Effect.gen(function*() {
        const p = yield* pool
        const [keyed, plain] = yield* inTransaction(p, (c) =>
          publish(c, [{ ...order("key-1"), orderingKey: "customer:42" }, order("key-2")]))
        const rows = yield* Effect.promise(() =>
          p.query(`SELECT ordering_key FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id`, [[keyed!.id, plain!.id].map(String)])
        )
        assert.deepStrictEqual(rows.rows.map((r) => r.ordering_key), ["customer:42", null])
        const refused = yield* rejection(() => publish(p, { ...order("key-3"), orderingKey: "" }))
        assert.instanceOf(refused, InvalidEvent)
        assert.strictEqual((refused as InvalidEvent).reason, "InvalidOrderingKey")
      }))

    it.effect("writes in the caller's transaction: committed rows stay, rolled-back rows never existed", () =>
      Effect.gen(function*() {
        const p = yield* pool
        const one = yield* inTransaction(p, (c) => publish(c, order("pub-1")))
        assert.strictEqual(typeof one.id, "bigint")
        assert.match(one.trackingId, /^[0-9a-f-]{36}$/)
        assert.instanceOf(one.createdAt, Date)
        const many = yield* inTransaction(p, (c) => publish(c, [order("pub-2"), order("pub-3"), order("pub-4")]))
        assert.deepStrictEqual(many.map((e) => e.id), [one.id + 1n, one.id + 2n, one.id + 3n])
        yield* Effect.exit(inTransaction(p, async (c) => {
          await publish(c, order("pub-rolled-back"))
          throw new Error("abort")
        }))
        assert.strictEqual(yield* count(p, "aggregate_id LIKE 'pub-%'"), 4)
        assert.strictEqual(yield* count(p, "aggregate_id = 'pub-rolled-back'"), 0)
        // the row is the one the Effect API writes
        const row = (yield* Effect.promise(() => p.query("SELECT * FROM outbox WHERE aggregate_id = 'pub-1'"))).rows[0]
        assert.deepStrictEqual(row.payload, { id: "pub-1" })
        assert.strictEqual(row.status, "PENDING")
        assert.strictEqual(row.max_retries, 5)
      }))

    it.effect("bad input rejects with the core's typed InvalidEvent and writes nothing", () =>
      Effect.gen(function*() {
        const p = yield* pool
        for (
          const [event, reason, field] of [
            [{ ...order("bad-1"), eventType: "" }, "MissingField", "eventType"],
            [{ ...order("bad-2"), payload: { n: 1n } }, "NotSerializable", "payload"],
            [order("bad\u00003"), "InvalidText", "aggregateId"],
            [{ ...order("bad-4"), payload: "\ud800" }, "NotSerializable", "payload"],
            [{ ...order("bad-5"), payload: "x".repeat(2000) }, "PayloadTooLarge", "payload"]
          ] as const
        ) {
          const error = yield* inTransaction(p, (c) =>
            publish(c, event as never, { maxPayloadBytes: 1000 }).then(() => undefined, (e: unknown) => e))
          assert.instanceOf(error, InvalidEvent)
          assert.strictEqual((error as InvalidEvent).reason, reason)
          assert.strictEqual((error as InvalidEvent).field, field)
        }
        // one bad event in a batch refuses the whole batch, naming its index
        const batch = yield* inTransaction(p, (c) =>
          publish(c, [order("bad-6"), { ...order("bad-7"), aggregateId: "" }]).then(() => undefined, (e: unknown) => e))
        assert.strictEqual((batch as InvalidEvent).index, 1)
        assert.strictEqual(yield* count(p, "aggregate_id LIKE 'bad%'"), 0)
      }))

    it.effect("a hostile table name is refused; a failing statement rejects with StoreError", () =>
      Effect.gen(function*() {
        const p = yield* pool
        const hostile = yield* inTransaction(p, (c) =>
          publish(c, order("t-1"), { table: "outbox; DROP TABLE outbox" }).then(() => undefined, (e: unknown) => e))
        assert.instanceOf(hostile, StoreError)
        assert.isFalse((hostile as StoreError).retryable)
        const missing = yield* inTransaction(p, (c) =>
          publish(c, order("t-2"), { table: "no_such_outbox" }).then(() => undefined, (e: unknown) => e))
        assert.instanceOf(missing, StoreError)
        assert.include((missing as StoreError).message, "42P01")
        // the second use of a table takes the path without a fiber: the same typed errors
        const again = yield* inTransaction(p, (c) =>
          publish(c, order("t-3"), { table: "no_such_outbox" }).then(() => undefined, (e: unknown) => e))
        assert.instanceOf(again, StoreError)
        assert.include((again as StoreError).message, "42P01")
        assert.isFalse((again as StoreError).retryable)
        assert.strictEqual(yield* count(p, "true"), yield* count(p, "true")) // the outbox is still there
      }))
  })

  describe("publish with a driver that throws instead of rejecting", () => {
    it.effect("rejects with StoreError on the first use of a table and after it", () =>
      Effect.gen(function*() {
        const throwing = {
          query: (): Promise<{ rows: Array<unknown> }> => {
            throw Object.assign(new Error("Client was closed and is not queryable"), { code: "ECONNRESET" })
          }
        }
        for (const table of ["closed_client_outbox", "closed_client_outbox"]) {
          const error = yield* rejection(() => publish(throwing, order("closed"), { table }))
          assert.instanceOf(error, StoreError)
          assert.isTrue((error as StoreError).retryable)
          assert.include((error as StoreError).message, "not queryable")
        }
      }))
  })

  describe("processOnce", () => {
    it.effect("runs the work once per (consumer, tracking id), in the caller's transaction", () =>
      Effect.gen(function*() {
        const p = yield* pool
        yield* Effect.promise(() => p.query("CREATE TABLE charges (tracking_id text NOT NULL)"))
        const charge = (c: pg.PoolClient, id: string) =>
          processOnce(c, "billing", id, () => c.query("INSERT INTO charges VALUES ($1)", [id]).then(() => "charged"))
        assert.deepStrictEqual(yield* inTransaction(p, (c) => charge(c, "t-1")), { _tag: "Processed", value: "charged" })
        assert.deepStrictEqual(yield* inTransaction(p, (c) => charge(c, "t-1")), { _tag: "Duplicate" })
        assert.strictEqual((yield* inTransaction(p, (c) => processOnce(c, "shipping", "t-1", () => 1)))._tag, "Processed")
        // the work throws: its error surfaces unchanged, and nothing is recorded even if the caller commits
        const boom = new Error("boom")
        const thrown = yield* inTransaction(p, (c) =>
          processOnce(c, "billing", "t-2", async () => {
            await c.query("INSERT INTO charges VALUES ('t-2')")
            throw boom
          }).then(() => undefined, (e: unknown) => e))
        assert.strictEqual(thrown, boom)
        assert.deepStrictEqual(yield* inTransaction(p, (c) => charge(c, "t-2")), { _tag: "Processed", value: "charged" })
        const charges = yield* Effect.promise(() => p.query("SELECT tracking_id FROM charges ORDER BY 1"))
        assert.deepStrictEqual(charges.rows.map((r) => r.tracking_id), ["t-1", "t-2"])
      }))

    it.effect("outside a transaction it refuses before recording anything", () =>
      Effect.gen(function*() {
        const p = yield* pool
        let ran = false
        const error = yield* rejection(() => processOnce(p, "billing", "t-9", () => (ran = true)))
        assert.instanceOf(error, StoreError)
        assert.include((error as StoreError).message, "needs an open transaction")
        assert.isFalse(ran)
        const rows = yield* Effect.promise(() => p.query("SELECT count(*)::int AS n FROM outbox_inbox WHERE tracking_id = 't-9'"))
        assert.strictEqual(rows.rows[0].n, 0)
      }))
  })

  describe("createRelay", () => {
    it.effect("delivers every committed event to the handler, never a rolled-back one; PermanentError dead-letters", () =>
      Effect.gen(function*() {
        const db = yield* TestDatabase.TestDatabase
        const p = yield* pool
        yield* Effect.promise(() => p.query("DELETE FROM outbox"))
        for (const id of ["r-1", "r-2", "r-3", "r-poison"]) yield* inTransaction(p, (c) => publish(c, order(id)))
        yield* Effect.exit(inTransaction(p, async (c) => {
          await publish(c, order("r-rolled-back"))
          throw new Error("abort")
        }))

        const seen: Array<OutboxEvent> = []
        const relay = yield* Effect.promise(() =>
          createRelay({
            connectionString: db.url,
            pollInterval: 50,
            maxConnections: 4,
            handler: (event) => {
              seen.push(event)
              if (event.aggregateId === "r-poison") throw new PermanentError("cannot be delivered")
            }
          })
        )
        yield* Effect.promise(async () => {
          for (let i = 0; i < 200 && relay.stats().completed + relay.stats().deadLettered < 4; i++) {
            await new Promise((resolve) => setTimeout(resolve, 50))
          }
        })
        const stats = relay.stats()
        yield* Effect.promise(() => relay.stop())
        assert.strictEqual(stats.completed, 3)
        assert.strictEqual(stats.deadLettered, 1)
        assert.deepStrictEqual([...new Set(seen.map((e) => e.aggregateId))].sort(), ["r-1", "r-2", "r-3", "r-poison"])
        assert.strictEqual(yield* count(p, "status = 'COMPLETED'"), 3)
        assert.strictEqual(yield* count(p, "status = 'DEAD_LETTER' AND aggregate_id = 'r-poison'"), 1)
      }))

    it.effect("takes a pg Pool's connection settings; a plain throw is retried with backoff until it succeeds", () =>
      Effect.gen(function*() {
        const p = yield* pool
        yield* Effect.promise(() => p.query("DELETE FROM outbox"))
        yield* inTransaction(p, (c) => publish(c, order("flaky")))
        let attempts = 0
        const relay = yield* Effect.promise(() =>
          createRelay({
            pool: p,
            pollInterval: 50,
            maxConnections: 2,
            retryPolicy: RetryPolicy.exponential({ base: "20 millis", cap: "50 millis" }),
            handler: () => {
              if (++attempts < 3) throw new Error(`attempt ${attempts} failed`)
            }
          })
        )
        yield* Effect.promise(async () => {
          for (let i = 0; i < 200 && relay.stats().completed < 1; i++) await new Promise((r) => setTimeout(r, 50))
        })
        const stats = relay.stats()
        yield* Effect.promise(() => relay.stop())
        assert.strictEqual(attempts, 3)
        assert.strictEqual(stats.retried, 2)
        assert.strictEqual(stats.completed, 1)
        const row = (yield* Effect.promise(() => p.query("SELECT status, retry_count, last_error FROM outbox"))).rows[0]
        assert.deepStrictEqual([row.status, row.retry_count], ["COMPLETED", 2])
      }))

    it.effect("refuses to start without a handler or sink, and rejects when the database cannot be reached within startupTimeout", () =>
      Effect.gen(function*() {
        const none = yield* rejection(() => createRelay({ connectionString: "postgres://postgres@127.0.0.1:5432/x" }))
        assert.instanceOf(none, TypeError)
        const started = Date.now()
        const unreachable = yield* rejection(() =>
          createRelay({ connectionString: "postgres://postgres@127.0.0.1:1/none", handler: () => undefined, startupTimeout: 1_000 })
        )
        const waited = Date.now() - started
        // it kept trying (backoff from 100 ms) for about the timeout, then rejected with the last error
        assert.isAtLeast(waited, 900)
        assert.isBelow(waited, 10_000)
        assert.include(String((unreachable as Error).message), "ECONNREFUSED")
      }))
  })
})
