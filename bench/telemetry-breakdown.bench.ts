/**
 * `npx tsx bench/telemetry-breakdown.bench.ts`: the relay's own Node CPU per
 * event by telemetry setup, with no database: the relay drains events from a
 * stub store whose claim hands out slices of a prebuilt array and whose
 * other operations do nothing, into a no-op handler. What is left is the
 * relay's machinery and what telemetry adds to it, without PostgreSQL's
 * round trips and the noise they bring (`bench:telemetry` measures the real
 * thing).
 *
 * Setups (BENCH_BREAKDOWN_MODES, default "off,metrics,tracing"), alternating,
 * best of BENCH_BREAKDOWN_ROUNDS (default 3):
 *
 * - off: tracer disabled, no metric;
 * - metrics: the relay's counters and histograms;
 * - tracing: metrics plus an OpenTelemetry SDK tracer over an exporter that
 *   drops its batches, sampling `parentbased_traceidratio` at
 *   BENCH_BREAKDOWN_SAMPLED (default 0.1), the ratio of events whose
 *   producer `traceparent` is sampled. 0 measures what continuing the
 *   producer's context costs when no span is recorded at all.
 *
 * BENCH_BREAKDOWN_EVENTS (default 200000) events per drain, batches of 100,
 * one worker. On a shared machine the CPU time varies by ±30 % between runs;
 * for a figure that does not, count instructions (valgrind's callgrind;
 * the difference between ROUNDS=3 and ROUNDS=1 runs of one mode, divided by
 * 2 × events, is the steady-state count per event):
 *
 *     BENCH_BREAKDOWN_MODES=tracing BENCH_BREAKDOWN_ROUNDS=1 BENCH_BREAKDOWN_EVENTS=25000 \
 *       valgrind --tool=callgrind --callgrind-out-file=/dev/null node --import tsx bench/telemetry-breakdown.bench.ts
 */
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as References from "effect/References"
import { droppingTracer, exportedSpans } from "./shared.ts"

const EVENTS = Number(process.env.BENCH_BREAKDOWN_EVENTS ?? 200_000)
const SAMPLED = Number(process.env.BENCH_BREAKDOWN_SAMPLED ?? 0.1)
const MODES = (process.env.BENCH_BREAKDOWN_MODES ?? "off,metrics,tracing").split(",").map((m) => m.trim())
const ROUNDS = Number(process.env.BENCH_BREAKDOWN_ROUNDS ?? 3)
// read by the SDK's tracer provider when it is built
process.env.OTEL_TRACES_SAMPLER ??= "parentbased_traceidratio"
process.env.OTEL_TRACES_SAMPLER_ARG ??= String(SAMPLED)

const hex = (n: number, length: number) => n.toString(16).padStart(length, "0").slice(-length)
const createdAt = new Date()
/** Metadata as PostgreSQL's jsonb would give it: parsed from text (flat strings). */
const events: ReadonlyArray<OutboxEvent> = Array.from({ length: EVENTS }, (_, i) => ({
  id: BigInt(i + 1),
  trackingId: `00000000-0000-4000-8000-${hex(i, 12)}`,
  aggregateType: "Order",
  aggregateId: String(i % 1000),
  eventType: "OrderCreated",
  payload: { n: i },
  metadata: JSON.parse(
    JSON.stringify({ traceparent: `00-${hex(i + 1, 32)}-${hex(i + 7, 16)}-${i % 1000 < SAMPLED * 1000 ? "01" : "00"}` })
  ),
  retryCount: 0,
  maxRetries: 5,
  createdAt,
  lockToken: 1n,
  lockedUntil: new Date(createdAt.getTime() + 60_000)
}))

/** Claims hand out the next slice; everything else succeeds at once. */
const stubStore = () =>
  Layer.sync(OutboxStore, () => {
    let next = 0
    return OutboxStore.of({
      withTransaction: () => Effect.die("not in this bench"),
      claim: ({ limit }) =>
        Effect.sync(() => {
          const slice = events.slice(next, next + limit)
          next += slice.length
          return slice
        }),
      renew: () => Effect.void,
      complete: () => Effect.void,
      retry: () => Effect.void,
      deadLetter: () => Effect.void,
      release: () => Effect.void,
      reap: Effect.succeed({ requeued: [], deadLettered: [] }),
      claimInTransaction: () => Effect.die("not in this bench"),
      get: () => Effect.succeed(Option.none())
    })
  })

const telemetry = (mode: string): Layer.Layer<never> =>
  Layer.mergeAll(
    mode === "tracing"
      ? droppingTracer()
      : Layer.succeed(References.TracerEnabled, false),
    Layer.succeed(OutboxTelemetry.MetricsEnabled, mode !== "off")
  )

/** Drains every event once; Node CPU µs per event. */
const drain = (mode: string) =>
  Effect.scoped(Effect.gen(function*() {
    const cpu0 = process.cpuUsage()
    const context = yield* Layer.build(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
        Layer.provide(OutboxConfig.layer({ batchSize: 100, concurrency: 1, pollInterval: Duration.millis(1) })),
        Layer.provide(stubStore()),
        Layer.provide(telemetry(mode))
      )
    )
    const relay = Context.get(context, Relay.Relay)
    while ((yield* relay.stats).completed < EVENTS) yield* Effect.sleep("5 millis")
    const cpu = process.cpuUsage(cpu0)
    return (cpu.user + cpu.system) / EVENTS
  }))

const main = Effect.gen(function*() {
  console.log(
    `Relay Node CPU per event, stub store, no-op handler — ${EVENTS.toLocaleString()} events per drain, ${
      SAMPLED * 100
    } % of traces sampled, best of ${ROUNDS}, node ${process.version}`
  )
  const best = new Map<string, number>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of MODES) {
      const before = exportedSpans.count
      const us = yield* drain(mode)
      best.set(mode, Math.min(best.get(mode) ?? Infinity, us))
      if (process.env.BENCH_BREAKDOWN_VERBOSE) {
        console.log(`    round ${round + 1} ${mode}: ${us.toFixed(2)} µs/event, ${exportedSpans.count - before} spans`)
      }
    }
  }
  const base = best.get("off")
  for (const [mode, us] of best) {
    const vsOff = base === undefined || mode === "off" ? "" : `  (+${(us - base).toFixed(2)} µs over off)`
    console.log(`  ${mode.padEnd(8)} ${us.toFixed(2)} µs/event${vsOff}`)
  }
})

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
