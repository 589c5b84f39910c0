import { fileURLToPath } from "node:url"
import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

/**
 * `npm run test:ops` (through scripts/test-ops.sh): the operations tests. They need Debian's `prometheus` package
 * (`promtool` and the `prometheus` server), which a machine with only Node lacks, so the root `vitest.config.ts`
 * (`npm test`) does not include them: its projects are the `packages/*` and `examples/*` directories only.
 */
export default defineConfig({
  root: fileURLToPath(new URL("..", import.meta.url)),
  // from source, as the root config (`@outbox/source` maps each package's exports to src/*.ts)
  resolve: { conditions: ["@outbox/source", ...defaultServerConditions] },
  ssr: { resolve: { conditions: ["@outbox/source", ...defaultServerConditions] } },
  test: {
    name: "ops",
    include: ["ops/test/**/*.test.ts"],
    // the end-to-end test needs a PostgreSQL server: DATABASE_URL, else testcontainers, else embedded (as `npm test`)
    globalSetup: ["./packages/testing/src/vitestGlobalSetup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000
  }
})
