/**
 * What every ORM adapter builds from its executor: `publish` and
 * `processOnce` taking that library's own transaction object.
 *
 * @internal
 */
import type { EventInput, PublishedEvent } from "@outbox/core/OutboxEvent"
import { type ProcessResult, processOnce } from "../ProcessOnce.ts"
import { type Executor, publish, type PublishOptions } from "../Publisher.ts"

/** @internal */
export interface Adapter<T> {
  readonly executor: (trx: T) => Executor
  readonly publish: {
    (trx: T, event: EventInput, options?: PublishOptions): Promise<PublishedEvent>
    (trx: T, events: ReadonlyArray<EventInput>, options?: PublishOptions): Promise<ReadonlyArray<PublishedEvent>>
  }
  readonly processOnce: <A>(trx: T, consumer: string, trackingId: string, fn: () => PromiseLike<A> | A) => Promise<ProcessResult<A>>
}

/** @internal */
export const make = <T>(executor: (trx: T) => Executor): Adapter<T> => ({
  executor,
  publish: ((trx: T, input: EventInput | ReadonlyArray<EventInput>, options?: PublishOptions) =>
    publish(executor(trx), input as EventInput, options)) as Adapter<T>["publish"],
  processOnce: (trx, consumer, trackingId, fn) => processOnce(executor(trx), consumer, trackingId, fn)
})

/**
 * Splits `$n` placeholder text into its literal parts and the value of each
 * placeholder in order of appearance, for libraries with their own
 * placeholder syntax (Knex's `?`, Drizzle's `sql` chunks). The statements
 * this package sends have no `$` outside placeholders.
 *
 * @internal
 */
export const splitPlaceholders = (
  text: string,
  values: ReadonlyArray<unknown>
): { readonly parts: ReadonlyArray<string>; readonly values: ReadonlyArray<unknown> } => {
  const parts: Array<string> = []
  const ordered: Array<unknown> = []
  let last = 0
  for (const match of text.matchAll(/\$(\d+)/g)) {
    parts.push(text.slice(last, match.index))
    ordered.push(values[Number(match[1]) - 1])
    last = match.index + match[0].length
  }
  parts.push(text.slice(last))
  return { parts, values: ordered }
}
