/**
 * Chaos suite (issue 20), first slice: real OS processes on this machine against
 * a fresh database on the local PostgreSQL.
 *
 *   npx tsx --conditions=@outbox/source scripts/chaos/main.ts [--quick] [--only a,b] [--seed N] [--ordering key]
 *
 * Per scenario: a fresh database (from DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/postgres) migrated with
 * `@outbox/sql/OutboxMigrations`; M = 3 relay processes
 * (`packages/runtime/test/fixtures/ordered-relay-process.ts`: OutboxLive from the
 * environment, webhook sink from OUTBOX_SINK_URL); N = 2 producer processes
 * (`producer-process.ts`); one webhook receiver in this process that records
 * every request and answers 204. Each relay incarnation posts to its own path
 * `/r<relay>/<incarnation>`, so every delivery is attributed to a process.
 *
 * Scenarios:
 *   relay-kills     every 1-2 s (seeded) a random relay is SIGKILLed and restarted (50 cycles, 5 with --quick)
 *   producer-kills  producers are SIGKILLed mid-transaction and restarted (30 kills, 5 with --quick)
 *
 * Then the system settles (producers stopped, wait until every committed row is
 * COMPLETED or a deadline) and the invariants are checked against the committed
 * rows and the receiver's log: lost = 0, phantom = 0 (rolled-back events never
 * delivered), payload integrity, per-key order (with --ordering key), settled
 * before the deadline; duplicates are reported, not failed.
 *
 * Output: a table, and `scripts/chaos/results/chaos-report.json`; child
 * process logs under `scripts/chaos/results/logs/<scenario>/`. Exit code 1 when
 * an invariant fails. A failing scenario's database is kept for inspection.
 */
import { PgClient } from "@effect/sql-pg"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { fileURLToPath } from "node:url"
import pg from "pg"

// ---------------------------------------------------------------------------
// options

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const option = (name: string) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const QUICK = flag("--quick")
const ONLY = option("--only")?.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
const SEED = option("--seed") === undefined ? 20 : Number(option("--seed"))
const ORDERING = option("--ordering") ?? "none"
if (ORDERING !== "none" && ORDERING !== "key") throw new Error(`--ordering must be none or key, got ${ORDERING}`)
if (!Number.isFinite(SEED)) throw new Error(`--seed must be a number`)

const SERVER_URL = process.env.DATABASE_URL && process.env.DATABASE_URL.length > 0
  ? process.env.DATABASE_URL
  : "postgres://postgres@127.0.0.1:5432/postgres"

const ROOT = fileURLToPath(new URL("../../", import.meta.url))
const RELAY_FILE = Path.join(ROOT, "packages/runtime/test/fixtures/ordered-relay-process.ts")
const PRODUCER_FILE = fileURLToPath(new URL("./producer-process.ts", import.meta.url))
const RESULTS_DIR = fileURLToPath(new URL("./results/", import.meta.url))

const RELAYS = 3
const PRODUCERS = 2
const LEASE_SECONDS = 3
/** How long the system may take to settle once the faults stopped. */
const SETTLE_DEADLINE_MS = QUICK ? 45_000 : 90_000
/** Cap on a scenario's fault phase (it stops early, and says so, if it runs over). */
const FAULT_CAP_MS = QUICK ? 45_000 : 240_000

// ---------------------------------------------------------------------------
// small helpers

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** mulberry32: a deterministic PRNG, so a scenario's fault schedule is reproducible from its seed. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const log = (message: string) => console.log(`[chaos ${new Date().toISOString().slice(11, 23)}] ${message}`)

/** Polls `check` every `everyMs` until it is true or `timeoutMs` passed; true when it held. */
const waitFor = async (check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50) => {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (await check()) return true
    await sleep(everyMs)
  }
  return await check()
}

// ---------------------------------------------------------------------------
// child processes: each in its own process group (detached), so that a kill
// reaches everything it started; every live child is killed when this process
// exits, whatever the reason

const live = new Set<ChildProcess>()

const killGroup = (child: ChildProcess, signal: NodeJS.Signals) => {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    try {
      child.kill(signal)
    } catch {
      // already gone
    }
  }
}

const killAll = () => {
  for (const child of live) killGroup(child, "SIGKILL")
}
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    log(`${signal}: killing ${live.size} child process(es)`)
    killAll()
    process.exit(130)
  })
}

interface Proc {
  readonly child: ChildProcess
  readonly name: string
  readonly exited: Promise<void>
}

/** Spawns `node --conditions=@outbox/source --import tsx <file>`, its output appended to `logFile`. */
const spawnTs = (file: string, env: Record<string, string>, name: string, logFile: string, onLine?: (line: string) => void): Proc => {
  const child = spawn(process.execPath, ["--conditions=@outbox/source", "--import", "tsx", file], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true
  })
  live.add(child)
  const out = Fs.createWriteStream(logFile, { flags: "a" })
  out.write(`--- ${new Date().toISOString()} ${name} pid ${child.pid}\n`)
  if (onLine !== undefined) Readline.createInterface({ input: child.stdout! }).on("line", onLine)
  else child.stdout!.pipe(out, { end: false })
  child.stderr!.pipe(out, { end: false })
  const exited = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      live.delete(child)
      out.end(`--- exit ${code ?? signal}\n`)
      resolve()
    })
  )
  return { child, name, exited }
}

/** SIGTERM, then SIGKILL after `graceMs`. */
const stop = async (proc: Proc, graceMs = 5_000) => {
  killGroup(proc.child, "SIGTERM")
  const done = await Promise.race([proc.exited.then(() => true), sleep(graceMs).then(() => false)])
  if (!done) {
    killGroup(proc.child, "SIGKILL")
    await proc.exited
  }
}

const sigkill = async (proc: Proc) => {
  killGroup(proc.child, "SIGKILL")
  await proc.exited
}

// ---------------------------------------------------------------------------
// database

const withAdmin = async <A>(f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: SERVER_URL })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** A fresh database `chaos_<hex>` on the server, migrated with OutboxMigrations; returns its name and URL. */
const freshDatabase = async () => {
  const name = `chaos_${randomBytes(5).toString("hex")}`
  await withAdmin((admin) => admin.query(`CREATE DATABASE "${name}"`))
  const url = new URL(SERVER_URL)
  url.pathname = `/${name}`
  await Effect.runPromise(
    OutboxMigrations.run.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url.toString()), maxConnections: 2 })))
  )
  return { name, url: url.toString() }
}

const dropDatabase = (name: string) =>
  withAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).catch(() => undefined)

// ---------------------------------------------------------------------------
// the webhook receiver: every complete request is recorded and answered 204

interface Delivery {
  readonly trackingId: string
  readonly aggregateId: string
  readonly pid: string | undefined
  /** Which relay process (and which incarnation of it) sent it, from the path `/r<relay>/<incarnation>`. */
  readonly relay: number
  readonly incarnation: number
  readonly status: number
  /** Date.now() at arrival. */
  readonly at: number
}

const startReceiver = async () => {
  const deliveries: Array<Delivery> = []
  let malformed = 0
  const server = Http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    // a request cut off by a SIGKILL never ends: it is not recorded (it was not delivered)
    req.on("end", () => {
      const match = /^\/r(\d+)\/(\d+)/.exec(req.url ?? "")
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          trackingId: string
          aggregateId: string
          payload?: { pid?: string }
        }
        deliveries.push({
          trackingId: String(req.headers["idempotency-key"] ?? body.trackingId),
          aggregateId: body.aggregateId,
          pid: body.payload?.pid,
          relay: match ? Number(match[1]) : -1,
          incarnation: match ? Number(match[2]) : -1,
          status: 204,
          at: Date.now()
        })
        res.writeHead(204).end()
      } catch {
        malformed++
        res.writeHead(400).end()
      }
    })
    req.on("error", () => undefined)
  })
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    deliveries,
    malformed: () => malformed,
    urlFor: (relay: number, incarnation: number) => `http://127.0.0.1:${port}/r${relay}/${incarnation}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

// ---------------------------------------------------------------------------
// one scenario

interface Fault {
  readonly at: number
  readonly kind: "relay" | "producer"
  readonly index: number
  /** For producers: whether it had an open transaction when killed (as its last stdout line said). */
  readonly midTransaction?: boolean
  /** For relays: whether the killed incarnation had delivered something (was up, not booting). */
  readonly active?: boolean
}

interface ScenarioResult {
  readonly scenario: string
  readonly seed: number
  readonly ordering: string
  readonly pass: boolean
  readonly failures: ReadonlyArray<string>
  readonly faults: number
  readonly faultsMidTransaction: number | null
  readonly faultsOnActiveRelay: number | null
  readonly capped: boolean
  readonly committed: number
  readonly delivered: number
  readonly deliveries: number
  readonly lost: number
  readonly phantom: number
  readonly rolledBack: number
  readonly rolledBackDelivered: number
  readonly payloadMismatch: number
  readonly duplicates: number
  readonly orderViolations: number
  readonly settled: boolean
  readonly recoverSeconds: number | null
  readonly statuses: Record<string, number>
  readonly deliveriesByRelay: Record<string, number>
  readonly malformedRequests: number
  readonly wallSeconds: number
  readonly database: string
  readonly samples: {
    readonly lost: ReadonlyArray<unknown>
    readonly phantom: ReadonlyArray<unknown>
    readonly orderViolations: ReadonlyArray<unknown>
  }
}

type Kind = "relay-kills" | "producer-kills"

const runScenario = async (scenario: Kind, seed: number): Promise<ScenarioResult> => {
  const started = Date.now()
  const random = prng(seed)
  const logDir = Path.join(RESULTS_DIR, "logs", scenario)
  Fs.rmSync(logDir, { recursive: true, force: true })
  Fs.mkdirSync(logDir, { recursive: true })

  const database = await freshDatabase()
  log(`${scenario}: seed ${seed}, database ${database.name}, ordering ${ORDERING}`)
  const receiver = await startReceiver()
  const db = new pg.Client({ connectionString: database.url })
  await db.connect()

  // --- processes --------------------------------------------------------------
  const relayIncarnation = new Array<number>(RELAYS).fill(0)
  const relays: Array<Proc> = []
  const startRelay = (i: number) => {
    const incarnation = relayIncarnation[i]!++
    relays[i] = spawnTs(
      RELAY_FILE,
      {
        DATABASE_URL: database.url,
        OUTBOX_SINK_URL: receiver.urlFor(i, incarnation),
        OUTBOX_CONCURRENCY: "2",
        OUTBOX_POLL_INTERVAL_MS: "50",
        OUTBOX_LEASE_SECONDS: String(LEASE_SECONDS),
        OUTBOX_ORDERING: ORDERING,
        OUTBOX_PG_POOL_MAX: "4"
      },
      `relay ${i}.${incarnation}`,
      Path.join(logDir, `relay-${i}.log`)
    )
  }

  const producerIncarnation = new Array<number>(PRODUCERS).fill(0)
  const producers: Array<Proc> = []
  /** Whether producer i's last line was "open" (it holds an open transaction). */
  const inTransaction = new Array<boolean>(PRODUCERS).fill(false)
  /** Every pid a producer inserted (committed or not): what was not committed was rolled back. */
  const opened = new Set<string>()
  let producerCommits = 0
  const startProducer = (i: number) => {
    const incarnation = producerIncarnation[i]!++
    inTransaction[i] = false
    const proc = spawnTs(
      PRODUCER_FILE,
      {
        DATABASE_URL: database.url,
        CHAOS_PRODUCER: String(i),
        CHAOS_INCARNATION: String(incarnation),
        CHAOS_SEED: String(seed),
        CHAOS_KEYS: "20",
        CHAOS_HOLD_PROB: scenario === "producer-kills" ? "0.5" : "0.3",
        CHAOS_HOLD_MAX_MS: "300"
      },
      `producer ${i}.${incarnation}`,
      Path.join(logDir, `producer-${i}.log`),
      (line) => {
        if (producers[i] !== proc) return // a line from a previous incarnation
        try {
          const message = JSON.parse(line) as { t: string; pids: Array<string> }
          if (message.t === "open") {
            inTransaction[i] = true
            for (const pid of message.pids) opened.add(pid)
          } else if (message.t === "commit") {
            inTransaction[i] = false
            producerCommits++
          }
        } catch {
          // not a protocol line
        }
      }
    )
    producers[i] = proc
  }

  const faults: Array<Fault> = []
  let capped = false
  let settled = false
  let settledAt = 0
  try {
    for (let i = 0; i < RELAYS; i++) startRelay(i)
    for (let i = 0; i < PRODUCERS; i++) startProducer(i)

    // warm-up: both producers committing and relays delivering, before the first fault
    const warm = await waitFor(() => producerCommits >= PRODUCERS && receiver.deliveries.length > 0, 60_000, 100)
    if (!warm) throw new Error(`${scenario}: no commit or no delivery within 60 s (see ${logDir})`)
    log(`${scenario}: warm after ${((Date.now() - started) / 1000).toFixed(1)} s`)

    // --- the faults ---------------------------------------------------------------
    const faultStart = Date.now()
    if (scenario === "relay-kills") {
      const cycles = QUICK ? 5 : 50
      for (let cycle = 0; cycle < cycles; cycle++) {
        if (Date.now() - faultStart > FAULT_CAP_MS) {
          capped = true
          break
        }
        await sleep(1_000 + Math.floor(random() * 1_000))
        // a relay takes a few seconds to boot on this machine: kill one that is delivering (its current
        // incarnation has delivered something, so it likely holds leases) when there is one
        const active = Array.from({ length: RELAYS }, (_, r) => r).filter((r) =>
          receiver.deliveries.some((d) => d.relay === r && d.incarnation === relayIncarnation[r]! - 1)
        )
        const candidates = active.length > 0 ? active : Array.from({ length: RELAYS }, (_, r) => r)
        const i = candidates[Math.floor(random() * candidates.length)]!
        const wasActive = active.includes(i)
        await sigkill(relays[i]!)
        faults.push({ at: Date.now(), kind: "relay", index: i, active: wasActive })
        startRelay(i)
        if ((cycle + 1) % 10 === 0 || QUICK) {
          log(`${scenario}: cycle ${cycle + 1}/${cycles}: killed relay ${i}${wasActive ? " (delivering)" : " (booting)"}`)
        }
      }
    } else {
      const kills = QUICK ? 5 : 30
      for (let k = 0; k < kills; k++) {
        if (Date.now() - faultStart > FAULT_CAP_MS) {
          capped = true
          break
        }
        await sleep(700 + Math.floor(random() * 1_000))
        const i = Math.floor(random() * PRODUCERS)
        // aim for a moment when the producer holds an open transaction (up to 3 s; a fresh
        // incarnation may still be starting)
        await waitFor(() => inTransaction[i]!, 3_000, 5)
        const midTransaction = inTransaction[i]!
        await sigkill(producers[i]!)
        faults.push({ at: Date.now(), kind: "producer", index: i, midTransaction })
        startProducer(i)
        log(`${scenario}: kill ${k + 1}/${kills}: producer ${i}${midTransaction ? " (mid-transaction)" : ""}`)
      }
    }
    // keep publishing a little after the last fault so that a restarted process takes part again
    await sleep(1_000)

    // --- settle: stop the producers, wait for every committed row to complete --------
    await Promise.all(producers.map((p) => stop(p)))
    const lastFault = faults.length > 0 ? faults[faults.length - 1]!.at : faultStart
    settled = await waitFor(async () => {
      const { rows } = await db.query<{ open: number; total: number }>(
        `SELECT count(*) FILTER (WHERE status <> 'COMPLETED')::int AS open, count(*)::int AS total FROM outbox`
      )
      return rows[0]!.total > 0 && rows[0]!.open === 0
    }, SETTLE_DEADLINE_MS, 100)
    settledAt = Date.now()
    const recoverSeconds = settled ? (settledAt - lastFault) / 1000 : null
    log(`${scenario}: ${settled ? `settled, ${recoverSeconds!.toFixed(1)} s after the last fault` : "NOT settled by the deadline"}`)
    // a late duplicate from a relay still finishing a request would still be checked below
    await sleep(300)
    await Promise.all(relays.map((p) => stop(p)))

    // --- invariants ---------------------------------------------------------------
    const { rows } = await db.query<{ id: string; tracking_id: string; aggregate_id: string; status: string; pid: string | null; retry_count: number; last_error: string | null }>(
      `SELECT id::text, tracking_id::text, aggregate_id, status, payload->>'pid' AS pid, retry_count, last_error FROM outbox ORDER BY id`
    )
    const deliveries = receiver.deliveries.filter((d) => d.status === 204)
    const byTracking = new Map(rows.map((r) => [r.tracking_id, r]))
    const committedPids = new Set(rows.map((r) => r.pid))
    const deliveredIds = new Set(deliveries.map((d) => d.trackingId))

    const lostRows = rows.filter((r) => !deliveredIds.has(r.tracking_id))
    const phantomDeliveries = deliveries.filter((d) => !byTracking.has(d.trackingId))
    const rolledBack = [...opened].filter((pid) => !committedPids.has(pid))
    const rolledBackSet = new Set(rolledBack)
    const rolledBackDelivered = deliveries.filter((d) => d.pid !== undefined && rolledBackSet.has(d.pid))
    const payloadMismatch = deliveries.filter((d) => {
      const row = byTracking.get(d.trackingId)
      return row !== undefined && (row.pid !== d.pid || row.aggregate_id !== d.aggregateId)
    })
    const delivered = rows.length - lostRows.length
    const duplicates = deliveries.length - phantomDeliveries.length - delivered

    // per key, in arrival order: a successful delivery of an id lower than one of the key already
    // delivered is a violation (a redelivery of the highest one so far is at-least-once, allowed)
    const highest = new Map<string, bigint>()
    const orderViolations: Array<{ key: string; id: string; after: string; relay: number; at: number }> = []
    for (const d of deliveries) {
      const row = byTracking.get(d.trackingId)
      if (row === undefined) continue
      const id = BigInt(row.id)
      const max = highest.get(row.aggregate_id)
      if (max !== undefined && id < max) {
        orderViolations.push({ key: row.aggregate_id, id: row.id, after: String(max), relay: d.relay, at: d.at })
      } else highest.set(row.aggregate_id, id)
    }

    const statuses: Record<string, number> = {}
    for (const r of rows) statuses[r.status] = (statuses[r.status] ?? 0) + 1
    const deliveriesByRelay: Record<string, number> = {}
    for (const d of deliveries) deliveriesByRelay[`r${d.relay}`] = (deliveriesByRelay[`r${d.relay}`] ?? 0) + 1

    const failures: Array<string> = []
    if (rows.length === 0) failures.push("nothing committed")
    if (lostRows.length > 0) failures.push(`${lostRows.length} lost`)
    if (phantomDeliveries.length > 0) failures.push(`${phantomDeliveries.length} phantom`)
    if (rolledBackDelivered.length > 0) failures.push(`${rolledBackDelivered.length} rolled-back events delivered`)
    if (payloadMismatch.length > 0) failures.push(`${payloadMismatch.length} deliveries whose body does not match the row`)
    if (ORDERING === "key" && orderViolations.length > 0) failures.push(`${orderViolations.length} per-key order violations`)
    if (!settled) failures.push(`not settled within ${SETTLE_DEADLINE_MS / 1000} s`)
    if (receiver.malformed() > 0) failures.push(`${receiver.malformed()} malformed requests`)

    const midTransaction = scenario === "producer-kills" ? faults.filter((f) => f.midTransaction === true).length : null
    return {
      scenario,
      seed,
      ordering: ORDERING,
      pass: failures.length === 0,
      failures,
      faults: faults.length,
      faultsMidTransaction: midTransaction,
      faultsOnActiveRelay: scenario === "relay-kills" ? faults.filter((f) => f.active === true).length : null,
      capped,
      committed: rows.length,
      delivered,
      deliveries: deliveries.length,
      lost: lostRows.length,
      phantom: phantomDeliveries.length,
      rolledBack: rolledBack.length,
      rolledBackDelivered: rolledBackDelivered.length,
      payloadMismatch: payloadMismatch.length,
      duplicates,
      orderViolations: orderViolations.length,
      settled,
      recoverSeconds,
      statuses,
      deliveriesByRelay,
      malformedRequests: receiver.malformed(),
      wallSeconds: (Date.now() - started) / 1000,
      database: database.name,
      // enough to say precisely what was lost and how (status, attempts, last error of each row)
      samples: {
        lost: lostRows.slice(0, 50),
        phantom: phantomDeliveries.slice(0, 50),
        orderViolations: orderViolations.slice(0, 50)
      }
    }
  } finally {
    // always: every process of the scenario stopped, the receiver and the connection closed
    await Promise.all([...relays, ...producers].map((p) => sigkill(p)))
    await receiver.close()
    await db.end().catch(() => undefined)
  }
}

// ---------------------------------------------------------------------------
// main

const SCENARIOS: ReadonlyArray<{ name: Kind; seed: number }> = [
  { name: "relay-kills", seed: SEED * 1000 + 1 },
  { name: "producer-kills", seed: SEED * 1000 + 7 }
]

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const lpad = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)

const printTable = (results: ReadonlyArray<ScenarioResult>) => {
  const header = ["scenario", "faults", "committed", "delivered", "lost", "phantom", "dups", "order viol.", "recover s", "result"]
  const widths = [16, 7, 10, 10, 6, 8, 6, 12, 10, 6]
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === 0 ? pad(c, widths[i]!) : lpad(c, widths[i]!))).join("  ")
  console.log("")
  console.log(line(header))
  console.log(line(widths.map((w) => "-".repeat(w))))
  for (const r of results) {
    console.log(line([
      r.scenario,
      String(r.faults),
      String(r.committed),
      String(r.delivered),
      String(r.lost),
      String(r.phantom),
      String(r.duplicates),
      ORDERING === "key" ? String(r.orderViolations) : `(${r.orderViolations})`,
      r.recoverSeconds === null ? "-" : r.recoverSeconds.toFixed(1),
      r.pass ? "PASS" : "FAIL"
    ]))
  }
  if (ORDERING !== "key") console.log("(order violations in parentheses: informational, OUTBOX_ORDERING=none)")
  for (const r of results) if (!r.pass) console.log(`${r.scenario}: ${r.failures.join("; ")} (database ${r.database} kept)`)
}

const main = async () => {
  const started = Date.now()
  Fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const selected = SCENARIOS.filter((s) => ONLY === undefined || ONLY.includes(s.name))
  if (ONLY !== undefined) {
    const unknown = ONLY.filter((n) => !SCENARIOS.some((s) => s.name === n))
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(", ")}`)
  }
  const results: Array<ScenarioResult> = []
  for (const s of selected) {
    const result = await runScenario(s.name, s.seed)
    results.push(result)
    if (result.pass) await dropDatabase(result.database)
  }
  printTable(results)
  const wallSeconds = (Date.now() - started) / 1000
  console.log(`\ntotal ${wallSeconds.toFixed(1)} s`)
  const report = {
    at: new Date().toISOString(),
    node: process.version,
    options: { quick: QUICK, only: ONLY ?? null, seed: SEED, ordering: ORDERING },
    setup: { relays: RELAYS, producers: PRODUCERS, concurrency: 2, pollIntervalMs: 50, leaseSeconds: LEASE_SECONDS },
    wallSeconds,
    pass: results.every((r) => r.pass),
    results
  }
  const file = Path.join(RESULTS_DIR, "chaos-report.json")
  Fs.writeFileSync(file, JSON.stringify(report, null, 2))
  console.log(`report: ${Path.relative(ROOT, file)}`)
  return report.pass
}

main().then(
  (pass) => {
    killAll()
    process.exit(pass ? 0 : 1)
  },
  (error) => {
    console.error(error)
    killAll()
    process.exit(2)
  }
)
