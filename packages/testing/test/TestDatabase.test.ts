import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import * as TestDatabase from "../src/TestDatabase.ts"

/** Builds a TestDatabase layer in its own scope, so the test can close it. */
const open = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(TestDatabase.layer, scope)
  return { scope, context }
})

const databaseExists = (name: string) =>
  Effect.scoped(Effect.gen(function*() {
    const admin = yield* Layer.build(TestDatabase.layer)
    const sql = Context.get(admin, SqlClient.SqlClient)
    const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_database WHERE datname = ${name}`
    return rows[0]!.n === 1
  }))

describe("TestDatabase", () => {
  it.live("each layer gets its own fresh database, dropped when its scope closes", () =>
    Effect.gen(function*() {
      const a = yield* open
      const b = yield* open
      const dbA = Context.get(a.context, TestDatabase.TestDatabase)
      const dbB = Context.get(b.context, TestDatabase.TestDatabase)
      assert.notStrictEqual(dbA.name, dbB.name)
      assert.match(dbA.name, /^outbox_test_[0-9a-f]{12}$/)

      const sqlA = Context.get(a.context, SqlClient.SqlClient)
      const sqlB = Context.get(b.context, SqlClient.SqlClient)
      yield* sqlA`CREATE TABLE only_in_a (id int)`
      const inA = yield* sqlA<{ t: string | null }>`SELECT to_regclass('only_in_a')::text AS t`
      const inB = yield* sqlB<{ t: string | null }>`SELECT to_regclass('only_in_a')::text AS t`
      assert.strictEqual(inA[0]!.t, "only_in_a")
      assert.isNull(inB[0]!.t)
      const current = yield* sqlA<{ db: string }>`SELECT current_database() AS db`
      assert.strictEqual(current[0]!.db, dbA.name)

      assert.isTrue(yield* databaseExists(dbA.name))
      yield* Scope.close(a.scope, Exit.void)
      assert.isFalse(yield* databaseExists(dbA.name))
      assert.isTrue(yield* databaseExists(dbB.name))
      yield* Scope.close(b.scope, Exit.void)
      assert.isFalse(yield* databaseExists(dbB.name))
    }), { timeout: 60_000 })
})
