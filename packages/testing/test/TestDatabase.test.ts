import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import * as TestDatabase from "../src/TestDatabase.ts"

/** Runs a query on a single connection to `url`, closed afterwards. */
const queryAt = <A extends object>(url: string, query: (sql: PgClient.PgClient) => Effect.Effect<ReadonlyArray<A>, unknown>) =>
  PgClient.makeClient({ url: Redacted.make(url) }).pipe(
    Effect.flatMap(query),
    Effect.scoped,
    Effect.provide(Reactivity.layer)
  )

/** Asks the server's admin database (not the test database) whether `name` exists. */
const databaseExists = (name: string) =>
  Effect.scoped(Effect.gen(function*() {
    const server = yield* TestDatabase.resolveServerUrl
    const rows = yield* queryAt(server, (sql) =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_database WHERE datname = ${name}`)
    return rows[0]!.n === 1
  }))

const tableExists = (sql: SqlClient.SqlClient, table: string) =>
  sql<{ t: string | null }>`SELECT to_regclass(${table})::text AS t`.pipe(Effect.map((rows) => rows[0]!.t !== null))

describe("TestDatabase", () => {
  it.effect("the workers see DATABASE_URL (set by the user or by the global setup)", () =>
    Effect.sync(() => {
      const url = process.env.DATABASE_URL
      assert.isString(url)
      assert.match(url!, /^postgres(ql)?:\/\//)
    }))

  it.effect("two layers get two different fresh databases", () =>
    Effect.gen(function*() {
      const a = yield* Layer.build(TestDatabase.layer)
      const b = yield* Layer.build(TestDatabase.layer)
      const dbA = Context.get(a, TestDatabase.TestDatabase)
      const dbB = Context.get(b, TestDatabase.TestDatabase)
      assert.match(dbA.name, /^outbox_test_[0-9a-f]{12}$/)
      assert.match(dbB.name, /^outbox_test_[0-9a-f]{12}$/)
      assert.notStrictEqual(dbA.name, dbB.name)

      const sqlA = Context.get(a, SqlClient.SqlClient)
      const sqlB = Context.get(b, SqlClient.SqlClient)
      const [currentA] = yield* sqlA<{ db: string }>`SELECT current_database() AS db`
      const [currentB] = yield* sqlB<{ db: string }>`SELECT current_database() AS db`
      assert.strictEqual(currentA!.db, dbA.name)
      assert.strictEqual(currentB!.db, dbB.name)
    }))

  it.effect("a table created in one database is absent from the other", () =>
    Effect.gen(function*() {
      const sqlA = Context.get(yield* Layer.build(TestDatabase.layer), SqlClient.SqlClient)
      const sqlB = Context.get(yield* Layer.build(TestDatabase.layer), SqlClient.SqlClient)
      yield* sqlA`CREATE TABLE only_in_a (id int PRIMARY KEY)`
      yield* sqlA`INSERT INTO only_in_a VALUES (1)`
      assert.isTrue(yield* tableExists(sqlA, "only_in_a"))
      assert.isFalse(yield* tableExists(sqlB, "only_in_a"))
    }))

  it.effect("the database is dropped when the layer's scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(TestDatabase.layer, scope)
      const { name } = Context.get(context, TestDatabase.TestDatabase)
      // an open pool connection must not prevent the drop (WITH (FORCE))
      yield* Context.get(context, SqlClient.SqlClient)`SELECT 1`
      assert.isTrue(yield* databaseExists(name))
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(yield* databaseExists(name))
    }))

  it.effect("extensionAvailable asks the server's pg_available_extensions", () =>
    Effect.gen(function*() {
      assert.isTrue(yield* TestDatabase.extensionAvailable("plpgsql"))
      assert.isFalse(yield* TestDatabase.extensionAvailable("no_such_extension"))
    }))

  // CI runs on DATABASE_URL: this is where the embedded server is started there too
  it.live("an embedded server lets a role created without a password log in (trust on loopback)", () =>
    Effect.gen(function*() {
      const server = yield* TestDatabase.embedded
      yield* queryAt(server, (sql) => sql`CREATE ROLE embedded_probe LOGIN`)
      const url = new URL(server)
      url.username = "embedded_probe"
      url.password = ""
      const rows = yield* queryAt(url.toString(), (sql) => sql<{ user: string }>`SELECT current_user AS user`)
      assert.strictEqual(rows[0]!.user, "embedded_probe")
    }), { timeout: 60_000 })

  it.live("embeddedServer restarts (fast, then immediate: a crash) on the same port; committed rows survive, open sessions end", () =>
    Effect.gen(function*() {
      const server = yield* TestDatabase.embeddedServer
      yield* queryAt(server.url, (sql) => sql`CREATE TABLE survivor (n int)`)
      yield* queryAt(server.url, (sql) => sql`INSERT INTO survivor VALUES (1)`)
      // a session open across a restart is ended by it
      const session = yield* PgClient.makeClient({ url: Redacted.make(server.url) }).pipe(Effect.provide(Reactivity.layer))
      yield* session`SELECT 1`
      yield* server.restart({ downFor: "200 millis" })
      const ended = yield* Effect.flip(session`SELECT 1`)
      assert.strictEqual(ended._tag, "SqlError")
      yield* queryAt(server.url, (sql) => sql`INSERT INTO survivor VALUES (2)`)
      yield* server.restart({ mode: "immediate" })
      const rows = yield* queryAt(server.url, (sql) => sql<{ n: number }>`SELECT n FROM survivor ORDER BY n`)
      assert.deepStrictEqual(rows.map((r) => r.n), [1, 2])
    }).pipe(Effect.scoped), { timeout: 60_000 })
})

layer(TestDatabase.layer)("TestDatabase.layer shared by a describe block", (it) => {
  it.effect("SqlClient and PgClient are the same client, connected to TestDatabase.name", () =>
    Effect.gen(function*() {
      const { name } = yield* TestDatabase.TestDatabase
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgClient.PgClient
      const [viaSql] = yield* sql<{ db: string }>`SELECT current_database() AS db`
      const [viaPg] = yield* pg<{ db: string }>`SELECT current_database() AS db`
      assert.strictEqual(viaSql!.db, name)
      assert.strictEqual(viaPg!.db, name)
    }))

  it.effect("TestDatabase.url connects another client (e.g. a child process) to the same database", () =>
    Effect.gen(function*() {
      const { name, url } = yield* TestDatabase.TestDatabase
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE seen_by_url (id int)`
      const rows = yield* queryAt(url, (other) =>
        other<{ db: string; t: string | null }>`SELECT current_database() AS db, to_regclass('seen_by_url')::text AS t`)
      assert.strictEqual(rows[0]!.db, name)
      assert.strictEqual(rows[0]!.t, "seen_by_url")
    }))
})
