import { assert, describe, layer } from "@effect/vitest"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as Identifier from "@outbox/sql/Identifier"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

const Live = PartitionManager.layer.pipe(
  Layer.provideMerge(OutboxMigrations.layer),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

const day = (iso: string) => new Date(`${iso}T00:00:00Z`)
const names = (leaves: ReadonlyArray<PartitionManager.Leaf>) => leaves.filter((l) => !l.isDefault).map((l) => l.name)

/** A table partitioned by day on created_at, with or without a DEFAULT partition. */
const createTable = (name: string, withDefault = true) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`CREATE TABLE ${name} (
      id bigserial, created_at timestamptz NOT NULL, status text NOT NULL DEFAULT 'PENDING', body text,
      PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`)
    if (withDefault) yield* sql.unsafe(`CREATE TABLE ${name}_default PARTITION OF ${name} DEFAULT`)
  })

const insertAt = (table: string, at: Date, status = "COMPLETED", n = 1) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO ${sql(table)} (created_at, status, body)
        SELECT ${at}::timestamptz + (g * interval '1 second'), ${status}, 'row ' || g FROM generate_series(1, ${n}) g`)

const count = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

// the client is built outside the test services; each test gets its own TestClock
const test = <A, E>(effect: Effect.Effect<A, E, PartitionManager.PartitionManager | SqlClient.SqlClient>) =>
  Effect.provide(effect, TestClock.layer())

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("PartitionManager", (it) => {
  describe("create ahead", () => {
    it.effect("creates the current day and premake days ahead, once", () =>
      test(Effect.gen(function*() {
        yield* createTable("ahead_events")
        yield* TestClock.setTime(Date.UTC(2026, 0, 15, 9))
        const manager = yield* PartitionManager.PartitionManager
        const policy = PartitionPolicy.make({ table: "ahead_events", column: "created_at", interval: "daily", premake: 3 })

        const steps: Array<PartitionManager.MaintenanceStep> = []
        const first = yield* manager.maintain(policy, { onStep: (step) => Effect.sync(() => steps.push(step)) })
        assert.deepStrictEqual(first.created, [
          "ahead_events_p20260115",
          "ahead_events_p20260116",
          "ahead_events_p20260117",
          "ahead_events_p20260118"
        ])
        // each step is reported as it is done
        assert.deepStrictEqual(steps, first.created.map((partition) => ({ step: "create", partition, outcome: "done" })))
        const second = yield* manager.maintain(policy)
        assert.deepStrictEqual(second.created, [])
        const leaves = yield* manager.leaves("ahead_events")
        assert.deepStrictEqual(names(leaves), first.created)
        assert.deepStrictEqual(leaves[0]!.from, day("2026-01-15"))
        assert.deepStrictEqual(leaves[0]!.to, day("2026-01-16"))
        assert.isTrue(leaves[leaves.length - 1]!.isDefault)
      })))

    it.effect("monthly and quarterly policies follow the calendar", () =>
      test(Effect.gen(function*() {
        yield* createTable("monthly_events")
        yield* createTable("quarterly_events")
        yield* TestClock.setTime(Date.UTC(2026, 10, 30, 23, 59))
        const manager = yield* PartitionManager.PartitionManager
        const monthly = yield* manager.maintain(
          PartitionPolicy.make({ table: "monthly_events", column: "created_at", interval: "monthly", premake: 2 })
        )
        assert.deepStrictEqual(monthly.created, ["monthly_events_p20261101", "monthly_events_p20261201", "monthly_events_p20270101"])
        const quarterly = yield* manager.maintain(
          PartitionPolicy.make({ table: "quarterly_events", column: "created_at", interval: "quarterly", premake: 1 })
        )
        assert.deepStrictEqual(quarterly.created, ["quarterly_events_p20261001", "quarterly_events_p20270101"])
        const leaves = yield* manager.leaves("quarterly_events")
        assert.deepStrictEqual(leaves[1]!.to, day("2027-04-01"))
      })))

    it.effect("two maintainers at once create each partition exactly once", () =>
      test(Effect.gen(function*() {
        yield* createTable("racing_events")
        yield* TestClock.setTime(Date.UTC(2026, 0, 15, 9))
        const manager = yield* PartitionManager.PartitionManager
        const policy = PartitionPolicy.make({ table: "racing_events", column: "created_at", interval: "daily", premake: 5 })
        const reports = yield* Effect.all([manager.maintain(policy), manager.maintain(policy), manager.maintain(policy)], {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(reports.flatMap((r) => r.failed), [])
        assert.strictEqual(reports.flatMap((r) => r.created).length, 6)
        assert.strictEqual(names(yield* manager.leaves("racing_events")).length, 6)
      })))
  })

  describe("DEFAULT rescue", () => {
    it.effect("rows in DEFAULT get partitions of their own ranges; nothing is lost", () =>
      test(Effect.gen(function*() {
        yield* createTable("stray_events")
        yield* TestClock.setTime(Date.UTC(2026, 0, 15, 9))
        // maintenance was late: rows of a past day and of a day past the horizon sit in DEFAULT
        yield* insertAt("stray_events", new Date(Date.UTC(2026, 0, 10, 12)), "COMPLETED", 50)
        yield* insertAt("stray_events", new Date(Date.UTC(2026, 0, 15, 8)), "PENDING", 20)
        yield* insertAt("stray_events", new Date(Date.UTC(2026, 0, 25, 1)), "PENDING", 30)
        const manager = yield* PartitionManager.PartitionManager
        const before = yield* manager.health(
          PartitionPolicy.make({ table: "stray_events", column: "created_at", interval: "daily", premake: 3 })
        )
        assert.isTrue(before.problems.some((p) => p.kind === "RowsInDefault"))
        assert.strictEqual(before.rowsInDefault, 100)

        const report = yield* manager.maintain(
          PartitionPolicy.make({ table: "stray_events", column: "created_at", interval: "daily", premake: 3 })
        )
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.moved, [
          { partition: "stray_events_p20260110", rows: 50 },
          { partition: "stray_events_p20260115", rows: 20 },
          { partition: "stray_events_p20260125", rows: 30 }
        ])
        assert.strictEqual(yield* count("stray_events_default"), 0)
        assert.strictEqual(yield* count("stray_events_p20260110"), 50)
        assert.strictEqual(yield* count("stray_events"), 100)
        // the moved partitions are real partitions: inserts route to them
        yield* insertAt("stray_events", new Date(Date.UTC(2026, 0, 10, 13)))
        assert.strictEqual(yield* count("stray_events_p20260110"), 51)
      })))
  })

  describe("retention", () => {
    it.effect("drops partitions past retention, keeps one holding unfinished rows and reports it", () =>
      test(Effect.gen(function*() {
        yield* createTable("kept_events")
        const manager = yield* PartitionManager.PartitionManager
        const policy = PartitionPolicy.make({
          table: "kept_events",
          column: "created_at",
          interval: "daily",
          premake: 1,
          retention: { amount: 7, unit: "days" },
          protect: { column: "status", doneValues: ["COMPLETED", "DEAD_LETTER"] }
        })
        yield* TestClock.setTime(Date.UTC(2026, 0, 1, 9))
        yield* manager.maintain(PartitionPolicy.make({ ...policy, premake: 14, retention: undefined }))
        yield* insertAt("kept_events", new Date(Date.UTC(2026, 0, 2, 10)), "COMPLETED", 10)
        yield* insertAt("kept_events", new Date(Date.UTC(2026, 0, 3, 10)), "PENDING", 1)
        yield* insertAt("kept_events", new Date(Date.UTC(2026, 0, 4, 10)), "DEAD_LETTER", 3)

        yield* TestClock.setTime(Date.UTC(2026, 0, 12, 9))
        // cutoff 2026-01-05T09:00: the partitions of Jan 1..4 end at or before it
        const health = yield* manager.health(policy)
        assert.isTrue(health.problems.some((p) => p.kind === "PastRetention"))
        const report = yield* manager.maintain(policy)
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.retired.map((r) => r.partition), [
          "kept_events_p20260101",
          "kept_events_p20260102",
          "kept_events_p20260104"
        ])
        assert.deepStrictEqual(report.retired.map((r) => r.detach), ["locking", "locking", "locking"])
        assert.deepStrictEqual(report.blocked, [{ partition: "kept_events_p20260103", unfinished: 1 }])
        const left = names(yield* manager.leaves("kept_events"))
        assert.strictEqual(left[0], "kept_events_p20260103")
        assert.strictEqual(left[1], "kept_events_p20260105")
        assert.strictEqual(yield* count("kept_events"), 1)
        const sql = yield* SqlClient.SqlClient
        const gone = yield* sql<{ t: string | null }>`SELECT to_regclass('kept_events_p20260102')::text AS t`
        assert.isNull(gone[0]!.t)
      })))

    it.effect("without a DEFAULT partition the detach is CONCURRENTLY; detach mode keeps the table", () =>
      test(Effect.gen(function*() {
        yield* createTable("plain_events", false)
        const manager = yield* PartitionManager.PartitionManager
        yield* TestClock.setTime(Date.UTC(2026, 0, 1, 9))
        yield* manager.maintain(PartitionPolicy.make({ table: "plain_events", column: "created_at", interval: "daily", premake: 4 }))
        yield* insertAt("plain_events", new Date(Date.UTC(2026, 0, 1, 10)), "COMPLETED", 5)
        yield* TestClock.setTime(Date.UTC(2026, 0, 4, 9))
        const report = yield* manager.maintain(PartitionPolicy.make({
          table: "plain_events",
          column: "created_at",
          interval: "daily",
          premake: 4,
          retention: { amount: 1, unit: "days" },
          retentionMode: "detach"
        }))
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.retired, [
          { partition: "plain_events_p20260101", action: "detached", detach: "concurrently" },
          { partition: "plain_events_p20260102", action: "detached", detach: "concurrently" }
        ])
        // detached, not dropped: the rows are still there, outside the parent
        assert.strictEqual(yield* count("plain_events_p20260101"), 5)
        assert.strictEqual(yield* count("plain_events"), 0)
      })))
  })

  describe("health", () => {
    it.effect("names gaps, a short horizon, a missing DEFAULT and too many partitions; a maintained table is ok", () =>
      test(Effect.gen(function*() {
        yield* createTable("gappy_events", false)
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`CREATE TABLE gappy_events_a PARTITION OF gappy_events FOR VALUES FROM ('2026-01-14') TO ('2026-01-15')`)
        yield* sql.unsafe(`CREATE TABLE gappy_events_b PARTITION OF gappy_events FOR VALUES FROM ('2026-01-16') TO ('2026-01-17')`)
        yield* TestClock.setTime(Date.UTC(2026, 0, 15, 9))
        const manager = yield* PartitionManager.PartitionManager
        const policy = PartitionPolicy.make({ table: "gappy_events", column: "created_at", interval: "daily", premake: 3, maxPartitions: 4 })
        const sick = yield* manager.health(policy)
        assert.isFalse(sick.ok)
        const kinds = sick.problems.map((p) => p.kind)
        assert.include(kinds, "Gap")
        assert.include(kinds, "HorizonShort")
        assert.include(kinds, "NoDefault")
        assert.notInclude(kinds, "TooManyPartitions")
        assert.deepStrictEqual(sick.horizon, day("2026-01-17"))

        yield* manager.maintain(policy)
        yield* sql.unsafe(`CREATE TABLE gappy_events_default PARTITION OF gappy_events DEFAULT`)
        const healed = yield* manager.health(policy)
        assert.deepStrictEqual(healed.problems.map((p) => p.kind), ["TooManyPartitions"])
        const fine = yield* manager.health({ ...policy, maxPartitions: 10 })
        assert.isTrue(fine.ok, JSON.stringify(fine.problems))

        const overview = (yield* manager.overview).find((o) => o.parent === "gappy_events")!
        assert.strictEqual(overview.partitions, 5)
        assert.deepStrictEqual(overview.oldest, day("2026-01-14"))
        assert.deepStrictEqual(overview.newest, day("2026-01-19"))
        assert.isAbove(overview.totalBytes, 0)
      })))

    it.effect("hostile or unknown table names are typed errors, never SQL", () =>
      test(Effect.gen(function*() {
        const manager = yield* PartitionManager.PartitionManager
        const hostile = yield* Effect.exit(manager.leaves(`outbox"; DROP TABLE outbox; --`))
        assert.isTrue(Exit.isFailure(hostile))
        const error = Exit.isFailure(hostile) ? hostile.cause : undefined
        assert.include(String(error), "InvalidIdentifier")
        const missing = yield* Effect.flip(manager.leaves("no_such_table"))
        assert.strictEqual(missing._tag, "PartitionError")
        assert.strictEqual((missing as PartitionManager.PartitionError).reason, "NotPartitioned")
        const invalid = yield* Effect.flip(
          manager.maintain(PartitionPolicy.make({ table: "outbox", column: "created_at; DROP TABLE outbox", interval: "daily" }))
        )
        assert.instanceOf(invalid, Identifier.InvalidIdentifier)
        const sql = yield* SqlClient.SqlClient
        const still = yield* sql<{ t: string | null }>`SELECT to_regclass('outbox')::text AS t`
        assert.strictEqual(still[0]!.t, "outbox")
      })))
  })

  describe("the outbox", () => {
    it.effect("the outbox policy never drops a partition holding events still to deliver", () =>
      test(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const manager = yield* PartitionManager.PartitionManager
        const today = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000)
        yield* TestClock.setTime(today.getTime())
        const old = new Date(today.getTime() - 20 * 86_400_000)
        // an event of 20 days ago (in DEFAULT: no partition that old) still pending, and a delivered one
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, status)
                   VALUES ('Order', 'o-1', 'OrderCreated', '{}', ${old}, 'PENDING'),
                          ('Order', 'o-2', 'OrderCreated', '{}', ${new Date(old.getTime() - 86_400_000)}, 'COMPLETED')`
        const report = yield* manager.maintain(PartitionPolicy.outbox({ retentionDays: 7 }))
        assert.deepStrictEqual(report.failed, [])
        assert.strictEqual(report.moved.length, 2)
        assert.deepStrictEqual(report.blocked.map((b) => b.unfinished), [1])
        assert.strictEqual(report.retired.length, 1)
        const rows = yield* sql<{ status: string }>`SELECT status FROM outbox`
        assert.deepStrictEqual(rows.map((r) => r.status), ["PENDING"])
      })))
  })
})
