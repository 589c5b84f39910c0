/**
 * The conformance suite every ORM adapter of `@outbox/client` runs on real
 * PostgreSQL with the real library (`Knex.test.ts`, `Drizzle.test.ts`,
 * `Kysely.test.ts`, `Prisma.test.ts`). Each test file describes how its
 * library opens a transaction and writes a business row with its own query
 * builder (`Library`); the suite checks, through the adapter, that:
 *
 * - an event published with a business row in a committed transaction is
 *   relayed by `createRelay`, and one in a rolled-back transaction never
 *   exists (neither row) and never reaches the handler;
 * - a batch goes through the `unnest` statement with each column as ONE
 *   array parameter (as the library sent it, from its own query log), and
 *   comes back as bigint ids in input order, tracking ids and `Date`s;
 * - `processOnce` gives Processed then Duplicate, and a throwing `fn` rolls
 *   back its record and its writes (SAVEPOINT through the library's raw API)
 *   while the caller's transaction commits; outside a transaction it refuses;
 * - an `InvalidEvent` leaves the transaction usable: the caller may go on and
 *   commit, or roll back; a failing statement rejects with `StoreError`
 *   carrying PostgreSQL's SQLSTATE (so a serialization failure is retryable);
 * - the executor sends text and values as they are (placeholders reused or out
 *   of order, `?` operators, array parameters).
 */
import { assert, describe, layer } from "@effect/vitest"
import { createRelay, InvalidEvent, StoreError } from "@outbox/client"
import type { EventInput, Executor, OutboxEvent, ProcessResult, PublishedEvent, PublishOptions } from "@outbox/client"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

/** One statement as the library logged it: its text and its parameters. */
export interface Statement {
  readonly sql: string
  readonly params: ReadonlyArray<unknown>
}

/**
 * What the suite needs from a library, built on the test database's URL.
 * `T` is the adapter's structural type (e.g. `KnexTransaction`), `Tx` the
 * library's real transaction object.
 */
export interface Library<T, Tx extends T> {
  /** Runs `f` in a transaction of the library: COMMIT when it resolves, ROLLBACK when it throws. */
  readonly transaction: <A>(f: (tx: Tx) => Promise<A>) => Promise<A>
  /** Inserts `orders(id)` with the library's own query builder. */
  readonly insertOrder: (tx: Tx, id: string) => Promise<unknown>
  /** The library's handle outside any transaction (each statement autocommits). */
  readonly autocommit: T
  /** Every statement the library sent, appended by its query log. */
  readonly statements: ReadonlyArray<Statement>
  readonly close: () => Promise<void>
}

/** The adapter module under test (`@outbox/client/knex`, …). */
export interface AdapterModule<T> {
  readonly executor: (trx: T) => Executor
  readonly publish: {
    (trx: T, event: EventInput, options?: PublishOptions): Promise<PublishedEvent>
    (trx: T, events: ReadonlyArray<EventInput>, options?: PublishOptions): Promise<ReadonlyArray<PublishedEvent>>
  }
  readonly processOnce: <A>(trx: T, consumer: string, trackingId: string, fn: () => PromiseLike<A> | A) => Promise<ProcessResult<A>>
}

const order = (id: string): EventInput => ({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id } })

/** What `promise` settles with: `{ ok: value }` or `{ error }`, so a test can assert on either. */
const settle = <A>(promise: () => Promise<A>) =>
  Effect.promise(() =>
    promise().then((ok) => ({ ok, error: undefined }), (error: unknown) => ({ ok: undefined, error }))
  )

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Registers the suite under `name`: a fresh database per test file with the
 * outbox migrations and an `orders` table, and `make`'s library on it
 * (closed when the file's layer closes).
 */
export const suite = <T, Tx extends T>(
  name: string,
  adapter: AdapterModule<T>,
  make: (url: string) => Promise<Library<T, Tx>>
) => {
  const Lib = Context.Service<Library<T, Tx>>("@outbox/client/test/AdapterSuite/Library")
  const Live = Layer.effect(
    Lib,
    Effect.gen(function*() {
      const db = yield* TestDatabase.TestDatabase
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE orders (id text PRIMARY KEY)`
      return yield* Effect.acquireRelease(Effect.promise(() => make(db.url)), (lib) => Effect.promise(() => lib.close()))
    })
  ).pipe(
    Layer.provideMerge(OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer))),
    Layer.orDie
  )

  const count = (table: "outbox" | "orders" | "outbox_inbox", where: string) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE ${sql.literal(where)}`).pipe(
        Effect.map((rows) => rows[0]!.n),
        Effect.orDie
      )

  layer(Live, { timeout: "60 seconds" })(name, (it) => {
    describe("publish and createRelay", () => {
      it.effect("a committed event is relayed with its business row; a rolled-back one never exists nor is delivered", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const db = yield* TestDatabase.TestDatabase
          const sql = yield* SqlClient.SqlClient
          yield* Effect.orDie(sql`DELETE FROM outbox`)
          const committed = yield* Effect.promise(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "relay-committed")
              return adapter.publish(tx, order("relay-committed"))
            })
          )
          const rolledBack = yield* settle(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "relay-rolled-back")
              await adapter.publish(tx, order("relay-rolled-back"))
              throw new Error("abort")
            })
          )
          assert.strictEqual((rolledBack.error as Error).message, "abort")
          assert.strictEqual(yield* count("orders", "id = 'relay-committed'"), 1)
          assert.strictEqual(yield* count("outbox", "aggregate_id = 'relay-committed'"), 1)
          assert.strictEqual(yield* count("orders", "id = 'relay-rolled-back'"), 0)
          assert.strictEqual(yield* count("outbox", "aggregate_id = 'relay-rolled-back'"), 0)

          const seen: Array<OutboxEvent> = []
          const relay = yield* Effect.promise(() =>
            createRelay({ connectionString: db.url, pollInterval: 50, maxConnections: 4, handler: (event) => void seen.push(event) })
          )
          yield* Effect.promise(async () => {
            for (let i = 0; i < 200 && relay.stats().completed < 1; i++) await sleep(50)
            await sleep(200) // a few more polls: anything else in the outbox would show up too
          })
          const stats = relay.stats()
          yield* Effect.promise(() => relay.stop())
          assert.strictEqual(stats.completed, 1)
          assert.deepStrictEqual(seen.map((e) => [e.id, e.trackingId, e.aggregateId, e.payload]), [
            [committed.id, committed.trackingId, "relay-committed", { id: "relay-committed" }]
          ])
          assert.strictEqual(yield* count("outbox", "aggregate_id = 'relay-committed' AND status = 'COMPLETED'"), 1)
        }))

      it.effect("a batch is one unnest statement with one array parameter per column; ids come back in order", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const sql = yield* SqlClient.SqlClient
          const before = lib.statements.length
          const ids = ["batch-1", "batch-2", "batch-3"]
          const published = yield* Effect.promise(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "batch")
              return adapter.publish(tx, ids.map(order))
            })
          )
          assert.strictEqual(published.length, 3)
          for (const [i, event] of published.entries()) {
            assert.strictEqual(typeof event.id, "bigint")
            assert.strictEqual(event.id, published[0]!.id + BigInt(i))
            assert.match(event.trackingId, /^[0-9a-f-]{36}$/)
            assert.instanceOf(event.createdAt, Date)
            assert.isFalse(Number.isNaN(event.createdAt.getTime()))
          }
          assert.strictEqual(new Set(published.map((e) => e.trackingId)).size, 3)
          const rows = yield* Effect.orDie(sql<{ readonly id: string; readonly aggregate_id: string; readonly tracking_id: string }>`
            SELECT id::text, aggregate_id, tracking_id::text FROM outbox WHERE aggregate_id LIKE 'batch-%' ORDER BY id`)
          assert.deepStrictEqual(rows.map((r) => [BigInt(r.id), r.aggregate_id, r.tracking_id]),
            published.map((e, i) => [e.id, ids[i], e.trackingId]))
          assert.strictEqual(yield* count("orders", "id = 'batch'"), 1)

          // as the library sent it: the unnest statement, with six parameters, each one array
          const sent = lib.statements.slice(before).filter((s) => s.sql.includes("unnest("))
          assert.strictEqual(sent.length, 1)
          assert.match(sent[0]!.sql, /unnest\(\$1::text\[\], \$2::text\[\], \$3::text\[\], \$4::text\[\], \$5::text\[\], \$6::int\[\]\)/)
          assert.strictEqual(sent[0]!.params.length, 6)
          assert.deepStrictEqual(sent[0]!.params[0], ["Order", "Order", "Order"])
          assert.deepStrictEqual(sent[0]!.params[1], ids)
          assert.deepStrictEqual(sent[0]!.params[5], [5, 5, 5])
        }))
    })

    describe("processOnce", () => {
      it.effect("Processed, then Duplicate; a throwing fn rolls back its record and writes while the caller commits", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const charge = (id: string) =>
            lib.transaction((tx) =>
              adapter.processOnce(tx, "billing", id, () => lib.insertOrder(tx, `charge-${id}`).then(() => "charged"))
            )
          assert.deepStrictEqual(yield* Effect.promise(() => charge("t-1")), { _tag: "Processed", value: "charged" })
          assert.deepStrictEqual(yield* Effect.promise(() => charge("t-1")), { _tag: "Duplicate" })
          const other = yield* Effect.promise(() => lib.transaction((tx) => adapter.processOnce(tx, "shipping", "t-1", () => 1)))
          assert.deepStrictEqual(other, { _tag: "Processed", value: 1 })

          // fn throws: its error surfaces unchanged; the caller catches it and commits anyway
          const boom = new Error("boom")
          const thrown = yield* Effect.promise(() =>
            lib.transaction(async (tx) => {
              const error = await adapter.processOnce(tx, "billing", "t-2", async () => {
                await lib.insertOrder(tx, "charge-t-2")
                throw boom
              }).then(() => undefined, (e: unknown) => e)
              await lib.insertOrder(tx, "after-t-2") // the transaction is still usable
              return error
            })
          )
          assert.strictEqual(thrown, boom)
          assert.strictEqual(yield* count("orders", "id = 'after-t-2'"), 1)
          assert.strictEqual(yield* count("orders", "id = 'charge-t-2'"), 0)
          assert.strictEqual(yield* count("outbox_inbox", "consumer = 'billing' AND tracking_id = 't-2'"), 0)
          // not recorded, so processed on the next delivery
          assert.deepStrictEqual(yield* Effect.promise(() => charge("t-2")), { _tag: "Processed", value: "charged" })
          assert.strictEqual(yield* count("orders", "id LIKE 'charge-%'"), 2)
          assert.strictEqual(yield* count("outbox_inbox", "true"), 3)
        }))

      it.effect("outside a transaction it refuses before recording anything", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          let ran = false
          const result = yield* settle(() => adapter.processOnce(lib.autocommit, "billing", "t-9", () => (ran = true)))
          assert.instanceOf(result.error, StoreError)
          assert.include((result.error as StoreError).message, "needs an open transaction")
          assert.isFalse(ran)
          assert.strictEqual(yield* count("outbox_inbox", "tracking_id = 't-9'"), 0)
        }))
    })

    describe("executor", () => {
      it.effect("sends the text and values as they are: placeholders reused or out of order, ? operators, arrays", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const result = yield* Effect.promise(() =>
            lib.transaction((tx) =>
              Promise.resolve(adapter.executor(tx).query(
                `SELECT $2::text AS b, $1::text AS a, $1::text AS again, '{"k":1}'::jsonb ? 'k' AS has,
                  '{"k":1}'::jsonb ?| array['x'] AS "none", $3::int[] AS list`,
                ["x", "y", [1, 2]]
              ))
            )
          )
          assert.deepStrictEqual(result.rows.map((r) => [r.b, r.a, r.again, r.has, r.none, r.list]), [
            ["y", "x", "x", true, false, [1, 2]]
          ])
        }))
    })

    describe("errors", () => {
      it.effect("InvalidEvent leaves the transaction to the caller: go on and commit, or roll back", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          // the caller carries on and commits
          const kept = yield* Effect.promise(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "invalid-kept")
              const single = await adapter.publish(tx, { ...order("invalid-bad"), eventType: "" }).then(
                () => undefined,
                (e: unknown) => e
              )
              const batch = await adapter.publish(tx, [order("invalid-bad-2"), { ...order("invalid-bad-3"), aggregateId: "" }])
                .then(() => undefined, (e: unknown) => e)
              await adapter.publish(tx, order("invalid-kept"))
              return { single, batch }
            })
          )
          assert.instanceOf(kept.single, InvalidEvent)
          assert.strictEqual((kept.single as InvalidEvent).field, "eventType")
          assert.instanceOf(kept.batch, InvalidEvent)
          assert.strictEqual((kept.batch as InvalidEvent).index, 1)
          assert.strictEqual(yield* count("orders", "id = 'invalid-kept'"), 1)
          assert.strictEqual(yield* count("outbox", "aggregate_id = 'invalid-kept'"), 1)
          assert.strictEqual(yield* count("outbox", "aggregate_id LIKE 'invalid-bad%'"), 0)

          // the caller rolls back: the event published before the invalid one goes too
          const dropped = yield* settle(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "invalid-dropped")
              await adapter.publish(tx, order("invalid-dropped"))
              await adapter.publish(tx, { ...order("invalid-dropped-bad"), payload: { n: 1n } })
            })
          )
          assert.instanceOf(dropped.error, InvalidEvent)
          assert.strictEqual((dropped.error as InvalidEvent).reason, "NotSerializable")
          assert.strictEqual(yield* count("orders", "id = 'invalid-dropped'"), 0)
          assert.strictEqual(yield* count("outbox", "aggregate_id LIKE 'invalid-dropped%'"), 0)
        }))

      it.effect("a serialization failure rejects with a retryable StoreError", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const sql = yield* SqlClient.SqlClient
          // an outbox whose INSERT fails as a conflicting SERIALIZABLE transaction would
          for (
            const statement of [
              "CREATE TABLE outbox_conflict (LIKE outbox INCLUDING DEFAULTS)",
              `CREATE FUNCTION outbox_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$`,
              "CREATE TRIGGER outbox_conflict BEFORE INSERT ON outbox_conflict FOR EACH ROW EXECUTE FUNCTION outbox_conflict()"
            ]
          ) yield* Effect.orDie(sql.unsafe(statement))
          const failed = yield* settle(() =>
            lib.transaction((tx) => adapter.publish(tx, order("conflict"), { table: "outbox_conflict" }))
          )
          assert.instanceOf(failed.error, StoreError)
          assert.include((failed.error as StoreError).message, "40001")
          assert.include((failed.error as StoreError).message, "could not serialize access")
          assert.isTrue((failed.error as StoreError).retryable)
        }))

      it.effect("a failing statement rejects with StoreError carrying the SQLSTATE; the library rolls back", () =>
        Effect.gen(function*() {
          const lib = yield* Lib
          const failed = yield* settle(() =>
            lib.transaction(async (tx) => {
              await lib.insertOrder(tx, "store-error")
              await adapter.publish(tx, order("store-error"), { table: "no_such_outbox" })
            })
          )
          assert.instanceOf(failed.error, StoreError)
          assert.include((failed.error as StoreError).message, "42P01")
          assert.isFalse((failed.error as StoreError).retryable)
          assert.strictEqual(yield* count("orders", "id = 'store-error'"), 0)
        }))
    })
  })
}
