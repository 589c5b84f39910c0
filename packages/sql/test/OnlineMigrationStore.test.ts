import { OutboxStore } from "@outbox/core/OutboxStore"
import * as OnlineMigration from "@outbox/sql/OnlineMigration"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as LegacyOutbox from "@outbox/testing/LegacyOutbox"
import * as StoreContract from "@outbox/testing/StoreContract"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// The whole store contract, on a plain legacy outbox being migrated online:
// with the dual-write flag set (copies live, legacy rows mirrored) and unset
// (the legacy table authoritative, transitions mirrored onto copies).
const prepared = Layer.effectDiscard(Effect.andThen(LegacyOutbox.create("outbox"), OnlineMigration.prepare())).pipe(
  Layer.provideMerge(TestDatabase.layer)
)

for (const dualWrite of [true, false]) {
  const store = Layer.effect(
    OutboxStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`TRUNCATE outbox, outbox_partitioned`
      return yield* PgOutboxStore.make({ timeSource: "clock", table: "outbox_partitioned", legacy: { table: "outbox", dualWrite } })
    })
  ).pipe(Layer.orDie)
  // the transaction-scoped claim is for plain tables: refused during an online migration (lease mode meanwhile)
  StoreContract.suite(`online migration, dual write ${dualWrite ? "on" : "off"}`, store, prepared, { claimInTransaction: "refused", ordering: "refused", fairness: "refused" })
}
