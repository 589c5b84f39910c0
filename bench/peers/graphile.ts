/**
 * graphile-worker 0.18 in `peers.bench.ts`. Settings from its types
 * (`GraphileConfig.WorkerOptions` in `node_modules/graphile-worker/dist/index.d.ts`)
 * and its performance page (worker.graphile.org/docs/performance, whose
 * measured preset is `concurrentJobs: 24, maxPoolSize: 25, localQueue: { size:
 * 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0`): `localQueue` fetches
 * and locks a batch of jobs per query and hands them to the workers from
 * memory; `completeJobBatchDelay: 0` completes the jobs finished in one tick
 * in one statement. New jobs wake the workers by LISTEN/NOTIFY
 * (`add_job`/`add_jobs` notify `jobs:insert`). W1 enqueues with
 * `WorkerUtils.addJobs` (one `add_jobs` call per batch); W2 calls
 * `graphile_worker.add_job` inside the producer's transaction, as its docs
 * propose for enqueuing from SQL.
 */
import * as Effect from "effect/Effect"
import { Logger, makeWorkerUtils, run } from "graphile-worker"
import { epochMs } from "../shared.ts"
import type { Handler, Instance, Payload, Subject } from "./harness.ts"
import { PRODUCER_POOL } from "./outbox.ts"
import { inTransaction, pool } from "./pgboss.ts"

export interface GraphileOptions {
  readonly mode: string
  readonly concurrentJobs: number
  readonly maxPoolSize: number
  readonly localQueueSize: number
}

export const graphileWorker = (options: GraphileOptions): Subject => {
  const worker = {
    concurrentJobs: options.concurrentJobs,
    maxPoolSize: options.maxPoolSize,
    localQueue: { size: options.localQueueSize },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0
  }
  return {
    system: "graphile-worker 0.18",
    mode: options.mode,
    peer: true,
    settings: `preset.worker ${JSON.stringify(worker)}, everything else default (pollInterval 2 s: new jobs arrive by NOTIFY); ` +
      `W1 addJobs() of 1,000 jobs per call, W2 SELECT graphile_worker.add_job(...) in the producer's transaction`,
    w1: true,
    w2: true,
    open: (url) =>
      Effect.gen(function*() {
        const errors: Array<unknown> = []
        const logger = new Logger(() => (level, message) => {
          if (level === "error") errors.push(new Error(`graphile-worker: ${message}`))
          else if (level === "warning") console.warn(`  graphile-worker warning: ${message}`)
        })
        const utils = yield* Effect.acquireRelease(
          Effect.tryPromise(() => makeWorkerUtils({ connectionString: url, logger })),
          (u) => Effect.promise(async () => u.release())
        )
        yield* Effect.tryPromise(() => utils.migrate())
        const producers = yield* pool(url, PRODUCER_POOL)
        return {
          enqueueBatch: (payloads: ReadonlyArray<Payload>) =>
            Effect.asVoid(Effect.tryPromise(() => utils.addJobs(payloads.map((payload) => ({ identifier: "noop", payload }))))),
          produce: (make: () => Payload) =>
            inTransaction(producers, (c) => c.query("SELECT graphile_worker.add_job('noop', $1::json)", [JSON.stringify(make())])),
          consume: (handler: Handler) =>
            Effect.asVoid(Effect.acquireRelease(
              Effect.tryPromise(() =>
                run({
                  logger,
                  noHandleSignals: true,
                  taskList: { noop: async (payload) => handler(payload, epochMs()) },
                  preset: { worker: { connectionString: url, ...worker } }
                })
              ),
              (runner) => Effect.promise(() => runner.stop())
            )),
          unsettledSql: "SELECT count(*)::int AS n FROM graphile_worker._private_jobs",
          errors
        } satisfies Instance
      })
  }
}
