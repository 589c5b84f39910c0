/**
 * Every package's `src/index.ts` exports each of its public modules as a
 * namespace (`export * as X from "./X.ts"`): a new module in `src/` that is
 * not in the barrel fails here. Not public: `src/internal/` and the entry
 * points listed per package below (with the reason they stay out).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"

const packages = fileURLToPath(new URL("../../", import.meta.url))

/**
 * Public folders of `src/` besides its root (`src/internal/` never is): their
 * modules are exported by name like the root's (`WebhookSink` from `sinks/`).
 */
const publicFolders: Record<string, ReadonlyArray<string>> = { runtime: ["sinks"] }

/** The modules of one folder of `src/`, as paths relative to `src/` without `.ts`. */
const modulesIn = (pkg: string, folder: string): ReadonlyArray<string> =>
  readdirSync(`${packages}${pkg}/src/${folder}`, { withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts"))
    .map((entry) => `${folder}${entry.name.slice(0, -".ts".length)}`)

const baseName = (module: string) => module.slice(module.lastIndexOf("/") + 1)

/** The public modules of a package: `src/*.ts` (and its public folders') without `index.ts` and the `entryPoints`. */
const publicModules = (pkg: string, entryPoints: ReadonlyArray<string>): ReadonlyArray<string> =>
  [...modulesIn(pkg, ""), ...(publicFolders[pkg] ?? []).flatMap((folder) => modulesIn(pkg, `${folder}/`))]
    .filter((name) => name !== "index" && !entryPoints.includes(name))
    .sort((a, b) => baseName(a).localeCompare(baseName(b)))

const load = (pkg: string, module: string) =>
  Effect.promise(() => import(`${packages}${pkg}/src/${module}.ts`) as Promise<Record<string, unknown>>)

const namespaceBarrels: ReadonlyArray<{ readonly pkg: string; readonly entryPoints: Record<string, string> }> = [
  { pkg: "core", entryPoints: {} },
  { pkg: "sql", entryPoints: {} },
  { pkg: "runtime", entryPoints: { bin: "the `outbox` executable: importing it runs the command line" } },
  { pkg: "testing", entryPoints: { vitestGlobalSetup: "vitest's globalSetup entry (vitest.config.ts), not an API" } }
]

describe("package barrels", () => {
  for (const { entryPoints, pkg } of namespaceBarrels) {
    it.effect(`@outbox/${pkg}: index.ts exports every public module as a namespace, and nothing else`, () =>
      Effect.gen(function*() {
        const modules = publicModules(pkg, Object.keys(entryPoints))
        const barrel = yield* load(pkg, "index")
        assert.deepStrictEqual(Object.keys(barrel).sort(), modules.map(baseName).sort(), `src/index.ts of @outbox/${pkg}`)
        for (const module of modules) {
          // the very module namespace, not a copy or a different file of the same name
          assert.strictEqual(barrel[baseName(module)], yield* load(pkg, module), `@outbox/${pkg}: ${module}`)
        }
      }))
  }

  // @outbox/client's barrel is flat by design (named exports for code that does not use Effect): every
  // value a public module exports must be reachable from it, except the `…Effect` variants, which are for
  // Effect code and imported from the module's own subpath (`@outbox/client/Publisher`). The adapters are
  // entry points of their own (`@outbox/client/knex`, …) over optional peer dependencies: not in the barrel.
  const clientEntryPoints = ["drizzle", "knex", "kysely", "prisma"]
  it.effect("@outbox/client: the flat barrel reaches every public module's API (adapters are their own entry points)", () =>
    Effect.gen(function*() {
      const modules = publicModules("client", clientEntryPoints)
      assert.deepStrictEqual([...modules], ["ProcessOnce", "Publisher", "Relay"], "a new client module: export its API from index.ts")
      const barrel = yield* load("client", "index")
      for (const module of modules) {
        const exports = yield* load("client", module)
        for (const [name, value] of Object.entries(exports)) {
          if (name.endsWith("Effect")) continue
          assert.strictEqual(barrel[name], value, `@outbox/client: ${module}.${name}`)
        }
      }
      for (const adapter of clientEntryPoints) {
        const exports = yield* load("client", adapter)
        assert.isFunction(exports.publish, adapter)
        assert.isFunction(exports.processOnce, adapter)
        assert.isFunction(exports.executor, adapter)
      }
    }))
})
