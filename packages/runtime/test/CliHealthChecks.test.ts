import { assert, describe, it, layer } from "@effect/vitest"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as HealthCheck from "@outbox/sql/HealthCheck"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { formatHealth } from "../src/internal/cli/health.ts"
import { outbox } from "./fixtures/cli.ts"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** A check of the test's own, on the built-in `counts` measure. */
const TooManyProcessing = HealthCheck.make({
  name: "TooManyProcessing",
  measure: OutboxHealth.measures.counts,
  thresholds: { processingEvents: HealthCheck.band({ warn: 1 }) },
  gauge: "outbox_processing_events",
  evaluate: ({ backlog }, t) =>
    HealthCheck.judge(t.processingEvents, backlog.processing, "outbox", (v) => `${v} events under a lease`)
})

/** The lines of the `--checks` table: from its header to the next blank line. */
const checksTable = (text: string): ReadonlyArray<string> => {
  const lines = text.split("\n")
  const start = lines.findIndex((l) => /^check\s+level\s+thresholds/.test(l))
  if (start < 0) return []
  const end = lines.findIndex((l, i) => i > start && l === "")
  return lines.slice(start + 2, end < 0 ? undefined : end)
}

describe("health checks and the gauges", () => {
  it("every gauge a check names is a gauge of the metric catalog", () => {
    const gauges: ReadonlyArray<string> = OutboxTelemetry.catalog.gauges
    const named = OutboxHealth.checks.flatMap((c) => (c.gauge === undefined ? [] : [c.gauge]))
    assert.isAbove(named.length, 0)
    for (const gauge of named) assert.include(gauges, gauge)
  })
})

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("outbox health --checks", (it) => {
  it.effect("the text report lists every check of the list the service ran, a custom one included, only with --checks", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, locked_until, lock_token)
                 SELECT 'Order', 'o-' || g, 'OrderPlaced', '{}', 'PROCESSING', now() + interval '30 seconds',
                        nextval('outbox_lock_token_seq')
                 FROM generate_series(1, 2) g`
      const service = yield* OutboxHealth.make({ checks: [...OutboxHealth.checks, TooManyProcessing] })
      const report = yield* service.health
      const text = formatHealth(report, { checks: true })
      const rows = checksTable(text)
      assert.deepStrictEqual(
        rows.map((l) => l.split(/\s+/)[0]),
        [...OutboxHealth.checks.map((c) => c.name), "TooManyProcessing"]
      )
      assert.match(rows.at(-1)!, /^TooManyProcessing\s+WARN\s+processingEvents warn 1\s+outbox_processing_events$/)
      assert.match(rows.find((l) => l.startsWith("StuckLease"))!, /OK\s+leaseOverdueSeconds warn 60, critical 300\s+outbox_lease_overdue_seconds/)
      assert.match(rows.find((l) => l.startsWith("DeadTuples"))!, /deadTupleRatio warn 0.2, critical 0.5; minDeadTuples 10000/)
      assert.match(text, /WARN\s+TooManyProcessing\s+outbox\s+2 events under a lease/)
      assert.deepStrictEqual(checksTable(formatHealth(report)), [])
    }))

  it.effect("a real process: --checks prints the built-in list, --json carries it", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      const text = yield* outbox(["health", "--checks", "--premake", "5"])
      assert.strictEqual(text.code, 1, text.stdout + text.stderr)
      const rows = checksTable(text.stdout)
      assert.deepStrictEqual(rows.map((l) => l.split(/\s+/)[0]), OutboxHealth.checks.map((c) => c.name))
      // --premake 5 is the PartitionsAhead threshold 4, and that check is the one at WARN
      assert.match(rows.find((l) => l.startsWith("PartitionsAhead"))!, /^PartitionsAhead\s+WARN\s+partitionsAheadWarn 4\s/)
      const json = yield* outbox(["health", "--json"])
      assert.strictEqual(json.code, 0, json.stderr)
      const parsed = JSON.parse(json.stdout) as OutboxHealth.HealthReport
      assert.deepStrictEqual(parsed.checks.map((c) => c.name), OutboxHealth.checks.map((c) => c.name))
      assert.isTrue(parsed.checks.every((c) => c.level === "OK"))
    }), 180_000)

  it.effect("--threshold: an idle-in-transaction session held 2 s is WARN at idleInTransactionSeconds=1, named; bad overrides are refused with the names", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      const database = yield* TestDatabase.TestDatabase
      // a session of its own, idle in a transaction that holds a snapshot (and so the xmin horizon)
      const holder = yield* PgClient.makeClient({ url: Redacted.make(database.url), applicationName: "xmin-holder-probe" })
      yield* holder`BEGIN ISOLATION LEVEL REPEATABLE READ`
      yield* holder`SELECT count(*) FROM outbox`
      yield* Effect.sleep("2 seconds")
      const defaults = yield* outbox(["health", "--json"])
      assert.strictEqual(defaults.code, 0, defaults.stdout + defaults.stderr)
      const warned = yield* outbox(["health", "--json", "--threshold", "idleInTransactionSeconds=1,"])
      assert.strictEqual(warned.code, 1, warned.stdout + warned.stderr)
      const report = JSON.parse(warned.stdout) as OutboxHealth.HealthReport
      const finding = report.findings.find((f) => f.name === "IdleInTransaction")
      assert.isDefined(finding, warned.stdout)
      assert.strictEqual(finding!.level, "WARN")
      assert.include(finding!.message, "xmin-holder-probe")
      // the band's other side keeps its default
      const check = report.checks.find((c) => c.name === "IdleInTransaction")!
      assert.deepStrictEqual(check.thresholds, { idleInTransactionSeconds: { warn: 1, critical: 600 } })
      yield* holder`ROLLBACK`

      for (const [bad, says] of [
        ["nope=1", /no threshold "nope" \(names: .*idleInTransactionSeconds/],
        ["idleInTransactionSeconds=x", /is a band: warn,critical/],
        ["idleInTransactionSeconds=90,30", /warn \(90\) is above critical \(30\)/],
        ["partitionsAheadWarn=1,2", /partitionsAheadWarn takes one number/],
        ["idleInTransactionSeconds", /expected name=value/]
      ] as const) {
        const refused = yield* outbox(["health", "--threshold", bad])
        assert.notStrictEqual(refused.code, 0, bad)
        assert.match(refused.stdout + refused.stderr, says, bad)
      }
    }).pipe(Effect.scoped, Effect.provide(Reactivity.layer)), 180_000)
})
