import { existsSync, readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

const root = fileURLToPath(new URL(".", import.meta.url))

/** `packages/core`, `packages/sql`, …, `examples/orders`: every package directory that has a `test` folder. */
const packageDirs = ["packages", "examples"].flatMap((parent) =>
  readdirSync(`${root}${parent}`, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(`${root}${parent}/${entry.name}/test`))
    .map((entry) => `${parent}/${entry.name}`)
)

// vitest 5 ignores vitest.workspace.ts (and rejects `test.workspace`): each package is one of `test.projects`.
export default defineConfig({
  // The workspace runs from source: each package's exports map the `@outbox/source` condition to src/*.ts
  // (what users install resolves to the compiled dist/ instead).
  resolve: { conditions: ["@outbox/source", ...defaultServerConditions] },
  ssr: { resolve: { conditions: ["@outbox/source", ...defaultServerConditions] } },
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
