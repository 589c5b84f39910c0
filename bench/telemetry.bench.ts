/**
 * `npm run bench:telemetry`: relay drain throughput with tracing + metrics on
 * versus off, in one run, on a fresh database (target: ≤ 5 % overhead).
 *
 * - off: the tracer disabled (`References.TracerEnabled` false: no span, not
 *   even the SQL client's) and `OutboxTelemetry.MetricsEnabled` false;
 * - on: an OpenTelemetry SDK tracer (`BatchSpanProcessor` over an exporter
 *   that drops the batches: the cost measured is the relay's and the SDK's,
 *   not a collector's network), every relay metric, and the gauge sampler
 *   over `OutboxHealth.snapshot` at its default period (15 seconds;
 *   BENCH_TELEMETRY_GAUGE_INTERVAL, e.g. "1 second", to sample more often:
 *   each sample counts the backlog, 100,000 rows at the start of a drain).
 *
 * Sampling is head sampling at one ratio, as in production: every event
 * carries a producer `traceparent` in its metadata, sampled (flags 01) for
 * BENCH_TELEMETRY_SAMPLED of them (default 0.1) and not (flags 00) for the
 * others, and the relay's SDK samples with `parentbased_traceidratio` at the
 * same ratio (unless OTEL_TRACES_SAMPLER is set), so its own root spans
 * (claims) are sampled at that ratio too. A sampled event's delivery is a
 * `process` span continuing the producer's trace; an unsampled one makes no
 * span but runs in the producer's context.
 *
 * Two sinks (BENCH_TELEMETRY_SINK, default "noop,webhook"):
 *
 * - noop: the handler does nothing, so the relay's own work is all there is
 *   and telemetry's cost per event is measured against the smallest base
 *   (the worst case, not a workload anyone runs);
 * - webhook: `WebhookSink` POSTs every event to a receiver in another process
 *   on loopback that answers 204 at once (the example's sink, with the
 *   fastest possible consumer): the relay as it runs in production.
 *
 * BENCH_TELEMETRY_ON=tracing,sdk-only installs the SDK but makes no span (a
 * diagnostic: the SDK alone costs nothing measurable; the cost is per
 * recorded span). BENCH_TELEMETRY_VERBOSE=1 prints every round.
 *
 * Environment: BENCH_TELEMETRY_SAMPLED (default 0.1; 1: every trace sampled), BENCH_TELEMETRY_ON (default "tracing,metrics": what "on" turns on),
 * BENCH_TELEMETRY_EVENTS (default 100000; BENCH_TELEMETRY_WEBHOOK_EVENTS, default
 * 20000, for the webhook sink), BENCH_TELEMETRY_CONCURRENCY
 * (default "1,2"), BENCH_TELEMETRY_ROUNDS (default 3: best of, alternating),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the tests).
 */
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import * as WebhookSink from "@outbox/runtime/sinks/WebhookSink"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as SqlClient from "effect/sql/SqlClient"
import { spawn } from "node:child_process"
import { droppingTracer, exportedSpans, fmt, openDatabase, runMain } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_TELEMETRY_EVENTS ?? 100_000)
const CONCURRENCY = (process.env.BENCH_TELEMETRY_CONCURRENCY ?? "1,2").split(",").map(Number)
const ROUNDS = Number(process.env.BENCH_TELEMETRY_ROUNDS ?? 3)
const BATCH = 100
const SAMPLED = Number(process.env.BENCH_TELEMETRY_SAMPLED ?? 0.1)
// read by the SDK's tracer provider when it is built (each "on" drain builds one)
process.env.OTEL_TRACES_SAMPLER ??= SAMPLED >= 1 ? "parentbased_always_on" : "parentbased_traceidratio"
process.env.OTEL_TRACES_SAMPLER_ARG ??= String(SAMPLED)
/** The webhook drains cost ~0.5 ms of Node CPU per event (an HTTP request each): fewer events. */
const WEBHOOK_EVENTS = Number(process.env.BENCH_TELEMETRY_WEBHOOK_EVENTS ?? 20_000)
const SINKS = (process.env.BENCH_TELEMETRY_SINK ?? "noop,webhook").split(",").map((s) => s.trim())
const GAUGE_INTERVAL = Duration.fromInputUnsafe((process.env.BENCH_TELEMETRY_GAUGE_INTERVAL ?? "15 seconds") as Duration.Input)
const ON = new Set((process.env.BENCH_TELEMETRY_ON ?? "tracing,metrics").split(",").map((s) => s.trim()))


/** A webhook receiver in its own process (204 for every POST); its URL. */
const receiver = Effect.acquireRelease(
  Effect.callback<{ url: string; kill: () => void }>((resume) => {
    const child = spawn(process.execPath, ["-e", `
      const server = require("node:http").createServer((req, res) => {
        req.resume(); req.on("end", () => { res.statusCode = 204; res.end() })
      })
      server.keepAliveTimeout = 60000
      server.listen(0, "127.0.0.1", () => console.log(server.address().port))
    `], { stdio: ["ignore", "pipe", "inherit"] })
    child.stdout.once("data", (chunk) => resume(Effect.succeed({ url: `http://127.0.0.1:${String(chunk).trim()}/events`, kill: () => child.kill() })))
  }),
  (r) => Effect.sync(r.kill)
)

/** `n` pending events, each with a producer trace context. */
const preload = (n: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox`
    yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, metadata)
               SELECT 'Order', (g % 1000)::text, 'OrderCreated', jsonb_build_object('n', g),
                      jsonb_build_object('traceparent', '00-' || md5(g::text) || '-' || left(md5(g::text || 's'), 16) ||
                                         CASE WHEN (g % 1000) < ${Math.round(SAMPLED * 1000)} THEN '-01' ELSE '-00' END)
               FROM generate_series(1, ${n}) g`
    yield* sql`VACUUM ANALYZE outbox`.pipe(Effect.catch(() => sql`ANALYZE outbox`))
  })

const Off = Layer.mergeAll(
  Layer.succeed(References.TracerEnabled, false),
  Layer.succeed(OutboxTelemetry.MetricsEnabled, false)
)

/** A fresh SDK per drain: closing the layer shuts its span processor down for good. */
const On = () => Layer.mergeAll(
  ON.has("tracing")
    ? droppingTracer()
    : Layer.succeed(References.TracerEnabled, false),
  Layer.succeed(OutboxTelemetry.MetricsEnabled, ON.has("metrics")),
  // diagnostic: the SDK installed, but no span made
  ON.has("sdk-only") ? Layer.succeed(References.TracerEnabled, false) : Layer.empty
)

/** Drains `n` preloaded events with the real relay into `sink`; seconds and Node CPU seconds. */
const drain = (n: number, concurrency: number, telemetry: Layer.Layer<never>, gauges: boolean, sink: Layer.Layer<OutboxSink.OutboxSink>) =>
  Effect.scoped(Effect.gen(function*() {
    const t0 = performance.now()
    const cpu0 = process.cpuUsage()
    const relayLayer = Relay.layer.pipe(
      Layer.provide(sink),
      Layer.provide(OutboxConfig.layer({ batchSize: BATCH, concurrency, pollInterval: Duration.millis(10) }))
    )
    const context = yield* Layer.build(
      (gauges
        ? Layer.merge(relayLayer, OutboxTelemetry.layerHealthGauges({ every: GAUGE_INTERVAL }).pipe(Layer.provide(OutboxHealth.layer())))
        : relayLayer).pipe(Layer.provide(telemetry))
    )
    const relay = Context.get(context, Relay.Relay)
    while ((yield* relay.stats).completed < n) yield* Effect.sleep("20 millis")
    const cpu = process.cpuUsage(cpu0)
    return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 }
  }))

const main = Effect.gen(function*() {
  const { run, services } = yield* openDatabase(16)
  yield* OutboxMigrations.run.pipe(Effect.provide(services))

  console.log(
    `Telemetry overhead (on = ${[...ON].join(" + ")}, ${SAMPLED * 100} % of traces sampled, sampler ${process.env.OTEL_TRACES_SAMPLER} ${process.env.OTEL_TRACES_SAMPLER_ARG}) — ${EVENTS.toLocaleString()} events per drain (webhook: ${WEBHOOK_EVENTS.toLocaleString()}), batch ${BATCH}, best of ${ROUNDS}, node ${process.version}`
  )
  console.log(`  sink      workers   off ev/s   on ev/s   overhead   Node CPU µs/ev off/on   spans exported`)
  const rows: Array<Record<string, number | string>> = []
  const webhookUrl = SINKS.includes("webhook") ? (yield* receiver).url : ""
  for (const sinkName of SINKS) {
    const sink = sinkName === "webhook"
      ? WebhookSink.layer({ url: webhookUrl })
      : OutboxSink.layerHandler(() => Effect.void)
    const n = sinkName === "webhook" ? WEBHOOK_EVENTS : EVENTS
    for (const concurrency of CONCURRENCY) {
      let off = { seconds: Infinity, cpuSeconds: 0 }
      let on = { seconds: Infinity, cpuSeconds: 0 }
      let spans = 0
      for (let round = 0; round < ROUNDS; round++) {
        yield* run(preload(n))
        const a = yield* run(drain(n, concurrency, Off, false, sink))
        if (a.seconds < off.seconds) off = a
        yield* run(preload(n))
        const before = exportedSpans.count
        const b = yield* run(drain(n, concurrency, On(), ON.has("metrics"), sink))
        if (b.seconds < on.seconds) on = b
        spans = exportedSpans.count - before
        if (process.env.BENCH_TELEMETRY_VERBOSE) console.log(`    round ${round + 1}: off ${fmt(n / a.seconds)} ev/s ${fmt((a.cpuSeconds / n) * 1e6, 1)} µs/ev; on ${fmt(n / b.seconds)} ev/s ${fmt((b.cpuSeconds / n) * 1e6, 1)} µs/ev`)
      }
      const row = {
        sink: sinkName,
        concurrency,
        offEventsPerSec: n / off.seconds,
        onEventsPerSec: n / on.seconds,
        overheadPct: (on.seconds / off.seconds - 1) * 100,
        offCpuUsPerEvent: (off.cpuSeconds / n) * 1e6,
        onCpuUsPerEvent: (on.cpuSeconds / n) * 1e6,
        spansPerDrain: spans
      }
      rows.push(row)
      console.log(
        `  ${sinkName.padEnd(8)}  ${String(concurrency).padStart(7)}   ${fmt(row.offEventsPerSec).padStart(8)}   ${fmt(row.onEventsPerSec).padStart(7)}   ${
          fmt(row.overheadPct, 1).padStart(6)
        } %   ${fmt(row.offCpuUsPerEvent, 1).padStart(10)} / ${fmt(row.onCpuUsPerEvent, 1).padEnd(8)}   ${fmt(spans).padStart(10)}`
      )
    }
  }
  console.log(`  (target: overhead ≤ 5 %; a negative overhead is noise)`)
  return rows
})

runMain(main)
