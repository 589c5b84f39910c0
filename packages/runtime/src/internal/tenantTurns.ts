/**
 * The order in which a worker hands a tenant-fair claim's batch to its sink
 * (`OUTBOX_FAIRNESS=tenant`): the tenants in turn, one event each, rather
 * than the batch's id order.
 *
 * **Why.** A fair claim takes every tenant's share, but a batch is
 * delivered one event after the other, and in id order another tenant's new
 * event (the newest id of the batch) came last, behind the whole share of
 * the tenant with the backlog. With a sink that takes 5 ms an event and
 * claims of 1,000, that was ~5 s of waiting for the event a fair claim had
 * taken at once. In turns it goes second.
 *
 * **What stays.** Each tenant's events keep their id order. Under per-key
 * ordering a key's events keep theirs too: a key's events go in the turn of
 * the tenant of its first event in the batch, so they are never split across
 * tenants (a key whose events name different tenants is one key). So a run
 * (`Ordering.run`) is still delivered in id order, and the relay's
 * `stopKey` still finds a key's later events after the one that failed.
 *
 * @internal
 */
import { effectiveTenant, orderingKeyOf, type OutboxEvent } from "@outbox/core/OutboxEvent"

/**
 * `events` (in id order) in tenant turns: the tenant of the oldest event
 * first, then each tenant in the order of its oldest event, one event each
 * per round, until every tenant's events are out. With `byKey`, an event
 * goes in the turn of the tenant of its key's first event in the batch. A
 * batch of one tenant comes back as it is (the same array).
 *
 * @internal
 */
export const tenantTurns = (events: ReadonlyArray<OutboxEvent>, byKey: boolean): ReadonlyArray<OutboxEvent> => {
  if (events.length < 2) return events
  const turns = new Map<string, Array<OutboxEvent>>()
  const keyTenant = byKey ? new Map<string, string>() : undefined
  for (const event of events) {
    let tenant = effectiveTenant(event)
    if (keyTenant !== undefined) {
      const key = orderingKeyOf(event)
      const first = keyTenant.get(key)
      if (first === undefined) keyTenant.set(key, tenant)
      else tenant = first
    }
    const turn = turns.get(tenant)
    if (turn === undefined) turns.set(tenant, [event])
    else turn.push(event)
  }
  if (turns.size === 1) return events
  // a Map iterates in insertion order: each tenant in the order of its oldest event
  let queues = [...turns.values()]
  const out: Array<OutboxEvent> = []
  for (let round = 0; queues.length > 0; round++) {
    for (const queue of queues) out.push(queue[round]!)
    // a tenant whose events are all out leaves the turns
    if (queues.some((queue) => queue.length === round + 1)) queues = queues.filter((queue) => queue.length > round + 1)
  }
  return out
}

/** Orders events by id (a completion's fast path wants one claim's leases in id order). */
export const byId = (a: OutboxEvent, b: OutboxEvent): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
