/**
 * A real HTTP receiver for webhook tests: a `node:http` server on a free
 * loopback port that records every request (method, headers, JSON body)
 * and answers it with `respond` (default: 204). Closed with its scope.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

/**
 * One request the receiver saw.
 *
 * @category models
 * @since 0.1.0
 */
export interface Received {
  readonly method: string | undefined
  readonly headers: IncomingHttpHeaders
  /** The parsed JSON body (`any`: tests read its fields directly). */
  readonly body: any
}

/**
 * A running receiver: its URL (path `/events`), a queue of the requests it
 * saw, and the same requests as an array (in arrival order).
 *
 * @category models
 * @since 0.1.0
 */
export interface Receiver {
  readonly url: string
  readonly received: Queue.Queue<Received>
  readonly seen: ReadonlyArray<Received>
}

/**
 * Starts a receiver in the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  respond: (res: ServerResponse, request: Received) => void = (res) => res.writeHead(204).end()
): Effect.Effect<Receiver, never, Scope.Scope> =>
  Effect.gen(function*() {
    const received = yield* Queue.unbounded<Received>()
    const seen: Array<Received> = []
    const server = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>>((resume) => {
        const s = createServer((req, res) => {
          let data = ""
          req.on("data", (chunk) => (data += chunk))
          req.on("end", () => {
            const request: Received = { method: req.method, headers: req.headers, body: data === "" ? undefined : JSON.parse(data) }
            seen.push(request)
            Queue.offerUnsafe(received, request)
            respond(res, request)
          })
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.callback<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        })
    )
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, received, seen }
  })

/**
 * A receiver (answering 204) as a service, for layer-based test suites.
 *
 * @category services
 * @since 0.1.0
 */
export class HttpReceiver extends Context.Service<HttpReceiver, Receiver>()("@outbox/testing/HttpReceiver") {
  /**
   * @since 0.1.0
   */
  static readonly layer: Layer.Layer<HttpReceiver> = Layer.effect(HttpReceiver, make())
}
