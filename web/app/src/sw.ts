/// <reference lib="webworker" />
// The service worker of the web app: shows Web Push notifications (§4.7)
// and opens the conversation when one is clicked. The server sends them
// only while the user has no connection anywhere, so every push is shown.
const sw = self as unknown as ServiceWorkerGlobalScope;
export {};

interface Payload {
  title?: string;
  body?: string;
  conv?: string;
  seq?: string;
  badge?: number;
  tag?: string;
}

sw.addEventListener("push", (e: PushEvent) => {
  let p: Payload = {};
  try {
    p = (e.data?.json() ?? {}) as Payload;
  } catch {
    // not JSON: a bare notification
  }
  e.waitUntil(
    (async () => {
      await sw.registration.showNotification(p.title || "Parley", {
        body: p.body || "New message",
        tag: p.tag || (p.conv ? `conv-${p.conv}` : undefined),
        data: { conv: p.conv },
      });
      const nav = sw.navigator as WorkerNavigator & { setAppBadge?: (n: number) => Promise<void> };
      if (p.badge && nav.setAppBadge) await nav.setAppBadge(p.badge).catch(() => {});
    })(),
  );
});

sw.addEventListener("notificationclick", (e: NotificationEvent) => {
  e.notification.close();
  const conv = Number((e.notification.data as { conv?: string } | null)?.conv) || 0;
  e.waitUntil(
    (async () => {
      const wins = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
      const win = wins[0];
      if (win) {
        await win.focus();
        win.postMessage({ open: conv });
        return;
      }
      await sw.clients.openWindow(conv ? `/#conv=${conv}` : "/");
    })(),
  );
});

sw.addEventListener("install", () => void sw.skipWaiting());
sw.addEventListener("activate", (e: ExtendableEvent) => e.waitUntil(sw.clients.claim()));
