import { assert, layer } from "@effect/vitest"
import * as LegacyOutbox from "@outbox/testing/LegacyOutbox"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox } from "./fixtures/cli.ts"

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox migrate-online", (it) => {
  it.effect("status, prepare, backfill, switch-over and finish, each refusing out of order with exit code 1", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* LegacyOutbox.create("outbox")
      yield* LegacyOutbox.insert({ n: 250, days: 2 })

      const fresh = yield* outbox(["migrate-online", "status", "--json"])
      assert.strictEqual(fresh.code, 0, fresh.stderr)
      assert.strictEqual(JSON.parse(fresh.stdout).phase, "not-prepared")
      const early = yield* outbox(["migrate-online", "backfill"])
      assert.strictEqual(early.code, 1)
      assert.include(early.stderr, "run prepare first")

      const prepared = yield* outbox(["migrate-online", "prepare"])
      assert.strictEqual(prepared.code, 0, prepared.stderr)
      assert.include(prepared.stdout, "outbox_partitioned ready beside outbox")
      const tooSoon = yield* outbox(["migrate-online", "finish"])
      assert.strictEqual(tooSoon.code, 1)
      assert.include(tooSoon.stderr, "run switch-over first")

      const filled = yield* outbox(["migrate-online", "backfill", "--batch-size", "100", "--json"])
      assert.strictEqual(filled.code, 0, filled.stderr)
      assert.deepStrictEqual(JSON.parse(filled.stdout), { batches: 3, copied: 250, remaining: 0 })

      const status = yield* outbox(["migrate-online", "status"])
      assert.include(status.stdout, "outbox -> outbox_partitioned: prepared")
      assert.include(status.stdout, "copies: 250, legacy rows without a copy: 0")

      assert.strictEqual((yield* outbox(["migrate-online", "switch-over"])).code, 0)
      const finished = yield* outbox(["migrate-online", "finish"])
      assert.strictEqual(finished.code, 0, finished.stderr)
      assert.include(finished.stdout, "renamed outbox_partitioned -> outbox")
      const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox`
      assert.strictEqual(row!.n, 250)
      assert.include((yield* outbox(["migrate-online", "status"])).stdout, "finished")
      // the library's schema is now in place under its own names
      assert.strictEqual((yield* outbox(["partitions", "status"])).code, 0)
    }), 120_000)
})
