/**
 * A TCP proxy on a free loopback port in front of a real server (a broker,
 * PostgreSQL), for outage tests: the client under test connects to the
 * proxy, and the test switches what the proxy does.
 *
 * - `"forward"`: bytes pass both ways (the default);
 * - `"refuse"`: every open connection is cut and new ones are closed at
 *   once, as when the server is down;
 * - `"blackhole"`: open connections are cut and new ones are accepted but
 *   nothing is forwarded nor answered, as when the network drops packets
 *   (the client waits until its own timeout).
 *
 * Real sockets, real server: the client's reconnect logic is what runs.
 * Closed with its scope.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type AddressInfo, createConnection, createServer, type Socket } from "node:net"

/**
 * What the proxy does with connections.
 *
 * @category models
 * @since 0.1.0
 */
export type Mode = "forward" | "refuse" | "blackhole"

/**
 * A running proxy.
 *
 * @category models
 * @since 0.1.0
 */
export interface TcpProxy {
  /** The proxy's loopback port. */
  readonly port: number
  /** `127.0.0.1:<port>`. */
  readonly address: string
  /** Switches the mode; leaving `"forward"` cuts every open connection. */
  readonly setMode: (mode: Mode) => Effect.Effect<void>
  /** Connections accepted so far (a reconnecting client raises it). */
  readonly connections: Effect.Effect<number>
}

/**
 * Starts a proxy to `target` (`host:port` or a port on 127.0.0.1) in the
 * current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (target: { readonly host?: string; readonly port: number }): Effect.Effect<TcpProxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let mode: Mode = "forward"
    let accepted = 0
    const open = new Set<Socket>()
    const cutAll = () => {
      for (const socket of open) socket.destroy()
      open.clear()
    }
    const server = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>>((resume) => {
        const s = createServer((client) => {
          accepted++
          client.on("error", () => {})
          if (mode === "refuse") return void client.destroy()
          open.add(client)
          client.on("close", () => open.delete(client))
          if (mode === "blackhole") return
          const upstream = createConnection({ host: target.host ?? "127.0.0.1", port: target.port })
          open.add(upstream)
          upstream.on("error", () => client.destroy())
          upstream.on("close", () => {
            open.delete(upstream)
            client.destroy()
          })
          client.on("close", () => upstream.destroy())
          client.pipe(upstream)
          upstream.pipe(client)
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.callback<void>((resume) => {
          cutAll()
          s.close(() => resume(Effect.void))
        })
    )
    const port = (server.address() as AddressInfo).port
    return {
      port,
      address: `127.0.0.1:${port}`,
      setMode: (next) =>
        Effect.sync(() => {
          if (next !== "forward") cutAll()
          mode = next
        }),
      connections: Effect.sync(() => accepted)
    }
  })
