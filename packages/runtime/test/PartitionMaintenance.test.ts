import { assert, describe, layer } from "@effect/vitest"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as PartitionMaintenance from "@outbox/runtime/PartitionMaintenance"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

const Live = PartitionManager.layer.pipe(
  Layer.provideMerge(OutboxMigrations.layer),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

/** The calendar, written out independently of PartitionPolicy: `yyyymmdd` of each UTC day in [from, to]. */
const days = (from: string, to: string): Array<string> => {
  const out: Array<string> = []
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += 86_400_000) {
    out.push(new Date(t).toISOString().slice(0, 10).replaceAll("-", ""))
  }
  return out
}

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("PartitionMaintenance", (it) => {
  describe("the schedule under TestClock", () => {
    it.effect("40 days of virtual time create and retire exactly the partitions the calendar says", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`CREATE TABLE clock_events (id bigserial, created_at timestamptz NOT NULL,
          status text NOT NULL DEFAULT 'COMPLETED', PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`)
        yield* sql.unsafe(`CREATE TABLE clock_events_default PARTITION OF clock_events DEFAULT`)
        yield* TestClock.setTime(Date.UTC(2026, 0, 15, 9))
        const policy = PartitionPolicy.make({
          table: "clock_events",
          column: "created_at",
          interval: "daily",
          premake: 3,
          retention: { amount: 7, unit: "days" },
          protect: { column: "status", doneValues: ["COMPLETED", "DEAD_LETTER"] }
        })
        const context = yield* Layer.build(PartitionMaintenance.layer({ policies: [policy], every: "6 hours" }))
        const maintenance = Context.get(context, PartitionMaintenance.PartitionMaintenance)
        const runsAtLeast = (n: number) => RelayTestKit.eventually(Effect.map(maintenance.status, (s) => s.runs >= n))
        const partitions = Effect.map(
          sql<{ name: string }>`SELECT name FROM outbox_partition_leaves WHERE parent = 'clock_events' AND NOT is_default ORDER BY range_from`,
          (rows) => rows.map((r) => r.name.replace("clock_events_p", ""))
        )

        yield* runsAtLeast(1)
        assert.deepStrictEqual(yield* partitions, days("2026-01-15", "2026-01-18"))
        // an event of Jan 20 still pending: its partition must outlive its retention
        yield* sql`INSERT INTO clock_events (created_at, status) VALUES ('2026-01-20T12:00:00Z', 'PENDING')`

        for (let step = 1; step <= 40 * 4; step++) {
          yield* TestClock.adjust("6 hours")
          yield* runsAtLeast(step + 1)
          if (step === 10 * 4) {
            // Jan 25 09:00: cutoff Jan 18 09:00 retires Jan 15..17; horizon Jan 28
            assert.deepStrictEqual(yield* partitions, days("2026-01-18", "2026-01-28"))
          }
        }
        // Feb 24 09:00: cutoff Feb 17 09:00; Jan 20 is kept (blocked), everything else before Feb 17 is gone
        assert.deepStrictEqual(yield* partitions, ["20260120", ...days("2026-02-17", "2026-02-27")])
        const status = yield* maintenance.status
        assert.strictEqual(status.runs, 161)
        assert.strictEqual(status.failures, 0)
        assert.deepStrictEqual(status.lastRunAt, new Date(Date.UTC(2026, 1, 24, 9)))
        assert.deepStrictEqual(status.lastReports[0]!.blocked, [{ partition: "clock_events_p20260120", unfinished: 1 }])

        // delivered at last: the next run retires it
        yield* sql`UPDATE clock_events SET status = 'COMPLETED'`
        yield* TestClock.adjust("6 hours")
        yield* runsAtLeast(162)
        assert.deepStrictEqual(yield* partitions, days("2026-02-17", "2026-02-27"))
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))

    it.effect("a failing policy is logged and counted; the schedule goes on", () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(PartitionMaintenance.layer({
          policies: [PartitionPolicy.make({ table: "missing_table", column: "created_at", interval: "daily" })],
          every: "1 hour"
        }))
        const maintenance = Context.get(context, PartitionMaintenance.PartitionMaintenance)
        yield* RelayTestKit.eventually(Effect.map(maintenance.status, (s) => s.runs >= 1))
        yield* TestClock.adjust("1 hour")
        yield* RelayTestKit.eventually(Effect.map(maintenance.status, (s) => s.runs >= 2))
        const status = yield* maintenance.status
        assert.strictEqual(status.failures, 2)
        assert.include(status.lastError, "missing_table does not exist")
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))
  })
})
