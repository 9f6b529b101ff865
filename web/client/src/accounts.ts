// The HTTP JSON accounts API (§1) and the web app's configuration.
import { ParleyError } from "./errors.js";
import { jitterAtLeast, sleep } from "./backoff.js";

export interface Registered {
  user_id: number;
  username: string;
  idx: number;
}

export interface LoggedIn {
  token: string;
  user_id: number;
  device_id: number;
  /** Unix seconds. */
  expires_at: number;
  idx: number;
}

export interface HTTPOptions {
  /** fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** The session index: sent as Parley-Min-Index (§8). */
  minIdx?: number;
  /** Attempts for answers that say "retry" (503, a lost connection); default 3. 429 is never retried. */
  attempts?: number;
  /** Per attempt, default 15 s. */
  timeoutMs?: number;
}

function retryAfterMs(h: Headers): number {
  const v = Number(h.get("Retry-After"));
  return Number.isFinite(v) && v > 0 ? v * 1000 : 0;
}

async function post<T>(base: string, path: string, body: unknown, o: HTTPOptions, retryLost: boolean): Promise<T> {
  const f = o.fetch ?? globalThis.fetch.bind(globalThis);
  const attempts = o.attempts ?? 3;
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (o.minIdx) headers["Parley-Min-Index"] = String(o.minIdx);
    let resp: Response;
    try {
      resp = await f(base.replace(/\/$/, "") + path, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(o.timeoutMs ?? 15000),
      });
    } catch (err) {
      // No answer: for a register the outcome is unknown and the same
      // request is safe to repeat (§1); a login would make another device.
      last = new ParleyError("unavailable", `no answer from ${base}: ${String(err)}`);
      if (!retryLost) throw last;
      await sleep(jitterAtLeast(500 * 2 ** i));
      continue;
    }
    const text = await resp.text();
    let json: { code?: string; message?: string } & Record<string, unknown> = {};
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      // a proxy's HTML error page, for instance
    }
    if (resp.ok) return json as T;
    const err = new ParleyError(json.code ?? `http_${resp.status}`, json.message ?? resp.statusText, resp.status, retryAfterMs(resp.headers));
    // 503 timeout: the outcome is unknown; a login retried makes another
    // device, which is harmless. Other 503s: nothing was done.
    if (resp.status !== 503) throw err;
    last = err;
    if (i + 1 < attempts) await sleep(jitterAtLeast(err.retryAfterMs || 1000));
  }
  throw last;
}

/** POST /v1/register. Retried on 503 and lost answers with the same body: register is idempotent for its own account. */
export function register(base: string, username: string, password: string, o: HTTPOptions = {}): Promise<Registered> {
  return post<Registered>(base, "/v1/register", { username, password }, o, true);
}

/** POST /v1/login: every login makes a new device. */
export function login(base: string, username: string, password: string, device = "web", o: HTTPOptions = {}): Promise<LoggedIn> {
  return post<LoggedIn>(base, "/v1/login", { username, password, device }, o, false);
}

/** The web configuration a node serves at GET /v1/config (§1). */
export interface WebConfig {
  /** The WebSocket URLs of the cluster's nodes, absolute or relative to the page's origin. */
  ws_urls: string[];
}

/**
 * GET /v1/config, with each relative URL resolved against base (http → ws,
 * https → wss).
 */
export async function fetchConfig(base: string, o: HTTPOptions = {}): Promise<WebConfig> {
  const f = o.fetch ?? globalThis.fetch.bind(globalThis);
  const resp = await f(new URL("/v1/config", base).toString(), { signal: AbortSignal.timeout(o.timeoutMs ?? 15000) });
  if (!resp.ok) throw new ParleyError("unavailable", `GET /v1/config: ${resp.status}`, resp.status, retryAfterMs(resp.headers));
  const cfg = (await resp.json()) as WebConfig;
  return { ws_urls: (cfg.ws_urls ?? []).map((u) => resolveWS(u, base)) };
}

/** Resolves a WebSocket URL relative to a page URL: "/v1/ws" on https://h/ is wss://h/v1/ws. */
export function resolveWS(u: string, base: string): string {
  const url = new URL(u, base);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  return url.toString();
}

/**
 * GET /v1/token: whether the node accepts this device token (true), or
 * refuses it for good (false: expired, revoked, unknown: log in again).
 * Undefined when the node could not tell (unreachable, 503).
 */
export async function checkToken(base: string, token: string, o: HTTPOptions = {}): Promise<boolean | undefined> {
  const f = o.fetch ?? globalThis.fetch.bind(globalThis);
  try {
    const r = await f(new URL("/v1/token", base).toString(), {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(o.timeoutMs ?? 15000),
    });
    if (r.status === 204 || r.ok) return true;
    if (r.status === 401) return false;
  } catch {
    // unreachable
  }
  return undefined;
}
