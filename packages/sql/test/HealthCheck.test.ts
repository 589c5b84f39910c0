import { assert, describe, it, layer } from "@effect/vitest"
import * as HealthCheck from "@outbox/sql/HealthCheck"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** Every finding name, listed by hand: the `Record` makes the compiler refuse a name missing here. */
const findingNames: Record<OutboxHealth.FindingName, true> = {
  StuckLease: true,
  LongHeldLease: true,
  BacklogAge: true,
  DeadLetters: true,
  BlockedKeys: true,
  PartitionHorizon: true,
  PartitionsAhead: true,
  RowsInDefault: true,
  DeadTuples: true,
  LongTransaction: true,
  IdleInTransaction: true,
  PreparedTransaction: true,
  ReplicationSlot: true
}

const healthy: OutboxHealth.Measurements = {
  tables: ["outbox"],
  backlog: { pending: 0, processing: 0, oldestPendingAgeSeconds: 0, deadLetters: 0 },
  leases: { overdue: 0, overdueSeconds: 0, heldSeconds: 0, stuck: [] },
  blockedKeys: { ordering: null, counts: { backoff: 0, scheduled: 0, deadLetterHeld: 0, oldestFailedHeadAgeSeconds: 0 }, keys: [] },
  partitions: [{
    table: "outbox",
    partitions: 4,
    ahead: 3,
    horizon: new Date("2026-01-05T00:00:00Z"),
    horizonSeconds: 3.5 * 86_400,
    newest: new Date("2026-01-05T00:00:00Z"),
    hasGap: false,
    defaultPartition: "outbox_default",
    defaultRows: 0,
    deadTuples: 0,
    liveTuples: 0
  }],
  vacuum: [],
  holders: []
}

const named = (name: string) => OutboxHealth.checks.find((c) => c.name === name)!

/** A check of the test's own on the built-in `counts` measure. */
const TooManyProcessing = HealthCheck.make({
  name: "TooManyProcessing",
  measure: OutboxHealth.measures.counts,
  thresholds: { processingEvents: HealthCheck.band({ warn: 2 }) },
  evaluate: ({ backlog }, t) =>
    HealthCheck.judge(t.processingEvents, backlog.processing, "outbox", (v) => `${v} events under a lease`)
})

describe("health checks as data", () => {
  it("every FindingName has exactly one check, and every threshold exactly one check declaring it", () => {
    const names = OutboxHealth.checks.map((c) => c.name)
    assert.deepStrictEqual([...names].sort(), Object.keys(findingNames).sort())
    assert.strictEqual(new Set(names).size, names.length)
    const declared = OutboxHealth.checks.flatMap((c) => Object.keys(c.thresholds))
    assert.strictEqual(new Set(declared).size, declared.length, "a threshold declared twice")
    assert.deepStrictEqual(declared, Object.keys(OutboxHealth.defaultThresholds))
    for (const check of OutboxHealth.checks) {
      for (const [key, value] of Object.entries(check.thresholds)) {
        assert.deepStrictEqual((OutboxHealth.defaultThresholds as HealthCheck.ThresholdRecord)[key], value, key)
      }
    }
  })

  it("evaluate is the list folded: a check removed finds nothing, a check added finds under its own name", () => {
    const m: OutboxHealth.Measurements = {
      ...healthy,
      backlog: { ...healthy.backlog, processing: 3, deadLetters: 2 }
    }
    const t = OutboxHealth.defaultThresholds
    const all = OutboxHealth.evaluate(m, t)
    assert.deepStrictEqual(all, HealthCheck.evaluate(OutboxHealth.checks, m, t))
    assert.deepStrictEqual(all.map((f) => f.name), ["DeadLetters"])
    const without = HealthCheck.evaluate(OutboxHealth.checks.filter((c) => c.name !== "DeadLetters"), m, t)
    assert.deepStrictEqual(without, [])
    const added = HealthCheck.evaluate([...OutboxHealth.checks, TooManyProcessing], m, { ...t, ...TooManyProcessing.thresholds })
    assert.deepStrictEqual(added.map((f) => [f.name, f.level, f.value, f.threshold, f.message]), [
      ["DeadLetters", "WARN", 2, 1, "2 dead-lettered event(s)"],
      ["TooManyProcessing", "WARN", 3, 2, "3 events under a lease"]
    ])
  })

  it("findings come per measure, per row, per check; `unless` silences a check on the rows where the named one fired", () => {
    const m: OutboxHealth.Measurements = {
      ...healthy,
      tables: ["a", "b"],
      partitions: [
        { ...healthy.partitions[0]!, table: "a", ahead: 0, horizonSeconds: 600, defaultRows: 1 },
        { ...healthy.partitions[0]!, table: "b", ahead: 1, defaultRows: 1 }
      ]
    }
    const t = OutboxHealth.defaultThresholds
    const at = (checks: ReadonlyArray<HealthCheck.Any>) =>
      HealthCheck.evaluate(checks, m, t).map((f) => `${f.name} ${f.subject}`)
    assert.deepStrictEqual(at(OutboxHealth.checks), [
      "PartitionHorizon a",
      "RowsInDefault a",
      "PartitionsAhead b",
      "RowsInDefault b"
    ])
    // without `unless`, table a's missing partitions ahead would be reported beside its horizon
    const withoutUnless = OutboxHealth.checks.map((c) => c.name === "PartitionsAhead" ? { ...c, unless: undefined } : c)
    assert.deepStrictEqual(at(withoutUnless), [
      "PartitionHorizon a",
      "PartitionsAhead a",
      "RowsInDefault a",
      "PartitionsAhead b",
      "RowsInDefault b"
    ])
    assert.strictEqual(named("PartitionsAhead").unless, "PartitionHorizon")
  })
})

/** `(consumer, lag_seconds)`, the view of the test's own check. */
const LagRow = Schema.Struct({ consumer: Schema.String, lagSeconds: Schema.Number }).pipe(
  Schema.encodeKeys({ lagSeconds: "lag_seconds" })
)

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("health checks as data, on PostgreSQL", (it) => {
  it.effect("a check of one's own, on a view of one's own, is measured once, reported and listed with its thresholds", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      yield* sql`CREATE OR REPLACE VIEW test_consumer_lag AS
                 SELECT 'billing'::text AS consumer, 90::float8 AS lag_seconds
                 UNION ALL SELECT 'mail', 5`
      let reads = 0
      const lag = HealthCheck.measure({
        name: "lag",
        read: ({ sql }) =>
          Effect.sync(() => reads++).pipe(Effect.andThen(
            sql`SELECT consumer, lag_seconds FROM test_consumer_lag ORDER BY consumer`.pipe(
              HealthCheck.decodeRows("health.lag", LagRow)
            )
          ), Effect.map((lag) => ({ lag }))),
        rows: (m) => m.lag
      })
      const ConsumerLag = HealthCheck.make({
        name: "ConsumerLag",
        measure: lag,
        thresholds: { consumerLagSeconds: HealthCheck.band({ warn: 60, critical: 600 }) },
        evaluate: (row, t) =>
          HealthCheck.judge(t.consumerLagSeconds, row.lagSeconds, row.consumer, (v) => `${row.consumer} is ${v} s behind`)
      })
      const ConsumerStalled = HealthCheck.make({
        name: "ConsumerStalled",
        measure: lag,
        thresholds: { consumerStalledSeconds: 3600 },
        evaluate: (row, t): HealthCheck.Verdict | undefined =>
          row.lagSeconds >= t.consumerStalledSeconds
            ? { level: "CRITICAL", subject: row.consumer, value: row.lagSeconds, threshold: 3600, message: "stalled" }
            : undefined
      })
      const service = yield* OutboxHealth.make({ checks: [...OutboxHealth.checks, ConsumerLag, ConsumerStalled] })
      const report = yield* service.health
      assert.strictEqual(reads, 1, "one read for the two checks of the measure")
      assert.strictEqual(report.level, "WARN")
      assert.deepStrictEqual(report.findings.map((f) => [f.name, f.level, f.subject, f.message]), [
        ["ConsumerLag", "WARN", "billing", "billing is 90 s behind"]
      ])
      assert.deepStrictEqual(report.checks.map((c) => c.name), [...OutboxHealth.checks.map((c) => c.name), "ConsumerLag", "ConsumerStalled"])
      assert.deepStrictEqual(report.checks.at(-2), {
        name: "ConsumerLag",
        level: "WARN",
        thresholds: { consumerLagSeconds: { warn: 60, critical: 600 } },
        gauge: null
      })
      assert.deepStrictEqual(report.checks.at(-1)!.level, "OK")
      assert.deepStrictEqual(report.checks.find((c) => c.name === "DeadLetters"), {
        name: "DeadLetters",
        level: "OK",
        thresholds: { deadLetters: { warn: 1 } },
        gauge: "outbox_dead_letter_events"
      })
      assert.deepStrictEqual((report.thresholds as HealthCheck.ThresholdRecord).consumerStalledSeconds, 3600)
      // the built-in sections are there whatever the list
      assert.strictEqual(report.partitions[0]!.table, "outbox")
    }))

  it.effect("a list of some built-in checks reports only their findings, with the whole report around them", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, processed_at)
                 VALUES ('Order', 'o-1', 'OrderPlaced', '{}', 'DEAD_LETTER', now())`
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, locked_until, lock_token)
                 VALUES ('Order', 'o-2', 'OrderPlaced', '{}', 'PROCESSING', now() - interval '1 hour', nextval('outbox_lock_token_seq'))`
      const all = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.health)
      assert.deepStrictEqual(all.findings.map((f) => f.name), ["StuckLease", "DeadLetters"])
      assert.strictEqual(all.checks.length, OutboxHealth.checks.length)
      const some = yield* Effect.flatMap(OutboxHealth.make({ checks: [named("DeadLetters")] }), (s) => s.health)
      assert.deepStrictEqual(some.findings.map((f) => `${f.level} ${f.name}`), ["WARN DeadLetters"])
      assert.strictEqual(some.level, "WARN")
      assert.deepStrictEqual(some.checks.map((c) => [c.name, c.level]), [["DeadLetters", "WARN"]])
      assert.strictEqual(some.leases.overdue, 1)
      assert.strictEqual(some.leases.stuck.length, 1)
      assert.deepStrictEqual(Object.keys(some.thresholds), ["deadLetters"])
    }))

  it.effect("a list that cannot work is refused with a typed error", () =>
    Effect.gen(function*() {
      const twice = yield* Effect.flip(OutboxHealth.make({ checks: [...OutboxHealth.checks, named("DeadLetters")] }))
      assert.strictEqual(twice.option, "checks")
      assert.include(twice.message, "DeadLetters")
      // `unless` must name an earlier check of the same measure
      const early = yield* Effect.flip(OutboxHealth.make({ checks: [named("PartitionsAhead"), named("PartitionHorizon")] }))
      assert.strictEqual(early.option, "checks")
      assert.include(early.message, "PartitionsAhead")
      // the thresholds a custom check declares are validated like the built-in ones
      const nan = yield* Effect.flip(OutboxHealth.make({
        checks: [{ ...TooManyProcessing, thresholds: { processingEvents: HealthCheck.band({ critical: Number.NaN }) } }]
      }))
      assert.strictEqual(nan.option, "processingEvents.critical")
    }))

  it.effect("rows are decoded with a Schema: a row that does not match fails the report with a StoreError naming the query", () =>
    Effect.gen(function*() {
      const wrong = HealthCheck.measure({
        name: "wrong",
        read: ({ sql }) =>
          sql`SELECT 'billing'::text AS consumer, 'ninety'::text AS lag_seconds`.pipe(
            HealthCheck.decodeRows("health.wrong", LagRow),
            Effect.map((wrong) => ({ wrong }))
          ),
        rows: (m) => m.wrong
      })
      const check = HealthCheck.make({
        name: "Wrong",
        measure: wrong,
        thresholds: {},
        evaluate: () => undefined
      })
      const service = yield* OutboxHealth.make({ checks: [check] })
      const error = yield* Effect.flip(service.health)
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.operation, "health.wrong")
      assert.include(error.message, "unexpected row")
      assert.include(error.message, "lag_seconds")
      assert.isFalse(error.retryable)
      // an aggregate that returns no row is not a row of zeros
      const sql = yield* SqlClient.SqlClient
      const none = yield* Effect.flip(
        sql`SELECT 1::float8 AS n WHERE false`.pipe(HealthCheck.decodeRow("test.none", Schema.Struct({ n: Schema.Number })))
      )
      assert.strictEqual(none.message, "test.none: expected one row, got 0")
    }))
})
