/**
 * `npm run bench:trickle`: what the relay's process spends per event under a
 * trickle, one-event transactions committed one at a time by a producer in
 * a process of its own (plain SQL through `pg`: BEGIN, INSERT, COMMIT), so
 * that the relay's CPU is the relay's alone (in `bench:peers` W2 the
 * producer shares the process). The relay is `OutboxLive.layer()` with its
 * defaults and 2 workers, the sink a no-op; after a 3 s warm-up it measures
 * the process's CPU (all threads), the event loop's busy time
 * (`performance.eventLoopUtilization`) per delivered event, and commit →
 * handler latency.
 *
 * Environment: BENCH_RATE (default 300 transactions/s: one producer keeps up
 * on a loaded 2-core machine), BENCH_SECONDS (default 15) measured,
 * BENCH_PROFILE=1 (a V8 profile of the window, summarised, written to
 * /tmp/trickle.cpuprofile),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the tests).
 */
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { relay } from "./peers/outbox.ts"
import * as Profile from "./sinks/profile.ts"
import { runMain } from "./shared.ts"

const RATE = Number(process.env.BENCH_RATE ?? 300)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15)
/** The producer process: one transaction every 1/RATE s, each event stamped with its time (`t`). */
const script = `
const { Client } = require("pg")
const c = new Client({ connectionString: process.env.URL })
let stop = false
process.on("message", () => { stop = true })
c.connect().then(async () => {
  const start = Date.now(); let n = 0
  while (!stop) {
    await c.query("BEGIN")
    await c.query("INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', $1, 'Created', $2)", ["o" + n, JSON.stringify({ t: Date.now(), n })])
    await c.query("COMMIT")
    n++
    await new Promise((r) => setTimeout(r, Math.max(0, start + n * 1000 / ${RATE} - Date.now())))
  }
  await c.end(); process.send(n); process.disconnect()
})`
const program = Effect.scoped(Effect.gen(function*() {
  const server = yield* TestDatabase.serverUrlOrEmbedded.pipe(Effect.orDie)
  const db = yield* TestDatabase.freshDatabase(server).pipe(Effect.orDie)
  const subject = relay({ OUTBOX_CONCURRENCY: "2" }, { mode: "defaults", env: {} })!
  const instance = yield* subject.open(db.url)
  let delivered = 0
  const lat: number[] = []
  yield* instance.consume((payload) => {
    delivered++
    lat.push(Date.now() - (payload as { readonly t: number }).t)
  })
  const child = spawn(process.execPath, ["-e", script], { env: { ...process.env, URL: db.url }, stdio: ["ignore", "inherit", "inherit", "ipc"] })
  yield* Effect.sleep("3 seconds")
  const d0 = delivered
  const cpu0 = process.cpuUsage()
  const elu0 = performance.eventLoopUtilization()
  const prof = process.env.BENCH_PROFILE === "1" ? yield* Profile.start : undefined
  yield* Effect.sleep(`${SECONDS} seconds`)
  const cpu = process.cpuUsage(cpu0)
  const elu = performance.eventLoopUtilization(elu0)
  const n = delivered - d0
  if (prof) console.log(yield* prof.stop("/tmp/trickle.cpuprofile"))
  child.send("stop")
  yield* Effect.sleep("1 second")
  const l = lat.slice(d0).sort((a, b) => a - b)
  if (n < RATE * SECONDS * 0.95) console.log(`the producer did not keep up: ${n} events, not ${RATE * SECONDS}`)
  console.log(`delivered ${n} in ${SECONDS}s; Node CPU ${((cpu.user + cpu.system) / 1e4 / SECONDS).toFixed(1)} % of a core, ${((cpu.user + cpu.system) / n).toFixed(0)} µs/event (user ${(cpu.user / n).toFixed(0)}, sys ${(cpu.system / n).toFixed(0)}); event loop busy ${(elu.active * 1000 / n).toFixed(0)} µs/event (ELU ${(elu.utilization * 100).toFixed(1)} %); latency p50 ${l[Math.floor(l.length / 2)]} p99 ${l[Math.floor(l.length * 0.99)]} ms`)
}))
runMain(program)
