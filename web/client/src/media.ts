// Media over HTTP (§9): upload with progress, download with the token.
import { ParleyError } from "./errors.js";

/** The reply of an upload (§9.1). */
export interface Uploaded {
  id: string;
  mime: string;
  size: number;
  width?: number;
  height?: number;
  thumb?: boolean;
  idx: number;
}

export interface UploadOptions {
  /** The file name shown to others. */
  name?: string;
  /** Called with the bytes sent so far and the total (browsers: as the upload goes; elsewhere: at the end). */
  onProgress?: (sent: number, total: number) => void;
  signal?: AbortSignal;
  /** The session index, sent as Parley-Min-Index (§8). */
  minIdx?: number;
}

function retryAfter(v: string | null): number {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n * 1000 : 0;
}

function errorOf(status: number, text: string, ra: string | null): ParleyError {
  let j: { code?: string; message?: string } = {};
  try {
    j = JSON.parse(text);
  } catch {
    // not JSON
  }
  return new ParleyError(j.code ?? `http_${status}`, j.message ?? "", status, retryAfter(ra));
}

/**
 * Uploads a file to POST /v1/media and resolves with its id, to put in a
 * send's `att`. In a browser it uses XMLHttpRequest, whose upload reports
 * progress; elsewhere fetch. A failed upload leaves nothing behind: retry
 * the whole upload (on `503`, after `retryAfterMs`).
 */
export function uploadMedia(base: string, token: string, file: Blob, o: UploadOptions = {}): Promise<Uploaded> {
  const url = new URL("/v1/media", base);
  if (o.name) url.searchParams.set("name", o.name);
  const XHR = (globalThis as { XMLHttpRequest?: typeof XMLHttpRequest }).XMLHttpRequest;
  if (!XHR) {
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (o.minIdx) headers["Parley-Min-Index"] = String(o.minIdx);
    return fetch(url, { method: "POST", headers, body: file, signal: o.signal }).then(async (r) => {
      const text = await r.text();
      if (r.status !== 201) throw errorOf(r.status, text, r.headers.get("Retry-After"));
      o.onProgress?.(file.size, file.size);
      return JSON.parse(text) as Uploaded;
    });
  }
  return new Promise((resolve, reject) => {
    const x = new XHR();
    x.open("POST", url.toString());
    x.setRequestHeader("Authorization", `Bearer ${token}`);
    if (o.minIdx) x.setRequestHeader("Parley-Min-Index", String(o.minIdx));
    x.upload.onprogress = (e) => o.onProgress?.(e.loaded, e.lengthComputable ? e.total : file.size);
    x.onload = () => {
      if (x.status === 201) {
        o.onProgress?.(file.size, file.size);
        resolve(JSON.parse(x.responseText) as Uploaded);
      } else reject(errorOf(x.status, x.responseText, x.getResponseHeader("Retry-After")));
    };
    x.onerror = () => reject(new ParleyError("unavailable", "upload failed: no answer"));
    x.onabort = () => reject(new ParleyError("closed", "upload cancelled"));
    o.signal?.addEventListener("abort", () => x.abort());
    x.send(file);
  });
}

/**
 * Downloads a file (or its thumbnail) with the token as a Blob: an <img>
 * cannot send the Authorization header, so an app shows
 * URL.createObjectURL(blob).
 */
export async function downloadMedia(base: string, token: string, id: string, o: { thumb?: boolean; minIdx?: number; signal?: AbortSignal } = {}): Promise<Blob> {
  const url = new URL(`/v1/media/${encodeURIComponent(id)}`, base);
  if (o.thumb) url.searchParams.set("thumb", "1");
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (o.minIdx) headers["Parley-Min-Index"] = String(o.minIdx);
  const r = await fetch(url, { headers, signal: o.signal });
  if (!r.ok) throw errorOf(r.status, await r.text(), r.headers.get("Retry-After"));
  return r.blob();
}
