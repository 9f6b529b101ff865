// The Parley web chat page: no framework, the DOM and @parley/client.
import {
  Client,
  ParleyError,
  downloadMedia,
  uploadMedia,
  fetchConfig,
  checkToken,
  subscribeWebPush,
  unsubscribeWebPush,
  indexedDBStorage,
  login,
  register,
  type ConvInfo,
  type Event,
  type PendingSend,
  type Storage,
} from "@parley/client";

// ---- state ----

interface Session {
  token: string;
  user_id: number;
  device_id: number;
  username: string;
  expires_at: number;
  idx: number;
}

type Tick = "pending" | "sent" | "delivered" | "read" | "failed";

interface Msg {
  seq: number; // 0 while pending
  cmid?: string;
  from: number;
  body: string;
  ts: number;
  kind: string;
  ev?: Event;
  failed?: boolean;
  deleted?: boolean;
  att?: Attachment[];
}

interface Attachment {
  id: string;
  name?: string;
  mime?: string;
  size?: number;
  thumb?: boolean;
}

interface Conv {
  info: ConvInfo;
  msgs: Map<number, Msg>; // by seq
  pending: Map<string, Msg>; // by cmid, until its event comes
  moreBefore: boolean;
  lastEvent?: Event;
  readCounts: Map<number, { read: number; delivered: number; members: number }>;
  gone?: boolean;
  /** The highest seq of a message from the other member of a 1:1: sending moved their read cursor there (§4.5). */
  peerSent: number;
}

interface UserState {
  username?: string;
  online?: boolean;
  last_seen?: number;
}

const SESSION_KEY = "parley.session";
const KEEP = 100; // messages per conversation kept in the cache

let session: Session | null = null;
let client: Client | null = null;
let storage: Storage = indexedDBStorage("parley");
const convs = new Map<number, Conv>();
const users = new Map<number, UserState>();
let current: number | null = null;
const typingNow = new Map<number, Set<number>>(); // conv -> users typing
let loadingOlder = false;
let cacheDirty = false;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

// ---- boot ----

function loadSession(): Session | null {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    if (s && s.expires_at * 1000 > Date.now() + 60000) return s;
  } catch {
    // none
  }
  return null;
}

async function boot(): Promise<void> {
  bindAuth();
  bindApp();
  session = loadSession();
  if (session) await enter(session);
  else showAuth();
}

function showAuth(msg = ""): void {
  $("app").hidden = true;
  $("banner").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = msg;
  $<HTMLInputElement>("auth-user").focus();
}

function bindAuth(): void {
  const form = $<HTMLFormElement>("auth-form");
  const act = async (create: boolean) => {
    const username = $<HTMLInputElement>("auth-user").value.trim().toLowerCase();
    const password = $<HTMLInputElement>("auth-pass").value;
    const err = $("auth-error");
    if (!/^[a-z0-9_.-]{3,32}$/.test(username)) return void (err.textContent = "Usernames are 3 to 32 letters, digits, _ . or -.");
    if (password.length < 8) return void (err.textContent = "Passwords have at least 8 characters.");
    err.textContent = create ? "Creating your account…" : "Logging in…";
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      const base = location.origin;
      if (create) await register(base, username, password);
      const l = await login(base, username, password, deviceName());
      const s: Session = { ...l, username };
      localStorage.setItem(SESSION_KEY, JSON.stringify(s));
      $<HTMLInputElement>("auth-pass").value = "";
      await enter(s);
    } catch (e) {
      err.textContent = describe(e);
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void act(false);
  });
  $("register-btn").addEventListener("click", () => void act(true));
}

function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom/.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  return `web (${browser})`.slice(0, 64);
}

function describe(e: unknown): string {
  if (e instanceof ParleyError) {
    switch (e.code) {
      case "unauthorized":
        return "Wrong username or password.";
      case "username_taken":
        return "That username is taken.";
      case "rate_limited":
        return `Too many attempts: wait ${Math.ceil((e.retryAfterMs || 60000) / 1000)} s and try again.`;
      case "not_found":
        return "No such user or conversation.";
      case "forbidden":
        return "Not allowed.";
      case "conflict":
        return "That is not possible (a chat with yourself?).";
      case "unavailable":
      case "disconnected":
      case "timeout":
        return "The server is not reachable right now; try again.";
      default:
        return e.message;
    }
  }
  return String(e);
}

// ---- entering the app: cache, client, events ----

function cacheKey(): string {
  return `app/${session!.user_id}/${session!.device_id}/convs`;
}

function stateKey(): string {
  return `parley/${session!.user_id}/${session!.device_id}/state`;
}

// Every tab of this device writes the cache, then the client's position
// (the client calls saveCache before it stores a cursor). Read in the other
// order, position first, the cache covers at least what that position
// says was shown; so the client must be given that very position, not one
// another tab stores after the cache was read (it would skip messages the
// cache lacks). pinnedState holds it until the client asks.
let pinnedState: { key: string; value: string | undefined } | null = null;

const clientStorage: Storage = {
  get: (k) => {
    if (pinnedState && pinnedState.key === k) {
      const v = pinnedState.value;
      pinnedState = null;
      return Promise.resolve(v);
    }
    return storage.get(k);
  },
  set: (k, v) => storage.set(k, v),
  delete: (k) => storage.delete(k),
};

async function loadCache(): Promise<void> {
  pinnedState = { key: stateKey(), value: await storage.get(stateKey()) };
  const raw = await storage.get(cacheKey());
  if (!raw) {
    // No cache: nothing was shown here, so the client starts from no
    // position (a full sync), keeping its unsent messages.
    pinnedState.value = withoutPosition(pinnedState.value);
    return;
  }
  try {
    const data = JSON.parse(raw) as { convs: { info: ConvInfo; events: Event[]; moreBefore: boolean }[]; users: [number, UserState][] };
    for (const c of data.convs) {
      const conv = newConv(c.info);
      conv.moreBefore = c.moreBefore;
      for (const ev of c.events) addEvent(conv, ev);
      convs.set(c.info.id, conv);
    }
    for (const [id, u] of data.users) users.set(id, { username: u.username });
  } catch {
    // a broken cache: the sync from the cursor is not enough then, so start over
    pinnedState = null;
    await storage.delete(stateKey());
  }
}

/** The client's stored state without its position (cursor, last seqs). */
function withoutPosition(v: string | undefined): string | undefined {
  if (!v) return v;
  try {
    const st = JSON.parse(v) as Record<string, unknown>;
    st.cursor = 0;
    st.last = {};
    return JSON.stringify(st);
  } catch {
    return undefined;
  }
}

/** Writes the conversations and their latest messages; the client calls it before it stores a cursor. */
async function saveCache(): Promise<void> {
  if (!session || !cacheDirty) return;
  cacheDirty = false;
  const out = [...convs.values()].map((c) => {
    const seqs = [...c.msgs.keys()].sort((a, b) => a - b);
    const kept = seqs.slice(-KEEP);
    return {
      info: c.info,
      events: kept.map((s) => c.msgs.get(s)!.ev!).filter(Boolean),
      moreBefore: c.moreBefore || seqs.length > KEEP,
    };
  });
  const us = [...users.entries()].filter(([, u]) => u.username).map(([id, u]) => [id, { username: u.username }]);
  await storage.set(cacheKey(), JSON.stringify({ convs: out, users: us }));
}

async function enter(s: Session): Promise<void> {
  session = s;
  $("auth").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = s.username;
  users.set(s.user_id, { username: s.username });
  setBanner("Connecting…");
  await loadCache();
  renderList();
  let urls: string[];
  try {
    urls = (await fetchConfig(location.origin)).ws_urls;
  } catch {
    urls = [location.origin.replace(/^http/, "ws") + "/v1/ws"];
  }
  document.body.dataset.wsUrls = urls.join(" ");
  const c = new Client({
    urls,
    token: s.token,
    storage: clientStorage,
    minIdx: s.idx,
    beforeCursor: saveCache,
    checkToken: () => checkToken(location.origin, s.token),
  });
  client = c;
  c.on("state", (st) => {
    document.body.dataset.state = st.state;
    if (st.node) document.body.dataset.node = st.node;
    const label = { connecting: "Connecting…", connected: "Syncing…", synced: "Online", offline: "Offline", closed: "Closed" }[st.state];
    $("conn-state").textContent = label;
    if (st.state === "synced") setBanner("");
    else if (st.state === "offline") setBanner(`You are offline. Retrying in ${Math.ceil((st.retryInMs ?? 0) / 1000)} s…`, true);
    else if (st.state === "connecting" && document.body.dataset.everSynced) setBanner("Reconnecting…", true);
  });
  let firstSync = true;
  c.on("synced", (x) => {
    document.body.dataset.syncSince = String(x.since);
    document.body.dataset.cursor = String(x.cursor);
    document.body.dataset.everSynced = "1";
    if (firstSync) {
      firstSync = false;
      void refreshList().then(openFromHash);
      void setupPush();
    }
    watchPresence();
  });
  c.on("conv", ({ info, gone }) => {
    const conv = convs.get(info.id) ?? newConv(info);
    if (gone) conv.gone = true;
    else conv.info = { ...conv.info, ...info };
    convs.set(info.id, conv);
    cacheDirty = true;
    renderListSoon();
    if (current === info.id) renderHeader();
  });
  c.on("event", onEvent);
  c.on("pending", (p) => addPending(p));
  c.on("ack", (a) => {
    const conv = convs.get(a.conv);
    const m = conv?.pending.get(a.cmid);
    if (conv && m) {
      m.seq = a.seq;
      m.ts = a.ts;
      if (current === a.conv) renderMessages();
    }
  });
  c.on("sendFailed", ({ send }) => {
    const m = convs.get(send.conv)?.pending.get(send.cmid);
    if (m) m.failed = true;
    if (current === send.conv) renderMessages();
  });
  c.on("typing", (t) => {
    const set = typingNow.get(t.conv) ?? new Set();
    if (t.on) set.add(t.user);
    else set.delete(t.user);
    typingNow.set(t.conv, set);
    if (current === t.conv) renderTyping();
  });
  c.on("presence", (p) => {
    const u = users.get(p.user) ?? {};
    u.online = p.online;
    if (p.last_seen) u.last_seen = p.last_seen;
    users.set(p.user, u);
    renderListSoon();
    if (current) renderHeader();
  });
  c.on("receipt", (r) => {
    const conv = convs.get(r.conv);
    if (!conv) return;
    if (r.user === session?.user_id) {
      // Another device of mine read it.
      if ((r.read ?? 0) > (conv.info.read ?? 0)) {
        conv.info.read = r.read;
        conv.info.unread = countUnread(conv);
      }
    } else if (conv.info.kind === "direct") {
      conv.info.peer_read = Math.max(conv.info.peer_read ?? 0, r.read ?? 0);
      conv.info.peer_delivered = Math.max(conv.info.peer_delivered ?? 0, r.delivered ?? 0, r.read ?? 0);
    }
    cacheDirty = true;
    renderListSoon();
    if (current === r.conv) renderMessages();
  });
  c.on("readCounts", (rc) => {
    const conv = convs.get(rc.conv);
    if (!conv) return;
    for (const it of rc.items) conv.readCounts.set(it.seq, { read: it.read, delivered: it.delivered, members: it.members });
    if (current === rc.conv) renderMessages();
  });
  c.on("auth", ({ reason }) => {
    if (client !== c) return; // logging out already
    void logout(false, reason === "unauthorized" ? "Your session ended: log in again." : `Logged out: ${reason}.`);
  });
  await c.start();
}

function setBanner(text: string, show = !!text): void {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !show;
}

async function logout(revoke: boolean, msg = ""): Promise<void> {
  const c = client;
  if (c && revoke && swReg) await unsubscribeWebPush(c, swReg).catch(() => {});
  client = null;
  if (c && revoke && session) await c.revokeDevice(session.device_id).catch(() => {});
  c?.close();
  if (session) {
    await storage.delete(cacheKey()).catch(() => {});
    await storage.delete(`parley/${session.user_id}/${session.device_id}/state`).catch(() => {});
  }
  localStorage.removeItem(SESSION_KEY);
  session = null;
  convs.clear();
  users.clear();
  current = null;
  $("conv-list").replaceChildren();
  showConv(null);
  showAuth(msg);
}

async function refreshList(): Promise<void> {
  if (!client) return;
  try {
    for await (const page of client.conversations(100)) {
      for (const info of page) {
        const conv = convs.get(info.id) ?? newConv(info);
        conv.info = { ...conv.info, ...info };
        convs.set(info.id, conv);
        if (!conv.msgs.size && (info.last_seq ?? 0) > 0) void loadOlder(conv, true);
      }
    }
    cacheDirty = true;
    renderList();
    watchPresence();
  } catch {
    // the next sync brings the changes
  }
}

function newConv(info: ConvInfo): Conv {
  return { info, msgs: new Map(), pending: new Map(), moreBefore: (info.last_seq ?? 0) > 0, readCounts: new Map(), peerSent: 0 };
}

function addEvent(conv: Conv, ev: Event): void {
  if (conv.msgs.has(ev.seq)) return;
  // Members read the whole history, from before they joined too: the
  // first event seen here is not always the first of the conversation.
  if (conv.msgs.size === 0 && ev.seq > 1) conv.moreBefore = true;
  const m: Msg = { seq: ev.seq, cmid: ev.cmid, from: ev.from, body: ev.body ?? "", ts: ev.ts, kind: ev.kind, ev, deleted: !!ev.deleted, att: ev.att as Attachment[] | undefined };
  conv.msgs.set(ev.seq, m);
  if (ev.kind === "deleted" && ev.target) {
    const t = conv.msgs.get(ev.target);
    if (t && t.ev) {
      t.deleted = true;
      t.body = "";
      t.att = undefined;
      t.ev = { ...t.ev, deleted: true, body: undefined, att: undefined, target: ev.seq };
    }
  }
  if (ev.cmid && ev.from === session?.user_id) conv.pending.delete(ev.cmid);
  if (ev.kind === "message" && ev.from !== session?.user_id) conv.peerSent = Math.max(conv.peerSent, ev.seq);
  if (!conv.lastEvent || ev.seq > conv.lastEvent.seq) conv.lastEvent = ev;
  if (ev.seq > (conv.info.last_seq ?? 0)) {
    conv.info.last_seq = ev.seq;
    conv.info.last_idx = ev.idx;
  }
  for (const u of [ev.from, ...(ev.users ?? [])]) if (u && !users.get(u)?.username) void resolveUser(u);
}

function onEvent(ev: Event): void {
  let conv = convs.get(ev.conv);
  if (!conv) {
    // A conversation new to this page (live, before any sync page named
    // it): its info comes with conv.get.
    conv = newConv({ id: ev.conv, kind: ev.kind === "created" && !ev.name ? "direct" : "group", members: [ev.from, ...(ev.users ?? [])] });
    convs.set(ev.conv, conv);
    client?.conversation(ev.conv).then(updateInfo, () => {});
  }
  const fresh = !conv.msgs.has(ev.seq);
  addEvent(conv, ev);
  if (ev.kind === "renamed" || (ev.kind === "created" && ev.name)) conv.info.name = ev.name;
  if (ev.kind === "member_added" || ev.kind === "member_removed" || ev.kind === "member_left") {
    const mem = new Set(conv.info.members ?? []);
    for (const u of ev.users ?? (ev.kind === "member_left" ? [ev.from] : [])) {
      if (ev.kind === "member_added") mem.add(u);
      else mem.delete(u);
    }
    const listed = conv.info.members !== undefined && (conv.info.member_count ?? 0) <= (conv.info.members?.length ?? 0);
    const delta = (ev.users ?? [ev.from]).length * (ev.kind === "member_added" ? 1 : -1);
    conv.info.members = [...mem];
    // Large groups come without their member list (§4.3): count instead.
    conv.info.member_count = listed ? mem.size : Math.max(0, (conv.info.member_count ?? 0) + delta);
    if ((ev.kind !== "member_added") && (ev.users ?? [ev.from]).includes(session!.user_id)) conv.gone = true;
  }
  if (fresh && ev.kind === "message" && ev.from !== session?.user_id) {
    if (current === ev.conv && document.visibilityState === "visible") client?.markRead(ev.conv, ev.seq);
    else if (ev.seq > (conv.info.read ?? 0)) conv.info.unread = (conv.info.unread ?? 0) + 1;
  }
  if (fresh && ev.kind === "message" && ev.from === session?.user_id) {
    conv.info.read = Math.max(conv.info.read ?? 0, ev.seq);
  }
  cacheDirty = true;
  renderListSoon();
  if (current === ev.conv) {
    renderMessages(true);
    if (ev.kind !== "message") renderHeader();
  }
}

function addPending(p: PendingSend): void {
  const conv = convs.get(p.conv);
  if (!conv) return;
  for (const m of conv.msgs.values()) if (m.cmid === p.cmid) return; // already delivered
  conv.pending.set(p.cmid, { seq: 0, cmid: p.cmid, from: session!.user_id, body: p.body, ts: p.at, kind: "message", att: p.att });
  if (current === p.conv) renderMessages(true);
}

function countUnread(conv: Conv): number {
  let n = 0;
  for (const m of conv.msgs.values()) if (m.kind === "message" && m.from !== session?.user_id && m.seq > (conv.info.read ?? 0)) n++;
  return n;
}

const resolving = new Set<number>();
async function resolveUser(id: number): Promise<void> {
  if (resolving.has(id) || !client) return;
  resolving.add(id);
  try {
    const u = await client.user(id);
    const st = users.get(id) ?? {};
    st.username = u.username;
    if (u.last_seen) st.last_seen = u.last_seen;
    users.set(id, st);
    cacheDirty = true;
    renderListSoon();
    if (current) {
      renderHeader();
      renderMessages();
    }
  } catch {
    resolving.delete(id);
  }
}

function peerOf(conv: Conv): number | undefined {
  return (conv.info.members ?? []).find((u) => u !== session?.user_id) ?? conv.lastEvent?.users?.find((u) => u !== session?.user_id);
}

function convName(conv: Conv): string {
  if (conv.info.kind === "group") return conv.info.name || "Group";
  const peer = peerOf(conv);
  return peer ? users.get(peer)?.username ?? `user ${peer}` : "Direct chat";
}

let presenceTimer: ReturnType<typeof setTimeout> | null = null;
function watchPresence(): void {
  if (presenceTimer) return;
  presenceTimer = setTimeout(() => {
    presenceTimer = null;
    if (!client) return;
    const want = new Set<number>();
    for (const conv of convs.values()) {
      if (conv.info.kind === "direct") {
        const p = peerOf(conv);
        if (p) want.add(p);
      }
    }
    if (current) for (const u of convs.get(current)?.info.members ?? []) if (u !== session?.user_id) want.add(u);
    for (const u of want) if (!users.get(u)?.username) void resolveUser(u);
    client.watchPresence([...want].slice(0, 256)).catch(() => {});
  }, 50);
}

// ---- the conversation list ----

let listTimer: ReturnType<typeof setTimeout> | null = null;
function renderListSoon(): void {
  if (listTimer) return;
  listTimer = setTimeout(() => {
    listTimer = null;
    renderList();
  }, 30);
}

function lastMessage(conv: Conv): string {
  const ev = conv.lastEvent;
  if (!ev) return "";
  if (ev.kind === "message") {
    const who = ev.from === session?.user_id ? "You: " : conv.info.kind === "group" ? `${users.get(ev.from)?.username ?? "…"}: ` : "";
    if (conv.msgs.get(ev.seq)?.deleted) return who + "Message deleted";
    return who + (ev.body || (ev.att?.length ? "📎 " + ((ev.att[0] as Attachment).name ?? "file") : ""));
  }
  if (ev.kind === "deleted") return "Message deleted";
  return describeEvent(ev);
}

function renderList(): void {
  const ul = $("conv-list");
  const sorted = [...convs.values()].filter((c) => !c.gone || c.msgs.size).sort((a, b) => (b.info.last_idx ?? 0) - (a.info.last_idx ?? 0) || b.info.id - a.info.id);
  const items = sorted.map((conv) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.convId = String(conv.info.id);
    if (current === conv.info.id) b.setAttribute("aria-current", "true");
    const dot = document.createElement("span");
    dot.className = "dot";
    if (conv.info.kind === "group") dot.classList.add("group");
    else {
      const on = !!users.get(peerOf(conv) ?? 0)?.online;
      dot.dataset.online = String(on);
      dot.setAttribute("aria-label", on ? "online" : "offline");
      dot.setAttribute("role", "img");
    }
    const name = document.createElement("span");
    name.className = "conv-name";
    name.textContent = convName(conv);
    const unread = document.createElement("span");
    const n = current === conv.info.id ? 0 : conv.info.unread ?? 0;
    if (n > 0) {
      unread.className = "unread";
      unread.textContent = String(n);
      unread.setAttribute("aria-label", `${n} unread`);
    }
    const last = document.createElement("span");
    last.className = "conv-last";
    last.textContent = lastMessage(conv);
    b.append(dot, name, unread, last);
    b.addEventListener("click", () => openConv(conv.info.id));
    li.append(b);
    return li;
  });
  ul.replaceChildren(...items);
  let unread = 0;
  for (const c of convs.values()) if (c.info.id !== current) unread += c.info.unread ?? 0;
  document.title = unread ? `(${unread}) Parley` : "Parley";
}

// ---- a conversation ----

function showConv(id: number | null): void {
  current = id;
  $("conv").hidden = id === null;
  $("empty").hidden = id !== null;
  $("app").classList.toggle("in-conv", id !== null);
}

function openConv(id: number): void {
  const conv = convs.get(id);
  if (!conv) return;
  showConv(id);
  $("members").hidden = true;
  $("members-btn").setAttribute("aria-expanded", "false");
  conv.info.unread = 0;
  renderHeader();
  renderMessages(true, true);
  renderTyping();
  renderList();
  markReadNow();
  watchPresence();
  if (conv.moreBefore && conv.msgs.size < 30) void loadOlder(conv);
  $<HTMLTextAreaElement>("composer-input").focus();
}

function markReadNow(): void {
  if (!current || !client || document.visibilityState !== "visible") return;
  const conv = convs.get(current)!;
  let top = 0;
  for (const m of conv.msgs.values()) if (m.kind === "message" && m.from !== session?.user_id) top = Math.max(top, m.seq);
  if (top > (conv.info.read ?? 0)) {
    conv.info.read = top;
    client.markRead(current, top);
  }
  conv.info.unread = 0;
}

async function loadOlder(conv: Conv, quiet = false): Promise<void> {
  if (!client || (loadingOlder && !quiet) || !conv.moreBefore) return;
  if (!quiet) loadingOlder = true;
  const isCurrent = current === conv.info.id;
  if (isCurrent && !quiet) $("older").hidden = false;
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const seqs = [...conv.msgs.keys()];
    const oldest = seqs.length ? Math.min(...seqs) : 0;
    if (oldest === 1) {
      conv.moreBefore = false;
      return;
    }
    const page = await client.history(conv.info.id, { seq: oldest, dir: "before", limit: quiet ? 20 : 50 });
    for (const ev of page.events) addEvent(conv, ev);
    conv.moreBefore = page.more;
    cacheDirty = true;
    if (current === conv.info.id) {
      renderMessages();
      box.scrollTop = box.scrollHeight - fromBottom; // keep the view where it was
    }
    renderListSoon();
  } catch {
    // shown again on the next scroll
  } finally {
    if (!quiet) loadingOlder = false;
    $("older").hidden = true;
  }
}

function renderHeader(): void {
  if (!current) return;
  const conv = convs.get(current)!;
  $("conv-title").textContent = convName(conv);
  const sub = $("conv-sub");
  const isGroup = conv.info.kind === "group";
  $("members-btn").hidden = !isGroup || !!conv.gone;
  if (isGroup) {
    const n = conv.info.member_count || conv.info.members?.length || 0;
    const online = (conv.info.members ?? []).filter((u) => u !== session?.user_id && users.get(u)?.online).length;
    sub.textContent = conv.gone ? "You are no longer a member" : `${n} members${online ? `, ${online} online` : ""}`;
    renderMembers(conv);
  } else {
    const u = users.get(peerOf(conv) ?? 0);
    sub.innerHTML = "";
    const dot = document.createElement("span");
    dot.className = "dot presence";
    dot.dataset.online = String(!!u?.online);
    const txt = document.createElement("span");
    txt.id = "presence-text";
    txt.textContent = u?.online ? " online" : u?.last_seen ? ` last seen ${when(u.last_seen)}` : " offline";
    sub.append(dot, txt);
  }
}

function renderMembers(conv: Conv): void {
  const me = session!.user_id;
  const admin = (conv.info.admins ?? []).includes(me);
  const items = (conv.info.members ?? []).map((u) => {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.dataset.online = String(!!users.get(u)?.online || u === me);
    const name = document.createElement("span");
    name.textContent = (users.get(u)?.username ?? `user ${u}`) + (u === me ? " (you)" : "") + ((conv.info.admins ?? []).includes(u) ? " · admin" : "");
    li.append(dot, name);
    if (admin && u !== me) {
      const rm = document.createElement("button");
      rm.type = "button";
      rm.className = "link";
      rm.textContent = "Remove";
      rm.setAttribute("aria-label", `Remove ${users.get(u)?.username ?? u}`);
      rm.addEventListener("click", () => void act(() => client!.removeMember(conv.info.id, u).then((i) => updateInfo(i))));
      li.append(rm);
    }
    return li;
  });
  $("member-list").replaceChildren(...items);
  $("add-form").hidden = !admin;
}

function updateInfo(info: ConvInfo): void {
  const conv = convs.get(info.id) ?? newConv(info);
  conv.info = { ...conv.info, ...info };
  convs.set(info.id, conv);
  cacheDirty = true;
  renderList();
  if (current === info.id) renderHeader();
}

function tickOf(conv: Conv, m: Msg): Tick {
  if (m.failed) return "failed";
  if (!m.seq) return "pending";
  if (conv.info.kind === "direct") {
    const read = Math.max(conv.info.peer_read ?? 0, conv.peerSent);
    if (read >= m.seq) return "read";
    if ((conv.info.peer_delivered ?? 0) >= m.seq) return "delivered";
    return "sent";
  }
  const rc = conv.readCounts.get(m.seq);
  if (rc && rc.members > 0 && rc.read >= rc.members) return "read";
  if (rc && rc.members > 0 && rc.delivered >= rc.members) return "delivered";
  return "sent";
}

const tickText: Record<Tick, string> = { pending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };
const tickLabel: Record<Tick, string> = { pending: "sending", sent: "sent", delivered: "delivered", read: "read", failed: "not sent" };

function describeEvent(ev: Event): string {
  const who = (u: number) => (u === session?.user_id ? "you" : users.get(u)?.username ?? `user ${u}`);
  const list = (ev.users ?? []).map(who).join(", ");
  switch (ev.kind) {
    case "created":
      return ev.name ? `${who(ev.from)} created “${ev.name}”${list ? ` with ${list}` : ""}` : `${who(ev.from)} started the chat`;
    case "member_added":
      return `${who(ev.from)} added ${list}`;
    case "member_removed":
      return `${who(ev.from)} removed ${list}`;
    case "member_left":
      return `${who(ev.from)} left`;
    case "admin_changed":
      return `${who(ev.from)} ${ev.admin ? "made" : "unmade"} ${list} admin`;
    case "renamed":
      return `${who(ev.from)} renamed the group “${ev.name}”`;
    default:
      return ev.kind;
  }
}

function when(ts: number): string {
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

function renderMessages(stick = false, force = false): void {
  if (!current) return;
  const conv = convs.get(current)!;
  const box = $("messages");
  const atBottom = force || box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const me = session!.user_id;
  const all = [...conv.msgs.values()].sort((a, b) => a.seq - b.seq);
  const delivered = new Set(all.map((m) => m.cmid).filter(Boolean));
  const pend = [...conv.pending.values()].filter((m) => !delivered.has(m.cmid));
  const items = [...all, ...pend].filter((m) => m.kind !== "deleted").map((m) => {
    const li = document.createElement("li");
    if (m.kind !== "message") {
      li.className = "msg system";
      li.textContent = m.ev ? describeEvent(m.ev) : m.kind;
      if (m.seq) li.dataset.seq = String(m.seq);
      return li;
    }
    const mine = m.from === me;
    li.className = mine ? "msg mine" : "msg";
    if (m.seq) li.dataset.seq = String(m.seq);
    if (m.cmid) li.dataset.cmid = m.cmid;
    li.dataset.from = String(m.from);
    if (!mine && conv.info.kind === "group") {
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = users.get(m.from)?.username ?? `user ${m.from}`;
      li.append(from);
    }
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = m.deleted ? "Message deleted" : m.body;
    if (m.deleted) li.classList.add("deleted");
    for (const a of m.att ?? []) li.append(renderAttachment(a));
    const meta = document.createElement("span");
    meta.className = "meta";
    const time = document.createElement("time");
    time.dateTime = new Date(m.ts).toISOString();
    time.textContent = when(m.ts);
    meta.append(time);
    if (mine) {
      const t = tickOf(conv, m);
      li.dataset.state = t;
      const tick = document.createElement("span");
      tick.className = "tick";
      tick.dataset.state = t;
      tick.textContent = " " + tickText[t];
      tick.setAttribute("aria-label", tickLabel[t]);
      tick.title = tickLabel[t];
      meta.append(tick);
      if (m.seq && !m.deleted) {
        const del = document.createElement("button");
        del.type = "button";
        del.className = "link del";
        del.textContent = "Delete";
        del.setAttribute("aria-label", "Delete this message for everyone");
        const conv = current!;
        del.addEventListener("click", () => {
          if (confirm("Delete this message for everyone?")) void act(() => client!.deleteMessage(conv, m.seq));
        });
        meta.append(del);
      }
    }
    li.append(body, meta);
    return li;
  });
  reconcile($("msg-list"), items);
  if (stick && atBottom) box.scrollTop = box.scrollHeight;
  if (document.visibilityState === "visible") markReadNow();
}

const blobs = new Map<string, Promise<string>>(); // media id (+thumb) -> object URL
const blobsDone = new Map<string, string>(); // the same, once loaded

function blobURL(id: string, thumb: boolean): Promise<string> {
  const k = id + (thumb ? "/thumb" : "");
  let p = blobs.get(k);
  if (!p) {
    p = downloadMedia(location.origin, session!.token, id, { thumb, minIdx: client?.minIdx }).then((b) => {
      const u = URL.createObjectURL(b);
      blobsDone.set(k, u);
      return u;
    });
    p.catch(() => blobs.delete(k));
    blobs.set(k, p);
  }
  return p;
}

function fmtSize(n = 0): string {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(0)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`;
}

function renderAttachment(a: Attachment): HTMLElement {
  const span = document.createElement("span");
  span.className = "att";
  const name = a.name || "file";
  if (a.thumb || a.mime?.startsWith("image/")) {
    const img = document.createElement("img");
    img.alt = name;
    const ready = blobsDone.get(a.id + (a.thumb ? "/thumb" : ""));
    if (ready) img.src = ready;
    else void blobURL(a.id, !!a.thumb).then((u) => (img.src = u), () => (img.alt = `${name} (not available)`));
    span.append(img);
  }
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = `⬇ ${name} (${fmtSize(a.size)})`;
  b.setAttribute("aria-label", `Download ${name}`);
  b.addEventListener("click", () =>
    void act(async () => {
      const link = document.createElement("a");
      link.href = await blobURL(a.id, false);
      link.download = name;
      link.click();
    }),
  );
  span.append(b);
  return span;
}

async function attach(file: File): Promise<void> {
  if (!current || !client || !session) return;
  const conv = current;
  const box = $("upload");
  const bar = $<HTMLProgressElement>("upload-progress");
  $("upload-label").textContent = `Uploading ${file.name}…`;
  bar.value = 0;
  box.hidden = false;
  try {
    const up = await uploadMedia(location.origin, session.token, file, {
      name: file.name,
      minIdx: client.minIdx,
      onProgress: (sent, total) => (bar.value = total ? Math.round((100 * sent) / total) : 0),
    });
    const input = $<HTMLTextAreaElement>("composer-input");
    const text = input.value.trim() ? input.value : "";
    input.value = "";
    await client.send(conv, text, { att: [{ id: up.id, name: file.name }] });
  } finally {
    box.hidden = true;
  }
}

/**
 * Puts items into list, keeping every element already there whose content
 * is unchanged (same key and same markup): a screen reader announces only
 * what is new in the log, and focus stays where it was.
 */
function reconcile(list: HTMLElement, items: HTMLElement[]): void {
  const old = new Map<string, HTMLElement>();
  for (const el of Array.from(list.children) as HTMLElement[]) old.set(keyOf(el), el);
  let prev: Element | null = null;
  for (const item of items) {
    const k = keyOf(item);
    const have = old.get(k);
    let el: HTMLElement = item;
    if (have && have.outerHTML === item.outerHTML) {
      el = have; // unchanged (its listeners are the same closures' equivalents)
      old.delete(k);
    }
    const want: Element | null = prev ? prev.nextElementSibling : list.firstElementChild;
    if (want !== el) list.insertBefore(el, want);
    prev = el;
  }
  for (const el of old.values()) if (el.parentElement === list && !items.includes(el)) el.remove();
  while (prev && prev.nextElementSibling) prev.nextElementSibling.remove();
}

function keyOf(el: HTMLElement): string {
  // A message keeps its key from pending to acked: its sender and cmid.
  return el.dataset.cmid ? `c${el.dataset.from}:${el.dataset.cmid}` : el.dataset.seq ? "s" + el.dataset.seq : "t" + el.textContent;
}

async function renderDevices(): Promise<void> {
  if (!client) return;
  const list = $("device-list");
  await act(async () => {
    const devs = (await client!.devices()).filter((d) => !d.revoked);
    list.replaceChildren(
      ...devs.map((d) => {
        const li = document.createElement("li");
        li.dataset.device = String(d.id);
        const name = document.createElement("span");
        name.textContent = `${d.name}${d.current ? " (this device)" : ""} · ${new Date(d.created_at).toLocaleDateString()}`;
        li.append(name);
        if (!d.current) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "link";
          b.textContent = "Sign out";
          b.setAttribute("aria-label", `Sign out ${d.name}, device ${d.id}`);
          b.addEventListener("click", () => void act(() => client!.revokeDevice(d.id).then(renderDevices)));
          li.append(b);
        }
        return li;
      }),
    );
  });
}

// ---- Web Push (§4.7): a service worker shows notifications while the
// user has no connection; the button asks for permission ----

let swReg: ServiceWorkerRegistration | null = null;

async function setupPush(): Promise<void> {
  const btn = $("push-btn");
  const supported = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  btn.hidden = !(supported && client?.hello?.vapid);
  if (btn.hidden) return;
  try {
    swReg = await navigator.serviceWorker.register("/sw.js");
    if (Notification.permission === "granted" && client) {
      // After every login the device says again where its notifications go.
      await subscribeWebPush(client, swReg);
      btn.setAttribute("aria-pressed", "true");
    }
  } catch {
    // no push service reachable: the app works without notifications
  }
}

async function enablePush(): Promise<void> {
  if (!client || !swReg) return;
  const btn = $("push-btn");
  if (btn.getAttribute("aria-pressed") === "true") {
    await unsubscribeWebPush(client, swReg);
    btn.setAttribute("aria-pressed", "false");
    return;
  }
  if ((await Notification.requestPermission()) !== "granted") throw new Error("Notifications are blocked for this site in the browser's settings.");
  await subscribeWebPush(client, swReg);
  btn.setAttribute("aria-pressed", "true");
}

/** Opens the conversation a notification named (/#conv=ID). */
function openFromHash(): void {
  const m = /conv=(\d+)/.exec(location.hash);
  if (m && convs.has(Number(m[1]))) {
    openConv(Number(m[1]));
    history.replaceState(null, "", "/");
  }
}

function renderTyping(): void {
  const who = [...(typingNow.get(current ?? 0) ?? [])].map((u) => users.get(u)?.username ?? "someone");
  $("typing").textContent = who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.join(", ")} are typing…`;
}

// ---- actions ----

async function act(f: () => Promise<unknown>): Promise<void> {
  const err = $("side-error");
  err.textContent = "";
  try {
    await f();
  } catch (e) {
    err.textContent = describe(e);
  }
}

async function userIdByName(name: string): Promise<number> {
  const u = await client!.user(name.trim().toLowerCase());
  users.set(u.id, { ...(users.get(u.id) ?? {}), username: u.username });
  return u.id;
}

function bindApp(): void {
  $("logout-btn").addEventListener("click", () => void logout(true));
  $("push-btn").addEventListener("click", () => void act(enablePush));
  navigator.serviceWorker?.addEventListener("message", (e: MessageEvent) => {
    const id = Number((e.data as { open?: number } | null)?.open);
    if (id && convs.has(id)) openConv(id);
  });
  $("back-btn").addEventListener("click", () => {
    showConv(null);
    renderList();
  });
  $<HTMLFormElement>("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $<HTMLInputElement>("dm-user");
    void act(async () => {
      const id = await userIdByName(input.value);
      const info = await client!.openDirect(id);
      updateInfo(info);
      input.value = "";
      openConv(info.id);
    });
  });
  $<HTMLFormElement>("group-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $<HTMLInputElement>("group-name");
    const list = $<HTMLInputElement>("group-users");
    void act(async () => {
      const names = list.value.split(",").map((s) => s.trim()).filter(Boolean);
      const ids = await Promise.all(names.map(userIdByName));
      const info = await client!.createGroup(name.value.trim(), ids);
      updateInfo(info);
      name.value = "";
      list.value = "";
      (document.querySelector(".group-new") as HTMLDetailsElement).open = false;
      openConv(info.id);
    });
  });
  $("devices").addEventListener("toggle", () => {
    if (($("devices") as HTMLDetailsElement).open) void renderDevices();
  });
  $("members-btn").addEventListener("click", () => {
    const m = $("members");
    m.hidden = !m.hidden;
    $("members-btn").setAttribute("aria-expanded", String(!m.hidden));
  });
  $<HTMLFormElement>("add-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $<HTMLInputElement>("add-user");
    const conv = current!;
    void act(async () => {
      const id = await userIdByName(input.value);
      updateInfo(await client!.addMembers(conv, [id]));
      input.value = "";
    });
  });
  $("leave-btn").addEventListener("click", () => {
    const conv = current!;
    void act(async () => {
      await client!.leave(conv);
      const c = convs.get(conv);
      if (c) c.gone = true;
      showConv(null);
      renderList();
    });
  });
  const input = $<HTMLTextAreaElement>("composer-input");
  const send = () => {
    const body = input.value.trim(); // blank lines around a message carry nothing
    if (!body || !current || !client) return;
    input.value = "";
    autosize();
    client.send(current, body).catch(() => {});
  };
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 160) + "px";
  };
  $<HTMLFormElement>("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    if (current && input.value) client?.typing(current);
    else if (current) client?.stopTyping(current);
  });
  const fileInput = $<HTMLInputElement>("file-input");
  $("attach-btn").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    const f = fileInput.files?.[0];
    fileInput.value = "";
    if (f) void act(() => attach(f));
  });
  $("messages").addEventListener("scroll", () => {
    const conv = current ? convs.get(current) : undefined;
    if (conv && $("messages").scrollTop < 60) void loadOlder(conv);
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markReadNow();
    else void saveCache();
  });
  window.addEventListener("pagehide", () => void saveCache());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && current && window.matchMedia("(max-width: 700px)").matches) {
      showConv(null);
      renderList();
    }
  });
}

void boot();
