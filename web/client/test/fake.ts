// An in-process fake of a Parley node for unit tests: a WebSocket class
// whose sockets reach FakeNode objects by URL, speaking msgpack frames.
import { decode, encode } from "@msgpack/msgpack";
import type { WebSocketLike } from "../src/client.js";
import type { Event } from "../src/types.js";

export type Req = Record<string, unknown> & { t: string; id: number };

/** One fake node: answers requests with handlers, pushes frames, can refuse or drop sockets. */
export class FakeNode {
  sockets = new Set<FakeSocket>();
  requests: Req[] = [];
  refuse = false;
  handlers: Record<string, (r: Req, s: FakeSocket) => Record<string, unknown> | null | undefined> = {};
  hello: Record<string, unknown> = { t: "hello", v: 1, user: 1, dev: 1, node: "n", idx: 1, ping_ms: 25000, limits: { max_frame: 65536, max_body: 16384, rate: 100, burst: 200, max_reply: 262144, reads: 2 } };
  constructor(public name: string) {
    this.hello.node = name;
  }
  push(frame: Record<string, unknown>): void {
    for (const s of this.sockets) s.deliver(frame);
  }
  dropAll(code = 1001, reason = "going away"): void {
    for (const s of [...this.sockets]) s.serverClose(code, reason);
  }
  count(t: string): number {
    return this.requests.filter((r) => r.t === t).length;
  }
}

export class Network {
  nodes = new Map<string, FakeNode>();
  opened: string[] = [];
  add(url: string, n: FakeNode): FakeNode {
    this.nodes.set(url, n);
    return n;
  }
  /** The WebSocket class to give the client. */
  get WebSocket() {
    const net = this;
    return class extends FakeSocket {
      constructor(url: string) {
        super(net, url);
      }
    };
  }
}

export class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  node: FakeNode | undefined;
  constructor(net: Network, readonly url: string) {
    const base = url.split("?")[0]!;
    net.opened.push(url);
    this.node = net.nodes.get(base);
    setTimeout(() => {
      if (!this.node || this.node.refuse) {
        this.readyState = 3;
        this.onerror?.({});
        this.onclose?.({ code: 1006, reason: "" });
        return;
      }
      this.readyState = 1;
      this.node.sockets.add(this);
      this.onopen?.({});
      this.deliver(this.node.hello);
    }, 1);
  }
  deliver(frame: Record<string, unknown>): void {
    if (this.readyState !== 1) return;
    const bytes = encode(frame);
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data: ab }), 0);
  }
  send(data: Uint8Array): void {
    if (this.readyState !== 1 || !this.node) throw new Error("not open");
    const req = decode(data) as Req;
    this.node.requests.push(req);
    const h = this.node.handlers[req.t];
    const reply = h ? h(req, this) : {};
    if (reply === null) return; // no answer (the test answers later or never)
    if (reply && "error" in reply) this.deliver({ t: "error", id: req.id, code: reply.error, msg: "", ...("retry_ms" in reply ? { retry_ms: reply.retry_ms } : {}) });
    else this.deliver({ t: "ok", id: req.id, ...reply });
  }
  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.node?.sockets.delete(this);
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
  serverClose(code: number, reason: string): void {
    this.close(code, reason);
  }
}

export function msg(conv: number, seq: number, idx: number, body = `m${seq}`, from = 2): Event {
  return { conv, seq, idx, ts: 1, kind: "message", from, body };
}

/** Resolves when cond() is true, polling; rejects after ms. */
export async function until(cond: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A token whose payload names user 1, device 1 (unsigned: only the client reads it). */
export const token = "x." + Buffer.from(JSON.stringify({ sub: "1", dev: 1, exp: 4102444800 })).toString("base64url") + ".y";
