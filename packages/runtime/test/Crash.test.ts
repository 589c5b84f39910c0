import { assert, describe, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const fixture = fileURLToPath(new URL("./fixtures/relay-process.ts", import.meta.url))

/** Starts the relay in a child process (a single node process, so SIGKILL hits the relay itself). */
const startRelayProcess = (databaseUrl: string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      spawn(process.execPath, ["--conditions=@outbox/source", "--import", "tsx", fixture], {
        env: {
          ...process.env,
          DATABASE_URL: databaseUrl,
          OUTBOX_LEASE_SECONDS: "2",
          OUTBOX_POLL_INTERVAL_MS: "50",
          OUTBOX_BATCH_SIZE: "50",
          OUTBOX_PG_POOL_MAX: "4"
        },
        stdio: ["ignore", "ignore", "inherit"]
      })
    ),
    (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

const count = (query: Effect.Effect<ReadonlyArray<{ n: number }>, unknown>) =>
  Effect.map(Effect.orDie(query), (rows) => rows[0]!.n)

const waitFor = (condition: Effect.Effect<boolean>, what: string) =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("50 millis") }),
    Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) })
  )

layer(
  Layer.provideMerge(PgOutboxStore.layer(), TestDatabase.layer),
  { timeout: "120 seconds", excludeTestServices: true }
)("crash", (it) => {
  describe("a relay killed with SIGKILL mid-batch", () => {
    it.effect("loses nothing: after restart every committed event is delivered", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase.TestDatabase
        yield* sql`CREATE TABLE deliveries (tracking_id uuid NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`
        const total = 2000
        for (let i = 0; i < total; i += 200) {
          yield* Outbox.transaction(Outbox.publishAll(Array.from({ length: 200 }, (_, j) => ({
            aggregateType: "Order",
            aggregateId: `o-${i + j}`,
            eventType: "OrderCreated",
            payload: { n: i + j }
          }))))
        }
        const delivered = count(sql<{ n: number }>`SELECT count(DISTINCT tracking_id)::int AS n FROM deliveries`)
        const completed = count(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status = 'COMPLETED'`)

        yield* Effect.scoped(Effect.gen(function*() {
          const child = yield* startRelayProcess(url)
          yield* waitFor(Effect.map(delivered, (n) => n >= 200), "first deliveries")
          child.kill("SIGKILL")
          yield* Effect.callback<void>((resume) => {
            if (child.exitCode !== null || child.signalCode !== null) resume(Effect.void)
            else child.once("exit", () => resume(Effect.void))
          })
          assert.strictEqual(child.signalCode, "SIGKILL")
        }))
        const afterKill = yield* completed
        assert.isBelow(afterKill, total, "the kill must land before the relay finished")
        const stranded = yield* count(sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status = 'PROCESSING'`)

        yield* Effect.scoped(Effect.gen(function*() {
          yield* startRelayProcess(url)
          yield* waitFor(Effect.map(completed, (n) => n === total), "all events completed after restart")
        }))

        assert.strictEqual(yield* delivered, total)
        const missing = yield* count(sql<{ n: number }>`
          SELECT count(*)::int AS n FROM outbox o
          WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tracking_id = o.tracking_id)`)
        assert.strictEqual(missing, 0)
        // the leases the dead process held were recovered by the reaper of the new one
        assert.isAbove(stranded, 0, "the kill must strand leased events")
      }))
  })
})
