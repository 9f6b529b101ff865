// Web Push subscription (§4.7): the browser's PushManager, subscribed with
// the server's VAPID key from hello, registered with push.set.
import type { Client } from "./client.js";
import { ParleyError } from "./errors.js";

/** The base64url VAPID key as the bytes applicationServerKey takes. */
export function vapidKeyBytes(b64url: string): Uint8Array {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (b64url.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The fields of push.set from a PushSubscription's toJSON(). */
export function webPushTarget(sub: { toJSON(): { endpoint?: string; keys?: Record<string, string> } }) {
  const j = sub.toJSON();
  if (!j.endpoint || !j.keys?.p256dh || !j.keys?.auth) throw new ParleyError("invalid", "the subscription lacks endpoint or keys");
  return { provider: "webpush" as const, endpoint: j.endpoint, p256dh: j.keys.p256dh, auth: j.keys.auth };
}

/**
 * Subscribes this browser to Web Push with the server's key and registers
 * the subscription for this device. Call after login, from a user gesture
 * (browsers ask for permission), with the app's service worker
 * registration. Throws `invalid` when the server sends no Web Push.
 */
export async function subscribeWebPush(client: Client, registration: ServiceWorkerRegistration): Promise<PushSubscription> {
  const vapid = client.hello?.vapid;
  if (!vapid) throw new ParleyError("invalid", "this server does not send Web Push (no vapid in hello)");
  let sub = await registration.pushManager.getSubscription();
  if (!sub) {
    sub = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: vapidKeyBytes(vapid) as BufferSource,
    });
  }
  await client.setPush(webPushTarget(sub));
  return sub;
}

/** Removes the subscription here and on the server (on logout). */
export async function unsubscribeWebPush(client: Client, registration: ServiceWorkerRegistration): Promise<void> {
  const sub = await registration.pushManager.getSubscription();
  await client.clearPush();
  await sub?.unsubscribe();
}
