import { PgClient } from "@effect/sql-pg"
import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as OutboxRoles from "@outbox/sql/OutboxRoles"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import { Inbox } from "@outbox/core/Inbox"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { randomBytes } from "node:crypto"

/** The LOGIN roles of this file (random names: roles are cluster-wide). */
class Roles extends Context.Service<Roles, {
  readonly owner: string
  readonly producer: string
  readonly relay: string
  readonly operator: string
  readonly auditor: string
  readonly url: (role: string) => string
}>()("test/Roles") {}

/** Runs `effect` with a SqlClient connected as `role`. */
const as = (role: keyof Omit<Roles["Service"], "url">) =>
<A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Roles, (roles) =>
    effect.pipe(
      Effect.provide(
        PgClient.layer({ url: Redacted.make(roles.url(roles[role])), maxConnections: 2 }).pipe(Layer.provide(Reactivity.layer))
      )
    )) as Effect.Effect<A, E | unknown, Exclude<R, SqlClient.SqlClient | PgClient.PgClient> | Roles>

const RolesLive = Layer.effect(
  Roles,
  Effect.gen(function*() {
    const database = yield* TestDatabase.TestDatabase
    const admin = yield* SqlClient.SqlClient
    const suffix = randomBytes(4).toString("hex")
    const names = {
      owner: `outbox_t${suffix}_owner`,
      producer: `outbox_t${suffix}_producer`,
      relay: `outbox_t${suffix}_relay`,
      operator: `outbox_t${suffix}_operator`,
      auditor: `outbox_t${suffix}_auditor`
    }
    const url = (role: string) => {
      const parsed = new URL(database.url)
      parsed.username = role
      parsed.password = ""
      return parsed.toString()
    }
    const all = Object.values(names).map((n) => `"${n}"`).join(", ")
    yield* Effect.acquireRelease(
      Effect.gen(function*() {
        yield* admin.unsafe(`CREATE ROLE "${names.owner}" LOGIN`)
        // the owner owns the database, hence (PostgreSQL 15) the public schema: it runs the migrations
        yield* admin.unsafe(`ALTER DATABASE "${database.name}" OWNER TO "${names.owner}"`)
        // the others through the library (as a superuser here; CREATEROLE is enough)
        const created = yield* OutboxRoles.createRoles(
          { producer: names.producer, relay: names.relay, operator: names.operator, auditor: names.auditor },
          { login: true }
        )
        assert.strictEqual(created.length, 4)
      }),
      () =>
        Effect.gen(function*() {
          yield* admin.unsafe(`REASSIGN OWNED BY "${names.owner}" TO CURRENT_USER`)
          yield* admin.unsafe(`DROP OWNED BY ${all}`)
          yield* admin.unsafe(`DROP ROLE ${all}`)
        }).pipe(Effect.orDie)
    )
    const roles = Roles.of({ ...names, url })
    // as the owner: the schema, then the grants
    yield* Effect.provideService(
      as("owner")(Effect.gen(function*() {
        // with the audit trail (ENABLE_AUDIT=true)
        yield* OutboxMigrations.runWith({ audit: true })
        yield* OutboxRoles.grant({ roles: { producer: names.producer, relay: names.relay, operator: names.operator, auditor: names.auditor } })
      })),
      Roles,
      roles
    )
    return roles
  })
)

const Live = RolesLive.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** Asserts that `effect` is refused by PostgreSQL's privileges (42501). */
const refused = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    assert.isTrue(Exit.isFailure(exit), `${label}: expected a refusal, but it succeeded`)
    const text = Exit.isFailure(exit) ? String(Exit.isFailure(exit) && JSON.stringify(exit.cause, replacer)) : ""
    assert.match(text, /AuthorizationError|permission denied|must be owner/, `${label}: ${text.slice(0, 300)}`)
  })

const replacer = (_: string, v: unknown) =>
  typeof v === "bigint" ? String(v) : v instanceof Error ? { name: v.name, message: v.message, cause: v.cause } : v

/** The audit rows of some events (read as the superuser). */
const auditRows = (ids: ReadonlyArray<bigint>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ event_id: bigint; operation: string; old_status: string | null; new_status: string | null; db_user: string; actor: string | null; reason: string | null }>`
      SELECT event_id, operation, old_status, new_status, db_user, actor, reason FROM outbox_audit_log
      WHERE event_id = ANY(${`{${ids.join(",")}}`}::bigint[]) ORDER BY audit_id`)

/** Every way of reaching the audit trail directly. */
const auditTamper = [
  `SELECT * FROM outbox_audit_log`,
  `INSERT INTO outbox_audit_log (operation, db_user) VALUES ('INSERT', 'forged')`,
  `UPDATE outbox_audit_log SET reason = 'rewritten'`,
  `DELETE FROM outbox_audit_log`,
  `SELECT * FROM outbox_audit_head`,
  `UPDATE outbox_audit_head SET hash = NULL`
]

const statement = (text: string) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(text))

const insertEvent = (status = "PENDING") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ id: bigint }>`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, processed_at, last_error)
        VALUES ('Role', 'r-1', 'RoleTest', '{"secret": 1}', ${status}, ${status === "DEAD_LETTER" ? new Date() : null}::timestamptz,
                ${status === "DEAD_LETTER" ? "boom" : null}) RETURNING id`,
      (rows) => rows[0]!.id
    ))

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("OutboxRoles", (it) => {
  describe("producer", () => {
    it.effect("can only INSERT: SELECT, UPDATE, DELETE, TRUNCATE and lock tokens are refused", () =>
      Effect.gen(function*() {
        const roles = yield* Roles
        const sql = yield* SqlClient.SqlClient
        const producer = as("producer")
        yield* producer(statement(`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('ProducerAudit', '1', 'E', '{}')`))
        // audited through the trigger, as the producer
        const [inserted] = yield* sql<{ id: bigint }>`SELECT id FROM outbox WHERE aggregate_type = 'ProducerAudit'`
        assert.deepStrictEqual(
          (yield* auditRows([inserted!.id])).map((r) => [r.operation, r.new_status, r.db_user]),
          [["INSERT", "PENDING", roles.producer]]
        )
        for (const text of auditTamper) yield* refused(`producer: ${text}`, producer(statement(text)))
        yield* refused("SELECT *", producer(statement(`SELECT * FROM outbox`)))
        yield* refused("SELECT payload", producer(statement(`SELECT payload FROM outbox`)))
        yield* refused("SELECT id", producer(statement(`SELECT id FROM outbox`)))
        yield* refused("UPDATE", producer(statement(`UPDATE outbox SET status = 'COMPLETED'`)))
        yield* refused("DELETE", producer(statement(`DELETE FROM outbox`)))
        yield* refused("TRUNCATE", producer(statement(`TRUNCATE outbox`)))
        yield* refused("lock token", producer(statement(`SELECT nextval('outbox_lock_token_seq')`)))
        yield* refused("inbox", producer(statement(`SELECT * FROM outbox_inbox`)))
        yield* refused("redrive log", producer(statement(`SELECT * FROM outbox_redrive_log`)))
        // the library's publish reads back id, tracking_id, created_at: refused without producerReturning
        const publish = Outbox.transaction(
          Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderPlaced", payload: { total: 1 } })
        ).pipe(Effect.provide(PgOutboxStore.layerWithoutMigrations()))
        yield* refused("publish with RETURNING", producer(publish))
      }))

    it.effect("producerReturning lets the library's publish read back its keys, nothing more; re-granting without it takes that away", () =>
      Effect.gen(function*() {
        const roles = yield* Roles
        const producer = as("producer")
        const grantAs = (producerReturning: boolean) =>
          as("owner")(OutboxRoles.grant({
            roles: { producer: roles.producer, relay: roles.relay, operator: roles.operator, auditor: roles.auditor },
            producerReturning
          }))
        const statements = yield* grantAs(true)
        assert.include(statements, `GRANT SELECT (id, tracking_id, created_at) ON TABLE "public"."outbox" TO "${roles.producer}"`)
        const published = yield* producer(
          Outbox.transaction(
            Outbox.publish({ aggregateType: "Order", aggregateId: "o-2", eventType: "OrderPlaced", payload: { total: 2 } })
          ).pipe(Effect.provide(PgOutboxStore.layerWithoutMigrations()))
        )
        assert.strictEqual(typeof published.id, "bigint")
        yield* refused("SELECT payload with returning", producer(statement(`SELECT payload FROM outbox`)))
        yield* refused("UPDATE with returning", producer(statement(`UPDATE outbox SET status = 'COMPLETED'`)))
        yield* grantAs(false)
        yield* refused("SELECT id after re-grant", producer(statement(`SELECT id FROM outbox`)))
      }))
  })

  describe("relay", () => {
    it.effect("claims, completes, retries, dead-letters and reaps through the store; the inbox works; the rest is refused", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE status <> 'COMPLETED'`
        const ids = [yield* insertEvent(), yield* insertEvent(), yield* insertEvent()]
        const relay = as("relay")
        const cycle = Effect.gen(function*() {
          const store = yield* OutboxStore
          const claimed = yield* store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })
          assert.deepStrictEqual(claimed.map((e) => e.id), ids)
          yield* store.complete([claimed[0]!])
          yield* store.retry(claimed[1]!, { error: "503", delay: Duration.seconds(0) })
          yield* store.deadLetter(claimed[2]!, { error: "poison" })
          const reaped = yield* store.reap
          assert.deepStrictEqual(reaped, { requeued: [], deadLettered: [] })
          const inbox = yield* Inbox
          assert.isTrue(yield* inbox.markProcessed("billing", "t-1"))
          assert.isTrue(yield* inbox.isProcessed("billing", "t-1"))
        }).pipe(Effect.provide(Layer.merge(PgOutboxStore.layerWithoutMigrations(), PgInbox.layer)))
        yield* relay(cycle)
        const rows = yield* sql<{ status: string }>`SELECT status FROM outbox WHERE id = ANY(${`{${ids.join(",")}}`}::bigint[]) ORDER BY id`
        assert.deepStrictEqual(rows.map((r) => r.status), ["COMPLETED", "FAILED", "DEAD_LETTER"])
        // nothing on the audit log, yet every update is audited, as the relay
        const roles = yield* Roles
        const audited = (yield* auditRows(ids)).filter((r) => r.operation === "UPDATE")
        assert.deepStrictEqual(
          audited.map((r) => [String(r.event_id), r.old_status, r.new_status, r.db_user]),
          [
            [String(ids[0]), "PENDING", "PROCESSING", roles.relay],
            [String(ids[1]), "PENDING", "PROCESSING", roles.relay],
            [String(ids[2]), "PENDING", "PROCESSING", roles.relay],
            [String(ids[0]), "PROCESSING", "COMPLETED", roles.relay],
            [String(ids[1]), "PROCESSING", "FAILED", roles.relay],
            [String(ids[2]), "PROCESSING", "DEAD_LETTER", roles.relay]
          ]
        )
        for (const text of auditTamper) yield* refused(`relay: ${text}`, relay(statement(text)))
        // the health views its gauges read
        for (const view of ["outbox_stats", "outbox_stats_dead_letters", "outbox_health_leases", "outbox_partition_overview"]) {
          yield* relay(statement(`SELECT * FROM ${view}`))
        }
        // the relay seals the chain (SECURITY DEFINER), still without touching the log itself
        const sealed = yield* relay(Effect.flatMap(AuditTrail.AuditTrail, (audit) => audit.sealAll()).pipe(Effect.provide(AuditTrail.layer)))
        assert.isAbove(sealed, 0)

        yield* refused("INSERT", relay(statement(`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('A', '1', 'E', '{}')`)))
        yield* refused("DELETE", relay(statement(`DELETE FROM outbox`)))
        yield* refused("UPDATE payload", relay(statement(`UPDATE outbox SET payload = '{"forged": true}'`)))
        yield* refused("UPDATE event_type", relay(statement(`UPDATE outbox SET event_type = 'Forged'`)))
        yield* refused("TRUNCATE", relay(statement(`TRUNCATE outbox`)))
        yield* refused("redrive log", relay(statement(`INSERT INTO outbox_redrive_log (redrive_id, batch, operator, reason, filter, event_ids, event_count)
          VALUES (gen_random_uuid(), 1, 'relay', 'forged', '{}', '{}', 0)`)))
      }))
  })

  describe("relay granted before claimed_at (migration 0006)", () => {
    it.effect("keeps claiming without the stamp; granting again adds it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const roles = yield* Roles
        yield* sql`UPDATE outbox SET status = 'COMPLETED' WHERE status <> 'COMPLETED'`
        // the grant of a version before the column: UPDATE on the other state columns only
        yield* sql.unsafe(`REVOKE UPDATE (claimed_at) ON outbox FROM "${roles.relay}"`)
        const claimAs = Effect.flatMap(OutboxStore, (store) => store.claim({ limit: 10, leaseDuration: Duration.seconds(30) })).pipe(
          Effect.provide(PgOutboxStore.layerWithoutMigrations())
        )
        const stamp = (id: bigint) =>
          Effect.map(sql<{ claimed_at: Date | null }>`SELECT claimed_at FROM outbox WHERE id = ${id}`, (rows) => rows[0]!.claimed_at)
        const before = yield* insertEvent()
        assert.deepStrictEqual((yield* as("relay")(claimAs)).map((e) => e.id), [before])
        assert.isNull(yield* stamp(before))
        yield* as("owner")(OutboxRoles.grant({
          roles: { producer: roles.producer, relay: roles.relay, operator: roles.operator, auditor: roles.auditor }
        }))
        const after = yield* insertEvent()
        assert.deepStrictEqual((yield* as("relay")(claimAs)).map((e) => e.id), [after])
        assert.isNotNull(yield* stamp(after))
      }))
  })

  describe("operator", () => {
    it.effect("redrives dead letters (UPDATE of state columns, INSERT into the redrive log) and nothing else", () =>
      Effect.gen(function*() {
        const roles = yield* Roles
        const sql = yield* SqlClient.SqlClient
        const id = yield* insertEvent("DEAD_LETTER")
        const operator = as("operator")
        const report = yield* operator(Effect.gen(function*() {
          const dlq = yield* DeadLetters.DeadLetters
          assert.isTrue((yield* dlq.list({ ids: [id] })).length === 1)
          assert.deepStrictEqual((yield* dlq.show(id)).payload, { secret: 1 })
          return yield* dlq.redrive({ by: "oscar", reason: "INC-9: sink fixed", filter: { ids: [id] } })
        }).pipe(Effect.provide(DeadLetters.layer())))
        assert.strictEqual(report._tag === "Redriven" && report.redriven, 1)
        const [log] = yield* sql<{ db_user: string; operator: string }>`
          SELECT db_user, operator FROM outbox_redrive_log WHERE event_ids @> ARRAY[${id}]::bigint[]`
        assert.deepStrictEqual({ ...log! }, { db_user: roles.operator, operator: "oscar" })
        const redriven = (yield* auditRows([id])).filter((r) => r.old_status === "DEAD_LETTER")
        assert.deepStrictEqual(
          redriven.map((r) => [r.new_status, r.db_user, r.actor, r.reason]),
          [["PENDING", roles.operator, "oscar", "INC-9: sink fixed"]]
        )
        for (const text of auditTamper) yield* refused(`operator: ${text}`, operator(statement(text)))

        yield* refused("INSERT outbox", operator(statement(`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('A', '1', 'E', '{}')`)))
        yield* refused("DELETE outbox", operator(statement(`DELETE FROM outbox`)))
        yield* refused("UPDATE payload", operator(statement(`UPDATE outbox SET payload = '{}'`)))
        yield* refused("UPDATE redrive log", operator(statement(`UPDATE outbox_redrive_log SET reason = 'rewritten'`)))
        yield* refused("DELETE redrive log", operator(statement(`DELETE FROM outbox_redrive_log`)))
        yield* refused("lock token", operator(statement(`SELECT nextval('outbox_lock_token_seq')`)))
      }))
  })

  describe("relay gauges", () => {
    it.effect("the relay samples every gauge, rows in DEFAULT included, and meters redrives; the other roles cannot", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const relay = as("relay")
        const relayHealth = <A, E>(f: (health: OutboxHealth.OutboxHealth["Service"]) => Effect.Effect<A, E>) =>
          relay(Effect.flatMap(OutboxHealth.make(), f))
        // a row past every partition lands in DEFAULT: the relay counts it (SECURITY DEFINER, SELECT on the parent only)
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                   VALUES ('Role', 'd-1', 'Late', '{}', '2999-01-01')`
        const snapshot = yield* relayHealth((h) => h.snapshot)
        assert.deepStrictEqual(snapshot.partitions.map((p) => [p.table, p.defaultRows]), [["outbox", 1]])
        // under per-key ordering its snapshot also counts blocked keys, with the same grants (SELECT on the parent)
        yield* sql`UPDATE outbox SET status = 'FAILED', available_at = now() + interval '1 hour' WHERE event_type = 'Late'`
        const ordered = yield* relay(Effect.flatMap(OutboxHealth.make({ ordering: { deadLetter: "hold" } }), (h) => h.snapshot))
        assert.deepStrictEqual([ordered.blockedKeys.backoff, ordered.blockedKeys.deadLetterHeld], [1, 0])
        yield* refused("relay: SELECT the DEFAULT partition", relay(statement(`SELECT * FROM outbox_default`)))
        // the producer may not read the outbox: the function counts nothing for it
        const [counted] = yield* as("producer")(
          Effect.flatMap(SqlClient.SqlClient, (s) => s<{ n: string | null }>`SELECT outbox_count_rows('outbox_default', 10)::text AS n`)
        )
        assert.strictEqual(counted!.n, null)

        // a redrive by the operator is metered once, by the relay
        yield* relayHealth((h) => h.claimRedriven)
        const id = yield* insertEvent("DEAD_LETTER")
        yield* as("operator")(Effect.flatMap(DeadLetters.DeadLetters, (dlq) =>
          dlq.redrive({ by: "oscar", reason: "INC-10: metered", filter: { ids: [id] } })
        ).pipe(Effect.provide(DeadLetters.layer())))
        assert.strictEqual(yield* relayHealth((h) => h.claimRedriven), 1)
        assert.strictEqual(yield* relayHealth((h) => h.claimRedriven), 0)
        for (const role of ["producer", "operator", "auditor"] as const) {
          yield* refused(`${role}: meter`, as(role)(statement(`SELECT outbox_meter_redrives()`)))
          yield* refused(`${role}: metered`, as(role)(statement(`SELECT * FROM outbox_redrive_metered`)))
        }
        yield* refused("relay: metered table", relay(statement(`INSERT INTO outbox_redrive_metered (log_id) VALUES (-1)`)))
        yield* sql`DELETE FROM outbox WHERE event_type = 'Late'`
      }))
  })

  describe("auditor", () => {
    it.effect("reads and verifies the audit trail, reads the redrive log and the views, nothing of the outbox, and writes nothing", () =>
      Effect.gen(function*() {
        const auditor = as("auditor")
        yield* auditor(statement(`SELECT * FROM outbox_redrive_log`))
        yield* auditor(statement(`SELECT * FROM v_outbox_sox_audit`))
        yield* auditor(statement(`SELECT * FROM v_outbox_dead_letter_activity`))
        const verification = yield* auditor(Effect.flatMap(AuditTrail.AuditTrail, (audit) => audit.verify()).pipe(Effect.provide(AuditTrail.layer)))
        assert.isTrue(verification.ok)
        for (const text of auditTamper.filter((t) => !t.startsWith("SELECT"))) yield* refused(`auditor: ${text}`, auditor(statement(text)))
        yield* refused("auditor: seal", auditor(statement(`SELECT outbox_audit_seal(10)`)))
        yield* refused("SELECT outbox", auditor(statement(`SELECT id FROM outbox`)))
        yield* refused("INSERT redrive log", auditor(statement(`INSERT INTO outbox_redrive_log (redrive_id, batch, operator, reason, filter, event_ids, event_count)
          VALUES (gen_random_uuid(), 1, 'a', 'b', '{}', '{}', 0)`)))
      }))
  })

  describe("owner", () => {
    it.effect("only the owner can alter the audit trail, the outbox and the redrive log, disable their triggers, truncate or drop them", () =>
      Effect.gen(function*() {
        const tamper = [
          `ALTER TABLE outbox_audit_log DISABLE TRIGGER USER`,
          `ALTER TABLE outbox_audit_log DISABLE TRIGGER outbox_audit_log_append_only`,
          `ALTER TABLE outbox_audit_log ADD COLUMN sneaky text`,
          `TRUNCATE outbox_audit_log`,
          `DELETE FROM outbox_audit_log`,
          `DROP TABLE outbox_audit_log`,
          `ALTER TABLE outbox DISABLE TRIGGER outbox_audit_update`,
          `DROP TRIGGER outbox_audit_update ON outbox`,
          `CREATE OR REPLACE FUNCTION outbox_audit_capture() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`,
          `ALTER FUNCTION outbox_audit_capture() SECURITY INVOKER`,
          `ALTER TABLE outbox DISABLE TRIGGER USER`,
          `ALTER TABLE outbox ADD COLUMN sneaky text`,
          `ALTER TABLE outbox_redrive_log DISABLE TRIGGER USER`,
          `ALTER TABLE outbox_redrive_log DROP CONSTRAINT outbox_redrive_log_operator_check`,
          `TRUNCATE outbox_redrive_log`,
          `DELETE FROM outbox_redrive_log`,
          `DROP TABLE outbox_redrive_log`,
          `DROP TRIGGER outbox_redrive_log_no_change ON outbox_redrive_log`
        ]
        for (const role of ["producer", "relay", "operator", "auditor"] as const) {
          for (const text of tamper) yield* refused(`${role}: ${text}`, as(role)(statement(text)))
        }
        // the owner can (in a transaction rolled back here)
        const sql = yield* SqlClient.SqlClient
        const rolledBack = as("owner")(Effect.flatMap(SqlClient.SqlClient, (owner) =>
          owner.withTransaction(Effect.gen(function*() {
            yield* owner.unsafe(`ALTER TABLE outbox_audit_log DISABLE TRIGGER USER`)
            yield* owner.unsafe(`ALTER TABLE outbox_redrive_log DISABLE TRIGGER USER`)
            yield* owner.unsafe(`ALTER TABLE outbox DISABLE TRIGGER USER`)
            return yield* Effect.fail("roll back" as const)
          }))))
        assert.strictEqual(yield* Effect.flip(rolledBack), "roll back")
        const [row] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'outbox_redrive_log'::regclass AND tgenabled = 'O'`
        assert.strictEqual(row!.n, 2)
        const [audit] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND tgname LIKE 'outbox_audit_%' AND tgenabled = 'O'`
        assert.strictEqual(audit!.n, 4)
      }))
  })

  describe("validation", () => {
    it.effect("role names are validated; duplicates, an empty set and missing objects are typed errors", () =>
      Effect.gen(function*() {
        const hostile = yield* Effect.flip(OutboxRoles.plan({ roles: { relay: `r"; DROP TABLE outbox; --` } }))
        assert.strictEqual(hostile._tag, "InvalidIdentifier")
        const duplicate = yield* Effect.flip(OutboxRoles.plan({ roles: { relay: "same", operator: "same" } }))
        assert.strictEqual(duplicate._tag === "RolesError" && duplicate.reason, "DuplicateRole")
        const none = yield* Effect.flip(OutboxRoles.plan({ roles: {} }))
        assert.strictEqual(none._tag === "RolesError" && none.reason, "NoRoles")
        const missing = yield* Effect.flip(OutboxRoles.plan({ roles: { relay: "someone" }, table: "no_such_outbox" }))
        assert.strictEqual(missing._tag === "RolesError" && missing.reason, "MissingObject")
        const badSchema = yield* Effect.flip(OutboxRoles.createRoles({ producer: "Bad Name" }))
        assert.strictEqual(badSchema._tag, "InvalidIdentifier")
      }))
  })
})
