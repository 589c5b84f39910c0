/**
 * The inbox for code that does not use Effect: run a consumer's work at most
 * once per event, in the caller's open transaction, with the same
 * `outbox_inbox` table as `PgInbox` (so Effect and promise consumers can
 * share it).
 *
 * @since 0.1.0
 */
import type { ProcessResult } from "@outbox/core/Inbox"
import type { StoreError } from "@outbox/core/OutboxError"
import * as Effect from "effect/Effect"
import { run, storeError } from "./internal/runtime.ts"
import type { Executor } from "./Publisher.ts"

export type {
  /**
   * `{ _tag: "Processed", value }`, or `{ _tag: "Duplicate" }` when the
   * tracking id was already recorded for the consumer.
   *
   * @category models
   * @since 0.1.0
   */
  ProcessResult
} from "@outbox/core/Inbox"

const insertKey = `INSERT INTO outbox_inbox (consumer, tracking_id) VALUES ($1, $2)
  ON CONFLICT (consumer, tracking_id) DO NOTHING
  RETURNING 1 AS inserted`

/** Savepoint names: unique per call, so calls may nest in one transaction. */
let savepoints = 0

/** Thrown by `fn`: kept apart from the inbox's own `StoreError`s so it surfaces unchanged. */
class WorkFailed {
  readonly error: unknown
  constructor(error: unknown) {
    this.error = error
  }
}

/**
 * Records `trackingId` for `consumer` and runs `fn`, in the caller's open
 * transaction: both commit or roll back with it. A duplicate (recorded
 * before, or by a concurrent transaction that committed first) does not run
 * `fn`. The record is made under a savepoint that is rolled back when `fn`
 * throws, so a caller that catches the error and commits anyway leaves the
 * event unrecorded, to be processed again; `fn`'s error surfaces unchanged.
 *
 * Outside a transaction (a `pg` `Pool`, an autocommit connection) it
 * rejects with a `StoreError` before doing anything: recording the id in a
 * statement of its own would commit it even if `fn` then failed, and the
 * event would never be processed.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnce = <A>(
  executor: Executor,
  consumer: string,
  trackingId: string,
  fn: () => PromiseLike<A> | A
): Promise<ProcessResult<A>> => run(processOnceEffect(executor, consumer, trackingId, fn))

/**
 * The effect behind `processOnce`.
 *
 * @category inbox
 * @since 0.1.0
 */
export const processOnceEffect = <A>(
  executor: Executor,
  consumer: string,
  trackingId: string,
  fn: () => PromiseLike<A> | A
): Effect.Effect<ProcessResult<A>, StoreError> => {
  const savepoint = `outbox_inbox_${++savepoints}`
  const query = (text: string, values: Array<unknown> = []) =>
    Effect.tryPromise({ try: () => executor.query(text, values), catch: storeError("inbox.processOnce") })
  const work = Effect.tryPromise({ try: () => Promise.resolve(fn()), catch: (error) => new WorkFailed(error) })
  return query(`SAVEPOINT ${savepoint}`).pipe(
    Effect.mapError((error) =>
      isNotInTransaction(error.cause)
        ? storeError("inbox.processOnce")({
          code: "25P01",
          message: "processOnce needs an open transaction (BEGIN first, or pass the ORM's transaction object)"
        })
        : error
    ),
    Effect.andThen(query(insertKey, [consumer, trackingId])),
    Effect.flatMap((result): Effect.Effect<ProcessResult<A>, StoreError | WorkFailed> =>
      result.rows.length === 0
        ? Effect.as(query(`RELEASE SAVEPOINT ${savepoint}`), { _tag: "Duplicate" } as const)
        : work.pipe(
          Effect.tapError(() => Effect.ignore(query(`ROLLBACK TO SAVEPOINT ${savepoint}`))),
          Effect.tap(() => query(`RELEASE SAVEPOINT ${savepoint}`)),
          Effect.map((value) => ({ _tag: "Processed", value }) as const)
        )
    ),
    // fn's own error rejects the promise as it was thrown
    Effect.catchIf((e): e is WorkFailed => e instanceof WorkFailed, (e) => Effect.die(e.error))
  ) as Effect.Effect<ProcessResult<A>, StoreError>
}

/** PostgreSQL's "SAVEPOINT can only be used in transaction blocks" (25P01), as any driver reports it. */
const isNotInTransaction = (cause: unknown): boolean => {
  const error = cause as { readonly code?: unknown; readonly message?: unknown; readonly meta?: { readonly code?: unknown } }
  return error?.code === "25P01" || error?.meta?.code === "25P01" ||
    (typeof error?.message === "string" && error.message.includes("can only be used in transaction blocks"))
}
