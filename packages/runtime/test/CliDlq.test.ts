import { assert, describe, layer } from "@effect/vitest"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { randomBytes } from "node:crypto"
import { outbox as run } from "./fixtures/cli.ts"

const outbox = (...args: Array<string>) => run(args)

const Live = OutboxMigrations.layer.pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

/** Dead letters of one aggregate type: ids in order. */
const seed = (aggregateType: string, rows: ReadonlyArray<{ eventType: string; error: string }>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const ids: Array<bigint> = []
    for (const [i, r] of rows.entries()) {
      const [row] = yield* sql<{ id: bigint }>`
        INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, status, retry_count, last_error, processed_at)
        VALUES (${aggregateType}, ${`a-${i}`}, ${r.eventType}, ${JSON.stringify({ order: i, note: "pay me" })}::jsonb,
                'DEAD_LETTER', 5, ${r.error}, now())
        RETURNING id`
      ids.push(row!.id)
    }
    return ids
  })

const statusOf = (ids: ReadonlyArray<bigint>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ status: string }>`SELECT status FROM outbox WHERE id = ANY(${`{${ids.join(",")}}`}::bigint[]) ORDER BY id`,
      (rows) => rows.map((r) => r.status)
    ))

const logCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_redrive_log`, (rows) => rows[0]!.n))

layer(Live, { timeout: "180 seconds", excludeTestServices: true })("npx outbox dlq", (it) => {
  describe("inspection", () => {
    it.effect("list and count show the dead letters with filters; show prints one in full; --json parses", () =>
      Effect.gen(function*() {
        const ids = yield* seed("Cli1", [
          { eventType: "OrderPaid", error: "HTTP 503 from billing" },
          { eventType: "OrderShipped", error: "certificate expired" },
          { eventType: "OrderPaid", error: "HTTP 503 again" }
        ])
        const listed = yield* outbox("dlq", "list", "--aggregate-type", "Cli1")
        assert.strictEqual(listed.code, 0, listed.stderr)
        for (const id of ids) assert.match(listed.stdout, new RegExp(`^${id}\\s`, "m"))
        assert.include(listed.stdout, "3 dead letter(s): OrderPaid 2, OrderShipped 1")

        const filtered = yield* outbox("dlq", "list", "--aggregate-type", "Cli1", "--error", "503", "--event-type", "OrderPaid", "--json")
        assert.strictEqual(filtered.code, 0, filtered.stderr)
        const parsed = JSON.parse(filtered.stdout) as { total: number; events: Array<{ id: string; lastError: string }> }
        assert.deepStrictEqual(parsed.events.map((e) => e.id), [String(ids[0]), String(ids[2])])
        assert.strictEqual(parsed.total, 2)

        const counted = yield* outbox("dlq", "count", "--aggregate-type", "Cli1", "--json")
        assert.deepStrictEqual(JSON.parse(counted.stdout), {
          total: 3,
          byEventType: [{ eventType: "OrderPaid", count: 2 }, { eventType: "OrderShipped", count: 1 }]
        })

        const shown = yield* outbox("dlq", "show", String(ids[1]))
        assert.strictEqual(shown.code, 0, shown.stderr)
        assert.match(shown.stdout, /status\s+DEAD_LETTER/)
        assert.match(shown.stdout, /last error\s+certificate expired/)
        assert.match(shown.stdout, /retries\s+5 of 5/)
        assert.include(shown.stdout, `"note": "pay me"`)
        const shownJson = JSON.parse((yield* outbox("dlq", "show", String(ids[1]), "--json")).stdout) as { payload: unknown }
        assert.deepStrictEqual(shownJson.payload, { order: 1, note: "pay me" })

        const missing = yield* outbox("dlq", "show", "987654321")
        assert.strictEqual(missing.code, 1)
        assert.include(missing.stderr, "DeadLetterNotFound")
        const badDate = yield* outbox("dlq", "list", "--since", "yesterday-ish")
        assert.strictEqual(badDate.code, 1)
        assert.include(badDate.stderr, "DeadLetterError")
      }), { timeout: 120_000 })
  })

  describe("redrive", () => {
    it.effect("without --reason or --by it is refused with BlindRedrive, exit 1, and nothing changes", () =>
      Effect.gen(function*() {
        const ids = yield* seed("Cli2", [{ eventType: "E", error: "boom" }])
        const before = yield* logCount
        for (
          const args of [
            ["--aggregate-type", "Cli2"],
            ["--aggregate-type", "Cli2", "--by", "alice"],
            ["--aggregate-type", "Cli2", "--by", " ", "--reason", "fixed it", "--dry-run"]
          ]
        ) {
          const refused = yield* outbox("dlq", "redrive", ...args)
          assert.strictEqual(refused.code, 1, args.join(" "))
          assert.include(refused.stderr, "BlindRedrive: blind redrive refused")
        }
        assert.deepStrictEqual(yield* statusOf(ids), ["DEAD_LETTER"])
        assert.strictEqual(yield* logCount, before)
        // no filter at all: refused too
        const unfiltered = yield* outbox("dlq", "redrive", "--by", "alice", "--reason", "everything")
        assert.strictEqual(unfiltered.code, 1)
        assert.include(unfiltered.stderr, "DeadLetterError: a redrive needs a filter")
      }), { timeout: 120_000 })

    it.effect("--dry-run shows exactly what the redrive then returns to PENDING; the log, history and show record it", () =>
      Effect.gen(function*() {
        const ids = yield* seed("Cli3", [
          { eventType: "OrderPaid", error: "HTTP 503" },
          { eventType: "OrderPaid", error: "schema mismatch" },
          { eventType: "OrderPaid", error: "HTTP 503 again" }
        ])
        const args = ["--aggregate-type", "Cli3", "--error", "503", "--by", "alice", "--reason", "INC-77: billing back up"]
        const dry = yield* outbox("dlq", "redrive", ...args, "--dry-run", "--json")
        assert.strictEqual(dry.code, 0, dry.stderr)
        const plan = JSON.parse(dry.stdout) as { _tag: string; events: Array<{ id: string }> }
        assert.strictEqual(plan._tag, "DryRun")
        assert.deepStrictEqual(plan.events.map((e) => e.id), [String(ids[0]), String(ids[2])])
        assert.deepStrictEqual(yield* statusOf(ids), ["DEAD_LETTER", "DEAD_LETTER", "DEAD_LETTER"])
        const dryText = yield* outbox("dlq", "redrive", ...args, "--dry-run")
        assert.include(dryText.stdout, "dry run: 2 event(s) would be redriven in 1 batch(es); nothing changed")

        const done = yield* outbox("dlq", "redrive", ...args, "--batch-size", "1")
        assert.strictEqual(done.code, 0, done.stderr)
        assert.match(done.stdout, /redriven 2 of 2 matched event\(s\) in 2 batch\(es\) \(redrive [0-9a-f-]{36}\)/)
        assert.deepStrictEqual(yield* statusOf(ids), ["PENDING", "DEAD_LETTER", "PENDING"])

        const history = yield* outbox("dlq", "history", "--event", String(ids[2]), "--json")
        const entries = JSON.parse(history.stdout) as Array<{ operator: string; reason: string; eventIds: Array<string> }>
        assert.deepStrictEqual(entries.map((e) => [e.operator, e.reason, e.eventIds]), [["alice", "INC-77: billing back up", [String(ids[2])]]])
        const shown = yield* outbox("dlq", "show", String(ids[0]))
        assert.match(shown.stdout, /status\s+PENDING/)
        assert.include(shown.stdout, "by alice")
        assert.include(shown.stdout, "INC-77: billing back up")
        assert.include(shown.stdout, "error before: HTTP 503")

        // explicit ids: one already redriven is reported, not touched again
        const byId = yield* outbox("dlq", "redrive", "--id", String(ids[0]), "--id", String(ids[1]), "--by", "bob", "--reason", "schema fixed")
        assert.strictEqual(byId.code, 0, byId.stderr)
        assert.include(byId.stdout, "redriven 1 of 1 matched event(s)")
        assert.include(byId.stdout, `not dead letters (left alone): ${ids[0]}`)
        assert.deepStrictEqual(yield* statusOf(ids), ["PENDING", "PENDING", "PENDING"])
      }), { timeout: 120_000 })
  })

  describe("roles", () => {
    it.effect("roles grant --print changes nothing; roles grant --create makes a relay that can claim but not delete", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const relay = `outbox_cli_${randomBytes(4).toString("hex")}_relay`
        const printed = yield* outbox("roles", "grant", "--relay", relay, "--print")
        assert.strictEqual(printed.code, 0, printed.stderr)
        assert.include(printed.stdout, `GRANT USAGE ON SEQUENCE "public"."outbox_lock_token_seq" TO "${relay}";`)
        const [none] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ${relay}`
        assert.strictEqual(none!.n, 0)

        yield* Effect.acquireRelease(
          outbox("roles", "grant", "--relay", relay, "--create"),
          () => Effect.ignore(Effect.andThen(sql.unsafe(`DROP OWNED BY "${relay}"`), sql.unsafe(`DROP ROLE "${relay}"`)))
        ).pipe(
          Effect.tap((granted) => {
            assert.strictEqual(granted.code, 0, granted.stderr)
            assert.include(granted.stdout, `created: ${relay}`)
            return Effect.gen(function*() {
              const [p] = yield* sql<{ sel: boolean; upd: boolean; del: boolean; ins: boolean }>`
                SELECT has_table_privilege(${relay}, 'outbox', 'SELECT') AS sel,
                       has_any_column_privilege(${relay}, 'outbox', 'UPDATE') AS upd,
                       has_table_privilege(${relay}, 'outbox', 'DELETE') AS del,
                       has_table_privilege(${relay}, 'outbox', 'INSERT') AS ins`
              assert.deepStrictEqual({ ...p! }, { sel: true, upd: true, del: false, ins: false })
            })
          }),
          Effect.scoped
        )
        const hostile = yield* outbox("roles", "grant", "--relay", `x"; DROP TABLE outbox; --`)
        assert.strictEqual(hostile.code, 1)
        assert.include(hostile.stderr, "InvalidIdentifier")
      }), { timeout: 120_000 })
  })
})
