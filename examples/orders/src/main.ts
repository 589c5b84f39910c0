/**
 * `npm start`: the orders service with zero setup.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `DATABASE_URL` | unset: an embedded PostgreSQL for the life of the process | the PostgreSQL to use |
 * | `OUTBOX_SINK_URL` | unset: events go to the log | where events go, by scheme: `http(s)://` webhook, `nats://`, `amqp(s)://`, `redis(s)://`, `kafka://` |
 * | `PORT` | 3000 | HTTP port |
 * | `HOST` | 127.0.0.1 | HTTP interface |
 * | `MAX_BODY_SIZE` | `1 MiB` | largest request body (`512 KiB`, `2 MiB`, `1048576 B`: a unit is required); larger ones get 413 |
 *
 * plus the relay's `OUTBOX_*` variables (see `OutboxConfig`). Ctrl-C or
 * SIGTERM stops the server, drains the relay and stops the embedded server.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as App from "./App.ts"

/** `DATABASE_URL`, or an embedded PostgreSQL (stopped when the layer closes). */
const DatabaseLive = Layer.unwrap(Effect.gen(function*() {
  const fromEnv = yield* Config.option(Config.Redacted("DATABASE_URL"))
  if (Option.isSome(fromEnv) && Redacted.value(fromEnv.value) !== "") {
    return PgClient.layer({ url: fromEnv.value, maxConnections: 10 })
  }
  yield* Effect.logInfo("DATABASE_URL is unset: starting an embedded PostgreSQL")
  // finalizers run in reverse order: this one logs after the server has stopped
  yield* Effect.addFinalizer(() => Effect.logInfo("embedded PostgreSQL stopped"))
  const url = yield* TestDatabase.embedded
  yield* Effect.logInfo(`embedded PostgreSQL ready on ${new URL(url).host}`)
  return PgClient.layer({ url: Redacted.make(url), maxConnections: 10 })
}))

const Main = Layer.unwrap(Effect.gen(function*() {
  const port = yield* Config.Port("PORT").pipe(Config.withDefault(3000))
  const host = yield* Config.String("HOST").pipe(Config.withDefault("127.0.0.1"))
  // validated here, so that a bad value stops the start with a ConfigError naming the variable
  const maxBodySize = yield* Config.ByteSize("MAX_BODY_SIZE").pipe(Config.withDefault(App.defaultMaxBodySize))
  return App.layer({ port, host, maxBodySize }).pipe(Layer.provide(DatabaseLive))
}))

/** A shutdown asked for by a signal, once every finalizer has run, is a clean exit (0, not 130). */
const teardown: Runtime.Teardown = (exit, onExit) =>
  exit._tag === "Failure" && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Layer.launch(Main).pipe(
  Effect.onInterrupt(() => Effect.logInfo("orders service stopped")),
  NodeRuntime.runMain({ teardown })
)
