import { assert, layer } from "@effect/vitest"
import * as Outbox from "@outbox/core/Outbox"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import { type EventInput, leaseOf, type OutboxEvent } from "@outbox/core/OutboxEvent"
import { type Ordering, OutboxStore } from "@outbox/core/OutboxStore"
import * as BlockedKeys from "@outbox/sql/BlockedKeys"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"

// Blocked keys on PostgreSQL: events published, claimed, retried and dead-lettered through the store (the
// relay's own transitions), then listed; each list is checked against what the ordered claim then takes.

const Live = PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer), Layer.orDie)

const lease = Duration.seconds(30)

/** Event `n` of the ordering key `Order:<aggregateId>`. */
const onKey = (aggregateId: string, n: number, overrides: Partial<EventInput> = {}): EventInput => ({
  aggregateType: "Order",
  aggregateId,
  eventType: "OrderChanged",
  payload: { n },
  ...overrides
})

/** Publishes `events` in one transaction; their ids. */
const publish = (events: ReadonlyArray<EventInput>) =>
  Effect.map(Outbox.transaction(Outbox.publishAll(events)), (published) => published.map((e) => e.id))

const claimOrdered = (deadLetter: Ordering["deadLetter"] = "continue") =>
  Effect.flatMap(OutboxStore, (store) => store.claim({ limit: 100, leaseDuration: lease, ordering: { deadLetter } }))

const byKey = (events: ReadonlyArray<OutboxEvent>, aggregateId: string) => {
  const found = events.find((e) => e.aggregateId === aggregateId)
  if (found === undefined) throw new Error(`no event of ${aggregateId} claimed`)
  return found
}

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`TRUNCATE outbox`)

const service = BlockedKeys.make()

const summary = (keys: ReadonlyArray<BlockedKeys.BlockedKey>) => keys.map((k) => `${k.key} ${k.reason} ${k.headId} ${k.queuedBehind}`)

layer(Live, { timeout: "60 seconds", excludeTestServices: true })("BlockedKeys on PostgreSQL", (it) => {
  it.effect("a head in backoff or scheduled blocks its key; due, in-flight and free keys are not blocked; the claim agrees", () =>
    Effect.gen(function*() {
      yield* reset
      const store = yield* OutboxStore
      const a = yield* publish([onKey("a", 1), onKey("a", 2), onKey("a", 3)])
      const b = yield* publish([onKey("b", 1), onKey("b", 2)])
      const c = yield* publish([onKey("c", 1, { delay: "1 hour" }), onKey("c", 2)])
      yield* publish([onKey("d", 1)])
      yield* publish([onKey("e", 1), onKey("e", 2)])
      yield* publish([onKey("g", 1), onKey("g", 2, { delay: "1 hour" })])
      const m = yield* publish([onKey("m", 1), onKey("m", 2, { delay: "1 hour" })])

      // the relay's first claim: each key's head, except c's (scheduled for later)
      const first = yield* claimOrdered()
      assert.deepStrictEqual(first.map((e) => e.aggregateId).sort(), ["a", "b", "d", "e", "g", "m"])
      yield* store.retry(leaseOf(byKey(first, "a")), { error: "broker unavailable: 503", delay: Duration.hours(1) })
      yield* store.retry(leaseOf(byKey(first, "b")), { error: "hiccup", delay: Duration.zero }) // due again at once
      yield* store.complete([leaseOf(byKey(first, "d"))])
      // e's and g's heads stay PROCESSING: in flight, not blocked (g's scheduled event behind included)
      // m's head is released: due again, its scheduled event behind blocks nothing
      yield* store.release([leaseOf(byKey(first, "m"))])

      const keys = yield* service
      const blocked = yield* keys.list({ hold: false })
      assert.deepStrictEqual(summary(blocked), [`Order:a backoff ${a[0]} 2`, `Order:c scheduled ${c[0]} 1`])
      const [backoff, scheduled] = blocked
      assert.strictEqual(backoff!.status, "FAILED")
      assert.strictEqual(backoff!.retryCount, 1)
      assert.strictEqual(backoff!.lastError, "broker unavailable: 503")
      assert.strictEqual(backoff!.eventType, "OrderChanged")
      assert.isNull(backoff!.deadLetteredAt)
      const untilA = backoff!.availableAt!.getTime() - backoff!.createdAt.getTime()
      assert.isTrue(untilA > 3_500_000 && untilA < 3_700_000, String(untilA))
      assert.isTrue(backoff!.headAgeSeconds >= 0 && backoff!.headAgeSeconds < 60, String(backoff!.headAgeSeconds))
      assert.strictEqual(scheduled!.status, "PENDING")
      assert.strictEqual(scheduled!.retryCount, 0)
      assert.isNull(scheduled!.lastError)
      assert.isTrue(scheduled!.availableAt!.getTime() > Date.now() + 3_500_000)

      const counts = yield* keys.count({ hold: false })
      assert.deepStrictEqual([counts.backoff, counts.scheduled, counts.deadLetterHeld], [1, 1, 0])
      assert.isTrue(counts.oldestFailedHeadAgeSeconds >= 0 && counts.oldestFailedHeadAgeSeconds < 60)

      // the oldest heads first, and the limit cuts from the end
      assert.deepStrictEqual(summary(yield* keys.list({ hold: false, limit: 1 })), [`Order:a backoff ${a[0]} 2`])

      // the ordered claim takes nothing of the listed keys (nor of e and g, in flight), and b's and m's heads
      const second = yield* claimOrdered()
      assert.deepStrictEqual(second.map((e) => e.id), [b[0], m[0]])

      // once a's head is due, a is no longer blocked
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE outbox SET available_at = now() - interval '1 second' WHERE id = ${a[0]!}`
      assert.deepStrictEqual(summary(yield* keys.list({ hold: false })), [`Order:c scheduled ${c[0]} 1`])
    }))

  it.effect("hold: a dead letter below its key's first PENDING/FAILED event holds the key, listed only with hold", () =>
    Effect.gen(function*() {
      yield* reset
      const store = yield* OutboxStore
      const sql = yield* SqlClient.SqlClient
      const f = yield* publish([onKey("f", 1), onKey("f", 2), onKey("f", 3)])
      const g = yield* publish([onKey("g", 1)])
      const h = yield* publish([onKey("h", 1), onKey("h", 2)])
      const j = yield* publish([onKey("j", 1), onKey("j", 2)])

      const first = yield* claimOrdered("hold")
      assert.deepStrictEqual(first.map((e) => e.aggregateId).sort(), ["f", "g", "h", "j"])
      yield* store.deadLetter(leaseOf(byKey(first, "f")), { error: "poison: schema mismatch" })
      yield* store.deadLetter(leaseOf(byKey(first, "g")), { error: "poison" }) // nothing behind it
      yield* store.release([leaseOf(byKey(first, "h")), leaseOf(byKey(first, "j"))])
      // h: a dead letter AFTER its head does not hold it; j: a dead letter, then a head in backoff
      yield* sql`UPDATE outbox SET status = 'DEAD_LETTER', processed_at = now(), last_error = 'late' WHERE id = ${h[1]!}`
      yield* sql`UPDATE outbox SET status = 'DEAD_LETTER', processed_at = now(), last_error = 'first' WHERE id = ${j[0]!}`
      yield* sql`UPDATE outbox SET status = 'FAILED', retry_count = 1, last_error = 'second',
                                   available_at = now() + interval '10 minutes' WHERE id = ${j[1]!}`

      const keys = yield* service
      // under continue, f's and g's dead letters hold nothing; j waits out its backoff
      assert.deepStrictEqual(summary(yield* keys.list({ hold: false })), [`Order:j backoff ${j[1]} 0`])
      // under hold, f is held with two events behind; j once, as held (its dead letter comes first)
      const held = yield* keys.list({ hold: true })
      assert.deepStrictEqual(summary(held), [`Order:f dead_letter_held ${f[0]} 2`, `Order:j dead_letter_held ${j[0]} 1`])
      assert.strictEqual(held[0]!.status, "DEAD_LETTER")
      assert.strictEqual(held[0]!.lastError, "poison: schema mismatch")
      assert.isNull(held[0]!.availableAt)
      assert.isNotNull(held[0]!.deadLetteredAt)
      const counts = yield* keys.count({ hold: true })
      assert.deepStrictEqual([counts.backoff, counts.scheduled, counts.deadLetterHeld], [0, 0, 2])
      assert.strictEqual(g.length, 1)

      // the ordered claim under hold takes h's head only
      const second = yield* claimOrdered("hold")
      assert.deepStrictEqual(second.map((e) => e.id), [h[0]])
    }))

  it.effect("count with maxRows reads only the first rows by id: a key whose rows all come later is missed", () =>
    Effect.gen(function*() {
      yield* reset
      const store = yield* OutboxStore
      yield* publish([onKey("p", 1), onKey("q", 1), onKey("r", 1)])
      const first = yield* claimOrdered()
      for (const event of first) yield* store.retry(leaseOf(event), { error: "down", delay: Duration.hours(1) })
      const keys = yield* service
      assert.strictEqual((yield* keys.count({ hold: false })).backoff, 3)
      assert.strictEqual((yield* keys.count({ hold: false, maxRows: 2 })).backoff, 2)
      const refused = yield* Effect.flip(keys.list({ hold: false, limit: 0 }))
      assert.strictEqual(refused._tag, "InvalidBlockedKeysOptions")
    }))

  it.effect("OutboxHealth: the check judges the oldest head blocked by a failure; nothing is read without per-key ordering", () =>
    Effect.gen(function*() {
      yield* reset
      const store = yield* OutboxStore
      const sql = yield* SqlClient.SqlClient
      const k = yield* publish([onKey("k", 1), onKey("k", 2)])
      yield* publish([onKey("s", 1, { delay: "1 day" })])
      const first = yield* claimOrdered()
      yield* store.retry(leaseOf(byKey(first, "k")), { error: "HTTP 503 from billing", delay: Duration.hours(1) })
      // the scheduled head is a day old: listed, not judged; k's head, 10 minutes old: WARN
      yield* sql`UPDATE outbox SET created_at = created_at - interval '1 day' WHERE aggregate_id = 's'`
      yield* sql`UPDATE outbox SET created_at = created_at - interval '10 minutes' WHERE id = ${k[0]!}`

      const ordered = yield* Effect.flatMap(OutboxHealth.make({ ordering: { deadLetter: "continue" } }), (s) => s.health)
      const finding = ordered.findings.find((f) => f.name === "BlockedKeys")
      assert.isDefined(finding)
      assert.strictEqual(finding!.level, "WARN")
      assert.strictEqual(finding!.subject, "Order:k")
      assert.isTrue(finding!.value >= 600 && finding!.value < 700, String(finding!.value))
      assert.include(finding!.message, `on event ${k[0]}`)
      assert.include(finding!.message, "HTTP 503 from billing")
      assert.deepStrictEqual(ordered.blockedKeys.keys.map((b) => `${b.key} ${b.reason}`), ["Order:s scheduled", "Order:k backoff"])
      assert.deepStrictEqual(ordered.blockedKeys.ordering, { deadLetter: "continue" })
      const critical = yield* Effect.flatMap(
        OutboxHealth.make({ ordering: { deadLetter: "continue" }, thresholds: { blockedKeyHeadAgeSeconds: { critical: 300 } } }),
        (s) => s.health
      )
      assert.strictEqual(critical.findings.find((f) => f.name === "BlockedKeys")?.level, "CRITICAL")

      // without per-key ordering nothing is blocked: not read, no finding, gauges at 0
      const unordered = yield* Effect.flatMap(OutboxHealth.make(), (s) => s.health)
      assert.isUndefined(unordered.findings.find((f) => f.name === "BlockedKeys"))
      assert.isNull(unordered.blockedKeys.ordering)
      assert.deepStrictEqual(unordered.blockedKeys.keys, [])
      assert.deepStrictEqual((yield* Effect.flatMap(OutboxHealth.make(), (s) => s.snapshot)).blockedKeys, {
        backoff: 0,
        scheduled: 0,
        deadLetterHeld: 0,
        oldestFailedHeadAgeSeconds: 0
      })

      // the relay's OutboxConfig, when the layer is built beside it, is the default ordering (OutboxLive's gauges)
      const snapshot = yield* OutboxHealth.OutboxHealth.use((s) => s.snapshot).pipe(
        Effect.provide(OutboxHealth.layer().pipe(Layer.provide(OutboxConfig.layer({ ordering: "key", orderingDeadLetter: "continue" }))))
      )
      assert.deepStrictEqual([snapshot.blockedKeys.backoff, snapshot.blockedKeys.scheduled], [1, 1])
      assert.isTrue(snapshot.blockedKeys.oldestFailedHeadAgeSeconds >= 600)
      // an explicit "none" wins over it
      const none = yield* Effect.flatMap(OutboxHealth.make({ ordering: "none" }), (s) => s.snapshot).pipe(
        Effect.provide(OutboxConfig.layer({ ordering: "key", orderingDeadLetter: "continue" }))
      )
      assert.strictEqual(none.blockedKeys.backoff, 0)
    }))
})
