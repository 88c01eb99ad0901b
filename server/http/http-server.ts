/**
 * HttpServer: the HTTP side of the server: `/metrics` (Prometheus text from the registry) and
 * `/healthz`, over plain HTTP or, with a certificate, HTTPS. `/healthz` answers 200 "ok" while
 * serving, 503 once shutdown has started or while `serving` says no (the data directory cannot be
 * written); the body then names why, one line each, followed by any other problem
 * `options.problems` lists (e.g. partitions with data loss, which do not make it 503).
 *
 * Invariants:
 * - It answers only GET and HEAD on those two paths (404 otherwise, 405 for other methods) and
 *   never blocks on the store.
 * - With a metrics token, /metrics answers 401 unless the request carries
 *   `authorization: Bearer <token>` whose SHA-256 equals it (compared in constant time); the
 *   token is read again on every request, so a reload applies at once. /healthz stays open.
 * - With HTTPS, `setTls` swaps the certificate and key for new connections only; open
 *   connections keep theirs.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** Security options of the HTTP endpoint. */
export interface HttpServerOptions {
  /** PEM certificate chain and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer };
  /** SHA-256 of the bearer token /metrics requires (read per request); /metrics is open when absent. */
  metricsTokenHash?: () => Buffer | undefined;
  /** Problems for the /healthz body, one line each (why it is 503, or what is degraded). */
  problems?: () => string[];
}

/** A running metrics and health endpoint. */
export interface HttpServer {
  /** Port bound. */
  port: number;
  /**
   * Serves new HTTPS connections with this certificate chain and key (open ones keep theirs).
   * @throws Error when the endpoint is plain HTTP, or Node refuses the pair
   */
  setTls(tls: { cert: Buffer; key: Buffer }): void;
  close(): Promise<void>;
}

/** Serves `/metrics` and `/healthz` on `host:port` (port 0 picks a free one). */
export async function startHttpServer(
  host: string,
  port: number,
  registry: Registry,
  serving: () => boolean,
  options: HttpServerOptions = {},
): Promise<HttpServer> {
  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      const ok = serving();
      const lines = options.problems?.() ?? [];
      const head = ok ? "ok" : lines.length === 0 ? "shutting down" : "not serving";
      response
        .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
        .end(`${[head, ...lines].join("\n")}\n`);
      return;
    }
    if (path === "/metrics") {
      if (!authorized(request, options.metricsTokenHash?.())) {
        response
          .writeHead(401, { "content-type": "text/plain", "www-authenticate": 'Bearer realm="metrics"' })
          .end("unauthorized: send authorization: Bearer <token>\n");
        return;
      }
      registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: unknown) => response.writeHead(500, { "content-type": "text/plain" }).end(`${String(err)}\n`),
      );
      return;
    }
    response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  };
  const server: Server =
    options.tls === undefined
      ? createServer(handle)
      : createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    setTls: (tls) => {
      if (!(server instanceof HttpsServer)) throw new Error("the metrics endpoint is plain HTTP");
      server.setSecureContext({ cert: tls.cert, key: tls.key });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** True when no token is required, or the request's bearer token hashes to `expected`. */
function authorized(request: IncomingMessage, expected: Buffer | undefined): boolean {
  if (expected === undefined) return true;
  const match = /^bearer +([\x21-\x7e]+) *$/i.exec(request.headers.authorization ?? "");
  if (match === null) return false;
  return timingSafeEqual(
    createHash("sha256")
      .update(match[1] as string, "utf8")
      .digest(),
    expected,
  );
}
