// Against a real node process: PARLEY_BIN names a parley binary (the Go
// test web/ sets it; or go build -o /tmp/parley ./cmd/parley). Skipped
// without it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { decode } from "@msgpack/msgpack";
import { Client, login, register, ParleyError, memoryStorage, uploadMedia, downloadMedia, type Event, type WebSocketFactory } from "../src/index.js";
import { until } from "./fake.js";

const bin = process.env.PARLEY_BIN;
const skip = bin ? false : "PARLEY_BIN is not set";

interface Proc {
  p: ChildProcess;
  http: string;
  ws: string;
}

function startNode(dir: string, http = "127.0.0.1:0", ws = "127.0.0.1:0", raft = "127.0.0.1:0"): Promise<Proc> {
  const p = spawn(bin!, ["-data", dir, "-http", http, "-ws", ws, "-raft", raft, "-argon2-time", "1", "-argon2-memory", "64", "-log-level", "warn"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let h = "";
    let w = "";
    const rl = createInterface({ input: p.stdout! });
    rl.on("line", (line) => {
      const f = line.trim().split(/\s+/);
      if (f[0] === "HTTP" && f[1] === "API") h = f[2]!;
      if (f[0] === "WebSocket") w = f[1]!;
      if (f[0] === "Raft" && h && w) resolve({ p, http: h, ws: w });
    });
    p.on("exit", (code) => reject(new Error(`parley exited (${code}) before printing its addresses`)));
  });
}

async function ready(http: string): Promise<void> {
  const end = Date.now() + 60000;
  for (;;) {
    try {
      if ((await fetch(http + "/readyz")).ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error("node not ready");
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("against a real node: register, login, chat, receipts, typing, presence, history, devices, a restart", { skip, timeout: 300000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-ts-"));
  let node = await startNode(dir);
  const clients: Client[] = [];
  after(() => {
    // A failed assertion must not leave reconnect timers that keep the
    // test process (and so the runner) alive.
    for (const c of clients) c.close();
    node.p.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  await ready(node.http);

  const ra = await register(node.http, "Alice", "password-a");
  assert.equal(ra.username, "alice");
  await register(node.http, "alice", "password-a"); // idempotent for its own account
  await assert.rejects(register(node.http, "alice", "other-password"), (e: ParleyError) => e.code === "username_taken" && e.status === 409);
  const rb = await register(node.http, "bob", "password-b");
  await assert.rejects(login(node.http, "bob", "wrong-password"), (e: ParleyError) => e.status === 401);
  const la = await login(node.http, "alice", "password-a", "ts-test");
  const lb = await login(node.http, "bob", "password-b", "ts-test", { minIdx: la.idx });

  const mk = (tok: string, minIdx: number) => {
    const c = new Client({ urls: [node.ws], token: tok, WebSocket: WebSocket as unknown as WebSocketFactory, storage: memoryStorage(), minIdx, reconnectBaseMs: 100, reconnectMaxMs: 1000 });
    clients.push(c);
    return c;
  };
  const a = mk(la.token, la.idx);
  const b = mk(lb.token, lb.idx);
  const bEvents: Event[] = [];
  b.on("event", (e) => bEvents.push(e));
  const typing: boolean[] = [];
  b.on("typing", (t) => typing.push(t.on));
  const receipts: number[] = [];
  a.on("receipt", (r) => r.user === rb.user_id && receipts.push(r.read ?? 0));
  await a.start();
  await b.start();
  await until(() => a.isSynced && b.isSynced, 10000, "both synced");

  const dm = await a.openDirect(rb.user_id);
  assert.equal(dm.kind, "direct");
  const pres = await a.watchPresence([rb.user_id]);
  assert.equal(pres[0]!.online, true);

  a.typing(dm.id);
  await until(() => typing.includes(true), 5000, "typing on");
  const acks = await Promise.all([a.send(dm.id, "one"), a.send(dm.id, "two"), a.send(dm.id, "three")]);
  assert.deepEqual(acks.map((x) => x.seq), [2, 3, 4], "sent in order");
  await until(() => bEvents.filter((e) => e.kind === "message").length === 3, 10000, "bob gets three messages");
  assert.deepEqual(bEvents.filter((e) => e.kind === "message").map((e) => e.body), ["one", "two", "three"]);
  b.markRead(dm.id, 4);
  await until(() => receipts.includes(4), 10000, "alice sees bob's read receipt");

  const page = await b.history(dm.id, { dir: "before", limit: 2 });
  assert.deepEqual(page.events.map((e) => e.seq), [4, 3]);
  assert.equal(page.more, true);
  const g = await a.createGroup("team", [rb.user_id]);
  assert.equal(g.kind, "group");
  await until(() => bEvents.some((e) => e.conv === g.id && e.kind === "created"), 10000, "bob sees the group");
  // A file: uploaded over HTTP with progress, sent as an attachment,
  // downloaded by the other member byte for byte.
  const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
  let progressed = 0;
  const up = await uploadMedia(node.http, la.token, new Blob([png]), { name: "dot.png", onProgress: (n) => (progressed = n) });
  assert.equal(up.mime, "image/png");
  assert.equal(progressed, png.length);
  await a.send(dm.id, "", { att: [{ id: up.id }] });
  await until(() => bEvents.some((e) => e.att?.[0]?.id === up.id), 10000, "bob gets the attachment");
  const got = Buffer.from(await (await downloadMedia(node.http, lb.token, up.id, { minIdx: b.minIdx })).arrayBuffer());
  assert.deepEqual(got, png);
  await assert.rejects(uploadMedia(node.http, "bad-token", new Blob([png])), (e: ParleyError) => e.status === 401);

  const devs = await a.devices();
  assert.ok(devs.some((d) => d.current));
  const u = await a.user("bob");
  assert.equal(u.id, rb.user_id);

  // The node dies (kill -9) and comes back on the same data and ports:
  // bob's client reconnects and resumes from its cursor; a send made
  // meanwhile is retried until acked and reaches bob once.
  const cursorBefore = b.cursor;
  assert.ok(cursorBefore > 0);
  node.p.kill("SIGKILL");
  await until(() => !a.hello && !b.hello, 10000, "both disconnected");
  const pending = a.send(dm.id, "while down");
  const hp = node.http.replace("http://", "");
  const wp = node.ws.replace("ws://", "").replace("/v1/ws", "");
  node = await startNode(dir, hp, wp);
  await ready(node.http);
  const ack = await pending;
  assert.equal(ack.seq, 6);
  await until(() => bEvents.some((e) => e.body === "while down"), 20000, "bob gets the message sent while the node was down");
  const bodies = bEvents.filter((e) => e.conv === dm.id && e.kind === "message" && !e.att).map((e) => e.body);
  assert.deepEqual(bodies, ["one", "two", "three", "while down"], "every message once, in order");
  assert.ok(b.cursor >= cursorBefore);

  // A new device of bob's with 120 more groups to learn: its first sync
  // takes more than one page (at most 100 conversations each), passing
  // next and next_conv back; every conversation comes once.
  for (let i = 0; i < 120; i++) await a.createGroup(`g${i}`, [rb.user_id]);
  const lb2 = await login(node.http, "bob", "password-b", "second", { minIdx: a.minIdx });
  const syncs: Record<string, unknown>[] = [];
  class Spy extends (WebSocket as unknown as new (url: string) => WebSocket) {
    override send(data: Uint8Array) {
      const f = decode(data) as Record<string, unknown>;
      if (f.t === "sync") syncs.push(f);
      super.send(data);
    }
  }
  const b2 = new Client({ urls: [node.ws], token: lb2.token, WebSocket: Spy as unknown as WebSocketFactory, minIdx: lb2.idx });
  clients.push(b2);
  const seen = new Map<number, number>();
  b2.on("conv", ({ info }) => seen.set(info.id, (seen.get(info.id) ?? 0) + 1));
  await b2.start();
  await until(() => b2.isSynced, 60000, "the new device synced");
  assert.ok(syncs.length >= 2, `${syncs.length} sync pages`);
  assert.ok(syncs.every((f) => f.since === 0), "every page with the same since");
  assert.ok(syncs.slice(1).every((f) => Number(f.after) > 0), "later pages pass next back");
  assert.equal(seen.size, 122, "both 1:1 and group and the 120 groups");
  assert.ok([...seen.values()].every((n) => n === 1), "each conversation once");
  b2.close();

  await b.revokeDevice(lb.device_id).catch(() => {});
  a.close();
  b.close();
});
