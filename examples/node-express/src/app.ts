/**
 * The orders service of `examples/orders`, in plain Node: Express 5 and
 * Knex on `pg`, no Effect in the application code. `POST /orders` writes an
 * order row and its `OrderCreated` event in one Knex transaction, through
 * `@outbox/client/knex`; `GET /orders/:id` reads it back; `GET /healthz`
 * answers a probe. The relay (`createRelay`) runs beside it, see `main.ts`.
 *
 * Bad client input is answered 4xx, never 500: 415 when the body is not sent
 * as JSON (`application/json` or a `+json` type, UTF-8), 413 when it is over
 * the body limit (1 MiB by default), 400 when it is not UTF-8 JSON or not a
 * valid order (the message names the field, including text PostgreSQL cannot
 * store), 422 when the order breaks a business rule (the customer's credit
 * limit, checked after the event is published: the transaction rolls back
 * and nothing is relayed). A failure of the server (database, outbox store)
 * is logged and answered 503 when retrying may help, 500 otherwise.
 */
import { InvalidEvent, type RelayStats, StoreError } from "@outbox/client"
import * as Outbox from "@outbox/client/knex"
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from "express"
import type { Knex } from "knex"
import { randomUUID } from "node:crypto"

/** One line item of an order. */
export interface OrderItem {
  readonly sku: string
  readonly quantity: number
  readonly unitPrice: number
}

/** The body of `POST /orders`, once validated (unknown keys dropped). */
export interface CreateOrder {
  readonly customerId: string
  readonly items: ReadonlyArray<OrderItem>
}

/** The payload of the `OrderCreated` event (the same as in `examples/orders`). */
export interface OrderCreated {
  readonly orderId: string
  readonly customerId: string
  readonly items: ReadonlyArray<OrderItem>
  readonly total: number
}

/** A log line's level. */
export type LogLevel = "info" | "warn" | "error"

/** Writes one structured log entry. */
export type Logger = (level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>) => void

/** Options of `createApp`. */
export interface AppOptions {
  /** The largest request body (an `express.json` limit: bytes or `"512kb"`); default `"1mb"`. Larger ones get 413. */
  readonly bodyLimit?: string | number | undefined
  /**
   * The most a customer may order in 24 hours (default 10 000). An order
   * beyond it is refused with 422 after its event is published: the
   * transaction rolls back, so neither the order nor the event exists.
   */
  readonly creditLimit?: number | undefined
  /** The outbox table `publish` writes to (default `outbox`). */
  readonly outboxTable?: string | undefined
  /** The largest event payload `publish` accepts, in bytes of JSON (default 1 MiB). */
  readonly maxEventBytes?: number | undefined
  /** The relay's counters, shown by `GET /healthz` (e.g. `relay.stats`). */
  readonly relayStats?: (() => RelayStats) | undefined
  /** Where warnings and server failures go; default `jsonLogger` on stderr. */
  readonly log?: Logger | undefined
}

/** The default body limit: the outbox's default payload limit too, and far more than any real order. */
export const defaultBodyLimit = "1mb"

/** The default 24-hour credit limit of a customer. */
export const defaultCreditLimit = 10_000

/** `JSON.stringify` that writes bigints (event ids) as strings. */
export const stringify = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => typeof v === "bigint" ? v.toString() : v)

/** An error as loggable fields (and its cause, a few levels deep). */
const errorFields = (error: unknown, depth = 0): unknown => {
  if (!(error instanceof Error)) return error
  const { code, retryable } = error as { readonly code?: unknown; readonly retryable?: unknown }
  return {
    name: error.name,
    message: error.message,
    ...(code === undefined ? {} : { code }),
    ...(retryable === undefined ? {} : { retryable }),
    ...(error.stack === undefined ? {} : { stack: error.stack }),
    ...(error.cause === undefined || depth >= 3 ? {} : { cause: errorFields(error.cause, depth + 1) })
  }
}

/** One JSON line per entry: `info` on stdout, `warn` and `error` on stderr. */
export const jsonLogger: Logger = (level, message, fields = {}) => {
  const entry: Record<string, unknown> = { time: new Date().toISOString(), level, message }
  for (const [key, value] of Object.entries(fields)) entry[key] = value instanceof Error ? errorFields(value) : value
  const line = stringify(entry)
  if (level === "info") console.log(line)
  else console.error(line)
}

// ---------------------------------------------------------------------------
// validation

/**
 * A request the client has to fix: answered with `status` and
 * `{ error: message }`, not logged as a server failure.
 */
export class ClientError extends Error {
  override readonly name = "ClientError"
  readonly status: 400 | 404 | 413 | 415 | 422
  constructor(status: ClientError["status"], message: string) {
    super(message)
    this.status = status
  }
}

/**
 * Why `value` is not text that PostgreSQL can store in `text` and `jsonb`,
 * or `undefined` when it is. PostgreSQL refuses NUL (`22021` in text,
 * `22P05` in jsonb) and a lone surrogate's `\ud800` escape in jsonb
 * (`22P02`); in a text column the driver would even store a lone surrogate
 * silently as U+FFFD. JSON allows both as escapes, so a valid JSON body can
 * carry them: checking here makes each a 400 that names the field.
 */
const textProblem = (value: unknown): string | undefined => {
  if (typeof value !== "string") return "must be a string"
  if (value.length === 0) return "must not be empty"
  if (value.includes("\u0000")) return "must not contain the NUL character (\\u0000), which PostgreSQL cannot store"
  if (!value.isWellFormed()) {
    return "must not contain a lone surrogate (\\ud800-\\udfff without its pair), which is not Unicode text and PostgreSQL cannot store"
  }
  return undefined
}

const isRecord = (value: unknown): value is Readonly<Record<string, unknown>> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** The sum of quantity × unitPrice. */
export const orderTotal = (items: ReadonlyArray<OrderItem>): number =>
  items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0)

/**
 * The body of `POST /orders` as a `CreateOrder`, or a `ClientError` (400)
 * listing every problem with its field. Only the checked fields are kept.
 * The total (the sum of quantity × unitPrice) must be a finite number above
 * zero: a huge quantity × unitPrice overflows to `Infinity`, which the
 * event's JSON payload cannot carry.
 */
export const parseOrder = (body: unknown): CreateOrder | ClientError => {
  if (!isRecord(body)) return new ClientError(400, "invalid order: the body must be a JSON object")
  const problems: Array<string> = []
  const customerProblem = textProblem(body.customerId)
  if (customerProblem !== undefined) problems.push(`customerId ${customerProblem}`)
  const items: Array<OrderItem> = []
  if (!Array.isArray(body.items) || body.items.length === 0) {
    problems.push("items must be a non-empty array")
  } else {
    body.items.forEach((item: unknown, i) => {
      if (!isRecord(item)) return problems.push(`items[${i}] must be an object`)
      const { quantity, sku, unitPrice } = item
      const skuProblem = textProblem(sku)
      if (skuProblem !== undefined) problems.push(`items[${i}].sku ${skuProblem}`)
      if (typeof quantity !== "number" || !Number.isSafeInteger(quantity) || quantity <= 0) {
        problems.push(`items[${i}].quantity must be a positive integer`)
      }
      if (typeof unitPrice !== "number" || !Number.isFinite(unitPrice) || unitPrice < 0) {
        problems.push(`items[${i}].unitPrice must be a number of at least 0`)
      }
      items.push({ sku: sku as string, quantity: quantity as number, unitPrice: unitPrice as number })
    })
  }
  if (problems.length === 0) {
    const total = orderTotal(items)
    if (!Number.isFinite(total)) problems.push("items: the order total (the sum of quantity × unitPrice) is too large to be a number")
    else if (total <= 0) problems.push("items: the order total (the sum of quantity × unitPrice) must be above 0")
  }
  if (problems.length > 0) return new ClientError(400, `invalid order: ${problems.join("; ")}`)
  return { customerId: body.customerId as string, items }
}

// ---------------------------------------------------------------------------
// database

/**
 * Creates the example's own table with Knex's schema builder (idempotent; the
 * same table as `examples/orders`, whose DDL is plain SQL). The relay
 * migrates the outbox.
 */
export const migrate = async (db: Knex): Promise<void> => {
  if (!(await db.schema.hasTable("orders"))) {
    await db.schema.createTable("orders", (table) => {
      table.uuid("id").primary()
      table.text("customer_id").notNullable()
      table.jsonb("items").notNullable()
      table.decimal("total", null).notNullable() // null precision: plain `numeric`
      table.timestamp("created_at", { useTz: true }).notNullable().defaultTo(db.fn.now())
    })
  }
  await db.raw("CREATE INDEX IF NOT EXISTS orders_customer_created_idx ON orders (customer_id, created_at)")
}

/**
 * Writes the order and its `OrderCreated` event in one transaction, then
 * checks the customer's credit limit over the last 24 hours (this order
 * included). Over the limit it throws a `ClientError` (422) and the
 * transaction rolls back: the order and the event were never written.
 * Orders of one customer are serialized by a transaction-scoped advisory
 * lock, so concurrent orders cannot both slip under the limit.
 *
 * It trusts `order` to be a validated `CreateOrder`; exported so that tests
 * can bypass `parseOrder` and check the backstops.
 */
export const placeOrder = async (db: Knex, order: CreateOrder, options: AppOptions = {}): Promise<OrderCreated> => {
  const orderId = randomUUID()
  const total = orderTotal(order.items)
  const payload: OrderCreated = { orderId, customerId: order.customerId, items: order.items, total }
  const creditLimit = options.creditLimit ?? defaultCreditLimit
  await db.transaction(async (trx) => {
    await trx.raw("SELECT pg_advisory_xact_lock(hashtextextended('orders/customer:' || ?, 0))", [order.customerId])
    await trx("orders").insert({ id: orderId, customer_id: order.customerId, items: JSON.stringify(order.items), total })
    // the event commits (or rolls back) with the order
    await Outbox.publish(trx, { aggregateType: "Order", aggregateId: orderId, eventType: "OrderCreated", payload }, {
      table: options.outboxTable,
      maxPayloadBytes: options.maxEventBytes
    })
    const { rows } = await trx.raw<{ rows: Array<{ spent: string }> }>(
      "SELECT coalesce(sum(total), 0)::text AS spent FROM orders WHERE customer_id = ? AND created_at > now() - interval '24 hours'",
      [order.customerId]
    )
    const spent = Number(rows[0]?.spent ?? 0)
    if (spent > creditLimit) {
      throw new ClientError(
        422,
        `credit limit exceeded: customer ${JSON.stringify(order.customerId)} would have ordered ${spent} in 24 hours, above the limit of ${creditLimit}`
      )
    }
  })
  return payload
}

// ---------------------------------------------------------------------------
// errors

/**
 * The SQLSTATEs PostgreSQL raises for text it cannot store: 22021 (NUL in
 * text), 22P05 (`\u0000` in jsonb) and 22P02 (a lone surrogate's escape in
 * jsonb). Every text value of this app comes from the request (the order id
 * is generated, and the id of `GET /orders/:id` is checked first), so these
 * mean bad input, not a server fault.
 */
const clientDataSqlStates: ReadonlySet<string> = new Set(["22021", "22P05", "22P02"])

/** SQLSTATEs and socket errors after which the same request may succeed. */
const transientCode = (code: string): boolean =>
  code.startsWith("08") || // connection exception
  ["40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"].includes(code) ||
  ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN"].includes(code)

/** The first `code` (a SQLSTATE or a socket error) along `error`'s cause chain. */
const errorCode = (error: unknown): string | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const { code } = current as { readonly code?: unknown }
    if (typeof code === "string" && code !== "") return code
    current = (current as { readonly cause?: unknown }).cause
  }
  return undefined
}

/**
 * The answer to a failure: its status, the message the client sees, and how
 * it is logged (`undefined`: not at all, it is the client's to fix).
 */
export interface HttpError {
  readonly status: number
  readonly message: string
  readonly log: "warn" | "error" | undefined
  readonly retryAfter?: number | undefined
}

/** The messages of `express.json`'s own errors, by their `type`. */
const bodyErrors: Readonly<Record<string, (limit: string | number) => { status: number; message: string }>> = {
  "entity.too.large": (limit) => ({ status: 413, message: `the body is larger than the limit of ${limit}${typeof limit === "number" ? " bytes" : ""}` }),
  "entity.parse.failed": () => ({ status: 400, message: "the body must be valid JSON (an object)" }),
  "entity.verify.failed": () => ({ status: 400, message: "the body must be UTF-8 encoded JSON" }),
  "charset.unsupported": () => ({ status: 415, message: "the body must be UTF-8 JSON (charset=utf-8 or none)" }),
  "encoding.unsupported": () => ({ status: 415, message: "unsupported content-encoding (identity, gzip, deflate or br)" }),
  "request.aborted": () => ({ status: 400, message: "the request was aborted" }),
  "request.size.invalid": () => ({ status: 400, message: "the body's size does not match its content-length" })
}

/**
 * Classifies any failure of a route. 4xx for the client's failures: a
 * `ClientError`, a body `express.json` refused, an event the outbox refused
 * (`InvalidEvent`: 413 for its size, 400 otherwise, as the only free content
 * of `OrderCreated` is the client's order) or text PostgreSQL refused (the
 * last two are backstops, logged as warnings: validation should have caught
 * them). Anything else is the server's: 503 (with `Retry-After`) when
 * retrying may help (a retryable `StoreError`, a lost connection, a Knex
 * pool timeout), else 500.
 */
export const httpError = (error: unknown, bodyLimit: string | number = defaultBodyLimit): HttpError => {
  if (error instanceof ClientError) return { status: error.status, message: error.message, log: undefined }
  if (error instanceof InvalidEvent) {
    return error.reason === "PayloadTooLarge"
      ? { status: 413, message: `the order is too large: ${error.message}`, log: "warn" }
      : { status: 400, message: `invalid order: ${error.message}`, log: "warn" }
  }
  const { status, type } = (typeof error === "object" && error !== null ? error : {}) as {
    readonly status?: unknown
    readonly type?: unknown
  }
  if (typeof status === "number" && typeof type === "string" && Object.hasOwn(bodyErrors, type)) return { ...bodyErrors[type]!(bodyLimit), log: undefined }
  if (!(error instanceof StoreError) && typeof status === "number" && status >= 400 && status < 500) {
    // another HTTP error of Express (e.g. a malformed URI in a path parameter)
    return { status, message: error instanceof Error ? error.message : "bad request", log: undefined }
  }
  const code = errorCode(error)
  if (code !== undefined && clientDataSqlStates.has(code)) {
    return { status: 400, message: "invalid order: PostgreSQL cannot store its text", log: "warn" }
  }
  const transient = (error instanceof StoreError && error.retryable) ||
    (code !== undefined && transientCode(code)) ||
    (error instanceof Error && error.name === "KnexTimeoutError")
  return transient
    ? { status: 503, message: "service unavailable, try again", log: "error", retryAfter: 1 }
    : { status: 500, message: "internal error", log: "error" }
}

// ---------------------------------------------------------------------------
// the app

/**
 * Whether a content-type is JSON: `application/json` or a `+json` suffix
 * (RFC 6839), with any parameters and in any case.
 */
const isJson = (contentType: string | undefined): boolean => {
  const mediaType = (contentType ?? "").split(";")[0]!.trim().toLowerCase()
  return mediaType === "application/json" || /^application\/[^/]+\+json$/.test(mediaType)
}

/** The `charset` parameter of a content-type, lower case, if any. */
const charset = (contentType: string | undefined): string | undefined => {
  const match = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType ?? "")
  return match?.[1]?.toLowerCase()
}

/** Strict: a body that is not UTF-8 is refused, not decoded to U+FFFD replacement characters. */
const utf8 = new TextDecoder("utf-8", { fatal: true })

/** 415 before anything is read, unless the body is sent as UTF-8 JSON. */
const requireJson: RequestHandler = (req, _res, next) => {
  const contentType = req.headers["content-type"]
  if (!isJson(contentType)) {
    return next(new ClientError(415, "the body must be JSON, sent with content-type: application/json"))
  }
  const cs = charset(contentType)
  if (cs !== undefined && cs !== "utf-8" && cs !== "utf8") return next(new ClientError(415, "the body must be UTF-8 JSON (charset=utf-8 or none)"))
  next()
}

const Uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * The Express app over `db` (a Knex instance on PostgreSQL with the
 * `orders` table of `migrate` and the outbox migrated, e.g. by the relay):
 *
 * - `POST /orders` `{ customerId, items: [{ sku, quantity, unitPrice }] }`:
 *   201 `{ orderId }`; 400/413/415/422 `{ error }` for the client's failures;
 * - `GET /orders/:id`: 200 with the order, 404, or 400 when the id is not a UUID;
 * - `GET /healthz`: 200 `{ status: "ok", relay? }` when the database answers, else 503.
 */
export const createApp = (db: Knex, options: AppOptions = {}): Express => {
  const bodyLimit = options.bodyLimit ?? defaultBodyLimit
  const log = options.log ?? jsonLogger
  const app = express()
  app.disable("x-powered-by")

  app.post(
    "/orders",
    requireJson,
    express.json({
      limit: bodyLimit,
      type: (req) => isJson(req.headers["content-type"]),
      verify: (_req, _res, buf) => {
        try {
          utf8.decode(buf)
        } catch {
          throw Object.assign(new Error("the body must be UTF-8 encoded JSON"), { status: 400, type: "entity.verify.failed" })
        }
      }
    }),
    async (req, res) => {
      const order = parseOrder(req.body)
      if (order instanceof ClientError) throw order
      const created = await placeOrder(db, order, options)
      res.status(201).location(`/orders/${created.orderId}`).json({ orderId: created.orderId })
    }
  )

  app.get("/orders/:id", async (req, res) => {
    const { id } = req.params
    if (!Uuid.test(id)) throw new ClientError(400, "the order id must be a UUID")
    const row = await db("orders")
      .select("id", "customer_id", "items", db.raw("total::text AS total"), "created_at")
      .where({ id })
      .first() as { id: string; customer_id: string; items: unknown; total: string; created_at: Date } | undefined
    if (row === undefined) throw new ClientError(404, "not found")
    res.json({
      orderId: row.id,
      customerId: row.customer_id,
      items: row.items,
      total: Number(row.total),
      createdAt: row.created_at.toISOString()
    })
  })

  app.get("/healthz", async (_req, res) => {
    try {
      await db.raw("SELECT 1")
    } catch (error) {
      log("error", "health check: the database does not answer", { error })
      res.status(503).json({ status: "unavailable", error: "the database does not answer" })
      return
    }
    res.json({ status: "ok", ...(options.relayStats === undefined ? {} : { relay: options.relayStats() }) })
  })

  app.use((_req, _res, next) => next(new ClientError(404, "not found")))

  const answerFailures: ErrorRequestHandler = (error, req, res, next) => {
    if (res.headersSent) return next(error)
    const answer = httpError(error, bodyLimit)
    if (answer.log !== undefined) {
      log(answer.log, answer.status >= 500 ? "request failed" : `a request that passed validation was refused: answered ${answer.status}`, {
        method: req.method,
        path: req.path,
        status: answer.status,
        error
      })
    }
    if (answer.retryAfter !== undefined) res.setHeader("retry-after", String(answer.retryAfter))
    // the rest of a refused body is not worth reading on a kept-alive connection
    if (answer.status === 413) res.setHeader("connection", "close")
    res.status(answer.status).json({ error: answer.message })
  }
  app.use(answerFailures)
  return app
}
