import * as Outbox from "@outbox/client/drizzle"
import { drizzle } from "drizzle-orm/node-postgres"
import { pgTable, text } from "drizzle-orm/pg-core"
import pg from "pg"
import { type Statement, suite } from "./adapters/AdapterSuite.ts"

const orders = pgTable("orders", { id: text("id").primaryKey() })

const open = (url: string, statements: Array<Statement>) => {
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  const db = drizzle({ client: pool, logger: { logQuery: (sql, params) => void statements.push({ sql, params }) } })
  return { pool, db }
}

type Transaction = Parameters<Parameters<ReturnType<typeof open>["db"]["transaction"]>[0]>[0]

suite("@outbox/client/drizzle with Drizzle (node-postgres)", Outbox, async (url) => {
  const statements: Array<Statement> = []
  const { db, pool } = open(url, statements)
  return {
    transaction: <A>(f: (tx: Transaction) => Promise<A>) => db.transaction(f),
    insertOrder: (tx: Transaction, id: string) => tx.insert(orders).values({ id }).then(() => undefined),
    autocommit: db,
    statements,
    close: () => pool.end()
  }
})
