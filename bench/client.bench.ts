/**
 * `npm run bench:client`: what `@outbox/client`'s `publish` costs a `pg` user,
 * and the idle memory of a relay started with plain node.
 *
 * Publish: one-row business transactions (BEGIN; INSERT a business row;
 * the outbox row; COMMIT) on 4 `pg` PoolClients of one `pg.Pool`, each
 * looping transactions, on a fresh migrated database. Variants, rotated in
 * rounds of BENCH_SECONDS each (A B C D, B C D A, …, after a warm-up round):
 * - baseline: the business row only (no outbox row), for context;
 * - hand-written: the very INSERT `PublishStatement.insert` builds for one
 *   event, sent with `client.query`, JSON.stringify done by hand;
 * - publish: `publish(client, event)` from `@outbox/client`, no OpenTelemetry
 *   SDK registered (the default, and the case the target is about);
 * - publish + OTel: the same with a `BasicTracerProvider` (batch processor,
 *   exporter dropping every span) registered globally for its rounds only.
 * Reported per variant: transactions/s and Node CPU per transaction
 * (`process.cpuUsage` delta / transactions, whole process, so the `pg`
 * driver's work is in it), and the library's added Node CPU per transaction
 * over the hand-written statement. Target: ≤ 10 %.
 *
 * The packages are the compiled `dist/` a user installs (the script builds
 * them first and runs this file without the `@outbox/source` condition):
 * under tsx from source, esbuild's `__name` helpers and transpiled code add
 * Node CPU of their own and overstated the library's share.
 *
 * Memory: spawns `node bench/relay-idle.mjs` (compiled dist, no tsx, no
 * source condition; run `npm run build` first) against the same database
 * and reports its RSS after 5 s idle. Target: ≤ 100 MB.
 *
 * Environment: BENCH_ROUNDS (default 5), BENCH_SECONDS (default 3) per
 * variant per round, BENCH_CLIENTS (default 4), BENCH_OTEL (default 1; 0
 * skips the OTel variant), DATABASE_URL (the server; else as the tests).
 * Writes bench/results/client.json.
 */
import { publish } from "@outbox/client"
import * as Identifier from "@outbox/sql/Identifier"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PublishStatement from "@outbox/sql/PublishStatement"
import * as Otel from "@opentelemetry/api"
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { fmt, openDatabase, runMain, writeResults } from "./shared.ts"

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 4)
const WITH_OTEL = process.env.BENCH_OTEL !== "0"

const payload = { total: 42, items: [{ sku: "A", quantity: 2 }] }
const event = { aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload }
const business = "INSERT INTO bench_orders (customer, total) VALUES ($1, $2)"
/** The statement `publish` sends for one event into `outbox`, as `PublishStatement` builds it. */
const outboxInsert = PublishStatement.insert(Identifier.quote("outbox"), [{
  aggregateType: "", aggregateId: "", eventType: "", payloadJson: "", metadataJson: "", maxRetries: 5
}]).text

type Tx = (client: pg.PoolClient) => Promise<unknown>
const inTransaction = (body: Tx): Tx => async (client) => {
  await client.query("BEGIN")
  await client.query(business, ["c-1", 42])
  await body(client)
  await client.query("COMMIT")
}

const variants = {
  baseline: inTransaction(async () => {}),
  handWritten: inTransaction((client) =>
    client.query(outboxInsert, ["Order", "o-1", "OrderCreated", JSON.stringify(payload), JSON.stringify({}), 5])
  ),
  publish: inTransaction((client) => publish(client, event)),
  ...(WITH_OTEL ? { publishOtel: inTransaction((client) => publish(client, event)) } : {})
} satisfies Record<string, Tx>
type Variant = keyof typeof variants
const labels: Record<string, string> = {
  baseline: "baseline: business row only (no outbox row)",
  handWritten: "hand-written PublishStatement INSERT (pg)",
  publish: "publish(client, event), no OTel SDK",
  publishOtel: "publish(client, event), OTel SDK registered"
}

/** A registered OpenTelemetry SDK whose spans are dropped: toggled on for the OTel variant only. */
let exportedSpans = 0
const dropping: SpanExporter = {
  export(spans: Array<ReadableSpan>, done) {
    exportedSpans += spans.length
    done({ code: 0 })
  },
  shutdown: () => Promise.resolve()
}
const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropping, { maxQueueSize: 65_536 })] })
const setOtel = (on: boolean) => {
  if (on) Otel.trace.setGlobalTracerProvider(provider)
  else Otel.trace.disable()
}

/** Every client loops `tx` until `seconds` have passed; transactions, wall seconds and Node CPU seconds. */
const runRound = async (clients: ReadonlyArray<pg.PoolClient>, tx: Tx, seconds: number) => {
  let count = 0
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const deadline = t0 + seconds * 1000
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < deadline) {
      await tx(client)
      count++
    }
  }))
  const cpu = process.cpuUsage(cpu0)
  return { tx: count, seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 }
}

/** `node bench/relay-idle.mjs` (compiled dist, plain node): its JSON line. */
const relayIdle = (url: string) =>
  new Promise<Record<string, unknown>>((resolve, reject) => {
    const script = fileURLToPath(new URL("./relay-idle.mjs", import.meta.url))
    const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: url }
    delete env.NODE_OPTIONS
    ChildProcess.execFile(process.execPath, [script], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`relay-idle.mjs failed (did you run \`npm run build\`?): ${error.message}\n${stderr}`))
      resolve(JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>)
    })
  })

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const main = Effect.gen(function*() {
  const { database, services } = yield* openDatabase(2)
  yield* OutboxMigrations.run.pipe(Effect.provide(services))
  console.log(`Client bench — node ${process.version}, ${CLIENTS} pg clients, ${ROUNDS} rotating rounds × ${SECONDS} s per variant`)

  // memory first, while the outbox is empty: the relay then only idles
  const idle = yield* Effect.promise(() => relayIdle(database.url))
  const idleRssMb = idle.rssMb as number
  console.log(
    `\nRelay idle (createRelay, compiled dist, plain node, ${idle.idleSeconds} s idle): RSS ${fmt(idleRssMb, 1)} MB (target ≤ 100 MB — ${
      idleRssMb <= 100 ? "met" : "NOT met"
    }); heap used ${idle.heapUsedMb} / total ${idle.heapTotalMb} MB, external ${idle.externalMb} MB; RSS after import ${
      (idle.afterImport as Record<string, number>).rssMb
    } MB; import ${idle.importMs} ms; ${Object.values(idle.modules as Record<string, number>).reduce((a, b) => a + b, 0)} modules`
  )

  const pool = new pg.Pool({ connectionString: database.url, max: CLIENTS })
  const clients = yield* Effect.promise(() => Promise.all(Array.from({ length: CLIENTS }, () => pool.connect())))
  yield* Effect.promise(() =>
    clients[0]!.query("CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)")
  )

  const keys = Object.keys(variants) as Array<Variant>
  const runs = Object.fromEntries(keys.map((k) => [k, [] as Array<{ tx: number; seconds: number; cpuSeconds: number }>])) as Record<
    Variant,
    Array<{ tx: number; seconds: number; cpuSeconds: number }>
  >
  for (let round = -1; round < ROUNDS; round++) { // round -1 warms up (JIT, prepared plans, caches)
    for (let k = 0; k < keys.length; k++) {
      const key = keys[(k + Math.max(round, 0)) % keys.length]!
      if (key === "publishOtel") setOtel(true)
      const run = yield* Effect.promise(() => runRound(clients, variants[key]!, round < 0 ? 1 : SECONDS))
      if (key === "publishOtel") setOtel(false)
      if (round >= 0) runs[key].push(run)
    }
  }
  for (const client of clients) client.release()
  yield* Effect.promise(() => pool.end())
  yield* Effect.promise(() => provider.shutdown())

  const total = (key: Variant) => {
    const tx = runs[key].reduce((a, r) => a + r.tx, 0)
    const seconds = runs[key].reduce((a, r) => a + r.seconds, 0)
    const cpu = runs[key].reduce((a, r) => a + r.cpuSeconds, 0)
    return { tx, txPerSec: tx / seconds, cpuUsPerTx: (cpu / tx) * 1e6 }
  }
  const totals = Object.fromEntries(keys.map((k) => [k, total(k)])) as Record<Variant, ReturnType<typeof total>>
  const cpuPerTx = (key: Variant, round: number) => runs[key][round]!.cpuSeconds / runs[key][round]!.tx
  const txPerSec = (key: Variant, round: number) => runs[key][round]!.tx / runs[key][round]!.seconds
  /** Median over rounds of the paired ratio against the hand-written statement in the same round. */
  const pairedCpuPct = (key: Variant) => median(runs[key].map((_, r) => (cpuPerTx(key, r) / cpuPerTx("handWritten", r) - 1) * 100))
  const pairedTxPct = (key: Variant) => median(runs[key].map((_, r) => (txPerSec(key, r) / txPerSec("handWritten", r) - 1) * 100))

  const pct = (n: number) => `${n >= 0 ? "+" : ""}${fmt(n, 1)} %`
  console.log(`\nOne-row business transactions, ${CLIENTS} clients (totals over rounds; "vs hand-written": paired per round, median):`)
  console.log(`  ${"variant".padEnd(46)} ${"tx/s".padStart(7)} ${"Node CPU/tx".padStart(12)}   vs hand-written: CPU/tx    tx/s`)
  for (const key of keys) {
    const t = totals[key]
    const vs = key === "handWritten" ? "" : `${pct(pairedCpuPct(key)).padStart(24)} ${pct(pairedTxPct(key)).padStart(9)}`
    console.log(`  ${labels[key]!.padEnd(46)} ${fmt(t.txPerSec).padStart(7)} ${`${fmt(t.cpuUsPerTx, 1)} µs`.padStart(12)} ${vs}`)
  }
  const hand = totals.handWritten.cpuUsPerTx
  const added = totals.publish.cpuUsPerTx - hand
  const addedPct = (added / hand) * 100
  const rowCost = hand - totals.baseline.cpuUsPerTx
  console.log(
    `\n  outbox row, hand-written: +${fmt(rowCost, 1)} µs Node CPU/tx over the baseline; publish adds +${fmt(added, 1)} µs/tx over it = ${
      pct(addedPct)
    } of a transaction (paired median ${pct(pairedCpuPct("publish"))}) — target ≤ 10 %: ${addedPct <= 10 ? "met" : "NOT met"}`
  )
  if (WITH_OTEL) {
    const otel = totals.publishOtel!
    console.log(
      `  with an OTel SDK registered: +${fmt(otel.cpuUsPerTx - hand, 1)} µs/tx over hand-written (${
        pct(((otel.cpuUsPerTx - hand) / hand) * 100)
      }); ${exportedSpans.toLocaleString()} spans exported (dropped)`
    )
  }

  writeResults("client", {
    clients: CLIENTS,
    rounds: ROUNDS,
    secondsPerRound: SECONDS,
    statement: outboxInsert,
    publish: {
      variants: totals,
      perRound: runs,
      addedCpuUsPerTx: added,
      addedCpuPct: addedPct,
      addedCpuPctPairedMedian: pairedCpuPct("publish"),
      txPerSecPctPairedMedian: pairedTxPct("publish"),
      outboxRowCpuUsPerTx: rowCost,
      ...(WITH_OTEL ? { otelAddedCpuPct: ((totals.publishOtel!.cpuUsPerTx - hand) / hand) * 100, exportedSpans } : {})
    },
    relayIdle: { ...idle, rssMb: idleRssMb, targetMb: 100 }
  })
})

runMain(main)
