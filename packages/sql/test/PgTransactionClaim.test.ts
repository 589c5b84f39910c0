import { assert, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { StoreError } from "@outbox/core/OutboxError"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// What only PostgreSQL does for `claimInTransaction` (the rest is StoreContract's): the server's own bound on
// the claiming transaction, which holds when this process stalls, and the statements' cost.

const StoreLive = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const publish = (n: number) =>
  Outbox.transaction(Outbox.publishAll(Array.from({ length: n }, (_, i) => ({
    aggregateType: "Order",
    aggregateId: `o-${i}`,
    eventType: "OrderCreated",
    payload: { i }
  }))))

/** Blocks the event loop (a stalled process: GC pause, CPU-bound handler): no timer of ours can fire. */
const stall = (ms: number) =>
  Effect.sync(() => {
    const until = performance.now() + ms
    while (performance.now() < until) {
      // busy
    }
  })

layer(StoreLive, { timeout: "60 seconds", excludeTestServices: true })("PgOutboxStore.claimInTransaction", (it) => {
  it.effect("a stalled process cannot hold the rows: the server ends the transaction after timeout + 1 s, nothing settles", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* sql`TRUNCATE outbox`
      yield* publish(2)
      const error = yield* Effect.flip(
        store.claimInTransaction({ limit: 10, timeout: Duration.millis(300) }, (events) =>
          Effect.as(stall(2_000), { completed: events, retried: [], deadLettered: [] }))
      )
      assert.instanceOf(error, StoreError)
      assert.isTrue(error.retryable)
      const rows = yield* sql<{ status: string }>`SELECT status FROM outbox ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => r.status), ["PENDING", "PENDING"])
      // the rows are claimable at once, through a new connection
      const again = yield* store.claimInTransaction(
        { limit: 10, timeout: Duration.seconds(5) },
        (events) => Effect.succeed({ completed: events, retried: [], deadLettered: [] })
      )
      assert.strictEqual(again.length, 2)
    }))

  it.effect("the bounds are local to the claiming transaction: the pooled session keeps its defaults", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* sql`TRUNCATE outbox`
      yield* publish(1)
      yield* store.claimInTransaction(
        { limit: 10, timeout: Duration.millis(300) },
        (events) => Effect.succeed({ completed: events, retried: [], deadLettered: [] })
      )
      // every pooled connection, the claim's included, is back to the server's defaults
      const settings = yield* Effect.all(
        Array.from({ length: 8 }, () =>
          sql.withTransaction(
            sql<{ s: string; i: string }>`SELECT current_setting('statement_timeout') AS s,
                                                 current_setting('idle_in_transaction_session_timeout') AS i`
          )),
        { concurrency: "unbounded" }
      )
      for (const [row] of settings) assert.deepStrictEqual([row!.s, row!.i], ["0", "0"])
    }))
})
