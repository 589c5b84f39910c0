import { assert, describe, layer } from "@effect/vitest"
import { Inbox } from "@outbox/core/Inbox"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

const InboxLive = PgInbox.layer.pipe(
  Layer.provideMerge(OutboxMigrations.layer),
  Layer.provideMerge(TestDatabase.layer),
  Layer.orDie
)

layer(InboxLive, { timeout: "60 seconds" })("PgInbox", (it) => {
  describe("idempotent consumers", () => {
    it.effect("process runs the effect once per (consumer, tracking id), in one transaction with the key", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE charges (tracking_id text NOT NULL)`
        const charge = (id: string) => sql`INSERT INTO charges (tracking_id) VALUES (${id})`

        const first = yield* inbox.process("billing", "t-1", Effect.as(charge("t-1"), "charged"))
        assert.deepStrictEqual(first, { _tag: "Processed", value: "charged" })
        const again = yield* inbox.process("billing", "t-1", Effect.as(charge("t-1"), "charged"))
        assert.deepStrictEqual(again, { _tag: "Duplicate" })
        // another consumer of the same event is independent
        assert.strictEqual((yield* inbox.process("shipping", "t-1", Effect.void))._tag, "Processed")

        assert.isTrue(yield* inbox.isProcessed("billing", "t-1"))
        assert.isFalse(yield* inbox.isProcessed("billing", "t-2"))
        const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM charges`
        assert.strictEqual(rows[0]!.n, 1)
      }))

    it.effect("a failing consumer records nothing and its writes roll back; the redelivery runs it again", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE emails (tracking_id text NOT NULL)`
        const failing = Effect.andThen(sql`INSERT INTO emails (tracking_id) VALUES ('t-9')`, Effect.fail("smtp down" as const))
        const error = yield* Effect.flip(inbox.process("mailer", "t-9", failing))
        assert.strictEqual(error, "smtp down")
        assert.isFalse(yield* inbox.isProcessed("mailer", "t-9"))
        const none = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM emails`
        assert.strictEqual(none[0]!.n, 0)

        const ok = yield* inbox.process("mailer", "t-9", sql`INSERT INTO emails (tracking_id) VALUES ('t-9')`)
        assert.strictEqual(ok._tag, "Processed")
        const one = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM emails`
        assert.strictEqual(one[0]!.n, 1)
      }))

    it.effect("concurrent redeliveries of one event run the consumer once", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        let runs = 0
        const results = yield* Effect.all(
          Array.from({ length: 8 }, () => inbox.process("audit", "t-42", Effect.sync(() => runs++))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(runs, 1)
        assert.strictEqual(results.filter((r) => r._tag === "Processed").length, 1)
        assert.strictEqual(results.filter((r) => r._tag === "Duplicate").length, 7)
      }))

    it.effect("markProcessed reports whether the id was new", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        assert.isTrue(yield* inbox.markProcessed("c", "x"))
        assert.isFalse(yield* inbox.markProcessed("c", "x"))
      }))
  })
})
