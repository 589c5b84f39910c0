import { fileURLToPath } from "node:url"
import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

/**
 * Vitest's own server conditions (Vite's without `module`, which picks builds Node cannot load, such as
 * @opentelemetry/api's extensionless ESM) plus `@outbox/source`: each package's exports map it to src/*.ts,
 * so the workspace runs from source while what users install resolves to the compiled dist/.
 */
const sourceConditions = ["@outbox/source", ...defaultServerConditions.filter((c) => c !== "module")]

/**
 * `npm run test:ops` (through scripts/test-ops.sh): the operations tests. They need Debian's `prometheus` package
 * (`promtool` and the `prometheus` server), which a machine with only Node lacks, so the root `vitest.config.ts`
 * (`npm test`) does not include them: its projects are the `packages/*` and `examples/*` directories only.
 */
export default defineConfig({
  root: fileURLToPath(new URL("..", import.meta.url)),
  resolve: { conditions: sourceConditions },
  ssr: { resolve: { conditions: sourceConditions } },
  test: {
    name: "ops",
    include: ["ops/test/**/*.test.ts"],
    // the end-to-end test needs a PostgreSQL server: DATABASE_URL, else testcontainers, else embedded (as `npm test`)
    globalSetup: ["./packages/testing/src/vitestGlobalSetup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000
  }
})
