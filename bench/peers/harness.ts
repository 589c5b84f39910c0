/**
 * What `peers.bench.ts` measures every system with: the payload, the
 * delivery tracker, and the interface each system implements (`Subject`).
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** Which part of the bench an event belongs to. */
export type Phase = "w1" | "w2" | "producer"

/** The event every system carries: ~300 bytes of JSON, identical for all. */
export interface Payload {
  /**
   * Enqueue time, `epochMs()`: in W2 taken inside the producer's transaction, after BEGIN and just
   * before the enqueue statement (so a producer waiting for a pool connection is not counted as
   * delivery latency; the bench reports that wait separately); in W1 before each batch.
   */
  readonly t: number
  readonly seq: number
  readonly phase: Phase
  readonly orderId: string
  readonly customer: { readonly id: string; readonly email: string; readonly tier: string }
  readonly items: ReadonlyArray<{ readonly sku: string; readonly quantity: number; readonly price: number }>
  readonly currency: string
  readonly note: string
}

export const payload = (phase: Phase, seq: number, t: number): Payload => ({
  t,
  seq,
  phase,
  orderId: `ord-${String(seq).padStart(9, "0")}`,
  customer: { id: `cus-${String(seq % 10_000).padStart(6, "0")}`, email: "someone@example.com", tier: "gold" },
  items: [
    { sku: "SKU-0001-A", quantity: 2, price: 19.99 },
    { sku: "SKU-0042-B", quantity: 1, price: 5.49 }
  ],
  currency: "EUR",
  note: "leave at the door, ring twice"
})

/** A consumer's handler: `at` is when the system's handler started (`epochMs()`). */
export type Handler = (payload: unknown, at: number) => void

/** A system running in its own fresh database. */
export interface Instance {
  /** W1: enqueue these events with the system's own batched API (one call). */
  readonly enqueueBatch: (payloads: ReadonlyArray<Payload>) => Effect.Effect<void, unknown>
  /**
   * W2: one transaction (BEGIN, enqueue one event, COMMIT) through the system's own API; `make` is
   * called after BEGIN, right before the enqueue statement, and stamps the payload's `t`.
   */
  readonly produce: (make: () => Payload) => Effect.Effect<void, unknown>
  /** Starts the consumer: 2 workers (or the system's equivalent), no-op handler; it stops when the scope closes. */
  readonly consume: (handler: Handler) => Effect.Effect<void, unknown, Scope.Scope>
  /** A query returning `n`: the events not yet completed in the database (queued, claimed, or completing). */
  readonly unsettledSql: string
  /** Errors the system reported on its own (error events, error logs): the bench fails on any. */
  readonly errors: ReadonlyArray<unknown>
}

/** One row of the table: a system in one configuration. */
export interface Subject {
  readonly system: string
  readonly mode: string
  /** A peer (another library) rather than this library or its raw ceiling: the ratios are to the best peer. */
  readonly peer: boolean
  /** The settings, as printed under the table. */
  readonly settings: string
  /** Workloads this row runs (a row may exist for one workload only). */
  readonly w1: boolean
  readonly w2: boolean
  /** Builds the system in the fresh database at `url` (its schema installed); closed with the scope. */
  readonly open: (url: string) => Effect.Effect<Instance, unknown, Scope.Scope>
}

/**
 * Counts deliveries of one phase's events `0..n-1` and records each first
 * delivery's latency (handler start − enqueue time). Redeliveries are
 * counted as duplicates, never twice as delivered.
 */
export class Tracker {
  delivered = 0
  duplicates = 0
  /** `performance.now()` of the first delivery. */
  firstAt = NaN
  readonly phase: Phase
  readonly n: number
  readonly seen: Uint8Array
  readonly latency: Float64Array
  constructor(phase: Phase, n: number) {
    this.phase = phase
    this.n = n
    this.seen = new Uint8Array(n)
    this.latency = new Float64Array(n)
  }
  record(p: Payload, at: number): void {
    const seq = p.seq
    if (!(seq >= 0 && seq < this.n)) throw new Error(`${this.phase}: unexpected seq ${seq}`)
    if (this.seen[seq] === 1) {
      this.duplicates++
      return
    }
    this.seen[seq] = 1
    this.latency[seq] = at - p.t
    if (this.delivered++ === 0) this.firstAt = performance.now()
  }
}

/** A handler dispatching each delivered payload to the tracker of its phase; anything else is an error. */
export const dispatch = (trackers: Partial<Record<Phase, Tracker>>, errors: Array<unknown>): Handler => (raw, at) => {
  const p = (typeof raw === "string" ? JSON.parse(raw) : raw) as Payload
  const tracker = p !== null && typeof p === "object" ? trackers[p.phase] : undefined
  if (tracker === undefined) {
    errors.push(new Error(`delivered an unexpected payload: ${JSON.stringify(raw).slice(0, 200)}`))
    return
  }
  try {
    tracker.record(p, at)
  } catch (error) {
    errors.push(error)
  }
}
