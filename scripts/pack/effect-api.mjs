// Runs in the scratch project of `npm run test:pack`, under plain `node`, against the installed tarballs:
// publishes through the Effect API (Outbox.transaction + Outbox.publish) and relays with OutboxLive.
// Exits 0 once every committed event was delivered and the rolled-back one was not.
import { Outbox, OutboxSink } from "@outbox/core"
import { OutboxLive } from "@outbox/runtime"
import { OutboxMigrations } from "@outbox/sql"
import { Deferred, Duration, Effect, Layer, Ref } from "effect"
import { SqlClient } from "effect/sql"

const run = `effect-${process.pid}`
const committed = ["a", "b", "c"].map((n) => `${run}-${n}`)

const program = Effect.gen(function*() {
  const delivered = yield* Ref.make(new Set())
  const done = yield* Deferred.make()
  const Sink = OutboxSink.layerHandler((event) =>
    Effect.gen(function*() {
      if (!event.aggregateId.startsWith(run)) return
      const seen = yield* Ref.updateAndGet(delivered, (s) => new Set(s).add(event.aggregateId))
      if (committed.every((id) => seen.has(id))) yield* Deferred.succeed(done, undefined)
    })
  )
  const Live = OutboxLive.layer({ config: { pollInterval: Duration.millis(50) } }).pipe(
    Layer.provide(Sink),
    Layer.provideMerge(OutboxLive.layerPg)
  )
  return yield* Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* OutboxMigrations.run
    yield* sql`CREATE TABLE IF NOT EXISTS pack_orders (id text PRIMARY KEY)`
    const publish = (id) =>
      Outbox.transaction(Effect.gen(function*() {
        yield* sql`INSERT INTO pack_orders (id) VALUES (${id})`
        yield* Outbox.publish({ aggregateType: "Order", aggregateId: id, eventType: "OrderCreated", payload: { id } })
      }))
    for (const id of committed) yield* publish(id)
    // rolled back: the business row and the event go together
    const rolledBack = yield* Effect.flip(Outbox.transaction(Effect.andThen(
      Outbox.publish({ aggregateType: "Order", aggregateId: `${run}-rolled-back`, eventType: "OrderCreated", payload: {} }),
      Effect.fail("abort")
    )))
    if (rolledBack !== "abort") return yield* Effect.die(`unexpected ${String(rolledBack)}`)
    yield* Deferred.await(done).pipe(Effect.timeout(Duration.seconds(20)))
    yield* Effect.sleep(Duration.millis(500)) // give a wrongly relayed rolled-back event the time to show up
    const seen = yield* Ref.get(delivered)
    if (seen.has(`${run}-rolled-back`)) return yield* Effect.die("the rolled-back event was relayed")
    yield* Effect.log(`effect API: ${seen.size} committed events relayed, the rolled-back one not`)
  }).pipe(Effect.provide(Live))
})

Effect.runPromise(Effect.scoped(program)).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
