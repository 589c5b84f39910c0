// `npm run test:pack`: what a user installs is what counts. Builds and packs every published package, checks
// each tarball (compiled dist/ for every module, no tests), installs the tarballs into a scratch project
// outside the repository and runs there, under plain `node` (no tsx, no loader):
//   - `npx outbox --help` without DATABASE_URL (exit 0, no database needed),
//   - `npx outbox migrate` on a fresh database,
//   - the scripts in scripts/pack/ (publish and relay through the Effect API and the promise API: `pg`,
//     Knex, Drizzle, Kysely and Prisma), each checking that every committed event is relayed and no
//     rolled-back one.
// The database server: DATABASE_URL (any database on it), else postgres://postgres@127.0.0.1:5432/postgres.
// Exits non-zero at the first failure; keeps the scratch project then (its path is printed).
import { execFileSync, spawnSync } from "node:child_process"
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const packages = ["core", "sql", "runtime", "testing", "client"]
const fixtures = fileURLToPath(new URL("./pack/", import.meta.url))
const scratch = mkdtempSync(join(tmpdir(), "outbox-pack-"))
const serverUrl = new URL(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres")
const started = process.hrtime.bigint()

const step = (title) => console.log(`\n▶ ${title}`)
const fail = (message) => {
  console.error(`test:pack FAILED: ${message}\n(scratch project kept at ${scratch})`)
  process.exit(1)
}
/** Runs a command, echoing its output; fails the run on a non-zero exit unless `allowFailure`. */
const run = (command, args, options = {}) => {
  const result = spawnSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options })
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`
  if (!options.quiet) process.stdout.write(output)
  if (result.status !== 0 && !options.allowFailure) {
    if (options.quiet) process.stdout.write(output)
    fail(`${command} ${args.join(" ")} exited with ${result.status ?? result.signal}`)
  }
  return { status: result.status, output }
}
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

// 1. build and pack
step("build")
run(npm, ["run", "build"], { cwd: root, quiet: true })
step("pack")
const tarballs = {}
for (const name of packages) {
  const dir = join(root, "packages", name)
  const [info] = JSON.parse(execFileSync(npm, ["pack", "--json", "--ignore-scripts", "--pack-destination", scratch], { cwd: dir, encoding: "utf8" }))
  const files = new Set(info.files.map((f) => f.path))
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))
  // no tests, fixtures or benches
  const stray = [...files].filter((f) => /(^|\/)(test|tests|bench|fixtures)\//.test(f) || /\.test\.[cm]?[jt]s$/.test(f))
  if (stray.length > 0) fail(`${info.name}: the tarball holds tests: ${stray.join(", ")}`)
  // every module compiled, with types and a source map
  for (const f of files) {
    const m = /^src\/(.+)\.ts$/.exec(f)
    if (m === null) continue
    for (const out of [`dist/${m[1]}.js`, `dist/${m[1]}.d.ts`, `dist/${m[1]}.js.map`]) {
      if (!files.has(out)) fail(`${info.name}: ${f} without ${out}`)
    }
  }
  // the exports' default targets are compiled JavaScript that is in the tarball
  for (const [key, target] of Object.entries(pkg.exports)) {
    if (target === null || typeof target === "string") continue
    if (!/\.js$/.test(target.default) || !/\.d\.ts$/.test(target.types)) fail(`${info.name}: export ${key} does not point at dist`)
    if (!key.includes("*") && !files.has(target.default.slice(2))) fail(`${info.name}: export ${key} → ${target.default} is missing`)
  }
  for (const bin of Object.values(pkg.bin ?? {})) if (!files.has(bin.replace(/^\.\//, ""))) fail(`${info.name}: bin ${bin} is missing`)
  tarballs[info.name] = join(scratch, info.filename)
  console.log(`${info.name}: ${info.entryCount} files, ${(info.size / 1024).toFixed(0)} kB packed`)
}

// 2. a scratch project outside the repository, with the tarballs (overrides pin the packages' own
//    dependencies on each other to the tarballs too) and what a user would add beside them
step(`install into ${scratch}`)
const app = join(scratch, "app")
cpSync(fixtures, app, { recursive: true })
const rootLock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"))
const locked = (name) => rootLock.packages[`node_modules/${name}`]?.version ?? fail(`${name} is not in package-lock.json`)
const overrides = Object.fromEntries(Object.entries(tarballs).map(([name, file]) => [name, `file:${file}`]))
writeFileSync(join(app, "package.json"), JSON.stringify({
  name: "outbox-pack-scratch",
  private: true,
  type: "module",
  dependencies: {
    ...overrides,
    ...Object.fromEntries(
      [
        "effect", "pg", "knex", "drizzle-orm", "kysely", "prisma", "@prisma/client", "@prisma/adapter-pg",
        // the broker clients a user adds for the broker sinks (optional peers of @outbox/runtime)
        "ioredis", "@nats-io/transport-node", "@nats-io/jetstream"
      ].map((n) => [n, locked(n)])
    )
  },
  overrides
}, null, 2))
run(npm, ["install", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: app })
const installed = readdirSync(join(app, "node_modules", "@outbox"))
console.log(`installed: ${installed.map((n) => `@outbox/${n}`).join(", ")}`)

// Prisma's client for the Prisma script. `prisma generate` downloads a schema engine from the vendor's host
// first, which a machine that reaches only the npm registry cannot; generate never runs it, and the CLI only
// checks that the file PRISMA_SCHEMA_ENGINE_BINARY names exists (Prisma 7.10), so any existing file does.
step("npx prisma generate")
run("npx", ["--no-install", "prisma", "generate"], {
  cwd: app,
  env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? process.execPath },
  quiet: true
})

// 3. the CLI without a database
step("npx outbox --help (no DATABASE_URL)")
const env = { ...process.env }
delete env.DATABASE_URL
delete env.NODE_OPTIONS
const help = run("npx", ["--no-install", "outbox", "--help"], { cwd: app, env, quiet: true })
if (!/migrate/.test(help.output)) fail(`outbox --help printed no command list:\n${help.output}`)
console.log(help.output.split("\n").slice(0, 6).join("\n"))

// 4. a fresh database, migrated by the CLI
const database = `outbox_pack_${process.pid}_${Date.now()}`
const admin = (sql) =>
  run(process.execPath, ["--input-type=module", "-e", `
    import pg from "pg"
    const client = new pg.Client(${JSON.stringify(serverUrl.href)})
    await client.connect()
    try { await client.query(${JSON.stringify(sql)}) } finally { await client.end() }
  `], { cwd: app, quiet: true })
admin(`CREATE DATABASE ${database}`)
const databaseUrl = new URL(serverUrl.href)
databaseUrl.pathname = `/${database}`
const withDb = { ...env, DATABASE_URL: databaseUrl.href }
let ok = false
try {
  step("npx outbox migrate")
  run("npx", ["--no-install", "outbox", "migrate"], { cwd: app, env: withDb })

  // 5. publish and relay, through each API
  for (const script of readdirSync(app).filter((f) => f.endsWith(".mjs") && !f.startsWith("_")).sort()) {
    step(`node ${script}`)
    run(process.execPath, [script], { cwd: app, env: withDb, timeout: 120_000 })
  }
  ok = true
} finally {
  admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
}
if (ok) {
  rmSync(scratch, { recursive: true, force: true })
  console.log(`\ntest:pack passed in ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(0)} s`)
}
