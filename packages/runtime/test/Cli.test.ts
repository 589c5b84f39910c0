import { assert, describe, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox as run } from "./fixtures/cli.ts"

const outbox = (...args: Array<string>) => run(args)

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox", (it) => {
  describe("without a database", () => {
    it.effect("--help and a command's --help print usage and exit 0 with DATABASE_URL unset; a command that needs the database fails naming it", () =>
      Effect.gen(function*() {
        const help = yield* run(["--help"], { DATABASE_URL: undefined })
        assert.strictEqual(help.code, 0, help.stderr)
        for (const command of ["migrate", "partitions", "stats", "health", "dlq", "roles", "audit"]) assert.include(help.stdout, command)
        const migrateHelp = yield* run(["migrate", "--help"], { DATABASE_URL: undefined })
        assert.strictEqual(migrateHelp.code, 0, migrateHelp.stderr)
        assert.include(migrateHelp.stdout, "--partman")
        const version = yield* run(["--version"], { DATABASE_URL: undefined })
        assert.strictEqual(version.code, 0, version.stderr)
        const migrate = yield* run(["migrate"], { DATABASE_URL: undefined })
        assert.notStrictEqual(migrate.code, 0)
        assert.include(migrate.stderr, "DATABASE_URL")
      }))
  })

  describe("migrate and partitions", () => {
    it.effect("migrate applies the schema; status prints the partitions and a clean health check; maintain is a no-op on a fresh schema", () =>
      Effect.gen(function*() {
        const migrated = yield* outbox("migrate")
        assert.strictEqual(migrated.code, 0, migrated.stderr)
        assert.include(migrated.stdout, "outbox schema is up to date")
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ t: string | null }>`SELECT to_regclass('outbox')::text AS t`
        assert.strictEqual(row!.t, "outbox")

        const status = yield* outbox("partitions", "status")
        assert.strictEqual(status.code, 0, status.stderr)
        const today = new Date().toISOString().slice(0, 10)
        assert.include(status.stdout, `outbox_p${today.replaceAll("-", "")}`)
        assert.include(status.stdout, "outbox_default (DEFAULT)")
        assert.include(status.stdout, "health: ok")

        const asJson = yield* outbox("partitions", "status", "--json")
        const parsed = JSON.parse(asJson.stdout) as { partitions: Array<{ name: string; isDefault: boolean }>; health: { ok: boolean } }
        assert.strictEqual(parsed.partitions.filter((p) => !p.isDefault).length, 4)
        assert.isTrue(parsed.health.ok)

        const maintained = yield* outbox("partitions", "maintain", "--premake", "5", "--json")
        assert.strictEqual(maintained.code, 0, maintained.stderr)
        assert.strictEqual((JSON.parse(maintained.stdout) as { created: Array<string> }).created.length, 2)
      }))

    it.effect("a problem exits non-zero: rows in DEFAULT fail the health check until maintain moves them", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
                   VALUES ('Order', 'o-1', 'OrderCreated', '{}', now() - interval '1 day')`
        const sick = yield* outbox("partitions", "status")
        assert.strictEqual(sick.code, 1)
        assert.include(sick.stdout, "RowsInDefault")
        const maintained = yield* outbox("partitions", "maintain")
        assert.strictEqual(maintained.code, 0, maintained.stderr)
        assert.include(maintained.stdout, "1 row(s) into outbox_p")
        assert.strictEqual((yield* outbox("partitions", "status")).code, 0)
      }))

    it.effect("a hostile table name is refused with a typed error and touches nothing", () =>
      Effect.gen(function*() {
        const refused = yield* outbox("partitions", "status", "--table", `outbox"; DROP TABLE outbox; --`)
        assert.strictEqual(refused.code, 1)
        assert.include(refused.stderr, "InvalidIdentifier")
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ t: string | null }>`SELECT to_regclass('outbox')::text AS t`
        assert.strictEqual(row!.t, "outbox")
      }))

    it.effect("maintain --tenant-table ensures one tenant's months, sweeps all, and applies per-tenant retention", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // the outbox the injected tenant name tries to drop (migrated here too, so the test stands alone under -t)
        const migrated = yield* outbox("migrate")
        assert.strictEqual(migrated.code, 0, migrated.stderr)
        yield* sql.unsafe(`CREATE TABLE tenant_events (tenant_id text NOT NULL, created_at timestamptz NOT NULL, body jsonb)
          PARTITION BY LIST (tenant_id)`)
        const acme = yield* outbox("partitions", "maintain", "--tenant-table", "tenant_events", "--tenant", "acme'; DROP TABLE outbox; --", "--months-ahead", "2", "--json")
        assert.strictEqual(acme.code, 0, acme.stderr)
        const report = JSON.parse(acme.stdout) as { ensured: { created: Array<string> } }
        // the tenant's partition, then this month and two ahead
        assert.strictEqual(report.ensured.created.length, 4)
        assert.match(report.ensured.created[1]!, /_p\d{6}$/)
        yield* sql`INSERT INTO tenant_events (tenant_id, created_at) VALUES (${"acme'; DROP TABLE outbox; --"}, now())`
        const swept = yield* outbox("partitions", "maintain", "--tenant-table", "tenant_events", "--months-ahead", "3", "--retention-months", "1")
        assert.strictEqual(swept.code, 0, swept.stderr)
        assert.match(swept.stdout, /created: +\S+_p\d{6}\n/) // one more month
        assert.include(swept.stdout, "dropped:  -") // nothing is old enough
        const [row] = yield* sql<{ t: string | null; n: number }>`
          SELECT to_regclass('outbox')::text AS t, (SELECT count(*)::int FROM tenant_events) AS n`
        assert.deepStrictEqual({ t: row!.t, n: row!.n }, { t: "outbox", n: 1 })
      }))
  })
})
