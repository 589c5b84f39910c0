// `npm run test:pack`, under plain node: @outbox/client's Knex, Drizzle and Kysely adapters, each with the
// library's own transaction (a business row and an event), a rolled-back transaction, and createRelay.
import * as OutboxDrizzle from "@outbox/client/drizzle"
import * as OutboxKnex from "@outbox/client/knex"
import * as OutboxKysely from "@outbox/client/kysely"
import { sql } from "drizzle-orm"
import { drizzle } from "drizzle-orm/node-postgres"
import knexFactory from "knex"
import { Kysely, PostgresDialect } from "kysely"
import pg from "pg"
import { order, relayAndCheck } from "./_relay-check.mjs"

const url = process.env.DATABASE_URL
const run = `orm-${process.pid}`
const committed = []
const rolledBack = []
const abort = (e) => {
  if (e.message !== "abort") throw e
}

// Knex
const knex = knexFactory({ client: "pg", connection: url })
await knex.raw("CREATE TABLE IF NOT EXISTS pack_orders (id text PRIMARY KEY)")
await knex.transaction(async (trx) => {
  await trx("pack_orders").insert({ id: `${run}-knex` })
  await OutboxKnex.publish(trx, [order(`${run}-knex`), order(`${run}-knex-2`)])
})
await knex.transaction(async (trx) => {
  await OutboxKnex.publish(trx, order(`${run}-knex-rb`))
  throw new Error("abort")
}).catch(abort)
committed.push(`${run}-knex`, `${run}-knex-2`)
rolledBack.push(`${run}-knex-rb`)
await knex.destroy()

// Drizzle (node-postgres)
const pool = new pg.Pool({ connectionString: url })
const db = drizzle(pool)
await db.transaction(async (tx) => {
  await tx.execute(sql`INSERT INTO pack_orders (id) VALUES (${`${run}-drizzle`})`)
  await OutboxDrizzle.publish(tx, [order(`${run}-drizzle`), order(`${run}-drizzle-2`)])
})
await db.transaction(async (tx) => {
  await OutboxDrizzle.publish(tx, order(`${run}-drizzle-rb`))
  throw new Error("abort")
}).catch(abort)
committed.push(`${run}-drizzle`, `${run}-drizzle-2`)
rolledBack.push(`${run}-drizzle-rb`)

// Kysely
const kysely = new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) })
await kysely.transaction().execute(async (trx) => {
  await trx.insertInto("pack_orders").values({ id: `${run}-kysely` }).execute()
  await OutboxKysely.publish(trx, [order(`${run}-kysely`), order(`${run}-kysely-2`)])
})
await kysely.transaction().execute(async (trx) => {
  await OutboxKysely.publish(trx, order(`${run}-kysely-rb`))
  throw new Error("abort")
}).catch(abort)
committed.push(`${run}-kysely`, `${run}-kysely-2`)
rolledBack.push(`${run}-kysely-rb`)
await kysely.destroy()
await pool.end()

await relayAndCheck("@outbox/client with Knex, Drizzle and Kysely", committed, rolledBack)
