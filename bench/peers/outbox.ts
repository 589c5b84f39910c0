/**
 * This library in `peers.bench.ts`: the relay as users run it (`OutboxLive`,
 * configured from an environment record, so a mode is just variables), and
 * the raw claim/complete loop of `relay.bench.ts` as the hand-written
 * ceiling. Both consume the same `outbox` table, filled through
 * `Outbox.publishAll` (W1) and `Outbox.transaction(Outbox.publish(...))` (W2).
 */
import { PgClient } from "@effect/sql-pg"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OutboxEnv from "@outbox/runtime/OutboxEnv"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as Cause from "effect/Cause"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { epochMs } from "../shared.ts"
import type { Handler, Instance, Payload, Subject } from "./harness.ts"

/** Connections of the relay's pool: `OutboxLive.layerPg`'s default (`OUTBOX_PG_POOL_MAX`, 10). */
const CONSUMER_POOL = 10
/** Connections of the producers' pool, the same for every system. */
export const PRODUCER_POOL = 4

const event = (p: Payload) => ({ aggregateType: "Order", aggregateId: p.orderId, eventType: "OrderCreated", payload: p })

const client = (url: string, maxConnections: number) =>
  Effect.map(
    PgClient.make({ url: Redacted.make(url), maxConnections }).pipe(Effect.provide(Reactivity.layer)),
    (pg) => Context.make(SqlClient.SqlClient, pg).pipe(Context.add(PgClient.PgClient, pg))
  )

/** The producer side and the schema, shared by the relay and the raw loop. */
const openOutbox = (url: string, errors: Array<unknown>) =>
  Effect.gen(function*() {
    const consumer = yield* client(url, CONSUMER_POOL)
    yield* OutboxMigrations.run.pipe(Effect.provideContext(consumer))
    const producer = yield* Layer.build(
      PgOutboxStore.layerWithoutMigrations().pipe(Layer.provideMerge(Layer.succeedContext(yield* client(url, PRODUCER_POOL))))
    )
    const instance = {
      enqueueBatch: (payloads: ReadonlyArray<Payload>) =>
        Effect.asVoid(Outbox.transaction(Outbox.publishAll(payloads.map(event)))).pipe(Effect.provideContext(producer)),
      produce: (make: () => Payload) =>
        Effect.asVoid(Outbox.transaction(Effect.suspend(() => Outbox.publish(event(make()))))).pipe(Effect.provideContext(producer)),
      unsettledSql: "SELECT count(*)::int AS n FROM outbox WHERE status <> 'COMPLETED'",
      errors
    }
    return { consumer, instance }
  })

/**
 * The relay's warnings and errors fail the bench (a failed iteration is
 * logged and retried, so it would otherwise only show as a slower run); the
 * one warning a concurrency above 1 always logs is expected.
 */
const collectingLogger = (errors: Array<unknown>) =>
  Logger.make((options) => {
    if (options.logLevel !== "Warn" && options.logLevel !== "Error" && options.logLevel !== "Fatal") return
    const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
    if (options.logLevel === "Warn" && message.includes("order is not kept")) return
    errors.push(new Error(`relay ${options.logLevel}: ${message}`))
  })

/** A relay row: `OutboxLive.layer()` configured only by `env` (on top of `base`), nothing else. */
export interface RelayMode {
  readonly mode: string
  readonly env: Readonly<Record<string, string>>
  readonly w1?: boolean
  readonly w2?: boolean
  /** Keep the row when some of its variables do not exist in this version (they are dropped); else it is skipped. */
  readonly partial?: boolean
}

/** The variables this version of the packages reads (`OutboxEnv.variables`). */
const known = new Set(OutboxEnv.variables.map((v) => v.name))

/**
 * The relay row of `mode`, or `undefined` when it sets a variable this version
 * does not read (unless `partial`: then that variable is dropped), so a mode
 * added for a coming option is skipped, not run as a copy of the defaults.
 */
export const relay = (base: Readonly<Record<string, string>>, mode: RelayMode): Subject | undefined => {
  const unknown = Object.keys(mode.env).filter((name) => !known.has(name))
  if (unknown.length > 0 && mode.partial !== true) {
    console.log(`  (relay mode "${mode.mode}" skipped: this version does not read ${unknown.join(", ")})`)
    return undefined
  }
  const env = Object.fromEntries(Object.entries({ ...base, ...mode.env }).filter(([name]) => known.has(name)))
  const defaults = OutboxConfig.variables.filter((v) => !(v.name in env) && v.name !== "OUTBOX_MAX_PAYLOAD_BYTES")
  return {
    system: "outbox relay",
    mode: mode.mode,
    peer: false,
    settings: `OutboxLive.layer() configured by the environment ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ")}; ` +
      `the rest at defaults (${defaults.map((v) => `${v.name} ${v.default?.replaceAll("`", "")}`).join(", ")}; metrics on); ` +
      `its own pool of ${CONSUMER_POOL}`,
    w1: mode.w1 ?? true,
    w2: mode.w2 ?? true,
    open: (url) =>
      Effect.gen(function*() {
        const errors: Array<unknown> = []
        const { consumer, instance } = yield* openOutbox(url, errors)
        const consume = (handler: Handler) =>
          Effect.asVoid(Layer.build(
            OutboxLive.layer().pipe(
              Layer.provide(OutboxSink.layerHandler((e) => Effect.sync(() => handler(e.payload, epochMs())))),
              Layer.provide(Layer.succeedContext(consumer)),
              Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env))),
              Layer.provide(Logger.layer([collectingLogger(errors)]))
            )
          ))
        return { ...instance, consume } satisfies Instance
      })
  }
}

/**
 * The hand-written ceiling: `workers` fibers claiming `batch` rows (the claim
 * and completion statements of `relay.bench.ts`'s raw loop), calling the
 * handler on each, completing them in one statement; `idleMs` between empty
 * claims.
 */
export const rawLoop = (options: { readonly workers: number; readonly batch: number; readonly idleMs: number }): Subject => ({
  system: "raw SQL loop",
  mode: "ceiling",
  peer: false,
  settings: `${options.workers} fibers: claim ${options.batch} (UPDATE … FOR UPDATE SKIP LOCKED RETURNING id, payload), handler, ` +
    `complete (one UPDATE), ${options.idleMs} ms after an empty claim; the relay's pool of ${CONSUMER_POOL}`,
  w1: true,
  w2: true,
  open: (url) =>
    Effect.gen(function*() {
      const errors: Array<unknown> = []
      const { consumer, instance } = yield* openOutbox(url, errors)
      const sql = Context.get(consumer, SqlClient.SqlClient)
      const worker = (handler: Handler) =>
        Effect.gen(function*() {
          while (true) {
            const rows = yield* sql<{ id: bigint; payload: unknown }>`
              UPDATE outbox o SET status = 'PROCESSING', lock_token = 1, locked_until = now() + interval '30 seconds'
              FROM (SELECT id, created_at FROM outbox WHERE status IN ('PENDING', 'FAILED') ORDER BY id
                    LIMIT ${options.batch} FOR UPDATE SKIP LOCKED) c
              WHERE o.id = c.id AND o.created_at = c.created_at
              RETURNING o.id, o.payload`
            if (rows.length === 0) {
              yield* Effect.sleep(options.idleMs)
              continue
            }
            const at = epochMs()
            for (const row of rows) handler(row.payload, at)
            yield* sql`UPDATE outbox SET status = 'COMPLETED', processed_at = now(), lock_token = NULL, locked_until = NULL
                       WHERE id = ANY(${`{${rows.map((r) => r.id).join(",")}}`}::bigint[])`
          }
        }).pipe(Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.sync(() => errors.push(cause))))
      const consume = (handler: Handler) =>
        Effect.asVoid(Effect.forEach(Array.from({ length: options.workers }), () => Effect.forkScoped(worker(handler))))
      return { ...instance, consume } satisfies Instance
    })
})
