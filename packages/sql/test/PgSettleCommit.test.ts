import { assert, layer } from "@effect/vitest"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// A lease's settling transitions (complete, retry, dead letter, release), and the transaction claim's
// settlement, commit without waiting for the WAL flush (`PgOutboxStore.Options.settleCommit`, default
// "asynchronous"); claims and renewals do wait. What a
// transaction commits with is read where it commits: a deferred constraint trigger on the outbox runs at
// commit time and records the `synchronous_commit` in force then, with the row's new status.

const lease = Duration.seconds(30)

/** The trigger and its log (idempotent: each layer's database gets them once). */
const recordCommits = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS commit_settings (seq bigserial, status text, setting text)`
  yield* sql`CREATE OR REPLACE FUNCTION record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO commit_settings (status, setting) VALUES (NEW.status, current_setting('synchronous_commit'));
      RETURN NULL;
    END $$`
  yield* sql`DROP TRIGGER IF EXISTS record_commit_setting ON outbox`
  yield* sql`CREATE CONSTRAINT TRIGGER record_commit_setting AFTER UPDATE ON outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION record_commit_setting()`
  yield* sql`TRUNCATE outbox`
  yield* sql`TRUNCATE commit_settings`
})

/** The settings recorded since the last `recordCommits`, as `status:setting`, in commit order. */
const recorded = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ status: string; setting: string }>`SELECT status, setting FROM commit_settings ORDER BY seq`,
    (rows) => rows.map((r) => `${r.status}:${r.setting}`)
  ))

const publish = (n: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
        SELECT 'Order', 'o' || g, 'OrderCreated', '{}'::jsonb FROM generate_series(1, ${n}::int) g`)

const claim = (n: number) => Effect.flatMap(OutboxStore, (store) => store.claim({ limit: n, leaseDuration: lease }))

/** One transaction claim of `n` that completes the first event, retries the second and dead-letters the third. */
const claimInTransaction = (n: number) =>
  Effect.flatMap(OutboxStore, (store) =>
    store.claimInTransaction({ limit: n, timeout: Duration.seconds(5) }, (events) =>
      Effect.succeed({
        completed: events.slice(0, 1),
        retried: events.slice(1, 2).map((event) => ({ event, error: "boom", delay: Duration.seconds(5) })),
        deadLettered: events.slice(2, 3).map((event) => ({ event, error: "poison" }))
      })))

const Asynchronous = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

layer(Asynchronous, { timeout: "60 seconds" })("PgOutboxStore settles leases with asynchronous commits", (it) => {
  it.effect("complete, retry, dead letter and release commit asynchronously; claims and renewals do not", () =>
    Effect.gen(function*() {
      const store = yield* OutboxStore
      yield* recordCommits
      yield* publish(4)
      const [a, b, c, d] = yield* claim(4)
      yield* store.renew([a!, b!, c!, d!], lease)
      yield* store.complete([a!])
      yield* store.retry(b!, { error: "boom", delay: Duration.seconds(5) })
      yield* store.deadLetter(c!, { error: "poison" })
      yield* store.release([d!])
      assert.deepStrictEqual(yield* recorded, [
        // the claim of 4 rows and their renewal
        ...Array(4).fill("PROCESSING:on"),
        ...Array(4).fill("PROCESSING:on"),
        "COMPLETED:off",
        "FAILED:off",
        "DEAD_LETTER:off",
        "PENDING:off"
      ])
    }))

  it.effect("within a caller's transaction the statement leaves the setting to the transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* recordCommits
      yield* publish(2)
      const [a, b] = yield* claim(2)
      // the completion in a transaction of the caller's commits as that transaction does
      yield* sql.withTransaction(store.complete([a!]))
      yield* store.complete([b!])
      assert.deepStrictEqual(yield* recorded, ["PROCESSING:on", "PROCESSING:on", "COMPLETED:on", "COMPLETED:off"])
    }))

  it.effect("the transaction claim's settlement commits asynchronously, unless a caller's transaction holds it", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* recordCommits
      yield* publish(3)
      yield* claimInTransaction(3)
      // one statement settles all three: the order its rows were updated in is the plan's
      assert.deepStrictEqual((yield* recorded).sort(), ["COMPLETED:off", "DEAD_LETTER:off", "FAILED:off"])
      yield* recordCommits
      yield* publish(3)
      // nested: the claim's transaction is a savepoint of the caller's, whose commit keeps its setting
      yield* sql.withTransaction(claimInTransaction(3))
      assert.deepStrictEqual((yield* recorded).sort(), ["COMPLETED:on", "DEAD_LETTER:on", "FAILED:on"])
    }))

  it.effect("the setting ends with the statement's transaction: the session's next statements flush", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* recordCommits
      yield* publish(8)
      const events = yield* claim(8)
      // one completion per pooled connection and more; none of them leaves its session asynchronous
      yield* Effect.forEach(events, (event) => store.complete([event]), { concurrency: 8, discard: true })
      const settings = yield* Effect.forEach(
        Array.from({ length: 16 }),
        () => Effect.map(sql<{ s: string }>`SELECT current_setting('synchronous_commit') AS s`, (rows) => rows[0]!.s),
        { concurrency: 8 }
      )
      assert.deepStrictEqual([...new Set(settings)], ["on"])
      assert.strictEqual((yield* recorded).filter((r) => r === "COMPLETED:off").length, 8)
    }))
})

const Synchronous = PgOutboxStore.layer({ settleCommit: "synchronous" }).pipe(
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

layer(Synchronous, { timeout: "60 seconds" })("PgOutboxStore with settleCommit: synchronous", (it) => {
  it.effect("settles with the server's own setting", () =>
    Effect.gen(function*() {
      const store = yield* OutboxStore
      yield* recordCommits
      yield* publish(2)
      const [a, b] = yield* claim(2)
      yield* store.complete([a!])
      yield* store.release([b!])
      assert.deepStrictEqual(yield* recorded, ["PROCESSING:on", "PROCESSING:on", "COMPLETED:on", "PENDING:on"])
      yield* recordCommits
      yield* publish(3)
      yield* claimInTransaction(3)
      assert.deepStrictEqual((yield* recorded).sort(), ["COMPLETED:on", "DEAD_LETTER:on", "FAILED:on"])
    }))
})
