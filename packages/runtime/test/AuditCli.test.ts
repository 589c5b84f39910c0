import { assert, describe, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox as run } from "./fixtures/cli.ts"

const outbox = (env: Record<string, string>, ...args: Array<string>) => run(args, env)

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox audit", (it) => {
  describe("migrate, seal, verify, show", () => {
    it.effect("a bad ENABLE_AUDIT is refused with its name; ENABLE_AUDIT=true installs the audit trail", () =>
      Effect.gen(function*() {
        const bad = yield* outbox({ ENABLE_AUDIT: "maybe" }, "migrate")
        assert.strictEqual(bad.code, 1)
        assert.include(bad.stderr, "ENABLE_AUDIT")
        const migrated = yield* outbox({ ENABLE_AUDIT: "true" }, "migrate")
        assert.strictEqual(migrated.code, 0, migrated.stderr)
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ log: string | null; view: string | null }>`
          SELECT to_regclass('outbox_audit_log')::text AS log, to_regclass('v_outbox_sox_audit')::text AS view`
        assert.deepStrictEqual(row, { log: "outbox_audit_log", view: "v_outbox_sox_audit" })
      }))

    it.effect("verify prints OK and exits 0 on a clean chain; show lists an event's history", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [event] = yield* sql<{ id: string; tracking_id: string }>`
          INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
          SELECT 'Order', 'o-' || g, 'OrderCreated', '{}' FROM generate_series(1, 20) g
          RETURNING id::text, tracking_id::text`
        yield* sql`UPDATE outbox SET status = 'DEAD_LETTER', last_error = 'HTTP 500' WHERE id = ${event!.id}`

        const sealed = yield* outbox({}, "audit", "seal", "--json")
        assert.strictEqual(sealed.code, 0, sealed.stderr)
        assert.strictEqual((JSON.parse(sealed.stdout) as { sealed: number }).sealed, 21)

        const ok = yield* outbox({}, "audit", "verify")
        assert.strictEqual(ok.code, 0, ok.stderr)
        assert.include(ok.stdout, "audit chain: OK, 21 sealed row(s) verified from the genesis row (positions 1..21)")
        const asJson = JSON.parse((yield* outbox({}, "audit", "verify", "--json")).stdout) as { ok: boolean; head: { position: string } }
        assert.deepStrictEqual([asJson.ok, asJson.head.position], [true, "21"])

        const shown = yield* outbox({}, "audit", "show", "--tracking-id", event!.tracking_id)
        assert.strictEqual(shown.code, 0, shown.stderr)
        assert.match(shown.stdout, /INSERT +\S* *PENDING/)
        assert.include(shown.stdout, "PENDING -> DEAD_LETTER")
        assert.include(shown.stdout, `last_error "HTTP 500"`)
        const byId = JSON.parse((yield* outbox({}, "audit", "show", "--event", event!.id, "--json")).stdout) as Array<{ operation: string }>
        assert.deepStrictEqual(byId.map((r) => r.operation), ["INSERT", "UPDATE"])

        const neither = yield* outbox({}, "audit", "show")
        assert.strictEqual(neither.code, 1)
        assert.include(neither.stderr, "AuditError")
      }))

    it.effect("rows left unsealed longer than --max-unsealed-age fail verify (the sealer is not running); fresh ones do not", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', 'late', 'OrderCreated', '{}')`
        const fresh = yield* outbox({}, "audit", "verify", "--retention-years", "7")
        assert.include(fresh.stdout, "not sealed yet")
        assert.notInclude(fresh.stderr, "AuditUnsealed")
        // the row waited an hour: a tamperer's window (the guard is a trigger; a replica session role skips it)
        yield* sql.withTransaction(Effect.andThen(
          sql`SET LOCAL session_replication_role = replica`,
          sql`UPDATE outbox_audit_log SET recorded_at = recorded_at - interval '1 hour' WHERE hash IS NULL`
        ))
        const stale = yield* outbox({}, "audit", "verify")
        assert.strictEqual(stale.code, 1)
        assert.include(stale.stderr, "AuditUnsealed")
        assert.include(stale.stderr, "is the sealer running")
        const lenient = yield* outbox({}, "audit", "verify", "--max-unsealed-age", "7200")
        assert.notInclude(lenient.stderr, "AuditUnsealed")
      }))

    it.effect("a tampered row: verify names the link and exits 1", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`ALTER TABLE outbox_audit_log DISABLE TRIGGER outbox_audit_log_append_only`
          yield* sql`UPDATE outbox_audit_log SET db_user = 'nobody' WHERE chain_pos = 7`
          yield* sql`ALTER TABLE outbox_audit_log ENABLE TRIGGER outbox_audit_log_append_only`
        }))
        const broken = yield* outbox({}, "audit", "verify")
        assert.strictEqual(broken.code, 1)
        assert.include(broken.stdout, "audit chain: BROKEN at position 7 (altered)")
        assert.include(broken.stderr, "AuditChainBroken")
        const asJson = JSON.parse((yield* outbox({}, "audit", "verify", "--json")).stdout) as {
          ok: boolean
          broken: { kind: string; position: string }
        }
        assert.deepStrictEqual([asJson.ok, asJson.broken.kind, asJson.broken.position], [false, "altered", "7"])
      }))
  })
})
