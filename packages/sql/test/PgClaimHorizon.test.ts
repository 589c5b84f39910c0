import { assert, layer } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

// The unordered claims read only the partitions from the claim horizon on (migration 0013_claim_horizon,
// `internal/claimHorizon.ts`): before it, every claim descended the claimable indexes of every partition, and
// daily partitions kept without retention made each claim slower by the day (9.5 ms for a claim of 100 at 370
// partitions against 0.16 at 5: bench:ordering, section 6). What a claim scanned is counted by the server for
// the current transaction (`pg_stat_xact_user_tables.idx_scan`), so each claim runs in a transaction of the
// test's. A row committed below a horizon already taken waits for the next one (10 s on Effect's Clock): it is
// claimed then, not lost.

const Live = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** Past daily partitions, as months of them kept without retention. */
const pastDays = 30

/** Index scans the current transaction ran on the partitions of days before yesterday. */
const oldScans = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ n: number }>`
    SELECT coalesce(sum(s.idx_scan), 0)::int AS n FROM pg_stat_xact_user_tables s
    WHERE s.relname LIKE 'outbox\\_p%' AND s.relname < 'outbox_p' || to_char(now() AT TIME ZONE 'UTC' - interval '1 day', 'YYYYMMDD')`
  return rows[0]!.n
})

/** `claim` in a transaction of the test's (the transaction claim nests in it), with its index scans of old partitions. */
const measured = <E>(claim: Effect.Effect<ReadonlyArray<OutboxEvent>, E, OutboxStore>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(Effect.gen(function*() {
      const before = yield* oldScans
      const claimed = yield* claim
      return { claimed, scans: (yield* oldScans) - before }
    }))
  })

const claims = {
  lease: Effect.flatMap(OutboxStore, (store) => store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })),
  transaction: Effect.flatMap(OutboxStore, (store) =>
    store.claimInTransaction(
      { limit: 10, timeout: Duration.seconds(5) },
      (events) => Effect.succeed({ completed: events, retried: [], deadLettered: [] })
    )),
  "tenant-fair lease": Effect.flatMap(
    OutboxStore,
    (store) => store.claim({ limit: 10, leaseDuration: Duration.seconds(30), fairness: {} })
  ),
  "tenant-fair transaction": Effect.flatMap(OutboxStore, (store) =>
    store.claimInTransaction(
      { limit: 10, timeout: Duration.seconds(5), fairness: {} },
      (events) => Effect.succeed({ completed: events, retried: [], deadLettered: [] })
    ))
}

/** `n` events due now, published today (plain SQL). */
const publish = (n: number, prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
        SELECT 'Order', ${prefix} || g, 'OrderCreated', '{}'::jsonb FROM generate_series(1, ${n}::int) g`)

/**
 * The past partitions, an empty outbox, and the store's horizon due again (the tests share one store; each
 * test's clock starts at 0, so 10 s on it is past the horizon's refresh interval).
 */
const setUp = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`TRUNCATE outbox`
  yield* sql`SELECT outbox_ensure_daily_partitions((now() AT TIME ZONE 'UTC')::date - ${pastDays}::int, ${pastDays - 1}::int)`
  yield* TestClock.adjust(Duration.seconds(10))
})

layer(Live, { timeout: "60 seconds" })("PgOutboxStore's unordered claims within the claim horizon", (it) => {
  for (const [mode, claim] of Object.entries(claims)) {
    it.effect(`the ${mode} claim reads no partition below the horizon`, () =>
      Effect.gen(function*() {
        yield* setUp
        // the horizon is taken (probing each partition once) by the first claim after its refresh interval
        assert.strictEqual((yield* claim).length, 0)
        yield* publish(20, "a")
        const { claimed, scans } = yield* measured(claim)
        assert.strictEqual(claimed.length, 10)
        // one scan of each index of each old partition (the ready and the scheduled parts) without the horizon
        assert.strictEqual(scans, 0, `index scans of the ${pastDays - 1} old partitions: ${scans}`)
      }))

    it.effect(`the ${mode} claim takes a row committed below its horizon at the next refresh, and loses nothing`, () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* setUp
        yield* publish(3, "a")
        // the first claim takes the horizon: today's partition (an hour back is still today, or yesterday's)
        const first = yield* claim
        assert.strictEqual(first.length, 3)
        // a producer's transaction begun ten days ago commits now: its row lands in that day's partition
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                   VALUES ('Order', 'late', 'OrderCreated', '{}'::jsonb, now() - interval '10 days')`
        yield* publish(2, "b")
        const before = yield* claim
        assert.deepStrictEqual(before.map((e) => e.aggregateId), ["b1", "b2"])
        // within the refresh interval the horizon is kept
        yield* TestClock.adjust(Duration.seconds(9))
        assert.deepStrictEqual((yield* claim).length, 0)
        // at the refresh the horizon reaches back to the late row's partition
        yield* TestClock.adjust(Duration.seconds(1))
        const after = yield* claim
        assert.deepStrictEqual(after.map((e) => e.aggregateId), ["late"])
      }))
  }

  it.effect("rows an ordered claim took below the horizon are settled: their statements leave the horizon out", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* setUp
      yield* publish(1, "a")
      // the horizon is taken (today's partition) and kept
      assert.strictEqual((yield* claims.lease).length, 1)
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                 VALUES ('Order', 'late', 'OrderCreated', '{}'::jsonb, now() - interval '10 days')`
      yield* publish(1, "b")
      // the ordered claim has no horizon: it takes the late row too
      const claimed = yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30), ordering: { deadLetter: "continue" } })
      assert.deepStrictEqual(claimed.map((e) => e.aggregateId), ["late", "b1"])
      // a completion bounded by the horizon would miss the late row and fail with LeaseLost
      yield* store.complete(claimed)
      const rows = yield* sql<{ status: string }>`SELECT status FROM outbox WHERE aggregate_id IN ('late', 'b1') ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => r.status), ["COMPLETED", "COMPLETED"])
    }))

  it.effect("a horizon that cannot be taken is none: the claims read every partition rather than fail", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* setUp
      yield* publish(4, "a")
      // as if EXECUTE were revoked: the store's call fails
      yield* sql`ALTER FUNCTION outbox_claim_horizon(regclass, interval) RENAME TO outbox_claim_horizon_away`
      const claimed = yield* Effect.all(Object.values(claims).map((claim) => claim)).pipe(
        Effect.ensuring(Effect.orDie(sql`ALTER FUNCTION outbox_claim_horizon_away(regclass, interval) RENAME TO outbox_claim_horizon`))
      )
      assert.deepStrictEqual(claimed.map((c) => c.map((e) => e.aggregateId)), [["a1", "a2", "a3", "a4"], [], [], []])
      // the next refresh takes it again: the old partitions are read no more
      yield* TestClock.adjust(Duration.seconds(10))
      assert.strictEqual((yield* claims.lease).length, 0)
      yield* publish(1, "b")
      const { claimed: next, scans } = yield* measured(claims.lease)
      assert.deepStrictEqual(next.map((e) => e.aggregateId), ["b1"])
      assert.strictEqual(scans, 0)
    }))

  it.effect("a row in the DEFAULT partition leaves no horizon: it is claimed at once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* setUp
      // older than every partition: the DEFAULT one
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                 VALUES ('Order', 'old', 'OrderCreated', '{}'::jsonb, now() - interval '${sql.literal(String(pastDays + 5))} days')`
      yield* publish(1, "a")
      const claimed = yield* claims.lease
      assert.deepStrictEqual(claimed.map((e) => e.aggregateId), ["old", "a1"])
    }))
})

layer(PgOutboxStore.layer({ claimHorizon: false }).pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie), {
  timeout: "60 seconds"
})("PgOutboxStore with claimHorizon: false", (it) => {
  it.effect("a row committed below where the horizon would be is claimed at once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* setUp
      yield* publish(1, "a")
      assert.strictEqual((yield* claims.lease).length, 1)
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                 VALUES ('Order', 'late', 'OrderCreated', '{}'::jsonb, now() - interval '10 days')`
      assert.deepStrictEqual((yield* claims.lease).map((e) => e.aggregateId), ["late"])
    }))
})
