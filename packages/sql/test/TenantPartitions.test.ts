import { assert, describe, layer } from "@effect/vitest"
import * as TenantPartitions from "@outbox/sql/TenantPartitions"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

const DatabaseLive = TestDatabase.layer.pipe(Layer.orDie)

/**
 * The pool's background timers must not run on the TestClock (moving a shared
 * TestClock from 1970 to 2026 would replay decades of idle-timeout ticks), so
 * the layer is built without test services and each test gets a fresh
 * TestClock of its own.
 */
const withTestClock = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, TestClock.layer())

const utc = (year: number, month: number, day = 15) => Date.UTC(year, month - 1, day, 12)

/**
 * A schema of its own per test (`<schema>.events`, LIST by tenant), a canary
 * table that hostile ids must not touch, and the service over it.
 */
const setup = (schema: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`CREATE SCHEMA ${schema}`)
    yield* sql.unsafe(`CREATE TABLE ${schema}.events (
        tenant_id  text        NOT NULL,
        created_at timestamptz NOT NULL,
        id         bigserial   NOT NULL,
        payload    jsonb       NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (tenant_id, created_at, id)
      ) PARTITION BY LIST (tenant_id)`)
    yield* sql.unsafe(`CREATE TABLE ${schema}.canary (x int)`)
    yield* sql.unsafe(`INSERT INTO ${schema}.canary VALUES (1)`)
    const layout = { table: `${schema}.events`, tenantColumn: "tenant_id", timeColumn: "created_at" }
    const partitions = yield* TenantPartitions.make(layout)
    const insert = (tenantId: string, at: number) =>
      sql.unsafe(`INSERT INTO ${schema}.events (tenant_id, created_at) VALUES ($1, $2::timestamptz)`, [
        tenantId,
        new Date(at).toISOString()
      ])
    const count = (tenantId: string) =>
      Effect.map(
        sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.events WHERE tenant_id = $1`, [tenantId]),
        (rows) => rows[0]!.n
      )
    /** Tenant partitions and their months in the catalog: `tenant partition -> months`. */
    const catalog = Effect.map(
      sql<{ tenant: string; month: string | null }>`
        SELECT t.relname AS tenant, m.relname AS month
          FROM pg_inherits ti JOIN pg_class t ON t.oid = ti.inhrelid
          LEFT JOIN pg_inherits mi ON mi.inhparent = t.oid LEFT JOIN pg_class m ON m.oid = mi.inhrelid
         WHERE ti.inhparent = ${`${schema}.events`}::regclass
         ORDER BY 1, 2`,
      (rows) => {
        const out: Record<string, Array<string>> = {}
        for (const row of rows) {
          out[row.tenant] ??= []
          if (row.month !== null) out[row.tenant]!.push(row.month)
        }
        return out
      }
    )
    return { sql, layout, partitions, insert, count, catalog }
  })

const relationNames = (plan: unknown): Array<string> => {
  if (Array.isArray(plan)) return plan.flatMap(relationNames)
  if (typeof plan !== "object" || plan === null) return []
  const record = plan as Record<string, unknown>
  const own = typeof record["Relation Name"] === "string" ? [record["Relation Name"]] : []
  return [...own, ...Object.values(record).flatMap(relationNames)]
}

layer(DatabaseLive, { timeout: "120 seconds", excludeTestServices: true })("TenantPartitions", (it) => {
  describe("writes", () => {
    it.effect("the first write of a new tenant creates its partitions; later writes issue no DDL and no call", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { catalog, count, insert, partitions, sql } = yield* setup("w1")
        // every DDL command in this database is logged by an event trigger
        yield* sql`CREATE TABLE public.ddl_log (tag text, identity text)`
        yield* sql.unsafe(`CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
          BEGIN
            INSERT INTO public.ddl_log SELECT command_tag, object_identity FROM pg_event_trigger_ddl_commands();
          END $$`)
        yield* sql`CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl()`
        const ddlCount = Effect.map(
          sql<{ n: number }>`
            SELECT count(*)::int AS n FROM public.ddl_log WHERE identity LIKE 'w1.%' AND tag <> 'ALTER FUNCTION'`,
          (rows) => rows[0]!.n
        )

        const first = yield* partitions.ensureTenant("acme")
        assert.deepStrictEqual(first, {
          partition: "events_acme_t",
          created: ["events_acme_t", "events_acme_t_p202601", "events_acme_t_p202602"],
          cached: false
        })
        yield* partitions.withTenant("acme", insert("acme", utc(2026, 1)))
        const afterFirst = yield* ddlCount
        assert.isAbove(afterFirst, 0)
        assert.deepStrictEqual(yield* catalog, { events_acme_t: ["events_acme_t_p202601", "events_acme_t_p202602"] })

        // the second write for the same tenant: cache hit, no DDL
        assert.isTrue((yield* partitions.ensureTenant("acme")).cached)
        yield* partitions.withTenant("acme", insert("acme", utc(2026, 1, 20)))
        assert.strictEqual(yield* ddlCount, afterFirst)

        // no round trip either: with the function gone, a cached tenant still writes, a new one cannot
        yield* sql`ALTER FUNCTION w1.outbox_tenant_ensure(regclass, text, text, text, date, integer) RENAME TO gone`
        yield* partitions.withTenant("acme", insert("acme", utc(2026, 1, 21)))
        const fresh = yield* Effect.flip(partitions.withTenant("newco", insert("newco", utc(2026, 1))))
        assert.strictEqual(fresh.reason, "Database")
        yield* sql`ALTER FUNCTION w1.gone(regclass, text, text, text, date, integer) RENAME TO outbox_tenant_ensure`
        assert.strictEqual(yield* count("acme"), 3)
        assert.strictEqual(yield* ddlCount, afterFirst)

        // the horizon moves with the month: the first write of a new month costs one call, then none
        yield* TestClock.setTime(utc(2026, 1, 31))
        assert.isTrue((yield* partitions.ensureTenant("acme")).cached)
        yield* TestClock.setTime(utc(2026, 2, 1))
        const rolled = yield* partitions.ensureTenant("acme")
        assert.deepStrictEqual(rolled, { partition: "events_acme_t", created: ["events_acme_t_p202603"], cached: false })
        assert.isTrue((yield* partitions.ensureTenant("acme")).cached)
        // a wider horizon asked for explicitly is not answered by the cache
        const wider = yield* partitions.ensureTenant("acme", { monthsAhead: 3 })
        assert.deepStrictEqual(wider.created, ["events_acme_t_p202604", "events_acme_t_p202605"])
        yield* sql`DROP EVENT TRIGGER log_ddl`
      })))

    it.effect("a new tenant inside a transaction that already wrote: created outside it, visible in it", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { count, insert, partitions, sql } = yield* setup("w2")
        yield* partitions.ensureTenant("acme")
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* insert("acme", utc(2026, 1))
          yield* partitions.withTenant("globex", insert("globex", utc(2026, 1)))
        }))
        assert.strictEqual(yield* count("acme"), 1)
        assert.strictEqual(yield* count("globex"), 1)

        // a rolled-back transaction does not undo the partitions, so the cache stays true
        const failed = yield* sql.withTransaction(
          partitions.withTenant("initech", Effect.andThen(insert("initech", utc(2026, 1)), Effect.fail("boom" as const)))
        ).pipe(Effect.flip)
        assert.strictEqual(failed, "boom")
        assert.strictEqual(yield* count("initech"), 0)
        assert.isTrue((yield* partitions.ensureTenant("initech")).cached)
        yield* partitions.withTenant("initech", insert("initech", utc(2026, 1)))
        assert.strictEqual(yield* count("initech"), 1)
      })))

    it.effect("concurrent first writes of the same and other tenants, from separate processes' caches", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { catalog, count, insert, layout } = yield* setup("w3")
        const services = yield* Effect.all(Array.from({ length: 6 }, () => TenantPartitions.make(layout)))
        yield* Effect.all(
          services.flatMap((service, i) => [
            service.withTenant("shared", insert("shared", utc(2026, 1))),
            service.withTenant(`t${i % 3}`, insert(`t${i % 3}`, utc(2026, 1)))
          ]),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(yield* count("shared"), 6)
        assert.deepStrictEqual(Object.keys(yield* catalog), ["events_shared_t", "events_t0_t", "events_t1_t", "events_t2_t"])
      })))
  })

  describe("hostile tenant ids", () => {
    it.effect("quotes, SQL, 200 characters, unicode and emoji get safe distinct names; the table still works", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { catalog, count, insert, partitions, sql } = yield* setup("h1")
        const ids = [
          "a'b",
          "x\"; DROP TABLE h1.canary; --",
          "'); DROP TABLE h1.canary; --",
          "$fn$; DROP TABLE h1.canary; $fn$",
          "z".repeat(200),
          "é".repeat(200),
          "租户-é",
          "🦄🚀",
          "Acme",
          "acme",
          "a b",
          "a\\b",
          "a%Ib%L"
        ]
        const names: Array<string> = []
        for (const id of ids) {
          const result = yield* partitions.ensureTenant(id)
          names.push(result.partition)
          yield* partitions.withTenant(id, insert(id, utc(2026, 1)))
          assert.strictEqual(yield* count(id), 1, id)
          // the row sits in that tenant's month partition
          const where = yield* sql<{ part: string }>`
            SELECT tableoid::regclass::text AS part FROM h1.events WHERE tenant_id = ${id}`
          assert.strictEqual(where[0]!.part, `h1.${result.partition}_p202601`)
        }
        assert.strictEqual(new Set(names).size, ids.length)
        for (const name of names) {
          assert.match(name, /^[a-z0-9_]+$/)
          assert.isAtMost(Buffer.byteLength(`${name}_p202601`), 63)
        }
        assert.strictEqual(names[names.indexOf("events_acme_t")], "events_acme_t")
        const found = yield* catalog
        assert.strictEqual(Object.keys(found).length, ids.length)
        // the canary is intact, nothing was dropped
        const canary = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM h1.canary`
        assert.strictEqual(canary[0]!.n, 1)
        // status reports the exact tenant ids, taken from the catalog
        const status = yield* partitions.status
        assert.deepStrictEqual(status.map((tenant) => tenant.tenantId).sort(), [...ids].sort())
      })))

    it.effect("empty, over-long and unrepresentable ids fail with a typed error and reach no SQL", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { catalog, partitions } = yield* setup("h2")
        const empty = yield* Effect.flip(partitions.ensureTenant(""))
        assert.strictEqual(empty._tag, "TenantPartitionError")
        assert.strictEqual(empty.reason, "EmptyTenantId")
        const long = yield* Effect.flip(partitions.withTenant("x".repeat(1001), Effect.void))
        assert.strictEqual(long.reason, "TenantIdTooLong")
        assert.isAtMost(long.tenantId!.length, 80)
        // 1000 is the limit, in characters (code points) not bytes
        assert.isFalse((yield* partitions.ensureTenant("🦄".repeat(1000))).cached)
        assert.strictEqual((yield* Effect.flip(partitions.ensureTenant("a\u0000b"))).reason, "InvalidTenantId")
        assert.strictEqual((yield* Effect.flip(partitions.ensureTenant("a\uD800b"))).reason, "InvalidTenantId")
        assert.strictEqual(Object.keys(yield* catalog).length, 1)
      })))

    it.effect("a derived name taken by another tenant or by another table is a NameCollision, not a mix-up", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { count, insert, partitions, sql } = yield* setup("h3")
        // "Acme" hashes to events_acme_<hash>_t; the simple id acme_<hash> derives the same name
        const hashed = yield* partitions.partitionName("Acme")
        const squatter = hashed.slice("events_".length, -"_t".length)
        assert.match(squatter, /^acme_[0-9a-f]{8}$/)
        yield* partitions.withTenant(squatter, insert(squatter, utc(2026, 1)))
        const collision = yield* Effect.flip(partitions.withTenant("Acme", insert("Acme", utc(2026, 1))))
        assert.strictEqual(collision.reason, "NameCollision")
        assert.strictEqual(yield* count("Acme"), 0)
        assert.strictEqual(yield* count(squatter), 1)

        yield* sql`CREATE TABLE h3.events_squat_t (x int)`
        assert.strictEqual((yield* Effect.flip(partitions.ensureTenant("squat"))).reason, "NameCollision")
      })))
  })

  describe("maintenance", () => {
    it.effect("per-tenant retention under TestClock drops exactly the expired months, never the current one", () =>
      withTestClock(Effect.gen(function*() {
        const { catalog, count, insert, partitions } = yield* setup("r1")
        // January to June 2026, one row per tenant per month, a sweep each month
        for (let month = 1; month <= 6; month++) {
          yield* TestClock.setTime(utc(2026, month))
          if (month === 1) {
            yield* partitions.ensureTenant("a", { monthsAhead: 0 })
            yield* partitions.ensureTenant("b", { monthsAhead: 0 })
          }
          yield* partitions.sweep({ monthsAhead: 0 })
          yield* insert("a", utc(2026, month))
          yield* insert("b", utc(2026, month))
        }
        const months = (t: string, from: number, to: number) =>
          Array.from({ length: to - from + 1 }, (_, i) => `events_${t}_t_p2026${String(from + i).padStart(2, "0")}`)
        assert.deepStrictEqual(yield* catalog, { events_a_t: months("a", 1, 6), events_b_t: months("b", 1, 6) })

        // June 15th, keep 2 full months before June for tenant a: cutoff 2026-04-01
        const droppedA = yield* partitions.applyRetention({ tenantId: "a", retentionMonths: 2 })
        assert.deepStrictEqual(droppedA, [
          { tenantId: "a", partition: "events_a_t_p202601", month: "2026-01" },
          { tenantId: "a", partition: "events_a_t_p202602", month: "2026-02" },
          { tenantId: "a", partition: "events_a_t_p202603", month: "2026-03" }
        ])
        assert.deepStrictEqual(yield* catalog, { events_a_t: months("a", 4, 6), events_b_t: months("b", 1, 6) })
        assert.strictEqual(yield* count("a"), 3)
        assert.strictEqual(yield* count("b"), 6)
        // idempotent
        assert.deepStrictEqual(yield* partitions.applyRetention({ tenantId: "a", retentionMonths: 2 }), [])
        // an unknown tenant has nothing to drop
        assert.deepStrictEqual(yield* partitions.applyRetention({ tenantId: "nobody", retentionMonths: 0 }), [])

        // a month later, retention 0 for everyone: only July survives
        yield* TestClock.setTime(utc(2026, 7, 1))
        yield* partitions.sweep({ monthsAhead: 0 })
        const droppedAll = yield* partitions.applyRetention({ retentionMonths: 0 })
        assert.deepStrictEqual(droppedAll.map((d) => d.partition), [...months("a", 4, 6), ...months("b", 1, 6)])
        assert.deepStrictEqual(yield* catalog, { events_a_t: months("a", 7, 7), events_b_t: months("b", 7, 7) })
        yield* insert("a", utc(2026, 7, 1))
        assert.strictEqual(yield* count("a"), 1)
        assert.strictEqual(yield* count("b"), 0)

        const invalid = yield* Effect.flip(partitions.applyRetention({ retentionMonths: -1 }))
        assert.strictEqual(invalid.reason, "InvalidOption")
      })))

    it.effect("sweep ensures months for every tenant in the catalog, including those another process created", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { catalog, insert, layout, partitions, sql } = yield* setup("s1")
        const other = yield* TenantPartitions.make(layout)
        yield* partitions.ensureTenant("a", { monthsAhead: 0 })
        yield* other.ensureTenant("b", { monthsAhead: 0 })
        yield* other.ensureTenant("租户", { monthsAhead: 0 })
        const hostile = yield* partitions.partitionName("租户")

        yield* TestClock.setTime(utc(2026, 3))
        const swept = yield* partitions.sweep({ monthsAhead: 1 })
        assert.strictEqual(swept.tenants, 3)
        assert.deepStrictEqual(swept.failed, [])
        assert.deepStrictEqual([...swept.created].sort(), [
          "events_a_t_p202603",
          "events_a_t_p202604",
          "events_b_t_p202603",
          "events_b_t_p202604",
          `${hostile}_p202603`,
          `${hostile}_p202604`
        ].sort())
        assert.deepStrictEqual((yield* partitions.sweep({ monthsAhead: 1 })).created, [])
        const found = yield* catalog
        assert.deepStrictEqual(found["events_b_t"], ["events_b_t_p202601", "events_b_t_p202603", "events_b_t_p202604"])

        // status: tenants, months, rows and bytes
        yield* insert("b", utc(2026, 3))
        yield* insert("b", utc(2026, 4))
        yield* insert("b", utc(2026, 4, 20))
        const status = yield* partitions.status
        const b = status.find((tenant) => tenant.tenantId === "b")!
        assert.strictEqual(b.partition, "events_b_t")
        assert.deepStrictEqual(b.months.map((m) => [m.month, m.rows]), [["2026-01", 0], ["2026-03", 1], ["2026-04", 2]])
        assert.strictEqual(b.rows, 3)
        assert.isAbove(b.bytes, 0)
        assert.deepStrictEqual(status.map((tenant) => tenant.tenantId).sort(), ["a", "b", "租户"].sort())

        // one tenant failing does not stop the sweep for the others: a table squats b's May name
        yield* sql`CREATE TABLE s1.events_b_t_p202605 (x int)`
        const partial = yield* partitions.sweep({ monthsAhead: 2 })
        assert.deepStrictEqual([...partial.created].sort(), ["events_a_t_p202605", `${hostile}_p202605`].sort())
        assert.deepStrictEqual(partial.failed.map((f) => [f.partition, f.error.reason]), [["events_b_t", "NameCollision"]])
      })))

    it.effect("a query filtered by tenant and time touches only the matching leaf partition (EXPLAIN)", () =>
      withTestClock(Effect.gen(function*() {
        yield* TestClock.setTime(utc(2026, 1))
        const { insert, partitions, sql } = yield* setup("e1")
        const tenants = ["a", "b", "x\"; DROP TABLE e1.canary; --"]
        for (const tenant of tenants) {
          yield* partitions.ensureTenant(tenant, { monthsAhead: 2 })
          for (const month of [1, 2, 3]) yield* insert(tenant, utc(2026, month))
        }
        const explain = (tenant: string, from: string, to: string) =>
          Effect.map(
            sql<{ "QUERY PLAN": unknown }>`
              EXPLAIN (FORMAT JSON)
              SELECT * FROM e1.events
               WHERE tenant_id = ${tenant} AND created_at >= ${from}::timestamptz AND created_at < ${to}::timestamptz`,
            (rows) => {
              const plan = rows[0]!["QUERY PLAN"]
              return relationNames(typeof plan === "string" ? JSON.parse(plan) : plan)
            }
          )
        assert.deepStrictEqual(yield* explain("b", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"), [
          "events_b_t_p202602"
        ])
        const hostile = yield* partitions.partitionName(tenants[2]!)
        assert.deepStrictEqual(yield* explain(tenants[2]!, "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"), [
          `${hostile}_p202603`
        ])
        // tenant only: that tenant's three months, nobody else's
        const byTenant = yield* Effect.map(
          sql<{ "QUERY PLAN": unknown }>`EXPLAIN (FORMAT JSON) SELECT * FROM e1.events WHERE tenant_id = ${"a"}`,
          (rows) => {
            const plan = rows[0]!["QUERY PLAN"]
            return relationNames(typeof plan === "string" ? JSON.parse(plan) : plan).sort()
          }
        )
        assert.deepStrictEqual(byTenant, ["events_a_t_p202601", "events_a_t_p202602", "events_a_t_p202603"])
        // and the rows are really there
        const rows = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM e1.events
           WHERE tenant_id = ${"b"} AND created_at >= '2026-02-01Z' AND created_at < '2026-03-01Z'`
        assert.strictEqual(rows[0]!.n, 1)
      })))
  })

  describe("layout", () => {
    it.effect("refuses bad identifiers and a parent that is not LIST-partitioned on the tenant column", () =>
      withTestClock(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const badTable = yield* Effect.flip(
          TenantPartitions.make({ table: "events; DROP TABLE x", tenantColumn: "tenant_id", timeColumn: "t" })
        )
        assert.strictEqual(badTable._tag, "InvalidIdentifier")
        const badColumn = yield* Effect.flip(
          TenantPartitions.make({ table: "events", tenantColumn: "Tenant\"", timeColumn: "t" })
        )
        assert.strictEqual(badColumn._tag, "InvalidIdentifier")
        const missing = yield* Effect.flip(
          TenantPartitions.make({ table: "nowhere", tenantColumn: "tenant_id", timeColumn: "created_at" })
        )
        assert.strictEqual(missing._tag === "TenantPartitionError" && missing.reason, "LayoutMismatch")

        yield* sql`CREATE TABLE l1_range (tenant_id text, created_at timestamptz) PARTITION BY RANGE (created_at)`
        const range = yield* Effect.flip(
          TenantPartitions.make({ table: "l1_range", tenantColumn: "tenant_id", timeColumn: "created_at" })
        )
        assert.strictEqual(range._tag === "TenantPartitionError" && range.reason, "LayoutMismatch")
        yield* sql`CREATE TABLE l1_text (tenant_id text, created_at text) PARTITION BY LIST (tenant_id)`
        const text = yield* Effect.flip(
          TenantPartitions.make({ table: "l1_text", tenantColumn: "tenant_id", timeColumn: "created_at" })
        )
        assert.strictEqual(text._tag === "TenantPartitionError" && text.reason, "LayoutMismatch")
        const longPrefix = yield* Effect.flip(
          TenantPartitions.make({
            table: "l1_text",
            tenantColumn: "tenant_id",
            timeColumn: "created_at",
            partitionPrefix: "p".repeat(46)
          })
        )
        assert.strictEqual(longPrefix._tag === "TenantPartitionError" && longPrefix.reason, "LayoutMismatch")

        // an unqualified table in the current schema, with a date column, works too
        yield* TestClock.setTime(utc(2026, 12))
        yield* sql`CREATE TABLE l1_days (tenant_id text NOT NULL, day date NOT NULL) PARTITION BY LIST (tenant_id)`
        const days = yield* TenantPartitions.make({ table: "l1_days", tenantColumn: "tenant_id", timeColumn: "day" })
        assert.deepStrictEqual((yield* days.ensureTenant("acme")).created, [
          "l1_days_acme_t",
          "l1_days_acme_t_p202612",
          "l1_days_acme_t_p202701"
        ])
        yield* days.withTenant("acme", sql`INSERT INTO l1_days VALUES (${"acme"}, '2027-01-31')`)
        const ahead = yield* Effect.flip(days.ensureTenant("acme", { monthsAhead: -1 }))
        assert.strictEqual(ahead.reason, "InvalidOption")
      })))
  })
})
