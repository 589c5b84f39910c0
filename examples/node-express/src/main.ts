/**
 * `npm run start:express`: the orders service in plain Node (Express + Knex)
 * with its outbox relay in the same process.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `DATABASE_URL` | required | the PostgreSQL to use |
 * | `PORT` | 3001 | HTTP port |
 * | `HOST` | 127.0.0.1 | HTTP interface (`0.0.0.0` in a container) |
 * | `CREDIT_LIMIT` | 10000 | the most a customer may order in 24 hours |
 *
 * plus the relay's `OUTBOX_*` variables (see the root README). Start-up
 * creates the `orders` table if it is missing, and `createRelay` applies the
 * outbox migrations before it resolves; only then does the server listen.
 * Each relayed event is logged as one JSON line on stdout. Ctrl-C or SIGTERM
 * stops the server (in-flight requests finish), then the relay (deliveries in
 * flight finish, the rest are released), then the Knex pool; a second signal
 * exits at once.
 */
import { createRelay, type OutboxEvent, type OutboxRelay } from "@outbox/client"
import knex, { type Knex } from "knex"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { createApp, jsonLogger, migrate } from "./app.ts"

/** Exits with a one-line message for a configuration the service cannot start with. */
const configError = (message: string): never => {
  console.error(`node-express example: ${message}`)
  process.exit(1)
}

const databaseUrl = process.env.DATABASE_URL?.trim()
if (databaseUrl === undefined || databaseUrl === "") {
  configError("DATABASE_URL is required, e.g. DATABASE_URL=postgres://user:password@127.0.0.1:5432/app npm run start:express")
}
const connectionString = databaseUrl!

const port = Number(process.env.PORT?.trim() || "3001")
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  configError(`PORT must be an integer from 0 to 65535, got ${JSON.stringify(process.env.PORT)}`)
}
const host = process.env.HOST?.trim() || "127.0.0.1"
const creditLimit = process.env.CREDIT_LIMIT?.trim() ? Number(process.env.CREDIT_LIMIT) : undefined
if (creditLimit !== undefined && !(Number.isFinite(creditLimit) && creditLimit >= 0)) {
  configError(`CREDIT_LIMIT must be a number of at least 0, got ${JSON.stringify(process.env.CREDIT_LIMIT)}`)
}

/** The relay's handler: here each event is only logged; a real one would send it to a broker (a throw is retried). */
const handler = (event: OutboxEvent): void => {
  jsonLogger("info", "event relayed", {
    id: event.id,
    trackingId: event.trackingId,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    eventType: event.eventType,
    payload: event.payload,
    createdAt: event.createdAt
  })
}

const listen = (server: Server) =>
  new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => {
      server.off("error", reject)
      resolve()
    })
  })

/** Stops accepting connections and waits for in-flight requests (at most `timeoutMs`, then drops them). */
const closeServer = (server: Server, timeoutMs: number) =>
  new Promise<void>((resolve) => {
    if (!server.listening) return resolve()
    const force = setTimeout(() => server.closeAllConnections(), timeoutMs)
    server.close(() => {
      clearTimeout(force)
      resolve()
    })
    server.closeIdleConnections()
  })

const db: Knex = knex({ client: "pg", connection: connectionString, pool: { min: 0, max: 10 }, acquireConnectionTimeout: 10_000 })
let relay: OutboxRelay | undefined
let server: Server | undefined
let stopping = false

const shutdown = async (reason: string, exitCode: number) => {
  if (stopping) return
  stopping = true
  jsonLogger("info", `shutting down (${reason})`)
  try {
    if (server !== undefined) await closeServer(server, 10_000)
    if (relay !== undefined) await relay.stop()
    await db.destroy()
    jsonLogger("info", "orders service stopped")
  } catch (error) {
    jsonLogger("error", "shutdown failed", { error })
    exitCode = 1
  }
  process.exit(exitCode)
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) {
      jsonLogger("warn", `${signal} again: exiting now`)
      process.exit(1)
    }
    void shutdown(signal, 0)
  })
}

try {
  await migrate(db)
  // applies the outbox migrations, then starts claiming
  relay = await createRelay({ connectionString, handler })
  if (!stopping) {
    server = createServer(createApp(db, { relayStats: relay.stats, creditLimit }))
    await listen(server)
    const address = server.address() as AddressInfo
    jsonLogger("info", `orders service listening on http://${address.address.includes(":") ? `[${address.address}]` : address.address}:${address.port}`)
  }
} catch (error) {
  jsonLogger("error", "the orders service could not start", { error })
  await shutdown("start-up failed", 1)
}
