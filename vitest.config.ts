import { defineConfig } from "vitest/config"

// vitest 5 no longer reads vitest.workspace.ts: the packages are `test.projects`.
export default defineConfig({
  test: {
    globalSetup: ["./packages/testing/src/vitestGlobalSetup.ts"],
    projects: ["packages/*", "examples/*"].map((root) => ({
      extends: true,
      test: {
        include: [`${root}/test/**/*.test.ts`],
        name: root
      }
    })),
    testTimeout: 30_000,
    hookTimeout: 120_000
  }
})
