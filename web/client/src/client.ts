// The Parley WebSocket client: connection, failover, resume by sync,
// ordering and dedupe per conversation, the outbox, signals (§2-§5, §8).
import { decode, encode } from "@msgpack/msgpack";
import { afterHint, backoff, jitterAtLeast } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ParleyError, isRetryable } from "./errors.js";
import { memoryStorage, type Storage } from "./storage.js";
import type {
  ConvInfo,
  ConvSync,
  DeviceInfo,
  Event,
  Hello,
  HistoryPage,
  Presence,
  ReadCounts,
  ReadersPage,
  Receipt,
  SendAck,
  ServerFrame,
  TypingSignal,
  UserInfo,
} from "./types.js";

/** The subset of the WebSocket interface the client uses (browser or the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketFactory = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** The nodes' WebSocket URLs (e.g. ws://host:7071/v1/ws); the client fails over among them. */
  urls: string[];
  /** The device token from login. */
  token: string;
  /** Where the cursor, session index and outbox live (default: memory). */
  storage?: Storage;
  /** Prefix of the storage keys (default "parley"); the user and device are appended. */
  storageKey?: string;
  /** The WebSocket class (default: globalThis.WebSocket; in Node pass the `ws` package's). */
  WebSocket?: WebSocketFactory;
  /** Per request, default 15 s. */
  requestTimeoutMs?: number;
  /** First reconnect delay, default 500 ms; doubles to reconnectMaxMs (30 s) with jitter. */
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  /** Wait before retrying a node whose handshake failed, when its Retry-After cannot be read (browsers): default 5 s (§2). */
  handshakeRetryMs?: number;
  /** Report `delivered` for every event from others that reaches the app (default true). */
  autoDelivered?: boolean;
  /** Seeds the session index, e.g. with the login's idx (§8). */
  minIdx?: number;
  /**
   * Called before the cursor is stored, after the events it covers were
   * emitted: an app that caches events persists them here, so a reload
   * never resumes past events it has not kept.
   */
  beforeCursor?: () => Promise<void>;
  /** Gives up retrying an unacknowledged send after this long (default 24 h; the server remembers cmids 7 days). */
  sendMaxAgeMs?: number;
  /**
   * Asked after a round in which every node refused the handshake without
   * saying why (browsers cannot read the status): false means the token is
   * refused for good (the client emits `auth` and stops); true or
   * undefined, keep retrying. E.g. () => checkToken(httpBase, token).
   */
  checkToken?: () => Promise<boolean | undefined>;
  /** Random source for jitter and cmids (tests). */
  random?: () => number;
}

export type ConnState = "connecting" | "connected" | "synced" | "offline" | "closed";

/** A send not yet acknowledged. */
export interface PendingSend {
  cmid: string;
  conv: number;
  body: string;
  reply_to?: number;
  /** Files uploaded with uploadMedia (§9.2). */
  att?: { id: string; name?: string }[];
  /** Unix ms when the app asked. */
  at: number;
}

/** The events a Client emits, by name. */
export interface ClientEvents {
  /** The connection's state: connecting, connected (hello came), synced (caught up), offline (waiting to retry), closed. */
  state: { state: ConnState; url?: string; node?: string; error?: ParleyError; retryInMs?: number };
  hello: Hello;
  /** A conversation event, once, in seq order per conversation. */
  event: Event;
  /** A conversation's info from a sync page (cursors, members, unread); `gone`: the user left or was removed. */
  conv: { info: ConvInfo; gone: boolean };
  /** A sync from the cursor finished: every change up to `cursor` has been emitted. */
  synced: { cursor: number; since: number };
  /** A send entered the outbox (pending). */
  pending: PendingSend;
  /** A send was acknowledged. */
  ack: SendAck;
  /** A send failed for good (a non-retryable error, or too old). */
  sendFailed: { send: PendingSend; error: ParleyError };
  typing: TypingSignal;
  presence: Presence;
  receipt: Receipt;
  readCounts: ReadCounts;
  /** The token was refused or the device revoked: log in again. */
  auth: { reason: string };
}

const expensiveReads = new Set(["history", "sync", "conv.get", "conv.list", "user.get", "read.get", "device.list"]);
const readTypes = new Set([...expensiveReads, "presence.sub", "block.list"]);

interface InFlight {
  resolve: (v: ServerFrame) => void;
  reject: (e: ParleyError) => void;
  timer: ReturnType<typeof setTimeout>;
  expensive: boolean;
}

interface ConvOrder {
  last: number; // the last seq emitted
  pending: Map<number, Event>; // events after a gap, by seq
  filling: boolean;
  fillDone?: Promise<void>;
}

interface Persisted {
  cursor: number;
  minIdx: number;
  last: Record<string, number>;
  outbox: PendingSend[];
}

interface Conn {
  ws: WebSocketLike;
  url: string;
  hello?: Hello;
  open: boolean;
  lastFrameAt: number;
  readsInFlight: number;
  readQueue: (() => void)[];
  openedAt: number;
}

const TYPING_RENEW_MS = 3000; // the server forwards one start per 3 s (§4.4)
const TYPING_IDLE_MS = 5000; // stop after this long without a keystroke

/**
 * A connection to a Parley cluster that survives node failures: it
 * reconnects with backoff and jitter to any of urls, resumes by sync from
 * the stored cursor, emits each event once and in order, and retries
 * unacknowledged sends with their cmid until acked.
 */
export class Client extends Emitter<ClientEvents> {
  private readonly o: Required<Omit<ClientOptions, "beforeCursor" | "minIdx" | "checkToken">> & Pick<ClientOptions, "beforeCursor" | "checkToken">;
  private conn: Conn | null = null;
  private closed = false;
  private started = false;
  private nextId = 1;
  private inflight = new Map<number, InFlight>();
  private waiters: (() => void)[] = [];
  private urlIndex = 0;
  private notBefore = new Map<string, number>();
  private attempt = 0;
  private wake: (() => void) | null = null;
  private userDev = "";

  private state: Persisted = { cursor: 0, minIdx: 0, last: {}, outbox: [] };
  // What is stored of the cursor and the last seqs: only positions the app
  // has kept (beforeCursor), so that a reload never treats as seen an event
  // the app had not stored yet.
  private stored: { cursor: number; last: Record<string, number> } = { cursor: 0, last: {} };
  private order = new Map<number, ConvOrder>();
  private liveBuffered = new WeakSet<Event>(); // events that came live and wait behind a gap
  private syncing = false;
  private synced = false;
  private saving: Promise<void> = Promise.resolve();
  private saveQueued = false;

  private sendBusy = new Set<number>(); // conversations with a send in flight
  private sendRetryAt = new Map<string, number>();
  /** No send goes before this time: a `busy` with `retry_ms` holds them all (PROTOCOL §5). */
  private sendsHeldUntil = 0;
  private sendAttempts = new Map<string, number>();
  private sendTimer: ReturnType<typeof setTimeout> | null = null;
  private sendResolvers = new Map<string, { resolve: (a: SendAck) => void; reject: (e: ParleyError) => void }>();

  private watched: number[] = [];
  private typingOut = new Map<number, { sentAt: number; idle: ReturnType<typeof setTimeout> }>();
  private typingIn = new Map<string, ReturnType<typeof setTimeout>>();
  private receiptsWanted = new Map<number, { delivered: number; read: number }>();
  private receiptsSent = new Map<number, { delivered: number; read: number }>();
  private receiptTimer: ReturnType<typeof setTimeout> | null = null;
  private keepalive: ReturnType<typeof setInterval> | null = null;
  private helloInfo: Hello | null = null;

  constructor(opts: ClientOptions) {
    super();
    if (!opts.urls?.length) throw new Error("parley: ClientOptions.urls is empty");
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!WS) throw new Error("parley: no WebSocket: pass ClientOptions.WebSocket (in Node, the ws package)");
    this.o = {
      urls: opts.urls,
      token: opts.token,
      storage: opts.storage ?? memoryStorage(),
      storageKey: opts.storageKey ?? "parley",
      WebSocket: WS,
      requestTimeoutMs: opts.requestTimeoutMs ?? 15000,
      reconnectBaseMs: opts.reconnectBaseMs ?? 500,
      reconnectMaxMs: opts.reconnectMaxMs ?? 30000,
      handshakeRetryMs: opts.handshakeRetryMs ?? 5000,
      autoDelivered: opts.autoDelivered ?? true,
      sendMaxAgeMs: opts.sendMaxAgeMs ?? 24 * 3600 * 1000,
      random: opts.random ?? Math.random,
      beforeCursor: opts.beforeCursor,
      checkToken: opts.checkToken,
    };
    this.state.minIdx = opts.minIdx ?? 0;
    this.urlIndex = Math.floor(this.o.random() * this.o.urls.length);
    const tok = decodeToken(opts.token);
    if (tok) this.userDev = `${tok.uid}/${tok.did}`;
  }

  // ---- lifecycle ----

  /** Loads the stored state and starts connecting; resolves once loaded. Events are emitted from then on. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const raw = await this.o.storage.get(this.key());
    if (raw) {
      try {
        const s = JSON.parse(raw) as Persisted;
        this.state = {
          cursor: s.cursor || 0,
          minIdx: Math.max(s.minIdx || 0, this.state.minIdx),
          last: s.last || {},
          outbox: s.outbox || [],
        };
      } catch {
        // a corrupt record: start afresh (a full sync)
      }
    }
    this.stored = { cursor: this.state.cursor, last: { ...this.state.last } };
    for (const [conv, last] of Object.entries(this.state.last)) {
      this.order.set(Number(conv), { last, pending: new Map(), filling: false });
    }
    for (const p of this.state.outbox) this.emit("pending", p);
    this.listenNetwork();
    void this.run();
  }

  /** Closes the connection for good; pending requests fail with `closed`. Unacked sends stay stored. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unlistenNetwork();
    this.conn?.ws.close(1000, "client closed");
    this.failInflight(new ParleyError("closed", "client closed"));
    for (const w of this.waiters.splice(0)) w();
    this.wake?.();
    if (this.keepalive) clearInterval(this.keepalive);
    if (this.sendTimer) clearTimeout(this.sendTimer);
    if (this.receiptTimer) clearTimeout(this.receiptTimer);
    for (const t of this.typingOut.values()) clearTimeout(t.idle);
    for (const t of this.typingIn.values()) clearTimeout(t);
    this.emit("state", { state: "closed" });
  }

  /** The hello of the current connection, or null while disconnected. */
  get hello(): Hello | null {
    return this.conn?.open ? this.helloInfo : null;
  }
  /** The stored sync cursor. */
  get cursor(): number {
    return this.state.cursor;
  }
  /** The session index sent as min_idx (§8). */
  get minIdx(): number {
    return this.state.minIdx;
  }
  /** Connected and caught up with the server. */
  get isSynced(): boolean {
    return this.synced && !!this.conn?.open;
  }
  /** Sends waiting for their ack. */
  get outbox(): readonly PendingSend[] {
    return this.state.outbox;
  }

  /** Reconnects now (e.g. when the app regains the network), skipping the backoff wait. */
  reconnectNow(): void {
    this.attempt = 0;
    this.notBefore.clear();
    this.wake?.();
  }

  private key(): string {
    return `${this.o.storageKey}/${this.userDev || "anon"}/state`;
  }

  private onOnline = () => this.reconnectNow();
  private onOffline = () => this.conn?.ws.close(4000, "offline");
  private listenNetwork() {
    const w = globalThis as unknown as { addEventListener?: (t: string, f: () => void) => void };
    w.addEventListener?.("online", this.onOnline);
    w.addEventListener?.("offline", this.onOffline);
  }
  private unlistenNetwork() {
    const w = globalThis as unknown as { removeEventListener?: (t: string, f: () => void) => void };
    w.removeEventListener?.("online", this.onOnline);
    w.removeEventListener?.("offline", this.onOffline);
  }

  // ---- connecting ----

  private async run(): Promise<void> {
    let failedThisRound = 0;
    while (!this.closed) {
      if ((globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false) {
        // The browser knows it has no network: wait for its online event
        // (reconnectNow), checking again now and then.
        this.emit("state", { state: "offline", retryInMs: this.o.reconnectMaxMs });
        await this.pause(this.o.reconnectMaxMs);
        continue;
      }
      const now = Date.now();
      const n = this.o.urls.length;
      let url: string | undefined;
      for (let i = 0; i < n; i++) {
        const u = this.o.urls[(this.urlIndex + i) % n]!;
        if ((this.notBefore.get(u) ?? 0) <= now) {
          url = u;
          this.urlIndex = (this.urlIndex + i + 1) % n;
          break;
        }
      }
      if (!url || failedThisRound >= n) {
        // Every node failed in this round (or waits for its Retry-After).
        if (failedThisRound >= n && this.o.checkToken && (await this.o.checkToken()) === false) {
          this.emit("auth", { reason: "unauthorized" });
          this.close();
          return;
        }
        const earliest = Math.min(...this.o.urls.map((u) => this.notBefore.get(u) ?? 0));
        const wait = Math.max(backoff(this.attempt++, this.o.reconnectBaseMs, this.o.reconnectMaxMs, this.o.random), earliest - now);
        failedThisRound = 0;
        this.emit("state", { state: "offline", retryInMs: wait });
        await this.pause(wait);
        continue;
      }
      this.emit("state", { state: "connecting", url });
      const outcome = await this.connectOnce(url);
      if (this.closed) return;
      if (outcome === "stop") return;
      if (outcome === "served") {
        // It was up for a while: try the next node at once.
        failedThisRound = 0;
        continue;
      }
      // "failed", or "flapped" (closed soon after its hello): a full round
      // of these backs off, so a node that accepts and drops at once is
      // not dialed in a tight loop.
      failedThisRound++;
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  /**
   * One connection's life. "failed": no hello (a refused or broken
   * handshake); "served": it was up and then closed; "stop": the token is
   * refused, do not retry.
   */
  private connectOnce(url: string): Promise<"failed" | "flapped" | "served" | "stop"> {
    return new Promise((resolve) => {
      const sep = url.includes("?") ? "&" : "?";
      let ws: WebSocketLike;
      try {
        ws = new this.o.WebSocket(`${url}${sep}token=${encodeURIComponent(this.o.token)}`);
      } catch {
        this.notBefore.set(url, Date.now() + jitterAtLeast(this.o.handshakeRetryMs, this.o.random));
        return resolve("failed");
      }
      ws.binaryType = "arraybuffer";
      const c: Conn = { ws, url, open: false, lastFrameAt: Date.now(), readsInFlight: 0, readQueue: [], openedAt: 0 };
      this.conn = c;
      let status = 0;
      let retryAfter = 0;
      // Node's ws package tells the status of a refused handshake; browsers cannot.
      const ee = ws as unknown as { on?: (t: string, f: (...a: never[]) => void) => void; terminate?: () => void };
      ee.on?.("unexpected-response", ((_req: unknown, res: { statusCode: number; headers: Record<string, string> }) => {
        status = res.statusCode;
        retryAfter = Number(res.headers["retry-after"]) * 1000 || 0;
        ee.terminate?.();
      }) as never);
      const helloTimer = setTimeout(() => {
        if (!c.open) ws.close(4001, "no hello");
      }, 10000);
      ws.onmessage = (ev) => {
        c.lastFrameAt = Date.now();
        let f: ServerFrame;
        try {
          f = decode(new Uint8Array(ev.data as ArrayBuffer)) as ServerFrame;
        } catch {
          return; // not msgpack: ignore
        }
        if (!f || typeof f !== "object") return;
        if (f.t === "hello" && !c.open) {
          clearTimeout(helloTimer);
          c.open = true;
          c.openedAt = Date.now();
          c.hello = f as unknown as Hello;
          this.helloInfo = c.hello;
          this.notBefore.delete(url);
          this.onHello(c);
          return;
        }
        this.onFrame(c, f);
      };
      ws.onerror = () => {
        // onclose follows
      };
      ws.onclose = (ev) => {
        clearTimeout(helloTimer);
        const wasOpen = c.open;
        c.open = false;
        if (this.conn === c) this.conn = null;
        this.onDisconnect(c);
        if (this.closed) return resolve("served");
        if (status === 401) {
          this.emit("auth", { reason: "unauthorized" });
          this.close();
          return resolve("stop");
        }
        if (ev.code === 1008 && /revoked|expired/.test(ev.reason)) {
          this.emit("auth", { reason: ev.reason });
          this.close();
          return resolve("stop");
        }
        if (!wasOpen) {
          // A refused handshake: honour Retry-After where it can be read,
          // else wait as long as the server's default before this node again.
          const wait = retryAfter || this.o.handshakeRetryMs;
          this.notBefore.set(url, Date.now() + jitterAtLeast(wait, this.o.random));
          return resolve("failed");
        }
        if (ev.code === 1008 || ev.code === 1013) {
          this.notBefore.set(url, Date.now() + jitterAtLeast(this.o.handshakeRetryMs, this.o.random));
        }
        resolve(Date.now() - c.openedAt < 5000 && ev.code !== 4000 ? "flapped" : "served");
      };
    });
  }

  private onHello(c: Conn): void {
    this.emit("hello", c.hello!);
    this.emit("state", { state: "connected", url: c.url, node: c.hello!.node });
    for (const w of this.waiters.splice(0)) w();
    const pingMs = c.hello!.ping_ms || 25000;
    if (this.keepalive) clearInterval(this.keepalive);
    // Browsers cannot send WebSocket pings: a ping request after ping_ms
    // of silence proves the connection alive, or closes it (§2).
    this.keepalive = setInterval(() => {
      if (this.conn !== c || !c.open) return;
      if (Date.now() - c.lastFrameAt < pingMs) return;
      this.request("ping", {}, { timeoutMs: 10000 }).catch(() => {
        if (this.conn === c) c.ws.close(4002, "ping timeout");
      });
    }, Math.min(pingMs, 5000));
    if (this.watched.length) this.request<{ presence?: Presence[] }>("presence.sub", { users: this.watched }).then((r) => this.onPresenceList(r), () => {});
    for (const conv of this.receiptsWanted.keys()) this.receiptsSent.delete(conv);
    this.flushReceipts();
    this.pumpSends();
    void this.resync(c);
  }

  private onDisconnect(c: Conn): void {
    this.synced = false;
    this.syncing = false;
    if (this.keepalive) {
      clearInterval(this.keepalive);
      this.keepalive = null;
    }
    this.failInflight(new ParleyError("disconnected", `connection to ${c.url} lost`));
    this.sendBusy.clear();
    // Events buffered after a gap come again by sync: the cursor never passed them.
    for (const st of this.order.values()) {
      st.pending.clear();
      st.filling = false;
    }
    for (const [k, t] of this.typingIn) {
      clearTimeout(t);
      const [conv, user] = k.split("/").map(Number);
      this.emit("typing", { conv: conv!, user: user!, on: false });
    }
    this.typingIn.clear();
  }

  private failInflight(err: ParleyError): void {
    for (const [id, f] of this.inflight) {
      clearTimeout(f.timer);
      this.inflight.delete(id);
      f.reject(err);
    }
  }

  // ---- frames ----

  private onFrame(c: Conn, f: ServerFrame): void {
    switch (f.t) {
      case "ok":
      case "error": {
        const p = f.id ? this.inflight.get(f.id) : undefined;
        if (!p) return;
        this.inflight.delete(f.id!);
        clearTimeout(p.timer);
        if (p.expensive) this.releaseRead(c);
        if (f.t === "ok") {
          if (typeof f.idx === "number") this.observe(f.idx);
          p.resolve(f);
        } else p.reject(new ParleyError(f.code ?? "internal", f.msg ?? "", 0, typeof f.retry_ms === "number" ? f.retry_ms : 0));
        return;
      }
      case "ev": {
        const ev = f as unknown as Event;
        this.observe(ev.idx);
        this.ingest(ev, true);
        return;
      }
      case "typing":
        return this.onTyping(f as unknown as TypingSignal);
      case "presence":
        return this.emit("presence", f as unknown as Presence);
      case "receipt": {
        const r = f as unknown as Receipt;
        if (r.idx) this.observe(r.idx);
        return this.emit("receipt", r);
      }
      case "read_counts":
        return this.emit("readCounts", f as unknown as ReadCounts);
      default:
        return; // a later version's frame (§3)
    }
  }

  private observe(idx: number | undefined): void {
    if (idx && idx > this.state.minIdx) {
      this.state.minIdx = idx;
      this.save();
    }
  }

  // ---- requests ----

  /**
   * Sends one request and resolves with its ok reply. Waits for a
   * connection (within the timeout) when there is none. Reads carry the
   * session index as min_idx; expensive reads are queued so that no more
   * than hello's `reads` are in flight (no busy answers from the client's
   * own concurrency). `busy` and `rate_limited` are retried a few times.
   */
  async request<T = ServerFrame>(t: string, fields: Record<string, unknown> = {}, opts: { timeoutMs?: number } = {}): Promise<T> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.o.requestTimeoutMs);
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.requestOnce(t, fields, deadline)) as T;
      } catch (err) {
        const e = err as ParleyError;
        const again = (e.code === "busy" || e.code === "rate_limited") && attempt < 4;
        const wait = afterHint(e.retryAfterMs, backoff(attempt, 200, 2000, this.o.random), this.o.random);
        if (!again || Date.now() + wait >= deadline) throw e;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  private async requestOnce(t: string, fields: Record<string, unknown>, deadline: number): Promise<ServerFrame> {
    if (this.closed) throw new ParleyError("closed", "client closed");
    if (!this.started) throw new ParleyError("closed", "call start() first");
    const c = await this.connected(deadline);
    const expensive = expensiveReads.has(t);
    if (expensive) await this.acquireRead(c, deadline);
    if (this.conn !== c || !c.open) {
      if (expensive) this.releaseRead(c);
      throw new ParleyError("disconnected", "connection lost");
    }
    const id = this.nextId++;
    const frame: Record<string, unknown> = { t, id };
    for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) frame[k] = v;
    if (readTypes.has(t) && this.state.minIdx) frame.min_idx = this.state.minIdx;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.inflight.delete(id);
          if (expensive) this.releaseRead(c);
          reject(new ParleyError("timeout", `no reply to ${t} in time`));
        },
        Math.max(1, deadline - Date.now()),
      );
      this.inflight.set(id, { resolve, reject, timer, expensive });
      try {
        c.ws.send(encode(frame));
      } catch (err) {
        clearTimeout(timer);
        this.inflight.delete(id);
        if (expensive) this.releaseRead(c);
        reject(new ParleyError("disconnected", String(err)));
      }
    });
  }

  private connected(deadline: number): Promise<Conn> {
    const c = this.conn;
    if (c?.open) return Promise.resolve(c);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        reject(new ParleyError("disconnected", "not connected"));
      }, Math.max(1, deadline - Date.now()));
      const wake = () => {
        clearTimeout(timer);
        if (this.closed) return reject(new ParleyError("closed", "client closed"));
        if (this.conn?.open) resolve(this.conn);
        else this.waiters.push(wake);
      };
      this.waiters.push(wake);
    });
  }

  private acquireRead(c: Conn, deadline: number): Promise<void> {
    const max = Math.max(1, c.hello?.limits?.reads ?? 2);
    if (c.readsInFlight < max) {
      c.readsInFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        c.readQueue = c.readQueue.filter((f) => f !== go);
        reject(new ParleyError("timeout", "no read slot in time"));
      }, Math.max(1, deadline - Date.now()));
      const go = () => {
        clearTimeout(timer);
        c.readsInFlight++;
        resolve();
      };
      c.readQueue.push(go);
    });
  }

  private releaseRead(c: Conn): void {
    c.readsInFlight--;
    const next = c.readQueue.shift();
    if (next) next();
  }

  // ---- sync, order, dedupe (§5) ----

  private async resync(c: Conn): Promise<void> {
    if (this.syncing) return;
    this.syncing = true;
    const since = this.state.cursor;
    let after = 0;
    let afterConv = 0;
    try {
      for (;;) {
        const rep = await this.request<{ changes?: ConvSync[]; more?: boolean; next?: number; next_conv?: number }>("sync", {
          since,
          after: after || undefined,
          after_conv: afterConv || undefined,
          limit: 100,
        });
        if (this.conn !== c) return;
        for (const ch of rep.changes ?? []) {
          const conv = ch.info.id;
          for (const ev of ch.events ?? []) {
            ev.conv ||= conv;
            this.observe(ev.idx);
            this.ingest(ev, false);
          }
          this.emit("conv", { info: ch.info, gone: !!ch.gone });
          if (ch.more && !ch.gone) await this.fill(conv, Infinity);
        }
        if (!rep.more) {
          const next = rep.next ?? 0;
          if (this.conn !== c) return;
          await this.storeCursor(next);
          this.synced = true;
          this.attempt = 0; // a connection that syncs is a working one
          this.emit("synced", { cursor: this.state.cursor, since });
          this.emit("state", { state: "synced", url: c.url, node: c.hello?.node });
          return;
        }
        const n = rep.next ?? 0;
        const nc = rep.next_conv ?? 0;
        // A page position only advances (§4.2); nc 0 means "all of n".
        if (n < after || (n === after && (afterConv === 0 || (nc !== 0 && nc <= afterConv)))) {
          throw new ParleyError("internal", `sync page did not advance (${after}/${afterConv} to ${n}/${nc})`);
        }
        after = n;
        afterConv = nc;
      }
    } catch (err) {
      // The connection dropped (the next one syncs again) or a request
      // failed: close so that the reconnect resyncs from the cursor.
      if (this.conn === c && c.open) c.ws.close(4003, "sync failed: " + String(err).slice(0, 80));
    } finally {
      this.syncing = false;
    }
  }

  private async storeCursor(next: number): Promise<void> {
    if (next > this.state.cursor) this.state.cursor = next;
    await this.persistPosition();
  }

  /** Stores the cursor and last seqs as they are now, once the app has kept the events they cover. */
  private persisting: Promise<void> = Promise.resolve();
  private persistPosition(): Promise<void> {
    return (this.persisting = this.persisting.then(() => this.persistPositionNow()));
  }
  private async persistPositionNow(): Promise<void> {
    const snap = { cursor: this.state.cursor, last: { ...this.state.last } };
    if (this.o.beforeCursor) await this.o.beforeCursor();
    if (snap.cursor >= this.stored.cursor) {
      this.stored = snap;
      this.save();
    }
  }

  /** Takes an event from sync, history or live: emits it once, in seq order. */
  private ingest(ev: Event, live: boolean): void {
    let st = this.order.get(ev.conv);
    if (!st) {
      // A conversation new to this device: it starts here.
      st = { last: ev.seq - 1, pending: new Map(), filling: false };
      this.order.set(ev.conv, st);
    }
    if (ev.seq <= st.last) return; // a duplicate (§5.1)
    if (ev.seq > st.last + 1) {
      if (live) this.liveBuffered.add(ev);
      st.pending.set(ev.seq, ev);
      void this.fill(ev.conv, ev.seq);
      return;
    }
    this.deliver(st, ev);
    let top = live ? ev.idx : 0;
    while (st.pending.size) {
      const nx = st.pending.get(st.last + 1);
      if (!nx) {
        for (const s of st.pending.keys()) if (s <= st.last) st.pending.delete(s);
        break;
      }
      st.pending.delete(nx.seq);
      if (this.liveBuffered.has(nx)) top = Math.max(top, nx.idx);
      this.deliver(st, nx);
    }
    if (top && this.synced && !this.syncing && !this.anyGap()) {
      // A connection carries events in log order: everything below this
      // live event's idx has come (§5.3).
      if (top - 1 > this.state.cursor) {
        this.state.cursor = top - 1;
        this.saveCursorSoon();
      }
    }
  }

  private deliver(st: ConvOrder, ev: Event): void {
    st.last = ev.seq;
    this.state.last[ev.conv] = ev.seq;
    this.emit("event", ev);
    if (this.o.autoDelivered && ev.from !== this.helloInfo?.user && ev.kind === "message") {
      this.want(ev.conv, ev.seq, 0);
    }
  }

  private anyGap(): boolean {
    for (const st of this.order.values()) if (st.pending.size || st.filling) return true;
    return false;
  }

  /** Pages history after the last seq emitted until seq target-1 is emitted (§5.2). */
  private async fill(conv: number, target: number): Promise<void> {
    const st: ConvOrder = this.order.get(conv) ?? { last: 0, pending: new Map(), filling: false };
    this.order.set(conv, st);
    while (st.filling) await st.fillDone;
    if (st.last + 1 >= target) return;
    st.filling = true;
    let finished!: () => void;
    st.fillDone = new Promise<void>((r) => (finished = r));
    let broken = false;
    try {
      while (st.last + 1 < target) {
        const before = st.last;
        const rep = await this.request<HistoryPage>("history", { conv, seq: st.last, dir: "after", limit: 200 });
        for (const ev of rep.events ?? []) {
          ev.conv ||= conv;
          this.observe(ev.idx);
          if (ev.seq === st.last + 1) this.deliver(st, ev);
        }
        if (!rep.more || st.last === before) break;
      }
    } catch (err) {
      if (isRetryable(err)) broken = true;
      else if (st.pending.size) {
        // Refused for good (e.g. removed meanwhile): waiting would stall
        // the conversation; go on past the gap.
        st.last = Math.max(st.last, Math.min(...st.pending.keys()) - 1);
      }
    } finally {
      st.filling = false;
      finished();
    }
    for (const k of [...st.pending.keys()]) if (k <= st.last) st.pending.delete(k);
    const nx = st.pending.get(st.last + 1);
    if (nx) {
      st.pending.delete(nx.seq);
      this.ingest(nx, this.liveBuffered.has(nx));
    }
    if (broken && st.pending.size && this.conn?.open) {
      // Resync from the cursor, which has not passed the gap.
      this.conn.ws.close(4003, "gap fill failed");
    }
  }

  // ---- persistence ----

  private cursorTimer: ReturnType<typeof setTimeout> | null = null;
  private saveCursorSoon(): void {
    if (this.cursorTimer) return;
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = null;
      void this.persistPosition();
    }, 300);
  }

  /** Writes the state, coalescing writes while one is in progress. */
  private save(): void {
    if (this.saveQueued) return;
    this.saveQueued = true;
    this.saving = this.saving.then(async () => {
      this.saveQueued = false;
      try {
        const { minIdx, outbox } = this.state;
        await this.o.storage.set(this.key(), JSON.stringify({ cursor: this.stored.cursor, last: this.stored.last, minIdx, outbox }));
      } catch {
        // a full or broken storage: the client still works, without resume
      }
    });
  }

  /** Resolves when every state change so far is stored. */
  async flush(): Promise<void> {
    await this.persisting;
    await this.saving;
  }

  // ---- sending (§4.2, §5.4) ----

  /**
   * Queues a message and resolves with its ack. It is stored and retried
   * with the same cmid across reconnects and reloads until acknowledged;
   * the promise rejects only for a non-retryable error. The cmid is
   * available at once through the `pending` event.
   */
  send(conv: number, body: string, opts: { replyTo?: number; cmid?: string; att?: { id: string; name?: string }[] } = {}): Promise<SendAck> {
    const p: PendingSend = { cmid: opts.cmid ?? newCmid(this.o.random), conv, body, at: Date.now() };
    if (opts.replyTo) p.reply_to = opts.replyTo;
    if (opts.att?.length) p.att = opts.att;
    this.state.outbox.push(p);
    this.save();
    this.emit("pending", p);
    this.stopTyping(conv);
    const done = new Promise<SendAck>((resolve, reject) => this.sendResolvers.set(p.cmid, { resolve, reject }));
    this.pumpSends();
    return done;
  }

  /** Sends the oldest unsent message of each conversation (one in flight per conversation, so order is kept). */
  private pumpSends(): void {
    if (!this.conn?.open || this.closed) return;
    const now = Date.now();
    let soonest = Infinity;
    const seen = new Set<number>();
    // After a busy refusal with retry_ms, every conversation's sends wait
    // (PROTOCOL §5): the node takes fewer writes than it is sent. One send
    // in flight per conversation already clocks them once the wait ends.
    const held = now < this.sendsHeldUntil;
    if (held && this.state.outbox.length > 0) soonest = this.sendsHeldUntil;
    for (const p of held ? [] : [...this.state.outbox]) {
      if (seen.has(p.conv)) continue;
      seen.add(p.conv);
      if (this.sendBusy.has(p.conv)) continue;
      if (now - p.at > this.o.sendMaxAgeMs) {
        this.dropSend(p, new ParleyError("timeout", "not acknowledged in time; gave up"));
        continue;
      }
      const at = this.sendRetryAt.get(p.cmid) ?? 0;
      if (at > now) {
        soonest = Math.min(soonest, at);
        continue;
      }
      this.sendBusy.add(p.conv);
      const fields: Record<string, unknown> = { conv: p.conv, cmid: p.cmid, body: p.body || undefined, reply_to: p.reply_to, att: p.att };
      this.requestOnce("send", fields, Date.now() + this.o.requestTimeoutMs).then(
        (rep) => {
          this.sendBusy.delete(p.conv);
          const ack = rep as unknown as SendAck;
          this.removeSend(p);
          this.emit("ack", ack);
          this.sendResolvers.get(p.cmid)?.resolve(ack);
          this.sendResolvers.delete(p.cmid);
          this.pumpSends();
        },
        (err: ParleyError) => {
          this.sendBusy.delete(p.conv);
          if (!isRetryable(err) && err.code !== "closed") {
            this.dropSend(p, err);
          } else if (err.code === "disconnected") {
            // The next connection's hello sends it again at once.
          } else {
            const n = this.sendAttempts.get(p.cmid) ?? 0;
            this.sendAttempts.set(p.cmid, n + 1);
            const base = err.code === "storage_full" ? 5000 : 500;
            const max = err.code === "storage_full" ? 300000 : 30000;
            const at = Date.now() + afterHint(err.retryAfterMs, backoff(n, base, max, this.o.random), this.o.random);
            this.sendRetryAt.set(p.cmid, at);
            if (err.code === "busy" && err.retryAfterMs > 0) this.sendsHeldUntil = Math.max(this.sendsHeldUntil, at);
          }
          this.pumpSends();
        },
      );
    }
    if (soonest !== Infinity) {
      if (this.sendTimer) clearTimeout(this.sendTimer);
      this.sendTimer = setTimeout(() => {
        this.sendTimer = null;
        this.pumpSends();
      }, soonest - now);
    }
  }

  private removeSend(p: PendingSend): void {
    this.state.outbox = this.state.outbox.filter((x) => x.cmid !== p.cmid);
    this.sendRetryAt.delete(p.cmid);
    this.sendAttempts.delete(p.cmid);
    this.save();
  }

  private dropSend(p: PendingSend, error: ParleyError): void {
    this.removeSend(p);
    this.emit("sendFailed", { send: p, error });
    this.sendResolvers.get(p.cmid)?.reject(error);
    this.sendResolvers.delete(p.cmid);
  }

  /** Gives up an unacknowledged send (it may still have been stored by the server). */
  cancelSend(cmid: string): void {
    const p = this.state.outbox.find((x) => x.cmid === cmid);
    if (p) this.dropSend(p, new ParleyError("closed", "cancelled"));
  }

  // ---- typing (§4.4) ----

  /**
   * Call on every keystroke in conv: sends `typing on` at most once per 3 s
   * (the server's throttle; the renewal keeps the indicator up) and `off`
   * after 5 s without a keystroke, or on send.
   */
  typing(conv: number): void {
    const now = Date.now();
    const cur = this.typingOut.get(conv);
    if (cur) clearTimeout(cur.idle);
    const idle = setTimeout(() => this.stopTyping(conv), TYPING_IDLE_MS);
    if (!cur || now - cur.sentAt >= TYPING_RENEW_MS) {
      this.typingOut.set(conv, { sentAt: now, idle });
      if (this.conn?.open) this.request("typing", { conv, on: true }).catch(() => {});
    } else {
      cur.idle = idle;
    }
  }

  /** The user stopped typing in conv (sent only if a start was). */
  stopTyping(conv: number): void {
    const cur = this.typingOut.get(conv);
    if (!cur) return;
    clearTimeout(cur.idle);
    this.typingOut.delete(conv);
    if (this.conn?.open) this.request("typing", { conv, on: false }).catch(() => {});
  }

  private onTyping(s: TypingSignal): void {
    const k = `${s.conv}/${s.user}`;
    const t = this.typingIn.get(k);
    if (t) clearTimeout(t);
    this.typingIn.delete(k);
    if (s.on) {
      // Hide it after ttl_ms without a renewal, as the protocol asks.
      this.typingIn.set(
        k,
        setTimeout(() => {
          this.typingIn.delete(k);
          this.emit("typing", { conv: s.conv, user: s.user, on: false });
        }, s.ttl_ms || 6000),
      );
    }
    this.emit("typing", s);
  }

  // ---- presence (§4.4) ----

  /** Watches these users (at most 256; replaces the previous list; kept across reconnects). */
  async watchPresence(users: number[]): Promise<Presence[]> {
    this.watched = [...new Set(users)].slice(0, 256);
    const r = await this.request<{ presence?: Presence[] }>("presence.sub", { users: this.watched });
    this.onPresenceList(r);
    return r.presence ?? [];
  }

  private onPresenceList(r: { presence?: Presence[] }): void {
    for (const p of r.presence ?? []) this.emit("presence", p);
  }

  // ---- receipts (§4.5) ----

  /** Reports conv read up to seq (coalesced; sent when connected). */
  markRead(conv: number, seq: number): void {
    this.want(conv, seq, seq);
  }

  /** Reports conv delivered up to seq. */
  markDelivered(conv: number, seq: number): void {
    this.want(conv, seq, 0);
  }

  private want(conv: number, delivered: number, read: number): void {
    const w = this.receiptsWanted.get(conv) ?? { delivered: 0, read: 0 };
    w.delivered = Math.max(w.delivered, delivered, read);
    w.read = Math.max(w.read, read);
    this.receiptsWanted.set(conv, w);
    if (!this.receiptTimer) this.receiptTimer = setTimeout(() => this.flushReceipts(), 100);
  }

  private flushReceipts(): void {
    this.receiptTimer = null;
    if (!this.conn?.open) return;
    for (const [conv, w] of this.receiptsWanted) {
      const s = this.receiptsSent.get(conv) ?? { delivered: 0, read: 0 };
      const d = w.delivered > s.delivered ? w.delivered : 0;
      const r = w.read > s.read ? w.read : 0;
      if (!d && !r) continue;
      this.receiptsSent.set(conv, { delivered: Math.max(s.delivered, w.delivered), read: Math.max(s.read, w.read) });
      this.request("receipt", { conv, delivered: d || undefined, read: r || undefined }).catch((err: ParleyError) => {
        if (isRetryable(err)) {
          this.receiptsSent.delete(conv);
          if (!this.receiptTimer) this.receiptTimer = setTimeout(() => this.flushReceipts(), 2000);
        }
      });
    }
  }

  // ---- conversations, history, users, devices (§4.2) ----

  async openDirect(user: number): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("dm.open", { user })).info;
  }
  async createGroup(name: string, users: number[]): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("group.create", { name, users })).info;
  }
  async addMembers(conv: number, users: number[]): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("group.add", { conv, users })).info;
  }
  async removeMember(conv: number, user: number): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("group.remove", { conv, user })).info;
  }
  async leave(conv: number): Promise<void> {
    await this.request("group.leave", { conv });
  }
  async setAdmin(conv: number, user: number, admin: boolean): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("group.admin", { conv, user, admin })).info;
  }
  async rename(conv: number, name: string): Promise<ConvInfo> {
    return (await this.request<{ info: ConvInfo }>("group.rename", { conv, name })).info;
  }
  /** A conversation with all its members (pages conv.get). */
  async conversation(conv: number): Promise<ConvInfo> {
    let r = await this.request<{ info: ConvInfo; more?: boolean; next?: number }>("conv.get", { conv });
    const info = r.info;
    while (r.more) {
      r = await this.request("conv.get", { conv, after: r.next });
      info.members = [...(info.members ?? []), ...(r.info.members ?? [])];
      info.admins = [...new Set([...(info.admins ?? []), ...(r.info.admins ?? [])])];
    }
    return info;
  }
  /** The user's conversations, most recently active first, page by page. */
  async *conversations(pageSize = 100): AsyncGenerator<ConvInfo[]> {
    let after: number | undefined;
    let afterConv: number | undefined;
    for (;;) {
      const r = await this.request<{ convs?: ConvInfo[]; more?: boolean; next?: number; next_conv?: number }>("conv.list", {
        limit: pageSize,
        after,
        after_conv: afterConv,
      });
      yield r.convs ?? [];
      if (!r.more) return;
      after = r.next;
      afterConv = r.next_conv;
    }
  }
  /**
   * A page of history: dir "before" (newest first, below seq or from the
   * newest), or "after" (oldest first). The events are returned, not
   * emitted: the app merges them by seq with what it shows.
   */
  async history(conv: number, opts: { seq?: number; dir?: "before" | "after"; limit?: number } = {}): Promise<HistoryPage> {
    const r = await this.request<HistoryPage>("history", { conv, seq: opts.seq, dir: opts.dir, limit: opts.limit });
    for (const ev of r.events ?? []) ev.conv ||= conv;
    return { events: r.events ?? [], more: !!r.more };
  }
  async user(idOrName: number | string): Promise<UserInfo> {
    const f = typeof idOrName === "number" ? { user: idOrName } : { name: idOrName };
    return (await this.request<{ user: UserInfo }>("user.get", f)).user;
  }
  /** Who read conv's message seq, a page at a time. */
  readers(conv: number, seq: number, after?: number, limit?: number): Promise<ReadersPage> {
    return this.request<ReadersPage>("read.get", { conv, seq, after, limit });
  }
  /** All the user's devices (pages device.list). */
  async devices(): Promise<DeviceInfo[]> {
    const out: DeviceInfo[] = [];
    let after: number | undefined;
    for (;;) {
      const r = await this.request<{ devices?: DeviceInfo[]; more?: boolean; next?: number }>("device.list", { after, limit: 500 });
      out.push(...(r.devices ?? []));
      if (!r.more) return out;
      after = r.next;
    }
  }
  async revokeDevice(dev: number): Promise<void> {
    await this.request("device.revoke", { dev });
  }
  async setPrivacy(hideLastSeen: boolean, groupAdd?: "everyone" | "contacts" | "nobody"): Promise<void> {
    await this.request("privacy.set", { hide_last_seen: hideLastSeen, group_add: groupAdd });
  }
  async block(user: number): Promise<void> {
    await this.request("block", { user });
  }
  async unblock(user: number): Promise<void> {
    await this.request("unblock", { user });
  }
  async setNotify(preview: boolean, dnd: boolean): Promise<void> {
    await this.request("notify.set", { preview, dnd });
  }
  async mute(conv: number, until: number): Promise<void> {
    await this.request("conv.mute", { conv, until });
  }
  /** Registers this device's push target (§4.7). */
  async setPush(target: { provider: "webpush"; endpoint: string; p256dh: string; auth: string } | { provider: "fcm" | "apns" | "webhook"; token: string }): Promise<void> {
    await this.request("push.set", target);
  }
  /** Deletes a message for everyone (its sender, or a group admin); resolves with the seq of the `deleted` event. */
  async deleteMessage(conv: number, seq: number): Promise<number> {
    return (await this.request<{ seq: number }>("msg.delete", { conv, seq })).seq;
  }
  async clearPush(): Promise<void> {
    await this.request("push.clear", {});
  }
}

/** A cmid: 16 random bytes, base64url (22 characters; the server allows 64). */
export function newCmid(random: () => number = Math.random): string {
  const b = new Uint8Array(16);
  const cr = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (cr?.getRandomValues && random === Math.random) cr.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(random() * 256);
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The user and device a token names (its payload is not verified here; the server does). */
export function decodeToken(token: string): { uid: number; did: number; exp: number } | null {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const p = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as Record<string, unknown>;
    const num = (v: unknown) => (typeof v === "number" ? v : typeof v === "string" ? Number(v) : 0);
    return { uid: num(p.uid ?? p.user ?? p.sub), did: num(p.did ?? p.dev ?? p.device), exp: num(p.exp) };
  } catch {
    return null;
  }
}
