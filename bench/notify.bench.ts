/**
 * What the wake-up by LISTEN/NOTIFY costs producers, and what it buys.
 *
 * NOTIFY serialises committing transactions behind one database-wide lock
 * (PostgreSQL's `PreCommit_Notify`, held until the commit record is
 * flushed), so it can cost concurrent producers their group commit. This
 * measures one-event transactions (a business row and `Outbox.publish`, in
 * `Outbox.transaction`) from 1, 4 and 16 clients, in alternating runs of:
 *
 * - `none`: no trigger, no relay;
 * - `always`: a trigger that notifies in every transaction (the naive
 *   design), no relay;
 * - `gated`: the library's trigger (migration 0007: notifies only while a
 *   relay holds the wake-up gate), no relay, so nobody holds it;
 * - `relay-poll`: no trigger, a relay draining what the producers write by
 *   polling (1 s, the default);
 * - `relay-poll-10ms`: no trigger, a relay polling every 10 ms (low latency
 *   without NOTIFY: what the relay's own claims cost producers);
 * - `relay-gated`: the library's defaults: the gated trigger and a relay
 *   with its `WakeupListener`;
 * - `relay-always`: the naive trigger and a listening relay.
 *
 * Then the latency from commit to delivery of single events published to an
 * idle relay with the defaults (poll 1 s), with and without the wake-up, and
 * the relay process's CPU while idle.
 *
 * `npx tsx --conditions=@outbox/source bench/notify.bench.ts`
 *
 * The database's side alone, without Node (what the README quotes as
 * "pgbench"): in a scratch database, four tables `t (id bigserial primary
 * key, payload jsonb)`, one without a trigger, one with a no-op statement
 * trigger, one with the library's gated function (`outbox_wakeup()` of
 * migration 0007) and one whose trigger always runs `pg_notify`; each
 * driven by `pgbench -n -c 16 -j 2 -T 3 -f tx.sql` with `tx.sql` =
 * `BEGIN; INSERT INTO t (payload) VALUES ('{"x":1}'); COMMIT;`, the four
 * alternated six times.
 *
 * Environment: BENCH_SECONDS (default 4) per run, BENCH_ROUNDS (default 2),
 * BENCH_CLIENTS (default "1,4,16"), BENCH_VARIANTS (default all, comma-separated),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the tests).
 * Writes `bench/results/notify.json`.
 */
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as Relay from "@outbox/runtime/Relay"
import * as Wakeup from "@outbox/runtime/Wakeup"
import * as WakeupListener from "@outbox/runtime/WakeupListener"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as SqlClient from "effect/sql/SqlClient"
import { fmt, now, openDatabase, runMain, writeResults } from "./shared.ts"

const SECONDS = Number(process.env.BENCH_SECONDS ?? 4)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const CLIENTS = (process.env.BENCH_CLIENTS ?? "1,4,16").split(",").map(Number)
const ALL = ["none", "always", "gated", "relay-poll", "relay-poll-10ms", "relay-gated", "relay-always"] as const
type Variant = typeof ALL[number]
const VARIANTS = (process.env.BENCH_VARIANTS?.split(",") ?? ALL) as ReadonlyArray<Variant>

/** The naive trigger function: every inserting transaction notifies. */
const alwaysNotify = `CREATE OR REPLACE FUNCTION outbox_wakeup() RETURNS trigger LANGUAGE plpgsql AS $fn$
  BEGIN PERFORM pg_catalog.pg_notify(TG_TABLE_NAME || '_wakeup', ''); RETURN NULL; END $fn$`
const createTrigger = `CREATE TRIGGER outbox_wakeup AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_wakeup()`

/** Sets the trigger up for `variant`; `gatedDefinition` is the migration's function, read back at start. */
const setTrigger = (variant: Variant, gatedDefinition: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`DROP TRIGGER IF EXISTS outbox_wakeup ON outbox`
    if (variant === "none" || variant.startsWith("relay-poll")) return
    yield* sql.unsafe(variant === "always" || variant === "relay-always" ? alwaysNotify : gatedDefinition)
    yield* sql.unsafe(createTrigger)
  })

/** A relay (no-op sink) with, for the `relay-gated` and `relay-always` variants, its wake-up listener. */
const relayLayer = (listen: boolean, onDelivered: () => void = () => {}, pollInterval?: Duration.Duration) =>
  Layer.merge(
    Relay.layerWorkers.pipe(
      Layer.provide(OutboxSink.layerHandler(() => Effect.sync(onDelivered))),
      Layer.provide(OutboxConfig.layer(pollInterval === undefined ? {} : { pollInterval }))
    ),
    WakeupListener.layer({ enabled: listen })
  ).pipe(Layer.provideMerge(Wakeup.layer))

/** `clients` producers committing one-event transactions for SECONDS; returns tx/s. */
const produce = (clients: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const deadline = now() + SECONDS * 1000
    let committed = 0
    const producer = (client: number) =>
      Effect.gen(function*() {
        let n = 0
        while (now() < deadline) {
          const id = `${client}-${n++}`
          yield* Outbox.transaction(Effect.gen(function*() {
            yield* sql`INSERT INTO bench_orders (id, total) VALUES (${id}, 42)`
            yield* Outbox.publish({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id, total: 42 } })
          }))
          committed++
        }
      })
    const t0 = now()
    yield* Effect.all(Array.from({ length: clients }, (_, i) => producer(i)), { concurrency: "unbounded", discard: true })
    return committed / ((now() - t0) / 1000)
  })

/** Notifications the server sent meanwhile are not counted by PostgreSQL; the listener's own count is read instead. */
const run = (variant: Variant, clients: number, gatedDefinition: string) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox, bench_orders`
    yield* setTrigger(variant, gatedDefinition)
    let listener: WakeupListener.WakeupListener["Service"] | undefined
    if (variant.startsWith("relay")) {
      const polling = variant.startsWith("relay-poll")
      const context = yield* Layer.build(
        relayLayer(!polling, undefined, variant === "relay-poll-10ms" ? Duration.millis(10) : undefined)
      )
      if (!polling) {
        const started = Context.get(context, WakeupListener.WakeupListener)
        while (!(yield* started.status).armed) yield* Effect.sleep("5 millis")
        listener = started
      }
      yield* Effect.sleep("100 millis")
    }
    const txPerSecond = yield* produce(clients)
    const notifications = listener === undefined ? undefined : (yield* listener.status).notifications
    return { txPerSecond, notifications }
  }))

/** Commit-to-delivery latency of `samples` single events published to an idle relay (poll 1 s). */
const latency = (listen: boolean, samples: number) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox, bench_orders`
    const delivered = yield* Ref.make<Deferred.Deferred<number> | undefined>(undefined)
    const context = yield* Layer.build(relayLayer(listen, () => {
      const d = Effect.runSync(Ref.get(delivered))
      if (d !== undefined) Effect.runSync(Deferred.succeed(d, now()))
    }))
    const listener = listen ? Context.get(context, WakeupListener.WakeupListener) : undefined
    const ms: Array<number> = []
    for (let i = 0; i < samples; i++) {
      // idle again: the gate held (with the listener), or some way into the poll interval (without)
      if (listener !== undefined) while (!(yield* listener.status).armed) yield* Effect.sleep("2 millis")
      yield* Effect.sleep(listen ? "20 millis" : `${Math.round(Math.random() * 1000)} millis`)
      const done = yield* Deferred.make<number>()
      yield* Ref.set(delivered, done)
      yield* Outbox.transaction(Outbox.publish({ aggregateType: "Order", aggregateId: `l-${i}`, eventType: "OrderCreated", payload: {} }))
      const committed = now()
      ms.push((yield* Deferred.await(done)) - committed)
    }
    ms.sort((a, b) => a - b)
    const at = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]!
    return { samples, p50: at(0.5), p95: at(0.95), max: ms[ms.length - 1]! }
  }))

/** CPU of this process (user + system) over `seconds` while an idle relay with its listener waits. */
const idleCpu = (seconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`TRUNCATE outbox, bench_orders`
    yield* Layer.build(relayLayer(true))
    yield* Effect.sleep("500 millis")
    const cpu0 = process.cpuUsage()
    yield* Effect.sleep(Duration.seconds(seconds))
    const cpu = process.cpuUsage(cpu0)
    return { seconds, cpuPercent: ((cpu.user + cpu.system) / 1e6 / seconds) * 100 }
  }))

const main = Effect.gen(function*() {
  const { run: inDatabase } = yield* openDatabase(Math.max(...CLIENTS) + 8)
  yield* inDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* OutboxMigrations.runOutbox
    yield* sql`CREATE TABLE bench_orders (id text PRIMARY KEY, total numeric NOT NULL)`
    const [fn] = yield* sql<{ def: string }>`SELECT pg_get_functiondef('outbox_wakeup()'::regprocedure) AS def`
    const gatedDefinition = fn!.def

    const results: Record<string, Record<string, Array<number>>> = {}
    const heard: Record<string, Record<string, Array<number>>> = {}
    for (let round = 1; round <= ROUNDS; round++) {
      for (const clients of CLIENTS) {
        for (const variant of VARIANTS) {
          const { notifications, txPerSecond } = yield* run(variant, clients, gatedDefinition)
          ;((results[variant] ??= {})[clients] ??= []).push(Math.round(txPerSecond))
          if (notifications !== undefined) ((heard[variant] ??= {})[clients] ??= []).push(notifications)
          console.log(
            `round ${round} clients ${String(clients).padStart(2)} ${variant.padEnd(12)} ${fmt(txPerSecond).padStart(6)} tx/s` +
              (notifications === undefined ? "" : `  (${fmt(notifications)} notifications heard)`)
          )
        }
      }
    }
    yield* setTrigger("gated", gatedDefinition)

    console.log("\nbest of rounds (tx/s):")
    console.log(`clients  ${VARIANTS.map((v) => v.padStart(13)).join("")}`)
    for (const clients of CLIENTS) {
      console.log(`${String(clients).padStart(7)}  ${VARIANTS.map((v) => fmt(Math.max(...results[v]![clients]!)).padStart(13)).join("")}`)
    }

    const woken = yield* latency(true, 40)
    const polled = yield* latency(false, 10)
    console.log(`\ncommit → delivery, idle relay, poll 1 s: with the wake-up p50 ${fmt(woken.p50, 1)} ms, p95 ${fmt(woken.p95, 1)} ms, max ${fmt(woken.max, 1)} ms (${woken.samples} events)`)
    console.log(`                                        polling only p50 ${fmt(polled.p50, 1)} ms, p95 ${fmt(polled.p95, 1)} ms, max ${fmt(polled.max, 1)} ms (${polled.samples} events)`)
    const idle = yield* idleCpu(5)
    console.log(`idle relay with its listener: ${fmt(idle.cpuPercent, 2)} % of a core over ${idle.seconds} s`)

    writeResults("notify", { seconds: SECONDS, rounds: ROUNDS, txPerSecond: results, notificationsHeard: heard, latency: { woken, polled }, idle })
  }))
})

runMain(main)
