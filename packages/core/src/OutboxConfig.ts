/**
 * Relay and publisher configuration, read through Effect `Config` (from the
 * environment by default).
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `OUTBOX_BATCH_SIZE` | 1000 | most rows per claim (the adaptive batch's maximum; a batch stays under lease/3) |
 * | `OUTBOX_MIN_BATCH_SIZE` | 10 | rows per claim when the outbox is nearly empty (capped at `OUTBOX_BATCH_SIZE`); with tenant fairness, also the catch-up claim |
 * | `OUTBOX_LEASE_SECONDS` | 30 | lease length; heartbeat every lease/3, reaper every lease/2 |
 * | `OUTBOX_POLL_INTERVAL_MS` | 1000 | idle wait between empty claims |
 * | `OUTBOX_MAX_RETRIES` | 5 | `max_retries` written on published rows |
 * | `OUTBOX_CONCURRENCY` | 1 | claim workers (global order is only kept with 1) |
 * | `OUTBOX_MAX_PAYLOAD_BYTES` | 1048576 | largest accepted payload |
 * | `OUTBOX_SHUTDOWN_TIMEOUT_MS` | 10000 | how long shutdown waits for in-flight handlers |
 * | `OUTBOX_CLAIM_MODE` | `lease` | `lease`, or `transaction` (the row lock is the lease, for fast sinks) |
 * | `OUTBOX_TX_TIMEOUT_MS` | 5000 | `transaction` mode: the longest a claiming transaction stays open |
 * | `OUTBOX_ORDERING` | `none` | `key`: each ordering key's events in id order, one in flight per key, keys in parallel |
 * | `OUTBOX_ORDERING_DEAD_LETTER` | `continue` | `key` ordering: a dead-lettered head lets its key go on (`continue`) or holds it (`hold`) |
 * | `OUTBOX_ORDERING_RUN` | 1000 | `key` ordering: most events of one key per claim (a run); 1: heads only |
 * | `OUTBOX_FAIRNESS` | `none` | `tenant`: claims take the tenants with work in turn, an equal share each |
 * | `OUTBOX_FAIRNESS_MAX_IN_FLIGHT` | none | `tenant` fairness: most events of one tenant leased at once (lease claims only) |
 *
 * Bad values fail at start with a `ConfigError` naming the variable.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { PublishSettings } from "./Outbox.ts"
import * as RetryPolicy from "./RetryPolicy.ts"

/**
 * The resolved configuration.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /**
   * The most rows one claim takes: the adaptive batch's maximum. A worker's
   * claim limit starts at `minBatchSize`, doubles while its claims come back
   * full (a backlog) and falls back to what a claim found once one comes back
   * short (the outbox ran nearly empty); it never exceeds what the last
   * batch's pace delivers in one heartbeat period (lease/3), so a slow
   * handler keeps batches small (a 50 ms handler: 160). Why 1,000 by
   * default: a claim's round trip costs about the same for 10 rows as for
   * 1,000, so draining a backlog in batches of 1,000 spends a tenth of the
   * round trips of batches of 100 (the relay bench, 50,000 events: the
   * relay's Node CPU per event 5–14 µs against 13–22 µs at a fixed 100). What it costs: a worker holds up to this many
   * events (payloads included) in memory and under one lock token, renewed
   * together by the heartbeat; a crash counts an attempt for each of them
   * (the reaper).
   */
  readonly batchSize: number
  /**
   * The rows a claim takes when the outbox is nearly empty (the first claim,
   * after an empty or short one). Small batches keep latency low: a batch is
   * delivered in full before any of it is completed, and several workers
   * share a burst instead of one taking it all. Capped at `batchSize`:
   * `minBatchSize >= batchSize` gives fixed batches of `batchSize`. With
   * tenant fairness (lease claims, no key order, no cap) it is also the size
   * of the catch-up claim that follows each full claim (`Relay`).
   */
  readonly minBatchSize: number
  readonly leaseDuration: Duration.Duration
  readonly pollInterval: Duration.Duration
  readonly maxRetries: number
  readonly concurrency: number
  readonly maxPayloadBytes: number
  readonly shutdownTimeout: Duration.Duration
  /**
   * How a worker holds its batch. `lease` (the default): the claim writes a
   * lease (PROCESSING, lock token, `locked_until`), a heartbeat renews it
   * while the sink runs, completion is a second write, and the reaper
   * recovers a crashed worker's leases; fit for sinks of any speed.
   * `transaction`: the batch is locked (`FOR UPDATE SKIP LOCKED`) in a
   * transaction that delivers it and settles it before it commits
   * (`OutboxStore.claimInTransaction`): one write per event instead of two,
   * no heartbeat, and a crash releases the rows by itself. Measured
   * (`bench/claim-modes.bench.ts`: drain of 50,000 queued events, no-op
   * sink, batch 1,000, 1 worker, a shared 2-core machine): 42–65k events/s
   * with completed rows kept and 68–98k deleted, against 17–28k with leases;
   * at batch 100 the modes are within noise of each other. What it costs:
   * the open transaction holds back the xmin horizon (vacuum) for up to
   * `transactionTimeout`, so it is for sinks that acknowledge within it, and
   * a handler that kills the process is redelivered without counting an
   * attempt (no lease to reap). Refused by `PgOutboxStore` during an online
   * migration.
   */
  readonly claimMode: "lease" | "transaction"
  /**
   * `transaction` mode: the longest a claiming transaction stays open. The
   * worker delivers for three quarters of it, then settles what it delivered
   * and commits; the event in delivery at that point is a failed attempt
   * (retry or dead letter, as any failure), the rest stay claimable. The
   * database enforces it too, so a stalled process cannot pin the xmin
   * horizon longer. Why 5 s: long enough for a batch of 1,000 to a sink that
   * acknowledges in a few milliseconds, short enough for vacuum.
   */
  readonly transactionTimeout: Duration.Duration
  /**
   * `none` (the default): events are claimed in id order by every worker,
   * so with more than one worker (or process) two events of one aggregate
   * may be delivered in either order, and a failed event waiting out its
   * backoff is overtaken by its aggregate's later events. `key`: each
   * ordering key's events (`EventInput.orderingKey`, default
   * `<aggregateType>:<aggregateId>`) are delivered strictly in id order, at
   * most one in flight per key across all workers and processes, and a key
   * whose head waits out a backoff is blocked while every other key flows
   * (`OutboxStore.Ordering`). What it costs: a claim looks for each key's
   * head, slower than taking the oldest rows (see the README's "Per-key
   * ordering" for the measured drain), and one key's events go one at a
   * time: a claim takes a run of them (`orderingRun`), or, with heads only,
   * one per round trip to the sink plus one completion.
   */
  readonly ordering: "none" | "key"
  /** `key` ordering: what a dead-lettered head does to its key (`OutboxStore.Ordering.deadLetter`). */
  readonly orderingDeadLetter: "continue" | "hold"
  /**
   * `key` ordering: the most events of one key a claim takes
   * (`OutboxStore.Ordering.run`, at most the claim's limit), delivered one
   * after the other, with a sink that delivers one event at a time (a
   * broker sink's claims take heads only). Default 1,000: a hot key goes at
   * batch speed (over one key 5,053 events/s against 219 with heads only,
   * bench:ordering). The cost: a relay that dies (or whose completion fails)
   * after delivering part of a run has those events redelivered after their
   * leases expire, so a consumer may see a key's events again after later
   * ones of the same run (`a1 a2 a3`, then `a1 a2 a3` again); the inbox
   * drops them. With 1 (heads only) a redelivery never goes back past an
   * event delivered after it.
   */
  readonly orderingRun: number
  /**
   * `none` (the default): claims take the oldest events, so one tenant's
   * backlog of 100,000 events delays every other tenant's new event until
   * it has drained. `tenant`: claims take the tenants with work in turn
   * (`OutboxStore.Fairness`; the tenant is `EventInput.tenant`, else the
   * metadata field `tenant`), so another tenant's new event waits about one
   * batch. With `ordering: "key"` too, each key's events stay in order and
   * the claims take the keys' heads tenant by tenant in turn.
   */
  readonly fairness: "none" | "tenant"
  /**
   * `tenant` fairness: the most events of one tenant leased at once, across
   * workers and processes (`OutboxStore.Fairness.maxInFlight`), so a tenant
   * whose deliveries are slow cannot hold every worker; `undefined` (the
   * default): no cap. Lease claims only: with `claimMode: "transaction"`
   * (or without `fairness: "tenant"`) the environment configuration fails
   * at start, and the store refuses a capped claim in a transaction.
   */
  readonly fairnessMaxInFlight: number | undefined
  /** Backoff between attempts. */
  readonly retryPolicy: RetryPolicy.Policy
  /** When to stop retrying and dead-letter. */
  readonly deadLetterPolicy: RetryPolicy.Policy
}

/**
 * The defaults, as documented in the module header.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaults: Options = {
  batchSize: 1000,
  minBatchSize: 10,
  leaseDuration: Duration.seconds(30),
  pollInterval: Duration.millis(1000),
  maxRetries: 5,
  concurrency: 1,
  maxPayloadBytes: 1024 * 1024,
  shutdownTimeout: Duration.seconds(10),
  claimMode: "lease",
  transactionTimeout: Duration.seconds(5),
  ordering: "none",
  orderingDeadLetter: "continue",
  orderingRun: 1000,
  fairness: "none",
  fairnessMaxInFlight: undefined,
  retryPolicy: RetryPolicy.defaultRetry,
  deadLetterPolicy: RetryPolicy.defaultDeadLetter
}

/**
 * The outbox configuration service.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxConfig extends Context.Service<OutboxConfig, Options>()("@outbox/core/OutboxConfig") {}

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

const nonNegativeInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), name).pipe(Config.withDefault(fallback))

/**
 * The environment-facing part of the configuration.
 *
 * @category config
 * @since 0.1.0
 */
export const config: Config.Config<
  Pick<
    Options,
    | "batchSize"
    | "minBatchSize"
    | "leaseDuration"
    | "pollInterval"
    | "maxRetries"
    | "concurrency"
    | "maxPayloadBytes"
    | "shutdownTimeout"
    | "claimMode"
    | "transactionTimeout"
    | "ordering"
    | "orderingDeadLetter"
    | "orderingRun"
    | "fairness"
    | "fairnessMaxInFlight"
  >
> = Config.all({
  batchSize: positiveInt("OUTBOX_BATCH_SIZE", defaults.batchSize),
  minBatchSize: positiveInt("OUTBOX_MIN_BATCH_SIZE", defaults.minBatchSize),
  leaseDuration: positiveInt("OUTBOX_LEASE_SECONDS", 30).pipe(Config.map(Duration.seconds)),
  pollInterval: positiveInt("OUTBOX_POLL_INTERVAL_MS", 1000).pipe(Config.map(Duration.millis)),
  maxRetries: nonNegativeInt("OUTBOX_MAX_RETRIES", defaults.maxRetries),
  concurrency: positiveInt("OUTBOX_CONCURRENCY", defaults.concurrency),
  maxPayloadBytes: positiveInt("OUTBOX_MAX_PAYLOAD_BYTES", defaults.maxPayloadBytes),
  shutdownTimeout: nonNegativeInt("OUTBOX_SHUTDOWN_TIMEOUT_MS", 10_000).pipe(Config.map(Duration.millis)),
  claimMode: Config.schema(Schema.Literals(["lease", "transaction"]), "OUTBOX_CLAIM_MODE").pipe(
    Config.withDefault(defaults.claimMode)
  ),
  transactionTimeout: positiveInt("OUTBOX_TX_TIMEOUT_MS", 5000).pipe(Config.map(Duration.millis)),
  ordering: Config.schema(Schema.Literals(["none", "key"]), "OUTBOX_ORDERING").pipe(Config.withDefault(defaults.ordering)),
  orderingDeadLetter: Config.schema(Schema.Literals(["continue", "hold"]), "OUTBOX_ORDERING_DEAD_LETTER").pipe(
    Config.withDefault(defaults.orderingDeadLetter)
  ),
  orderingRun: positiveInt("OUTBOX_ORDERING_RUN", defaults.orderingRun),
  fairness: Config.schema(Schema.Literals(["none", "tenant"]), "OUTBOX_FAIRNESS").pipe(Config.withDefault(defaults.fairness)),
  fairnessMaxInFlight: Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), "OUTBOX_FAIRNESS_MAX_IN_FLIGHT").pipe(
    Config.option,
    Config.map(Option.getOrUndefined)
  )
}).pipe(Config.mapEffect((options) => {
  const problem = options.fairnessMaxInFlight === undefined
    ? undefined
    : options.fairness !== "tenant"
    ? "OUTBOX_FAIRNESS_MAX_IN_FLIGHT caps tenants' claims: it needs OUTBOX_FAIRNESS=tenant"
    : options.claimMode === "transaction"
    ? "OUTBOX_FAIRNESS_MAX_IN_FLIGHT needs OUTBOX_CLAIM_MODE=lease: rows that other transactions hold locked cannot be counted"
    : undefined
  return problem === undefined
    ? Effect.succeed(options)
    : Effect.fail(new Config.ConfigError(new ConfigProvider.SourceError({ message: problem })))
}))

/**
 * One environment variable a module reads: the catalog entry that
 * `@outbox/runtime/OutboxEnv` gathers from every package and the README's
 * configuration table is generated from (a test keeps them equal), so a
 * variable cannot be read without being documented.
 *
 * @category models
 * @since 0.1.0
 */
export interface Variable {
  readonly name: string
  /** The default as written in the docs; `undefined`: none (unset means off, or required where used). */
  readonly default: string | undefined
  readonly description: string
}

/**
 * The variables `config` reads (the module header's table).
 *
 * @category config
 * @since 0.1.0
 */
export const variables: ReadonlyArray<Variable> = [
  {
    name: "OUTBOX_BATCH_SIZE",
    default: "1000",
    description:
      "most rows per claim: a worker's claims grow (doubling) toward it while they come back full (a backlog), as long as a batch takes under lease/3"
  },
  {
    name: "OUTBOX_MIN_BATCH_SIZE",
    default: "10",
    description:
      "rows per claim while the outbox is nearly empty (latency); capped at `OUTBOX_BATCH_SIZE`, equal to it: fixed batches. With `OUTBOX_FAIRNESS=tenant` (no key order, no cap), also the small catch-up claim after each full one"
  },
  { name: "OUTBOX_LEASE_SECONDS", default: "30", description: "lease length; heartbeat every lease/3, reaper every lease/2" },
  {
    name: "OUTBOX_POLL_INTERVAL_MS",
    default: "1000",
    description:
      "longest idle wait after an empty claim: the safety net under the LISTEN/NOTIFY wake-up (`OUTBOX_NOTIFY`), the only wake-up without it"
  },
  {
    name: "OUTBOX_MAX_RETRIES",
    default: "5",
    description: "`max_retries` written on published rows (dead letter after that many retries)"
  },
  {
    name: "OUTBOX_CONCURRENCY",
    default: "1",
    description: "claim workers; a warning is logged above 1: global order is then not kept"
  },
  { name: "OUTBOX_MAX_PAYLOAD_BYTES", default: "1048576", description: "largest accepted payload (UTF-8 bytes of its JSON)" },
  { name: "OUTBOX_SHUTDOWN_TIMEOUT_MS", default: "10000", description: "how long shutdown waits for in-flight handlers" },
  {
    name: "OUTBOX_CLAIM_MODE",
    default: "`lease`",
    description:
      "`lease` (lease, heartbeat, reaper: any sink), or `transaction` (the batch is locked, delivered and settled in one transaction: fast sinks only)"
  },
  {
    name: "OUTBOX_TX_TIMEOUT_MS",
    default: "5000",
    description: "`transaction` mode: the longest a claiming transaction stays open (it holds back vacuum's xmin horizon meanwhile)"
  },
  {
    name: "OUTBOX_ORDERING",
    default: "`none`",
    description:
      "`key`: each ordering key's events (default key `<aggregateType>:<aggregateId>`) strictly in id order, at most one in flight per key across workers and processes; keys in parallel"
  },
  {
    name: "OUTBOX_ORDERING_DEAD_LETTER",
    default: "`continue`",
    description: "`key` ordering: a dead-lettered head lets its key's next event go (`continue`) or holds the key until a redrive (`hold`)"
  },
  {
    name: "OUTBOX_ORDERING_RUN",
    default: "1000",
    description:
      "`key` ordering: the most events of one key a claim takes, delivered one after the other (one-at-a-time sinks; broker sinks take heads only). 1: heads only, so that a redelivery after a crash never goes back past a later event of its key"
  },
  {
    name: "OUTBOX_FAIRNESS",
    default: "`none`",
    description:
      "`tenant`: claims take the tenants with work in turn (tenant: `EventInput.tenant`, else the metadata field `tenant`), so one tenant's backlog delays another's new event by about one batch; with `OUTBOX_ORDERING=key` too, each key stays in order and the keys' heads are taken tenant by tenant"
  },
  {
    name: "OUTBOX_FAIRNESS_MAX_IN_FLIGHT",
    default: undefined,
    description:
      "`tenant` fairness: the most events of one tenant leased at once, across workers and processes, so a tenant with slow deliveries cannot hold every worker (unset: no cap; lease claims only; with `OUTBOX_ORDERING=key` a capped claim takes heads only)"
  }
]

const settingsLayer = Layer.effect(
  PublishSettings,
  Effect.map(Effect.service(OutboxConfig), (o) => ({ maxPayloadBytes: o.maxPayloadBytes, maxRetries: o.maxRetries }))
)

/**
 * Provides `OutboxConfig` (and the matching publish limits) from options,
 * filling what is missing with the defaults.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Partial<Options> = {}): Layer.Layer<OutboxConfig> =>
  settingsLayer.pipe(Layer.provideMerge(Layer.succeed(OutboxConfig, { ...defaults, ...options })))

/**
 * Provides `OutboxConfig` from the environment (see the module header);
 * `overrides` supplies what the environment cannot, such as policies, and
 * wins over the environment for the fields it sets.
 * Fails with a `ConfigError` naming the variable on a bad value.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  overrides: Partial<Options> = {}
): Layer.Layer<OutboxConfig, Config.ConfigError> =>
  settingsLayer.pipe(
    Layer.provideMerge(Layer.effect(
      OutboxConfig,
      Effect.gen(function*() {
        const env = yield* config
        return { ...defaults, ...env, ...overrides }
      })
    ))
  )
