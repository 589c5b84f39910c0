/**
 * Strict JSON serialisation: refuses what `JSON.stringify` would silently
 * drop or mangle (bigint, functions, symbols, NaN/Infinity, Map/Set, cycles)
 * and what PostgreSQL's jsonb refuses (the NUL character).
 *
 * @internal
 */

/** @internal */
export type JsonResult = { readonly ok: true; readonly json: string } | { readonly ok: false; readonly problem: string }

const describePath = (path: ReadonlyArray<string | number>): string =>
  path.length === 0 ? "the value" : path.map((p) => typeof p === "number" ? `[${p}]` : `.${p}`).join("").replace(/^\./, "")

const check = (value: unknown, path: Array<string | number>, seen: Set<object>): string | undefined => {
  switch (typeof value) {
    case "string":
      return value.includes("\u0000") ? `${describePath(path)} contains a NUL character, which jsonb cannot store` : undefined
    case "number":
      return Number.isFinite(value) ? undefined : `${describePath(path)} is ${value}, which JSON cannot represent`
    case "boolean":
      return undefined
    case "bigint":
      return `${describePath(path)} is a bigint; convert it to a string or number`
    case "function":
    case "symbol":
      return `${describePath(path)} is a ${typeof value}`
    case "undefined":
      return path.length === 0 ? "the value is undefined" : undefined
    case "object": {
      if (value === null) return undefined
      if (seen.has(value)) return `${describePath(path)} is a circular reference`
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") return undefined
      if (value instanceof Map || value instanceof Set || value instanceof WeakMap || value instanceof WeakSet) {
        return `${describePath(path)} is a ${value.constructor.name}, which JSON would silently turn into {}`
      }
      seen.add(value)
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item = value[i]
          if (item === undefined || typeof item === "function" || typeof item === "symbol") {
            return `${describePath([...path, i])} is ${typeof item}, which JSON would silently turn into null`
          }
          const problem = check(item, [...path, i], seen)
          if (problem !== undefined) return problem
        }
      } else {
        for (const key of Object.keys(value)) {
          if (key.includes("\u0000")) return `${describePath(path)} has a key containing a NUL character`
          const problem = check((value as Record<string, unknown>)[key], [...path, key], seen)
          if (problem !== undefined) return problem
        }
      }
      seen.delete(value)
      return undefined
    }
  }
}

/** @internal */
export const toJson = (value: unknown): JsonResult => {
  const problem = check(value, [], new Set())
  if (problem !== undefined) return { ok: false, problem }
  const json = JSON.stringify(value)
  // toJSON may itself return something unserialisable
  if (json === undefined) return { ok: false, problem: "the value serialises to nothing" }
  if (json.includes("\\u0000")) return { ok: false, problem: "the value contains a NUL character, which jsonb cannot store" }
  return { ok: true, json }
}

/** @internal */
export const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")
