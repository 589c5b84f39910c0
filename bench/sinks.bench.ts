/**
 * `npm run bench:sinks`: the relay draining into a real broker through its
 * sink, against a hand-written publish loop on the same broker (the
 * ceiling), for NATS JetStream, RabbitMQ with publisher confirms and Redis
 * Streams. The target: the relay reaches at least 80 % of the ceiling.
 *
 * - **Ceiling**: the run's `--events` messages, built up front (outside the
 *   timing) exactly as the sink builds them (`brokerMessage.headers` /
 *   `body`, the sink's subject / routing key / stream), published with the
 *   sink's client library in batches of 1,000 (the relay's largest claim),
 *   each batch published at once and its acks (JetStream PubAcks, publisher
 *   confirms, `XADD` replies) awaited together before the next; no
 *   database. A second ceiling row keeps 2 such batches in flight (as 2
 *   relay workers can), for reference.
 * - **Sink alone**: the sink's `deliverBatch` called on the same events in
 *   batches of 1,000, one after the other, no database: what the sink adds
 *   to the hand-written loop (building the messages included), apart from
 *   what the relay and PostgreSQL add.
 * - **Relay**: a fresh database, the run's events published with
 *   `Outbox.publishAll` (1,000 per transaction), `VACUUM ANALYZE`; the sink
 *   built (connected); then `OutboxLive.layer()` (store, relay workers,
 *   wake-up listener, reaper, gauges: as users run it, configured by the
 *   environment only, its own pool of 10) is started and timed until every
 *   event is COMPLETED (relay stats, polled every 2 ms), then stopped.
 *
 * Each run publishes into a fresh stream / exchange and queue / key (unique
 * names, deleted after), and is checked: the broker holds exactly the run's
 * events, and for the relay every event is COMPLETED with no retry and no
 * dead letter. Node CPU per event: `process.cpuUsage()` over the timed
 * window (the relay's includes its PostgreSQL client and its background
 * duties). Runs alternate (ceiling, relay rows, ceiling, relay rows, ...:
 * `--rounds`, default 2); the table shows each row's best and every round.
 * Before each timed run the bench waits up to `--max-wait` seconds (default
 * 10) for the other processes on the machine to use less than a quarter of a
 * core.
 *
 * Options: `--events N` (default 100,000), `--quick` (10,000), `--only
 * nats,rabbitmq,redis,none` (none: the relay into a sink that acks every
 * batch at once, no broker: the relay's own cost, for reference),
 * `--rounds N`, `--modes <parts of relay mode names>`, `--max-wait S`,
 * `--profile DIR` (a V8 CPU profile of each relay and sink-alone run's
 * timed window, written to DIR and summarised: profiled runs are slower, so
 * profile apart from measuring). `BENCH_RELAY_MODES` adds relay rows: a
 * JSON object of mode name → environment. Writes `bench/results/sinks.json`
 * (`sinks-quick.json` with `--quick`). PostgreSQL: `DATABASE_URL` (else
 * testcontainers or embedded PostgreSQL, as in the tests); brokers:
 * `BENCH_NATS_URL`, `BENCH_RABBITMQ_URL`, `BENCH_REDIS_URL` (default the
 * local ones; the broker's CPU is read from /proc only for the local ones).
 */
import * as TestDatabase from "@outbox/testing/TestDatabase"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Os from "node:os"
import * as Path from "node:path"
import { type BatchTimes, type Broker, batchTimes, brokers } from "./sinks/brokers.ts"
import { brokerProcesses, databaseCpu, processCpu } from "./sinks/cpu.ts"
import * as Profile from "./sinks/profile.ts"
import { claimedEvents, drain, filledDatabase, type Mode, POOL, unknownVariables } from "./sinks/relay.ts"
import { backendCpuSeconds, fmt, machineCpu, machineCpuPercent, now, runMain, writeResults } from "./shared.ts"

// --- options -----------------------------------------------------------------

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const QUICK = flag("--quick")
const EVENTS = Number(option("--events") ?? (QUICK ? 10_000 : 100_000))
const ROUNDS = Number(option("--rounds") ?? 2)
/** The relay's largest claim (`OUTBOX_BATCH_SIZE` default): the ceiling's batch. */
const BATCH = 1_000
const ONLY = option("--only")?.toLowerCase().split(",").filter((s) => s.length > 0)
const MODES = option("--modes")?.toLowerCase().split(",").filter((s) => s.length > 0)
const MAX_WAIT_S = Number(option("--max-wait") ?? 10)
const PROFILE_DIR = option("--profile")
/** Quiet: the other processes use less than this share of one core (%), over a second. */
const QUIET_PCT = 25
const CORES = Os.cpus().length
/** What the relay must reach, as a share of its ceiling. */
const TARGET = 0.8

// --- the rows ----------------------------------------------------------------

const allModes: ReadonlyArray<Mode> = [
  { name: "defaults (1 worker)", env: {} },
  { name: "defaults, 2 workers", env: { OUTBOX_CONCURRENCY: "2" } },
  // claims of 1,000 from the first one: a drain does not wait for the adaptive limit to grow (10, 20, ... 1,000)
  { name: "batches of 1,000, 2 workers", env: { OUTBOX_CONCURRENCY: "2", OUTBOX_MIN_BATCH_SIZE: "1000" } },
  // the row lock as the lease: one write per event instead of two (claim, completion), no heartbeat
  {
    name: "transaction claims, batches of 1,000, 2 workers",
    env: { OUTBOX_CLAIM_MODE: "transaction", OUTBOX_CONCURRENCY: "2", OUTBOX_MIN_BATCH_SIZE: "1000" }
  },
  // and a completed event's row deleted rather than kept (the cheapest settlement there is)
  {
    name: "transaction claims, completed rows deleted, batches of 1,000, 2 workers",
    env: { OUTBOX_CLAIM_MODE: "transaction", OUTBOX_COMPLETED: "delete", OUTBOX_CONCURRENCY: "2", OUTBOX_MIN_BATCH_SIZE: "1000" }
  },
  ...Object.entries(JSON.parse(process.env.BENCH_RELAY_MODES ?? "{}") as Record<string, Record<string, string>>).map((
    [name, env]
  ) => ({ name, env }))
]
const modes = allModes.filter((m) => MODES === undefined || MODES.some((part) => m.name.toLowerCase().includes(part)))

/** A run without the relay: the hand-written loop on the client, or the sink's `deliverBatch` called in a loop. */
interface Ceiling {
  readonly name: string
  readonly inFlight: number
  readonly via: "client" | "sink"
}
const ceilings: ReadonlyArray<Ceiling> = [
  { name: "ceiling (hand-written)", inFlight: 1, via: "client" },
  { name: "ceiling, 2 batches in flight", inFlight: 2, via: "client" },
  // the sink's own cost: what it adds to the hand-written loop, without the relay and its database
  { name: "sink alone (deliverBatch loop, no database)", inFlight: 1, via: "sink" }
]

const selected = brokers.filter((b) => ONLY === undefined || ONLY.some((part) => b.name.includes(part)))

// --- measuring ---------------------------------------------------------------

class BenchFailure extends Error {}

/** One timed run. */
interface Run {
  readonly eventsPerSec: number
  readonly seconds: number
  readonly nodeCpuUsPerEvent: number
  /** The PostgreSQL backends of the run's database, per event (the relay; 0 for the ceiling, which has none). */
  readonly pgCpuUsPerEvent: number
  /** The broker's server process, per event (NaN when the broker is not a local process). */
  readonly brokerCpuUsPerEvent: number
  /**
   * The ceiling: Node CPU per event of building its messages up front (not timed; the sink builds its own
   * inside `deliverBatch`).
   */
  readonly buildUsPerEvent?: number
  /** The whole machine's busy share over the run (every core), %. */
  readonly machineCpuPct: number
  /** What the broker held after the run. */
  readonly arrived: number
  /** Mean time of a batch in the broker's hands (publish to last ack; the relay: inside `deliverBatch`), per 1,000 events. */
  readonly batchMsPer1000: number
  /** Batches in the broker's hands on average over the run (summed batch time / wall time: up to 2 with 2 lanes). */
  readonly inBroker: number
}

const batchFields = (times: BatchTimes, seconds: number) => ({
  batchMsPer1000: times.events === 0 ? NaN : (times.batchMs / times.events) * 1000,
  inBroker: times.batchMs / 1000 / seconds
})

/** Waits up to `MAX_WAIT_S` for the other processes on the machine to use less than `QUIET_PCT` % of a core. */
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
      console.log(`    (other processes still use ${fmt(others)} % of a core after ${MAX_WAIT_S} s: measuring anyway)`)
      return
    }
  }
})

let runs = 0
/** Unique names per run: streams, exchanges, queues and keys of two runs (or two bench processes) never meet. */
const tag = () => `${process.pid}_${Date.now().toString(36)}_${++runs}`

/** The broker's local server processes: none when its URL was overridden (it may run elsewhere). */
const serverOf = (broker: Broker): ReadonlySet<string> | undefined =>
  broker.name === "none" ? new Set() :
  process.env[`BENCH_${broker.name.toUpperCase()}_URL`] === undefined ? brokerProcesses[broker.name] : undefined

/** Broker CPU seconds between two `processCpu` samples (NaN without a local server). */
const brokerSeconds = (server: ReadonlySet<string> | undefined, from: Map<number, number>, to: Map<number, number>) =>
  server === undefined ? NaN : backendCpuSeconds(from, to)

const checkArrived = (what: string, arrived: number) =>
  arrived === EVENTS
    ? Effect.void
    : Effect.fail(new BenchFailure(`${what}: the broker holds ${arrived} messages, expected ${EVENTS}`))

/**
 * The sink alone: `deliverBatch` on batches of `BATCH` of `events`, one after the other, as a relay worker
 * calls it; every outcome must be an ack.
 */
const sinkLoop = (sink: OutboxSink["Service"], events: ReadonlyArray<OutboxEvent>, times: BatchTimes) =>
  Effect.gen(function*() {
    const deliverBatch = sink.deliverBatch
    if (deliverBatch === undefined) return yield* Effect.fail(new BenchFailure(`the ${sink.name} sink has no deliverBatch`))
    const context = yield* Effect.context<never>()
    const loop = Effect.gen(function*() {
      for (let from = 0; from < events.length; from += BATCH) {
        const batch = events.slice(from, from + BATCH)
        const t0 = now()
        const outcomes = yield* deliverBatch(batch)
        times.batchMs += now() - t0
        times.batches++
        times.events += batch.length
        const failed = outcomes.find((outcome) => outcome !== undefined)
        if (failed !== undefined) return yield* Effect.fail(failed)
      }
    })
    return () => Effect.runPromiseWith(context)(loop)
  })

let profiles = 0
const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")

const runCeiling = (broker: Broker, ceiling: Ceiling) =>
  Effect.scoped(Effect.gen(function*() {
    const destination = yield* broker.open(tag(), EVENTS)
    const times = batchTimes()
    const events = claimedEvents(EVENTS)
    // building the messages: outside the ceiling's timing (the sink builds them inside its own), measured apart
    const build0 = process.cpuUsage()
    const publish = ceiling.via === "sink"
      ? yield* sinkLoop(Context.get(yield* Layer.build(destination.sink), OutboxSink), events, times)
      : destination.ceiling === undefined
      ? yield* Effect.fail(new BenchFailure(`${broker.label} has no ceiling`))
      : yield* destination.ceiling(events, BATCH, ceiling.inFlight, times)
    const build = process.cpuUsage(build0)
    yield* awaitQuiet
    const server = serverOf(broker)
    const broker0 = processCpu(server ?? new Set())
    const profiling = PROFILE_DIR !== undefined && ceiling.via === "sink" ? yield* Profile.start : undefined
    const machine0 = machineCpu()
    const cpu0 = process.cpuUsage()
    const t0 = now()
    yield* Effect.tryPromise({ try: publish, catch: (cause) => cause })
    const seconds = (now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    const machine = machineCpuPercent(machine0, machineCpu())
    const brokerCpu = brokerSeconds(server, broker0, processCpu(server ?? new Set()))
    if (profiling !== undefined) {
      const file = Path.join(PROFILE_DIR!, `${broker.name}-${slug(ceiling.name)}-${++profiles}.cpuprofile`)
      console.log(`    profile ${file}:\n${(yield* profiling.stop(file)).replace(/^/gm, "      ")}`)
    }
    const arrived = yield* destination.count
    yield* checkArrived(`${broker.label} ${ceiling.name}`, arrived)
    return {
      eventsPerSec: EVENTS / seconds,
      seconds,
      nodeCpuUsPerEvent: (cpu.user + cpu.system) / EVENTS,
      pgCpuUsPerEvent: 0,
      brokerCpuUsPerEvent: (brokerCpu * 1e6) / EVENTS,
      ...(ceiling.via === "client" ? { buildUsPerEvent: (build.user + build.system) / EVENTS } : {}),
      machineCpuPct: machine,
      arrived,
      ...batchFields(times, seconds)
    } satisfies Run
  }))

const runRelay = (server: string, broker: Broker, mode: Mode, round: number) =>
  Effect.scoped(Effect.gen(function*() {
    const { context, sql } = yield* filledDatabase(server, EVENTS)
    const destination = yield* broker.open(tag(), EVENTS)
    yield* awaitQuiet
    const brokerServer = serverOf(broker)
    let machine = 0
    let brokerCpu = 0
    let pgCpu = 0
    const result = yield* drain({
      context,
      destination,
      mode,
      n: EVENTS,
      before: Effect.gen(function*() {
        const pg0 = yield* Effect.orDie(databaseCpu(sql))
        const broker0 = processCpu(brokerServer ?? new Set())
        const profiling = PROFILE_DIR === undefined ? undefined : yield* Profile.start
        return { profiling, machine0: machineCpu(), broker0, pg0 }
      }),
      after: ({ machine0, profiling, broker0, pg0 }) =>
        Effect.gen(function*() {
          machine = machineCpuPercent(machine0, machineCpu())
          brokerCpu = brokerSeconds(brokerServer, broker0, processCpu(brokerServer ?? new Set()))
          pgCpu = backendCpuSeconds(pg0, yield* Effect.orDie(databaseCpu(sql)))
          if (profiling !== undefined) {
            const file = Path.join(PROFILE_DIR!, `${broker.name}-${slug(mode.name)}-round${round}.cpuprofile`)
            const text = yield* profiling.stop(file)
            console.log(`    profile ${file}:\n${text.replace(/^/gm, "      ")}`)
          }
        })
    })
    const what = `${broker.label} relay (${mode.name})`
    const { stats } = result
    if (stats.completed !== EVENTS || result.completedRows !== EVENTS || stats.retried > 0 || stats.deadLettered > 0) {
      return yield* Effect.fail(
        new BenchFailure(`${what}: ${result.completedRows} rows COMPLETED, relay stats ${JSON.stringify(stats)}; expected ${EVENTS} completed, no retry`)
      )
    }
    const arrived = yield* destination.count
    yield* checkArrived(what, arrived)
    return {
      eventsPerSec: EVENTS / result.seconds,
      seconds: result.seconds,
      nodeCpuUsPerEvent: (result.cpuSeconds * 1e6) / EVENTS,
      pgCpuUsPerEvent: (pgCpu * 1e6) / EVENTS,
      brokerCpuUsPerEvent: (brokerCpu * 1e6) / EVENTS,
      machineCpuPct: machine,
      arrived,
      ...batchFields(result.times, result.seconds)
    } satisfies Run
  }))

// --- the run -----------------------------------------------------------------

interface Row {
  readonly broker: Broker
  readonly run: string
  readonly kind: "ceiling" | "sink" | "relay"
  readonly settings: string
  readonly runs: Array<Run>
}

const best = (row: Row): Run | undefined =>
  row.runs.reduce<Run | undefined>((b, r) => b === undefined || r.eventsPerSec > b.eventsPerSec ? r : b, undefined)

const cpuText = (r: Run) =>
  `Node ${fmt(r.nodeCpuUsPerEvent, 1)}${r.buildUsPerEvent === undefined ? "" : ` (building the messages before: ${fmt(r.buildUsPerEvent, 1)})`} + PostgreSQL ${fmt(r.pgCpuUsPerEvent, 1)} + broker ${
    Number.isNaN(r.brokerCpuUsPerEvent) ? "?" : fmt(r.brokerCpuUsPerEvent, 1)
  }`

const batchText = (r: Run) =>
  `a batch ${fmt(r.batchMsPer1000, 1)} ms per 1,000 events in the broker's hands, ${fmt(r.inBroker, 2)} batches there on average`

const uptime = () => `load average ${Os.loadavg().map((l) => l.toFixed(2)).join(", ")}`

const main = Effect.gen(function*() {
  if (selected.length === 0) return yield* Effect.fail(new BenchFailure(`--only ${ONLY?.join(",")} matches no broker`))
  if (modes.length === 0) return yield* Effect.fail(new BenchFailure(`--modes ${MODES?.join(",")} matches no relay mode`))
  for (const mode of modes) {
    const unknown = unknownVariables(mode)
    if (unknown.length > 0) return yield* Effect.fail(new BenchFailure(`relay mode "${mode.name}": this version does not read ${unknown.join(", ")}`))
  }
  const server = yield* TestDatabase.serverUrl
  const date = new Date().toISOString().slice(0, 10)
  const loadBefore = uptime()
  const header = `${date}, Node ${process.version}, ${CORES} cores (shared with PostgreSQL and the brokers); ` +
    `${fmt(EVENTS)} events per run, batches of ${fmt(BATCH)}, best of ${ROUNDS} alternating rounds${QUICK ? " (--quick)" : ""}` +
    (PROFILE_DIR === undefined ? "" : "; relay runs PROFILED (slower)")
  console.log(`Sinks bench, ${header}; ${loadBefore}`)

  const rows: Array<Row> = []
  for (const broker of selected) {
    const brokerCeilings = broker.name === "none" ? [] : ceilings
    const brokerRows: Array<Row> = [
      ...brokerCeilings.map((c): Row => ({
        broker,
        run: c.name,
        kind: c.via === "sink" ? "sink" : "ceiling",
        settings: c.via === "sink"
          ? `the sink's layer (defaults but its names), deliverBatch on ${BATCH} events at a time, one batch after the other`
          : `${broker.settings}; ${c.inFlight} batch(es) of ${BATCH} in flight`,
        runs: []
      })),
      ...modes.map((m): Row => ({
        broker,
        run: `relay: ${m.name}`,
        kind: "relay",
        settings: `OutboxLive.layer() with the environment {${Object.entries(m.env).map(([k, v]) => `${k}=${v}`).join(", ")}}, ` +
          `the rest at defaults; a pool of ${POOL}; the sink's defaults but its names`,
        runs: []
      }))
    ]
    rows.push(...brokerRows)
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, c] of brokerCeilings.entries()) {
        const r = yield* runCeiling(broker, c)
        brokerRows[i]!.runs.push(r)
        console.log(
          `  ${broker.label}, ${c.name}, round ${round}: ${fmt(r.eventsPerSec)} events/s (${fmt(r.seconds, 2)} s), ` +
            `CPU µs/event ${cpuText(r)}, machine ${fmt(r.machineCpuPct)} %, ${batchText(r)}`
        )
      }
      for (const [i, m] of modes.entries()) {
        const r = yield* runRelay(server, broker, m, round)
        brokerRows[brokerCeilings.length + i]!.runs.push(r)
        console.log(
          `  ${broker.label}, relay ${m.name}, round ${round}: ${fmt(r.eventsPerSec)} events/s (${fmt(r.seconds, 2)} s), ` +
            `CPU µs/event ${cpuText(r)}, machine ${fmt(r.machineCpuPct)} %, ${batchText(r)}`
        )
      }
    }
  }
  const loadAfter = uptime()

  const table = [
    "| broker | run | events/s (best) | each round | × ceiling | ≥ 80 % | Node CPU µs/event | + PostgreSQL + broker | batch ms / 1,000 (in broker) | machine CPU % | arrived |",
    "| --- | --- | ---: | --- | ---: | :---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((row) => {
      const b = best(row)!
      const ceilingRow = rows.find((r) => r.broker === row.broker && r.kind === "ceiling")
      const ratio = ceilingRow === undefined ? undefined : b.eventsPerSec / best(ceilingRow)!.eventsPerSec
      const cells = [
        row.broker.label,
        row.run,
        fmt(b.eventsPerSec),
        row.runs.map((r) => fmt(r.eventsPerSec)).join(" / "),
        ratio === undefined ? "—" : `${fmt(ratio * 100, 1)} %`,
        row.kind === "relay" && ratio !== undefined ? (ratio >= TARGET ? "yes" : "no") : "",
        b.buildUsPerEvent === undefined ? fmt(b.nodeCpuUsPerEvent, 1) : `${fmt(b.nodeCpuUsPerEvent, 1)} (+ ${fmt(b.buildUsPerEvent, 1)} build)`,
        `${fmt(b.pgCpuUsPerEvent, 1)} + ${Number.isNaN(b.brokerCpuUsPerEvent) ? "?" : fmt(b.brokerCpuUsPerEvent, 1)}`,
        `${fmt(b.batchMsPer1000, 1)} (${fmt(b.inBroker, 2)})`,
        fmt(b.machineCpuPct),
        `${fmt(b.arrived)}`
      ]
      return `| ${cells.join(" | ")} |`
    })
  ]
  const legend = `events/s: the run's events over the time from the first publish (ceiling) or the relay's start (relay) to the ` +
    `last ack (ceiling) or the last completion (relay); best of ${ROUNDS}, then each round. × ceiling: the row's best over the ` +
    `best of the hand-written ceiling (one batch of ${BATCH} in flight) on the same broker. Node CPU: this process's user + ` +
    `system time per event over the best run (the relay's includes its PostgreSQL client and duties; the ceiling's ` +
    `excludes building its messages up front, shown apart as "+ build": the sink builds them inside its timing); + PostgreSQL: the ` +
    `backends of the run's database (not the server's shared processes: WAL writer, checkpointer); + broker: the broker's ` +
    `server process (nats-server, RabbitMQ's beam.smp, redis-server), all from /proc. Batch ms / 1,000: ` +
    `a batch's mean time from its publish to its last ack (the relay: inside the sink's deliverBatch, building the messages ` +
    `included) per 1,000 events, and in parentheses how many batches were there on average (summed batch time over the ` +
    `run's time: the rest of the relay's time is claims and completions). Machine CPU: all ` +
    `${CORES} cores over that run (PostgreSQL, the broker and other sessions included). Arrived: what the broker held after the run.`
  console.log(`\n${header}; before: ${loadBefore}, after: ${loadAfter}:\n\n${table.join("\n")}\n\n${legend}\n\nSettings:`)
  for (const row of rows) console.log(`- ${row.broker.label}, ${row.run}: ${row.settings}`)

  writeResults(QUICK ? "sinks-quick" : "sinks", {
    events: EVENTS,
    batch: BATCH,
    rounds: ROUNDS,
    profiled: PROFILE_DIR !== undefined,
    loadBefore,
    loadAfter,
    table: table.join("\n"),
    legend,
    rows: rows.map((row) => ({
      broker: row.broker.name,
      run: row.run,
      kind: row.kind,
      settings: row.settings,
      runs: row.runs
    }))
  })
})

runMain(main)
