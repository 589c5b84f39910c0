import * as Outbox from "@outbox/client/kysely"
import { Kysely, PostgresDialect, type Transaction } from "kysely"
import pg from "pg"
import { type Statement, suite } from "./adapters/AdapterSuite.ts"

interface Database {
  readonly orders: { readonly id: string }
}

suite("@outbox/client/kysely with Kysely (PostgresDialect)", Outbox, async (url) => {
  const statements: Array<Statement> = []
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) }),
    log: (event) => {
      if (event.level === "query") statements.push({ sql: event.query.sql, params: event.query.parameters })
    }
  })
  return {
    transaction: <A>(f: (trx: Transaction<Database>) => Promise<A>) => db.transaction().execute(f),
    insertOrder: (trx: Transaction<Database>, id: string) => trx.insertInto("orders").values({ id }).execute(),
    autocommit: db,
    statements,
    close: () => db.destroy()
  }
})
