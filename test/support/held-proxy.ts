/**
 * HeldProxy: a TCP proxy on 127.0.0.1 whose two directions can each be held back, for tests of
 * a network that delays one way (a server still reaching etcd whose answers no longer come back).
 *
 * Invariants:
 * - Every connection to `endpoint` is forwarded to the target, bytes in order, each direction on
 *   its own: "up" is what clients send to the target, "down" what the target sends back.
 * - While a direction is held, its bytes (and the end of its stream) are kept, not dropped;
 *   `release` delivers them in order and lets later bytes through. Connections opened while a
 *   direction is held are held the same way.
 * - An error on either side of a connection closes both; `close()` closes every connection and
 *   the listener.
 *
 * Usage:
 *   const proxy = await startHeldProxy("127.0.0.1:2379");
 *   proxy.hold("down"); // requests still reach etcd; its answers wait
 *   proxy.release("down");
 */
import { once } from "node:events";
import { createConnection, createServer, type Socket } from "node:net";

/** A direction of the proxied connections. */
export type Direction = "up" | "down";

/** A running proxy; see the module comment. */
export interface HeldProxy {
  /** host:port clients connect to. */
  endpoint: string;
  /** Keeps the bytes of `direction` until `release`. */
  hold(direction: Direction): void;
  /** Delivers what `direction` kept, in order, and lets later bytes through. */
  release(direction: Direction): void;
  close(): Promise<void>;
}

/** One direction of one connection: bytes from `from` to `to`. */
class Pipe {
  private readonly kept: Buffer[] = [];
  private ended = false;

  constructor(
    private readonly to: Socket,
    private readonly held: () => boolean,
  ) {}

  data(chunk: Buffer): void {
    if (this.held()) this.kept.push(chunk);
    else this.to.write(chunk);
  }

  end(): void {
    this.ended = true;
    if (!this.held()) this.to.end();
  }

  flush(): void {
    for (const chunk of this.kept.splice(0)) this.to.write(chunk);
    if (this.ended) this.to.end();
  }
}

/** Starts a proxy to `target` (host:port) on a free 127.0.0.1 port. */
export async function startHeldProxy(target: string): Promise<HeldProxy> {
  const [host = "127.0.0.1", port = "0"] = target.split(":");
  const held: Record<Direction, boolean> = { up: false, down: false };
  const pipes: Record<Direction, Set<Pipe>> = { up: new Set(), down: new Set() };
  const sockets = new Set<Socket>();
  // Half-open: one side's end is passed on (once released), the other direction goes on.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = createConnection({ host, port: Number(port), allowHalfOpen: true });
    const up = new Pipe(upstream, () => held.up);
    const down = new Pipe(client, () => held.down);
    pipes.up.add(up);
    pipes.down.add(down);
    sockets.add(client).add(upstream);
    client.on("data", (chunk: Buffer) => up.data(chunk));
    client.on("end", () => up.end());
    upstream.on("data", (chunk: Buffer) => down.data(chunk));
    upstream.on("end", () => down.end());
    const fail = (): void => {
      client.destroy();
      upstream.destroy();
    };
    const forget = (): void => {
      if (!client.destroyed || !upstream.destroyed) return;
      pipes.up.delete(up);
      pipes.down.delete(down);
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", fail).on("close", forget);
    upstream.on("error", fail).on("close", forget);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const listening = typeof address === "object" && address !== null ? address.port : 0;
  return {
    endpoint: `127.0.0.1:${listening}`,
    hold: (direction) => {
      held[direction] = true;
    },
    release: (direction) => {
      held[direction] = false;
      for (const pipe of pipes[direction]) pipe.flush();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
