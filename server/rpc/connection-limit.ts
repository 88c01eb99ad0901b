/**
 * Connection limit: at most `max` HTTP/2 connections open at once on a grpc-js server; one more is
 * closed as soon as it is established (an HTTP/2 GOAWAY, then the socket), so a client that opens
 * connections without end cannot exhaust the server's file descriptors or memory. Clients see
 * UNAVAILABLE and retry with their backoff.
 *
 * grpc-js has no setting for this, and its Server does not expose its HTTP/2 servers; this module
 * reaches them through grpc-js's `http2Servers` map (grpc-js is pinned; a test proves the limit),
 * and reports `false` when that map is not there, so that the caller can say the limit is off.
 *
 * Invariants:
 * - `open` counts sessions admitted and not yet closed; it never exceeds `max`.
 * - A refused session is counted in `refused` and never reaches a handler.
 */
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";

/** The connection counts of a limited server. */
export interface ConnectionCounts {
  open: number;
  refused: number;
}

/**
 * Applies the limit to every HTTP/2 server `server` is bound to (call after `bindAsync`). Returns
 * the live counts, or undefined when grpc-js's internals are not as expected (no limit applied).
 */
export function limitConnections(server: grpc.Server, max: number): ConnectionCounts | undefined {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return undefined;
  const counts: ConnectionCounts = { open: 0, refused: 0 };
  for (const http2Server of servers.keys() as IterableIterator<http2.Http2Server>) {
    // After grpc-js's own listener has registered the session (its close handler cleans up);
    // the GOAWAY and the close follow in the same turn, before any request is read.
    http2Server.on("session", (session: http2.ServerHttp2Session) => {
      if (counts.open >= max) {
        counts.refused++;
        session.goaway();
        session.destroy();
        return;
      }
      counts.open++;
      session.once("close", () => {
        counts.open--;
      });
    });
  }
  return counts;
}
