/**
 * `npm run bench`: publish overhead, relay drain throughput against a raw-SQL
 * ceiling, end-to-end latency and memory, on a fresh database.
 *
 * Environment: BENCH_EVENTS (default 200000) events per drain,
 * BENCH_MEMORY_EVENTS (default 500000) for the memory phase (0 skips it),
 * BENCH_CONCURRENCY (default "1,2,4"), BENCH_ROUNDS (default 2: best of), BENCH_BATCH (default 100: the raw
 * loop's batch and the relay's largest claim, `batchSize`), BENCH_MIN_BATCH (the relay's `minBatchSize`,
 * default the library's 10; BENCH_BATCH too: fixed batches), DATABASE_URL (else testcontainers or
 * embedded PostgreSQL, as in the tests).
 */
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as Relay from "@outbox/runtime/Relay"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { drainWithRelay, fmt, now, openDatabase, preload, reset, runMain, timed, withPeakRss, writeResults } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000)
const MEMORY_EVENTS = Number(process.env.BENCH_MEMORY_EVENTS ?? 500_000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? "1,2,4").split(",").map(Number)
const BATCH = Number(process.env.BENCH_BATCH ?? 100)
const MIN_BATCH = process.env.BENCH_MIN_BATCH === undefined ? undefined : Number(process.env.BENCH_MIN_BATCH)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const PUBLISH_TX = 4000
const PUBLISH_CLIENTS = 4

const latency = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const [row] = yield* sql<{ p50: number; p99: number }>`
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
    FROM (SELECT extract(epoch FROM processed_at - created_at) * 1000 AS ms FROM outbox WHERE status = 'COMPLETED') t`
  return { p50: Number(row!.p50), p99: Number(row!.p99) }
})

/** The ceiling: a hand-written claim/complete loop with the same pool and batch. */
const drainRaw = (concurrency: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const worker = Effect.gen(function*() {
      while (true) {
        const rows = yield* sql<{ id: bigint }>`
          UPDATE outbox o SET status = 'PROCESSING', lock_token = 1, locked_until = now() + interval '30 seconds'
          FROM (SELECT id, created_at FROM outbox WHERE status IN ('PENDING', 'FAILED') ORDER BY id
                LIMIT ${BATCH} FOR UPDATE SKIP LOCKED) c
          WHERE o.id = c.id AND o.created_at = c.created_at
          RETURNING o.id, o.payload`
        if (rows.length === 0) return
        yield* sql`UPDATE outbox SET status = 'COMPLETED', processed_at = now(), lock_token = NULL, locked_until = NULL
                   WHERE id = ANY(${`{${rows.map((r) => r.id).join(",")}}`}::bigint[])`
      }
    })
    yield* Effect.all(Array.from({ length: concurrency }, () => worker), { concurrency: "unbounded" })
  })

const publishPhase = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)`
  const business = sql`INSERT INTO bench_orders (customer, total) VALUES ('c-1', 42)`
  // many short rounds, every variant once per round in a rotating order; the machine is shared, so each
  // overhead is the median over rounds of the variant's time against the baseline's time in the same round
  const rounds = 8
  const perRound = PUBLISH_TX / 4
  const runTx = <R>(tx: Effect.Effect<unknown, unknown, R>) =>
    timed(Effect.all(
      Array.from({ length: PUBLISH_CLIENTS }, () =>
        Effect.forEach(Array.from({ length: perRound / PUBLISH_CLIENTS }), () => tx, { discard: true })),
      { concurrency: "unbounded" }
    ))
  const payload = { total: 42, items: [{ sku: "A", quantity: 2 }] }
  const variants = {
    // the baseline the target is measured against: the business transaction as users write it without an outbox
    plain: sql.withTransaction(business),
    // the outbox's wrapper alone: any difference to the baseline is the wrapper's, not publish's
    wrapper: Outbox.transaction(business),
    // the floors: any second statement, and the outbox row written by hand
    secondRow: sql.withTransaction(Effect.andThen(business, business)),
    handWritten: sql.withTransaction(Effect.andThen(
      business,
      sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
          VALUES ('Order', 'o-1', 'OrderCreated', ${JSON.stringify(payload)}::jsonb)`
    )),
    // the statement publish sends, written by hand: what the library adds is the difference to this
    sameStatement: sql.withTransaction(Effect.andThen(
      business,
      sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, metadata, max_retries)
          VALUES (${"Order"}, ${"o-1"}, ${"OrderCreated"}, ${JSON.stringify(payload)}::jsonb, ${"{}"}::jsonb, ${5})
          RETURNING id, tracking_id, created_at`
    )),
    withEvent: Outbox.transaction(Effect.andThen(
      business,
      Outbox.publish({ aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload })
    ))
  }
  type Variant = keyof typeof variants
  const keys = Object.keys(variants) as Array<Variant>
  const seconds = Object.fromEntries(keys.map((key) => [key, []])) as unknown as Record<Variant, Array<number>>
  const cpuSeconds = Object.fromEntries(keys.map((key) => [key, []])) as unknown as Record<Variant, Array<number>>
  for (let round = -1; round < rounds; round++) {
    for (let k = 0; k < keys.length; k++) {
      const key = keys[(k + Math.max(round, 0)) % keys.length]!
      const run = yield* runTx(variants[key])
      if (round >= 0) { // round -1 warms up
        seconds[key].push(run.seconds)
        cpuSeconds[key].push(run.cpuSeconds)
      }
    }
  }
  const median = (xs: ReadonlyArray<number>) => {
    const sorted = [...xs].sort((a, b) => a - b)
    const mid = sorted.length >> 1
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  }
  const over = (a: Variant, b: Variant) => median(seconds[a].map((s, round) => s / seconds[b][round]! - 1)) * 100
  const txPerSec = (key: Variant) => perRound / median(seconds[key])
  const cpu = Object.fromEntries(keys.map((key) => [key, (median(cpuSeconds[key]) / perRound) * 1e6])) as Record<Variant, number>
  const events = Array.from({ length: 100 }, (_, i) => ({ aggregateType: "Order", aggregateId: `o-${i}`, eventType: "OrderCreated", payload: { n: i } }))
  const batch = yield* timed(Effect.forEach(Array.from({ length: 200 }), () => Outbox.transaction(Outbox.publishAll(events)), { discard: true }))
  return {
    rounds,
    perRound,
    plainTxPerSec: txPerSec("plain"),
    wrapperTxPerSec: txPerSec("wrapper"),
    withEventTxPerSec: txPerSec("withEvent"),
    /** The target's measure: Outbox.transaction(row + publish) against sql.withTransaction(row). */
    overheadPct: over("withEvent", "plain"),
    /** Outbox.transaction(row) against sql.withTransaction(row): the wrapper alone. */
    wrapperOverheadPct: over("wrapper", "plain"),
    /** Outbox.transaction(row + publish) against Outbox.transaction(row): publish alone. */
    publishOnlyPct: over("withEvent", "wrapper"),
    secondRowOverheadPct: over("secondRow", "plain"),
    handWrittenOverheadPct: over("handWritten", "plain"),
    sameStatementOverheadPct: over("sameStatement", "plain"),
    nodeCpuUsPerTx: cpu,
    batchEventsPerSec: 20_000 / batch.seconds
  }
})

const steadyLatency = Effect.scoped(Effect.gen(function*() {
  yield* reset
  yield* Layer.build(
    Relay.layer.pipe(
      Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
      Layer.provide(OutboxConfig.layer({
        batchSize: BATCH,
        ...(MIN_BATCH === undefined ? {} : { minBatchSize: MIN_BATCH }),
        concurrency: 1,
        pollInterval: Duration.millis(10)
      }))
    )
  )
  // 2000 events/s for 10 s: 20 events every 10 ms
  const events = Array.from({ length: 20 }, (_, i) => ({ aggregateType: "Order", aggregateId: `o-${i}`, eventType: "OrderCreated", payload: { n: i } }))
  const start = now()
  for (let tick = 0; tick < 1000; tick++) {
    yield* Outbox.transaction(Outbox.publishAll(events))
    const wait = start + (tick + 1) * 10 - now()
    if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
  }
  const sql = yield* SqlClient.SqlClient
  while (true) {
    const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status <> 'COMPLETED'`
    if (row!.n === 0) break
    yield* Effect.sleep("50 millis")
  }
  return yield* latency
}))

const main = Effect.gen(function*() {
  const { run, services } = yield* openDatabase(16)

  yield* OutboxMigrations.run.pipe(Effect.provide(services))
  console.log(
    `Outbox bench — ${EVENTS.toLocaleString()} events per drain, batch ${BATCH} (relay: claims of ${
      MIN_BATCH ?? OutboxConfig.defaults.minBatchSize
    } up to ${BATCH}), node ${process.version}`
  )

  const publish = yield* run(publishPhase)
  const pct = (n: number) => `${n >= 0 ? "+" : ""}${fmt(n, 1)} %`.padStart(9)
  const us = (n: number) => `${fmt(n)} µs`.padStart(9)
  const txs = (n: number) => `${fmt(n)} tx/s`.padStart(11)
  console.log(
    `\nPublish (one-row transactions, ${PUBLISH_CLIENTS} clients, ${publish.rounds} rotating rounds of ${publish.perRound} per variant; medians; overheads paired per round; Node CPU per tx):`
  )
  console.log(`  baseline: sql.withTransaction(business row)        ${txs(publish.plainTxPerSec)}            ${us(publish.nodeCpuUsPerTx.plain)}`)
  console.log(`  Outbox.transaction(business row), no publish       ${txs(publish.wrapperTxPerSec)} ${pct(publish.wrapperOverheadPct)}  ${us(publish.nodeCpuUsPerTx.wrapper)}`)
  console.log(`  Outbox.transaction(business row + publish)         ${txs(publish.withEventTxPerSec)} ${pct(publish.overheadPct)}  ${us(publish.nodeCpuUsPerTx.withEvent)}   vs the baseline (target ≤ 10 %)`)
  console.log(`    publish alone: the same Outbox.transaction with vs without it      ${pct(publish.publishOnlyPct)}`)
  console.log(`    floor: baseline + a second business row                            ${pct(publish.secondRowOverheadPct)}  ${us(publish.nodeCpuUsPerTx.secondRow)}`)
  console.log(`    floor: baseline + a hand-written outbox INSERT                     ${pct(publish.handWrittenOverheadPct)}  ${us(publish.nodeCpuUsPerTx.handWritten)}`)
  console.log(`    floor: baseline + publish's own INSERT, hand-written (6 params, RETURNING) ${pct(publish.sameStatementOverheadPct)}  ${us(publish.nodeCpuUsPerTx.sameStatement)}`)
  console.log(`  publishAll, 100 events/tx   ${fmt(publish.batchEventsPerSec)} events/s`)

  const drains: Array<Record<string, number>> = []
  console.log(`\nDrain ${EVENTS.toLocaleString()} preloaded events (no-op sink):`)
  console.log(`  workers   relay ev/s   raw ev/s   relay/raw   p50 ms   p99 ms   peak RSS MB   Node CPU µs/ev relay/raw`)
  for (const concurrency of CONCURRENCY) {
    // best of ROUNDS alternating runs of each, to even out the machine's noise
    let raw = { seconds: Infinity, cpuSeconds: 0 }
    let relay: { result: { seconds: number; cpuSeconds: number }; peak: number } = { result: { seconds: Infinity, cpuSeconds: 0 }, peak: 0 }
    for (let round = 0; round < ROUNDS; round++) {
      yield* run(preload(EVENTS))
      const rawAttempt = yield* run(timed(drainRaw(concurrency)))
      if (rawAttempt.seconds < raw.seconds) raw = rawAttempt
      yield* run(preload(EVENTS))
      const attempt = yield* run(withPeakRss(timed(drainWithRelay(EVENTS, concurrency, BATCH, MIN_BATCH))))
      if (attempt.result.seconds < relay.result.seconds) relay = attempt
    }
    const lat = yield* run(latency)
    const row = {
      concurrency,
      relayEventsPerSec: EVENTS / relay.result.seconds,
      rawEventsPerSec: EVENTS / raw.seconds,
      ratioPct: (raw.seconds / relay.result.seconds) * 100,
      p50Ms: lat.p50,
      p99Ms: lat.p99,
      peakRssMb: relay.peak,
      relayNodeCpuUsPerEvent: (relay.result.cpuSeconds / EVENTS) * 1e6,
      rawNodeCpuUsPerEvent: (raw.cpuSeconds / EVENTS) * 1e6
    }
    drains.push(row)
    console.log(
      `  ${String(concurrency).padStart(7)}   ${fmt(row.relayEventsPerSec).padStart(10)}   ${fmt(row.rawEventsPerSec).padStart(8)}   ${
        fmt(row.ratioPct, 1).padStart(7)
      } %   ${fmt(row.p50Ms).padStart(6)}   ${fmt(row.p99Ms).padStart(6)}   ${fmt(row.peakRssMb).padStart(11)}   ${
        fmt(row.relayNodeCpuUsPerEvent, 1).padStart(8)
      } / ${fmt(row.rawNodeCpuUsPerEvent, 1)}`
    )
  }
  console.log(`  (latency of a preloaded drain is queue wait: created_at → processed_at)`)

  const steady = yield* run(steadyLatency)
  console.log(`\nSteady state, 2,000 events/s for 10 s, 1 worker: end-to-end p50 ${fmt(steady.p50, 1)} ms, p99 ${fmt(steady.p99, 1)} ms`)

  let memory: Record<string, number> | undefined
  if (MEMORY_EVENTS > 0) {
    yield* run(preload(MEMORY_EVENTS))
    const drained = yield* run(withPeakRss(timed(drainWithRelay(MEMORY_EVENTS, 2, BATCH, MIN_BATCH))))
    memory = { events: MEMORY_EVENTS, startMb: drained.start, peakMb: drained.peak, endMb: drained.end, seconds: drained.result.seconds }
    console.log(
      `\nMemory while draining ${MEMORY_EVENTS.toLocaleString()} events (2 workers): RSS start ${fmt(drained.start)} MB, peak ${fmt(drained.peak)} MB, end ${
        fmt(drained.end)
      } MB (${fmt(MEMORY_EVENTS / drained.result.seconds)} events/s)`
    )
  }

  writeResults("latest", { events: EVENTS, batch: BATCH, minBatch: MIN_BATCH ?? OutboxConfig.defaults.minBatchSize, publish, drains, steady, memory })
})

runMain(main)
