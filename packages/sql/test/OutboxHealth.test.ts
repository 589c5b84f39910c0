import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const health = (options: OutboxHealth.Options = {}) =>
  Effect.flatMap(OutboxHealth.make(options), (service) => service.health)

/** Inserts `n` events with a status (and what that status implies). */
const insert = (status: string, n: number, extra: { eventType?: string; processedAgo?: string; lockedAgo?: string } = {}) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, processed_at, locked_until, lock_token)
        SELECT 'Order', 'o-' || g, ${extra.eventType ?? "OrderPlaced"}, '{}', ${status},
               CASE WHEN ${status} IN ('COMPLETED', 'DEAD_LETTER') THEN now() - ${extra.processedAgo ?? "0 seconds"}::interval END,
               CASE WHEN ${status} = 'PROCESSING' THEN now() - ${extra.lockedAgo ?? "-30 seconds"}::interval END,
               CASE WHEN ${status} = 'PROCESSING' THEN nextval('outbox_lock_token_seq') END
        FROM generate_series(1, ${n}) g`)

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`TRUNCATE outbox`)

const names = (report: OutboxHealth.HealthReport) => report.findings.map((f) => `${f.level} ${f.name}`)

describe("OutboxHealth.evaluate", () => {
  const base: OutboxHealth.Measurements = {
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
  it("a healthy outbox has no findings", () => {
    assert.deepStrictEqual(OutboxHealth.evaluate(base, OutboxHealth.defaultThresholds), [])
    assert.strictEqual(OutboxHealth.levelOfFindings([]), "OK")
  })
  it("thresholds decide the level; the worst finding decides the report", () => {
    const findings = OutboxHealth.evaluate({
      ...base,
      partitions: [{ ...base.partitions[0]!, ahead: 1, horizonSeconds: 1.5 * 86_400, defaultRows: 3 }],
      vacuum: [{
        table: "outbox",
        partition: "outbox_p20260101",
        liveTuples: 10_000,
        deadTuples: 30_000,
        deadRatio: 0.75,
        lastAutovacuum: null,
        lastVacuum: null
      }]
    }, OutboxHealth.defaultThresholds)
    assert.deepStrictEqual(findings.map((f) => [f.name, f.level, f.subject]), [
      ["PartitionsAhead", "WARN", "outbox"],
      ["RowsInDefault", "WARN", "outbox"],
      ["DeadTuples", "CRITICAL", "outbox_p20260101"]
    ])
    assert.strictEqual(OutboxHealth.levelOfFindings(findings), "CRITICAL")
    assert.strictEqual(OutboxHealth.levelOfFindings(findings.slice(0, 2)), "WARN")
  })
  it("a lease held past the bands warns, then is critical", () => {
    const at = (heldSeconds: number) =>
      OutboxHealth.evaluate({ ...base, leases: { ...base.leases, heldSeconds } }, OutboxHealth.defaultThresholds)
        .map((f) => `${f.level} ${f.name}`)
    assert.deepStrictEqual(at(899), [])
    assert.deepStrictEqual(at(900), ["WARN LongHeldLease"])
    assert.deepStrictEqual(at(3600), ["CRITICAL LongHeldLease"])
  })
  it("an inactive replication slot warns even with little WAL kept", () => {
    const findings = OutboxHealth.evaluate({
      ...base,
      holders: [{
        kind: "replication_slot",
        pid: null,
        name: "debezium",
        applicationName: null,
        clientAddr: null,
        state: "inactive",
        xidAge: 1200,
        ageSeconds: null,
        transactionStart: null,
        queryStart: null,
        stateChange: null,
        retainedWalBytes: 4096,
        detail: "logical (pgoutput)"
      }]
    }, OutboxHealth.defaultThresholds)
    assert.deepStrictEqual(findings.map((f) => [f.name, f.level, f.subject]), [["ReplicationSlot", "WARN", "debezium"]])
  })
})

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("OutboxHealth on PostgreSQL", (it) => {
  it.effect("stats: counts by status match the rows; COMPLETED is the reltuples estimate; throughput per minute; dead letters by type", () =>
    Effect.gen(function*() {
      yield* reset
      yield* insert("PENDING", 7)
      yield* insert("FAILED", 2)
      yield* insert("PROCESSING", 3)
      yield* insert("COMPLETED", 11, { processedAgo: "0 seconds" })
      yield* insert("COMPLETED", 5, { processedAgo: "2 minutes" })
      yield* insert("DEAD_LETTER", 4, { eventType: "PaymentFailed" })
      yield* insert("DEAD_LETTER", 1, { eventType: "OrderPlaced" })
      const sql = yield* SqlClient.SqlClient
      yield* sql`ANALYZE outbox`
      const stats = yield* Effect.flatMap(OutboxHealth.make({ throughputMinutes: 5 }), (s) => s.stats)
      assert.deepStrictEqual(stats.counts, { pending: 7, failed: 2, processing: 3, deadLetter: 5, completedEstimate: 16 })
      assert.isTrue(stats.oldestPendingAgeSeconds >= 0 && stats.oldestPendingAgeSeconds < 60)
      assert.strictEqual(stats.leaseOverdue, 0)
      assert.strictEqual(stats.throughput.perMinute.length, 5)
      const perMinute = stats.throughput.perMinute
      assert.strictEqual(perMinute.reduce((s, m) => s + m.completed, 0), 16)
      assert.strictEqual(perMinute.at(-1)!.completed, 11)
      assert.strictEqual(perMinute.at(-3)!.completed, 5)
      assert.strictEqual(perMinute.at(-1)!.deadLettered, 5)
      assert.isTrue(perMinute.every((m) => m.exact))
      assert.strictEqual(stats.throughput.completedPerMinute, 5 / 4)
      assert.deepStrictEqual(stats.deadLettersByEventType.map((d) => [d.eventType, d.count]), [["PaymentFailed", 4], ["OrderPlaced", 1]])
    }))

  it.effect("stats: throughput reads only the newest maxRows events and says when a minute is not exact", () =>
    Effect.gen(function*() {
      yield* reset
      yield* insert("COMPLETED", 6, { processedAgo: "3 minutes" }) // older ids
      yield* insert("COMPLETED", 4, { processedAgo: "0 seconds" }) // the newest ids
      const stats = yield* Effect.flatMap(OutboxHealth.make({ throughputMinutes: 5, throughputMaxRows: 4 }), (s) => s.stats)
      const perMinute = stats.throughput.perMinute
      assert.strictEqual(perMinute.reduce((s, m) => s + m.completed, 0), 4)
      assert.strictEqual(perMinute.at(-1)!.completed, 4)
      // the sample reaches back only to the creation of its oldest row (now): earlier minutes are lower bounds
      assert.isFalse(perMinute[0]!.exact)
    }))

  it.effect("a fresh outbox is OK, and snapshot has the catalog's shape", () =>
    Effect.gen(function*() {
      yield* reset
      yield* OutboxHealth.migration // idempotent: re-applying it re-points the views
      const report = yield* health()
      assert.deepStrictEqual(report.findings, [])
      assert.strictEqual(report.level, "OK")
      const outbox = report.partitions.find((p) => p.table === "outbox")!
      assert.strictEqual(outbox.ahead, 3)
      assert.isFalse(outbox.hasGap)
      assert.strictEqual(outbox.defaultPartition, "outbox_default")
      const snapshot = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.deepStrictEqual(snapshot, {
        pending: 0,
        processing: 0,
        oldestPendingAgeSeconds: 0,
        leaseOverdueSeconds: 0,
        leaseHeldSeconds: 0,
        deadLetters: 0,
        partitions: [{ table: "outbox", ahead: 3, defaultRows: 0, deadTuples: snapshot.partitions[0]!.deadTuples }],
        xminHorizonAgeSeconds: snapshot.xminHorizonAgeSeconds,
        blockedKeys: { backoff: 0, scheduled: 0, deadLetterHeld: 0, oldestFailedHeadAgeSeconds: 0 }
      })
    }))

  it.effect("snapshot: reads at most snapshotMaxRows of the backlog and of the dead letters (the backlog's first by id); stats stays exact", () =>
    Effect.gen(function*() {
      yield* reset
      const sql = yield* SqlClient.SqlClient
      yield* insert("PENDING", 4)
      yield* insert("FAILED", 2)
      yield* insert("PROCESSING", 1)
      yield* insert("DEAD_LETTER", 5)
      // the first pending row by id is 10 minutes old; the last backlog row by id, 20 minutes
      yield* sql`UPDATE outbox SET created_at = now() - interval '10 minutes'
                 WHERE id = (SELECT min(id) FROM outbox WHERE status IN ('PENDING', 'FAILED'))`
      yield* sql`UPDATE outbox SET created_at = now() - interval '20 minutes'
                 WHERE id = (SELECT max(id) FROM outbox WHERE status IN ('PENDING', 'FAILED'))`
      const capped = yield* Effect.flatMap(OutboxHealth.make({ snapshotMaxRows: 3 }), (s) => s.snapshot)
      assert.deepStrictEqual([capped.pending, capped.deadLetters, capped.processing], [3, 3, 1])
      assert.isTrue(capped.oldestPendingAgeSeconds >= 600 && capped.oldestPendingAgeSeconds < 700, String(capped.oldestPendingAgeSeconds))
      const full = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.deepStrictEqual([full.pending, full.deadLetters, full.processing], [6, 5, 1])
      assert.isTrue(full.oldestPendingAgeSeconds >= 1200 && full.oldestPendingAgeSeconds < 1300, String(full.oldestPendingAgeSeconds))
      const stats = yield* Effect.flatMap(OutboxHealth.make({ snapshotMaxRows: 3 }), (s) => s.stats)
      assert.deepStrictEqual([stats.counts.pending, stats.counts.failed, stats.counts.deadLetter], [4, 2, 5])
      assert.isTrue(stats.oldestPendingAgeSeconds >= 1200)
    }))

  it.effect("rows scheduled ahead do not age the backlog: its age runs from when the oldest due row became due", () =>
    Effect.gen(function*() {
      yield* reset
      const sql = yield* SqlClient.SqlClient
      // published a week ago for a week ahead (the DEFAULT partition takes last week's created_at)
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, available_at)
                 VALUES ('Reminder', 'r1', 'Remind', '{}', now() - interval '7 days', now() + interval '7 days')`
      const ages = Effect.gen(function*() {
        const snapshot = yield* Effect.flatMap(OutboxHealth.make(), (h) => h.snapshot)
        const stats = yield* Effect.flatMap(OutboxHealth.make(), (h) => h.stats)
        return [snapshot.oldestPendingAgeSeconds, stats.oldestPendingAgeSeconds]
      })
      // nothing due: no age (it read 7 days before)
      assert.deepStrictEqual(yield* ages, [0, 0])
      assert.strictEqual((yield* Effect.flatMap(OutboxHealth.make(), (h) => h.stats)).counts.pending, 1)
      // a row published 10 minutes ago, due at once; and one scheduled, due 30 minutes ago (published a day ago)
      yield* insert("PENDING", 1)
      yield* sql`UPDATE outbox SET created_at = now() - interval '10 minutes' WHERE aggregate_type = 'Order'`
      for (const age of yield* ages) assert.isTrue(age >= 600 && age < 700, String(age))
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, available_at)
                 VALUES ('Reminder', 'r2', 'Remind', '{}', now() - interval '1 day', now() - interval '30 minutes')`
      for (const age of yield* ages) assert.isTrue(age >= 1800 && age < 1900, String(age))
    }))

  it.effect("a lease held for an hour under a live heartbeat is a long-held lease, not a stuck one", () =>
    Effect.gen(function*() {
      yield* reset
      const sql = yield* SqlClient.SqlClient
      yield* insert("PROCESSING", 2) // leases valid for 30 more seconds
      yield* sql`UPDATE outbox SET claimed_at = now() - interval '1 hour' WHERE id = (SELECT min(id) FROM outbox)`
      yield* sql`UPDATE outbox SET claimed_at = now() - interval '1 minute' WHERE id = (SELECT max(id) FROM outbox)`
      const report = yield* health()
      assert.deepStrictEqual(names(report), ["CRITICAL LongHeldLease"])
      assert.strictEqual(report.leases.overdue, 0)
      assert.isTrue(report.leases.heldSeconds >= 3600 && report.leases.heldSeconds < 3700)
      const snapshot = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.isTrue(snapshot.leaseHeldSeconds >= 3600 && snapshot.leaseHeldSeconds < 3700)
      assert.strictEqual(snapshot.leaseOverdueSeconds, 0)
      const stats = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.stats)
      assert.isTrue(stats.leaseHeldSeconds >= 3600 && stats.leaseHeldSeconds < 3700)
      // once completed, the claim time no longer counts
      yield* sql`UPDATE outbox SET status = 'COMPLETED', processed_at = now(), lock_token = NULL, locked_until = NULL`
      const done = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.strictEqual(done.leaseHeldSeconds, 0)
    }))

  it.effect("a lease an hour past its expiry is CRITICAL and named, with the event", () =>
    Effect.gen(function*() {
      yield* reset
      yield* insert("PROCESSING", 1, { lockedAgo: "1 hour" })
      yield* insert("PROCESSING", 2) // leases still valid
      const report = yield* health()
      assert.strictEqual(report.level, "CRITICAL")
      assert.deepStrictEqual(names(report), ["CRITICAL StuckLease"])
      assert.strictEqual(report.leases.overdue, 1)
      assert.strictEqual(report.leases.stuck.length, 1)
      assert.isTrue(report.leases.stuck[0]!.overdueSeconds >= 3600)
      const snapshot = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.strictEqual(snapshot.processing, 3)
      assert.isTrue(snapshot.leaseOverdueSeconds >= 3600 && snapshot.leaseOverdueSeconds < 3700)
      // a threshold above the overdue time makes it quiet
      const lenient = yield* health({ thresholds: { leaseOverdueSeconds: { warn: 7200 } } })
      assert.strictEqual(lenient.level, "OK")
    }))

  it.effect("rows in DEFAULT warn; a gap in the partitions after today is a CRITICAL horizon", () =>
    Effect.gen(function*() {
      yield* reset
      const sql = yield* SqlClient.SqlClient
      yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, status, processed_at)
                 VALUES ('Order', 'o-far', 'OrderPlaced', '{}', now() + interval '40 days', 'COMPLETED', now())`
      const warned = yield* health()
      assert.strictEqual(warned.level, "WARN")
      assert.deepStrictEqual(names(warned), ["WARN RowsInDefault"])
      assert.strictEqual((yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)).partitions[0]!.defaultRows, 1)

      const [tomorrow] = yield* sql<{ name: string }>`
        SELECT 'outbox_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD') AS name`
      yield* sql`DROP TABLE ${sql(tomorrow!.name)}`
      const report = yield* health()
      assert.strictEqual(report.level, "CRITICAL")
      assert.deepStrictEqual(names(report), ["CRITICAL PartitionHorizon", "WARN RowsInDefault"])
      const outbox = report.partitions[0]!
      assert.isTrue(outbox.hasGap)
      assert.strictEqual(outbox.ahead, 0)
      assert.isTrue(outbox.horizonSeconds <= 86_400)
      assert.strictEqual((yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)).partitions[0]!.ahead, 0)
      yield* sql.unsafe(`CREATE TABLE ${tomorrow!.name} PARTITION OF outbox
        FOR VALUES FROM ('${tomorrow!.name.slice(8)}T00:00:00Z') TO ('${tomorrow!.name.slice(8)}T00:00:00Z'::timestamptz + interval '1 day')`)
      yield* sql`DELETE FROM outbox_default`
      assert.strictEqual((yield* health()).level, "OK")
    }))

  it.effect("an idle-in-transaction session is reported as holding the xmin horizon, with its pid", () =>
    Effect.gen(function*() {
      yield* reset
      const database = yield* TestDatabase.TestDatabase
      // a second connection of its own: BEGIN, take an xid, and leave it idle
      const idle = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections: 1, applicationName: "idle-holder" })
      yield* idle`BEGIN`
      const [own] = yield* idle<{ pid: number; xid: string }>`SELECT pg_backend_pid() AS pid, txid_current()::text AS xid`
      yield* Effect.addFinalizer(() => Effect.ignore(idle`ROLLBACK`))

      const report = yield* health()
      const holder = report.xminHorizon.holders.find((h) => h.pid === own!.pid)
      assert.isDefined(holder)
      assert.strictEqual(holder!.kind, "idle_in_transaction")
      assert.strictEqual(holder!.applicationName, "idle-holder")
      assert.isNotNull(holder!.transactionStart)
      assert.isNotNull(holder!.queryStart)
      assert.include(holder!.detail ?? "", "txid_current")
      assert.strictEqual(report.xminHorizon.oldest?.pid, own!.pid)
      // young: listed, not yet a finding
      assert.strictEqual(report.level, "OK")
      // with a threshold it is below, it is named with its pid
      const strict = yield* health({ thresholds: { idleInTransactionSeconds: { critical: 0 } } })
      assert.strictEqual(strict.level, "CRITICAL")
      const finding = strict.findings.find((f) => f.name === "IdleInTransaction")!
      assert.strictEqual(finding.subject, `pid ${own!.pid}`)
      assert.include(finding.message, "idle-holder")
      const snapshot = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)
      assert.isTrue(snapshot.xminHorizonAgeSeconds > 0)
    }).pipe(Effect.scoped, Effect.provide(Reactivity.layer)))

  it.effect("options that cannot work are refused with a typed error", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.exit(OutboxHealth.make({ throughputMinutes: 0 }))
      assert.isTrue(Exit.isFailure(bad))
      const error = yield* Effect.flip(OutboxHealth.make({ thresholds: { deadTupleRatio: { warn: Number.NaN } } }))
      assert.strictEqual(error._tag, "InvalidHealthOptions")
      assert.strictEqual(error.option, "deadTupleRatio.warn")
      const none = yield* Effect.flip(OutboxHealth.make({ tables: [] }))
      assert.strictEqual(none.option, "tables")
      const cap = yield* Effect.flip(OutboxHealth.make({ snapshotMaxRows: 0 }))
      assert.strictEqual(cap.option, "snapshotMaxRows")
    }))

  it.effect("a table that is not range-partitioned is a CRITICAL horizon finding, not a crash", () =>
    Effect.gen(function*() {
      yield* reset
      const report = yield* health({ tables: ["outbox", "no_such_table'; DROP TABLE outbox; --"] })
      assert.deepStrictEqual(names(report), ["CRITICAL PartitionHorizon"])
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ t: string | null }>`SELECT to_regclass('outbox')::text AS t`
      assert.strictEqual(row!.t, "outbox")
    }))

  it.effect("claimRedriven: each redrive batch is counted once across concurrent callers, never again, and not after a day", () =>
    Effect.gen(function*() {
      yield* reset
      const sql = yield* SqlClient.SqlClient
      const service = yield* OutboxHealth.make()
      // whatever earlier tests redrove is claimed first
      yield* service.claimRedriven
      yield* insert("DEAD_LETTER", 7)
      const dlq = yield* DeadLetters.make()
      const report = yield* dlq.redrive({ by: "ops", reason: "fixed", all: true, batchSize: 3 })
      assert.strictEqual(report._tag === "Redriven" ? report.batches : 0, 3)
      // four relays sampling at once (four connections of the pool)
      const counts = yield* Effect.all(Array.from({ length: 4 }, () => service.claimRedriven), { concurrency: "unbounded" })
      assert.strictEqual(counts.reduce((a, b) => a + b, 0), 7)
      assert.strictEqual(yield* service.claimRedriven, 0)
      // a redrive logged more than a day ago (a relay that was down) is not a burst now
      yield* insert("DEAD_LETTER", 2)
      yield* dlq.redrive({ by: "ops", reason: "fixed again", all: true })
      yield* sql`SET session_replication_role = replica`.pipe(Effect.andThen(
        sql`UPDATE outbox_redrive_log SET at = at - interval '25 hours' WHERE reason = 'fixed again'`
      ), Effect.ensuring(Effect.ignore(sql`SET session_replication_role = DEFAULT`)), sql.withTransaction)
      assert.strictEqual(yield* service.claimRedriven, 0)
    }))
})

