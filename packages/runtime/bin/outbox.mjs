#!/usr/bin/env node
// `npx outbox`: runs the TypeScript entry point through tsx.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
