/**
 * A CPU profile of part of this process (`node:inspector`, the V8 sampling
 * profiler), written as a `.cpuprofile` (Chrome DevTools, speedscope) and
 * summarised: self time by function and by source (package or file), so a
 * bench can say where a run's time goes without a second tool.
 */
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Inspector from "node:inspector/promises"
import * as Path from "node:path"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly hitCount?: number
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples?: ReadonlyArray<number>
}

/** A running profile: `stop` writes it to `file` and returns its summary. */
export interface Profiling {
  readonly stop: (file: string) => Effect.Effect<string>
}

/** Starts sampling (every 200 µs). */
export const start: Effect.Effect<Profiling> = Effect.promise(async () => {
  const session = new Inspector.Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 200 })
  await session.post("Profiler.start")
  return {
    stop: (file: string) =>
      Effect.promise(async () => {
        const { profile } = await session.post("Profiler.stop") as { profile: Profile }
        session.disconnect()
        Fs.mkdirSync(Path.dirname(file), { recursive: true })
        Fs.writeFileSync(file, JSON.stringify(profile))
        return summary(profile)
      })
  }
})

/** Where a frame's code lives: a package under node_modules, a workspace file, Node itself, or V8's own entries. */
const sourceOf = (url: string, functionName: string): string => {
  if (url === "") return functionName.startsWith("(") ? functionName : `(${functionName || "native"})`
  const modules = url.lastIndexOf("/node_modules/")
  if (modules >= 0) {
    const rest = url.slice(modules + "/node_modules/".length).split("/")
    const name = rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!
    // effect's modules apart: its core (fiber runtime) against its other modules
    if (name === "effect") return `effect/${rest[rest.length - 1]}`
    return name
  }
  if (url.startsWith("node:")) return url
  const main = url.indexOf("/packages/")
  if (main >= 0) return url.slice(main + 1)
  const bench = url.indexOf("/bench/")
  return bench >= 0 ? url.slice(bench + 1) : url
}

/** The top self-time functions and sources of `profile`, as text. */
export const summary = (profile: Profile, top = 25): string => {
  const samples = profile.samples?.length ?? profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0)
  const msPerSample = samples === 0 ? 0 : (profile.endTime - profile.startTime) / 1000 / samples
  const byFunction = new Map<string, number>()
  const bySource = new Map<string, number>()
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0
    if (hits === 0) continue
    const { functionName, url, lineNumber } = node.callFrame
    const source = sourceOf(url, functionName)
    const fn = `${functionName || "(anonymous)"}  ${source}${url === "" ? "" : `:${lineNumber + 1}`}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits)
    bySource.set(source, (bySource.get(source) ?? 0) + hits)
  }
  const idle = bySource.get("(idle)") ?? 0
  const busy = samples - idle
  const rows = (map: Map<string, number>) =>
    [...map].filter(([name]) => name !== "(idle)").sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, hits]) =>
      `  ${(hits * msPerSample).toFixed(0).padStart(6)} ms ${((hits / Math.max(1, busy)) * 100).toFixed(1).padStart(5)} %  ${name}`
    )
  return [
    `busy ${(busy * msPerSample).toFixed(0)} ms, idle ${(idle * msPerSample).toFixed(0)} ms (of ${
      ((profile.endTime - profile.startTime) / 1000).toFixed(0)
    } ms); self time by source (% of busy):`,
    ...rows(bySource),
    "self time by function:",
    ...rows(byFunction)
  ].join("\n")
}
