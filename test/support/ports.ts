/**
 * Ports for tests and benchmarks: one free loopback port, and whether a port can be bound.
 *
 * Invariant: both probes bind 127.0.0.1 only and close what they opened before resolving, so
 * nothing holds the port afterwards (another process may take it in between: callers that bind
 * it later retry on EADDRINUSE).
 */
import { once } from "node:events";
import { createServer } from "node:net";

/** A TCP port on 127.0.0.1 that was free when this resolved. */
export async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise<void>((resolve, reject) => probe.close((err) => (err ? reject(err) : resolve())));
  if (port === 0) throw new Error("could not find a free port");
  return port;
}

/** True when `port` on 127.0.0.1 can be bound now (nothing listens on it). */
export async function isPortFree(port: number): Promise<boolean> {
  const probe = createServer();
  probe.listen(port, "127.0.0.1");
  try {
    await once(probe, "listening");
  } catch {
    return false;
  }
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return true;
}
