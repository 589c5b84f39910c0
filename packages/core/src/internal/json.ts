/**
 * Strict JSON serialisation: refuses what `JSON.stringify` would silently
 * drop or mangle (bigint, functions, symbols, NaN/Infinity, Map/Set, cycles)
 * and what PostgreSQL's jsonb refuses (the NUL character, and lone UTF-16
 * surrogates, which have no UTF-8 form).
 *
 * @internal
 */

/** @internal */
export type JsonResult = { readonly ok: true; readonly json: string } | { readonly ok: false; readonly problem: string }

const describePath = (path: ReadonlyArray<string | number>): string =>
  path.length === 0 ? "the value" : path.map((p) => typeof p === "number" ? `[${p}]` : `.${p}`).join("").replace(/^\./, "")

/**
 * The walk's state: `path` and `seen` are stacks (pushed and popped; `path`
 * copied only into a message), `seen` an array because payloads are shallow
 * and a search of a few entries costs less than a Set per call; `toJson`
 * records whether any `toJSON` ran, the only way a string the walk did not
 * see can reach the JSON text. Validation runs on every publish.
 */
interface Walk {
  readonly path: Array<string | number>
  readonly seen: Array<object>
  toJson: boolean
}

/** The first problem in `value`, or `undefined`. */
const check = (value: unknown, walk: Walk): string | undefined => {
  const { path, seen } = walk
  switch (typeof value) {
    case "string":
      return value.includes("\u0000")
        ? `${describePath(path)} contains a NUL character, which jsonb cannot store`
        : value.isWellFormed()
        ? undefined
        : `${describePath(path)} contains a lone surrogate (not valid Unicode), which jsonb cannot store`
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
      if (seen.includes(value)) return `${describePath(path)} is a circular reference`
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
        walk.toJson = true
        return undefined
      }
      if (value instanceof Map || value instanceof Set || value instanceof WeakMap || value instanceof WeakSet) {
        return `${describePath(path)} is a ${value.constructor.name}, which JSON would silently turn into {}`
      }
      seen.push(value)
      let problem: string | undefined
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length && problem === undefined; i++) {
          const item = value[i]
          path.push(i)
          problem = item === undefined || typeof item === "function" || typeof item === "symbol"
            ? `${describePath(path)} is ${typeof item}, which JSON would silently turn into null`
            : check(item, walk)
          path.pop()
        }
      } else {
        for (const key in value) {
          if (!Object.prototype.hasOwnProperty.call(value, key)) continue
          if (key.includes("\u0000") || !key.isWellFormed()) {
            problem = `${describePath(path)} has a key containing a NUL character or a lone surrogate`
            break
          }
          path.push(key)
          problem = check((value as Record<string, unknown>)[key], walk)
          path.pop()
          if (problem !== undefined) break
        }
      }
      seen.pop()
      return problem
    }
  }
}

/**
 * Deeper than this, `plain` hands over to `check`: a cycle makes the depth
 * grow without end, so `plain` needs no stack of visited objects.
 */
const maxFastDepth = 64

/** A key `check` refuses: the NUL character or a lone surrogate. */
const badKey = (key: string): boolean => key.includes("\u0000") || !key.isWellFormed()

/**
 * Whether `check` would let `value` through, strings aside, decided in one
 * pass without a path and without a stack of visited objects (`false`
 * also past `maxFastDepth`, e.g. for a cycle). Strings are left to a scan
 * of the JSON text: `JSON.stringify` writes NUL as `\u0000` and a lone
 * surrogate as `\udXXX` (well-formed stringify, ES2019), so every string
 * `check` refuses leaves one of them in the text. Only the key of an
 * `undefined` value, which the text drops, is checked here. Like `check`,
 * it does not look behind a `toJSON`.
 */
const plain = (value: unknown, depth: number): boolean => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true
    case "number":
      return Number.isFinite(value)
    case "undefined": // only the value itself gets here: an undefined property is dropped, an undefined item refused
      return false
    case "object": {
      if (value === null || typeof (value as { toJSON?: unknown }).toJSON === "function") return true
      if (depth >= maxFastDepth) return false
      if (value instanceof Map || value instanceof Set || value instanceof WeakMap || value instanceof WeakSet) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i]
          if (item === undefined || typeof item === "function" || typeof item === "symbol" || !plain(item, depth + 1)) return false
        }
        return true
      }
      for (const key in value) {
        if (!Object.prototype.hasOwnProperty.call(value, key)) continue
        const item: unknown = (value as Record<string, unknown>)[key]
        if (item === undefined ? badKey(key) : !plain(item, depth + 1)) return false
      }
      return true
    }
    default: // bigint, function, symbol
      return false
  }
}

/** An escape in the JSON text that may stand for NUL or a lone surrogate (or be escaped text: `check` decides). */
const unstorableEscape = /\\u(?:0000|d[89a-f])/

/**
 * `value` as strict JSON text, or the first problem found (see the module
 * documentation). Runs on every publish, for the payload and the metadata.
 *
 * **Details**: a fast pass (`plain`: types, finite numbers, no Map/Set, no
 * holes, no cycles, without a path or a visited stack) and one scan of the
 * JSON text for the escapes of NUL and lone surrogates replace, when they
 * find nothing, the walk that names the problem's path (`check`), which runs
 * only when they do. Measured on Node 22 over a ~370-byte payload (22 keys,
 * 14 strings; `JSON.stringify` alone ~0.9 µs): ~1.2 µs in all, where the
 * walk and the stringify took ~1.6 µs.
 *
 * @internal
 */
export const toJson = (value: unknown): JsonResult => {
  if (!plain(value, 0)) return checked(value)
  const json = JSON.stringify(value)
  if (json === undefined) return { ok: false, problem: "the value serialises to nothing" }
  if (json.includes("\\u") && unstorableEscape.test(json)) return checked(value)
  return { ok: true, json }
}

/** The walk, then the text: names the path of the first problem. */
const checked = (value: unknown): JsonResult => {
  const walk: Walk = { path: [], seen: [], toJson: false }
  const problem = check(value, walk)
  if (problem !== undefined) return { ok: false, problem }
  const json = JSON.stringify(value)
  // toJSON may itself return something unserialisable, or a string the walk never saw
  if (json === undefined) return { ok: false, problem: "the value serialises to nothing" }
  if (walk.toJson && json.includes("\\u0000")) {
    return { ok: false, problem: "the value contains a NUL character, which jsonb cannot store" }
  }
  return { ok: true, json }
}

/**
 * Why PostgreSQL cannot store `text` in a text column as given, or
 * `undefined`: it refuses NUL (22021), and a lone surrogate has no UTF-8
 * form (the driver would silently write U+FFFD instead).
 *
 * @internal
 */
export const textProblem = (text: string): string | undefined =>
  text.includes("\u0000")
    ? "contains a NUL character, which PostgreSQL text cannot store"
    : text.isWellFormed()
    ? undefined
    : "contains a lone surrogate (not valid Unicode), which PostgreSQL text cannot store"

/** @internal */
export const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")
