import { assert, describe, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Deferred from "effect/Deferred"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { randomBytes } from "node:crypto"

const Migrated = Layer.effectDiscard(OutboxMigrations.runWith({ audit: true })).pipe(Layer.provideMerge(TestDatabase.layer))
const Live = Layer.mergeAll(AuditTrail.layer, PgOutboxStore.layerWithoutMigrations(), PartitionManager.layer).pipe(
  Layer.provideMerge(Migrated),
  Layer.orDie
)

const publish = (n: number, prefix = "o") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ id: bigint; tracking_id: string }>`
      INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
      SELECT 'Order', ${prefix} || '-' || g, 'OrderCreated', jsonb_build_object('n', g) FROM generate_series(1, ${n}) g
      RETURNING id, tracking_id`)

/** Runs `statements` as the owner with the append-only trigger disabled: a superuser's attack. */
const tamper = (...statements: ReadonlyArray<string>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe(`ALTER TABLE outbox_audit_log DISABLE TRIGGER outbox_audit_log_append_only`)
      for (const statement of statements) yield* sql.unsafe(statement)
      yield* sql.unsafe(`ALTER TABLE outbox_audit_log ENABLE TRIGGER outbox_audit_log_append_only`)
    })))

const sealedAt = (position: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ audit_id: string; recorded_at: string }>`
        SELECT audit_id::text, recorded_at::text FROM outbox_audit_log WHERE chain_pos = ${position}`,
      (rows) => rows[0]!
    ))

const refusal = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(effect), (exit) => {
    assert.isTrue(Exit.isFailure(exit), "the statement should have been refused")
    return Exit.isFailure(exit) ? String(exit.cause) : ""
  })

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("AuditTrail", (it) => {
  describe("capture", () => {
    it.effect("records publish, claim, complete and delete with statuses, changed columns, user, application and txid", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const store = yield* OutboxStore
        const [first] = yield* publish(3, "capture")
        const claimed = yield* store.claim({ limit: 100, leaseDuration: Duration.seconds(30) })
        assert.strictEqual(claimed.length, 3)
        yield* store.complete(claimed)

        const history = yield* audit.history({ trackingId: first!.tracking_id })
        assert.deepStrictEqual(history.map((h) => [h.operation, h.oldStatus, h.newStatus]), [
          ["INSERT", null, "PENDING"],
          ["UPDATE", "PENDING", "PROCESSING"],
          ["UPDATE", "PROCESSING", "COMPLETED"]
        ])
        assert.deepStrictEqual(history[1]!.changedColumns, ["claimed_at", "lock_token", "locked_until", "status"])
        assert.deepStrictEqual(history[2]!.changedColumns, ["lock_token", "locked_until", "processed_at", "status"])
        const [me] = yield* sql<{ user: string }>`SELECT session_user AS user`
        assert.isTrue(history.every((h) => h.dbUser === me!.user && h.eventId === first!.id && h.txid !== null))
        assert.deepStrictEqual(yield* audit.history({ eventId: first!.id }), history)

        // the three claimed rows were claimed by one statement: one transaction id
        const [claimTx] = yield* sql<{ n: number }>`
          SELECT count(DISTINCT txid)::int AS n FROM outbox_audit_log WHERE new_status = 'PROCESSING'`
        assert.strictEqual(claimTx!.n, 1)

        yield* sql`SET application_name = 'audit-test'`.pipe(Effect.andThen(sql`DELETE FROM outbox WHERE id = ${first!.id}`), sql.withTransaction)
        const afterDelete = yield* audit.history({ eventId: first!.id })
        assert.deepStrictEqual([afterDelete[3]!.operation, afterDelete[3]!.oldStatus, afterDelete[3]!.applicationName], [
          "DELETE",
          "COMPLETED",
          "audit-test"
        ])
      }))

    it.effect("the triggers are statement-level with transition tables: 500 rows in one INSERT are 500 audit rows", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const triggers = yield* sql<{ name: string; row_level: boolean; transition: boolean }>`
          SELECT tgname AS name, (tgtype & 1) = 1 AS row_level, (tgoldtable IS NOT NULL OR tgnewtable IS NOT NULL) AS transition
          FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND tgname LIKE 'outbox_audit_%' ORDER BY tgname`
        assert.deepStrictEqual(triggers.map((t) => [t.name, t.row_level, t.transition]), [
          ["outbox_audit_delete", false, true],
          ["outbox_audit_insert", false, true],
          ["outbox_audit_truncate", false, false],
          ["outbox_audit_update", false, true]
        ])
        const [before] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_audit_log`
        yield* publish(500, "bulk")
        const [after] = yield* sql<{ n: number; tx: number }>`
          SELECT count(*)::int AS n, count(DISTINCT txid) FILTER (WHERE event_id IS NOT NULL AND operation = 'INSERT')::int AS tx
          FROM outbox_audit_log`
        assert.strictEqual(after!.n - before!.n, 500)
        const [fn] = yield* sql<{ definer: boolean; config: ReadonlyArray<string> }>`
          SELECT prosecdef AS definer, proconfig AS config FROM pg_proc WHERE proname = 'outbox_audit_capture'`
        assert.isTrue(fn!.definer)
        assert.match(fn!.config.join(" "), /^search_path=pg_catalog, "?public"?, pg_temp$/)
      }))

    it.effect("migrating again restores capture triggers the outbox lost (e.g. a table swapped in), and is otherwise a no-op", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const triggers = Effect.map(
          sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND tgname LIKE 'outbox_audit_%'`,
          (rows) => rows[0]!.n
        )
        yield* sql`DROP TRIGGER outbox_audit_update ON outbox`
        assert.strictEqual(yield* triggers, 3)
        assert.deepStrictEqual(yield* OutboxMigrations.runWith({ audit: true }), [])
        assert.strictEqual(yield* triggers, 4)
        const [before] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_audit_log`
        yield* sql`UPDATE outbox SET metadata = '{}' WHERE id = (SELECT min(id) FROM outbox)`
        const [after] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_audit_log`
        assert.strictEqual(after!.n, before!.n + 1)
      }))

    it.effect("history by tracking id finds an event published before the audit trail was enabled (through the outbox)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const [event] = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`ALTER TABLE outbox DISABLE TRIGGER outbox_audit_insert`
          const rows = yield* publish(1, "before-audit")
          yield* sql`ALTER TABLE outbox ENABLE TRIGGER outbox_audit_insert`
          return rows
        }))
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE id = ${event!.id}`
        const history = yield* audit.history({ trackingId: event!.tracking_id })
        assert.deepStrictEqual(history.map((h) => [h.operation, h.oldStatus, h.newStatus, h.eventId]), [
          ["UPDATE", "PENDING", "COMPLETED", event!.id]
        ])
        assert.deepStrictEqual(yield* audit.history({ trackingId: "00000000-0000-0000-0000-000000000000" }), [])
      }))

    it.effect("actor and reason come from the transaction's outbox.actor / outbox.reason (dead-letter activity view)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const store = yield* OutboxStore
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE status <> 'COMPLETED'`
        const [event] = yield* publish(1, "dlq")
        const [claimed] = yield* store.claim({ limit: 1, leaseDuration: Duration.seconds(30) })
        assert.strictEqual(claimed!.id, event!.id)
        yield* store.deadLetter(claimed!, { error: "webhook answered 422: unknown customer" })
        // a redrive: DEAD_LETTER -> PENDING in a transaction naming who and why
        yield* sql.withTransaction(Effect.andThen(
          AuditTrail.annotate({ actor: "alice", reason: "INC-42: customer table restored" }),
          sql`UPDATE outbox SET status = 'PENDING', retry_count = 0, last_error = NULL WHERE id = ${event!.id}`
        ))
        // the settings end with the transaction
        yield* sql`UPDATE outbox SET metadata = '{"touched": true}' WHERE id = ${event!.id}`

        const activity = (yield* audit.deadLetterActivity()).filter((a) => a.eventId === event!.id)
        assert.deepStrictEqual(activity.map((a) => [a.activity, a.error, a.actor, a.reason]), [
          ["DEAD_LETTERED", "webhook answered 422: unknown customer", null, null],
          ["REDRIVEN", null, "alice", "INC-42: customer table restored"]
        ])
        const history = yield* audit.history({ eventId: event!.id })
        assert.deepStrictEqual(history[history.length - 1]!.changedColumns, ["metadata"])
        assert.isNull(history[history.length - 1]!.actor)

        const summary = yield* audit.soxSummary()
        const updates = summary.find((s) => s.operation === "UPDATE")!
        assert.isAtLeast(updates.changes, 6)
        assert.strictEqual(updates.withActor, 1)
        assert.match(updates.day, /^\d{4}-\d{2}-\d{2}$/)
      }))

    it.effect("a role with no privilege on the audit log is audited, and cannot read, change or seal it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const database = yield* TestDatabase.TestDatabase
        const role = `audit_writer_${randomBytes(4).toString("hex")}`
        yield* sql.unsafe(`CREATE ROLE ${role} LOGIN`)
        yield* sql.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO ${role}`)
        yield* sql.unsafe(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`)
        const url = new URL(database.url)
        url.username = role
        yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* PgClient.make({ url: Redacted.make(url.toString()), maxConnections: 1 })
          const [row] = yield* client<{ id: bigint }>`
            INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', 'as-role', 'OrderCreated', '{}')
            RETURNING id`
          yield* client`UPDATE outbox SET status = 'COMPLETED' WHERE id = ${row!.id}`
          const [recorded] = yield* sql<{ users: ReadonlyArray<string> }>`
            SELECT array_agg(DISTINCT db_user) AS users FROM outbox_audit_log WHERE event_id = ${row!.id}`
          assert.deepStrictEqual(recorded!.users, [role])
          assert.include(yield* refusal(client`SELECT count(*) FROM outbox_audit_log`), "permission denied")
          assert.include(yield* refusal(client`UPDATE outbox_audit_log SET actor = 'me'`), "permission denied")
          assert.include(yield* refusal(client`DELETE FROM outbox_audit_log`), "permission denied")
          assert.include(
            yield* refusal(client`INSERT INTO outbox_audit_log (operation, db_user) VALUES ('INSERT', 'forged')`),
            "permission denied"
          )
          assert.include(yield* refusal(client`SELECT outbox_audit_seal(10)`), "permission denied")
          // an auditor reads the log (and the history function) with SELECT on the log alone
          yield* sql.unsafe(`REVOKE ALL ON outbox FROM ${role}`)
          yield* sql.unsafe(`GRANT SELECT ON outbox_audit_log TO ${role}`)
          const [tracking] = yield* sql<{ id: string }>`SELECT tracking_id::text AS id FROM outbox_audit_log WHERE event_id = ${row!.id} LIMIT 1`
          const byTracking = yield* client<{ operation: string }>`SELECT operation FROM outbox_audit_history(p_tracking_id => ${tracking!.id}::uuid)`
          const byEvent = yield* client<{ operation: string }>`SELECT operation FROM outbox_audit_history(p_event_id => ${row!.id})`
          assert.deepStrictEqual(byTracking.map((r) => r.operation), ["INSERT", "UPDATE"])
          assert.deepStrictEqual(byEvent, byTracking)
          yield* sql.unsafe(`REVOKE ALL ON outbox_audit_log FROM ${role}`)
        }).pipe(Effect.provide((yield* Effect.promise(() => import("effect/reactivity/Reactivity"))).layer)))
        yield* sql.unsafe(`REVOKE ALL ON outbox FROM ${role}`)
        yield* sql.unsafe(`REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM ${role}`)
        yield* sql.unsafe(`DROP ROLE ${role}`)
      }))
  })

  describe("append-only", () => {
    it.effect("UPDATE, DELETE and TRUNCATE are refused, even for the owner; sealing is the one allowed change", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        yield* audit.sealAll()
        const [unsealed] = yield* publish(1, "append-only")
        const [row] = yield* sql<{ audit_id: string }>`SELECT audit_id::text FROM outbox_audit_log WHERE event_id = ${unsealed!.id}`
        assert.include(yield* refusal(sql`UPDATE outbox_audit_log SET actor = 'mallory' WHERE audit_id = ${row!.audit_id}`), "append-only")
        assert.include(yield* refusal(sql`DELETE FROM outbox_audit_log WHERE audit_id = ${row!.audit_id}`), "append-only")
        assert.include(yield* refusal(sql`TRUNCATE outbox_audit_log`), "append-only")
        assert.include(yield* refusal(sql`DELETE FROM outbox_audit_head`), "append-only")
        // sealing NULL -> value, but never a content change, nor a second sealing
        assert.include(
          yield* refusal(sql`UPDATE outbox_audit_log SET chain_pos = 999999, prev_hash = '\\x00', hash = '\\x00', actor = 'x'
                             WHERE audit_id = ${row!.audit_id}`),
          "append-only"
        )
        assert.strictEqual(yield* audit.sealAll(), 1)
        assert.include(
          yield* refusal(sql`UPDATE outbox_audit_log SET hash = '\\x00' WHERE audit_id = ${row!.audit_id}`),
          "append-only"
        )
        const [grants] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM information_schema.role_table_grants
          WHERE table_name IN ('outbox_audit_log', 'outbox_audit_head', 'outbox_audit_checkpoint') AND grantee = 'PUBLIC'`
        assert.strictEqual(grants!.n, 0)
      }))
  })

  describe("hash chain", () => {
    it.effect("sealing chains every committed row; a clean chain verifies", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        yield* publish(250, "chain")
        yield* audit.sealAll({ maxRows: 100 })
        const result = yield* audit.verify()
        assert.isTrue(result.ok, result.broken?.message)
        assert.deepStrictEqual(result.start, { from: "genesis" })
        assert.strictEqual(result.unsealed, 0)
        assert.isUndefined(result.oldestUnsealedSeconds)
        const [count] = yield* sql<{ n: number; max: string }>`SELECT count(*)::int AS n, max(chain_pos)::text AS max FROM outbox_audit_log`
        assert.strictEqual(result.checked, count!.n)
        assert.strictEqual(result.head.position, BigInt(count!.max))
        assert.strictEqual(result.head.hash, (yield* audit.head).hash)
        // positions are consecutive and each row links to the previous hash
        const [links] = yield* sql<{ bad: number }>`
          SELECT count(*)::int AS bad FROM outbox_audit_log a JOIN outbox_audit_log b ON b.chain_pos = a.chain_pos + 1
          WHERE b.prev_hash <> a.hash`
        assert.strictEqual(links!.bad, 0)
        // unsealed rows are counted, not reported as broken
        yield* publish(2, "late")
        const later = yield* audit.verify()
        assert.isTrue(later.ok)
        assert.strictEqual(later.unsealed, 2)
        assert.isDefined(later.oldestUnsealedSeconds)
        assert.isBelow(later.oldestUnsealedSeconds!, 60)
        // an unsealed row recorded long ago (the sealer stopped): its age is reported
        // (the append-only guard is a trigger: a superuser's replica session role skips it, as a tamperer's would)
        yield* sql.withTransaction(Effect.andThen(
          sql`SET LOCAL session_replication_role = replica`,
          sql`UPDATE outbox_audit_log SET recorded_at = recorded_at - interval '1 hour'
              WHERE audit_id = (SELECT min(audit_id) FROM outbox_audit_log WHERE hash IS NULL)`
        ))
        const stale = yield* audit.verify()
        assert.isAtLeast(stale.oldestUnsealedSeconds!, 3600)
        yield* audit.sealAll()
      }))

    it.effect("an altered row is caught and named; restoring it verifies again", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        const target = yield* sealedAt(10)
        const [original] = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ status: string | null }>`SELECT new_status AS status FROM outbox_audit_log WHERE chain_pos = 10`)
        yield* tamper(`UPDATE outbox_audit_log SET new_status = 'FORGED' WHERE audit_id = ${target.audit_id}`)
        const result = yield* audit.verify()
        assert.isFalse(result.ok)
        assert.strictEqual(result.broken?.kind, "altered")
        assert.strictEqual(result.broken?.position, 10n)
        assert.strictEqual(result.broken?.auditId, BigInt(target.audit_id))
        assert.notStrictEqual(result.broken?.expectedHash, result.broken?.foundHash)
        assert.strictEqual(result.checked, 9)
        yield* tamper(`UPDATE outbox_audit_log SET new_status = ${
          original!.status === null ? "NULL" : `'${original!.status}'`
        } WHERE audit_id = ${target.audit_id}`)
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("a row rewritten together with its hash is caught at that link", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        const target = yield* sealedAt(20)
        const original = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ hash: string }>`SELECT encode(hash, 'hex') AS hash FROM outbox_audit_log WHERE chain_pos = 20`)
        yield* tamper(
          `UPDATE outbox_audit_log SET db_user = 'someone_else' WHERE audit_id = ${target.audit_id}`,
          `UPDATE outbox_audit_log l SET hash = outbox_audit_link(l.prev_hash, l) WHERE audit_id = ${target.audit_id}`
        )
        const result = yield* audit.verify()
        assert.strictEqual(result.broken?.kind, "altered")
        assert.strictEqual(result.broken?.position, 20n)
        assert.strictEqual(result.broken?.auditId, BigInt(target.audit_id))
        assert.strictEqual(result.broken?.expectedHash, original[0]!.hash)
        const [me] = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ user: string }>`SELECT session_user AS user`)
        yield* tamper(
          `UPDATE outbox_audit_log SET db_user = '${me!.user}', hash = decode('${original[0]!.hash}', 'hex') WHERE audit_id = ${target.audit_id}`
        )
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("verification does not trust the functions stored in the database", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const [saved] = yield* sql<{ def: string }>`
          SELECT pg_get_functiondef('outbox_audit_link(bytea, outbox_audit_log)'::regprocedure) AS def`
        // an owner makes the stored link function agree with any stored hash, then alters a row
        yield* sql.unsafe(`CREATE OR REPLACE FUNCTION outbox_audit_link(prev bytea, l outbox_audit_log) RETURNS bytea
          LANGUAGE sql STABLE AS $fn$ SELECT l.hash $fn$`)
        const target = yield* sealedAt(15)
        yield* tamper(`UPDATE outbox_audit_log SET reason = 'forged' WHERE audit_id = ${target.audit_id}`)
        const result = yield* audit.verify()
        assert.deepStrictEqual([result.broken?.kind, result.broken?.position], ["altered", 15n])
        yield* tamper(`UPDATE outbox_audit_log SET reason = NULL WHERE audit_id = ${target.audit_id}`)
        yield* sql.unsafe(saved!.def)
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("a deleted row is reported missing at its position", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const target = yield* sealedAt(42)
        yield* sql.unsafe(`CREATE TEMP TABLE IF NOT EXISTS saved_audit AS SELECT * FROM outbox_audit_log WITH NO DATA`).pipe(
          Effect.andThen(sql.unsafe(`INSERT INTO saved_audit SELECT * FROM outbox_audit_log WHERE chain_pos = 42`)),
          Effect.andThen(tamper(`DELETE FROM outbox_audit_log WHERE audit_id = ${target.audit_id}`)),
          Effect.andThen(Effect.gen(function*() {
            const result = yield* audit.verify()
            assert.strictEqual(result.broken?.kind, "missing")
            assert.strictEqual(result.broken?.position, 42n)
            assert.isUndefined(result.broken?.auditId)
            assert.strictEqual(result.checked, 41)
          })),
          Effect.andThen(sql.unsafe(`INSERT INTO outbox_audit_log OVERRIDING SYSTEM VALUE SELECT * FROM saved_audit`)),
          sql.withTransaction
        )
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("the newest rows deleted (the tail) are reported missing against the head", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        const head = yield* audit.head
        const last = yield* sealedAt(Number(head.position))
        yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          Effect.gen(function*() {
            yield* sql.unsafe(`CREATE TEMP TABLE saved_tail AS SELECT * FROM outbox_audit_log WHERE audit_id = ${last.audit_id}`)
            yield* tamper(`DELETE FROM outbox_audit_log WHERE audit_id = ${last.audit_id}`)
            const result = yield* audit.verify()
            assert.strictEqual(result.broken?.kind, "missing")
            assert.strictEqual(result.broken?.position, head.position)
            yield* sql.unsafe(`INSERT INTO outbox_audit_log SELECT * FROM saved_tail`)
          }).pipe(sql.withTransaction))
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("two rows swapped in the chain are reported reordered", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        // a chain of its own making (run alone, or after the tests above)
        yield* publish(2, "swap")
        yield* audit.sealAll()
        const p = Number((yield* audit.head).position) - 1
        const a = yield* sealedAt(p)
        const b = yield* sealedAt(p + 1)
        const swap = [
          `UPDATE outbox_audit_log SET chain_pos = -1 WHERE audit_id = ${a.audit_id}`,
          `UPDATE outbox_audit_log SET chain_pos = ${p} WHERE audit_id = ${b.audit_id}`,
          `UPDATE outbox_audit_log SET chain_pos = ${p + 1} WHERE audit_id = ${a.audit_id}`
        ]
        yield* tamper(...swap)
        const result = yield* audit.verify()
        assert.strictEqual(result.broken?.kind, "reordered")
        assert.strictEqual(result.broken?.position, BigInt(p))
        assert.strictEqual(result.broken?.auditId, BigInt(b.audit_id))
        assert.include(result.broken?.message ?? "", `audit id ${a.audit_id}`)
        yield* tamper(
          `UPDATE outbox_audit_log SET chain_pos = -1 WHERE audit_id = ${b.audit_id}`,
          `UPDATE outbox_audit_log SET chain_pos = ${p} WHERE audit_id = ${a.audit_id}`,
          `UPDATE outbox_audit_log SET chain_pos = ${p + 1} WHERE audit_id = ${b.audit_id}`
        )
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("concurrent writers never wait for the sealer; rows committed while sealing are sealed next", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        yield* Effect.all([
          Effect.forEach(Array.from({ length: 20 }), () => publish(5, "concurrent"), { discard: true }),
          Effect.forEach(Array.from({ length: 20 }), () => publish(5, "concurrent-b"), { discard: true }),
          Effect.forEach(Array.from({ length: 10 }), () => audit.seal({ maxRows: 7 }), { discard: true })
        ], { concurrency: "unbounded" })
        yield* audit.sealAll()
        const result = yield* audit.verify()
        assert.isTrue(result.ok, result.broken?.message)
        assert.strictEqual(result.unsealed, 0)
      }))

    it.effect("a row moved away while it is being sealed makes the seal fail whole, and the next seal succeeds", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        yield* audit.sealAll()
        // a row recorded far ahead lands in DEFAULT, where the partition manager may move it
        yield* sql`INSERT INTO outbox_audit_log (recorded_at, operation, db_user) VALUES ('2100-01-01', 'INSERT', 'future')`
        const [row] = yield* sql<{ audit_id: string }>`SELECT audit_id::text FROM outbox_audit_log WHERE db_user = 'future'`
        const locked = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        // the manager's move: under its advisory lock, DELETE from DEFAULT (and, here, no re-insert)
        const mover = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`SELECT pg_advisory_xact_lock(hashtext('outbox.partitions'), hashtext(current_schema() || '.outbox_audit_log'))`
          yield* sql`DELETE FROM outbox_audit_log_default WHERE audit_id = ${row!.audit_id}`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(release)
        })).pipe(Effect.forkChild)
        yield* Deferred.await(locked)
        const sealing = yield* Effect.forkChild(Effect.flip(audit.seal()))
        yield* Effect.sleep("300 millis")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(mover)
        const failed = yield* Fiber.join(sealing)
        assert.include(failed.message, "nothing sealed, retry")
        const before = yield* audit.head
        assert.strictEqual(yield* audit.seal(), 0)
        assert.strictEqual((yield* audit.head).position, before.position)
        assert.isTrue((yield* audit.verify()).ok)
      }))

    it.effect("bad input is a typed error", () =>
      Effect.gen(function*() {
        const audit = yield* AuditTrail.AuditTrail
        const bad = yield* Effect.flip(audit.seal({ maxRows: 0 }))
        assert.deepStrictEqual([bad._tag, bad.reason], ["AuditError", "InvalidArgument"])
        const notUuid = yield* Effect.flip(audit.history({ trackingId: "'; DROP TABLE outbox; --" }))
        assert.strictEqual(notUuid.reason, "InvalidArgument")
      }))
  })
})

describe("retention", () => {
  // a database of its own: the chain starts with rows recorded in 2019
  layer(Live, { timeout: "120 seconds", excludeTestServices: true })("AuditTrail retention", (it) => {
    const seed = Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`INSERT INTO outbox_audit_log (recorded_at, operation, event_id, db_user)
          SELECT timestamptz '2019-01-01 00:00:00+00' + (g * interval '1 day') + interval '1 hour', 'INSERT', g, 'seed'
          FROM generate_series(0, 119) g`)

    it.effect("dropping partitions by retention verifies from the checkpoint; rows retention keeps may not go", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const audit = yield* AuditTrail.AuditTrail
        const manager = yield* PartitionManager.PartitionManager
        yield* seed // 2019-01-01 .. 2019-04-30, one row a day
        yield* audit.sealAll()
        yield* TestClock.setTime(Date.UTC(2019, 4, 15))
        assert.strictEqual(yield* audit.checkpoint(), 4) // Feb 1, Mar 1, Apr 1, May 1
        assert.strictEqual(yield* audit.checkpoint(), 0)

        const policy = { ...AuditTrail.policy(), retention: { amount: 2, unit: "months" as const } }
        const report = yield* manager.maintain(policy)
        assert.deepStrictEqual(report.failed, [])
        // DEFAULT rows were moved into monthly partitions (the guard lets the manager move them)
        assert.deepStrictEqual(report.moved.map((m) => [m.partition, m.rows]), [
          ["outbox_audit_log_p20190101", 31],
          ["outbox_audit_log_p20190201", 28],
          ["outbox_audit_log_p20190301", 31],
          ["outbox_audit_log_p20190401", 30]
        ])
        assert.deepStrictEqual(report.retired.map((r) => r.partition), ["outbox_audit_log_p20190101", "outbox_audit_log_p20190201"])

        const retention = { amount: 2, unit: "months" } as const
        const result = yield* audit.verify({ retention })
        assert.isTrue(result.ok, result.broken?.message)
        assert.deepStrictEqual(result.start, { from: "checkpoint", boundary: new Date("2019-03-01T00:00:00Z") })
        assert.strictEqual(result.firstPosition, 60n)
        assert.strictEqual(result.checked, 61)

        // a row deleted in the retained part is still missing
        const target = yield* sealedAt(75)
        yield* Effect.gen(function*() {
          yield* sql.unsafe(`CREATE TEMP TABLE saved_retained AS SELECT * FROM outbox_audit_log WHERE audit_id = ${target.audit_id}`)
          yield* tamper(`DELETE FROM outbox_audit_log WHERE audit_id = ${target.audit_id}`)
          const broken = yield* audit.verify({ retention })
          assert.deepStrictEqual([broken.broken?.kind, broken.broken?.position], ["missing", 75n])
          yield* sql.unsafe(`INSERT INTO outbox_audit_log SELECT * FROM saved_retained`)
        }).pipe(sql.withTransaction)
        assert.isTrue((yield* audit.verify({ retention })).ok)

        // the first retained row deleted: missing, not a legitimate start
        const first = yield* sealedAt(60)
        yield* Effect.gen(function*() {
          yield* sql.unsafe(`CREATE TEMP TABLE saved_first AS SELECT * FROM outbox_audit_log WHERE audit_id = ${first.audit_id}`)
          yield* tamper(`DELETE FROM outbox_audit_log WHERE audit_id = ${first.audit_id}`)
          const broken = yield* audit.verify({ retention })
          assert.deepStrictEqual([broken.broken?.kind, broken.broken?.position], ["missing", 60n])
          yield* sql.unsafe(`INSERT INTO outbox_audit_log SELECT * FROM saved_first`)
        }).pipe(sql.withTransaction)

        // a partition retention must keep, dropped early: missing
        yield* Effect.gen(function*() {
          yield* sql.unsafe(`ALTER TABLE outbox_audit_log DETACH PARTITION outbox_audit_log_p20190301`)
          const broken = yield* audit.verify({ retention })
          assert.deepStrictEqual([broken.broken?.kind, broken.broken?.position], ["missing", 60n])
          assert.include(broken.broken?.message ?? "", "retention keeps everything from 2019-03-01")
          // with one month of retention the same state is legitimate
          assert.isTrue((yield* audit.verify({ retention: { amount: 1, unit: "months" } })).ok)
          yield* sql.unsafe(`ALTER TABLE outbox_audit_log ATTACH PARTITION outbox_audit_log_p20190301
                             FOR VALUES FROM ('2019-03-01 00:00:00+00') TO ('2019-04-01 00:00:00+00')`)
        }).pipe(sql.withTransaction)
        assert.isTrue((yield* audit.verify({ retention })).ok)
      }).pipe(Effect.provide(TestClock.layer())))
  })
})
