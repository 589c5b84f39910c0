/**
 * Migration `0012_tenant_due_index`: the tenant-fair claim's index, by
 * tenant, then when the row became due, then id; it replaces
 * `<outbox>_tenant_idx` (migration 0009, by tenant and id).
 *
 * **Why.** The fair claim takes each tenant's oldest due rows along the
 * tenant index in id order, and rows scheduled ahead (`available_at` in the
 * future) were in it too: published before the rows due now, they came
 * first in id order, and every claim read past them and filtered them out.
 * With 100,000 events scheduled a week ahead in front of a backlog of the
 * same tenant, one fair claim of 100 took 21 ms of server time against 0.3
 * (`bench:ordering`, section 5). In this index a tenant's rows due at once
 * (no `available_at`: `dueAt` is `-infinity`) come first, by id; then its
 * scheduled rows by their time, so the rows scheduled ahead sit at the end
 * of each tenant's range, where no claim reads. The claim reads both parts
 * (`internal/fairClaim.ts`), each up to its share, and takes the oldest by id.
 *
 * **Cost**: none over 0009's index (one entry per claimable row; the new key
 * is 8 bytes wider). Building it takes a `SHARE` lock on the outbox, as
 * 0009's did: producers wait while it builds.
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { fromStatements } from "./statements.ts"
import { effectiveTenant } from "./0009_tenant.ts"

/**
 * When a row became due as SQL (`alias` the row's table alias; none: the
 * bare column, as in the index definition): its `available_at`, else
 * `-infinity` (due at once). The index's expression, which the fair claim
 * must use verbatim.
 *
 * @internal
 */
export const dueAt = (alias?: string): string =>
  `coalesce(${alias === undefined ? "" : `${alias}.`}available_at, '-infinity'::timestamptz)`

/**
 * The statements for `tables.outbox` (idempotent).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => [
  `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.tenantDueIndex)} ON ${Identifier.quote(tables.outbox)}
   (${effectiveTenant()}, ${dueAt()}, id) WHERE status IN ('PENDING', 'FAILED')`,
  `DROP INDEX IF EXISTS ${Identifier.quote(tables.tenantIndex)}`
]

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
