/**
 * Real etcd clusters for tests: 1 or 3 members on free 127.0.0.1 ports, data in a temp dir.
 *
 * etcd comes from Debian's `etcd-server` (scripts/install-etcd.sh, run by CI). When no `etcd`
 * binary is on PATH, `etcdMissing()` returns the reason and suites skip with it.
 *
 * With `tls`, the members serve clients over TLS (`https://` client URLs) with the given server
 * certificate and, with `clientCertAuth`, take only clients whose certificate the CA verifies
 * (etcd's `--client-cert-auth`); `client()` then connects with the CA and the given client
 * certificate. Peers still talk plain HTTP between themselves, on loopback. `enableEtcdAuth`
 * turns on etcd's user authentication; `client()` then logs in as root. `quotaBackendBytes` sets
 * etcd's `--quota-backend-bytes`, so a test can fill etcd (NOSPACE alarm) in seconds.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Etcd3, type IOptions } from "etcd3";
import { freePort } from "./ports.js";
import { tempDir } from "./temp-dir.js";

/** Why etcd tests cannot run here, or undefined when an `etcd` binary is on PATH. */
export function etcdMissing(): string | undefined {
  const probe = spawnSync("etcd", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) {
    return "etcd is not installed (run scripts/install-etcd.sh as root: Debian's etcd-server)";
  }
  return undefined;
}

/** One member process. */
export interface EtcdMember {
  name: string;
  /** host:port of its client URL. */
  endpoint: string;
  child: ChildProcess;
  output: string[];
  exited: boolean;
}

/** PEM files for a TLS cluster (test/support/test-pki.ts makes them). */
export interface EtcdTlsFiles {
  /** CA file of the server certificate; with `clientCertAuth`, also the CA clients must have. */
  caFile: string;
  certFile: string;
  keyFile: string;
  /** etcd's `--client-cert-auth`: a client without a certificate `caFile` verifies is refused. */
  clientCertAuth: boolean;
  /** The client certificate `client()` presents (needed with `clientCertAuth`). */
  client?: { certFile: string; keyFile: string };
}

/** How `startEtcdCluster` sets the members up. */
export interface EtcdClusterOptions {
  tls?: EtcdTlsFiles;
  /** etcd's `--quota-backend-bytes`: past it, etcd raises NOSPACE and refuses writes. */
  quotaBackendBytes?: number;
}

/** A running cluster; `stop()` kills every member and removes the data. */
export interface EtcdCluster {
  members: EtcdMember[];
  /** Every member's client endpoint, host:port. */
  endpoints: string[];
  /** A client to every member, as root once `enableEtcdAuth` ran (closed by `stop`). */
  client(): Etcd3;
  /** The root password once `enableEtcdAuth` ran. */
  rootPassword: string | undefined;
  stop(): Promise<void>;
}

/** The server flags of etcd storage on `endpoints` under `prefix`, with a lease of `leaseTtlSeconds`. */
export function etcdServerFlags(
  endpoints: readonly string[],
  prefix: string,
  leaseTtlSeconds: number,
): string[] {
  return [
    "--storage",
    "etcd",
    "--etcd-endpoints",
    endpoints.join(","),
    "--etcd-prefix",
    prefix,
    "--etcd-lease-ttl-seconds",
    String(leaseTtlSeconds),
  ];
}

/**
 * The flags of one etcd member on loopback: its name, its data directory under `dataDir`, its
 * client URL (`clientScheme`) and peer URL, the whole `initialCluster`, and warnings-only logs.
 */
export function etcdMemberFlags(
  member: { name: string; client: number; peer: number },
  dataDir: string,
  initialCluster: string,
  clientScheme = "http",
): string[] {
  const clientUrl = `${clientScheme}://127.0.0.1:${member.client}`;
  const peerUrl = `http://127.0.0.1:${member.peer}`;
  return [
    `--name=${member.name}`,
    `--data-dir=${join(dataDir, member.name)}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${initialCluster}`,
    "--initial-cluster-state=new",
    "--logger=zap",
    "--log-outputs=stderr",
    "--log-level=warn",
  ];
}

/** Starts `size` members and resolves once the cluster answers a linearizable read. */
export async function startEtcdCluster(size = 1, options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const tls = options.tls;
  const scheme = tls === undefined ? "http" : "https";
  const dir = await tempDir("etcd-test-");
  const specs: { name: string; client: number; peer: number }[] = [];
  for (let i = 0; i < size; i++)
    specs.push({ name: `m${i}`, client: await freePort(), peer: await freePort() });
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peer}`).join(",");
  const members: EtcdMember[] = specs.map((spec) => {
    const child = spawn(
      "etcd",
      [
        ...etcdMemberFlags(spec, dir.path, initialCluster, scheme),
        ...(options.quotaBackendBytes === undefined
          ? []
          : [`--quota-backend-bytes=${options.quotaBackendBytes}`]),
        ...(tls === undefined
          ? []
          : [
              `--cert-file=${tls.certFile}`,
              `--key-file=${tls.keyFile}`,
              `--trusted-ca-file=${tls.caFile}`,
              ...(tls.clientCertAuth ? ["--client-cert-auth"] : []),
            ]),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const member: EtcdMember = {
      name: spec.name,
      endpoint: `127.0.0.1:${spec.client}`,
      child,
      output: [],
      exited: false,
    };
    const keep = (line: string): void => {
      member.output.push(line);
      if (member.output.length > 100) member.output.shift();
    };
    if (child.stdout !== null) createInterface({ input: child.stdout }).on("line", keep);
    if (child.stderr !== null) createInterface({ input: child.stderr }).on("line", keep);
    child.on("exit", () => {
      member.exited = true;
    });
    return member;
  });
  const endpoints = members.map((m) => m.endpoint);
  const clients: Etcd3[] = [];
  const cluster: EtcdCluster = {
    members,
    endpoints,
    rootPassword: undefined,
    client: () => {
      const clientOptions: IOptions = { hosts: endpoints.map((e) => `${scheme}://${e}`) };
      if (tls !== undefined) {
        clientOptions.credentials = {
          rootCertificate: readFileSync(tls.caFile),
          ...(tls.client === undefined
            ? {}
            : { privateKey: readFileSync(tls.client.keyFile), certChain: readFileSync(tls.client.certFile) }),
        };
      }
      if (cluster.rootPassword !== undefined) {
        clientOptions.auth = { username: "root", password: cluster.rootPassword };
      }
      const client = new Etcd3(clientOptions);
      clients.push(client);
      return client;
    },
    stop: async () => {
      for (const client of clients) client.close();
      await Promise.all(
        members.map(
          (m) =>
            new Promise<void>((resolve) => {
              if (m.exited) return resolve();
              m.child.once("exit", () => resolve());
              m.child.kill("SIGKILL");
            }),
        ),
      );
      await dir.remove();
    },
  };
  const probe = cluster.client();
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await probe.get("probe").string();
      return cluster;
    } catch (err) {
      if (Date.now() > deadline || members.some((m) => m.exited)) {
        const output = members.flatMap((m) => m.output.slice(-20).map((l) => `${m.name}: ${l}`));
        await cluster.stop();
        throw new Error(`etcd did not start: ${String(err)}\n${output.join("\n")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * Turns on etcd's user authentication: a `root` user with `rootPassword` and the `root` role
 * (etcd requires both before `auth enable`), then `users`, each with a role of its own that may
 * read and write the keys under its prefix and nothing else. Later `cluster.client()` calls log
 * in as root.
 */
export async function enableEtcdAuth(
  cluster: EtcdCluster,
  rootPassword: string,
  users: { name: string; password: string; prefix: string }[] = [],
): Promise<void> {
  const admin = cluster.client();
  await admin.role("root").create();
  await admin.user("root").create(rootPassword);
  await admin.user("root").addRole("root");
  for (const user of users) {
    const role = await admin.role(`${user.name}-rw`).create();
    await role.grant({ permission: "Readwrite", range: admin.range({ prefix: `${user.prefix}/` }) });
    await admin.user(user.name).create(user.password);
    await admin.user(user.name).addRole(role);
  }
  await admin.auth.authEnable();
  cluster.rootPassword = rootPassword;
}

/** Physical bytes of a blob as EtcdStorage keeps them, or undefined when it has no length key. */
export async function etcdBlobBytes(
  client: Etcd3,
  base: string,
  pageBytes: number,
): Promise<Buffer | undefined> {
  const length = await client.get(`${base}length`).string();
  if (length === null) return undefined;
  const size = Number(length.split(":")[0]);
  if (!Number.isSafeInteger(size)) return Buffer.alloc(0);
  const pages = await client.getAll().prefix(`${base}page/`).buffers();
  const out = Buffer.alloc(size);
  for (const [key, page] of Object.entries(pages)) {
    const index = Number.parseInt(key.slice(-8), 16);
    page.copy(out, index * pageBytes, 0, Math.max(0, Math.min(page.length, size - index * pageBytes)));
  }
  // Then the deltas, in sequence order (their keys sort so): records of u32be offset, u32be
  // length and the bytes.
  const deltas = await client.getAll().prefix(`${base}delta/`).sort("Key", "Ascend").buffers();
  for (const delta of Object.values(deltas)) {
    for (let at = 0; at < delta.length; ) {
      const offset = delta.readUInt32BE(at);
      const length = delta.readUInt32BE(at + 4);
      delta.copy(out, offset, at + 8, at + 8 + length);
      at += 8 + length;
    }
  }
  return out;
}

/** Writes a blob's physical bytes straight into etcd, as a damaged or foreign blob. */
export async function etcdSeedBlob(
  client: Etcd3,
  prefix: string,
  partition: string,
  base: string,
  pageBytes: number,
  bytes: Uint8Array,
): Promise<void> {
  await client.delete().prefix(base);
  for (let i = 0; i * pageBytes < bytes.length; i++) {
    await client
      .put(`${base}page/${i.toString(16).padStart(8, "0")}`)
      .value(Buffer.from(bytes.subarray(i * pageBytes, (i + 1) * pageBytes)));
  }
  await client.put(`${base}length`).value(`${bytes.length}:seed`);
  await client.put(`${prefix}/.partitions/${partition}`).value("");
}
