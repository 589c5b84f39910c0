// Runs in the scratch project of `npm run test:pack`, under plain `node`, against the installed tarballs and
// the broker clients a user installs beside them (optional peers of @outbox/runtime): publishes through the
// Effect API and relays with OutboxLive to Redis Streams and to NATS JetStream, each sink chosen by its URL
// (SinkUrl, what OUTBOX_SINK_URL does). Exits 0 once every committed event is on each broker.
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Outbox } from "@outbox/core"
import { OutboxLive, SinkUrl } from "@outbox/runtime"
import { OutboxMigrations, PgOutboxStore } from "@outbox/sql"
import { Duration, Effect, Layer, Schedule } from "effect"
import { Redis } from "ioredis"

const run = `pack${process.pid}`
const events = 3

const publish = (aggregateType) =>
  Outbox.transaction(Outbox.publishAll(Array.from({ length: events }, (_, i) => ({
    aggregateType, aggregateId: `${run}-${i}`, eventType: "Checked", payload: { i }
  }))))

/** Relays with the sink `url` names until `count` reaches `events`. */
const relayTo = (url, count) =>
  Effect.scoped(Effect.gen(function*() {
    yield* Layer.build(OutboxLive.layer({ config: { pollInterval: Duration.millis(50) } }).pipe(Layer.provide(SinkUrl.layer(url))))
    yield* count.pipe(
      Effect.repeat({ until: (n) => n >= events, schedule: Schedule.spaced("50 millis") }),
      Effect.timeout(Duration.seconds(20))
    )
  }))

const program = Effect.gen(function*() {
  yield* OutboxMigrations.run
  // Redis Streams: stream outbox:<aggregateType>
  const redis = new Redis("redis://127.0.0.1:6379")
  yield* publish(`Redis${run}`)
  yield* relayTo("redis://127.0.0.1:6379", Effect.promise(() => redis.xlen(`outbox:Redis${run}`)))
  yield* Effect.promise(() => redis.del(`outbox:Redis${run}`).then(() => redis.quit()))
  // NATS JetStream: a stream of this run's own
  const nc = yield* Effect.promise(() => connect({ servers: "127.0.0.1:4222" }))
  const jsm = yield* Effect.promise(() => jetstreamManager(nc))
  yield* publish(`Nats${run}`)
  yield* relayTo(
    `nats://127.0.0.1:4222?stream=PACK_${run}&subjectPrefix=pack_${run}`,
    Effect.promise(() => jsm.streams.info(`PACK_${run}`).then((i) => i.state.messages, () => 0))
  )
  yield* Effect.promise(() => jsm.streams.delete(`PACK_${run}`).then(() => nc.close()))
  yield* Effect.log(`broker sinks: ${events} events relayed to Redis Streams and to NATS JetStream, chosen by URL`)
}).pipe(Effect.provide(PgOutboxStore.layer().pipe(Layer.provideMerge(OutboxLive.layerPg))))

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
