#!/usr/bin/env node
// `npx outbox`: the compiled command line (dist/, written by `npm run build`). In this repository the tests run
// the TypeScript entry point instead (packages/runtime/test/fixtures/cli.ts).
const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  console.error(
    `outbox: Node.js ${process.versions.node} found, 22 or newer needed (Effect 4 and its HTTP client need it). ` +
      "Install Node 22 (e.g. `nvm install 22`, or your distribution's nodejs 22 package) and run again."
  )
  process.exit(1)
}
await import("../dist/bin.js")
