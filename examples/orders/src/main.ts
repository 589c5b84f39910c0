/**
 * `npm start`: the orders service with zero setup. Uses `DATABASE_URL` when
 * set; otherwise starts an embedded PostgreSQL (real binaries from npm) for
 * the life of the process.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as App from "./App.ts"

const DatabaseLive = Layer.unwrap(Effect.gen(function*() {
  const url = yield* TestDatabase.serverUrl
  if (process.env.DATABASE_URL === undefined) yield* Effect.logInfo("DATABASE_URL is unset: started an embedded PostgreSQL")
  return PgClient.layer({ url: Redacted.make(url), maxConnections: 10 })
}))

const Main = Layer.unwrap(Effect.gen(function*() {
  const port = yield* Config.Port("PORT").pipe(Config.withDefault(3000))
  return App.layer({ port }).pipe(Layer.provideMerge(DatabaseLive))
}))

Effect.gen(function*() {
  yield* App.logAddress
  return yield* Effect.never
}).pipe(Effect.provide(Main), NodeRuntime.runMain)
