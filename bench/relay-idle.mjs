// Idle RSS of a relay run as compiled JavaScript with plain node (no tsx, no
// npm, no @outbox/source condition: `@outbox/client` resolves to dist/).
// Run `npm run build` first. Spawned by bench/client.bench.ts; by hand:
//
//   DATABASE_URL=postgres://… node bench/relay-idle.mjs            start createRelay, idle, print memory
//   node bench/relay-idle.mjs --import effect/Effect @outbox/core   import only, print memory (import cost)
//
// RELAY_IDLE_SECONDS (default 5): idle time before sampling; RELAY_IDLE_GC=1 (with --expose-gc) collects
// garbage before sampling. Prints one JSON line: rss, heapUsed, heapTotal, external, arrayBuffers (MB) and
// the number of modules loaded per package (counted with module.registerHooks): what a new static import
// adds to every relay shows up there (the Prometheus server, once imported statically through the
// `@effect/platform-node` barrel, was ~35 MB and ~880 modules; it now loads only where /metrics is served).
import * as Module from "node:module"

const loaded = new Map()
Module.registerHooks?.({
  load(url, context, nextLoad) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url) ?? /\/packages\/([^/]+)\//.exec(url)
    const key = m ? m[1] : url.startsWith("node:") ? "node:" : "other"
    loaded.set(key, (loaded.get(key) ?? 0) + 1)
    return nextLoad(url, context)
  }
})

const mb = (n) => Math.round((n / 1024 / 1024) * 10) / 10
const memory = () => {
  const m = process.memoryUsage()
  return { rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), heapTotalMb: mb(m.heapTotal), externalMb: mb(m.external), arrayBuffersMb: mb(m.arrayBuffers) }
}
const modules = () => Object.fromEntries([...loaded].sort((a, b) => b[1] - a[1]))
const idleMs = Number(process.env.RELAY_IDLE_SECONDS ?? 5) * 1000

const args = process.argv.slice(2)
if (args[0] === "--import") {
  const t0 = performance.now()
  for (const spec of args.slice(1)) await import(spec)
  const importMs = Math.round(performance.now() - t0)
  await new Promise((resolve) => setTimeout(resolve, 500))
  console.log(JSON.stringify({ mode: "import", imports: args.slice(1), importMs, ...memory(), modules: modules() }))
} else {
  const connectionString = process.env.DATABASE_URL
  if (!connectionString) throw new Error("DATABASE_URL is required")
  const t0 = performance.now()
  const { createRelay } = await import("@outbox/client")
  const importMs = Math.round(performance.now() - t0)
  const afterImport = memory()
  const relay = await createRelay({ connectionString, handler: () => {} })
  const startMs = Math.round(performance.now() - t0)
  await new Promise((resolve) => setTimeout(resolve, idleMs))
  if (process.env.RELAY_IDLE_GC === "1") globalThis.gc?.()
  const idle = memory()
  const stats = relay.stats()
  await relay.stop()
  console.log(JSON.stringify({
    mode: "relay",
    node: process.version,
    execArgv: process.execArgv,
    importMs,
    startMs,
    idleSeconds: idleMs / 1000,
    afterImport,
    ...idle,
    completed: Number(stats.completed ?? 0),
    modules: modules()
  }))
}
process.exit(0)
