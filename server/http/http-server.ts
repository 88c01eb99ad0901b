/**
 * HttpServer: the plain-HTTP side of the server: `/metrics` (Prometheus text from the registry)
 * and `/healthz` (200 "ok" while serving, 503 once shutdown has started).
 *
 * Invariant: it answers only GET and HEAD on those two paths (404 otherwise, 405 for other
 * methods) and never blocks on the store.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** A running metrics and health endpoint. */
export interface HttpServer {
  /** Port bound. */
  port: number;
  close(): Promise<void>;
}

/** Serves `/metrics` and `/healthz` on `host:port` (port 0 picks a free one). */
export async function startHttpServer(
  host: string,
  port: number,
  registry: Registry,
  serving: () => boolean,
): Promise<HttpServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      const ok = serving();
      response
        .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
        .end(ok ? "ok\n" : "shutting down\n");
      return;
    }
    if (path === "/metrics") {
      registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: unknown) => response.writeHead(500, { "content-type": "text/plain" }).end(`${String(err)}\n`),
      );
      return;
    }
    response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
