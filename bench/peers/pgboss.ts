/**
 * pg-boss 12 in `peers.bench.ts`. Settings from its own types
 * (`node_modules/pg-boss/dist/types.d.ts`): `work()` with `batchSize` (jobs
 * per fetch, handed to the handler as one array and completed in one
 * statement), `localConcurrency` (workers per `work()` call, pg-boss 12's
 * successor of teamSize), `burstWhenBatchFull` (fetch again at once while
 * fetches come back full) and `pollingIntervalSeconds` at its minimum 0.5;
 * `useListenNotify` on the instance with `notify: true` on the queue, its
 * documented low-latency wake-up ("workers on notify-enabled queues are woken
 * the moment a job is created"). W1 enqueues with `insert()` (many jobs per
 * statement); W2 with `send()` inside the producer's transaction (its `db`
 * option: `executeSql` on the transaction's client).
 */
import * as Effect from "effect/Effect"
import pg from "pg"
import { PgBoss } from "pg-boss"
import { epochMs } from "../shared.ts"
import type { Handler, Instance, Payload, Subject } from "./harness.ts"
import { PRODUCER_POOL } from "./outbox.ts"

const QUEUE = "bench"

export interface PgBossOptions {
  readonly mode: string
  readonly batchSize: number
  readonly localConcurrency: number
  /** Connections of pg-boss's pool (its `max`, default 10). */
  readonly max?: number
}

/** A pg `Pool` released with the scope. */
export const pool = (url: string, max: number) =>
  Effect.acquireRelease(
    Effect.sync(() => new pg.Pool({ connectionString: url, max })),
    (p) => Effect.promise(() => p.end())
  )

/** BEGIN, `body(client)`, COMMIT on a client of `producers` (ROLLBACK on failure). */
export const inTransaction = (producers: pg.Pool, body: (client: pg.PoolClient) => Promise<unknown>) =>
  Effect.tryPromise(async () => {
    const c = await producers.connect()
    try {
      await c.query("BEGIN")
      await body(c)
      await c.query("COMMIT")
    } catch (error) {
      await c.query("ROLLBACK").catch(() => undefined)
      throw error
    } finally {
      c.release()
    }
  })

export const pgBoss = (options: PgBossOptions): Subject => {
  const work = {
    batchSize: options.batchSize,
    localConcurrency: options.localConcurrency,
    burstWhenBatchFull: true,
    pollingIntervalSeconds: 0.5
  }
  return {
    system: "pg-boss 12.38",
    mode: options.mode,
    peer: true,
    settings: `work(${JSON.stringify(work)}); new PgBoss({ useListenNotify: true, max: ${options.max ?? 10} }), ` +
      `createQueue({ notify: true }); W1 insert() of 1,000 jobs per call, W2 send() in the producer's transaction ({ db })`,
    w1: true,
    w2: true,
    open: (url) =>
      Effect.gen(function*() {
        const errors: Array<unknown> = []
        const boss = new PgBoss({ connectionString: url, useListenNotify: true, max: options.max ?? 10 })
        boss.on("error", (error) => errors.push(error))
        boss.on("warning", (warning) => console.warn(`  pg-boss warning: ${JSON.stringify(warning).slice(0, 300)}`))
        yield* Effect.acquireRelease(
          Effect.tryPromise(() => boss.start()),
          () => Effect.promise(() => boss.stop({ graceful: true, close: true, timeout: 10_000 }))
        )
        yield* Effect.tryPromise(() => boss.createQueue(QUEUE, { notify: true }))
        const producers = yield* pool(url, PRODUCER_POOL)
        return {
          enqueueBatch: (payloads: ReadonlyArray<Payload>) =>
            Effect.asVoid(Effect.tryPromise(() => boss.insert(QUEUE, payloads.map((data) => ({ data }))))),
          produce: (make: () => Payload) =>
            inTransaction(producers, (c) => boss.send(QUEUE, make(), { db: { executeSql: (text, values) => c.query(text, values) } })),
          consume: (handler: Handler) =>
            Effect.asVoid(Effect.acquireRelease(
              Effect.tryPromise(() =>
                boss.work<Payload>(QUEUE, work, async (jobs) => {
                  const at = epochMs()
                  for (const job of jobs) handler(job.data, at)
                })
              ),
              (id) => Effect.promise(() => boss.offWork(QUEUE, { id, wait: true }))
            )),
          unsettledSql: `SELECT count(*)::int AS n FROM pgboss.job WHERE name = '${QUEUE}' AND state IN ('created', 'retry', 'active')`,
          errors
        } satisfies Instance
      })
  }
}
