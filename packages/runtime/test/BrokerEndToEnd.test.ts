/**
 * End to end through a real broker: events published in transactions (some
 * rolled back), relayed by `OutboxLive` to NATS JetStream and to RabbitMQ,
 * consumed by a real consumer that runs its handler through the inbox
 * (`PgInbox.processEvent`). The consumer is made to see redeliveries: it
 * leaves some messages unacknowledged after its inbox transaction committed
 * (as if it crashed before the ack), and fails the handler of others on
 * their first delivery. Whatever the broker redelivers, each committed
 * event has exactly one effect, and a rolled-back one none.
 */
import { assert, layer } from "@effect/vitest"
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import type { Inbox } from "@outbox/core/Inbox"
import * as Outbox from "@outbox/core/Outbox"
import type { OutboxSink } from "@outbox/core/OutboxSink"
import * as PgInbox from "@outbox/sql/PgInbox"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import { Connection, ConsumerStatus } from "rabbitmq-client"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as NatsSink from "../src/sinks/NatsSink.ts"
import * as RabbitMqSink from "../src/sinks/RabbitMqSink.ts"

const run = Math.random().toString(36).slice(2, 8)
const COMMITTED = 24

interface Body {
  readonly trackingId: string
  readonly eventType: string
  readonly metadata: Record<string, unknown>
  readonly payload: { readonly n: number }
}

/** What the consumer saw, to check that redeliveries did happen. */
interface Seen {
  deliveries: number
  duplicates: number
  failedOnce: number
  leftUnacked: number
}

/**
 * The consumer's handling of one message: the handler (one row in
 * `effects`) through the inbox. `n % 4 === 1`: the inbox transaction
 * commits, then the message is left unacknowledged once (a crash before
 * the ack). `n % 4 === 2`: the handler fails on the first delivery.
 * Returns whether to acknowledge.
 */
const makeHandle = (consumer: string, seen: Seen) => {
  const firstSeen = new Set<string>()
  return (body: Body): Effect.Effect<boolean, never, SqlClient.SqlClient | Inbox> =>
    Effect.gen(function*() {
      seen.deliveries++
      const sql = yield* SqlClient.SqlClient
      const first = !firstSeen.has(body.trackingId)
      firstSeen.add(body.trackingId)
      const handler: Effect.Effect<void, unknown> = first && body.payload.n % 4 === 2
        ? Effect.andThen(Effect.sync(() => seen.failedOnce++), Effect.fail("handler failed" as const))
        : Effect.asVoid(sql`INSERT INTO effects (tracking_id, n) VALUES (${body.trackingId}, ${body.payload.n})`)
      const result = yield* PgInbox.processEvent(consumer, body, handler)
      if (result._tag === "Duplicate") seen.duplicates++
      if (first && body.payload.n % 4 === 1) {
        seen.leftUnacked++
        return false
      }
      return true
    }).pipe(Effect.catch(() => Effect.succeed(false)))
}

/** Publishes events 0..COMMITTED-1 in transactions of 3, and 5 more in rolled-back ones. */
const publishAll = Effect.gen(function*() {
  const event = (n: number) => ({ aggregateType: "Order", aggregateId: `o-${n}`, eventType: "OrderPlaced", payload: { n } })
  for (let n = 0; n < COMMITTED; n += 3) {
    yield* Outbox.transaction(Outbox.publishAll([event(n), event(n + 1), event(n + 2)]))
  }
  for (let n = 1000; n < 1005; n++) {
    yield* Outbox.transaction(Effect.andThen(Outbox.publish(event(n)), Effect.fail("rolled back" as const))).pipe(Effect.flip)
  }
})

/** Waits (real time) until every committed event has its effect and the consumer saw its redeliveries. */
const settled = (seen: Seen) =>
  Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    sql<{ n: number }>`SELECT count(DISTINCT tracking_id)::int AS n FROM effects`.pipe(
      Effect.map((rows) => rows[0]!.n === COMMITTED && seen.duplicates >= COMMITTED / 4),
      Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("50 millis") }),
      Effect.timeout("30 seconds")
    ))

const assertExactlyOnce = (seen: Seen) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // a moment for any late redelivery to show up as a second effect
    yield* Effect.sleep("300 millis")
    const [row] = yield* sql<{ total: number; distinct: number; rolled: number }>`
      SELECT count(*)::int AS total, count(DISTINCT tracking_id)::int AS distinct,
             count(*) FILTER (WHERE n >= 1000)::int AS rolled FROM effects`
    assert.deepStrictEqual(row, { total: COMMITTED, distinct: COMMITTED, rolled: 0 })
    // the consumer did see redeliveries: committed-then-unacked ones came back as duplicates
    assert.strictEqual(seen.leftUnacked, COMMITTED / 4)
    assert.isAtLeast(seen.duplicates, COMMITTED / 4)
    assert.strictEqual(seen.failedOnce, COMMITTED / 4)
    assert.isAtLeast(seen.deliveries, COMMITTED + COMMITTED / 2)
  })

const relay = (sink: Layer.Layer<OutboxSink, unknown>) =>
  Layer.build(OutboxLive.layer().pipe(Layer.provide(sink)))

const Base = Layer.mergeAll(PgOutboxStore.layer(), PgInbox.layer).pipe(Layer.provideMerge(TestDatabase.layer))

layer(Base, { timeout: "120 seconds", excludeTestServices: true })("broker end to end with the inbox", (it) => {
  it.effect("NATS JetStream: publish → relay → stream → durable consumer with the inbox: one effect per event", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS effects (tracking_id uuid NOT NULL, n int NOT NULL)`
      yield* sql`TRUNCATE effects, outbox`
      const stream = `E2E_${run}`
      const prefix = `e2e_${run}`
      const nc = yield* Effect.acquireRelease(
        Effect.promise(() => connect({ servers: "127.0.0.1:4222" })),
        (nc) => Effect.promise(() => nc.close())
      )
      const jsm = yield* Effect.promise(() => jetstreamManager(nc))
      yield* Effect.addFinalizer(() => Effect.promise(() => jsm.streams.delete(stream).catch(() => false)))
      yield* publishAll
      yield* relay(NatsSink.layer({ url: "nats://127.0.0.1:4222", stream, subjectPrefix: prefix }))
      // the stream exists once the sink is up; a durable consumer redelivering at once on a nak
      yield* Effect.promise(() =>
        jsm.consumers.add(stream, { durable_name: "billing", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
      )
      const consumer = yield* Effect.promise(() => jetstream(nc).consumers.get(stream, "billing"))
      const messages = yield* Effect.acquireRelease(
        Effect.promise(() => consumer.consume()),
        (m) => Effect.promise(() => m.close().then(() => undefined))
      )
      const seen: Seen = { deliveries: 0, duplicates: 0, failedOnce: 0, leftUnacked: 0 }
      const handle = makeHandle("billing-nats", seen)
      const context = yield* Effect.context<SqlClient.SqlClient | Inbox>()
      yield* Effect.forkScoped(Effect.promise(async () => {
        for await (const msg of messages) {
          const ack = await Effect.runPromise(handle(msg.json<Body>()).pipe(Effect.provideContext(context)))
          if (ack) msg.ack()
          else msg.nak()
        }
      }))
      yield* settled(seen)
      yield* assertExactlyOnce(seen)
      const info = yield* Effect.promise(() => jsm.streams.info(stream))
      // each committed event once in the stream (the relay's retries would be deduplicated by Nats-Msg-Id)
      assert.strictEqual(info.state.messages, COMMITTED)
    }).pipe(Effect.scoped), 60_000)

  it.effect("RabbitMQ: publish → relay → exchange → queue → consumer with the inbox: one effect per event", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS effects (tracking_id uuid NOT NULL, n int NOT NULL)`
      yield* sql`TRUNCATE effects, outbox`
      const exchange = `e2e_${run}`
      const rabbit = yield* Effect.acquireRelease(
        Effect.sync(() => new Connection("amqp://guest:guest@127.0.0.1:5672")),
        (c) => Effect.promise(() => c.close())
      )
      yield* Effect.promise(() => rabbit.exchangeDeclare({ exchange, type: "topic", durable: true }))
      yield* Effect.addFinalizer(() => Effect.promise(() => rabbit.exchangeDelete({ exchange }).catch(() => undefined)))
      const queue = `e2e_${run}`
      yield* Effect.promise(() => rabbit.queueDeclare({ queue, exclusive: true }))
      yield* Effect.promise(() => rabbit.queueBind({ queue, exchange, routingKey: "Order.*" }))
      const context = yield* Effect.context<SqlClient.SqlClient | Inbox>()
      const seen: Seen = { deliveries: 0, duplicates: 0, failedOnce: 0, leftUnacked: 0 }
      const handle = makeHandle("billing-rabbit", seen)
      yield* Effect.acquireRelease(
        Effect.sync(() =>
          rabbit.createConsumer({ queue, queueOptions: { exclusive: true }, qos: { prefetchCount: 10 } }, async (msg) => {
            const body = (Buffer.isBuffer(msg.body) ? JSON.parse(msg.body.toString()) : msg.body) as Body
            const ack = await Effect.runPromise(handle(body).pipe(Effect.provideContext(context)))
            return ack ? ConsumerStatus.ACK : ConsumerStatus.REQUEUE
          })
        ),
        (consumer) => Effect.promise(() => consumer.close())
      )
      yield* publishAll
      yield* relay(RabbitMqSink.layer({ url: "amqp://guest:guest@127.0.0.1:5672", exchange }))
      yield* settled(seen)
      yield* assertExactlyOnce(seen)
    }).pipe(Effect.scoped), 60_000)
})
