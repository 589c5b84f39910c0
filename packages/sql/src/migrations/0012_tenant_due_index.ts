/**
 * Migration `0012_tenant_due_index`: the tenant-fair claim's index, by
 * tenant, then `available_at` (NULL, due at once, first), then id; it
 * replaces `<outbox>_tenant_idx` (migration 0009, by tenant and id).
 *
 * **Why.** The fair claim takes each tenant's oldest due rows along the
 * tenant index in id order, and rows scheduled ahead (`available_at` in the
 * future) were in it too: published before the rows due now, they came
 * first in id order, and every claim read past them and filtered them out.
 * With 100,000 events scheduled a week ahead in front of a backlog of the
 * same tenant, one fair claim of 100 took 21 ms of server time against 0.3
 * (`bench:ordering`, section 5). In this index a tenant's rows due at once
 * (no `available_at`) come first, by id; then its scheduled rows by their
 * time, so the rows scheduled ahead sit at the end of each tenant's range,
 * where no claim reads. The claim reads both parts (`internal/fairClaim.ts`),
 * each up to its share, and takes the oldest by id.
 *
 * **Why `available_at` and not `coalesce(available_at, '-infinity')`**: the
 * planner has no statistics of a partial index's expressions, so it took an
 * equality on that expression as 0.5 % of the rows, on top of the tenant's
 * 0.5 %, estimated a tenant's rows due at once at one row, and read them
 * whole and sorted them: a claim of 100 took 4–13 ms while a tenant had 10,000
 * to 40,000 of them, against 0.6 along 0009's index. `available_at IS NULL`
 * is estimated from the column's statistics, and is an index condition too.
 *
 * **Cost**: none over 0009's index (one entry per claimable row; the new key
 * is 8 bytes wider). Building it takes a `SHARE` lock on the outbox, as
 * 0009's did: producers wait while it builds.
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { effectiveTenant } from "./0009_tenant.ts"
import { fromStatements } from "./statements.ts"

/**
 * The statements for `tables.outbox` (idempotent).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => [
  `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.tenantDueIndex)} ON ${Identifier.quote(tables.outbox)}
   (${effectiveTenant()}, available_at NULLS FIRST, id) WHERE status IN ('PENDING', 'FAILED')`,
  `DROP INDEX IF EXISTS ${Identifier.quote(tables.tenantIndex)}`
]

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
