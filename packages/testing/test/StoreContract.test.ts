import { OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import * as MemoryOutboxStore from "../src/MemoryOutboxStore.ts"
import * as StoreContract from "../src/StoreContract.ts"
import * as TestDatabase from "../src/TestDatabase.ts"

// A new, empty memory store per test.
StoreContract.suite("memory", MemoryOutboxStore.layer)

// One fresh database (migrated by PgOutboxStore.layer) for the suite; each
// test starts from a truncated outbox. "clock" time makes TestClock drive
// leases, reaping and backoff on real PostgreSQL.
const emptyOutbox = Layer.effect(
  OutboxStore,
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox`
    return yield* OutboxStore
  })
).pipe(Layer.orDie)

StoreContract.suite(
  "PostgreSQL",
  emptyOutbox,
  PgOutboxStore.layer({ timeSource: "clock" }).pipe(Layer.provideMerge(TestDatabase.layer))
)

// Completed rows deleted (OUTBOX_COMPLETED=delete), in both claim modes.
StoreContract.deleteSuite("memory", MemoryOutboxStore.layerWith({ completed: "delete" }))

StoreContract.deleteSuite(
  "PostgreSQL",
  Layer.effect(
    OutboxStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox`
      return yield* PgOutboxStore.make({ timeSource: "clock", completed: "delete" })
    })
  ).pipe(Layer.orDie),
  Layer.provideMerge(OutboxMigrations.layer, TestDatabase.layer)
)
