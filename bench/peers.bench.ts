/**
 * `npm run bench:peers`: this relay beside pg-boss and graphile-worker (each
 * with its documented high-throughput settings) and the raw SQL loop, on the
 * same machine, the same ~300-byte JSON payload and the same two workloads,
 * in one run. Every system runs in a fresh database of its own per workload,
 * and is started and stopped (pools closed) within it.
 *
 * - **W1, drain**: enqueue `--events` (default 50,000) events with each
 *   system's batched API (1,000 per call), `VACUUM ANALYZE`, then start its
 *   consumer (2 workers or the system's equivalent, no-op handler) and time
 *   from that start to the last completion (every event delivered, counted
 *   in memory, then none left unsettled in the database).
 * - **W2, steady**: 500 single-event transactions per second (BEGIN, the
 *   system's enqueue, COMMIT; open loop on a pool of 4 connections), a
 *   warm-up, then a measured window. Half-way through the warm-up the
 *   bench runs `ANALYZE` in the system's database, as autovacuum would
 *   within its first minute (`autovacuum_naptime`) in any deployment: the
 *   window measures the steady state, not plans a prepared statement made
 *   while its table was new and empty (every system gets it). Each event carries its
 *   enqueue time (`performance.timeOrigin + performance.now()`, taken in its
 *   transaction right after BEGIN) and the handler records its start: p50,
 *   p90, p99 and max latency over the window, delivered = produced (checked),
 *   issue → COMMIT times (whether the producer kept up), and CPU over the
 *   window: this process's (producer and consumer), the PostgreSQL backends'
 *   on the row's database (`/proc/<pid>/stat`), the whole machine's
 *   (`/proc/stat`) and the rest of the machine's.
 * - **Producer cost**, then, with the consumer stopped (and the code warmed
 *   by W2): such transactions back to back on one connection:
 *   transactions/s and this process's CPU per transaction.
 *
 * Anything lost, delivered twice, stalled for 30 s, or reported as an error
 * by a system fails the bench. Before each row the bench waits up to
 * `--max-wait` seconds (default 60, 5 with `--quick`) for the other processes
 * on the machine to use less than a quarter of a core.
 *
 * Options: `--quick` (5,000 events, 1 s warm-up, 5 s window), `--only
 * <names>` (comma-separated parts of "system mode" names: raw, relay,
 * pg-boss, graphile, "relay defaults"), `--workload w1|w2`, `--events N`, `--window S`, `--rate N`,
 * `--max-wait S`, `--w1-rounds N` (default 2: W1 best of N, systems in turn), `--profile DIR` (a V8 CPU profile of each W1 drain and of each W2 window, written to DIR and summarised).
 * `BENCH_RELAY_MODES` adds relay rows: a JSON object of mode
 * name → environment, e.g. `{"lease":{"OUTBOX_CLAIM_MODE":"lease"}}`. Writes
 * `bench/results/peers.json`. The server is `DATABASE_URL` (else
 * testcontainers or embedded PostgreSQL, as in the tests).
 */
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Os from "node:os"
import * as Path from "node:path"
import pg from "pg"
import { graphileWorker } from "./peers/graphile.ts"
import { dispatch, payload, type Instance, type Phase, type Subject, Tracker } from "./peers/harness.ts"
import { rawLoop, relay, type RelayMode } from "./peers/outbox.ts"
import { pgBoss } from "./peers/pgboss.ts"
import * as Profile from "./sinks/profile.ts"
import {
  backendCpu,
  backendCpuSeconds,
  epochMs,
  fmt,
  machineCpu,
  machineCpuPercent,
  now,
  percentile,
  runMain,
  writeResults
} from "./shared.ts"

// --- options -----------------------------------------------------------------

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const QUICK = flag("--quick")
const EVENTS = Number(option("--events") ?? (QUICK ? 5_000 : 50_000))
const RATE = Number(option("--rate") ?? 500)
const WARM_S = QUICK ? 1 : 3
const WINDOW_S = Number(option("--window") ?? (QUICK ? 5 : 20))
const PRODUCER_TX = QUICK ? 300 : 1_000
const ENQUEUE_BATCH = 1_000
/**
 * `--w1-rounds N` (default 2): W1 runs every system N times in turn and keeps each one's best. A drain of
 * 50,000 events lasts about a second, and the first run of a system's code in this process pays its JIT
 * warm-up: measured 2026-12-04, the relay's defaults drained 41–43k events/s as the first relay row and 46–47k
 * when the same row ran again later in the same process.
 */
const W1_ROUNDS = Number(option("--w1-rounds") ?? (QUICK ? 1 : 2))
/** `--profile DIR`: a V8 CPU profile of each W1 drain and each W2 window (profiled runs are slower: profile apart from measuring). */
const PROFILE_DIR = option("--profile")
/** A wait fails when nothing moved for this long. */
const STALL_MS = 30_000
const ONLY = option("--only")?.toLowerCase().split(",").filter((s) => s.length > 0)
/** Before each row, wait up to this long for the rest of the machine to go quiet (`--max-wait 0`: never). */
const MAX_WAIT_S = Number(option("--max-wait") ?? (QUICK ? 5 : 60))
/** Quiet: the other processes use less than this share of one core (%), over a second. */
const QUIET_PCT = 25
const CORES = Os.cpus().length
/** `--workload w1` or `w2`: run only that one. */
const WORKLOAD = option("--workload")

// --- the rows ----------------------------------------------------------------

/** Every relay row: 2 claim workers, as the other systems get 2 workers. */
const RELAY_BASE = { OUTBOX_CONCURRENCY: "2" }
/** The relay's rows, each an environment on top of `RELAY_BASE`: add a mode with a line (or `BENCH_RELAY_MODES`). */
const relayModes: ReadonlyArray<RelayMode> = [
  { mode: "defaults", env: {} },
  { mode: "poll 10 ms", env: { OUTBOX_POLL_INTERVAL_MS: "10" }, w1: false },
  // the fastest settings there are: those this version does not read are dropped
  // (claims of 1,000 from the start: a drain does not wait for the adaptive limit to grow; completed rows deleted)
  {
    mode: "best",
    env: {
      OUTBOX_BATCH_SIZE: "1000",
      OUTBOX_MIN_BATCH_SIZE: "1000",
      OUTBOX_POLL_INTERVAL_MS: "10",
      OUTBOX_CLAIM_MODE: "transaction",
      OUTBOX_COMPLETED: "delete"
    },
    partial: true
  },
  // rows for options of newer versions: skipped where the variable does not exist
  { mode: "transaction claim", env: { OUTBOX_CLAIM_MODE: "transaction" } },
  ...Object.entries(JSON.parse(process.env.BENCH_RELAY_MODES ?? "{}") as Record<string, Record<string, string>>).map((
    [mode, env]
  ) => ({ mode, env }))
]

const subjects: ReadonlyArray<Subject> = [
  rawLoop({ workers: 2, batch: 100, idleMs: 10 }),
  ...relayModes.flatMap((mode) => relay(RELAY_BASE, mode) ?? []),
  pgBoss({ mode: "2 workers × batch 100", batchSize: 100, localConcurrency: 2 }),
  pgBoss({ mode: "2 workers × batch 500", batchSize: 500, localConcurrency: 2 }),
  graphileWorker({ mode: "docs' perf preset: 24 jobs, localQueue 500", concurrentJobs: 24, maxPoolSize: 25, localQueueSize: 500 }),
  graphileWorker({ mode: "2 jobs, localQueue 100", concurrentJobs: 2, maxPoolSize: 10, localQueueSize: 100 })
].filter((s) => ONLY === undefined || ONLY.some((name) => `${s.system} ${s.mode}`.toLowerCase().includes(name)))

// --- the bench's own connection ----------------------------------------------

const admin = (url: string) =>
  Effect.acquireRelease(
    Effect.tryPromise(async () => {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end())
  )

const count = (client: pg.Client, text: string) =>
  Effect.tryPromise(() => client.query<{ n: number }>(text)).pipe(Effect.map((r) => Number(r.rows[0]!.n)))

/** CPU seconds so far of the server's backends on this database (the bench's own connection left out). */
const serverCpu = (client: pg.Client) =>
  Effect.tryPromise(() =>
    client.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
  ).pipe(Effect.map((r) => backendCpu(r.rows.map((row) => row.pid))))

class BenchFailure extends Error {}

/**
 * Waits until the other processes on the machine (the machine's busy time less this
 * process's, which is idle between rows) use less than `QUIET_PCT` % of a core, for at most
 * `MAX_WAIT_S`: on a shared machine a row should not start under someone else's load.
 */
const awaitQuiet = Effect.gen(function*() {
  const since = now()
  while (MAX_WAIT_S > 0) {
    const machine0 = machineCpu()
    const cpu0 = process.cpuUsage()
    yield* Effect.sleep(1000)
    const cpu = process.cpuUsage(cpu0)
    const others = machineCpuPercent(machine0, machineCpu()) * CORES - (cpu.user + cpu.system) / 1e4
    if (others < QUIET_PCT) return
    if (now() - since > MAX_WAIT_S * 1000) {
      console.log(`  (other processes still use ${fmt(others)} % of a core after ${MAX_WAIT_S} s: measuring anyway)`)
      return
    }
  }
})

/** A fresh database for one row; dropped when the scope closes, a moment after the row's own finalizers. */
const freshDatabase = (server: string) =>
  Effect.gen(function*() {
    const database = yield* TestDatabase.freshDatabase(server)
    // node-postgres resolves pool.end() before its sockets have closed: the DROP ... WITH (FORCE) that
    // follows would otherwise cut a connection still closing, an 'error' event nobody listens to
    yield* Effect.addFinalizer(() => Effect.sleep(250))
    return database
  })

const fail = (subject: Subject, message: string) => Effect.fail(new BenchFailure(`${subject.system} (${subject.mode}): ${message}`))

/** Fails on any error the system or the handler reported. */
const checkErrors = (subject: Subject, instance: Instance, handlerErrors: ReadonlyArray<unknown>) => {
  const errors = [...instance.errors, ...handlerErrors]
  if (errors.length === 0) return Effect.void
  for (const error of errors.slice(0, 5)) console.error(error)
  return fail(subject, `${errors.length} error(s) reported, first: ${String(errors[0])}`)
}

/** Waits until every tracker saw all its events; fails when nothing moved for `STALL_MS`. */
const awaitDelivered = (
  subject: Subject,
  instance: Instance,
  trackers: ReadonlyArray<Tracker>,
  handlerErrors: ReadonlyArray<unknown>
) =>
  Effect.gen(function*() {
    let last = -1
    let since = now()
    while (true) {
      yield* checkErrors(subject, instance, handlerErrors)
      const delivered = trackers.reduce((sum, t) => sum + t.delivered, 0)
      if (trackers.every((t) => t.delivered === t.n)) return
      if (delivered !== last) {
        last = delivered
        since = now()
      } else if (now() - since > STALL_MS) {
        return yield* fail(
          subject,
          `stalled: ${trackers.map((t) => `${t.phase} ${t.delivered}/${t.n} delivered`).join(", ")} after ${STALL_MS / 1000} s without progress`
        )
      }
      yield* Effect.sleep(2)
    }
  })

/** Waits until the database holds no unsettled event (the last completion committed). */
const awaitSettled = (subject: Subject, instance: Instance, client: pg.Client) =>
  Effect.gen(function*() {
    const since = now()
    while (true) {
      const n = yield* count(client, instance.unsettledSql)
      if (n === 0) return
      if (now() - since > STALL_MS) return yield* fail(subject, `${n} event(s) still unsettled after ${STALL_MS / 1000} s`)
      yield* Effect.sleep(5)
    }
  })

const checkNoDuplicates = (subject: Subject, trackers: ReadonlyArray<Tracker>) => {
  const duplicates = trackers.reduce((sum, t) => sum + t.duplicates, 0)
  return duplicates === 0 ? Effect.void : fail(subject, `${duplicates} event(s) delivered twice`)
}

// --- W1 ----------------------------------------------------------------------

interface W1Result {
  readonly enqueueEventsPerSec: number
  readonly eventsPerSec: number
  readonly seconds: number
  readonly machineCpuPct: number
  readonly nodeCpuUsPerEvent: number
  readonly serverCpuUsPerEvent: number
  /** What the rest of the machine used meanwhile, in % of one core (machine busy time less this process and its backends). */
  readonly othersPct: number
  /** From the consumer's start to its first delivery (start-up and first claim), ms. */
  readonly firstDeliveryMs: number
}

const runW1 = (subject: Subject, server: string) =>
  Effect.scoped(Effect.gen(function*() {
    yield* awaitQuiet
    const database = yield* freshDatabase(server)
    const client = yield* admin(database.url)
    const instance = yield* subject.open(database.url)
    const enqueueStart = now()
    for (let from = 0; from < EVENTS; from += ENQUEUE_BATCH) {
      const t = epochMs()
      yield* instance.enqueueBatch(Array.from({ length: Math.min(ENQUEUE_BATCH, EVENTS - from) }, (_, i) => payload("w1", from + i, t)))
    }
    const enqueueSeconds = (now() - enqueueStart) / 1000
    const queued = yield* count(client, instance.unsettledSql)
    if (queued !== EVENTS) return yield* fail(subject, `${queued} events queued, expected ${EVENTS}`)
    yield* Effect.tryPromise(() => client.query("VACUUM ANALYZE"))

    const tracker = new Tracker("w1", EVENTS)
    const handlerErrors: Array<unknown> = []
    const machine0 = machineCpu()
    const cpu0 = process.cpuUsage()
    const profiling = PROFILE_DIR === undefined ? undefined : yield* Profile.start
    const start = now()
    const { seconds, serverSeconds } = yield* Effect.scoped(Effect.gen(function*() {
      yield* instance.consume(dispatch({ w1: tracker }, handlerErrors))
      // the consumer's connections are open now (their start is in the timed span, their CPU from here)
      const server0 = yield* serverCpu(client)
      yield* awaitDelivered(subject, instance, [tracker], handlerErrors)
      yield* awaitSettled(subject, instance, client)
      const seconds = (now() - start) / 1000
      return { seconds, serverSeconds: backendCpuSeconds(server0, yield* serverCpu(client)) }
    }))
    const cpu = process.cpuUsage(cpu0)
    const machine = machineCpuPercent(machine0, machineCpu())
    if (profiling !== undefined) {
      const file = Path.join(PROFILE_DIR!, `w1-${`${subject.system} ${subject.mode}`.replace(/[^a-z0-9]+/gi, "-")}.cpuprofile`)
      console.log(`  profile of W1 ${subject.system} (${subject.mode}): ${file}\n${yield* profiling.stop(file)}`)
    }
    yield* checkErrors(subject, instance, handlerErrors)
    yield* checkNoDuplicates(subject, [tracker])
    return {
      enqueueEventsPerSec: EVENTS / enqueueSeconds,
      eventsPerSec: EVENTS / seconds,
      seconds,
      machineCpuPct: machine,
      nodeCpuUsPerEvent: (cpu.user + cpu.system) / EVENTS,
      serverCpuUsPerEvent: (serverSeconds * 1e6) / EVENTS,
      othersPct: machine * CORES - ((cpu.user + cpu.system) / 1e6 / seconds) * 100 - (serverSeconds / seconds) * 100,
      firstDeliveryMs: tracker.firstAt - start
    } satisfies W1Result
  }))

// --- producer cost and W2 ----------------------------------------------------

interface W2Result {
  readonly producerTxPerSec: number
  readonly producerNodeUsPerTx: number
  readonly produced: number
  readonly delivered: number
  readonly windowEvents: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly machineCpuPct: number
  readonly nodeCpuPct: number
  readonly serverCpuPct: number
  /** What the rest of the machine used meanwhile, in % of one core. */
  readonly othersPct: number
  /** Issue → COMMIT of the window's producer transactions (pool wait included): the producer keeping up. */
  readonly commitP50: number
  readonly commitP99: number
  /** Window transactions committed per second (from the window's first issue to its last COMMIT): `RATE` when the producer kept up. */
  readonly achievedTxPerSec: number
  readonly maxProducerLagMs: number
}

const runW2 = (subject: Subject, server: string) =>
  Effect.scoped(Effect.gen(function*() {
    yield* awaitQuiet
    const database = yield* freshDatabase(server)
    const client = yield* admin(database.url)
    const instance = yield* subject.open(database.url)

    const total = RATE * (WARM_S + WINDOW_S)
    const windowFrom = RATE * WARM_S
    // half-way through the warm-up: statistics, as autovacuum gathers them in its first minute
    const analyzeAt = Math.floor(windowFrom / 2)
    const tracker = new Tracker("w2", total)
    const handlerErrors: Array<unknown> = []
    const trackers: Partial<Record<Phase, Tracker>> = { w2: tracker }
    const window = yield* Effect.scoped(Effect.gen(function*() {
      yield* instance.consume(dispatch(trackers, handlerErrors))

      const producers = yield* FiberSet.make<void, never>()
      const produceErrors: Array<unknown> = []
      const commitMs = new Float64Array(total)
      let lastCommit = 0
      let issued = 0
      let maxLag = 0
      let machine0 = machineCpu()
      let cpu0 = process.cpuUsage()
      let profiling: Profile.Profiling | undefined
      let server0 = yield* serverCpu(client)
      let w0 = now()
      const start = now()
      while (issued < total) {
        const elapsed = now() - start
        const due = Math.min(total, Math.floor((elapsed * RATE) / 1000) + 1)
        while (issued < due) {
          if (issued === analyzeAt) yield* Effect.forkScoped(Effect.tryPromise(() => client.query("ANALYZE")).pipe(Effect.orDie))
          if (issued === windowFrom) {
            if (PROFILE_DIR !== undefined) profiling = yield* Profile.start
            server0 = yield* serverCpu(client)
            machine0 = machineCpu()
            cpu0 = process.cpuUsage()
            w0 = now()
          }
          maxLag = Math.max(maxLag, elapsed - (issued * 1000) / RATE)
          const seq = issued++
          const issuedAt = now()
          yield* FiberSet.run(
            producers,
            instance.produce(() => payload("w2", seq, epochMs())).pipe(
              Effect.matchCauseEffect({
                onSuccess: () =>
                  Effect.sync(() => {
                    const at = now()
                    commitMs[seq] = at - issuedAt
                    if (at > lastCommit) lastCommit = at
                  }),
                onFailure: (cause) => Effect.sync(() => produceErrors.push(cause))
              })
            )
          )
        }
        yield* Effect.sleep(1)
      }
      // the window ends when its last transaction is issued
      const windowMs = now() - w0
      const cpu = process.cpuUsage(cpu0)
      const machine = machineCpuPercent(machine0, machineCpu())
      const serverSeconds = backendCpuSeconds(server0, yield* serverCpu(client))
      if (profiling !== undefined) {
        const file = Path.join(PROFILE_DIR!, `w2-${`${subject.system} ${subject.mode}`.replace(/[^a-z0-9]+/gi, "-")}.cpuprofile`)
        console.log(`  profile of W2's window, ${subject.system} (${subject.mode}): ${file}\n${yield* profiling.stop(file)}`)
      }
      yield* FiberSet.awaitEmpty(producers)
      const achieved = (total - windowFrom) / ((lastCommit - w0) / 1000)
      if (produceErrors.length > 0) {
        console.error(produceErrors[0])
        return yield* fail(subject, `${produceErrors.length} producer transaction(s) failed`)
      }
      yield* awaitDelivered(subject, instance, [tracker], handlerErrors)
      yield* awaitSettled(subject, instance, client)
      return { windowMs, cpu, machine, serverSeconds, maxLag, achieved, commits: commitMs.slice(windowFrom).sort() }
    }))
    yield* checkErrors(subject, instance, handlerErrors)
    yield* checkNoDuplicates(subject, [tracker])

    // producer cost, the consumer stopped: after W2, whose thousands of transactions warmed the code (a system's
    // first row measured apart ran up to 3× slower: the JIT), a warm-up, then PRODUCER_TX timed; every one queued
    const warm = PRODUCER_TX / 10
    for (let seq = 0; seq < warm; seq++) yield* instance.produce(() => payload("producer", seq, epochMs()))
    const cpu0 = process.cpuUsage()
    const t0 = now()
    for (let seq = warm; seq < warm + PRODUCER_TX; seq++) yield* instance.produce(() => payload("producer", seq, epochMs()))
    const producerSeconds = (now() - t0) / 1000
    const producerCpu = process.cpuUsage(cpu0)
    const queued = yield* count(client, instance.unsettledSql)
    if (queued !== warm + PRODUCER_TX) return yield* fail(subject, `${queued} producer events queued, expected ${warm + PRODUCER_TX}`)

    const latencies = tracker.latency.slice(windowFrom).sort()
    const nodeCpuPct = ((window.cpu.user + window.cpu.system) / 1000 / window.windowMs) * 100
    const serverCpuPct = ((window.serverSeconds * 1000) / window.windowMs) * 100
    return {
      producerTxPerSec: PRODUCER_TX / producerSeconds,
      producerNodeUsPerTx: (producerCpu.user + producerCpu.system) / PRODUCER_TX,
      produced: total,
      delivered: tracker.delivered,
      windowEvents: latencies.length,
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1]!,
      machineCpuPct: window.machine,
      nodeCpuPct,
      serverCpuPct,
      othersPct: window.machine * CORES - nodeCpuPct - serverCpuPct,
      commitP50: percentile(window.commits, 50),
      commitP99: percentile(window.commits, 99),
      achievedTxPerSec: window.achieved,
      maxProducerLagMs: window.maxLag
    } satisfies W2Result
  }))

// --- the run -----------------------------------------------------------------

const serverVersion = (server: string) =>
  Effect.scoped(Effect.flatMap(admin(server), (client) =>
    Effect.tryPromise(() => client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).pipe(
      Effect.map((r) => r.rows[0]!.v)
    )))

const ms = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "—" : n < 10 ? fmt(n, 1) : fmt(n))

const main = Effect.gen(function*() {
  if (subjects.length === 0) return yield* Effect.fail(new BenchFailure(`--only ${ONLY?.join(",")} matches no system`))
  const server = yield* TestDatabase.serverUrl
  const postgres = yield* serverVersion(server)
  const date = new Date().toISOString().slice(0, 10)
  const header = `${date}, Node ${process.version}, PostgreSQL ${postgres}, ${Os.cpus().length} cores (shared with the server); ` +
    `W1 ${fmt(EVENTS)} events, W2 ${RATE} tx/s for ${WINDOW_S} s after a ${WARM_S} s warm-up${QUICK ? " (--quick)" : ""}`
  console.log(`Peers bench, ${header}`)

  const w1 = new Map<Subject, W1Result>()
  const w2 = new Map<Subject, W2Result>()
  for (let round = 1; round <= W1_ROUNDS; round++) {
    for (const subject of subjects.filter((s) => s.w1 && WORKLOAD !== "w2")) {
      const r = yield* runW1(subject, server)
      const best = w1.get(subject)
      if (best === undefined || r.eventsPerSec > best.eventsPerSec) w1.set(subject, r)
      console.log(
        `  W1${W1_ROUNDS > 1 ? ` round ${round}` : ""} ${subject.system} (${subject.mode}): ${fmt(r.eventsPerSec)} events/s (${fmt(r.seconds, 2)} s, first after ${fmt(r.firstDeliveryMs)} ms); enqueue ${fmt(r.enqueueEventsPerSec)} events/s; ` +
          `CPU per event: Node ${fmt(r.nodeCpuUsPerEvent, 1)} µs + server ${fmt(r.serverCpuUsPerEvent, 1)} µs; machine ${fmt(r.machineCpuPct)} % ` +
          `(others ${fmt(Math.max(0, r.othersPct))} % of a core)`
      )
    }
  }
  for (const subject of subjects.filter((s) => s.w2 && WORKLOAD !== "w1")) {
    const r = yield* runW2(subject, server)
    w2.set(subject, r)
    console.log(
      `  W2 ${subject.system} (${subject.mode}): p50 ${ms(r.p50)} / p90 ${ms(r.p90)} / p99 ${ms(r.p99)} / max ${ms(r.max)} ms; ` +
        `${r.delivered}/${r.produced} delivered; CPU Node ${fmt(r.nodeCpuPct)} % + server ${fmt(r.serverCpuPct)} %, machine ${fmt(r.machineCpuPct)} % (others ${fmt(Math.max(0, r.othersPct))} % of a core); ` +
        `issue → COMMIT p50 ${ms(r.commitP50)} / p99 ${ms(r.commitP99)} ms; producer alone ${fmt(r.producerTxPerSec)} tx/s, ` +
        `${fmt(r.producerNodeUsPerTx)} µs/tx`
    )
    if (r.achievedTxPerSec < RATE * 0.95 || r.commitP99 > 250) {
      console.log(`    the producer did not keep up: ${fmt(r.achievedTxPerSec)} tx/s committed, not ${RATE} (issue lag max ${fmt(r.maxProducerLagMs)} ms)`)
    }
  }

  // every system was stopped with its scope: a socket still open is a pool someone did not close
  yield* Effect.sleep(200)
  const sockets = process.getActiveResourcesInfo().filter((r) => r.startsWith("TCP")).length
  if (sockets > 0) return yield* Effect.fail(new BenchFailure(`${sockets} TCP socket(s) still open after every system stopped`))

  const bestPeer = Math.max(0, ...subjects.filter((s) => s.peer).map((s) => w1.get(s)?.eventsPerSec ?? 0))
  const table = [
    "| system | mode | W1 drain events/s | × best peer | W1 enqueue events/s | W1 CPU µs/event Node + server | W2 p50 ms | p90 | p99 | max | " +
    "W2 tx/s committed | W2 delivered | W2 CPU % Node + server | machine CPU % (others) | producer tx/s | producer Node µs/tx |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...subjects.map((s) => {
      const a = w1.get(s)
      const b = w2.get(s)
      const cells = [
        s.system,
        s.mode,
        a ? fmt(a.eventsPerSec) : "—",
        a && bestPeer > 0 ? `${fmt(a.eventsPerSec / bestPeer, 2)}×` : "—",
        a ? fmt(a.enqueueEventsPerSec) : "—",
        a ? `${fmt(a.nodeCpuUsPerEvent, 1)} + ${fmt(a.serverCpuUsPerEvent, 1)}` : "—",
        ms(b?.p50),
        ms(b?.p90),
        ms(b?.p99),
        ms(b?.max),
        b ? fmt(b.achievedTxPerSec) : "—",
        b ? `${fmt(b.delivered)}/${fmt(b.produced)}` : "—",
        b ? `${fmt(b.nodeCpuPct)} + ${fmt(b.serverCpuPct)}` : "—",
        // the others' share is a difference of samples taken apart: a few % below zero is zero
        b ? `${fmt(b.machineCpuPct)} (${fmt(Math.max(0, b.othersPct))})` : "—",
        b ? fmt(b.producerTxPerSec) : "—",
        b ? fmt(b.producerNodeUsPerTx) : "—"
      ]
      return `| ${cells.join(" | ")} |`
    })
  ]
  const legend = `W1: events/s from the consumer's start to the last completion${W1_ROUNDS > 1 ? `, the best of ${W1_ROUNDS} runs (systems in turn)` : ""}; CPU per event of this process and of the ` +
    `database's backends. W2: enqueue (after BEGIN) → handler start, over the window; tx/s committed: ${RATE} when the ` +
    "producer kept up; CPU in % of one core; machine " +
    `CPU in % of all ${CORES} cores, in parentheses the other processes' share in % of one core. Producer: single-event ` +
    "transactions back to back on one connection, consumer off."
  console.log(`\n${header}:\n\n${table.join("\n")}\n\n${legend}\n\nSettings:`)
  for (const s of subjects) console.log(`- ${s.system}, ${s.mode}: ${s.settings}`)

  writeResults(QUICK ? "peers-quick" : "peers", {
    postgres,
    events: EVENTS,
    rate: RATE,
    windowSeconds: WINDOW_S,
    warmSeconds: WARM_S,
    table: table.join("\n"),
    legend,
    rows: subjects.map((s) => ({ system: s.system, mode: s.mode, settings: s.settings, w1: w1.get(s), w2: w2.get(s) }))
  })
})

runMain(main)
