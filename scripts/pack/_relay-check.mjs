// Shared by the promise-API scripts of `npm run test:pack`: relays with createRelay until every id in
// `committed` was delivered, then checks that no id in `rolledBack` was. Plain JavaScript (a user's view).
import { createRelay } from "@outbox/client"

export const relayAndCheck = async (label, committed, rolledBack) => {
  const seen = new Set()
  const relay = await createRelay({
    connectionString: process.env.DATABASE_URL,
    pollInterval: 50,
    maxConnections: 4,
    handler: (event) => {
      seen.add(event.aggregateId)
    }
  })
  const deadline = Date.now() + 20_000
  while (!committed.every((id) => seen.has(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  await new Promise((r) => setTimeout(r, 300)) // a wrongly relayed rolled-back event would show up by now
  await relay.stop()
  const missing = committed.filter((id) => !seen.has(id))
  if (missing.length > 0) throw new Error(`${label}: committed events not relayed: ${missing.join(", ")}`)
  const leaked = rolledBack.filter((id) => seen.has(id))
  if (leaked.length > 0) throw new Error(`${label}: rolled-back events relayed: ${leaked.join(", ")}`)
  console.log(`${label}: ${committed.length} committed events relayed by createRelay, ${rolledBack.length} rolled-back not`)
}

export const order = (id) => ({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id } })
