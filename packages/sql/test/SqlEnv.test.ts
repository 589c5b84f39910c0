import { assert, describe, it } from "@effect/vitest"
import * as OutboxTables from "@outbox/sql/OutboxTables"
import * as SqlEnv from "@outbox/sql/SqlEnv"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"

const env = (values: Record<string, string>) => ConfigProvider.fromUnknown(values)

describe("SqlEnv", () => {
  it.effect("tables: the names of OUTBOX_TABLE's objects, the defaults when unset", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* SqlEnv.tables.parse(env({})), OutboxTables.defaults)
      const tables = yield* SqlEnv.tables.parse(env({ OUTBOX_TABLE: "outbox_partitioned" }))
      assert.deepStrictEqual(tables, yield* OutboxTables.make("outbox_partitioned"))
      assert.strictEqual(tables.claimableIndex, "outbox_partitioned_claimable_idx")
      assert.strictEqual(tables.inbox, "outbox_inbox")
    }))

  it.effect("tables: a name that is not a plain identifier fails with a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(SqlEnv.tables.parse(env({ OUTBOX_TABLE: "Outbox; DROP TABLE x" })))
      assert.strictEqual(error._tag, "ConfigError")
      assert.include(error.message, "OUTBOX_TABLE")
      // its derived index names would pass PostgreSQL's 63-byte limit
      const long = yield* Effect.flip(SqlEnv.tables.parse(env({ OUTBOX_TABLE: "o".repeat(50) })))
      assert.include(long.message, "63-byte")
    }))

  it.effect("store: the table (and its names), the online migration and the start-up migrations", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* SqlEnv.store.parse(env({})), {
        table: "outbox",
        tables: OutboxTables.defaults,
        legacy: undefined,
        runMigrations: true,
        completed: "keep",
        claimHorizon: true,
        settleCommit: "asynchronous"
      })
      assert.deepStrictEqual(
        yield* SqlEnv.store.parse(env({
          OUTBOX_TABLE: "outbox_partitioned",
          OUTBOX_MIGRATION_LEGACY_TABLE: "outbox",
          OUTBOX_MIGRATION_DUAL_WRITE: "true",
          OUTBOX_RUN_MIGRATIONS: "false",
          OUTBOX_COMPLETED: "delete",
          OUTBOX_CLAIM_HORIZON: "false",
          OUTBOX_SETTLE_COMMIT: "synchronous"
        })),
        {
          table: "outbox_partitioned",
          tables: yield* OutboxTables.make("outbox_partitioned"),
          legacy: { table: "outbox", dualWrite: true },
          runMigrations: false,
          completed: "delete",
          claimHorizon: false,
          settleCommit: "synchronous"
        }
      )
      const badCompleted = yield* Effect.flip(SqlEnv.store.parse(env({ OUTBOX_COMPLETED: "archive" })))
      assert.include(badCompleted.message, "OUTBOX_COMPLETED")
      const badSettle = yield* Effect.flip(SqlEnv.store.parse(env({ OUTBOX_SETTLE_COMMIT: "off" })))
      assert.include(badSettle.message, "OUTBOX_SETTLE_COMMIT")
      // the audit trail needs completed rows kept: refused at start, naming both
      const audited = yield* Effect.flip(SqlEnv.store.parse(env({ OUTBOX_COMPLETED: "delete", ENABLE_AUDIT: "true" })))
      assert.strictEqual(audited._tag, "ConfigError")
      assert.include(audited.message, "OUTBOX_COMPLETED=delete")
      assert.include(audited.message, "ENABLE_AUDIT=true")
      const bad = yield* Effect.flip(SqlEnv.audit.parse(env({ ENABLE_AUDIT: "maybe" })))
      assert.include(bad.message, "ENABLE_AUDIT")
    }))

  it("variables lists each variable once", () => {
    const names = SqlEnv.variables.map((v) => v.name)
    assert.deepStrictEqual([...names].sort(), [
      "ENABLE_AUDIT",
      "OUTBOX_CLAIM_HORIZON",
      "OUTBOX_COMPLETED",
      "OUTBOX_MIGRATION_DUAL_WRITE",
      "OUTBOX_MIGRATION_LEGACY_TABLE",
      "OUTBOX_RUN_MIGRATIONS",
      "OUTBOX_SETTLE_COMMIT",
      "OUTBOX_TABLE"
    ])
  })
})
