// `npm run test:pack`, under plain node: @outbox/client's Prisma adapter (Prisma 7 with @prisma/adapter-pg),
// in an interactive transaction with a business row, a rolled-back transaction, processOnce, and createRelay.
import * as OutboxPrisma from "@outbox/client/prisma"
import { PrismaPg } from "@prisma/adapter-pg"
import { PrismaClient } from "@prisma/client"
import { order, relayAndCheck } from "./_relay-check.mjs"

const run = `prisma-${process.pid}`
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL }) })
await prisma.$executeRawUnsafe("CREATE TABLE IF NOT EXISTS pack_orders (id text PRIMARY KEY)")
await prisma.$transaction(async (tx) => {
  await tx.$executeRawUnsafe("INSERT INTO pack_orders (id) VALUES ($1)", `${run}-1`)
  const one = await OutboxPrisma.publish(tx, order(`${run}-1`))
  if (typeof one.id !== "bigint") throw new Error(`id is ${typeof one.id}`)
  await OutboxPrisma.publish(tx, [order(`${run}-2`), order(`${run}-3`)])
})
await prisma.$transaction(async (tx) => {
  await OutboxPrisma.publish(tx, order(`${run}-rolled-back`))
  throw new Error("abort")
}).catch((e) => {
  if (e.message !== "abort") throw e
})
const first = await prisma.$transaction((tx) => OutboxPrisma.processOnce(tx, "pack", `${run}-1`, () => "done"))
const again = await prisma.$transaction((tx) => OutboxPrisma.processOnce(tx, "pack", `${run}-1`, () => "done"))
if (first._tag !== "Processed" || again._tag !== "Duplicate") throw new Error(`processOnce: ${first._tag}, ${again._tag}`)
await prisma.$disconnect()

await relayAndCheck("@outbox/client with Prisma", [`${run}-1`, `${run}-2`, `${run}-3`], [`${run}-rolled-back`])
