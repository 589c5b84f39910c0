import { existsSync, readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

/**
 * Vitest's own server conditions (Vite's without `module`, which picks builds Node cannot load, such as
 * @opentelemetry/api's extensionless ESM) plus `@outbox/source`: each package's exports map it to src/*.ts,
 * so the workspace runs from source while what users install resolves to the compiled dist/.
 */
const sourceConditions = ["@outbox/source", ...defaultServerConditions.filter((c) => c !== "module")]

const root = fileURLToPath(new URL(".", import.meta.url))

/** `packages/core`, `packages/sql`, …, `examples/orders`: every package directory that has a `test` folder. */
const packageDirs = ["packages", "examples"].flatMap((parent) =>
  readdirSync(`${root}${parent}`, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(`${root}${parent}/${entry.name}/test`))
    .map((entry) => `${parent}/${entry.name}`)
)

// vitest 5 ignores vitest.workspace.ts (and rejects `test.workspace`): each package is one of `test.projects`.
export default defineConfig({
  resolve: { conditions: sourceConditions },
  ssr: { resolve: { conditions: sourceConditions } },
  test: {
    // Runs once per run, in the main process, before the workers are spawned: without DATABASE_URL it starts
    // one PostgreSQL (testcontainers, else embedded) and exports DATABASE_URL, which the workers inherit.
    // Projects extending this config do not run it again.
    globalSetup: ["./packages/testing/src/vitestGlobalSetup.ts"],
    projects: packageDirs.map((dir) => ({
      extends: true,
      test: {
        name: dir,
        include: [`${dir}/test/**/*.test.ts`]
      }
    })),
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
