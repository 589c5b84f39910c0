import { assert, describe, layer } from "@effect/vitest"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Partman from "@outbox/sql/Partman"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as SqlClient from "effect/sql/SqlClient"

/**
 * Whether the server offers pg_partman (`pg_available_extensions`), asked
 * once while vitest collects this file: the tests that need it are skipped,
 * with the reason in their block's name, where it is missing (the embedded
 * server has none). CI installs it and fails on any skipped test.
 */
const hasPartman = await Effect.runPromise(TestDatabase.extensionAvailable("pg_partman"))

const withPartmanName = hasPartman
  ? "Partman (pg_partman installed)"
  : "Partman (skipped: pg_partman is not installed on this server)"

const PartmanExtension = Layer.effectDiscard(Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE SCHEMA partman`
  yield* sql`CREATE EXTENSION pg_partman SCHEMA partman`
}))

const WithPartman = OutboxMigrations.layer.pipe(
  Layer.provideMerge(PartmanExtension),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

const WithoutPartman = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

interface Child {
  readonly name: string
  readonly isDefault: boolean
  readonly day: string | null
  readonly daysAgo: number | null
  readonly rows: number
}

/** The outbox's children with their UTC day (from the bounds, not the name) and row counts. */
const children = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<Omit<Child, "rows">>`
    SELECT c.relname AS name,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS "isDefault",
           to_char(b.lower AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           ((now() AT TIME ZONE 'UTC')::date - (b.lower AT TIME ZONE 'UTC')::date) AS "daysAgo"
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      LEFT JOIN LATERAL (
        SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), $re$FROM [(]'([^']+)'[)]$re$))[1]::timestamptz AS lower
      ) b ON true
     WHERE i.inhparent = 'outbox'::regclass
     ORDER BY b.lower NULLS FIRST`
  const counts = yield* sql<{ readonly name: string; readonly n: number }>`
    SELECT tableoid::regclass::text AS name, count(*)::int AS n FROM outbox GROUP BY 1`
  return rows.map((row): Child => ({ ...row, rows: counts.find((c) => c.name === row.name)?.n ?? 0 }))
})

const rowKeys = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly key: string }>`
    SELECT id::text || '/' || tracking_id::text || '/' || created_at::text AS key FROM outbox ORDER BY id`
  return rows.map((row) => row.key)
})

/** Publishes `n` rows created `daysAgo` days ago (0 = now, negative = in the future). */
const publish = (n: number, daysAgo: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
      SELECT 'order', 'o-' || g, 'OrderPlaced', jsonb_build_object('n', g), now() - make_interval(days => ${daysAgo}::int)
        FROM generate_series(1, ${n}::int) AS g`
  })

const partConfig = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{
    readonly interval: string
    readonly premake: number
    readonly retention: string | null
    readonly keepTable: boolean
    readonly infinite: boolean
    readonly control: string
  }>`
    SELECT partition_interval::interval::text AS interval, premake, retention, control,
           retention_keep_table AS "keepTable", infinite_time_partitions AS infinite
      FROM partman.part_config WHERE parent_table = 'public.outbox'`
  return rows
})

/** Whether the server's clock is past 12:00 UTC (partman 4.x premakes one day more from then on). */
const pastUtcNoon = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const [row] = yield* sql<{ readonly pastNoon: boolean }>`
    SELECT (now() AT TIME ZONE 'UTC') > date_trunc('day', now() AT TIME ZONE 'UTC') + interval '12 hours' AS "pastNoon"`
  return row!.pastNoon
})

/**
 * The last day (days from today, UTC) that `run_maintenance` premakes to with daily partitions, `premake` and
 * `infinite_time_partitions`, after the outbox's test rows (the newest one dated 7 days ahead). Both majors count
 * `round((start of the last child - current) / 1 day)` and create children until it reaches `premake`:
 * - 4.x: `current` is `CURRENT_TIMESTAMP` itself, not its day, so after 12:00 UTC the count is rounded down and one
 *   more day is made (today + premake + 1, against today + premake in the morning);
 * - 5.x: `current` is the day of the newest non-empty child when its row is in the future (day +7 here), else
 *   `CURRENT_TIMESTAMP` as in 4.x.
 */
const premadeUpTo = (major: number, premake: number, pastNoon: boolean) =>
  major === 4 ? premake + (pastNoon ? 1 : 0) : 7 + premake

const daysFrom = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

layer(WithPartman, { timeout: "60 seconds" })(withPartmanName, (it) => {
  // every test of this block needs pg_partman; all skipped, the block's layer is not even built
  const effect = it.effect.skipIf(!hasPartman)

  describe("detect", () => {
    effect("reports the extension's version, major and schema from pg_extension", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [installed] = yield* sql<{ readonly v: string }>`SELECT extversion AS v FROM pg_extension
                                                               WHERE extname = 'pg_partman'`
        const found = yield* Partman.detect
        assert.isTrue(Option.isSome(found))
        const partman = Option.getOrThrow(found)
        assert.strictEqual(partman.version, installed!.v)
        assert.strictEqual(partman.major, Number(installed!.v.split(".")[0]))
        assert.strictEqual(partman.schema, "partman")
      }))
  })

  describe("handOver", () => {
    effect("refuses invalid options before touching anything", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Partman.handOver({ premakeDays: 0 }))
        assert.strictEqual(error.reason, "Failed")
        assert.include(error.message, "premakeDays")
        const bad = yield* Effect.flip(Partman.handOver({ retentionDays: 1.5 }))
        assert.strictEqual(bad.reason, "Failed")
        assert.deepStrictEqual(yield* partConfig, [])
      }))

    effect("registers the outbox: daily partitions premade, retention set, no row lost, inserts still work", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* publish(3, 0) // today's partition (made by the migrations)
        yield* publish(2, 10) // no partition: outbox_default
        yield* publish(1, -7) // in 7 days, past the migrations' partitions: outbox_default
        const before = yield* children
        assert.strictEqual(before.find((c) => c.isDefault)?.rows, 3)
        const keysBefore = yield* rowKeys
        assert.strictEqual(keysBefore.length, 6)

        const summary = yield* Partman.handOver({ premakeDays: 5, retentionDays: 30 })
        const partman = Option.getOrThrow(yield* Partman.detect)
        assert.strictEqual(summary._tag, "HandedOver")
        assert.strictEqual(summary.parentTable, "public.outbox")
        assert.strictEqual(summary.rowsMoved, 3)
        assert.strictEqual(summary.retention, "30 days")
        assert.strictEqual(summary.premakeDays, 5)
        // 4.x names children outbox_pYYYY_MM_DD (the migrations' are renamed); 5.x uses the migrations' names
        const daily = before.filter((c) => !c.isDefault)
        assert.strictEqual(summary.renamed.length, partman.major === 4 ? daily.length : 0)

        const [config] = yield* partConfig
        assert.deepStrictEqual(config, {
          interval: "1 day",
          premake: 5,
          retention: "30 days",
          keepTable: false,
          infinite: true,
          control: "created_at"
        })

        const after = yield* children
        const days = after.filter((c) => !c.isDefault)
        const pattern = partman.major === 4 ? /^outbox_p\d{4}_\d{2}_\d{2}$/ : /^outbox_p\d{8}$/
        for (const child of days) {
          assert.match(child.name, pattern)
          assert.strictEqual(child.name.replace(/^outbox_p/, "").replaceAll("_", ""), child.day!.replaceAll("-", ""))
        }
        // today and the premake days ahead exist, and every day up to the future row (no gap: maintenance
        // premakes after the last child), plus the past day of the rows that were in the DEFAULT
        assert.deepStrictEqual(days.map((c) => c.daysAgo), [10, 0, -1, -2, -3, -4, -5, -6, -7])
        assert.strictEqual(days.find((c) => c.daysAgo === 10)?.rows, 2)
        assert.strictEqual(days.find((c) => c.daysAgo === -7)?.rows, 1)
        assert.strictEqual(days.find((c) => c.daysAgo === 0)?.rows, 3)
        const adopted = new Set(before.map((b) => summary.renamed.find((r) => r.from === b.name)?.to ?? b.name))
        assert.deepStrictEqual(summary.partitionsCreated, days.map((c) => c.name).filter((n) => !adopted.has(n)).sort())
        assert.strictEqual(summary.partitionsCreated.length, 5) // days +4..+7 and the past day
        // partman's own DEFAULT replaces the migrations' one, empty
        const defaults = after.filter((c) => c.isDefault)
        assert.strictEqual(defaults.length, 1)
        assert.strictEqual(defaults[0]!.rows, 0)
        // every row kept, with its id, tracking id and timestamp
        assert.deepStrictEqual(yield* rowKeys, keysBefore)

        // publishing still works and lands in today's partition
        yield* publish(1, 0)
        const [row] = yield* sql<{ readonly part: string; readonly n: number }>`
          SELECT tableoid::regclass::text AS part, (SELECT count(*)::int FROM outbox) AS n
            FROM outbox ORDER BY id DESC LIMIT 1`
        assert.strictEqual(row!.n, 7)
        assert.strictEqual(row!.part, days.find((c) => c.daysAgo === 0)!.name)
      }))

    effect("a second handOver with the same options changes nothing", () =>
      Effect.gen(function*() {
        const config = yield* partConfig
        const before = yield* children
        const summary = yield* Partman.handOver({ premakeDays: 5, retentionDays: 30 })
        assert.strictEqual(summary._tag, "AlreadyManaged")
        assert.isFalse(summary.configUpdated)
        assert.deepStrictEqual(summary.renamed, [])
        assert.deepStrictEqual(summary.partitionsCreated, [])
        assert.strictEqual(summary.rowsMoved, 0)
        assert.deepStrictEqual(yield* partConfig, config)
        assert.deepStrictEqual(yield* children, before)
      }))

    effect("refuses an outbox that part_config manages with another interval", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE partman.part_config SET partition_interval = '1 hour' WHERE parent_table = 'public.outbox'`
        const error = yield* Effect.flip(Partman.handOver({ premakeDays: 5, retentionDays: 30 }))
        yield* sql`UPDATE partman.part_config SET partition_interval = '1 day' WHERE parent_table = 'public.outbox'`
        assert.strictEqual(error.reason, "AlreadyManagedElsewhere")
        assert.strictEqual((yield* partConfig)[0]!.interval, "1 day")
      }))
  })

  describe("runMaintenance", () => {
    effect("creates the partitions a raised premake asks for, and a second run changes nothing", () =>
      Effect.gen(function*() {
        const before = yield* children
        const furthest = Math.max(...before.map((c) => -(c.daysAgo ?? 0)))
        assert.strictEqual(furthest, 7)
        const summary = yield* Partman.handOver({ premakeDays: 10, retentionDays: 30 })
        assert.isTrue(summary.configUpdated)

        const partman = Option.getOrThrow(yield* Partman.detect)
        const pastNoonBefore = yield* pastUtcNoon
        const first = yield* Partman.runMaintenance
        const pastNoonAfter = yield* pastUtcNoon
        const after = yield* children
        const expected = after.filter((c) => c.daysAgo !== null && -c.daysAgo > furthest)
        // Both clock readings agree except when the call straddles 12:00 UTC; then either outcome is partman's
        const candidates = [pastNoonBefore, pastNoonAfter].map((pastNoon) => premadeUpTo(partman.major, 10, pastNoon))
        const lastDay = Math.max(furthest, ...expected.map((c) => -c.daysAgo!))
        assert.include(candidates, lastDay)
        assert.deepStrictEqual(expected.map((c) => -c.daysAgo!), daysFrom(furthest + 1, lastDay))
        assert.deepStrictEqual(first.created, expected.map((c) => c.name).sort())
        assert.deepStrictEqual(first.dropped, [])
        assert.deepStrictEqual(first.partitions, after.map((c) => c.name).sort())

        const second = yield* Partman.runMaintenance
        assert.deepStrictEqual(second.created, [])
        assert.deepStrictEqual(second.dropped, [])
        assert.deepStrictEqual(second.partitions, first.partitions)
        assert.deepStrictEqual(yield* children, after)
      }))

    effect("refuses to run inside a transaction (the procedure commits)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const error = yield* Effect.flip(sql.withTransaction(Partman.runMaintenance))
        assert.strictEqual(error._tag, "PartmanError")
        assert.strictEqual(error._tag === "PartmanError" ? error.reason : undefined, "Failed")
      }))

    effect("retention drops the partitions older than retentionDays and nothing else", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // an old partition made by partman itself, with rows
        yield* sql`SELECT partman.create_partition_time('public.outbox', ARRAY[date_trunc('day', now() - interval '40 days')])`
        yield* publish(4, 40)
        const before = yield* children
        assert.strictEqual(before.find((c) => c.daysAgo === 40)?.rows, 4)
        assert.strictEqual(before.find((c) => c.daysAgo === 10)?.rows, 2)

        const summary = yield* Partman.handOver({ premakeDays: 10, retentionDays: 7 })
        assert.strictEqual(summary._tag, "AlreadyManaged")
        assert.isTrue(summary.configUpdated)
        assert.strictEqual((yield* partConfig)[0]!.retention, "7 days")

        const result = yield* Partman.runMaintenance
        // partman drops a child once its whole range is older than now - retention
        const expired = before.filter((c) => !c.isDefault && c.daysAgo! > 7).map((c) => c.name).sort()
        assert.deepStrictEqual(expired.length, 2)
        assert.deepStrictEqual(result.dropped, expired)
        assert.deepStrictEqual(result.created, [])

        const after = yield* children
        assert.deepStrictEqual(
          after.map((c) => [c.name, c.rows]),
          before.filter((c) => !expired.includes(c.name)).map((c) => [c.name, c.rows])
        )
        const [total] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM outbox`
        assert.strictEqual(total!.n, before.reduce((sum, c) => sum + c.rows, 0) - 6)
        // dropped, not detached and kept
        const [left] = yield* sql<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_class WHERE relname = ANY(${expired})`
        assert.strictEqual(left!.n, 0)
      }))
  })
})

layer(WithoutPartman, { timeout: "60 seconds" })("Partman (not installed in the database)", (it) => {
  it.effect("detect finds nothing; handOver and runMaintenance fail with NotInstalled", () =>
    Effect.gen(function*() {
      assert.isTrue(Option.isNone(yield* Partman.detect))
      const handOver = yield* Effect.flip(Partman.handOver())
      assert.strictEqual(handOver.reason, "NotInstalled")
      assert.include(handOver.message, "postgresql-15-partman")
      const maintenance = yield* Effect.flip(Partman.runMaintenance)
      assert.strictEqual(maintenance.reason, "NotInstalled")
    }))

  it.effect("cronCommand schedules run_maintenance_proc hourly with pg_cron", () =>
    Effect.sync(() => {
      assert.strictEqual(
        Partman.cronCommand,
        "SELECT cron.schedule('outbox-partman', '@hourly', $$CALL partman.run_maintenance_proc()$$)"
      )
    }))
})
