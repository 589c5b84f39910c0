/**
 * Chaos suite (issue 20): real OS processes on this machine against
 * a fresh database on the local PostgreSQL.
 *
 *   npx tsx --conditions=@outbox/source scripts/chaos/main.ts [--quick] [--only a,b] [--seed N] [--ordering key] [--fairness tenant] [--sink nats]
 *
 * Per scenario: a fresh database (from DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/postgres) migrated with
 * `@outbox/sql/OutboxMigrations`; M = 3 relay processes
 * (`packages/runtime/test/fixtures/ordered-relay-process.ts`: OutboxLive from the
 * environment, webhook sink from OUTBOX_SINK_URL); N = 2 producer processes
 * (`producer-process.ts`: producer 0 through the Effect API, producer 1 through
 * `@outbox/client` in its own `pg` transactions); one webhook receiver in this
 * process that records every request and answers 204. Each relay incarnation
 * posts to its own path `/r<relay>/<incarnation>`, so every delivery is
 * attributed to a process. With `--sink nats` the relays publish to NATS
 * JetStream instead (`startNatsReceiver`: a stream of the scenario's own, read
 * by the harness; the outage is a proxy refusing the relays' connections).
 *
 * Scenarios:
 *   relay-kills     every 1-2 s (seeded) a random relay is SIGKILLed and restarted (50 cycles, 5 with --quick)
 *   producer-kills  producers are SIGKILLed mid-transaction and restarted (30 kills, 5 with --quick)
 *   sink-outage     under load the receiver answers 503 (retryable for the webhook sink) for 60 s
 *                   (6 s with --quick), then 204 again; reports the backlog and how fast it drains.
 *                   Its producers write max_retries = 10000 (CHAOS_MAX_RETRIES overrides): with the
 *                   default 5 and the fixture's 50 ms..1 s backoff an 8 s outage already dead-letters
 *                   most of the backlog (354 of 512 rows in a trial run)
 *   relay-freeze    a relay is SIGSTOPped while one of its requests is at the receiver (mid-batch,
 *                   holding leases) for lease + 5 s = 8 s, then SIGCONTed (5 times, once with --quick);
 *                   the receiver answers after 20 ms so that relays are mid-batch most of the time
 *   backend-kills   5 times a second for 30 s (6 s with --quick), pg_terminate_backend of every
 *                   backend of the chaos database but the harness's own connection (the relays' and
 *                   producers' pooled connections, idle, mid-claim or mid-transaction)
 *   pool-exhaustion the harness (its checking connection opened first) opens idle connections to the
 *                   chaos database up to min(300, max_connections - superuser_reserved_connections -
 *                   in use), terminates the processes' backends once and tops up with the freed slots
 *                   (until the server refuses one: "sorry, too many clients already"), holds them for
 *                   20 s (5 s with --quick), then releases them (always, in `finally`)
 *   pg-restart      on a PostgreSQL server of the harness's own (`TestDatabase.embeddedServer`: the
 *                   embedded binaries on a free port), restarted under load: fast shutdown (sessions
 *                   end with 57P01) down 2 s, immediate shutdown (a crash: 57P02, WAL replay) down 1 s,
 *                   and with the full run fast down 10 s and immediate down 3 s
 *
 * In backend-kills, pool-exhaustion and pg-restart nothing is restarted (but the server): every relay
 * and producer must come through by itself; a process that exits fails the scenario (its name and
 * exit code are reported), and so does one that has not delivered / committed again within 15 s of
 * the fault ("all working again after": the latest of the processes' first delivery / commit after
 * it). Their faults start once every relay has delivered, so that they hit running processes (a
 * relay starting while the database is unreachable waits for it: `PgOutboxStore.retryStartup`,
 * tested in the orders example's database-outage test). Their producers run with CHAOS_CONTINUE_ON_ERROR=1: a
 * transaction whose connection was terminated fails and the producer goes on with the next one, as
 * an application would (the failures are counted; the database decides what committed).
 *
 * Then the system settles (producers stopped, wait until every committed row is
 * COMPLETED or DEAD_LETTER, or a deadline) and the invariants are checked against
 * the committed rows, the receiver's log and the transition log: lost = 0,
 * phantom = 0 (rolled-back events never delivered), no DEAD_LETTER, payload
 * integrity, per-key order (with --ordering key), settled before the deadline,
 * and no completion by a stale lease holder; duplicates are reported, not failed.
 *
 * Fencing, from the database side (every scenario): each chaos database gets a
 * trigger logging every change of a row's status or lock token with the session's
 * application_name, and each relay incarnation connects as `r<relay>.<incarnation>`.
 * A completion whose old lock token was claimed by another session is a completion
 * by a stale holder ("stale compl.", must be 0). This does not rely on the relay's
 * own account; the frozen relays' "lease lost" warnings (their log) and, per
 * freeze, the leases other relays' reapers recovered while it was stopped and the
 * deliveries it still made of those events afterwards are reported alongside, to
 * show the check was exercised (a freeze that held no lease would prove nothing).
 * Comparing delivery times in the receiver's log was not used: a request written
 * just before SIGSTOP is answered while the process is stopped, so arrival times
 * alone cannot tell a stale delivery from a live one.
 *
 * Output: a table, and `scripts/chaos/results/chaos-report.json`; child
 * process logs under `scripts/chaos/results/logs/<scenario>/`. Exit code 1 when
 * an invariant fails. A failing scenario's database is kept for inspection.
 */
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream"
import { connect as natsConnect } from "@nats-io/transport-node"
import { PgClient } from "@effect/sql-pg"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as TcpProxy from "@outbox/testing/TcpProxy"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
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
/** `--fairness tenant`: the relays claim tenant-fairly (the producers' events are spread over three tenants). */
const FAIRNESS = option("--fairness") ?? "none"
if (FAIRNESS !== "none" && FAIRNESS !== "tenant") throw new Error(`--fairness must be none or tenant, got ${FAIRNESS}`)
/** Where the relays deliver: the harness's webhook receiver, or NATS JetStream (127.0.0.1:4222) through a proxy of the harness's. */
const SINK = option("--sink") ?? "webhook"
if (SINK !== "webhook" && SINK !== "nats") throw new Error(`--sink must be webhook or nats, got ${SINK}`)
const NATS_PORT = Number(process.env.CHAOS_NATS_PORT ?? 4222)
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
/**
 * xmin-hold's: the backlog the hold leaves may take minutes to drain, and with --ordering key the relays
 * (each key's events one at a time, a webhook request each) fall behind the 850 events/s load even before
 * it (measured: ~650 events/s delivered during the hold); the time it takes is reported as the recovery.
 */
const XMIN_SETTLE_DEADLINE_MS = QUICK ? 45_000 : 300_000
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

const withAdmin = <A>(server: string, f: (client: pg.Client) => Promise<A>): Promise<A> => withClient(server, f)

const withClient = async <A>(url: string, f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** A fresh database `chaos_<hex>` on `server`, migrated with OutboxMigrations; returns its name and URL. */
const freshDatabase = async (server: string) => {
  const name = `chaos_${randomBytes(5).toString("hex")}`
  await withAdmin(server, (admin) => admin.query(`CREATE DATABASE "${name}"`))
  const url = new URL(server)
  url.pathname = `/${name}`
  await Effect.runPromise(
    OutboxMigrations.run.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url.toString()), maxConnections: 2 })))
  )
  await installTransitionLog(url.toString())
  return { name, url: url.toString() }
}

/**
 * The harness's own record of every lease transition, from the database side: an AFTER UPDATE
 * trigger on `outbox` (test scaffolding in the chaos database only, not part of the schema) logs
 * each change of status or lock token with the `application_name` of the session that made it.
 * Every relay incarnation connects as `r<relay>.<incarnation>` (see `relayDatabaseUrl`), so a
 * claim (→ PROCESSING, new token T) names the process that holds T, and a completion
 * (PROCESSING → COMPLETED, old token T) names the process that completed it. A completion by any
 * other session than T's claimer is a completion by a stale lease holder (`staleCompletions`).
 */
const installTransitionLog = (url: string) =>
  withClient(url, async (client) => {
    await client.query(`
      CREATE TABLE chaos_transitions (
        seq bigserial PRIMARY KEY,
        id bigint NOT NULL,
        old_status text,
        new_status text,
        old_token bigint,
        new_token bigint,
        old_locked_until timestamptz,
        app text NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
      )`)
    await client.query(`
      CREATE FUNCTION chaos_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO chaos_transitions (id, old_status, new_status, old_token, new_token, old_locked_until, app)
        VALUES (NEW.id, OLD.status::text, NEW.status::text, OLD.lock_token, NEW.lock_token, OLD.locked_until, current_setting('application_name'));
        RETURN NULL;
      END $$`)
    await client.query(`
      CREATE TRIGGER chaos_record_transition AFTER UPDATE ON outbox FOR EACH ROW
      WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.lock_token IS DISTINCT FROM NEW.lock_token)
      EXECUTE FUNCTION chaos_record_transition()`)
  })

/** The database URL a relay incarnation connects with: its sessions are named `r<relay>.<incarnation>`. */
const relayDatabaseUrl = (url: string, relay: number, incarnation: number) => {
  const u = new URL(url)
  u.searchParams.set("application_name", relayApp(relay, incarnation))
  return u.toString()
}
const relayApp = (relay: number, incarnation: number) => `r${relay}.${incarnation}`

const dropDatabase = (name: string) =>
  withAdmin(SERVER_URL, (admin) => admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).catch(() => undefined)

/**
 * pg-restart: a PostgreSQL server of the harness's own (`TestDatabase.embeddedServer`: the embedded
 * binaries on a free port, its data directory under the OS temp dir), so that restarting it disturbs
 * nothing else on the machine. Removed by `close`.
 */
const startOwnServer = async () => {
  const scope = Effect.runSync(Scope.make())
  const server = await Effect.runPromise(TestDatabase.embeddedServer.pipe(Scope.provide(scope)))
  return {
    url: server.url,
    restart: (mode: "fast" | "immediate", downMs: number) =>
      Effect.runPromise(server.restart({ mode, downFor: Duration.millis(downMs) })),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

// ---------------------------------------------------------------------------
// the webhook receiver: every complete request is recorded and answered 204 (503 during an outage,
// which the webhook sink treats as retryable: 408, 429 and 5xx are)

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
  let outage = false
  let latencyMs = 0
  /** Per relay, the requests that arrived and are not answered yet (only non-zero with a latency). */
  const inFlight = new Map<number, number>()
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
          status: outage ? 503 : 204,
          at: Date.now()
        })
        const status = outage ? 503 : 204
        if (latencyMs === 0) res.writeHead(status).end()
        else {
          const relay = match ? Number(match[1]) : -1
          inFlight.set(relay, (inFlight.get(relay) ?? 0) + 1)
          setTimeout(() => {
            inFlight.set(relay, inFlight.get(relay)! - 1)
            res.writeHead(status).end()
          }, latencyMs)
        }
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
    /** While on, every request is answered 503 (and recorded with that status: not a delivery). */
    setOutage: (on: boolean) => {
      outage = on
    },
    /** Answers every request after `ms` (the delivery is recorded at arrival, as before). */
    setLatency: (ms: number) => {
      latencyMs = ms
    },
    /** The relays with a request at the receiver that is not answered yet. */
    busyRelays: () => [...inFlight].filter(([, n]) => n > 0).map(([relay]) => relay),
    urlFor: (relay: number, incarnation: number) => `http://127.0.0.1:${port}/r${relay}/${incarnation}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

/** What a scenario needs of its sink: the webhook receiver above, or `startNatsReceiver`. */
type Receiver = Awaited<ReturnType<typeof startReceiver>>

/**
 * `--sink nats`: the relays publish to NATS JetStream through a TCP proxy of the harness's (so that an
 * outage is the broker refusing connections, and nothing else on the machine is disturbed), into a
 * stream of the scenario's own (`CHAOS_<hex>`, subjects `chaos_<hex>.>`, in memory, deleted at the end),
 * each relay incarnation under its own subject prefix `chaos_<hex>.r<relay>.<incarnation>`. The harness
 * reads the stream directly (not through the proxy) with an ordered consumer: every stored message is a
 * delivery. JetStream drops a redelivery inside its duplicate window (`Nats-Msg-Id` = tracking id, 2
 * minutes), so duplicates are what got past it.
 */
const startNatsReceiver = async (): Promise<Receiver> => {
  const tag = randomBytes(4).toString("hex")
  const stream = `CHAOS_${tag}`
  const root = `chaos_${tag}`
  const nc = await natsConnect({ servers: `127.0.0.1:${NATS_PORT}` })
  const jsm = await jetstreamManager(nc)
  await jsm.streams.add({ name: stream, subjects: [`${root}.>`], storage: StorageType.Memory })
  const scope = Effect.runSync(Scope.make())
  const proxy = await Effect.runPromise(TcpProxy.make({ port: NATS_PORT }).pipe(Scope.provide(scope)))
  const deliveries: Array<Delivery> = []
  let malformed = 0
  const consumer = await jetstream(nc).consumers.get(stream)
  const messages = await consumer.consume()
  const reading = (async () => {
    for await (const m of messages) {
      const match = new RegExp(`^${root}\\.r(\\d+)\\.(\\d+)\\.`).exec(m.subject)
      try {
        const body = m.json<{ trackingId: string; aggregateId: string; payload?: { pid?: string } }>()
        deliveries.push({
          trackingId: m.headers?.get("Nats-Msg-Id") || body.trackingId,
          aggregateId: body.aggregateId,
          pid: body.payload?.pid,
          relay: match ? Number(match[1]) : -1,
          incarnation: match ? Number(match[2]) : -1,
          status: 204,
          at: Date.now()
        })
      } catch {
        malformed++
      }
    }
  })()
  return {
    deliveries,
    malformed: () => malformed,
    /** While on, the proxy refuses every connection (open ones cut): the broker is down for the relays. */
    setOutage: (on: boolean) => {
      Effect.runSync(Effect.asVoid(Effect.forkDetach(proxy.setMode(on ? "refuse" : "forward"))))
    },
    setLatency: () => undefined,
    busyRelays: () => [],
    urlFor: (relay: number, incarnation: number) =>
      `nats://${proxy.address}?stream=${stream}&subjectPrefix=${root}.r${relay}.${incarnation}`,
    close: async () => {
      await messages.close()
      await reading
      await jsm.streams.delete(stream).catch(() => undefined)
      await nc.close()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

// ---------------------------------------------------------------------------
// one scenario

interface Fault {
  readonly at: number
  readonly kind: "relay" | "producer" | "sink" | "freeze" | "backend" | "pool" | "restart" | "xmin"
  readonly index: number
  /** For producers: whether it had an open transaction when killed (as its last stdout line said). */
  readonly midTransaction?: boolean
  /** For relays: whether the killed incarnation had delivered something (was up, not booting). */
  readonly active?: boolean
}

/** One SIGSTOP/SIGCONT of a relay (relay-freeze). */
interface Freeze {
  readonly relay: number
  readonly app: string
  readonly frozenAt: number
  readonly resumedAt: number
}

interface ScenarioResult {
  readonly scenario: string
  readonly seed: number
  readonly ordering: string
  readonly fairness: string
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
  /** Redeliveries of a key's events after later ones that were delivered before too (runs, after a kill). */
  readonly rewinds: number
  readonly settled: boolean
  readonly recoverSeconds: number | null
  readonly statuses: Record<string, number>
  readonly deliveriesByRelay: Record<string, number>
  readonly malformedRequests: number
  /** Rows left in DEAD_LETTER (a failure: every event here is deliverable). */
  readonly deadLettered: number
  /** Completions whose old lock token was claimed by another session (see `installTransitionLog`): must be 0. */
  readonly staleCompletions: number
  /** Transitions out of a lease that was still valid, by a session other than its holder (see `leaseViolations`): must be 0. */
  readonly leaseViolations: number
  /** Highest `retry_count` of a row at the end (failed attempts and reaped leases count). */
  readonly maxRetryCount: number
  /** sink-outage: the outage and the recovery after it. */
  readonly outage: {
    readonly seconds: number
    readonly rejected: number
    readonly backlogAtRecovery: number
    readonly firstDeliveryAfterSeconds: number | null
    readonly drainSeconds: number | null
  } | null
  /** relay-freeze: per freeze, what the frozen process lost and what it still did. */
  readonly freezes: ReadonlyArray<{
    readonly relay: string
    readonly frozenSeconds: number
    /** Its leases that another relay's reaper recovered while it was stopped. */
    readonly leasesReaped: number
    /** Of those, re-claimed by another relay before it resumed. */
    readonly reclaimedByOthers: number
    /** Deliveries of those events it still made after the freeze began (stale: at-least-once duplicates). */
    readonly staleDeliveries: number
  }> | null
  /** relay-freeze: "lease lost" warnings in the frozen relays' logs, per operation (event counts). */
  readonly leaseLostLogged: Record<string, number> | null
  /** backend-kills / pool-exhaustion: the connection fault and how the processes came through it. */
  readonly connections: {
    /** backend-kills: backends terminated (pg_terminate_backend returned true), in how many rounds. */
    readonly terminated: number
    readonly rounds: number
    /** pool-exhaustion: idle connections the harness held, what it aimed for, and the refusal that stopped it. */
    readonly held: number
    readonly target: number
    readonly refused: string | null
    readonly faultSeconds: number
    /** Processes that exited during the scenario (none may: nothing is restarted). */
    readonly exits: ReadonlyArray<{ readonly name: string; readonly code: number | null; readonly signal: string | null; readonly atSeconds: number }>
    /** Producer transactions that failed (logged in their stderr, reported as {"t":"fail"}). */
    readonly producerFailures: number
    /** After the fault: seconds until every relay delivered and every producer committed again (null: not within the wait). */
    readonly recoveredSeconds: number | null
    /** Per process, seconds from the end of the fault to its first delivery / commit (null: none). */
    readonly firstWorkAfter: Record<string, number | null>
    /** Deliveries and commits while the fault lasted. */
    readonly deliveriesDuring: number
    readonly commitsDuring: number
  } | null
  /** xmin-hold: what a transaction pinning the xmin horizon cost while the load went on. */
  readonly xmin: XminReport | null
  /** pg-restart: each restart of the harness's own server, and how long it refused connections. */
  readonly restarts: ReadonlyArray<{ readonly mode: "fast" | "immediate"; readonly downSeconds: number }> | null
  readonly wallSeconds: number
  readonly database: string
  /** Whether the database was on the harness's own server (pg-restart: removed with it, never kept). */
  readonly ownServer: boolean
  readonly samples: {
    readonly lost: ReadonlyArray<unknown>
    readonly phantom: ReadonlyArray<unknown>
    readonly orderViolations: ReadonlyArray<unknown>
    readonly staleCompletions: ReadonlyArray<unknown>
    readonly leaseViolations: ReadonlyArray<unknown>
  }
}

/** Pickup latency (commit to first delivery at the receiver) of the rows created in a window. */
interface LatencyWindow {
  readonly window: string
  readonly events: number
  readonly p50Ms: number | null
  readonly p99Ms: number | null
}

interface XminReport {
  readonly holdSeconds: number
  /** Events inserted by the harness's loader (beside the producers') and by everyone during the hold. */
  readonly loaderEvents: number
  readonly eventsDuringHold: number
  /** Sum of n_dead_tup over the outbox's partitions: before the hold, at its end, and after the release + VACUUM. */
  readonly deadTuplesBefore: number
  readonly deadTuplesAtEnd: number
  readonly deadTuplesAfterVacuum: number
  /** VACUUM (VERBOSE) of the outbox at the end of the hold: dead row versions it could not remove; after the release: removed. */
  readonly vacuumNotRemovable: number
  readonly vacuumRemovedAfter: number
  /** The claim's scan (the lease claim's SELECT ... FOR UPDATE SKIP LOCKED of 100 rows), timed every second. */
  readonly claimProbe: ReadonlyArray<{ readonly window: string; readonly samples: number; readonly p50Ms: number | null; readonly maxMs: number | null }>
  readonly pickup: ReadonlyArray<LatencyWindow>
  /** `outbox health --json` during the hold: its level, and the finding that names the holder. */
  readonly health: {
    readonly level: string
    readonly thresholdArgs: ReadonlyArray<string>
    readonly named: boolean
    /** The finding that names the holder: its check, level and message. */
    readonly finding: { readonly name: string; readonly level: string; readonly message: string } | null
    /** Every finding of the report, as `name level`. */
    readonly findings: ReadonlyArray<string>
  }
}

type Kind = "relay-kills" | "producer-kills" | "sink-outage" | "relay-freeze" | "backend-kills" | "pool-exhaustion" | "pg-restart" | "xmin-hold"

/** Scenarios in which no process is restarted: each one has to recover by itself, an exit fails. */
const NO_RESTART: ReadonlyArray<Kind> = ["backend-kills", "pool-exhaustion", "pg-restart", "xmin-hold"]

// ---------------------------------------------------------------------------
// xmin-hold: a transaction pinning the xmin horizon while the load goes on

const XMIN_HOLD_MS = QUICK ? 10_000 : 120_000
const XMIN_BASELINE_MS = QUICK ? 3_000 : 20_000
const XMIN_AFTER_MS = QUICK ? 3_000 : 20_000
/** Events per second the harness's loader inserts (beside the producers): 100,000 over the full 2-minute hold. */
const XMIN_RATE = QUICK ? 400 : 850
/** When `outbox health` runs during the hold; the quick hold is shorter than the default warn (60 s): its threshold is lowered. */
const XMIN_HEALTH_AT_MS = QUICK ? 6_000 : 75_000
const XMIN_HEALTH_ARGS: ReadonlyArray<string> = QUICK ? ["--threshold", "idleInTransactionSeconds=5,"] : []
const HOLDER_APP = "chaos-xmin-holder"

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))]!

/** Sum of n_dead_tup over the outbox's partitions. */
const deadTuples = async (client: pg.Client | pg.Pool) => {
  const { rows } = await client.query<{ n: string }>(
    `SELECT coalesce(sum(n_dead_tup), 0)::text AS n FROM pg_stat_user_tables
     WHERE relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'outbox'::regclass)`
  )
  return Number(rows[0]!.n)
}

/** VACUUM (VERBOSE) of the outbox's partitions: dead row versions removed and not yet removable, from its notices. */
const vacuumVerbose = async (url: string) =>
  withClient(url, async (client) => {
    let removed = 0
    let notRemovable = 0
    client.on("notice", (notice) => {
      for (const m of String(notice.message ?? "").matchAll(/tuples: (\d+) removed, \d+ remain, (\d+) are dead but not yet removable/g)) {
        removed += Number(m[1])
        notRemovable += Number(m[2])
      }
    })
    await client.query("VACUUM (VERBOSE) outbox")
    return { removed, notRemovable }
  })

/** `outbox health --json` against the chaos database, as an operator would run it. */
const runHealth = (url: string, args: ReadonlyArray<string>) =>
  new Promise<{ code: number; stdout: string }>((resolve) => {
    const child = spawn(process.execPath, ["--conditions=@outbox/source", "--import", "tsx", Path.join(ROOT, "packages/runtime/src/bin.ts"), "health", "--json", ...args], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: url },
      stdio: ["ignore", "pipe", "ignore"]
    })
    let stdout = ""
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
    child.once("exit", (code) => resolve({ code: code ?? -1, stdout }))
  })

/**
 * The xmin-hold fault: a loader inserting XMIN_RATE events/s (plain SQL INSERTs, committed at once,
 * pid `h.<n>`, over 500 keys of its own: with --ordering key, 20 keys would allow only 20 events in
 * flight, fewer than 850/s need) through a baseline, a hold and an after window; a session idle in a REPEATABLE READ
 * transaction (application_name chaos-xmin-holder) pinning the xmin horizon for XMIN_HOLD_MS; the
 * claim's scan timed every second; `outbox health` during the hold; dead tuples and VACUUM before
 * the release and after it.
 */
const xminHold = async (url: string, faults: Array<Fault>, say: (m: string) => void) => {
  const loader = new pg.Client({ connectionString: url, application_name: "chaos-loader" } as pg.ClientConfig)
  await loader.connect()
  let loaderEvents = 0
  let loading = true
  let batch = 0
  const perTick = Math.max(1, Math.round(XMIN_RATE / 10))
  const loading_ = (async () => {
    while (loading) {
      const tick = Date.now()
      await loader.query(
        `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
         SELECT 'Chaos', 'h-' || (($1::int * $2::int + g) % 500), 'ChaosEvent', jsonb_build_object('pid', 'h.' || $1::text || '.' || g)
         FROM generate_series(1, $2::int) g`,
        [batch++, perTick]
      ).then(() => (loaderEvents += perTick), () => undefined)
      await sleep(Math.max(0, 100 - (Date.now() - tick)))
    }
  })()
  const probe = new pg.Client({ connectionString: url, application_name: "chaos-claim-probe" } as pg.ClientConfig)
  await probe.connect()
  const probes: Array<{ at: number; ms: number }> = []
  let probing = true
  const probing_ = (async () => {
    while (probing) {
      try {
        await probe.query("BEGIN")
        const { rows } = await probe.query<{ "QUERY PLAN": Array<{ "Execution Time": number }> }>(
          `EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM outbox
           WHERE status IN ('PENDING', 'FAILED') AND (available_at IS NULL OR available_at <= now())
           ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED`
        )
        probes.push({ at: Date.now(), ms: rows[0]!["QUERY PLAN"][0]!["Execution Time"] })
      } finally {
        await probe.query("ROLLBACK").catch(() => undefined)
      }
      await sleep(1_000)
    }
  })()

  const start = Date.now()
  await sleep(XMIN_BASELINE_MS)
  const deadTuplesBefore = await deadTuples(probe)
  const holder = new pg.Client({ connectionString: url, application_name: HOLDER_APP } as pg.ClientConfig)
  await holder.connect()
  await holder.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
  await holder.query("SELECT count(*) FROM outbox")
  const holdStart = Date.now()
  const eventsAtHold = loaderEvents
  say(`xmin-hold: a transaction idle in REPEATABLE READ (${HOLDER_APP}) pins the xmin horizon for ${XMIN_HOLD_MS / 1000} s; loading ${XMIN_RATE} events/s`)
  await sleep(XMIN_HEALTH_AT_MS)
  const health = await runHealth(url, XMIN_HEALTH_ARGS)
  await sleep(Math.max(0, holdStart + XMIN_HOLD_MS - Date.now() - 3_000))
  const vacuumAtEnd = await vacuumVerbose(url)
  await sleep(Math.max(0, holdStart + XMIN_HOLD_MS - Date.now()))
  const deadTuplesAtEnd = await deadTuples(probe)
  const eventsDuringHold = loaderEvents - eventsAtHold
  await holder.query("ROLLBACK")
  await holder.end()
  const holdEnd = Date.now()
  faults.push({ at: holdEnd, kind: "xmin", index: 0 })
  say(`xmin-hold: released after ${((holdEnd - holdStart) / 1000).toFixed(1)} s; VACUUM at its end could not remove ${vacuumAtEnd.notRemovable} dead row versions`)
  await sleep(XMIN_AFTER_MS)
  loading = false
  await loading_
  await loader.end()
  const vacuumAfter = await vacuumVerbose(url)
  const deadTuplesAfterVacuum = await deadTuples(probe)
  probing = false
  await probing_
  await probe.end()
  const end = Date.now()
  return {
    start, end, holdStart, holdEnd, loaderEvents, eventsDuringHold, deadTuplesBefore, deadTuplesAtEnd, deadTuplesAfterVacuum,
    vacuumNotRemovable: vacuumAtEnd.notRemovable, vacuumRemovedAfter: vacuumAfter.removed, probes, health
  }
}

/** The xmin-hold report: latency windows from the rows and the receiver's log, and the health verdict (a failure when it does not name the holder). */
const xminResult = async (
  db: pg.Pool,
  x: Awaited<ReturnType<typeof xminHold>>,
  deliveries: ReadonlyArray<Delivery>,
  failures: Array<string>
): Promise<XminReport> => {
  const first = new Map<string, number>()
  for (const d of deliveries) if (!first.has(d.trackingId) || first.get(d.trackingId)! > d.at) first.set(d.trackingId, d.at)
  const { rows } = await db.query<{ tracking_id: string; created: number }>(
    `SELECT tracking_id::text, (extract(epoch FROM created_at) * 1000)::float8 AS created FROM outbox WHERE payload->>'pid' LIKE 'h.%'`
  )
  const mid = x.holdStart + (x.holdEnd - x.holdStart) / 2
  const windows: ReadonlyArray<[string, number, number]> = [
    ["before", x.start, x.holdStart],
    ["hold, 1st half", x.holdStart, mid],
    ["hold, 2nd half", mid, x.holdEnd],
    ["after", x.holdEnd, x.end]
  ]
  const pickup = windows.map(([window, from, to]): LatencyWindow => {
    const latencies = rows.filter((r) => r.created >= from && r.created < to && first.has(r.tracking_id))
      .map((r) => first.get(r.tracking_id)! - r.created).sort((a, b) => a - b)
    return { window, events: latencies.length, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99) }
  })
  const claimProbe = windows.map(([window, from, to]) => {
    const ms = x.probes.filter((p) => p.at >= from && p.at < to).map((p) => p.ms).sort((a, b) => a - b)
    return { window, samples: ms.length, p50Ms: percentile(ms, 0.5), maxMs: ms.length === 0 ? null : ms[ms.length - 1]! }
  })
  let level = "unreadable"
  let finding: XminReport["health"]["finding"] = null
  let findings: ReadonlyArray<string> = []
  try {
    const report = JSON.parse(x.health.stdout) as { level: string; findings: ReadonlyArray<{ name: string; level: string; message: string }> }
    level = report.level
    const named = report.findings.find((f) => f.message.includes(HOLDER_APP))
    finding = named === undefined ? null : { name: named.name, level: named.level, message: named.message }
    findings = report.findings.map((f) => `${f.name} ${f.level}`)
  } catch {
    // not JSON: reported as unreadable
  }
  const named = finding !== null
  if (!named) failures.push(`outbox health did not name the session holding the xmin horizon (level ${level})`)
  return {
    holdSeconds: (x.holdEnd - x.holdStart) / 1000,
    loaderEvents: x.loaderEvents,
    eventsDuringHold: x.eventsDuringHold,
    deadTuplesBefore: x.deadTuplesBefore,
    deadTuplesAtEnd: x.deadTuplesAtEnd,
    deadTuplesAfterVacuum: x.deadTuplesAfterVacuum,
    vacuumNotRemovable: x.vacuumNotRemovable,
    vacuumRemovedAfter: x.vacuumRemovedAfter,
    claimProbe,
    pickup,
    health: { level, thresholdArgs: XMIN_HEALTH_ARGS, named, finding, findings }
  }
}

const runScenario = async (scenario: Kind, seed: number): Promise<ScenarioResult> => {
  const started = Date.now()
  const random = prng(seed)
  const logDir = Path.join(RESULTS_DIR, "logs", scenario)
  Fs.rmSync(logDir, { recursive: true, force: true })
  Fs.mkdirSync(logDir, { recursive: true })

  const own = scenario === "pg-restart" ? await startOwnServer() : undefined
  const database = await freshDatabase(own?.url ?? SERVER_URL)
  log(`${scenario}: seed ${seed}, sink ${SINK}, database ${database.name}${own === undefined ? "" : ` on the harness's own server ${own.url}`}, ordering ${ORDERING}, fairness ${FAIRNESS}`)
  const receiver: Receiver = SINK === "nats" ? await startNatsReceiver() : await startReceiver()
  // the harness's checking connection: a pool of one that never closes it while idle (pool-exhaustion
  // opens it before filling the server) and replaces it when the server ended it (pg-restart)
  const db = new pg.Pool({ connectionString: database.url, max: 1, idleTimeoutMillis: 0 })
  db.on("error", () => undefined)
  await db.query("SELECT 1")

  // --- processes --------------------------------------------------------------
  const relayIncarnation = new Array<number>(RELAYS).fill(0)
  const relays: Array<Proc> = []
  const startRelay = (i: number) => {
    const incarnation = relayIncarnation[i]!++
    relays[i] = spawnTs(
      RELAY_FILE,
      {
        DATABASE_URL: relayDatabaseUrl(database.url, i, incarnation),
        OUTBOX_SINK_URL: receiver.urlFor(i, incarnation),
        OUTBOX_CONCURRENCY: "2",
        OUTBOX_POLL_INTERVAL_MS: "50",
        OUTBOX_LEASE_SECONDS: String(LEASE_SECONDS),
        OUTBOX_ORDERING: ORDERING,
        OUTBOX_FAIRNESS: FAIRNESS,
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
  let producerFailures = 0
  const commitTimes: Array<{ producer: number; at: number }> = []
  const startProducer = (i: number) => {
    const incarnation = producerIncarnation[i]!++
    inTransaction[i] = false
    const proc = spawnTs(
      PRODUCER_FILE,
      {
        DATABASE_URL: database.url,
        CHAOS_PRODUCER: String(i),
        // producer 0 publishes through the Effect API (the orders example's path), producer 1 through
        // @outbox/client in its own pg transactions
        CHAOS_API: i === 1 ? "client" : "effect",
        CHAOS_INCARNATION: String(incarnation),
        CHAOS_SEED: String(seed),
        CHAOS_KEYS: "20",
        CHAOS_HOLD_PROB: scenario === "producer-kills" ? "0.5" : "0.3",
        CHAOS_HOLD_MAX_MS: "300",
        // a 60 s outage with the fixture's 50 ms..1 s backoff is ~60 failed attempts per event: with
        // the default max_retries (5) the sink-outage would dead-letter most of its backlog
        ...(scenario === "sink-outage" ? { CHAOS_MAX_RETRIES: process.env.CHAOS_MAX_RETRIES ?? "10000" } : {}),
        // the connection scenarios: a transaction whose backend is terminated fails, and the producer
        // goes on (as an application would) instead of exiting
        ...(NO_RESTART.includes(scenario) ? { CHAOS_CONTINUE_ON_ERROR: "1" } : {})
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
            commitTimes.push({ producer: i, at: Date.now() })
          } else if (message.t === "fail") {
            inTransaction[i] = false
            producerFailures++
          }
        } catch {
          // not a protocol line
        }
      }
    )
    producers[i] = proc
  }

  const faults: Array<Fault> = []
  const freezes: Array<Freeze> = []
  /** The relay currently SIGSTOPped, if any: the cleanup resumes it before anything else. */
  let frozen: Proc | undefined
  let outageWindow: { start: number; end: number; backlog: number } | undefined
  let capped = false
  let settled = false
  let settledAt = 0
  /** No-restart scenarios: processes that exited before the harness stopped them. */
  let stopping = false
  const exits: Array<{ name: string; code: number | null; signal: string | null; atSeconds: number }> = []
  let connectionFault: { terminated: number; rounds: number; held: number; target: number; refused: string | null; start: number; end: number } | undefined
  let recoveredSeconds: number | null = null
  const restarts: Array<{ mode: "fast" | "immediate"; downSeconds: number }> = []
  let xminReport: Awaited<ReturnType<typeof xminHold>> | undefined
  /** pool-exhaustion: the harness's idle connections, always closed in the `finally` below. */
  const hogs: Array<pg.Client> = []
  try {
    // relay-freeze: 20 ms per request, so that a relay is mid-batch (holds leases) most of the time
    if (scenario === "relay-freeze") receiver.setLatency(20)
    for (let i = 0; i < RELAYS; i++) startRelay(i)
    for (let i = 0; i < PRODUCERS; i++) startProducer(i)
    if (NO_RESTART.includes(scenario)) {
      for (const p of [...relays, ...producers]) {
        p.child.once("exit", (code, signal) => {
          if (stopping) return
          exits.push({ name: p.name, code, signal, atSeconds: (Date.now() - started) / 1000 })
          log(`${scenario}: ${p.name} EXITED (${code ?? signal}) — not restarted`)
        })
      }
    }

    // warm-up: both producers committing and relays delivering, before the first fault
    const warm = await waitFor(() => producerCommits >= PRODUCERS && receiver.deliveries.length > 0, 60_000, 100)
    if (!warm) throw new Error(`${scenario}: no commit or no delivery within 60 s (see ${logDir})`)
    if (NO_RESTART.includes(scenario)) {
      // the connection faults are for running processes: every relay past its boot and delivering,
      // every producer committing
      const allUp = await waitFor(() =>
        Array.from({ length: RELAYS }, (_, r) => r).every((r) => receiver.deliveries.some((d) => d.relay === r)) &&
        Array.from({ length: PRODUCERS }, (_, p) => p).every((p) => commitTimes.some((c) => c.producer === p)), 30_000, 50)
      if (!allUp) throw new Error(`${scenario}: not every relay delivering and every producer committing within 30 s (see ${logDir})`)
    }
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
    } else if (scenario === "sink-outage") {
      // load first, then the sink answers 503 to everything for the window, then 204 again
      await sleep(QUICK ? 2_000 : 5_000)
      const outageMs = Math.min(QUICK ? 6_000 : 60_000, FAULT_CAP_MS)
      receiver.setOutage(true)
      const start = Date.now()
      log(`${scenario}: sink down (${SINK === "nats" ? "NATS refusing connections" : "503"}) for ${outageMs / 1000} s`)
      await sleep(outageMs)
      const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE status <> 'COMPLETED'`)
      receiver.setOutage(false)
      const end = Date.now()
      outageWindow = { start, end, backlog: rows[0]!.n }
      faults.push({ at: end, kind: "sink", index: 0 })
      log(`${scenario}: sink back, backlog ${rows[0]!.n}`)
    } else if (scenario === "relay-freeze") {
      // SIGSTOP a delivering relay for longer than its lease (the other relays' reapers recover its
      // leases and re-claim the events), then SIGCONT: it resumes mid-batch with stale leases
      const cycles = QUICK ? 1 : 5
      const freezeMs = LEASE_SECONDS * 1000 + 5_000
      for (let cycle = 0; cycle < cycles; cycle++) {
        if (Date.now() - faultStart > FAULT_CAP_MS) {
          capped = true
          break
        }
        await sleep(1_500 + Math.floor(random() * 1_000))
        // freeze a relay while one of its requests is at the receiver: it is then mid-batch and
        // certainly holds leases (the request it waits for, and the rest of its batch); the
        // receiver's latency (below) keeps such a window open most of the time
        await waitFor(() => receiver.busyRelays().length > 0, 3_000, 1)
        const busy = receiver.busyRelays()
        const latest = busy.length > 0 ? busy[Math.floor(random() * busy.length)]! : -1
        const i = latest >= 0 ? latest : Math.floor(random() * RELAYS)
        const proc = relays[i]!
        frozen = proc
        killGroup(proc.child, "SIGSTOP")
        const frozenAt = Date.now()
        await sleep(freezeMs)
        killGroup(proc.child, "SIGCONT")
        frozen = undefined
        const resumedAt = Date.now()
        freezes.push({ relay: i, app: relayApp(i, relayIncarnation[i]! - 1), frozenAt, resumedAt })
        faults.push({ at: resumedAt, kind: "freeze", index: i, active: latest >= 0 })
        log(`${scenario}: freeze ${cycle + 1}/${cycles}: relay ${i} stopped ${(freezeMs / 1000).toFixed(0)} s${latest >= 0 ? " (delivering)" : ""}`)
      }
      // let the last resumed relay run into its stale leases while the load goes on
      await sleep(2_000)
    } else if (scenario === "backend-kills") {
      // 5 times a second, terminate every backend of the chaos database but the harness's own
      // connection: the relays' and producers' pooled connections die under them, mid-claim,
      // mid-transaction or idle; nothing is restarted
      const durationMs = Math.min(QUICK ? 6_000 : 30_000, FAULT_CAP_MS)
      let terminated = 0
      let rounds = 0
      const start = Date.now()
      while (Date.now() - start < durationMs) {
        const { rows } = await db.query<{ n: number }>(
          `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`
        )
        terminated += rows[0]!.n
        rounds++
        if (rows[0]!.n > 0) faults.push({ at: Date.now(), kind: "backend", index: rows[0]!.n })
        if (rounds % 10 === 0) log(`${scenario}: round ${rounds}: ${terminated} backends terminated so far`)
        await sleep(200)
      }
      const end = Date.now()
      connectionFault = { terminated, rounds, held: 0, target: 0, refused: null, start, end }
      log(`${scenario}: ${terminated} backends terminated in ${rounds} rounds over ${((end - start) / 1000).toFixed(1)} s`)
    } else if (scenario === "pg-restart") {
      // the server restarted under load, clean (fast shutdown: every session ends with 57P01 admin
      // shutdown) and crashed (immediate shutdown: 57P02, WAL replayed at the next start), and down a
      // while each time (connections refused); nothing is restarted but the server
      const plan: ReadonlyArray<{ mode: "fast" | "immediate"; downMs: number }> = QUICK
        ? [{ mode: "fast", downMs: 1_500 }, { mode: "immediate", downMs: 500 }]
        : [{ mode: "fast", downMs: 2_000 }, { mode: "immediate", downMs: 1_000 }, { mode: "fast", downMs: 10_000 }, { mode: "immediate", downMs: 3_000 }]
      const start = Date.now()
      for (const [k, step] of plan.entries()) {
        await sleep(k === 0 ? 1_000 : QUICK ? 2_000 : 3_000 + Math.floor(random() * 2_000))
        const down = Date.now()
        await own!.restart(step.mode, step.downMs)
        const up = Date.now()
        restarts.push({ mode: step.mode, downSeconds: (up - down) / 1000 })
        faults.push({ at: up, kind: "restart", index: k })
        log(`${scenario}: restart ${k + 1}/${plan.length} (${step.mode}): refused connections for ${((up - down) / 1000).toFixed(1)} s`)
      }
      const end = Date.now()
      connectionFault = { terminated: 0, rounds: plan.length, held: 0, target: 0, refused: null, start, end }
    } else if (scenario === "xmin-hold") {
      xminReport = await xminHold(database.url, faults, log)
      connectionFault = { terminated: 0, rounds: 1, held: 0, target: 0, refused: null, start: xminReport.start, end: xminReport.end }
    } else if (scenario === "pool-exhaustion") {
      // the harness's checking connection (db) is already open; now idle connections to the chaos
      // database until the server refuses one, at most min(300, max_connections - reserved - in use),
      // so that superuser_reserved_connections stay free; held, then always released (finally)
      const { rows: settings } = await db.query<{ max: number; reserved: number; used: number }>(
        `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved,
                (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') AS used`
      )
      const { max, reserved, used } = settings[0]!
      const target = Math.max(0, Math.min(300, max - reserved - used))
      const start = Date.now()
      let refused: string | null = null
      /** Opens idle connections (10 at a time) until `n` are held or the server refuses one. */
      const fill = async (n: number) => {
        let stop = false
        while (hogs.length < n && !stop) {
          const batch = Math.min(10, n - hogs.length)
          const opened = await Promise.allSettled(Array.from({ length: batch }, async () => {
            const c = new pg.Client({ connectionString: database.url, application_name: "chaos-hog" } as pg.ClientConfig)
            c.on("error", () => undefined)
            try {
              await c.connect()
            } catch (e) {
              await c.end().catch(() => undefined)
              throw e
            }
            return c
          }))
          for (const o of opened) {
            if (o.status === "fulfilled") hogs.push(o.value)
            else {
              stop = true
              refused ??= String((o.reason as Error)?.message ?? o.reason)
            }
          }
        }
      }
      await fill(target)
      // the processes' pooled connections would carry them through untouched: terminate them once,
      // so that they have to reconnect against the full server, and top the idle connections up
      // again with the slots that frees
      const { rows: killed } = await db.query<{ n: number }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND application_name <> 'chaos-hog'`
      )
      const terminated = killed[0]!.n
      await fill(target + terminated)
      const holdMs = QUICK ? 5_000 : 20_000
      log(`${scenario}: holding ${hogs.length} idle connections (target ${target}: max_connections ${max} - reserved ${reserved} - ${used} in use, + ${terminated} terminated backends)${refused === null ? "" : `; refused: ${refused}`} for ${holdMs / 1000} s`)
      await sleep(holdMs)
      const held = hogs.length
      await Promise.all(hogs.splice(0).map((c) => c.end().catch(() => undefined)))
      const end = Date.now()
      faults.push({ at: end, kind: "pool", index: held })
      connectionFault = { terminated, rounds: 1, held, target: target + terminated, refused, start, end }
      log(`${scenario}: released ${held} connections`)
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
    if (connectionFault !== undefined) {
      // recovered: every relay delivered and every producer committed after the fault (the load goes on
      // meanwhile); up to 15 s
      const end = connectionFault.end
      const allBack = () =>
        Array.from({ length: RELAYS }, (_, r) => r).every((r) => receiver.deliveries.some((d) => d.status === 204 && d.relay === r && d.at > end)) &&
        Array.from({ length: PRODUCERS }, (_, p) => p).every((p) => commitTimes.some((c) => c.producer === p && c.at > end))
      const back = await waitFor(allBack, 15_000, 50)
      // the latest of the processes' first work after the fault
      const firsts = [
        ...Array.from({ length: RELAYS }, (_, r) => receiver.deliveries.find((d) => d.status === 204 && d.relay === r && d.at > end)?.at),
        ...Array.from({ length: PRODUCERS }, (_, p) => commitTimes.find((c) => c.producer === p && c.at > end)?.at)
      ]
      recoveredSeconds = back ? (Math.max(...firsts.map((t) => t ?? Date.now())) - end) / 1000 : null
      log(`${scenario}: ${back ? `every relay and producer working again ${recoveredSeconds!.toFixed(1)} s after the fault` : "NOT every process working again 15 s after the fault"}`)
    }

    // --- settle: stop the producers, wait for every committed row to complete --------
    stopping = true
    await Promise.all(producers.map((p) => stop(p)))
    const lastFault = faults.length > 0 ? faults[faults.length - 1]!.at : faultStart
    settled = await waitFor(async () => {
      // DEAD_LETTER is final too: it ends the wait, and fails the scenario below
      const { rows } = await db.query<{ open: number; total: number }>(
        `SELECT count(*) FILTER (WHERE status NOT IN ('COMPLETED', 'DEAD_LETTER'))::int AS open, count(*)::int AS total FROM outbox`
      )
      return rows[0]!.total > 0 && rows[0]!.open === 0
    }, scenario === "xmin-hold" ? XMIN_SETTLE_DEADLINE_MS : SETTLE_DEADLINE_MS, 100)
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

    // per key, in arrival order: the first successful delivery of an id lower than one of the key
    // already delivered is a violation. A redelivery is at-least-once, allowed: of the highest id so far
    // (a head redelivered), or, with runs (OUTBOX_ORDERING_RUN > 1), of ids of a run a killed relay had
    // delivered and not completed, which come again after the later ones of that run: a *rewind*,
    // counted apart (the inbox drops them)
    const highest = new Map<string, bigint>()
    const firstSeen = new Set<string>()
    const orderViolations: Array<{ key: string; id: string; after: string; relay: number; at: number }> = []
    let rewinds = 0
    for (const d of deliveries) {
      const row = byTracking.get(d.trackingId)
      if (row === undefined) continue
      const id = BigInt(row.id)
      const max = highest.get(row.aggregate_id)
      const again = firstSeen.has(d.trackingId)
      firstSeen.add(d.trackingId)
      if (max !== undefined && id < max) {
        if (again) rewinds++
        else orderViolations.push({ key: row.aggregate_id, id: row.id, after: String(max), relay: d.relay, at: d.at })
      } else highest.set(row.aggregate_id, id)
    }

    const statuses: Record<string, number> = {}
    for (const r of rows) statuses[r.status] = (statuses[r.status] ?? 0) + 1
    const deliveriesByRelay: Record<string, number> = {}
    for (const d of deliveries) deliveriesByRelay[`r${d.relay}`] = (deliveriesByRelay[`r${d.relay}`] ?? 0) + 1

    const deadLettered = rows.filter((r) => r.status === "DEAD_LETTER").length
    const maxRetryCount = rows.reduce((m, r) => Math.max(m, r.retry_count), 0)

    // fencing, from the database side: a completion whose old lock token was not claimed by the
    // completing session (or was never claimed at all) came from a stale lease holder
    const { rows: staleCompletions } = await db.query<{ id: string; token: string | null; completer: string; holder: string | null; at: Date }>(`
      WITH claims AS (
        SELECT DISTINCT new_token AS token, app FROM chaos_transitions
        WHERE new_status = 'PROCESSING' AND new_token IS NOT NULL
      )
      SELECT t.id::text, t.old_token::text AS token, t.app AS completer, c.app AS holder, t.at
      FROM chaos_transitions t LEFT JOIN claims c ON c.token = t.old_token
      WHERE t.new_status = 'COMPLETED' AND (c.app IS NULL OR c.app <> t.app)
      ORDER BY t.seq`)

    // no lease taken away while valid: a row leaving PROCESSING (claimed over, reaped, released, retried,
    // completed) by a session other than its lock token's claimer, while its lease (locked_until as last
    // renewed) had not expired yet. `at` is clock_timestamp(), after the statement's now(): never a false
    // alarm. With it, no event can be in two handlers at once while its lease is valid.
    const { rows: leaseViolations } = await db.query<{ id: string; token: string | null; app: string; holder: string | null; lockedUntil: Date; at: Date }>(`
      WITH claims AS (
        SELECT DISTINCT new_token AS token, app FROM chaos_transitions
        WHERE new_status = 'PROCESSING' AND new_token IS NOT NULL
      )
      SELECT t.id::text, t.old_token::text AS token, t.app, c.app AS holder, t.old_locked_until AS "lockedUntil", t.at
      FROM chaos_transitions t LEFT JOIN claims c ON c.token = t.old_token
      WHERE t.old_status = 'PROCESSING' AND t.old_locked_until > t.at AND (c.app IS NULL OR c.app <> t.app)
      ORDER BY t.seq`)

    // the check above only means something if every claim names its relay process
    const { rows: attribution } = await db.query<{ unattributed: number }>(
      `SELECT count(*)::int AS unattributed FROM chaos_transitions WHERE new_status = 'PROCESSING' AND app !~ '^r[0-9]+\\.[0-9]+$'`
    )
    const unattributedClaims = attribution[0]!.unattributed

    let outage: ScenarioResult["outage"] = null
    if (outageWindow !== undefined) {
      const { start, end, backlog } = outageWindow
      const firstAfter = receiver.deliveries.find((d) => d.status === 204 && d.at >= end)
      // the backlog is drained when the last row created before the sink came back is completed
      const { rows: drained } = await db.query<{ at: Date | null }>(
        `SELECT max(t.at) AS at FROM chaos_transitions t JOIN outbox o ON o.id = t.id
         WHERE t.new_status = 'COMPLETED' AND o.created_at < $1`,
        [new Date(end)]
      )
      const drainedAt = drained[0]?.at ?? null
      outage = {
        seconds: (end - start) / 1000,
        rejected: receiver.deliveries.filter((d) => d.status === 503).length,
        backlogAtRecovery: backlog,
        firstDeliveryAfterSeconds: firstAfter === undefined ? null : (firstAfter.at - end) / 1000,
        drainSeconds: settled && drainedAt !== null ? Math.max(0, drainedAt.getTime() - end) / 1000 : null
      }
    }

    let freezeReport: ScenarioResult["freezes"] = null
    let leaseLostLogged: ScenarioResult["leaseLostLogged"] = null
    if (scenario === "relay-freeze") {
      const trackingOf = new Map(rows.map((r) => [r.id, r.tracking_id]))
      const report = []
      for (const f of freezes) {
        // its leases recovered by another relay's reaper while it was stopped, and whether another
        // relay claimed the event again before it resumed
        const { rows: reaped } = await db.query<{ id: string; reclaimed: boolean }>(`
          WITH held AS (SELECT DISTINCT new_token AS token FROM chaos_transitions WHERE new_status = 'PROCESSING' AND app = $1)
          SELECT t.id::text, EXISTS (
            SELECT 1 FROM chaos_transitions c
            WHERE c.id = t.id AND c.new_status = 'PROCESSING' AND c.app <> $1 AND c.seq > t.seq AND c.at <= $3
          ) AS reclaimed
          FROM chaos_transitions t JOIN held h ON h.token = t.old_token
          WHERE t.old_status = 'PROCESSING' AND t.new_status IN ('PENDING', 'DEAD_LETTER') AND t.app <> $1
            AND t.at BETWEEN $2 AND $3`,
          [f.app, new Date(f.frozenAt), new Date(f.resumedAt)]
        )
        const reapedTracking = new Set(reaped.map((r) => trackingOf.get(r.id)))
        const incarnation = Number(f.app.split(".")[1])
        report.push({
          relay: f.app,
          frozenSeconds: (f.resumedAt - f.frozenAt) / 1000,
          leasesReaped: reaped.length,
          reclaimedByOthers: reaped.filter((r) => r.reclaimed).length,
          staleDeliveries: deliveries.filter((d) =>
            d.relay === f.relay && d.incarnation === incarnation && d.at >= f.frozenAt && reapedTracking.has(d.trackingId)
          ).length
        })
      }
      freezeReport = report
      // the frozen relays' own view: every fenced transition is logged as "lease lost during <op> for event(s) ..."
      leaseLostLogged = {}
      for (const relay of new Set(freezes.map((f) => f.relay))) {
        const text = Fs.readFileSync(Path.join(logDir, `relay-${relay}.log`), "utf8")
        for (const m of text.matchAll(/lease lost during (\w+) for event\(s\) ([\d, ]+)/g)) {
          leaseLostLogged[m[1]!] = (leaseLostLogged[m[1]!] ?? 0) + m[2]!.split(",").filter((x) => x.trim() !== "").length
        }
      }
    }

    const failures: Array<string> = []
    if (rows.length === 0) failures.push("nothing committed")
    if (deadLettered > 0) failures.push(`${deadLettered} dead-lettered`)
    if (staleCompletions.length > 0) failures.push(`${staleCompletions.length} completions by a stale lease holder`)
    if (leaseViolations.length > 0) failures.push(`${leaseViolations.length} leases taken away while still valid`)
    if (unattributedClaims > 0) failures.push(`${unattributedClaims} claims not attributed to a relay process (application_name)`)
    if (lostRows.length > 0) failures.push(`${lostRows.length} lost`)
    if (phantomDeliveries.length > 0) failures.push(`${phantomDeliveries.length} phantom`)
    if (rolledBackDelivered.length > 0) failures.push(`${rolledBackDelivered.length} rolled-back events delivered`)
    if (payloadMismatch.length > 0) failures.push(`${payloadMismatch.length} deliveries whose body does not match the row`)
    if (ORDERING === "key" && orderViolations.length > 0) failures.push(`${orderViolations.length} per-key order violations`)
    if (!settled) failures.push(`not settled within ${(scenario === "xmin-hold" ? XMIN_SETTLE_DEADLINE_MS : SETTLE_DEADLINE_MS) / 1000} s`)
    if (receiver.malformed() > 0) failures.push(`${receiver.malformed()} malformed requests`)

    let connections: ScenarioResult["connections"] = null
    if (connectionFault !== undefined) {
      const { start, end } = connectionFault
      const firstWorkAfter: Record<string, number | null> = {}
      for (let r = 0; r < RELAYS; r++) {
        const d = deliveries.find((x) => x.relay === r && x.at > end)
        firstWorkAfter[`relay ${r}`] = d === undefined ? null : (d.at - end) / 1000
      }
      for (let p = 0; p < PRODUCERS; p++) {
        const c = commitTimes.find((x) => x.producer === p && x.at > end)
        firstWorkAfter[`producer ${p}`] = c === undefined ? null : (c.at - end) / 1000
      }
      connections = {
        terminated: connectionFault.terminated,
        rounds: connectionFault.rounds,
        held: connectionFault.held,
        target: connectionFault.target,
        refused: connectionFault.refused,
        faultSeconds: (end - start) / 1000,
        exits,
        producerFailures,
        recoveredSeconds,
        firstWorkAfter,
        deliveriesDuring: deliveries.filter((d) => d.at >= start && d.at <= end).length,
        commitsDuring: commitTimes.filter((c) => c.at >= start && c.at <= end).length
      }
      if (exits.length > 0) failures.push(`${exits.length} process(es) exited: ${exits.map((e) => `${e.name} (${e.code ?? e.signal})`).join(", ")}`)
      if (recoveredSeconds === null) failures.push(`not every relay and producer working again within 15 s of the fault`)
      if (scenario === "backend-kills" && connectionFault.terminated === 0) failures.push(`no backend terminated`)
    }

    const xmin = xminReport === undefined ? null : await xminResult(db, xminReport, deliveries, failures)
    const midTransaction = scenario === "producer-kills" ? faults.filter((f) => f.midTransaction === true).length : null
    return {
      scenario,
      seed,
      ordering: ORDERING,
      fairness: FAIRNESS,
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
      rewinds,
      settled,
      recoverSeconds,
      statuses,
      deliveriesByRelay,
      malformedRequests: receiver.malformed(),
      deadLettered,
      staleCompletions: staleCompletions.length,
      leaseViolations: leaseViolations.length,
      maxRetryCount,
      outage,
      freezes: freezeReport,
      leaseLostLogged,
      connections,
      restarts: scenario === "pg-restart" ? restarts : null,
      xmin,
      wallSeconds: (Date.now() - started) / 1000,
      database: database.name,
      ownServer: own !== undefined,
      // enough to say precisely what was lost and how (status, attempts, last error of each row)
      samples: {
        lost: lostRows.slice(0, 50),
        phantom: phantomDeliveries.slice(0, 50),
        orderViolations: orderViolations.slice(0, 50),
        staleCompletions: staleCompletions.slice(0, 50),
        leaseViolations: leaseViolations.slice(0, 50)
      }
    }
  } finally {
    // always: every process of the scenario stopped, the receiver and the connection closed
    if (frozen !== undefined) killGroup(frozen.child, "SIGCONT")
    stopping = true
    await Promise.all(hogs.splice(0).map((c) => c.end().catch(() => undefined)))
    receiver.setOutage(false)
    await Promise.all([...relays, ...producers].map((p) => sigkill(p)))
    await receiver.close()
    await db.end().catch(() => undefined)
    await own?.close()
  }
}

// ---------------------------------------------------------------------------
// main

const SCENARIOS: ReadonlyArray<{ name: Kind; seed: number }> = [
  { name: "relay-kills", seed: SEED * 1000 + 1 },
  { name: "producer-kills", seed: SEED * 1000 + 7 },
  { name: "sink-outage", seed: SEED * 1000 + 11 },
  { name: "relay-freeze", seed: SEED * 1000 + 13 },
  { name: "backend-kills", seed: SEED * 1000 + 17 },
  { name: "pool-exhaustion", seed: SEED * 1000 + 19 },
  { name: "pg-restart", seed: SEED * 1000 + 23 },
  { name: "xmin-hold", seed: SEED * 1000 + 29 }
]

/** Run when --only is not given (CI's quick run). */
const DEFAULT: ReadonlyArray<Kind> = ["relay-kills", "producer-kills", "sink-outage", "relay-freeze", "backend-kills", "pool-exhaustion", "pg-restart", "xmin-hold"]

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const lpad = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)

const printTable = (results: ReadonlyArray<ScenarioResult>) => {
  const header = ["scenario", "faults", "committed", "delivered", "lost", "phantom", "dups", "order viol.", "dead", "stale compl.", "lease viol.", "recover s", "result"]
  const widths = [16, 7, 10, 10, 6, 8, 6, 12, 5, 12, 11, 10, 6]
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
      String(r.deadLettered),
      String(r.staleCompletions),
      String(r.leaseViolations),
      r.recoverSeconds === null ? "-" : r.recoverSeconds.toFixed(1),
      r.pass ? "PASS" : "FAIL"
    ]))
  }
  if (ORDERING !== "key") console.log("(order violations in parentheses: informational, OUTBOX_ORDERING=none)")
  else {
    const rewound = results.filter((r) => r.rewinds > 0)
    if (rewound.length > 0) {
      console.log(`rewinds (redeliveries of a run's events after later ones delivered before, among the duplicates): ${
        rewound.map((r) => `${r.scenario} ${r.rewinds}`).join(", ")
      }`)
    }
  }
  for (const r of results) {
    if (r.outage !== null) {
      const o = r.outage
      console.log(
        `${r.scenario}: sink down ${o.seconds.toFixed(1)} s, ${
          SINK === "nats" ? "the relays' connections to NATS refused" : `${o.rejected} requests answered 503`
        }, backlog ${o.backlogAtRecovery} when it came back; ` +
          `first delivery ${o.firstDeliveryAfterSeconds?.toFixed(2) ?? "-"} s after, backlog drained in ${o.drainSeconds?.toFixed(1) ?? "-"} s ` +
          `(max retry_count ${r.maxRetryCount})`
      )
    }
    if (r.freezes !== null) {
      for (const f of r.freezes) {
        console.log(
          `${r.scenario}: ${f.relay} stopped ${f.frozenSeconds.toFixed(1)} s: ${f.leasesReaped} of its leases reaped ` +
            `(${f.reclaimedByOthers} re-claimed by others before it resumed), ${f.staleDeliveries} stale deliveries`
        )
      }
      console.log(`${r.scenario}: lease lost (logged by the frozen relays, events per operation): ${JSON.stringify(r.leaseLostLogged)}`)
    }
    if (r.connections !== null) {
      const c = r.connections
      const fault = r.scenario === "backend-kills"
        ? `${c.terminated} backends terminated in ${c.rounds} rounds over ${c.faultSeconds.toFixed(1)} s`
        : r.xmin !== null
        ? `a transaction idle ${r.xmin.holdSeconds.toFixed(0)} s pinning the xmin horizon (${r.xmin.eventsDuringHold} events loaded meanwhile)`
        : r.restarts !== null
        ? `${r.restarts.length} restarts (${r.restarts.map((x) => `${x.mode}, down ${x.downSeconds.toFixed(1)} s`).join("; ")}) over ${c.faultSeconds.toFixed(1)} s`
        : `${c.held} idle connections held (target ${c.target}${c.refused === null ? "" : `, refused: ${c.refused}`}), the processes' ${c.terminated} backends terminated once, for ${c.faultSeconds.toFixed(1)} s`
      const after = Object.entries(c.firstWorkAfter).map(([k, v]) => `${k} ${v === null ? "-" : v.toFixed(2)}`).join(", ")
      console.log(
        `${r.scenario}: ${fault}; during it ${c.deliveriesDuring} deliveries, ${c.commitsDuring} commits, ${c.producerFailures} failed producer transactions; ` +
          `process exits: ${c.exits.length === 0 ? "none" : c.exits.map((e) => `${e.name} (${e.code ?? e.signal}) at ${e.atSeconds.toFixed(1)} s`).join(", ")}; ` +
          `all working again ${c.recoveredSeconds === null ? "NOT within 15 s" : `after ${c.recoveredSeconds.toFixed(2)} s`} (first work after the fault, s: ${after})`
      )
    }
  }
  for (const r of results) {
    if (r.xmin === null) continue
    const x = r.xmin
    const ms = (v: number | null) => (v === null ? "-" : `${v.toFixed(1)} ms`)
    console.log(
      `${r.scenario}: dead tuples ${x.deadTuplesBefore} before, ${x.deadTuplesAtEnd} at the end of the hold (VACUUM could not remove ${x.vacuumNotRemovable}), ` +
        `${x.deadTuplesAfterVacuum} after the release and a VACUUM (it removed ${x.vacuumRemovedAfter})`
    )
    console.log(`${r.scenario}: claim scan (100 rows) p50/max: ${x.claimProbe.map((c) => `${c.window} ${ms(c.p50Ms)}/${ms(c.maxMs)}`).join("; ")}`)
    console.log(`${r.scenario}: pickup latency p50/p99 of the loader's events: ${x.pickup.map((w) => `${w.window} ${ms(w.p50Ms)}/${ms(w.p99Ms)} (${w.events})`).join("; ")}`)
    console.log(`${r.scenario}: outbox health${x.health.thresholdArgs.length === 0 ? "" : ` ${x.health.thresholdArgs.join(" ")}`} during the hold: ${x.health.level} (${x.health.findings.join(", ")})${
      x.health.finding === null ? ", NOT naming the holder" : `; ${x.health.finding.name} ${x.health.finding.level}: ${x.health.finding.message}`
    }`)
  }
  for (const r of results) {
    if (!r.pass) console.log(`${r.scenario}: ${r.failures.join("; ")} (${r.ownServer ? `database ${r.database} removed with the harness's own server; logs kept` : `database ${r.database} kept`})`)
  }
}

const main = async () => {
  const started = Date.now()
  Fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const selected = SCENARIOS.filter((s) => (ONLY === undefined ? DEFAULT.includes(s.name) : ONLY.includes(s.name)))
  if (ONLY !== undefined) {
    const unknown = ONLY.filter((n) => !SCENARIOS.some((s) => s.name === n))
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(", ")}`)
  }
  const results: Array<ScenarioResult> = []
  for (const s of selected) {
    const result = await runScenario(s.name, s.seed)
    results.push(result)
    if (result.pass && !result.ownServer) await dropDatabase(result.database)
  }
  printTable(results)
  const wallSeconds = (Date.now() - started) / 1000
  console.log(`\ntotal ${wallSeconds.toFixed(1)} s`)
  const report = {
    at: new Date().toISOString(),
    node: process.version,
    options: { quick: QUICK, only: ONLY ?? null, seed: SEED, ordering: ORDERING, fairness: FAIRNESS, sink: SINK },
    setup: {
      relays: RELAYS,
      producers: PRODUCERS,
      producerApis: ["effect (Outbox.transaction)", "@outbox/client (pg)"],
      sink: SINK,
      concurrency: 2,
      pollIntervalMs: 50,
      leaseSeconds: LEASE_SECONDS
    },
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
