/**
 * An in-process server on 127.0.0.1 with free ports and a fresh data directory (or a given
 * storage), plus a client connected to it. `stop()` stops both and removes the directory.
 */
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { parseConfig } from "../../server/config.js";
import { type RunningService, startService } from "../../server/service.js";
import type { Storage } from "../../server/store/storage/storage.js";
import { tempDir } from "./temp-dir.js";

/** A running test server. */
export interface TestServer {
  address: string;
  dataDir: string;
  service: RunningService;
  client: MetadataClient;
  /** Text of /metrics. */
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts a server with `flags` (as on the command line) on free loopback ports. */
export async function startTestServer(flags: string[] = [], storage?: Storage): Promise<TestServer> {
  const dir = await tempDir("metadata-server-");
  let service: RunningService;
  try {
    const config = parseConfig(
      ["--data-dir", dir.path, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", ...flags],
      {},
    );
    service = await startService(config, storage);
  } catch (err) {
    await dir.remove();
    throw err;
  }
  const address = `127.0.0.1:${service.port}`;
  const client = new MetadataClient(address);
  return {
    address,
    dataDir: dir.path,
    service,
    client,
    metrics: async () => {
      const response = await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`);
      return response.text();
    },
    stop: async () => {
      client.close();
      await service.stop();
      await dir.remove();
    },
  };
}
