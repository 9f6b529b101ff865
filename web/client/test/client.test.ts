import { test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../src/client.js";
import { afterHint, backoff } from "../src/backoff.js";
import { memoryStorage } from "../src/storage.js";
import { ParleyError, isRetryable } from "../src/errors.js";
import { resolveWS } from "../src/accounts.js";
import { vapidKeyBytes, webPushTarget } from "../src/webpush.js";
import type { Event } from "../src/types.js";
import { FakeNode, Network, msg, token, until } from "./fake.js";

function setup(urls = ["ws://a/v1/ws"], opts: Partial<ConstructorParameters<typeof Client>[0]> = {}) {
  const net = new Network();
  const nodes = urls.map((u, i) => net.add(u, new FakeNode(`n${i + 1}`)));
  for (const n of nodes) n.handlers.sync = () => ({ changes: [], more: false, next: 0 });
  const storage = opts.storage ?? memoryStorage();
  const c = new Client({ urls, token, WebSocket: net.WebSocket, storage, reconnectBaseMs: 5, reconnectMaxMs: 20, handshakeRetryMs: 10, random: () => 0.5, ...opts });
  const events: Event[] = [];
  c.on("event", (e) => events.push(e));
  return { net, nodes, c, events, storage };
}

test("backoff grows with jitter and is capped", () => {
  assert.equal(backoff(0, 100, 1000, () => 0), 50);
  assert.equal(backoff(0, 100, 1000, () => 1), 100);
  assert.equal(backoff(3, 100, 1000, () => 1), 800);
  assert.equal(backoff(10, 100, 1000, () => 1), 1000);
  assert.ok(backoff(10, 100, 1000, () => 0) >= 500);
});

test("errors: retryable codes", () => {
  assert.ok(isRetryable(new ParleyError("busy", "")));
  assert.ok(isRetryable(new ParleyError("storage_full", "")));
  assert.ok(!isRetryable(new ParleyError("not_member", "")));
  assert.ok(!isRetryable(new Error("x")));
});

test("resolveWS makes relative URLs absolute with the ws scheme", () => {
  assert.equal(resolveWS("/v1/ws", "https://chat.example/"), "wss://chat.example/v1/ws");
  assert.equal(resolveWS("/v1/ws", "http://127.0.0.1:7070/"), "ws://127.0.0.1:7070/v1/ws");
  assert.equal(resolveWS("ws://h:7071/v1/ws", "https://x/"), "ws://h:7071/v1/ws");
});

test("web push helpers", () => {
  assert.deepEqual([...vapidKeyBytes("AQID")], [1, 2, 3]);
  assert.deepEqual([...vapidKeyBytes("-_8")], [251, 255]);
  const t = webPushTarget({ toJSON: () => ({ endpoint: "https://push/x", keys: { p256dh: "p", auth: "a" } }) });
  assert.deepEqual(t, { provider: "webpush", endpoint: "https://push/x", p256dh: "p", auth: "a" });
});

test("connects with ?token=, syncs from 0 and stores the cursor", async () => {
  const { net, nodes, c } = setup();
  nodes[0]!.handlers.sync = () => ({ changes: [{ info: { id: 7, kind: "direct" }, events: [msg(7, 1, 10), msg(7, 2, 11)] }], more: false, next: 11 });
  const synced: number[] = [];
  c.on("synced", (s) => synced.push(s.cursor));
  await c.start();
  await until(() => synced.length === 1);
  assert.match(net.opened[0]!, /^ws:\/\/a\/v1\/ws\?token=x\./);
  assert.equal(c.cursor, 11);
  assert.equal(nodes[0]!.requests.find((r) => r.t === "sync")!.since, 0);
  c.close();
});

test("sync pages with next and next_conv, and pages a conversation's rest with history", async () => {
  const { nodes, c, events } = setup();
  const n = nodes[0]!;
  n.handlers.sync = (r) => {
    if (!r.after) return { changes: [{ info: { id: 1, kind: "group" }, events: [msg(1, 1, 5)], more: true }], more: true, next: 9, next_conv: 1 };
    assert.equal(r.after, 9);
    assert.equal(r.after_conv, 1);
    assert.equal(r.since, 0, "the same since on every page");
    return { changes: [{ info: { id: 2, kind: "group" }, events: [msg(2, 1, 9)] }], more: false, next: 12 };
  };
  n.handlers.history = (r) => {
    assert.equal(r.dir, "after");
    if (r.seq === 1) return { events: [msg(1, 2, 6), msg(1, 3, 7)], more: true };
    if (r.seq === 3) return { events: [msg(1, 4, 8)], more: false };
    throw new Error("unexpected history " + JSON.stringify(r));
  };
  await c.start();
  await until(() => c.cursor === 12);
  assert.deepEqual(events.map((e) => `${e.conv}:${e.seq}`), ["1:1", "1:2", "1:3", "1:4", "2:1"]);
  c.close();
});

test("live events: duplicates dropped, a gap filled from history in order, cursor advanced to idx-1", async () => {
  const { nodes, c, events } = setup();
  const n = nodes[0]!;
  n.handlers.sync = () => ({ changes: [{ info: { id: 3, kind: "direct" }, events: [msg(3, 1, 20)] }], more: false, next: 20 });
  await c.start();
  await until(() => c.isSynced);
  n.push({ t: "ev", ...msg(3, 2, 21) });
  n.push({ t: "ev", ...msg(3, 2, 21) }); // duplicate
  await until(() => events.length === 2);
  n.handlers.history = (r) => {
    assert.equal(r.seq, 2);
    return { events: [msg(3, 3, 22), msg(3, 4, 23)], more: false };
  };
  n.push({ t: "ev", ...msg(3, 5, 24) }); // seqs 3 and 4 missed
  await until(() => events.length === 5);
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
  await until(() => c.cursor === 23);
  c.close();
});

test("min_idx: the highest idx seen goes with reads, not with writes", async () => {
  const { nodes, c } = setup(undefined, { minIdx: 40 });
  const n = nodes[0]!;
  n.handlers.send = (r) => ({ conv: r.conv, seq: 2, ts: 1, idx: 77, cmid: r.cmid });
  n.handlers.history = () => ({ events: [], more: false });
  await c.start();
  await until(() => c.isSynced);
  assert.equal(n.requests.find((r) => r.t === "sync")!.min_idx, 40);
  await c.send(1, "hi");
  assert.equal(c.minIdx, 77);
  assert.equal(n.requests.find((r) => r.t === "send")!.min_idx, undefined);
  await c.history(1);
  assert.equal(n.requests.find((r) => r.t === "history")!.min_idx, 77);
  c.close();
});

test("sends are retried with the same cmid across a reconnect to another node until acked", async () => {
  const { nodes, c } = setup(["ws://a/v1/ws", "ws://b/v1/ws"], { random: () => 0 });
  const [a, b] = nodes as [FakeNode, FakeNode];
  a.handlers.send = () => null; // a takes the send and never answers
  b.handlers.send = (r) => ({ conv: r.conv, seq: 5, ts: 1, idx: 9, cmid: r.cmid, dup: true });
  const acks: string[] = [];
  c.on("ack", (x) => acks.push(x.cmid));
  await c.start();
  await until(() => c.isSynced);
  const on = a.sockets.size ? a : b;
  const other = on === a ? b : a;
  on.handlers.send = () => null;
  other.handlers.send = (r) => ({ conv: r.conv, seq: 5, ts: 1, idx: 9, cmid: r.cmid, dup: true });
  const p = c.send(4, "hello");
  await until(() => on.count("send") === 1);
  const cmid = on.requests.find((r) => r.t === "send")!.cmid as string;
  assert.equal(c.outbox.length, 1);
  on.refuse = true;
  on.dropAll();
  const ack = await p;
  assert.equal(ack.cmid, cmid);
  assert.equal(other.requests.find((r) => r.t === "send")!.cmid, cmid);
  assert.equal(c.outbox.length, 0);
  assert.deepEqual(acks, [cmid]);
  c.close();
});

test("a send refused busy waits at least its retry_ms before the retry, with the same cmid", async () => {
  const { nodes, c } = setup();
  const n = nodes[0]!;
  const at: number[] = [];
  n.handlers.send = (r) => {
    at.push(Date.now());
    if (at.length === 1) return { error: "busy", retry_ms: 1000 };
    return { conv: r.conv, seq: 1, ts: 1, idx: 2, cmid: r.cmid };
  };
  try {
    await c.start();
    await until(() => c.isSynced);
    const ack = await c.send(4, "hello");
    const sends = n.requests.filter((r) => r.t === "send");
    assert.equal(sends.length, 2);
    assert.equal(sends[1]!.cmid, sends[0]!.cmid);
    assert.equal(ack.cmid, sends[0]!.cmid);
    // The client's own backoff is 375 ms here (random 0.5); the hint wins:
    // 1000 ms plus a quarter (half of the range at random 0.5).
    assert.ok(at[1]! - at[0]! >= 1000, `retried after ${at[1]! - at[0]!} ms, before retry_ms`);
  } finally {
    c.close();
  }
});

test("a send refused busy with retry_ms holds the sends of every conversation for that wait", async () => {
  const { nodes, c } = setup();
  const n = nodes[0]!;
  const sends: { conv: number; at: number }[] = [];
  n.handlers.send = (r) => {
    sends.push({ conv: r.conv as number, at: Date.now() });
    if (sends.length === 1) return { error: "busy", retry_ms: 1000 };
    return { conv: r.conv, seq: 1, ts: 1, idx: 2, cmid: r.cmid };
  };
  try {
    await c.start();
    await until(() => c.isSynced);
    const first = c.send(4, "refused first", { cmid: "c4" }); // the test's random gives every send one cmid
    await until(() => sends.length === 1);
    await until(() => c.outbox.length === 1 && !(c as unknown as { sendBusy: Set<number> }).sendBusy.has(4));
    const other = c.send(5, "another conversation", { cmid: "c5" });
    await Promise.all([first, other]);
    const five = sends.find((x) => x.conv === 5)!;
    const waited = five.at - sends[0]!.at; // the refusal was answered after sends[0]
    assert.ok(waited >= 1000, `conversation 5's send went ${waited} ms after the refused one, before retry_ms`);
  } finally {
    c.close();
  }
});

test("afterHint: at least the hint plus up to half of it, never below the backoff", () => {
  assert.equal(afterHint(0, 375, () => 0.5), 375);
  assert.equal(afterHint(1000, 375, () => 0), 1000);
  assert.equal(afterHint(1000, 375, () => 1), 1500);
  assert.equal(afterHint(100, 375, () => 1), 375);
});

test("a non-retryable send error fails the send and empties the outbox", async () => {
  const { nodes, c } = setup();
  nodes[0]!.handlers.send = () => ({ error: "not_member" });
  const failed: string[] = [];
  c.on("sendFailed", (f) => failed.push(f.error.code));
  await c.start();
  await assert.rejects(c.send(1, "x"), (e: ParleyError) => e.code === "not_member");
  assert.deepEqual(failed, ["not_member"]);
  assert.equal(c.outbox.length, 0);
  c.close();
});

test("the outbox survives a restart of the client (reload) and is sent again", async () => {
  const storage = memoryStorage();
  const first = setup(undefined, { storage });
  first.nodes[0]!.handlers.send = () => null;
  await first.c.start();
  void first.c.send(2, "kept").catch(() => {});
  await until(() => first.nodes[0]!.count("send") === 1);
  await first.c.flush();
  first.c.close();
  const cmid = first.nodes[0]!.requests.find((r) => r.t === "send")!.cmid;

  const second = setup(undefined, { storage });
  second.nodes[0]!.handlers.send = (r) => ({ conv: r.conv, seq: 3, ts: 1, idx: 4, cmid: r.cmid });
  const acked: string[] = [];
  second.c.on("ack", (a) => acked.push(a.cmid));
  await second.c.start();
  await until(() => acked.length === 1);
  assert.equal(acked[0], cmid);
  second.c.close();
});

test("resume: a new client on the same storage syncs from the stored cursor and drops what it already emitted", async () => {
  const storage = memoryStorage();
  const one = setup(undefined, { storage });
  one.nodes[0]!.handlers.sync = () => ({ changes: [{ info: { id: 5, kind: "direct" }, events: [msg(5, 1, 30), msg(5, 2, 31)] }], more: false, next: 31 });
  await one.c.start();
  await until(() => one.c.cursor === 31);
  await one.c.flush();
  one.c.close();

  const two = setup(undefined, { storage });
  two.nodes[0]!.handlers.sync = (r) => {
    assert.equal(r.since, 31);
    // The server may send an event again (at least once): dropped by seq.
    return { changes: [{ info: { id: 5, kind: "direct" }, events: [msg(5, 2, 31), msg(5, 3, 32)] }], more: false, next: 32 };
  };
  await two.c.start();
  await until(() => two.c.cursor === 32);
  assert.deepEqual(two.events.map((e) => e.seq), [3]);
  two.c.close();
});

test("failover: a refused node is skipped and retried later; backoff after a full round", async () => {
  const { net, nodes, c } = setup(["ws://a/v1/ws", "ws://b/v1/ws", "ws://c/v1/ws"]);
  for (const n of nodes) n.refuse = true;
  const states: string[] = [];
  c.on("state", (s) => states.push(s.state));
  await c.start();
  await until(() => states.includes("offline"));
  nodes[2]!.refuse = false;
  await until(() => c.isSynced);
  assert.equal(c.hello!.node, "n3");
  const hosts = net.opened.map((u) => u.slice(5, 6));
  assert.deepEqual(new Set(hosts.slice(0, 3)), new Set(["a", "b", "c"]), "one round over every node first");
  c.close();
});

test("expensive reads are queued to hello's reads limit", async () => {
  const { nodes, c } = setup();
  const n = nodes[0]!;
  const held: (() => void)[] = [];
  let inFlight = 0;
  let peak = 0;
  n.handlers.history = (r, s) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    held.push(() => {
      inFlight--;
      s.deliver({ t: "ok", id: r.id, events: [], more: false });
    });
    return null;
  };
  await c.start();
  await until(() => c.isSynced);
  const all = Promise.all([1, 2, 3, 4, 5].map((i) => c.history(i)));
  for (let answered = 0; answered < 5; answered++) {
    await until(() => held.length > 0);
    held.shift()!();
  }
  await all;
  assert.equal(peak, 2);
  c.close();
});

test("typing: one start per 3 s however many keystrokes, a stop on send", async () => {
  const { nodes, c } = setup();
  const n = nodes[0]!;
  n.handlers.send = (r) => ({ conv: r.conv, seq: 2, ts: 1, idx: 2, cmid: r.cmid });
  await c.start();
  await until(() => c.isSynced);
  for (let i = 0; i < 20; i++) c.typing(9);
  await c.send(9, "done");
  await until(() => n.count("typing") === 2);
  const ty = n.requests.filter((r) => r.t === "typing");
  assert.deepEqual(ty.map((r) => r.on), [true, false]);
  c.close();
});

test("incoming typing expires after ttl_ms without a renewal", async () => {
  const { nodes, c } = setup();
  const seen: boolean[] = [];
  c.on("typing", (t) => seen.push(t.on));
  await c.start();
  await until(() => c.isSynced);
  nodes[0]!.push({ t: "typing", conv: 1, user: 2, on: true, ttl_ms: 20 });
  await until(() => seen.length === 2, 1000, "typing off");
  assert.deepEqual(seen, [true, false]);
  c.close();
});

test("receipts are coalesced and presence is re-subscribed after a reconnect", async () => {
  const { nodes, c } = setup();
  const n = nodes[0]!;
  n.handlers["presence.sub"] = (r) => ({ presence: (r.users as number[]).map((u) => ({ user: u, online: true })) });
  const pres: number[] = [];
  c.on("presence", (p) => pres.push(p.user));
  await c.start();
  await until(() => c.isSynced);
  await c.watchPresence([2, 3]);
  c.markRead(1, 3);
  c.markRead(1, 5);
  c.markDelivered(1, 4);
  await until(() => n.count("receipt") === 1);
  const r = n.requests.find((x) => x.t === "receipt")!;
  assert.equal(r.read, 5);
  assert.equal(r.delivered, 5);
  n.dropAll();
  await until(() => n.count("presence.sub") === 2);
  assert.deepEqual(n.requests.filter((x) => x.t === "presence.sub")[1]!.users, [2, 3]);
  await until(() => pres.length === 4);
  c.close();
});

test("device revoked: the client stops and says so", async () => {
  const { nodes, c } = setup();
  const auth: string[] = [];
  c.on("auth", (a) => auth.push(a.reason));
  await c.start();
  await until(() => c.isSynced);
  nodes[0]!.dropAll(1008, "device revoked");
  await until(() => auth.length === 1);
  assert.equal(auth[0], "device revoked");
});

test("a token refused for good: after a round of failed handshakes checkToken says so, the client stops", async () => {
  let asked = 0;
  const { nodes, c } = setup(["ws://a/v1/ws", "ws://b/v1/ws"], {
    checkToken: async () => {
      asked++;
      return false;
    },
  });
  for (const n of nodes) n.refuse = true;
  const auth: string[] = [];
  c.on("auth", (a) => auth.push(a.reason));
  await c.start();
  await until(() => auth.length === 1);
  assert.equal(auth[0], "unauthorized");
  assert.equal(asked, 1);
});

test("a node that drops every connection right after its hello is not dialed in a tight loop", async () => {
  const { net, nodes, c } = setup(["ws://a/v1/ws"], { reconnectBaseMs: 100, reconnectMaxMs: 1000 });
  nodes[0]!.handlers.sync = (_r, s) => {
    s.serverClose(1011, "internal error");
    return null;
  };
  await c.start();
  await new Promise((r) => setTimeout(r, 600));
  c.close();
  assert.ok(net.opened.length >= 2 && net.opened.length <= 6, `dialed ${net.opened.length} times in 600 ms`);
});
