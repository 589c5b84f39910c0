/**
 * The built-in health checks of `OutboxHealth` and the measures they read:
 * the list that `health` folds, `outbox health --checks` prints and
 * `OutboxHealth.FindingName`, `Thresholds` and `defaultThresholds` derive
 * from. A new check is one entry in `checks` (plus a measure here and its
 * view in `src/migrations/` when it reads something new): see the README,
 * "Adding a health check".
 *
 * Rows are decoded once per measure with the `Schema`s below (view columns
 * snake_case → fields camelCase through `Schema.encodeKeys`), so the checks
 * and the report work on typed rows.
 *
 * @internal
 */
import type { StoreError } from "@outbox/core/OutboxError"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as BlockedKeys from "../BlockedKeys.ts"
import * as HealthCheck from "../HealthCheck.ts"
import * as Identifier from "../Identifier.ts"
import { defaultRowsCap, leasesSelect, statsSelect } from "../migrations/0004_health_views.ts"
import type { BlockedKeysReport, Measurements, PartitionHealth, PartitionVacuum, XminHolder } from "../OutboxHealth.ts"

// ---------------------------------------------------------------------------
// measures: one query each, rows decoded once
// ---------------------------------------------------------------------------

/**
 * The views of the migrations read `outbox`; another table is read directly, by the views' own queries.
 *
 * @internal
 */
export const throughViews = (context: HealthCheck.MeasureContext) => context.table === "outbox"

/**
 * `view`, or the view's own query over the context's table.
 *
 * @internal
 */
export const sourceOf = (context: HealthCheck.MeasureContext, view: string, select: (quoted: string) => string) =>
  context.sql.literal(throughViews(context) ? view : `(${select(Identifier.quote(context.table))}) v`)

/** A row of `outbox_stats`. */
const CountsRow = Schema.Struct({
  pending: Schema.Number,
  failed: Schema.Number,
  processing: Schema.Number,
  deadLetter: Schema.Number,
  completedEstimate: Schema.Number,
  oldestPendingAgeSeconds: Schema.Number,
  leaseOverdue: Schema.Number,
  leaseOverdueSeconds: Schema.Number,
  leaseHeldSeconds: Schema.Number
}).pipe(Schema.encodeKeys({
  deadLetter: "dead_letter",
  completedEstimate: "completed_estimate",
  oldestPendingAgeSeconds: "oldest_pending_age_seconds",
  leaseOverdue: "lease_overdue",
  leaseOverdueSeconds: "lease_overdue_seconds",
  leaseHeldSeconds: "lease_held_seconds"
}))

/**
 * `outbox_stats` (shared with `stats`).
 *
 * @internal
 */
export const readCounts = (context: HealthCheck.MeasureContext) =>
  context.sql`
    SELECT pending::float8, failed::float8, processing::float8, dead_letter::float8, completed_estimate::float8,
           oldest_pending_age_seconds, lease_overdue::float8, lease_overdue_seconds, lease_held_seconds
    FROM ${sourceOf(context, "outbox_stats", statsSelect)}`.pipe(
    HealthCheck.decodeRow("health.counts", CountsRow)
  )

/** A row of `outbox_health_leases`. */
const StuckLeaseRow = Schema.Struct({
  id: Schema.String,
  trackingId: Schema.String,
  eventType: Schema.String,
  lockedUntil: Schema.Date,
  overdueSeconds: Schema.Number
}).pipe(Schema.encodeKeys({
  trackingId: "tracking_id",
  eventType: "event_type",
  lockedUntil: "locked_until",
  overdueSeconds: "overdue_seconds"
}))

const readStuckLeases = (context: HealthCheck.MeasureContext) =>
  context.sql`
    SELECT id::text AS id, tracking_id::text AS tracking_id, event_type, locked_until, overdue_seconds
    FROM ${sourceOf(context, "outbox_health_leases", leasesSelect)} ORDER BY locked_until LIMIT 20`.pipe(
    HealthCheck.decodeRows("health.leases", StuckLeaseRow)
  )

/** A row of `outbox_health_partitions`. */
const PartitionRow = Schema.Struct({
  table: Schema.String,
  partitions: Schema.Number,
  ahead: Schema.Number,
  horizon: Schema.NullOr(Schema.Date),
  horizonSeconds: Schema.Number,
  newest: Schema.NullOr(Schema.Date),
  hasGap: Schema.Boolean,
  defaultPartition: Schema.NullOr(Schema.String),
  defaultRows: Schema.Number,
  deadTuples: Schema.Number,
  liveTuples: Schema.Number
}).pipe(Schema.encodeKeys({
  table: "table_name",
  horizonSeconds: "horizon_seconds",
  hasGap: "has_gap",
  defaultPartition: "default_partition",
  defaultRows: "default_rows",
  deadTuples: "dead_tuples",
  liveTuples: "live_tuples"
}))

/**
 * `outbox_health_partitions` over `tables` (shared with `snapshot`).
 *
 * @internal
 */
export const readPartitions = (context: HealthCheck.MeasureContext): Effect.Effect<ReadonlyArray<PartitionHealth>, StoreError> =>
  context.sql`
    SELECT table_name::text, partitions::float8, ahead::float8, horizon, horizon_seconds, newest, has_gap,
           default_partition::text, default_rows::float8, dead_tuples::float8, live_tuples::float8
    FROM outbox_health_partitions WHERE table_name IN ${context.sql.in(context.tables)} ORDER BY table_name`.pipe(
    HealthCheck.decodeRows("health.partitions", PartitionRow)
  )

/** A row of `outbox_health_vacuum`. */
const VacuumRow = Schema.Struct({
  table: Schema.String,
  partition: Schema.String,
  liveTuples: Schema.Number,
  deadTuples: Schema.Number,
  deadRatio: Schema.Number,
  lastAutovacuum: Schema.NullOr(Schema.Date),
  lastVacuum: Schema.NullOr(Schema.Date)
}).pipe(Schema.encodeKeys({
  table: "parent",
  liveTuples: "live_tuples",
  deadTuples: "dead_tuples",
  deadRatio: "dead_ratio",
  lastAutovacuum: "last_autovacuum",
  lastVacuum: "last_vacuum"
}))

const readVacuum = (context: HealthCheck.MeasureContext): Effect.Effect<ReadonlyArray<PartitionVacuum>, StoreError> =>
  context.sql`
    SELECT parent::text, partition::text, live_tuples::float8, dead_tuples::float8, dead_ratio, last_autovacuum, last_vacuum
    FROM outbox_health_vacuum WHERE parent IN ${context.sql.in(context.tables)} ORDER BY parent, partition`.pipe(
    HealthCheck.decodeRows("health.vacuum", VacuumRow)
  )

/** A row of `outbox_health_xmin` (an empty application name reads as `null`, an absent name as ""). */
const HolderRow = Schema.Struct({
  kind: Schema.Literals(["transaction", "idle_in_transaction", "prepared_transaction", "replication_slot"]),
  pid: Schema.NullOr(Schema.Number),
  name: Schema.String,
  applicationName: Schema.NullOr(Schema.String),
  clientAddr: Schema.NullOr(Schema.String),
  state: Schema.NullOr(Schema.String),
  xidAge: Schema.NullOr(Schema.Number),
  ageSeconds: Schema.NullOr(Schema.Number),
  transactionStart: Schema.NullOr(Schema.Date),
  queryStart: Schema.NullOr(Schema.Date),
  stateChange: Schema.NullOr(Schema.Date),
  retainedWalBytes: Schema.NullOr(Schema.Number),
  detail: Schema.NullOr(Schema.String)
}).pipe(Schema.encodeKeys({
  applicationName: "application_name",
  clientAddr: "client_addr",
  xidAge: "xid_age",
  ageSeconds: "age_seconds",
  transactionStart: "xact_start",
  queryStart: "query_start",
  stateChange: "state_change",
  retainedWalBytes: "retained_wal_bytes"
}))

/**
 * `outbox_health_xmin` (shared with `snapshot`).
 *
 * @internal
 */
export const readHolders = (context: HealthCheck.MeasureContext): Effect.Effect<ReadonlyArray<XminHolder>, StoreError> =>
  context.sql`
    SELECT kind, pid, coalesce(name, '') AS name, nullif(application_name, '') AS application_name, client_addr, state,
           xid_age::float8, age_seconds, xact_start, query_start, state_change, retained_wal_bytes::float8, detail
    FROM outbox_health_xmin ORDER BY xid_age DESC NULLS LAST, age_seconds DESC NULLS LAST`.pipe(
    HealthCheck.decodeRows("health.xmin", HolderRow)
  )

/**
 * The age of the oldest holder of the xmin horizon, 0 when none.
 *
 * @internal
 */
export const horizonAge = (holders: ReadonlyArray<XminHolder>) => Math.max(0, ...holders.map((h) => h.ageSeconds ?? 0))

/**
 * How many blocked keys a report lists (the oldest heads first); they are
 * counted whatever their number.
 *
 * @internal
 */
export const blockedKeysListed = 20

/**
 * Nothing blocked: the counts of a relay that does not order by key, or of
 * an outbox with no blocked key.
 *
 * @internal
 */
export const noBlockedKeys: BlockedKeys.Counts = { backoff: 0, scheduled: 0, deadLetterHeld: 0, oldestFailedHeadAgeSeconds: 0 }

/**
 * The blocked keys (`BlockedKeys`), read only when the relay orders by key
 * (`context.ordering`): without per-key ordering no key holds its later
 * events back, and nothing is read.
 *
 * @internal
 */
export const readBlockedKeys = (context: HealthCheck.MeasureContext): Effect.Effect<BlockedKeysReport, StoreError> => {
  const ordering = context.ordering
  if (ordering === undefined) return Effect.succeed({ ordering: null, counts: noBlockedKeys, keys: [] })
  const hold = ordering.deadLetter === "hold"
  return Effect.gen(function*() {
    const counts = yield* BlockedKeys.readCounts(context, { hold })
    const total = counts.backoff + counts.scheduled + counts.deadLetterHeld
    const keys = total === 0 ? [] : yield* BlockedKeys.read(context, { hold, limit: blockedKeysListed })
    return { ordering, counts, keys }
  })
}

/**
 * The measures of the built-in checks (documented at `OutboxHealth.measures`).
 *
 * @internal
 */
export const measures = {
  counts: HealthCheck.measure({
    name: "counts",
    read: (context): Effect.Effect<Pick<Measurements, "backlog" | "leases">, StoreError> =>
      Effect.gen(function*() {
        const c = yield* readCounts(context)
        const stuck = yield* readStuckLeases(context)
        return {
          backlog: {
            pending: c.pending + c.failed,
            processing: c.processing,
            oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
            deadLetters: c.deadLetter
          },
          leases: {
            overdue: c.leaseOverdue,
            overdueSeconds: c.leaseOverdueSeconds,
            heldSeconds: c.leaseHeldSeconds,
            stuck
          }
        }
      }),
    rows: (m): ReadonlyArray<Pick<Measurements, "backlog" | "leases">> => [m]
  }),
  blockedKeys: HealthCheck.measure({
    name: "blockedKeys",
    read: (context) => Effect.map(readBlockedKeys(context), (blockedKeys) => ({ blockedKeys })),
    rows: (m): ReadonlyArray<BlockedKeysReport> => (m.blockedKeys.ordering === null ? [] : [m.blockedKeys])
  }),
  partitions: HealthCheck.measure({
    name: "partitions",
    read: (context) => Effect.map(readPartitions(context), (partitions) => ({ partitions })),
    rows: (m): ReadonlyArray<{ readonly table: string; readonly partition: PartitionHealth | undefined }> =>
      m.tables.map((table) => ({ table, partition: m.partitions.find((p) => p.table === table) }))
  }),
  vacuum: HealthCheck.measure({
    name: "vacuum",
    read: (context) => Effect.map(readVacuum(context), (vacuum) => ({ vacuum })),
    rows: (m) => m.vacuum
  }),
  holders: HealthCheck.measure({
    name: "holders",
    read: (context) => Effect.map(readHolders(context), (holders) => ({ holders })),
    rows: (m) => m.holders
  })
}

// ---------------------------------------------------------------------------
// checks (pure): the list
// ---------------------------------------------------------------------------

const seconds = (s: number) => (s >= 120 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`)

/** A text on one line, cut to `max` characters. */
const oneLine = (text: string, max: number) => {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

/** What holds a blocked key, for a finding's message: `backoff until …, 3 of 10 attempts: <last error>`. */
const describeHead = (key: BlockedKeys.BlockedKey) => {
  const why = key.reason === "dead_letter_held"
    ? "dead-lettered, held until a redrive"
    : `${key.reason} until ${key.availableAt?.toISOString() ?? "?"}`
  return `${why}, ${key.retryCount} of ${key.maxRetries} attempts${key.lastError === null ? "" : `: ${oneLine(key.lastError, 120)}`}`
}

/**
 * The verdict on a session of `kind` holding the horizon (LongTransaction,
 * IdleInTransaction): its age against `bounds`, about `pid N`, its message
 * told who it is (`pid N (user, application)`) and for how long.
 */
const judgeSession = (
  h: XminHolder,
  kind: XminHolder["kind"],
  bounds: HealthCheck.Band,
  message: (described: string, age: string) => string
): HealthCheck.Verdict | undefined => {
  if (h.kind !== kind) return undefined
  const who = h.pid === null ? h.name : `pid ${h.pid}`
  const described = `${who} (${h.name}${h.applicationName ? `, ${h.applicationName}` : ""})`
  return HealthCheck.judge(bounds, h.ageSeconds ?? 0, who, (v) => message(described, seconds(v)))
}

/**
 * The built-in checks (documented at `OutboxHealth.checks`), in the order
 * their findings come: per measure (in the order the list first names it),
 * per row, per check. Each threshold is documented where its check declares
 * it; that JSDoc is what `OutboxHealth.Thresholds` shows.
 *
 * @internal
 */
export const checks = [
  HealthCheck.make({
    name: "StuckLease",
    measure: measures.counts,
    thresholds: {
      /** Seconds a lease is past its expiry (the reaper should have requeued it). */
      leaseOverdueSeconds: HealthCheck.band({ warn: 60, critical: 300 })
    },
    gauge: "outbox_lease_overdue_seconds",
    evaluate: ({ leases }, t) =>
      leases.overdue > 0
        ? HealthCheck.judge(t.leaseOverdueSeconds, leases.overdueSeconds, "outbox", (v) =>
          `${leases.overdue} PROCESSING event(s) past their lease, the oldest by ${seconds(v)} (is the reaper running?)`)
        : undefined
  }),
  HealthCheck.make({
    name: "LongHeldLease",
    measure: measures.counts,
    thresholds: {
      /** Seconds a lease has been held since its claim, heartbeats included (a handler that does not finish). */
      leaseHeldSeconds: HealthCheck.band({ warn: 900, critical: 3600 })
    },
    gauge: "outbox_lease_held_seconds",
    evaluate: ({ leases }, t) =>
      HealthCheck.judge(t.leaseHeldSeconds, leases.heldSeconds, "outbox", (v) =>
        `a PROCESSING event has been held for ${
          seconds(v)
        } since its claim (a handler that does not finish, its lease kept alive by the heartbeat?)`)
  }),
  HealthCheck.make({
    name: "BacklogAge",
    measure: measures.counts,
    thresholds: {
      /** Seconds the oldest PENDING or FAILED event has waited since its creation. */
      oldestPendingAgeSeconds: HealthCheck.band({ warn: 300, critical: 1800 })
    },
    gauge: "outbox_oldest_pending_age_seconds",
    evaluate: ({ backlog }, t) =>
      HealthCheck.judge(t.oldestPendingAgeSeconds, backlog.oldestPendingAgeSeconds, "outbox", (v) =>
        `the oldest of ${backlog.pending} pending event(s) waits for ${seconds(v)}`)
  }),
  HealthCheck.make({
    name: "DeadLetters",
    measure: measures.counts,
    thresholds: {
      /** Events in DEAD_LETTER. */
      deadLetters: HealthCheck.band({ warn: 1 })
    },
    gauge: "outbox_dead_letter_events",
    evaluate: ({ backlog }, t) =>
      HealthCheck.judge(t.deadLetters, backlog.deadLetters, "outbox", (v) => `${v} dead-lettered event(s)`)
  }),
  HealthCheck.make({
    name: "BlockedKeys",
    measure: measures.blockedKeys,
    thresholds: {
      /**
       * Seconds the oldest head of a key blocked by a failure (a backoff,
       * or with `hold` a dead letter) has existed: its age since creation,
       * as the table records no first failure. Keys waiting for a scheduled
       * head are listed, not judged. Read only under per-key ordering
       * (`OutboxHealth.Options.ordering`).
       */
      blockedKeyHeadAgeSeconds: HealthCheck.band({ warn: 300, critical: 1800 })
    },
    evaluate: ({ counts, keys }, t) => {
      const failed = counts.backoff + counts.deadLetterHeld
      if (failed === 0) return undefined
      // the list is oldest head first: its first key blocked by a failure is the oldest one (when listed)
      const oldest = keys.find((k) => k.reason !== "scheduled")
      return HealthCheck.judge(t.blockedKeyHeadAgeSeconds, counts.oldestFailedHeadAgeSeconds, oldest?.key ?? "outbox", (v) =>
        `${failed} ordering key(s) blocked by a failure, their later events held back; ${
          oldest === undefined
            ? `the oldest head has existed for ${seconds(v)}`
            : `the oldest, ${oldest.key}, on event ${oldest.headId} (existing for ${seconds(v)}, ${oldest.queuedBehind}${
              oldest.queuedBehind >= BlockedKeys.queuedBehindCap ? "+" : ""
            } queued behind): ${describeHead(oldest)}`
        } (outbox keys blocked)`)
    }
  }),
  HealthCheck.make({
    name: "PartitionHorizon",
    measure: measures.partitions,
    thresholds: {
      /** CRITICAL when the contiguous partitions end sooner than this many seconds from now (or nothing covers now). */
      partitionHorizonCriticalSeconds: 86_400
    },
    evaluate: ({ partition: p, table }, t): HealthCheck.Verdict | undefined =>
      p === undefined
        ? {
          level: "CRITICAL",
          subject: table,
          value: 0,
          threshold: t.partitionHorizonCriticalSeconds,
          message: `${table} is not a range-partitioned table with partitions`
        }
        : p.horizonSeconds < t.partitionHorizonCriticalSeconds
        ? {
          level: "CRITICAL",
          subject: table,
          value: p.horizonSeconds,
          threshold: t.partitionHorizonCriticalSeconds,
          message: p.horizon === null
            ? `no partition of ${table} covers now: inserts go to ${p.defaultPartition ?? "nowhere (no DEFAULT)"}`
            : `the partitions of ${table} end at ${p.horizon.toISOString()}, in ${seconds(p.horizonSeconds)}${
              p.hasGap ? " (a gap follows)" : ""
            }; run partition maintenance`
        }
        : undefined
  }),
  HealthCheck.make({
    name: "PartitionsAhead",
    measure: measures.partitions,
    thresholds: {
      /**
       * WARN when fewer whole partitions than this follow the current one.
       * 2 for the default premake of 3 daily partitions: between midnight and
       * the next maintenance run, premake − 1 whole partitions are ahead,
       * which is not worth a warning.
       */
      partitionsAheadWarn: 2
    },
    unless: "PartitionHorizon",
    gauge: "outbox_partitions_ahead",
    evaluate: ({ partition: p, table }, t): HealthCheck.Verdict | undefined =>
      p !== undefined && p.ahead < t.partitionsAheadWarn
        ? {
          level: "WARN",
          subject: table,
          value: p.ahead,
          threshold: t.partitionsAheadWarn,
          message: `${p.ahead} whole partition(s) of ${table} ahead of the current one; maintenance is behind`
        }
        : undefined
  }),
  HealthCheck.make({
    name: "RowsInDefault",
    measure: measures.partitions,
    thresholds: {
      /** Rows in the DEFAULT partition (counted up to 100 000). */
      rowsInDefault: HealthCheck.band({ warn: 1 })
    },
    gauge: "outbox_default_partition_rows",
    evaluate: ({ partition: p, table }, t) =>
      p === undefined ? undefined : HealthCheck.judge(t.rowsInDefault, p.defaultRows, table, (v) =>
        `${v}${v >= defaultRowsCap ? "+" : ""} row(s) in ${p.defaultPartition}; maintenance moves them into partitions`)
  }),
  HealthCheck.make({
    name: "DeadTuples",
    measure: measures.vacuum,
    thresholds: {
      /** Ratio dead / (live + dead) of one partition, once it has at least `minDeadTuples` dead tuples. */
      deadTupleRatio: HealthCheck.band({ warn: 0.2, critical: 0.5 }),
      minDeadTuples: 10_000
    },
    gauge: "outbox_dead_tuples",
    evaluate: (v, t) => {
      if (v.deadTuples < t.minDeadTuples) return undefined
      const last = v.lastAutovacuum ?? v.lastVacuum
      return HealthCheck.judge(t.deadTupleRatio, v.deadRatio, v.partition, (r) =>
        `${v.deadTuples} dead tuples (${Math.round(r * 100)}%) in ${v.partition}; last vacuum ${
          last === null ? "never" : last.toISOString()
        }`)
    }
  }),
  HealthCheck.make({
    name: "LongTransaction",
    measure: measures.holders,
    thresholds: {
      /** A transaction (running a query) holding the xmin horizon for this many seconds. */
      transactionAgeSeconds: HealthCheck.band({ warn: 300, critical: 1800 })
    },
    gauge: "outbox_xmin_horizon_age_seconds",
    evaluate: (h, t) =>
      judgeSession(h, "transaction", t.transactionAgeSeconds, (described, age) =>
        `${described} holds the xmin horizon with a ${age} transaction: ${h.detail ?? ""}`)
  }),
  HealthCheck.make({
    name: "IdleInTransaction",
    measure: measures.holders,
    thresholds: {
      /** An idle-in-transaction session holding the xmin horizon for this many seconds. */
      idleInTransactionSeconds: HealthCheck.band({ warn: 60, critical: 600 })
    },
    gauge: "outbox_xmin_horizon_age_seconds",
    evaluate: (h, t) =>
      judgeSession(h, "idle_in_transaction", t.idleInTransactionSeconds, (described, age) =>
        `${described} is idle in a ${age} transaction and holds the xmin horizon; last query: ${h.detail ?? ""}`)
  }),
  HealthCheck.make({
    name: "PreparedTransaction",
    measure: measures.holders,
    thresholds: {
      /** A prepared transaction (two-phase commit) this many seconds old. */
      preparedTransactionAgeSeconds: HealthCheck.band({ warn: 300, critical: 1800 })
    },
    gauge: "outbox_xmin_horizon_age_seconds",
    evaluate: (h, t) =>
      h.kind === "prepared_transaction"
        ? HealthCheck.judge(t.preparedTransactionAgeSeconds, h.ageSeconds ?? 0, h.name, (v) =>
          `prepared transaction ${h.name} is ${seconds(v)} old and holds the xmin horizon (COMMIT or ROLLBACK PREPARED it)`)
        : undefined
  }),
  HealthCheck.make({
    name: "ReplicationSlot",
    measure: measures.holders,
    thresholds: {
      /** WAL kept back by a replication slot. An inactive slot is at least WARN. */
      replicationSlotRetainedBytes: HealthCheck.band({ warn: 1024 ** 3, critical: 10 * 1024 ** 3 })
    },
    evaluate: (h, t): HealthCheck.Verdict | undefined => {
      if (h.kind !== "replication_slot") return undefined
      const retained = h.retainedWalBytes ?? 0
      const hit = HealthCheck.levelOf(t.replicationSlotRetainedBytes, retained)
      if (hit === undefined && h.state !== "inactive") return undefined
      return {
        level: hit?.level ?? "WARN",
        subject: h.name,
        value: retained,
        threshold: hit?.threshold ?? t.replicationSlotRetainedBytes.warn ?? 0,
        message: `replication slot ${h.name} is ${h.state ?? "?"}, keeps ${retained} bytes of WAL${
          h.xidAge === null ? "" : ` and holds the xmin horizon ${h.xidAge} transactions back`
        }`
      }
    }
  })
] as const
