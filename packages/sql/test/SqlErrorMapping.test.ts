import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as SqlError from "effect/sql/SqlError"
import { fromSql, mapSql } from "../src/internal/sqlError.ts"

class ModuleError extends Schema.TaggedError<ModuleError>()("ModuleError", {
  operation: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  cause: Schema.optional(Schema.Unknown)
}) {}

class Other extends Schema.TaggedError<Other>()("Other", {}) {}

const toModule = fromSql((fields) => new ModuleError(fields))

const syntax = (message?: string) =>
  new SqlError.SqlError({
    reason: new SqlError.SqlSyntaxError({
      cause: Object.assign(new Error("relation \"nope\" does not exist"), { code: "42P01" }),
      ...(message === undefined ? {} : { message })
    })
  })

describe("internal/sqlError", () => {
  it("builds `<operation>: <reason tag>: <driver message>`, keeps retryable and the cause", () => {
    const error = syntax("PgConnection: Query failed")
    const mapped = toModule("claim")(error)
    assert.strictEqual(mapped.operation, "claim")
    assert.strictEqual(mapped.message, "claim: SqlSyntaxError: PgConnection: Query failed")
    assert.isFalse(mapped.retryable)
    assert.strictEqual(mapped.cause, error)
  })

  it("leaves out the text when the driver has none", () => {
    assert.strictEqual(toModule("claim")(syntax()).message, "claim: SqlSyntaxError")
  })

  it("detail: server uses PostgreSQL's own message", () => {
    const server = fromSql((fields) => new ModuleError(fields), { detail: "server" })
    assert.strictEqual(
      server("seal")(syntax("PgConnection: Query failed")).message,
      "seal: SqlSyntaxError: relation \"nope\" does not exist"
    )
  })

  it.effect("mapSql refails SqlError and leaves other errors alone", () =>
    Effect.gen(function*() {
      const map = mapSql((fields) => new ModuleError(fields))("get")
      const refailed = yield* Effect.flip(map(Effect.fail(syntax("x"))))
      assert.strictEqual(refailed._tag, "ModuleError")
      const other: Other | ModuleError = yield* Effect.flip(map(Effect.fail(new Other())))
      assert.strictEqual(other._tag, "Other")
    }))
})
