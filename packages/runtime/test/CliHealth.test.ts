import { assert, describe, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox as run } from "./fixtures/cli.ts"

const outbox = (...args: Array<string>) => run(args)

/** Each test starts several real processes (about 2-7 s each on a busy machine). */
const processTimeout = 180_000

interface JsonReport {
  readonly level: string
  readonly findings: ReadonlyArray<{ readonly name: string; readonly level: string; readonly subject: string }>
}

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox stats / health", (it) => {
  describe("health exit codes in a real process", () => {
    it.effect("OK exits 0, WARN (rows in DEFAULT) exits 1, CRITICAL (a stuck lease) exits 2; --json is quiet on stderr", () =>
      Effect.gen(function*() {
        const migrated = yield* outbox("migrate")
        assert.strictEqual(migrated.code, 0, migrated.stderr)
        const sql = yield* SqlClient.SqlClient

        const ok = yield* outbox("health")
        assert.strictEqual(ok.code, 0, ok.stdout + ok.stderr)
        assert.include(ok.stdout, "health: OK")
        assert.include(ok.stdout, "outbox_default")
        assert.strictEqual(ok.stderr, "")

        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                   VALUES ('Order', 'o-1', 'OrderPlaced', '{}', now() + interval '40 days')`
        const warn = yield* outbox("health")
        assert.strictEqual(warn.code, 1, warn.stdout + warn.stderr)
        assert.include(warn.stdout, "health: WARN")
        assert.include(warn.stdout, "RowsInDefault")
        assert.strictEqual(warn.stderr, "")
        const warnJson = yield* outbox("health", "--json")
        assert.strictEqual(warnJson.code, 1)
        assert.strictEqual(warnJson.stderr, "")
        const parsed = JSON.parse(warnJson.stdout) as JsonReport
        assert.strictEqual(parsed.level, "WARN")
        assert.deepStrictEqual(parsed.findings.map((f) => [f.name, f.level, f.subject]), [["RowsInDefault", "WARN", "outbox"]])

        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, locked_until, lock_token)
                   VALUES ('Order', 'o-2', 'OrderPlaced', '{}', 'PROCESSING', now() - interval '1 hour', nextval('outbox_lock_token_seq'))`
        const critical = yield* outbox("health", "--json")
        assert.strictEqual(critical.code, 2, critical.stderr)
        assert.strictEqual(critical.stderr, "")
        const worst = JSON.parse(critical.stdout) as JsonReport
        assert.strictEqual(worst.level, "CRITICAL")
        assert.deepStrictEqual(worst.findings.map((f) => `${f.level} ${f.name}`), ["CRITICAL StuckLease", "WARN RowsInDefault"])

        // back to OK once the problems are gone
        yield* sql`DELETE FROM outbox`
        assert.strictEqual((yield* outbox("health")).code, 0)
      }), processTimeout)

    it.effect("a partition gap after today is CRITICAL; --premake tunes the partitions-ahead warning", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // four whole partitions ahead wanted, three there: WARN
        const behind = yield* outbox("health", "--premake", "5")
        assert.strictEqual(behind.code, 1, behind.stdout + behind.stderr)
        assert.include(behind.stdout, "PartitionsAhead")
        const [tomorrow] = yield* sql<{ name: string }>`
          SELECT 'outbox_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD') AS name`
        yield* sql`DROP TABLE ${sql(tomorrow!.name)}`
        const gap = yield* outbox("health")
        assert.strictEqual(gap.code, 2, gap.stdout + gap.stderr)
        assert.include(gap.stdout, "PartitionHorizon")
        const maintained = yield* outbox("partitions", "maintain")
        assert.strictEqual(maintained.code, 0, maintained.stderr)
        assert.strictEqual((yield* outbox("health")).code, 0)
      }), processTimeout)

    it.effect("a bad flag value is refused with a typed error (exit 1), not a report", () =>
      Effect.gen(function*() {
        const bad = yield* outbox("health", "--max-pending-age", "-5")
        assert.strictEqual(bad.code, 1)
        assert.include(bad.stderr, "InvalidHealthOptions")
        assert.strictEqual(bad.stdout, "")
      }), processTimeout)
  })

  describe("stats", () => {
    it.effect("prints counts by status, throughput and dead letters; --json is the same data and nothing else", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM outbox`
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, processed_at)
                   SELECT 'Order', 'o-' || g, CASE WHEN g <= 2 THEN 'PaymentFailed' ELSE 'OrderPlaced' END, '{}',
                          CASE WHEN g <= 2 THEN 'DEAD_LETTER' WHEN g <= 5 THEN 'PENDING' ELSE 'COMPLETED' END,
                          CASE WHEN g <= 2 OR g > 5 THEN now() END
                   FROM generate_series(1, 9) g`
        const table = yield* outbox("stats")
        assert.strictEqual(table.code, 0, table.stderr)
        assert.match(table.stdout, /PENDING\s+3/)
        assert.match(table.stdout, /DEAD_LETTER\s+2/)
        assert.match(table.stdout, /PaymentFailed\s+\S+\s+2/)
        const asJson = yield* outbox("stats", "--json", "--minutes", "5")
        assert.strictEqual(asJson.code, 0)
        assert.strictEqual(asJson.stderr, "")
        const stats = JSON.parse(asJson.stdout) as {
          counts: { pending: number; deadLetter: number }
          throughput: { minutes: number; perMinute: Array<{ completed: number }> }
          deadLettersByEventType: Array<{ eventType: string; count: number }>
        }
        assert.strictEqual(stats.counts.pending, 3)
        assert.strictEqual(stats.counts.deadLetter, 2)
        assert.strictEqual(stats.throughput.minutes, 5)
        assert.strictEqual(stats.throughput.perMinute.reduce((s, m) => s + m.completed, 0), 4)
        assert.deepStrictEqual(stats.deadLettersByEventType.map((d) => [d.eventType, d.count]), [["PaymentFailed", 2]])
      }), processTimeout)
  })
})
