/**
 * `npx outbox stats [--json]` and `npx outbox health [--json] [--checks]
 * [--sink-timeout S]`.
 *
 * `health` prints what the service's list of checks (`OutboxHealth.checks`)
 * found, and with `--checks` the whole list as it ran (`HealthReport.checks`):
 * a new check shows up here without an edit to this file.
 *
 * When `OUTBOX_SINK_URL` is set, `health` also checks the sink it names
 * (`checkSink`): a relay whose broker is unreachable delivers nothing
 * while the database looks healthy, so a probe that read only the database
 * would call it OK. The sink is built as the relay builds it
 * (`SinkUrl.layer`, with `OUTBOX_SINK_TIMEOUT`) and given up to
 * `--sink-timeout` seconds (default 5) to report itself connected; one that
 * cannot is the CRITICAL finding `sink`, naming the URL without its
 * password. A sink with no connection of its own (a webhook) is reported as
 * not checked. The database and the sink are checked at the same time.
 *
 * Under per-key ordering (`OUTBOX_ORDERING=key` in this environment, the
 * relay's), `health` also reads the blocked keys (check `BlockedKeys`, with
 * the dead-lettered heads under `OUTBOX_ORDERING_DEAD_LETTER=hold`) and
 * prints the oldest of them.
 *
 * `health` exits with 0 / 1 / 2 for OK / WARN / CRITICAL (a database it
 * cannot read is CRITICAL), so it can serve as a Kubernetes exec probe. With
 * `--json` stdout holds only the JSON document and stderr stays empty.
 *
 * @internal
 */
import { type ConnectionStatus, OutboxSink } from "@outbox/core/OutboxSink"
import * as OutboxHealth from "@outbox/sql/OutboxHealth"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as OutboxEnv from "../../OutboxEnv.ts"
import * as SinkUrl from "../../sinks/SinkUrl.ts"
import { formatBlockedKeys, relayOrdering } from "./keys.ts"
import { duration, formatTable, json as jsonFlag, print } from "./shared.ts"

/**
 * `health` found WARN or CRITICAL (or could not read the database): the
 * process exits with 1 or 2. `printed` says the report is already on stdout,
 * so the entry point adds nothing to stderr.
 *
 * @internal
 */
export class HealthCheckFailed extends Schema.TaggedError<HealthCheckFailed>("@outbox/runtime/HealthCheckFailed")(
  "HealthCheckFailed",
  {
    level: Schema.Literals(["WARN", "CRITICAL"]),
    message: Schema.String,
    printed: Schema.Boolean
  }
) {
  override get [Runtime.errorExitCode](): number {
    return this.level === "CRITICAL" ? 2 : 1
  }
  override get [Runtime.errorReported](): boolean {
    return !this.printed
  }
}

const json = jsonFlag("a table")

const minuteOf = (d: Date) => d.toISOString().slice(11, 16)

const formatStats = (s: OutboxHealth.Stats): string => {
  const lines: Array<string> = []
  lines.push(formatTable(["status", "events"], [
    ["PENDING", String(s.counts.pending)],
    ["FAILED (backoff)", String(s.counts.failed)],
    ["PROCESSING", String(s.counts.processing)],
    ["DEAD_LETTER", String(s.counts.deadLetter)],
    ["COMPLETED", `~${s.counts.completedEstimate}`]
  ], [1]))
  lines.push("(COMPLETED is an estimate from the planner statistics)")
  lines.push("")
  lines.push(`oldest pending:  ${s.counts.pending + s.counts.failed === 0 ? "-" : duration(s.oldestPendingAgeSeconds)}`)
  lines.push(`leases overdue:  ${s.leaseOverdue === 0 ? "0" : `${s.leaseOverdue} (oldest by ${duration(s.leaseOverdueSeconds)})`}`)
  lines.push(`longest lease:   ${s.leaseHeldSeconds === 0 ? "none" : `held ${duration(s.leaseHeldSeconds)} since its claim`}`)
  lines.push("")
  lines.push(
    `throughput, last ${s.throughput.minutes} min: ${s.throughput.completedPerMinute.toFixed(1)} completed/min (newest ${s.throughput.maxRows} events read)`
  )
  lines.push(formatTable(
    ["minute (UTC)", "completed", "dead-lettered"],
    s.throughput.perMinute.map((m) => [
      `${minuteOf(m.minute)}${m.exact ? "" : " (partial)"}`,
      String(m.completed),
      String(m.deadLettered)
    ]),
    [1, 2]
  ))
  lines.push("")
  lines.push(
    s.deadLettersByEventType.length === 0
      ? "dead letters: none"
      : `dead letters by event type:\n${
        formatTable(
          ["event type", "last", "count"],
          s.deadLettersByEventType.map((d) => [d.eventType, d.lastAt?.toISOString() ?? "", String(d.count)]),
          [2]
        )
      }`
  )
  return lines.join("\n")
}

/** A threshold as in force: `warn 60, critical 300` for a band, the number otherwise. */
const formatThreshold = (value: OutboxHealth.CheckResult["thresholds"][string]): string =>
  typeof value === "number"
    ? String(value)
    : [value.warn === undefined ? "" : `warn ${value.warn}`, value.critical === undefined ? "" : `critical ${value.critical}`]
      .filter((s) => s !== "").join(", ") || "off"

/**
 * The checks that ran, one line each (from the report, so a custom list
 * prints as the built-in one does): the `--checks` section.
 */
const formatChecks = (checks: ReadonlyArray<OutboxHealth.CheckResult>): string =>
  formatTable(
    ["check", "level", "thresholds", "gauge"],
    checks.map((c) => [
      c.name,
      c.level,
      Object.entries(c.thresholds).map(([name, value]) => `${name} ${formatThreshold(value)}`).join("; "),
      c.gauge ?? ""
    ])
  )

// ---- the sink -------------------------------------------------------------------------------------

/**
 * What `health` found about the sink `OUTBOX_SINK_URL` names: in the JSON
 * report as `sink`, in the table as the `sink` line (and the finding
 * `sink` when it cannot connect).
 *
 * @internal
 */
export interface SinkCheck {
  /** The URL, its password replaced by `***` (`SinkUrl.redact`). */
  readonly url: string
  /** The sink's name (`redis`, `nats`, `webhook`…), or the failed set-up's (`url` for a malformed URL). */
  readonly name: string
  /** `false` for a sink with no connection of its own to report (a webhook): nothing was checked. */
  readonly checked: boolean
  /** `null` when not checked. */
  readonly connected: boolean | null
  /** Why not connected: the sink's last connection error, or why it could not be set up; `null` when connected. */
  readonly detail: string | null
  /** How long it was given to connect, in seconds. */
  readonly waitSeconds: number
}

/** The URL's password (raw and percent-encoded) replaced by `***` wherever it appears in `text`. */
const scrub = (text: string, password: string | undefined): string =>
  password === undefined || password === ""
    ? text
    : text.replaceAll(password, "***").replaceAll(encodeURIComponent(password), "***")

/**
 * Builds the sink `url` names (`SinkUrl.layer`, each delivery bounded by
 * `timeout`) and waits up to `wait` for its `connection` to say connected,
 * polling it every 100 ms; the sink is closed before this returns. Never
 * fails: a sink that cannot be set up (a malformed URL, a refused login, a
 * missing client library) or that does not connect in time is reported
 * not connected, with the reason. The sinks' own logs (reconnect warnings)
 * are silenced: the reason is in `detail`, and `--json` output stays one
 * document.
 *
 * @internal
 */
export const checkSink = (url: string, options: {
  readonly timeout: Duration.Duration
  readonly wait: Duration.Duration
}): Effect.Effect<SinkCheck> =>
  Effect.gen(function*() {
    const password = yield* SinkUrl.parse(url).pipe(
      Effect.match({ onFailure: () => undefined, onSuccess: (target) => target.password })
    )
    const waitSeconds = Duration.toSeconds(options.wait)
    const result = (name: string, status: ConnectionStatus): SinkCheck => ({
      url: SinkUrl.redact(url),
      name,
      checked: true,
      connected: status.connected,
      detail: status.connected ? null : scrub(status.detail ?? "not connected", password),
      waitSeconds
    })
    // the last status seen, for the answer when the wait runs out
    let last: { readonly name: string; readonly status: ConnectionStatus } | undefined
    const probe = Effect.scoped(Effect.gen(function*() {
      const sink = Context.get(yield* Layer.build(SinkUrl.layer(url, { timeout: options.timeout })), OutboxSink)
      const connection = sink.connection
      if (connection === undefined) {
        return { url: SinkUrl.redact(url), name: sink.name, checked: false, connected: null, detail: null, waitSeconds }
      }
      const status = yield* connection.pipe(
        Effect.tap((status) => Effect.sync(() => void (last = { name: sink.name, status }))),
        Effect.repeat({ until: (status) => status.connected, schedule: Schedule.spaced("100 millis") })
      )
      return result(sink.name, status)
    }))
    const seconds = Duration.format(options.wait)
    return yield* probe.pipe(
      Effect.timeoutOrElse({
        duration: options.wait,
        orElse: () =>
          Effect.sync(() =>
            last === undefined
              ? result("unknown", { connected: false, detail: `the sink was not set up within ${seconds}` })
              : result(last.name, {
                connected: false,
                detail: `not connected within ${seconds}: ${last.status.detail ?? "not connected"}`
              })
          )
      }),
      Effect.catchTag("SinkSetupError", (error) =>
        Effect.succeed(result(error.sink, { connected: false, detail: `the sink could not be set up: ${error.message}` })))
    )
  }).pipe(Effect.provideService(References.MinimumLogLevel, "None"))

/**
 * The health report with the sink's verdict folded in: a CRITICAL finding
 * `sink` when it cannot connect (`value` 0, `threshold` 1: connected is
 * required), the check `sink` in `checks` when it was checked, and the
 * report's level raised accordingly.
 *
 * @internal
 */
export const withSink = (
  report: OutboxHealth.HealthReport,
  sink: SinkCheck
): OutboxHealth.HealthReport & { readonly sink: SinkCheck } => {
  if (!sink.checked) return { ...report, sink }
  const findings: ReadonlyArray<OutboxHealth.Finding> = sink.connected === true ? report.findings : [
    ...report.findings,
    {
      name: "sink",
      level: "CRITICAL",
      subject: sink.url,
      value: 0,
      threshold: 1,
      message: `the ${sink.name} sink cannot connect to ${sink.url}: ${sink.detail ?? "not connected"}`
    }
  ]
  return {
    ...report,
    level: OutboxHealth.levelOfFindings(findings),
    findings,
    checks: [...report.checks, {
      name: "sink",
      level: sink.connected === true ? "OK" : "CRITICAL",
      thresholds: { waitSeconds: sink.waitSeconds },
      gauge: null
    }],
    sink
  }
}

/** The `sink` line of the text report. */
const formatSink = (sink: SinkCheck): string =>
  !sink.checked
    ? `sink: ${sink.url} (${sink.name}): not checked (it has no connection of its own to report)`
    : sink.connected === true
    ? `sink: ${sink.url} (${sink.name}): connected`
    : `sink: ${sink.url} (${sink.name}): NOT CONNECTED: ${sink.detail ?? "not connected"}`

/**
 * The text form of a health report; with `checks`, every check of the list
 * with its level and thresholds; with `sink`, the sink's line.
 *
 * @internal
 */
export const formatHealth = (
  r: OutboxHealth.HealthReport,
  options: { readonly checks?: boolean; readonly sink?: SinkCheck | undefined } = {}
): string => {
  const lines: Array<string> = [`health: ${r.level}`]
  if (r.findings.length > 0) {
    lines.push("")
    lines.push(formatTable(
      ["level", "finding", "subject", "message"],
      r.findings.map((f) => [f.level, f.name, f.subject, f.message])
    ))
  }
  if (options.checks === true) {
    lines.push("")
    lines.push(formatChecks(r.checks))
  }
  if (options.sink !== undefined) {
    lines.push("")
    lines.push(formatSink(options.sink))
  }
  lines.push("")
  lines.push(
    `backlog: ${r.backlog.pending} pending (oldest ${duration(r.backlog.oldestPendingAgeSeconds)}), ${r.backlog.processing} processing, ${r.leases.overdue} lease(s) overdue${r.leases.heldSeconds === 0 ? "" : ` (longest held ${duration(r.leases.heldSeconds)})`}, ${r.backlog.deadLetters} dead letter(s)`
  )
  const blocked = r.blockedKeys
  if (blocked.ordering !== null) {
    const { backoff, deadLetterHeld, scheduled } = blocked.counts
    lines.push("")
    lines.push(
      `blocked keys: ${backoff + scheduled + deadLetterHeld} (backoff ${backoff}, scheduled ${scheduled}${
        blocked.ordering.deadLetter === "hold" ? `, dead_letter_held ${deadLetterHeld}` : ""
      })${blocked.keys.length > 0 ? `, the oldest heads first:` : ""}`
    )
    if (blocked.keys.length > 0) lines.push(formatBlockedKeys(blocked.keys))
  }
  lines.push("")
  lines.push(formatTable(
    ["table", "horizon", "gap", "DEFAULT rows", "ahead"],
    r.partitions.map((p) => [
      p.table,
      p.horizon === null ? "none" : `${p.horizon.toISOString()} (${duration(p.horizonSeconds)})`,
      p.hasGap ? "yes" : "no",
      String(p.defaultRows),
      String(p.ahead)
    ]),
    [3, 4]
  ))
  lines.push("")
  lines.push(formatTable(
    ["partition", "last autovacuum", "dead %", "dead tuples"],
    r.vacuum.map((v) => [
      v.partition,
      v.lastAutovacuum?.toISOString() ?? "never",
      `${(v.deadRatio * 100).toFixed(1)}`,
      String(v.deadTuples)
    ]),
    [2, 3]
  ))
  lines.push("")
  if (r.xminHorizon.holders.length === 0) lines.push("xmin horizon: nothing holds it back")
  else {
    lines.push(`xmin horizon: held for ${duration(r.xminHorizon.ageSeconds)} by`)
    lines.push(formatTable(
      ["kind", "pid", "name", "state", "query start", "xid age", "age"],
      r.xminHorizon.holders.map((h) => [
        h.kind,
        h.pid === null ? "" : String(h.pid),
        h.applicationName ? `${h.name} (${h.applicationName})` : h.name,
        h.state ?? "",
        h.queryStart?.toISOString() ?? "",
        h.xidAge === null ? "" : String(h.xidAge),
        h.ageSeconds === null ? "" : duration(h.ageSeconds)
      ]),
      [1, 5, 6]
    ))
  }
  return lines.join("\n")
}

/**
 * `outbox stats [--json]`.
 *
 * @internal
 */
export const stats = Command.make("stats", {
  minutes: Flag.Int("minutes").pipe(Flag.withDefault(15), Flag.withDescription("throughput window in minutes")),
  json
}, (options) =>
  Effect.gen(function*() {
    const health = yield* OutboxHealth.OutboxHealth
    const s = yield* health.stats
    yield* options.json ? print(s) : Console.log(formatStats(s))
  }).pipe(Effect.provide(OutboxHealth.layerConfig({ throughputMinutes: options.minutes })))).pipe(
    Command.withDescription("counts by status, oldest pending age, throughput over the last minutes, dead letters by event type")
  )

/**
 * A `--threshold` override, `name=value`: a threshold of the checks
 * (`OutboxHealth.defaultThresholds`) and its value in the shape of its
 * default: `warn,critical` for a band (either side may be left empty to
 * keep its default: `idleInTransactionSeconds=10,` warns after 10 s), a
 * single number otherwise. A failure says what is wrong and lists the
 * names.
 *
 * @internal
 */
export const parseThreshold = (
  text: string
): { readonly _tag: "Ok"; readonly name: string; readonly value: number | { readonly warn?: number; readonly critical?: number } } | {
  readonly _tag: "Error"
  readonly message: string
} => {
  const defaults = OutboxHealth.defaultThresholds as unknown as Record<string, number | { readonly warn?: number; readonly critical?: number }>
  const names = () => Object.keys(defaults).sort().join(", ")
  const eq = text.indexOf("=")
  if (eq <= 0) return { _tag: "Error", message: `--threshold ${text}: expected name=value (names: ${names()})` }
  const name = text.slice(0, eq).trim()
  const raw = text.slice(eq + 1).trim()
  const current = defaults[name]
  if (current === undefined) return { _tag: "Error", message: `--threshold ${text}: no threshold "${name}" (names: ${names()})` }
  const number = (part: string): number | undefined | "invalid" => {
    if (part.trim() === "") return undefined
    const n = Number(part)
    return Number.isFinite(n) && n >= 0 ? n : "invalid"
  }
  if (typeof current === "number") {
    const n = number(raw)
    return n === undefined || n === "invalid"
      ? { _tag: "Error", message: `--threshold ${text}: ${name} takes one number >= 0` }
      : { _tag: "Ok", name, value: n }
  }
  const parts = raw.split(",")
  const [warn, critical] = [number(parts[0] ?? ""), number(parts[1] ?? "")]
  if (parts.length > 2 || warn === "invalid" || critical === "invalid" || (warn === undefined && critical === undefined)) {
    return { _tag: "Error", message: `--threshold ${text}: ${name} is a band: warn,critical (numbers >= 0; one side may be empty)` }
  }
  const value = { ...current, ...(warn === undefined ? {} : { warn }), ...(critical === undefined ? {} : { critical }) }
  if (value.warn !== undefined && value.critical !== undefined && value.warn > value.critical) {
    return { _tag: "Error", message: `--threshold ${text}: warn (${value.warn}) is above critical (${value.critical})` }
  }
  return { _tag: "Ok", name, value }
}

/**
 * `outbox health [--json] [--checks] [--premake N] [--table T]... [--sink-timeout S] [--threshold name=value]...`.
 *
 * @internal
 */
export const health = Command.make("health", {
  premake: Flag.Int("premake").pipe(
    Flag.withDefault(3),
    Flag.withDescription("the partition policy's premake: WARN when fewer than premake - 1 whole partitions are ahead")
  ),
  tables: Flag.String("table").pipe(
    Flag.atLeast(0),
    Flag.withDescription("a range-partitioned table to check (repeatable; default: outbox)")
  ),
  maxPendingAge: Flag.Int("max-pending-age").pipe(
    Flag.optional,
    Flag.withDescription("seconds the oldest pending event may wait before WARN (CRITICAL at 6x)")
  ),
  checks: Flag.Boolean("checks").pipe(
    Flag.withDefault(false),
    Flag.withDescription("also list every check run, its level, its thresholds and its gauge (JSON always has them)")
  ),
  thresholds: Flag.String("threshold").pipe(
    Flag.filterMap(
      (text) => {
        const parsed = parseThreshold(text)
        return parsed._tag === "Ok" ? Option.some(parsed) : Option.none()
      },
      (text) => {
        const parsed = parseThreshold(text)
        return parsed._tag === "Error" ? parsed.message : text
      }
    ),
    Flag.atLeast(0),
    Flag.withDescription(
      "override a check's threshold, name=warn,critical for a band or name=N (repeatable; --checks lists them), e.g. idleInTransactionSeconds=10,60"
    )
  ),
  sinkTimeout: Flag.Finite("sink-timeout").pipe(
    Flag.filter((seconds) => seconds > 0, (seconds) => `--sink-timeout must be a number of seconds > 0, got ${seconds}`),
    Flag.withDefault(5),
    Flag.withDescription("seconds the sink OUTBOX_SINK_URL names (when set) may take to connect before CRITICAL")
  ),
  json
}, (options) =>
  Effect.gen(function*() {
    const service = yield* OutboxHealth.OutboxHealth
    const sinkConfig = yield* OutboxEnv.sink
    const checkingSink: Effect.Effect<SinkCheck | undefined> = Option.match(sinkConfig.url, {
      onNone: () => Effect.succeed(undefined),
      onSome: (url) => checkSink(url, { timeout: sinkConfig.timeout, wait: Duration.seconds(options.sinkTimeout) })
    })
    const [database, sink] = yield* Effect.all([service.health, checkingSink], { concurrency: 2 })
    const report = sink === undefined ? database : withSink(database, sink)
    yield* options.json ? print(report) : Console.log(formatHealth(report, { checks: options.checks, sink }))
    if (report.level !== "OK") {
      return yield* new HealthCheckFailed({
        level: report.level,
        message: `${report.level}: ${report.findings.map((f) => f.name).join(", ")}`,
        printed: true
      })
    }
  }).pipe(
    Effect.provide(Layer.unwrap(Effect.map(relayOrdering, (ordering) =>
      OutboxHealth.layerConfig({
        tables: options.tables.length === 0 ? undefined : options.tables,
        // the relay's ordering, from this environment: blocked keys exist only under OUTBOX_ORDERING=key
        ordering: ordering ?? "none",
        thresholds: {
          partitionsAheadWarn: Math.max(0, options.premake - 1),
          ...(Option.isSome(options.maxPendingAge)
            ? { oldestPendingAgeSeconds: { warn: options.maxPendingAge.value, critical: options.maxPendingAge.value * 6 } }
            : {}),
          // --threshold last: it names the threshold, so it wins over the shorthands above
          ...Object.fromEntries(options.thresholds.map((t) => [t.name, t.value]))
        }
      })))),
    Effect.catchTag("StoreError", (error) =>
      Effect.fail(new HealthCheckFailed({ level: "CRITICAL", message: `cannot read the outbox's health: ${error.message}`, printed: false })))
  )).pipe(Command.withDescription("OK / WARN / CRITICAL with named findings; exits 0 / 1 / 2 (a Kubernetes exec probe)"))
