/**
 * Migration `0010_ready_index`: the claimable rows due at once, by id.
 *
 * **Why.** The claim takes the oldest claimable rows along the claimable
 * index (`(id) WHERE status IN ('PENDING', 'FAILED')`), and rows scheduled
 * ahead (`available_at` in the future) are in it too: published before the
 * rows due now, they come first in id order, and every claim read past them
 * and filtered them out. With 100,000 events scheduled a week ahead in front
 * of a backlog, one claim of 100 took 28 ms of server time against 0.24
 * (`bench:ordering`, section 5). The unordered claim now takes its oldest
 * rows from two indexes that split the claimable rows: this one (no
 * `available_at`: due at once) by id, and `<outbox>_waiting_idx` (migration
 * 0008: the rows that have an `available_at`, by it) up to now.
 *
 * **Cost**: one more index entry per row published without a schedule,
 * written at insert and dead once the row is claimed (the claimable index's
 * own cost, twice).
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { fromStatements } from "./statements.ts"

/**
 * The statements for `tables.outbox` (idempotent).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => [
  `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.readyIndex)} ON ${Identifier.quote(tables.outbox)} (id)
   WHERE status IN ('PENDING', 'FAILED') AND available_at IS NULL`
]

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
