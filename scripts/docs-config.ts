/**
 * Writes the README's configuration table from `OutboxEnv.variables`
 * (between the `<!-- OutboxEnv:begin -->` / `<!-- OutboxEnv:end -->`
 * markers). `packages/runtime/test/OutboxEnv.test.ts` fails when the README
 * and the catalog differ.
 */
import * as OutboxEnv from "@outbox/runtime/OutboxEnv"
import { readFileSync, writeFileSync } from "node:fs"

const path = new URL("../README.md", import.meta.url)
const readme = readFileSync(path, "utf8")
const begin = "<!-- OutboxEnv:begin -->"
const end = "<!-- OutboxEnv:end -->"
const from = readme.indexOf(begin)
const to = readme.indexOf(end)
if (from < 0 || to < from) throw new Error(`README.md: markers ${begin} ... ${end} not found`)
const next = `${readme.slice(0, from + begin.length)}\n${OutboxEnv.markdownTable()}\n${readme.slice(to)}`
writeFileSync(path, next)
console.log(next === readme ? "README.md: configuration table unchanged" : "README.md: configuration table written")
