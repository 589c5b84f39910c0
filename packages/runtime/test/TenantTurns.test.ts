import { assert, describe, it } from "@effect/vitest"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import * as TenantTurns from "../src/internal/tenantTurns.ts"

/** An event of `tenant` on key `key`, id `id`. */
const event = (id: number, tenant: string, key = `k${id}`): OutboxEvent => ({
  id: BigInt(id),
  trackingId: `t${id}`,
  aggregateType: "Order",
  aggregateId: key,
  eventType: "Placed",
  payload: {},
  metadata: {},
  retryCount: 0,
  maxRetries: 5,
  createdAt: new Date(0),
  orderingKey: key,
  tenant,
  lockedUntil: new Date(0),
  lockToken: 1n
})

const ids = (events: ReadonlyArray<OutboxEvent>) => events.map((e) => Number(e.id))

describe("TenantTurns", () => {
  it("one event of each tenant per round, tenants in the order of their oldest event, each tenant's in id order", () => {
    const batch = [event(1, "a"), event(2, "a"), event(3, "a"), event(4, "c"), event(5, "a"), event(6, "b"), event(7, "c")]
    assert.deepStrictEqual(ids(TenantTurns.tenantTurns(batch, false)), [1, 4, 6, 2, 7, 3, 5])
  })

  it("another tenant's newest event goes second, not after the backlog's share", () => {
    const batch = [...Array.from({ length: 999 }, (_, i) => event(i + 1, "a")), event(1000, "b")]
    const turns = TenantTurns.tenantTurns(batch, false)
    assert.strictEqual(turns.length, 1000)
    assert.strictEqual(Number(turns[1]!.id), 1000)
    assert.deepStrictEqual(ids(turns.slice(2)), Array.from({ length: 998 }, (_, i) => i + 2))
  })

  it("by key: a key's events stay together in the turn of its first event's tenant, in id order", () => {
    // key x: 1 (a), 3 (b), 4 (a); without byKey event 3 would go in b's turn, before 2 and 4
    const batch = [event(1, "a", "x"), event(2, "a", "y"), event(3, "b", "x"), event(4, "a", "x"), event(5, "b", "z")]
    const byKey = ids(TenantTurns.tenantTurns(batch, true))
    assert.deepStrictEqual(byKey, [1, 5, 2, 3, 4])
    const x = byKey.filter((id) => [1, 3, 4].includes(id))
    assert.deepStrictEqual(x, [1, 3, 4])
    // each event by its own tenant: 3 (b) goes ahead of 2 (a)
    assert.deepStrictEqual(ids(TenantTurns.tenantTurns(batch, false)), [1, 3, 2, 5, 4])
  })

  it("a batch of one tenant comes back as it is", () => {
    const batch = [event(1, "a"), event(2, "a")]
    assert.strictEqual(TenantTurns.tenantTurns(batch, false), batch)
    assert.strictEqual(TenantTurns.tenantTurns([], true).length, 0)
  })

  it("events without a tenant share one turn (the metadata's tenant counts)", () => {
    const plain = (id: number, metadata: Record<string, unknown>): OutboxEvent => ({ ...event(id, ""), tenant: undefined, metadata })
    const batch = [plain(1, {}), plain(2, {}), plain(3, { tenant: "m" })]
    assert.deepStrictEqual(ids(TenantTurns.tenantTurns(batch, false)), [1, 3, 2])
  })
})
