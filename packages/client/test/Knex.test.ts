import * as Outbox from "@outbox/client/knex"
import { knex as createKnex, type Knex } from "knex"
import { type Statement, suite } from "./adapters/AdapterSuite.ts"

suite("@outbox/client/knex with Knex (pg)", Outbox, async (url) => {
  const db = createKnex({ client: "pg", connection: url, pool: { min: 0, max: 4 } })
  const statements: Array<Statement> = []
  db.on("query", (query: { readonly sql: string; readonly bindings?: ReadonlyArray<unknown> }) =>
    statements.push({ sql: query.sql, params: query.bindings ?? [] }))
  return {
    transaction: <A>(f: (trx: Knex.Transaction) => Promise<A>) => db.transaction(f),
    insertOrder: (trx: Knex.Transaction, id: string) => trx("orders").insert({ id }).then(() => undefined),
    autocommit: db,
    statements,
    close: () => db.destroy()
  }
})
