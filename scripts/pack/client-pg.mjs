// `npm run test:pack`, under plain node: @outbox/client with `pg` — publish in the caller's transaction
// (one event and a batch), a rolled-back transaction, typed errors, processOnce, and createRelay.
import { InvalidEvent, processOnce, publish } from "@outbox/client"
import pg from "pg"
import { order, relayAndCheck } from "./_relay-check.mjs"

const run = `pg-${process.pid}`
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
await pool.query("CREATE TABLE IF NOT EXISTS pack_orders (id text PRIMARY KEY)")

const transaction = async (f) => {
  const client = await pool.connect()
  try {
    await client.query("BEGIN")
    const result = await f(client)
    await client.query("COMMIT")
    return result
  } catch (error) {
    await client.query("ROLLBACK")
    throw error
  } finally {
    client.release()
  }
}

const committed = [`${run}-1`, `${run}-2`, `${run}-3`]
await transaction(async (c) => {
  await c.query("INSERT INTO pack_orders (id) VALUES ($1)", [committed[0]])
  const one = await publish(c, order(committed[0]))
  if (typeof one.id !== "bigint") throw new Error(`id is ${typeof one.id}`)
})
await transaction((c) => publish(c, [order(committed[1]), order(committed[2])]))
await transaction(async (c) => {
  await publish(c, order(`${run}-rolled-back`))
  throw new Error("abort")
}).catch((e) => {
  if (e.message !== "abort") throw e
})
const invalid = await transaction((c) => publish(c, { ...order(`${run}-x`), eventType: "" })).catch((e) => e)
if (!(invalid instanceof InvalidEvent) || invalid.reason !== "MissingField") throw new Error(`expected InvalidEvent, got ${invalid}`)
const first = await transaction((c) => processOnce(c, "pack", committed[0], () => "done"))
const again = await transaction((c) => processOnce(c, "pack", committed[0], () => "done"))
if (first._tag !== "Processed" || again._tag !== "Duplicate") throw new Error(`processOnce: ${first._tag}, ${again._tag}`)
await pool.end()

await relayAndCheck("@outbox/client with pg", committed, [`${run}-rolled-back`])
