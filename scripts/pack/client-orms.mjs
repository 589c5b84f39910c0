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

// The same two transactions through each adapter: a business row and two events that commit together,
// then an event whose transaction rolls back. `transaction(body)` is the ORM's own; `insert` and
// `publish` run on the transaction handle it passes to `body`.
const check = async (name, { transaction, insert, publish }) => {
  const [id, second, rolled] = [`${run}-${name}`, `${run}-${name}-2`, `${run}-${name}-rb`]
  await transaction(async (tx) => {
    await insert(tx, id)
    await publish(tx, [order(id), order(second)])
  })
  await transaction(async (tx) => {
    await publish(tx, order(rolled))
    throw new Error("abort")
  }).catch(abort)
  committed.push(id, second)
  rolledBack.push(rolled)
}

// Knex
const knex = knexFactory({ client: "pg", connection: url })
await knex.raw("CREATE TABLE IF NOT EXISTS pack_orders (id text PRIMARY KEY)")
await check("knex", {
  transaction: (body) => knex.transaction(body),
  insert: (trx, id) => trx("pack_orders").insert({ id }),
  publish: (trx, events) => OutboxKnex.publish(trx, events)
})
await knex.destroy()

// Drizzle (node-postgres)
const pool = new pg.Pool({ connectionString: url })
const db = drizzle(pool)
await check("drizzle", {
  transaction: (body) => db.transaction(body),
  insert: (tx, id) => tx.execute(sql`INSERT INTO pack_orders (id) VALUES (${id})`),
  publish: (tx, events) => OutboxDrizzle.publish(tx, events)
})

// Kysely
const kysely = new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) })
await check("kysely", {
  transaction: (body) => kysely.transaction().execute(body),
  insert: (trx, id) => trx.insertInto("pack_orders").values({ id }).execute(),
  publish: (trx, events) => OutboxKysely.publish(trx, events)
})
await kysely.destroy()
await pool.end()

await relayAndCheck("@outbox/client with Knex, Drizzle and Kysely", committed, rolledBack)
