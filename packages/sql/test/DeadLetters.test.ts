import { assert, describe, layer } from "@effect/vitest"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Deferred from "effect/Deferred"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"

const Live = DeadLetters.layer().pipe(
  Layer.provideMerge(OutboxMigrations.layer),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

interface Seed {
  readonly aggregateType: string
  readonly eventType: string
  readonly status?: string
  readonly error?: string
  readonly retries?: number
  /** processed_at (dead-lettered at) */
  readonly at?: string
  readonly aggregateId?: string
}

/** Inserts events directly (as the relay would have left them); their ids, in order. */
const seed = (rows: ReadonlyArray<Seed>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const ids: Array<bigint> = []
    for (const r of rows) {
      const status = r.status ?? "DEAD_LETTER"
      const [row] = yield* sql<{ id: bigint }>`
        INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, retry_count, last_error, processed_at, available_at)
        VALUES (${r.aggregateType}, ${r.aggregateId ?? "a-1"}, ${r.eventType}, ${JSON.stringify({ n: ids.length, kind: r.eventType })}::jsonb,
                ${status}, ${r.retries ?? 5}, ${r.error ?? (status === "DEAD_LETTER" ? "boom" : null)},
                ${status === "DEAD_LETTER" || status === "COMPLETED" ? (r.at ?? "2026-01-10T10:00:00Z") : null}::timestamptz,
                ${status === "DEAD_LETTER" ? "2026-01-10T10:00:00Z" : null}::timestamptz)
        RETURNING id`
      ids.push(row!.id)
    }
    return ids
  })

const rowsOf = (ids: ReadonlyArray<bigint>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{
      id: bigint
      status: string
      retry_count: number
      last_error: string | null
      available_at: Date | null
      processed_at: Date | null
    }>`SELECT id, status, retry_count, last_error, available_at, processed_at FROM outbox
       WHERE id = ANY(${`{${ids.join(",")}}`}::bigint[]) ORDER BY id`)

const logCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_redrive_log`, (r) => r[0]!.n))

const statuses = (ids: ReadonlyArray<bigint>) => Effect.map(rowsOf(ids), (rows) => rows.map((r) => r.status))

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("DeadLetters", (it) => {
  describe("inspection", () => {
    it.effect("list filters by event type, aggregate, error text, time range and ids; count groups by event type", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const ids = yield* seed([
          { aggregateType: "L1", eventType: "OrderPaid", error: "HTTP 503 from billing", at: "2026-01-01T00:00:00Z" },
          { aggregateType: "L1", eventType: "OrderPaid", error: "certificate expired", at: "2026-01-02T00:00:00Z" },
          { aggregateType: "L1", eventType: "OrderShipped", error: "HTTP 503 from shipping", at: "2026-01-03T00:00:00Z", aggregateId: "o-9" },
          { aggregateType: "L1b", eventType: "OrderPaid", error: "timeout", at: "2026-01-04T00:00:00Z" },
          { aggregateType: "L1", eventType: "OrderPaid", status: "COMPLETED" },
          { aggregateType: "L1", eventType: "OrderPaid", status: "PENDING" }
        ])
        const idsOf = (rows: ReadonlyArray<DeadLetters.DeadLetterSummary>) => rows.map((r) => r.id)
        const scope = { aggregateTypes: ["L1", "L1b"] }

        assert.deepStrictEqual(idsOf(yield* dlq.list(scope)), ids.slice(0, 4))
        assert.deepStrictEqual(idsOf(yield* dlq.list({ aggregateTypes: ["L1"] })), ids.slice(0, 3))
        assert.deepStrictEqual(idsOf(yield* dlq.list({ ...scope, eventTypes: ["OrderShipped"] })), [ids[2]!])
        assert.deepStrictEqual(idsOf(yield* dlq.list({ ...scope, errorContains: "http 503" })), [ids[0]!, ids[2]!])
        assert.deepStrictEqual(idsOf(yield* dlq.list({ ...scope, aggregateId: "o-9" })), [ids[2]!])
        assert.deepStrictEqual(
          idsOf(yield* dlq.list({ ...scope, since: new Date("2026-01-02T00:00:00Z"), until: new Date("2026-01-04T00:00:00Z") })),
          [ids[1]!, ids[2]!]
        )
        // ids that are not dead letters (COMPLETED, PENDING) are never listed
        assert.deepStrictEqual(idsOf(yield* dlq.list({ ids: [ids[1]!, ids[4]!, ids[5]!] })), [ids[1]!])
        // paging
        assert.deepStrictEqual(idsOf(yield* dlq.list(scope, { limit: 2 })), ids.slice(0, 2))
        assert.deepStrictEqual(idsOf(yield* dlq.list(scope, { limit: 2, afterId: ids[1]! })), ids.slice(2, 4))

        const [first] = yield* dlq.list({ ids: [ids[0]!] })
        assert.strictEqual(first!.lastError, "HTTP 503 from billing")
        assert.strictEqual(first!.retryCount, 5)
        assert.strictEqual(first!.deadLetteredAt!.toISOString(), "2026-01-01T00:00:00.000Z")

        const counts = yield* dlq.count(scope)
        assert.deepStrictEqual(counts, {
          total: 4,
          byEventType: [{ eventType: "OrderPaid", count: 3 }, { eventType: "OrderShipped", count: 1 }]
        })
        assert.strictEqual((yield* dlq.count({ ...scope, errorContains: "timeout" })).total, 1)
      }))

    it.effect("show returns one event in full, by id or tracking id; unknown ids are a typed error", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        const [id] = yield* seed([{ aggregateType: "S1", eventType: "Shown", error: "kaput", retries: 3 }])
        const detail = yield* dlq.show(id!)
        assert.strictEqual(detail.id, id)
        assert.strictEqual(detail.status, "DEAD_LETTER")
        assert.deepStrictEqual(detail.payload, { n: 0, kind: "Shown" })
        assert.strictEqual(detail.lastError, "kaput")
        assert.strictEqual(detail.retryCount, 3)
        assert.instanceOf(detail.createdAt, Date)
        assert.strictEqual(detail.deadLetteredAt!.toISOString(), "2026-01-10T10:00:00.000Z")
        assert.deepStrictEqual(detail.redrives, [])

        const [row] = yield* sql<{ tracking_id: string }>`SELECT tracking_id::text FROM outbox WHERE id = ${id!}`
        assert.strictEqual((yield* dlq.show(row!.tracking_id)).id, id)
        assert.strictEqual((yield* dlq.show(String(id))).id, id)

        const missing = yield* Effect.flip(dlq.show(999_999_999n))
        assert.strictEqual(missing._tag, "DeadLetterNotFound")
        const garbage = yield* Effect.flip(dlq.show("1; DROP TABLE outbox"))
        assert.strictEqual(garbage._tag, "DeadLetterError")
      }))

    it.effect("invalid filters and options are typed errors", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const backwards = yield* Effect.flip(
          dlq.list({ since: new Date("2026-02-01T00:00:00Z"), until: new Date("2026-01-01T00:00:00Z") })
        )
        assert.strictEqual(backwards._tag === "DeadLetterError" && backwards.reason, "InvalidFilter")
        const badLimit = yield* Effect.flip(dlq.list({}, { limit: 0 }))
        assert.strictEqual(badLimit.reason, "InvalidOption")
        const badDate = yield* Effect.flip(dlq.count({ since: new Date("nope") }))
        assert.strictEqual(badDate.reason, "InvalidFilter")
      }))
  })

  describe("redrive", () => {
    it.effect("without an operator name or a root-cause note it is a BlindRedrive, and nothing changes", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const ids = yield* seed([{ aggregateType: "B1", eventType: "Blind" }, { aggregateType: "B1", eventType: "Blind" }])
        const before = yield* logCount
        const filter = { aggregateTypes: ["B1"] }
        const cases: ReadonlyArray<[DeadLetters.RedriveRequest, ReadonlyArray<string>]> = [
          [{ by: undefined, reason: "fixed the endpoint", filter }, ["by"]],
          [{ by: "alice", reason: undefined, filter }, ["reason"]],
          [{ by: "  ", reason: "\n\t", filter }, ["by", "reason"]],
          [{ by: "", reason: "", filter, dryRun: true }, ["by", "reason"]],
          [{ by: "alice", reason: " ", all: true }, ["reason"]]
        ]
        for (const [request, missing] of cases) {
          const error = yield* Effect.flip(dlq.redrive(request))
          assert.strictEqual(error._tag, "BlindRedrive")
          if (error._tag === "BlindRedrive") {
            assert.deepStrictEqual(error.missing, missing)
            assert.include(error.message, "blind redrive refused")
          }
        }
        assert.deepStrictEqual(yield* statuses(ids), ["DEAD_LETTER", "DEAD_LETTER"])
        assert.strictEqual(yield* logCount, before)
      }))

    it.effect("an empty filter is refused unless `all` is set", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const error = yield* Effect.flip(dlq.redrive({ by: "alice", reason: "INC-1" }))
        assert.strictEqual(error._tag === "DeadLetterError" && error.reason, "Unfiltered")
        const plan = yield* dlq.redrive({ by: "alice", reason: "INC-1", all: true, dryRun: true })
        assert.strictEqual(plan._tag, "DryRun")
        assert.strictEqual(plan.matched, (yield* dlq.count()).total)
      }))

    it.effect("a dry run reports exactly what the redrive then does; the redrive resets the events and logs the batch", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        const ids = yield* seed([
          { aggregateType: "R1", eventType: "Paid", error: "HTTP 503", retries: 6 },
          { aggregateType: "R1", eventType: "Paid", error: "certificate expired" },
          { aggregateType: "R1", eventType: "Paid", error: "HTTP 503 again" },
          { aggregateType: "R1", eventType: "Shipped", error: "HTTP 503" },
          { aggregateType: "R1", eventType: "Paid", status: "COMPLETED" }
        ])
        const request = {
          by: "alice",
          reason: "INC-42: billing endpoint was down, fixed",
          filter: { aggregateTypes: ["R1"], eventTypes: ["Paid"], errorContains: "503" }
        }
        const plan = yield* dlq.redrive({ ...request, dryRun: true })
        assert.strictEqual(plan._tag, "DryRun")
        if (plan._tag !== "DryRun") return
        assert.deepStrictEqual(plan.events.map((e) => e.id), [ids[0]!, ids[2]!])
        assert.deepStrictEqual(plan.events.map((e) => e.lastError), ["HTTP 503", "HTTP 503 again"])
        assert.strictEqual(plan.batches, 1)
        // nothing changed by the dry run
        assert.deepStrictEqual(yield* statuses(ids), ["DEAD_LETTER", "DEAD_LETTER", "DEAD_LETTER", "DEAD_LETTER", "COMPLETED"])

        const report = yield* dlq.redrive(request)
        assert.strictEqual(report._tag, "Redriven")
        if (report._tag !== "Redriven") return
        assert.deepStrictEqual(
          { matched: report.matched, redriven: report.redriven, skipped: report.skipped, batches: report.batches },
          { matched: 2, redriven: 2, skipped: [], batches: 1 }
        )
        const after = yield* rowsOf(ids)
        assert.deepStrictEqual(after.map((r) => r.status), ["PENDING", "DEAD_LETTER", "PENDING", "DEAD_LETTER", "COMPLETED"])
        for (const r of [after[0]!, after[2]!]) {
          assert.deepStrictEqual(
            { retry: r.retry_count, error: r.last_error, available: r.available_at, processed: r.processed_at },
            { retry: 0, error: null, available: null, processed: null }
          )
        }
        // the batch is recorded with the operator, the note, the filter and the previous errors
        const [log] = yield* sql<{
          id: bigint
          operator: string
          reason: string
          filter: Record<string, unknown>
          event_ids: ReadonlyArray<string | bigint>
          event_count: number
          redrive_id: string
          previous: ReadonlyArray<{ id: string; last_error: string; retry_count: number }>
        }>`SELECT id, operator, reason, filter, event_ids, event_count, redrive_id::text, previous
           FROM outbox_redrive_log WHERE id = ${report.logIds[0]!}`
        assert.strictEqual(log!.operator, "alice")
        assert.strictEqual(log!.reason, "INC-42: billing endpoint was down, fixed")
        assert.deepStrictEqual(log!.filter, { aggregateTypes: ["R1"], eventTypes: ["Paid"], errorContains: "503" })
        assert.deepStrictEqual(log!.event_ids.map(BigInt), [ids[0]!, ids[2]!])
        assert.strictEqual(log!.event_count, 2)
        assert.strictEqual(log!.redrive_id, report.redriveId)
        assert.deepStrictEqual(log!.previous.map((p) => [p.id, p.last_error, p.retry_count]), [
          [String(ids[0]!), "HTTP 503", 6],
          [String(ids[2]!), "HTTP 503 again", 5]
        ])

        // show tells the story; history lists it
        const shown = yield* dlq.show(ids[0]!)
        assert.strictEqual(shown.status, "PENDING")
        assert.deepStrictEqual(shown.redrives.map((r) => [r.operator, r.reason]), [["alice", request.reason]])
        assert.strictEqual((yield* dlq.history({ eventId: ids[2]! }))[0]!.redriveId, report.redriveId)

        // the same request again finds nothing and logs nothing
        const again = yield* dlq.redrive(request)
        assert.strictEqual(again._tag === "Redriven" && again.redriven, 0)
        assert.strictEqual(again._tag === "Redriven" && again.logIds.length, 0)
      }))

    it.effect("explicit ids: those that are not dead letters are reported and left alone", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const ids = yield* seed([
          { aggregateType: "I1", eventType: "E" },
          { aggregateType: "I1", eventType: "E", status: "COMPLETED" },
          { aggregateType: "I1", eventType: "E", status: "PENDING" }
        ])
        const request = { by: "bob", reason: "replay after the fix", filter: { ids: [ids[0]!, ids[1]!, ids[2]!, 987_654_321n] } }
        const plan = yield* dlq.redrive({ ...request, dryRun: true })
        assert.deepStrictEqual(plan.notDeadLetters, [ids[1]!, ids[2]!, 987_654_321n])
        const report = yield* dlq.redrive(request)
        assert.strictEqual(report._tag, "Redriven")
        assert.deepStrictEqual(report.notDeadLetters, [ids[1]!, ids[2]!, 987_654_321n])
        assert.strictEqual(report._tag === "Redriven" && report.redriven, 1)
        assert.deepStrictEqual(yield* statuses(ids), ["PENDING", "COMPLETED", "PENDING"])
      }))

    it.effect("large sets go in batches, one transaction per batch, each logged under one redrive id", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, retry_count, last_error, processed_at)
                   SELECT 'BIG', 'a-' || g, 'Bulk', '{}', 'DEAD_LETTER', 5, 'boom ' || g, now() FROM generate_series(1, 25) g`
        const progress: Array<[number, number, number]> = []
        const report = yield* dlq.redrive({
          by: "carol",
          reason: "bulk replay",
          filter: { aggregateTypes: ["BIG"] },
          batchSize: 10,
          onBatch: (p) => Effect.sync(() => progress.push([p.batches, p.redriven, p.matched]))
        })
        assert.strictEqual(report._tag, "Redriven")
        // progress after each committed batch
        assert.deepStrictEqual(progress, [[1, 10, 25], [2, 20, 25], [3, 25, 25]])
        if (report._tag !== "Redriven") return
        assert.deepStrictEqual({ redriven: report.redriven, batches: report.batches, logs: report.logIds.length }, {
          redriven: 25,
          batches: 3,
          logs: 3
        })
        const logs = yield* sql<{ batch: number; event_count: number; tx: string }>`
          SELECT batch, event_count, xmin::text AS tx FROM outbox_redrive_log
          WHERE redrive_id = ${report.redriveId}::uuid ORDER BY batch`
        assert.deepStrictEqual(logs.map((l) => [l.batch, l.event_count]), [[1, 10], [2, 10], [3, 5]])
        // three distinct transactions
        assert.strictEqual(new Set(logs.map((l) => l.tx)).size, 3)
        const [left] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE aggregate_type = 'BIG' AND status <> 'PENDING'`
        assert.strictEqual(left!.n, 0)

        // `limit` caps a redrive
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, processed_at)
                   SELECT 'BIG2', 'a-' || g, 'Bulk', '{}', 'DEAD_LETTER', now() FROM generate_series(1, 5) g`
        const capped = yield* dlq.redrive({ by: "carol", reason: "first two", filter: { aggregateTypes: ["BIG2"] }, limit: 2 })
        assert.strictEqual(capped._tag === "Redriven" && capped.redriven, 2)
        assert.strictEqual((yield* dlq.count({ aggregateTypes: ["BIG2"] })).total, 3)
      }))

    it.effect("an event that stops being a dead letter while the redrive waits for it is skipped, not touched", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        const ids = yield* seed([{ aggregateType: "F1", eventType: "Fenced" }, { aggregateType: "F1", eventType: "Fenced" }])
        const release = yield* Deferred.make<void>()
        const locked = yield* Deferred.make<void>()
        // another session moves ids[0] out of DEAD_LETTER (say, an operator deletes it by hand) and holds the lock
        const other = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`UPDATE outbox SET status = 'COMPLETED', last_error = 'resolved by hand' WHERE id = ${ids[0]!}`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(release)
        })).pipe(Effect.forkChild({ startImmediately: true }))
        yield* Deferred.await(locked)
        const redrive = yield* dlq.redrive({ by: "dave", reason: "race", filter: { aggregateTypes: ["F1"] } }).pipe(
          Effect.forkChild({ startImmediately: true })
        )
        // wait until the redrive's batch is blocked on the row lock, then commit the other session
        yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'`.pipe(
          Effect.map((rows) => rows[0]!.n),
          Effect.repeat({ schedule: Schedule.spaced(Duration.millis(20)), until: (n) => n > 0 }),
          Effect.timeout("20 seconds")
        )
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(other)
        const report = yield* Fiber.join(redrive)
        assert.strictEqual(report._tag, "Redriven")
        if (report._tag !== "Redriven") return
        assert.deepStrictEqual({ matched: report.matched, redriven: report.redriven, skipped: report.skipped }, {
          matched: 2,
          redriven: 1,
          skipped: [ids[0]!]
        })
        const rows = yield* rowsOf(ids)
        assert.deepStrictEqual(rows.map((r) => [r.status, r.last_error]), [["COMPLETED", "resolved by hand"], ["PENDING", null]])
      }))

    it.effect("the redrive's transaction carries outbox.actor and outbox.reason for the audit trail's triggers", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        const [id] = yield* seed([{ aggregateType: "A1", eventType: "Audited" }])
        yield* sql.unsafe(`CREATE TABLE captured (actor text, reason text)`)
        yield* sql.unsafe(`CREATE FUNCTION capture() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            INSERT INTO captured VALUES (current_setting('outbox.actor', true), current_setting('outbox.reason', true));
            RETURN NULL;
          END $$`)
        yield* sql.unsafe(`CREATE TRIGGER capture AFTER UPDATE ON outbox FOR EACH STATEMENT EXECUTE FUNCTION capture()`)
        const report = yield* dlq.redrive({ by: "erin", reason: "INC-7 fixed", filter: { ids: [id!] } }).pipe(
          Effect.ensuring(Effect.ignore(sql.unsafe(`DROP TRIGGER capture ON outbox`)))
        )
        assert.strictEqual(report._tag === "Redriven" && report.redriven, 1)
        const captured = yield* sql<{ actor: string; reason: string }>`SELECT actor, reason FROM captured`
        assert.deepStrictEqual(captured.map((c) => [c.actor, c.reason]), [["erin", "INC-7 fixed"]])
        // transaction-local: gone after the commit
        const [after] = yield* sql<{ actor: string | null }>`SELECT nullif(current_setting('outbox.actor', true), '') AS actor`
        assert.isNull(after!.actor)
      }))

    it.effect("with the audit trail enabled, the dead-letter activity shows the redrive with its operator and note", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        yield* OutboxMigrations.runWith({ audit: true })
        const [id] = yield* seed([{ aggregateType: "AU", eventType: "AuditedRedrive", status: "PENDING" }])
        yield* sql`UPDATE outbox SET status = 'PROCESSING' WHERE id = ${id!}`
        yield* sql`UPDATE outbox SET status = 'DEAD_LETTER', last_error = 'HTTP 410 Gone', processed_at = now() WHERE id = ${id!}`
        yield* dlq.redrive({ by: "ivy", reason: "INC-410: endpoint moved, config fixed", filter: { ids: [id!] } })
        const audit = yield* AuditTrail.make
        const activity = (yield* audit.deadLetterActivity()).filter((a) => a.eventId === id)
        assert.deepStrictEqual(activity.map((a) => [a.activity, a.error, a.actor, a.reason]), [
          ["DEAD_LETTERED", "HTTP 410 Gone", null, null],
          ["REDRIVEN", null, "ivy", "INC-410: endpoint moved, config fixed"]
        ])
      }))

    it.effect("a redriven event is claimable by the relay at once", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetters.DeadLetters
        const sql = yield* SqlClient.SqlClient
        // leave nothing else claimable in this database
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE status IN ('PENDING', 'FAILED')`
        const [id] = yield* seed([{ aggregateType: "C1", eventType: "Claimable" }])
        const store = yield* PgOutboxStore.make()
        assert.deepStrictEqual(yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30) }), [])
        yield* dlq.redrive({ by: "frank", reason: "sink fixed", filter: { ids: [id!] } })
        const claimed = yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })
        assert.deepStrictEqual(claimed.map((e) => [e.id, e.retryCount]), [[id!, 0]])
      }))

    it.effect("another outbox table (the `table` option); a hostile table name is refused", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`CREATE TABLE tenant_outbox (LIKE outbox INCLUDING DEFAULTS)`)
        yield* sql`INSERT INTO tenant_outbox (id, aggregate_type, aggregate_id, event_type, payload, status, last_error)
                   VALUES (1, 'T', 't-1', 'Other', '{}', 'DEAD_LETTER', 'boom')`
        const other = yield* DeadLetters.make({ table: "tenant_outbox" })
        assert.deepStrictEqual((yield* other.list()).map((e) => e.id), [1n])
        const report = yield* other.redrive({ by: "hank", reason: "tenant sink fixed", filter: { ids: [1n] } })
        assert.strictEqual(report._tag === "Redriven" && report.redriven, 1)
        const [row] = yield* sql<{ status: string }>`SELECT status FROM tenant_outbox WHERE id = 1`
        assert.strictEqual(row!.status, "PENDING")

        const hostile = yield* Effect.flip(DeadLetters.make({ table: `outbox"; DROP TABLE outbox; --` }))
        assert.strictEqual(hostile.reason, "InvalidOption")
      }))

    it.effect("the redrive log is append-only", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const dlq = yield* DeadLetters.DeadLetters
        const [id] = yield* seed([{ aggregateType: "AO", eventType: "AppendOnly" }])
        yield* dlq.redrive({ by: "gina", reason: "append-only check", filter: { ids: [id!] } })
        for (const statement of [
          `UPDATE outbox_redrive_log SET reason = 'nothing to see'`,
          `DELETE FROM outbox_redrive_log`,
          `TRUNCATE outbox_redrive_log`
        ]) {
          const exit = yield* Effect.exit(sql.unsafe(statement))
          assert.isTrue(Exit.isFailure(exit), statement)
        }
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_redrive_log WHERE reason = 'append-only check'`
        assert.strictEqual(row!.n, 1)
        // the database refuses a blind row too
        const blind = yield* Effect.exit(sql`INSERT INTO outbox_redrive_log (redrive_id, batch, operator, reason, filter, event_ids, event_count)
          VALUES (gen_random_uuid(), 1, ' ', 'x', '{}', '{}', 0)`)
        assert.isTrue(Exit.isFailure(blind))
      }))
  })
})
