/**
 * Ownership: which server serves the partitions of an etcd prefix, decided by an etcd election.
 *
 * Every server of a prefix campaigns in the election `<prefix>/.owner/election/server/` (etcd's
 * election recipe, through the etcd3 client: a key per candidate, attached to the candidate's
 * lease, the oldest key wins). The winner is the owner; the others are standbys, which wait for
 * the keys before theirs to go, i.e. for the owner's lease to expire (SIGKILL, pause, partition)
 * or be revoked (a graceful stop), and then take over.
 *
 * Invariants:
 * - `fence()` names the owner's campaign key and its create revision. EtcdStorage compares both
 *   in every write transaction, so once that key is gone (lease expired) or replaced, this
 *   server can never commit again, even if it has not noticed yet (paused by SIGSTOP).
 * - The state goes standby -> owner -> lost, never back: a server that lost ownership has
 *   in-memory stores that another owner may have overtaken, so it stops serving and its
 *   process exits (server/serve.ts) for a supervisor to restart it as a fresh standby.
 * - A standby, or a server that lost ownership, gets a fence that fails every compare: only the
 *   owner ever writes.
 * - `refusal()` is undefined only for the owner whose lease etcd confirmed recently enough: a
 *   keepalive sent at local time t and answered with TTL T proves the lease alive until t + T at
 *   etcd's leader, so no other server can own before then. The owner serves calls only until
 *   t + 0.9 T (the rest covers clock-rate differences), measured on the monotonic clock. An
 *   answer goes with a keepalive of its own stream, never with one of a newer stream the etcd
 *   client opened meanwhile (`followKeepalives`). So an owner paused past its lease (SIGSTOP, a
 *   stalled VM), or cut off from etcd, refuses calls from then on, instead of answering reads
 *   from state a new owner may have changed, until etcd confirms the lease again or the loss is
 *   noticed. Keepalives go every T / 3, so a live owner never comes near the bound.
 * - `onLeaseChange` is told when that bound passes for the owner (false) and when etcd confirms
 *   the lease again (true), as `refusal()` changes its answer (a timer fires at the bound), so
 *   that health follows whether calls are refused.
 * - etcd out of space grants no lease: a server that starts (or a standby that would take over)
 *   while etcd's NOSPACE alarm is raised loses at once, with a reason saying so and what to do.
 *   An owner keeps its lease (keepalives are not writes) and its reads.
 *
 * Usage:
 *   const ownership = new Ownership({ client, prefix, leaseTtlSeconds: 10 });
 *   const storage = new EtcdStorage({ client, prefix, fence: () => ownership.fence() });
 *   await ownership.start("10.0.0.1:50051"); // once the server listens
 */
import { performance } from "node:perf_hooks";
import type { Campaign, ElectionObserver, Etcd3, ILeaseKeepAliveResponse } from "etcd3";
import { ETCD_NO_SPACE, ETCD_NO_SPACE_ADVICE, type EtcdFence, isEtcdNoSpace } from "../store/storage/etcd.js";

/** Fraction of a confirmed lease TTL during which the owner serves (see the module comment). */
const LEASE_TRUST = 0.9;

/** The part of etcd3's lease client that opens keepalive streams (see `followLease`). */
interface KeepaliveOpener {
  leaseKeepAlive?: (...args: unknown[]) => Promise<KeepaliveStream>;
}

/** The part of a keepalive stream (a grpc-js duplex stream) that `followKeepalives` uses. */
interface KeepaliveStream {
  write: (...args: unknown[]) => boolean;
  on(event: "data", listener: (response: ILeaseKeepAliveResponse) => void): unknown;
}

/** Where a server stands. */
export type OwnershipState = "standby" | "owner" | "lost";

/** Options of `Ownership.start`. */
export interface OwnershipOptions {
  client: Etcd3;
  /** The storage's etcd prefix (no trailing '/'). */
  prefix: string;
  /** Lease time to live in seconds: how long a dead owner keeps its partitions. */
  leaseTtlSeconds: number;
  /** Told every change of state, and why for `lost`. */
  onChange?: (state: OwnershipState, reason?: string) => void;
  /**
   * Told, while owner, when etcd's last confirmation of the lease no longer covers serving
   * (`false`: calls are refused from now on) and when etcd confirms it again (`true`).
   */
  onLeaseChange?: (confirmed: boolean) => void;
}

/** This server's standing in the election; see the module comment. */
export class Ownership {
  private state: OwnershipState = "standby";
  private currentFence: EtcdFence | undefined;
  private owner: string | undefined;
  private lostReason: string | undefined;

  private identity: string | undefined;
  /** Monotonic time (ms) until which etcd's answer to a keepalive proves the lease alive. */
  private leaseConfirmedUntil = 0;
  /** Fires once `leaseConfirmedUntil` has passed, for `onLeaseChange`. */
  private leaseTimer: NodeJS.Timeout | undefined;
  /** What `onLeaseChange` was last told, inverted (an owner starts confirmed). */
  private leaseLapsed = false;
  /** Called at the next confirmation of the lease. */
  private confirmationWaiters: (() => void)[] = [];
  private campaign: Campaign | undefined;
  private observer: ElectionObserver | undefined;

  /** A standby that has not started campaigning yet: it refuses calls and never writes. */
  constructor(private readonly options: OwnershipOptions) {}

  /**
   * Starts campaigning as `identity` (how clients reach this server, host:port; standbys name the
   * owner by it) and watching the owner. Resolves once both run, not once elected.
   */
  async start(identity: string): Promise<void> {
    const options = this.options;
    this.identity = identity;
    const election = options.client
      .namespace(`${options.prefix}/.owner/`)
      .election("server", options.leaseTtlSeconds);
    const observer = await election.observe();
    this.observer = observer;
    observer.on("change", (leader) => {
      this.owner = leader;
    });
    observer.on("error", () => undefined);
    this.owner = observer.leader();
    const campaign = election.campaign(identity);
    this.campaign = campaign;
    this.followLease(campaign);
    campaign.on("elected", () => {
      this.elected(campaign).catch((err: unknown) =>
        this.lose(`reading the campaign key failed: ${String(err)}`),
      );
    });
    // A full etcd refuses the lease a campaign needs (new server, standby taking over): say so.
    campaign.on("error", (err: Error) =>
      this.lose(
        isEtcdNoSpace(err)
          ? `no lease: etcd out of space (${ETCD_NO_SPACE}): ${ETCD_NO_SPACE_ADVICE}, then restart this server`
          : `lease lost: ${err.message}`,
      ),
    );
  }

  /** Current state. */
  get current(): OwnershipState {
    return this.state;
  }

  /**
   * The ownership key and create revision to compare in every write. A standby or a server that
   * lost ownership gets a fence no key can pass (create revision -1): it never writes.
   */
  fence(): EtcdFence {
    if (this.state === "owner" && this.currentFence !== undefined) return this.currentFence;
    return { key: `${this.options.prefix}/.owner/none`, createRevision: "-1" };
  }

  /**
   * Why this server does not serve, naming the owner when known; undefined for the owner while
   * its lease is confirmed (see the module comment).
   */
  refusal(): string | undefined {
    if (this.state === "owner") {
      const late = performance.now() - this.leaseConfirmedUntil;
      if (late < 0) return undefined;
      return `this server's ownership lease is unconfirmed (etcd last confirmed it ${Math.round(late)} ms too long ago); retry`;
    }
    const owner = this.owner === undefined || this.owner === this.identity ? "unknown" : this.owner;
    if (this.state === "lost") {
      return `this server lost ownership of its partitions (${this.lostReason ?? "unknown"}); the owner is ${owner}`;
    }
    return `this server is a standby; the owner is ${owner}`;
  }

  /** Resigns (revokes the lease, so a standby takes over at once) and stops watching. */
  async stop(): Promise<void> {
    // Not reported through onChange: stopping is not losing.
    this.state = "lost";
    this.lostReason ??= "stopped";
    clearTimeout(this.leaseTimer);
    await this.campaign?.resign().catch(() => undefined);
    await this.observer?.cancel().catch(() => undefined);
  }

  /**
   * Tracks the campaign's lease keepalives, stream by stream (etcd3 1.1.2 keeps the lease in the
   * campaign's private `lease` field and opens each keepalive stream through the lease's private
   * `client`; package.json pins that version, and test/etcd/lease-guard.test.ts fails when an
   * owner answers a read etcd no longer covers). Without them, this server would never serve: it
   * says so.
   */
  private followLease(campaign: Campaign): void {
    const rpc = (campaign as unknown as { lease?: { client?: KeepaliveOpener } }).lease?.client;
    const open = rpc?.leaseKeepAlive;
    if (rpc === undefined || typeof open !== "function") {
      console.error(
        "ownership: the etcd client's campaign lease is not reachable: this server will refuse calls",
      );
      return;
    }
    rpc.leaseKeepAlive = async (...args: unknown[]) => {
      const stream = await open.apply(rpc, args);
      this.followKeepalives(stream);
      return stream;
    };
  }

  /**
   * Confirms the lease from the answers of one keepalive stream. etcd answers the keepalives of a
   * stream in order, so each answer goes with the send time of the oldest unanswered keepalive of
   * the same stream. Per stream, because the etcd client gives up on a stream that went a TTL
   * without an answer and opens another, while answers of the old one may still arrive: matched
   * with a later keepalive of the new one, such an answer would confirm the lease past what etcd
   * said (even past its expiry, when etcd was cut off meanwhile).
   */
  private followKeepalives(stream: KeepaliveStream): void {
    const sent: number[] = [];
    const write = stream.write;
    stream.write = (...args: unknown[]) => {
      // Taken before the request leaves, so never later than etcd's renewal.
      sent.push(performance.now());
      return write.apply(stream, args);
    };
    stream.on("data", (response: ILeaseKeepAliveResponse) => {
      const sentAt = sent.shift();
      const ttlMs = Number(response.TTL) * 1000;
      if (sentAt === undefined || !(ttlMs > 0)) return;
      this.leaseConfirmedUntil = Math.max(this.leaseConfirmedUntil, sentAt + LEASE_TRUST * ttlMs);
      this.followConfirmation();
      const waiters = this.confirmationWaiters;
      this.confirmationWaiters = [];
      for (const wake of waiters) wake();
    });
  }

  /**
   * Tells `onLeaseChange` when the owner's confirmed lease runs out or is confirmed again, and
   * arms a timer for the moment it runs out. Does nothing unless owner.
   */
  private followConfirmation(): void {
    clearTimeout(this.leaseTimer);
    if (this.state !== "owner") return;
    // Same test as refusal(): lapsed once the confirmed bound is not in the future.
    const left = this.leaseConfirmedUntil - performance.now();
    const lapsed = left <= 0;
    if (lapsed !== this.leaseLapsed) {
      this.leaseLapsed = lapsed;
      this.options.onLeaseChange?.(!lapsed);
    }
    if (lapsed) return;
    // Timers run on a millisecond clock and may fire a fraction early: the callback checks again.
    this.leaseTimer = setTimeout(() => this.followConfirmation(), Math.ceil(left) + 1);
    // Never what keeps the process alive.
    this.leaseTimer.unref();
  }

  private async elected(campaign: Campaign): Promise<void> {
    const key = await campaign.getCampaignKey();
    const kv = (await this.options.client.get(key).exec()).kvs[0];
    if (kv === undefined) throw new Error(`campaign key ${key} is gone`);
    // Owner only with a confirmed lease (normally already so: keepalives run since the grant),
    // so that health never reports SERVING for an owner that would refuse calls.
    if (performance.now() >= this.leaseConfirmedUntil) {
      const confirmed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), this.options.leaseTtlSeconds * 1000);
        this.confirmationWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!confirmed) throw new Error("etcd did not confirm the lease within its TTL");
    }
    if (this.state !== "standby") return;
    this.currentFence = { key, createRevision: kv.create_revision };
    this.owner = this.identity;
    this.set("owner");
  }

  /** Records that ownership is gone (a write found the fence broken, or the lease was lost). */
  lose(reason: string): void {
    if (this.state === "lost") return;
    this.set("lost", reason);
  }

  private set(state: OwnershipState, reason?: string): void {
    this.state = state;
    if (reason !== undefined) this.lostReason = reason;
    this.options.onChange?.(state, reason);
    this.followConfirmation();
  }
}
