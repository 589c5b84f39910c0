import { assert, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import type { EventInput } from "@outbox/core/OutboxEvent"
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// The ordered claim's two ways of ruling out a window candidate with a lower row of its key not yet due: one
// read of the rows not yet due when there are few (the store contract covers it), and an index probe per
// candidate past 1,000 of them (many scheduled events), covered here; and, with fairness, the probe each claim
// takes first (a full claim's in-statement probe, which the next claim reuses without fairness, is one claim old).

const Live = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const lease = Duration.seconds(30)

const onKey = (aggregateId: string, n: number, overrides: Partial<EventInput> = {}): EventInput => ({
  aggregateType: "Order",
  aggregateId,
  eventType: "OrderChanged",
  payload: { n },
  ...overrides
})

const claimOrdered = Effect.flatMap(
  OutboxStore,
  (store) => store.claim({ limit: 10, leaseDuration: lease, ordering: { deadLetter: "continue" } })
)

layer(Live, { timeout: "60 seconds" })("PgOutboxStore ordered claim", (it) => {
  for (const scheduled of [0, 1_500]) {
    it.effect(`a key whose head waits out a backoff is skipped, its later due event not taken (${scheduled} scheduled rows elsewhere)`, () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* OutboxStore
        yield* sql`TRUNCATE outbox`
        // many events scheduled for tomorrow on keys of their own
        if (scheduled > 0) {
          yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, available_at)
                     SELECT 'Later', g::text, 'Reminder', '{}'::jsonb, now() + interval '1 day'
                     FROM generate_series(1, ${scheduled}::int) g`
        }
        const [head, next, other] = yield* Outbox.transaction(Outbox.publishAll([onKey("k", 1), onKey("k", 2), onKey("o", 1)]))
        // the head is claimed and fails: FAILED for an hour
        const first = yield* claimOrdered
        assert.deepStrictEqual(first.map((e) => e.id).sort(), [head!.id, other!.id].sort())
        yield* store.retry(first.find((e) => e.id === head!.id)!, { error: "sink down", delay: Duration.hours(1) })
        yield* store.complete(first.filter((e) => e.id === other!.id))
        const [o2] = yield* Outbox.transaction(Outbox.publishAll([onKey("o", 2)]))
        // k's next event is due and in the window, but its head waits: only o's next is claimed
        const second = yield* claimOrdered
        assert.deepStrictEqual(second.map((e) => e.id), [o2!.id])
        assert.notInclude(second.map((e) => e.id), next!.id)
        const waiting = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM outbox WHERE status IN ('PENDING', 'FAILED') AND available_at > now()`
        assert.strictEqual(waiting[0]!.n, scheduled + 1)
      }))
  }

  it.effect("with fairness, a tenant's new event is taken by the next claim while another tenant's backlog fills every claim", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* OutboxStore
      yield* sql`TRUNCATE outbox`
      const claimFair = store.claim({ limit: 10, leaseDuration: lease, ordering: { deadLetter: "continue" }, fairness: {} })
      // tenant a: 40 keys, one event each, so that every claim of 10 is full
      yield* Outbox.transaction(Outbox.publishAll(
        Array.from({ length: 40 }, (_, i) => onKey(`a-${i}`, i, { metadata: { tenant: "a" } }))
      ))
      const first = yield* claimFair
      assert.strictEqual(first.length, 10)
      const [b] = yield* Outbox.transaction(Outbox.publishAll([onKey("b-1", 1, { metadata: { tenant: "b" } })]))
      // a full claim's probe, reused by the next claim, is one claim old: b's id was drawn after it
      const second = yield* claimFair
      assert.include(second.map((e) => e.id), b!.id)
    }))
})
