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

  it("retryable: the driver's view, plus the server shutting down, starting up or out of connections", () => {
    const unknown = (code: string) =>
      new SqlError.SqlError({
        reason: new SqlError.UnknownError({ cause: Object.assign(new Error(`server error ${code}`), { code }) })
      })
    // the driver calls these UnknownError (not retryable); a new connection after a wait may succeed
    for (const code of ["57P01", "57P02", "57P03", "53300"]) {
      assert.isFalse(unknown(code).reason.isRetryable, code)
      assert.isTrue(toModule("claim")(unknown(code)).retryable, code)
    }
    // anything else of UnknownError stays permanent: a disk full, a bad configuration
    for (const code of ["53100", "XX000", "0A000"]) assert.isFalse(toModule("claim")(unknown(code)).retryable, code)
    // the driver's retryable reasons stay retryable, its permanent ones permanent
    const connection = new SqlError.SqlError({ reason: new SqlError.ConnectionError({ cause: new Error("connect ECONNREFUSED") }) })
    assert.isTrue(toModule("claim")(connection).retryable)
    const auth = new SqlError.SqlError({
      reason: new SqlError.AuthenticationError({ cause: Object.assign(new Error("password authentication failed"), { code: "28P01" }) })
    })
    assert.isFalse(toModule("claim")(auth).retryable)
    assert.isFalse(toModule("claim")(syntax()).retryable)
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
