/**
 * The Prometheus endpoint's HTTP machinery, loaded only by a process that
 * serves `/metrics` (`OutboxTelemetry.layerPrometheus` / `layerPrometheusRoute`
 * import it on demand). Importing Node's HTTP server and router statically
 * cost every relay ~25 MB of idle RSS and ~900 modules (measured with
 * bench/relay-idle.mjs: 125–130 MB with the `@effect/platform-node` barrel,
 * 94–97 MB with this module loaded lazily), whether or not it served metrics.
 *
 * @internal
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "effect/http/HttpRouter"
import * as Layer from "effect/Layer"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import { createServer } from "node:http"

/** @internal */
export const route = (path: HttpRouter.PathInput): Layer.Layer<never, never, HttpRouter.HttpRouter> =>
  PrometheusMetrics.layerHttp({ path })

/** @internal */
export const server = (options: { readonly port: number; readonly host: string; readonly path: HttpRouter.PathInput }) =>
  HttpRouter.serve(route(options.path), { disableListenLog: true, disableLogger: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: options.port, host: options.host }))
  )
