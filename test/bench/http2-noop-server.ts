/**
 * No-op gRPC Put on bare node:http2 (`node --import tsx test/bench/http2-noop-server.ts`): no
 * gRPC library at all, just the HTTP/2 exchange of a unary call (response headers, one empty
 * length-prefixed message, `grpc-status: 0` trailers). It is the ceiling of any Node.js gRPC
 * server on this machine with the load generator of test/bench/loadgen; next to the grpc-js
 * no-op server (noop-server.ts) it shows what grpc-js itself costs per call. A benchmark fixture,
 * not a gRPC implementation: no deadlines, metadata, compression or message-size checks.
 *
 * Behaviour:
 * - Listens on 127.0.0.1 (port 0 by default, `--port N` to choose) and prints
 *   `http2-noop-server: listening on 127.0.0.1:<port>` on stdout once it accepts connections.
 * - MetadataService/Put reads the whole request, then answers an empty PutResponse; any other
 *   path answers UNIMPLEMENTED (grpc-status 12).
 * - Exits on SIGTERM or SIGINT, and with `--exit-with-stdin` when its stdin closes.
 */
import http2 from "node:http2";
import { parsePort, stopOnSignals } from "./fixture-process.js";

const PUT_PATH = "/commonware.metadata.v1.MetadataService/Put";
/** An empty message: flag byte 0 (not compressed) and a zero length. */
const EMPTY_MESSAGE = Buffer.alloc(5);
/** As many concurrent calls per connection as grpc-js allows by default (no limit). */
const MAX_CONCURRENT_STREAMS = 2 ** 31 - 1;

function main(): void {
  const argv = process.argv.slice(2);
  const server = http2.createServer({ settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS } });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    const known = headers[":path"] === PUT_PATH;
    stream.resume();
    stream.on("end", () => {
      if (stream.destroyed) return;
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () =>
        stream.sendTrailers(
          known ? { "grpc-status": "0" } : { "grpc-status": "12", "grpc-message": "only Put" },
        ),
      );
      if (known) stream.end(EMPTY_MESSAGE);
      else stream.end();
    });
  });
  server.listen(parsePort(argv), "127.0.0.1", () => {
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    process.stdout.write(`http2-noop-server: listening on 127.0.0.1:${port}\n`);
  });
  const stop = (): void => process.exit(0);
  stopOnSignals(argv, stop);
}

main();
