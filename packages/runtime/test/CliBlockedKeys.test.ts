import { assert, layer } from "@effect/vitest"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox } from "./fixtures/cli.ts"

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** One event of the key `Order:<key>`, in the state given; its id. */
const insert = (key: string, state: "due" | "backoff" | "scheduled" | "dead", error: string | null = null) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ id: bigint }>`
        INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, retry_count, last_error, available_at, processed_at)
        VALUES ('Order', ${key}, 'OrderChanged', '{}',
                ${state === "backoff" ? "FAILED" : state === "dead" ? "DEAD_LETTER" : "PENDING"},
                ${state === "backoff" ? 2 : state === "dead" ? 5 : 0}, ${error},
                CASE WHEN ${state} IN ('backoff', 'scheduled') THEN now() + interval '1 hour' END,
                CASE WHEN ${state} = 'dead' THEN now() END)
        RETURNING id`,
      (rows) => rows[0]!.id
    ))

interface Listed {
  readonly ordering: { readonly deadLetter: string } | null
  readonly hold: boolean
  readonly counts: { readonly backoff: number; readonly scheduled: number; readonly deadLetterHeld: number }
  readonly keys: ReadonlyArray<{ readonly key: string; readonly reason: string; readonly headId: string; readonly queuedBehind: number }>
}

const ordered = { OUTBOX_ORDERING: "key", OUTBOX_ORDERING_DEAD_LETTER: "hold" }

layer(Live, { timeout: "180 seconds", excludeTestServices: true })("npx outbox keys blocked", (it) => {
  it.effect("lists the blocked keys with the head's id, age, last error and what waits; --hold adds the held ones; health judges them", () =>
    Effect.gen(function*() {
      const a = yield* insert("a", "backoff", "HTTP 503 from billing")
      yield* insert("a", "due")
      yield* insert("a", "due")
      const c = yield* insert("c", "scheduled")
      yield* insert("c", "due")
      const f = yield* insert("f", "dead", "poison: schema mismatch")
      yield* insert("f", "due")
      yield* insert("d", "due")

      const text = yield* outbox(["keys", "blocked"])
      assert.strictEqual(text.code, 0, text.stderr)
      const lines = text.stdout.split("\n")
      assert.match(lines[0]!, /^key\s+reason\s+head\s+status\s+retries\s+head age\s+until\s+behind\s+last error$/)
      assert.match(lines[2]!, new RegExp(`^Order:a\\s+backoff\\s+${a}\\s+FAILED\\s+2/5\\s+\\d+s\\s+\\S+Z\\s+2\\s+HTTP 503 from billing$`))
      assert.match(lines[3]!, new RegExp(`^Order:c\\s+scheduled\\s+${c}\\s+PENDING\\s+0/5\\s+\\d+s\\s+\\S+Z\\s+1\\s+-$`))
      assert.notInclude(text.stdout, "Order:f")
      assert.notInclude(text.stdout, "Order:d")
      assert.include(text.stdout, "2 blocked key(s): backoff 1, scheduled 1\n(keys held by a dead letter are listed with --hold)")
      assert.include(text.stdout, "note: OUTBOX_ORDERING is not key")

      const held = yield* outbox(["keys", "blocked", "--hold", "--json"])
      assert.strictEqual(held.code, 0, held.stderr)
      const parsed = JSON.parse(held.stdout) as Listed
      assert.isNull(parsed.ordering)
      assert.isTrue(parsed.hold)
      assert.deepStrictEqual([parsed.counts.backoff, parsed.counts.scheduled, parsed.counts.deadLetterHeld], [1, 1, 1])
      assert.deepStrictEqual(
        parsed.keys.map((k) => [k.key, k.reason, k.headId, k.queuedBehind]),
        [["Order:a", "backoff", String(a), 2], ["Order:c", "scheduled", String(c), 1], ["Order:f", "dead_letter_held", String(f), 1]]
      )

      // the relay's environment says hold: held keys without --hold, and no note
      const relayEnv = yield* outbox(["keys", "blocked", "--limit", "1"], ordered)
      assert.strictEqual(relayEnv.code, 0, relayEnv.stderr)
      assert.include(relayEnv.stdout, "3 blocked key(s): backoff 1, scheduled 1, dead_letter_held 1 (showing 1, the oldest heads first)")
      assert.notInclude(relayEnv.stdout, "Order:c")
      assert.notInclude(relayEnv.stdout, "note:")

      const refused = yield* outbox(["keys", "blocked", "--limit", "0"])
      assert.strictEqual(refused.code, 1)
      assert.include(refused.stderr, "InvalidBlockedKeysOptions")

      // health: under per-key ordering a key blocked by a failure for 10 minutes is a WARN finding, and listed
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE outbox SET created_at = created_at - interval '10 minutes' WHERE id = ${a}`
      const health = yield* outbox(["health"], ordered)
      assert.strictEqual(health.code, 1, health.stderr)
      assert.match(health.stdout, new RegExp(`WARN\\s+BlockedKeys\\s+Order:a\\s+.*on event ${a}`))
      assert.include(health.stdout, "blocked keys: 3 (backoff 1, scheduled 1, dead_letter_held 1), the oldest heads first:")
      const unordered = yield* outbox(["health", "--json"])
      const report = JSON.parse(unordered.stdout) as { findings: ReadonlyArray<{ name: string }>; blockedKeys: Listed }
      assert.isFalse(report.findings.some((f) => f.name === "BlockedKeys"))
      assert.isNull(report.blockedKeys.ordering)
      assert.deepStrictEqual(report.blockedKeys.keys, [])
    }), { timeout: 150_000 })
})
