// Idle RSS of a relay run as compiled JavaScript with plain node (no tsx, no
// npm, no @outbox/source condition: `@outbox/client` resolves to dist/).
// Run `npm run build` first. Spawned by bench/client.bench.ts; by hand:
//
//   DATABASE_URL=postgres://… node bench/relay-idle.mjs            start createRelay, idle, print memory
//   node bench/relay-idle.mjs --import effect/Effect @outbox/core   import only, print memory (import cost)
//
// RELAY_IDLE_SECONDS (default 5): idle time before sampling. Diagnostics:
// RELAY_IDLE_SHIM=subpath|lazy|lazy-http redirects @outbox/runtime's barrel import of
// `@effect/platform-node` to its NodeHttpServer module only (subpath) or to a
// stub (lazy: as if it were imported only when the /metrics server starts;
// lazy-http: HttpRouter and PrometheusMetrics stubbed as well),
// to measure what that import costs; RELAY_IDLE_GC=1 (with --expose-gc)
// collects garbage before sampling. Prints one JSON
// line: rss, heapUsed, heapTotal, external, arrayBuffers (MB) and the number
// of modules loaded per package (counted with module.registerHooks).
import * as Module from "node:module"

const loaded = new Map()
const shim = process.env.RELAY_IDLE_SHIM
const nodeHttpServer = shim === "subpath" ? import.meta.resolve("@effect/platform-node/NodeHttpServer") : undefined
Module.registerHooks?.({
  resolve(specifier, context, nextResolve) {
    const fromRuntime = /\/packages\/runtime\//.test(context.parentURL ?? "")
    if (shim === "lazy-http" && fromRuntime && (specifier === "effect/http/HttpRouter" || specifier === "effect/observability/PrometheusMetrics")) {
      const source = `export const serve = () => { throw new Error("stub") }; export const layerHttp = serve`
      return { url: `data:text/javascript,${encodeURIComponent(source)}`, shortCircuit: true }
    }
    if (shim !== undefined && specifier === "@effect/platform-node" && fromRuntime) {
      const source = shim === "subpath"
        ? `import * as N from ${JSON.stringify(nodeHttpServer)}; export { N as NodeHttpServer }`
        : `export const NodeHttpServer = { layer: () => { throw new Error("stub") } }`
      return { url: `data:text/javascript,${encodeURIComponent(source)}`, shortCircuit: true }
    }
    return nextResolve(specifier, context)
  },
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
    shim: shim ?? null,
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
