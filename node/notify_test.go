package node_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"parley/engine"
	"parley/internal/testwait"
	"parley/node"
	"parley/push"
	"parley/push/pushtest"
	"parley/wire"
)

// pushWorld is a node whose notifier sends to a recorder, with alice,
// bob (a phone on FCM and a browser on Web Push) and carol.
type pushWorld struct {
	t                *testing.T
	n                *node.Node
	rec              *pushtest.Recorder
	alice, bob       account
	carol            account
	a                *conn
	bobPhone, bobWeb string // tokens
	dm, group        uint64
}

func newPushWorld(t *testing.T) *pushWorld { return newPushWorldGrace(t, 50*time.Millisecond) }

func newPushWorldGrace(t *testing.T, grace time.Duration) *pushWorld {
	w := &pushWorld{t: t, rec: &pushtest.Recorder{}}
	cfg := testConfig(t.TempDir())
	cfg.PushSender = w.rec
	cfg.PresenceGrace = grace
	cfg.SignalTick = 20 * time.Millisecond
	cfg.PushProgressEvery = 20 * time.Millisecond
	w.n = startNodeWith(t, cfg)
	w.alice, w.bob, w.carol = register(t, w.n, "alice"), register(t, w.n, "bob"), register(t, w.n, "carol")
	w.a, _ = dialConn(t, w.n, login(t, w.n, w.alice, "phone"))
	w.bobPhone, w.bobWeb = login(t, w.n, w.bob, "phone"), login(t, w.n, w.bob, "browser")
	w.bobOnline(func(phone, web *conn) {
		wantOK(t, "push.set fcm", phone.do(t, map[string]any{"t": "push.set", "provider": "fcm", "token": "bob-fcm"}))
		wantOK(t, "push.set webpush", web.do(t, map[string]any{"t": "push.set", "provider": "webpush",
			"endpoint": "https://push.example/bob", "p256dh": "BKey", "auth": "secret"}))
	})
	rep := w.a.do(t, map[string]any{"t": "dm.open", "user": w.bob.user})
	wantOK(t, "dm.open", rep)
	w.dm = rep.Info.ID
	rep = w.a.do(t, map[string]any{"t": "group.create", "name": "team", "users": []uint64{w.bob.user, w.carol.user}})
	wantOK(t, "group.create", rep)
	w.group = rep.Info.ID
	return w
}

// bobOnline connects both of bob's devices, runs f, disconnects them and
// waits until bob is offline.
func (w *pushWorld) bobOnline(f func(phone, web *conn)) {
	w.t.Helper()
	phone, _ := dialConn(w.t, w.n, w.bobPhone)
	web, _ := dialConn(w.t, w.n, w.bobWeb)
	f(phone, web)
	phone.conn.NetConn().Close()
	web.conn.NetConn().Close()
	testwait.Eventually(w.t, "bob offline", func() bool {
		rep := w.a.do(w.t, map[string]any{"t": "presence.sub", "users": []uint64{w.bob.user}})
		return rep.Type == wire.TypeOK && len(rep.Presence) == 1 && !rep.Presence[0].Online
	})
}

// pastMilli waits until the clock has left the millisecond ts (Unix ms).
// A message stamped in the millisecond its recipient's connection closes
// is pushed when the grace ends (it may have come after the close), so a
// message meant as seen while connected must be before a later close.
func (w *pushWorld) pastMilli(ts int64) {
	w.t.Helper()
	testwait.Eventually(w.t, "the clock past the message's millisecond", func() bool {
		return time.Now().UnixMilli() > ts
	})
}

func (w *pushWorld) send(conv uint64, body string) wire.Reply {
	w.t.Helper()
	rep := w.a.do(w.t, map[string]any{"t": "send", "conv": conv, "cmid": body, "body": body})
	wantOK(w.t, "send "+body, rep)
	return rep
}

// handled waits until the notifier has handled every message up to idx
// (its durable progress passed it), and returns the sends for (conv, seq).
func (w *pushWorld) handled(idx, conv, seq uint64) []pushtest.Sent {
	w.t.Helper()
	testwait.Eventually(w.t, fmt.Sprintf("push progress past %d", idx), func() bool {
		return w.n.EngineForTest().PushProgress() >= idx
	})
	var out []pushtest.Sent
	for _, s := range w.rec.Sends() {
		if s.Notification.Conv == conv && s.Notification.Seq == seq {
			out = append(out, s)
		}
	}
	return out
}

func providers(sends []pushtest.Sent) []string {
	var out []string
	for _, s := range sends {
		out = append(out, s.Target.Provider)
	}
	slices.Sort(out)
	return out
}

// TestNotifyWhoAndWhat: an offline recipient's every device with a push
// target gets one notification per message, with the unread count as
// badge and a collapse key per conversation; the text only with previews
// on; nothing while online, muted or in do-not-disturb; a target the
// provider rejects for good is removed.
func TestNotifyWhoAndWhat(t *testing.T) {
	w := newPushWorld(t)
	both := []string{push.ProviderFCM, push.ProviderWebPush}

	// Online: no notification. (bob is online while this runs.)
	var online wire.Reply
	w.bobOnline(func(_, _ *conn) {
		online = w.send(w.dm, "while online")
		w.pastMilli(online.Ts)
	})
	if got := w.handled(online.Index, w.dm, online.Seq); len(got) != 0 {
		t.Fatalf("notified while online: %+v", got)
	}

	// Offline, previews off (the default): both devices, no text.
	s := w.send(w.dm, "secret words")
	got := w.handled(s.Index, w.dm, s.Seq)
	if !slices.Equal(providers(got), both) {
		t.Fatalf("offline: sends to %v, want %v", providers(got), both)
	}
	for _, g := range got {
		n := g.Notification
		if n.Title != "" || n.Body != "" || n.Badge != 2 || n.CollapseKey != fmt.Sprintf("conv-%d", w.dm) ||
			n.ThreadID != n.CollapseKey || n.IdempotencyKey == "" {
			t.Fatalf("notification %+v: want no text, badge 2 (two unread), collapse key per conversation", n)
		}
	}
	if got[0].Notification.IdempotencyKey == got[1].Notification.IdempotencyKey {
		t.Fatal("two devices share an idempotency key")
	}

	// Previews on, the group muted for good.
	w.bobOnline(func(phone, _ *conn) {
		wantOK(t, "notify.set", phone.do(t, map[string]any{"t": "notify.set", "preview": true}))
		wantOK(t, "conv.mute", phone.do(t, map[string]any{"t": "conv.mute", "conv": w.group, "until": -1}))
		rep := phone.do(t, map[string]any{"t": "user.get", "user": w.bob.user})
		if rep.UserInfo == nil || !rep.UserInfo.Preview || rep.UserInfo.DND {
			t.Fatalf("user.get of oneself: %+v", rep.UserInfo)
		}
		rep = phone.do(t, map[string]any{"t": "conv.get", "conv": w.group})
		if rep.Info == nil || rep.Info.MutedUntil != -1 {
			t.Fatalf("conv.get after mute: %+v", rep.Info)
		}
	})
	s = w.send(w.dm, "hello bob")
	got = w.handled(s.Index, w.dm, s.Seq)
	if len(got) != 2 || got[0].Notification.Title != "alice" || got[0].Notification.Body != "hello bob" {
		t.Fatalf("with previews: %+v", got)
	}
	s = w.send(w.group, "muted")
	if got := w.handled(s.Index, w.group, s.Seq); len(got) != 0 {
		t.Fatalf("notified in a muted conversation: %+v", got)
	}

	// Do-not-disturb: nothing at all.
	w.bobOnline(func(phone, _ *conn) {
		wantOK(t, "notify.set", phone.do(t, map[string]any{"t": "notify.set", "preview": true, "dnd": true}))
	})
	s = w.send(w.dm, "dnd")
	if got := w.handled(s.Index, w.dm, s.Seq); len(got) != 0 {
		t.Fatalf("notified in do-not-disturb: %+v", got)
	}

	// Unmuted, previews on, no DND: the group's title names it. The phone's
	// token is gone: its target is removed, the browser's stays.
	w.rec.Script("bob-fcm", pushtest.Scripted{Result: push.Result{Gone: true, Status: 404}, Err: fmt.Errorf("unregistered")})
	w.bobOnline(func(phone, _ *conn) {
		wantOK(t, "notify.set", phone.do(t, map[string]any{"t": "notify.set", "preview": true}))
		wantOK(t, "conv.mute", phone.do(t, map[string]any{"t": "conv.mute", "conv": w.group, "until": 0}))
	})
	s = w.send(w.group, "to the team")
	got = w.handled(s.Index, w.group, s.Seq)
	if !slices.Equal(providers(got), both) || got[0].Notification.Title != "alice in team" {
		t.Fatalf("group: %+v", got)
	}
	testwait.Eventually(t, "the gone target removed", func() bool {
		targets, err := w.n.EngineForTest().PushTargets(w.bob.user)
		return err == nil && len(targets) == 1 && targets[0].Provider == engine.PushWebPush
	})
	s = w.send(w.dm, "after gone")
	if got := w.handled(s.Index, w.dm, s.Seq); !slices.Equal(providers(got), []string{push.ProviderWebPush}) {
		t.Fatalf("after the token was gone: %v", providers(got))
	}
	if p := w.n.PushPendingForTest(); p != 0 {
		t.Fatalf("%d deliveries pending at the end", p)
	}
}

// TestNotifyAfterThePresenceGrace: the grace after a user's last
// connection closes counts them online, so a message sent then reaches no
// device and no scan pushes it. It is pushed once the grace runs out; a
// message sent while they were connected is not.
func TestNotifyAfterThePresenceGrace(t *testing.T) {
	w := newPushWorldGrace(t, 2*time.Second)
	sendsOf := func(r wire.Reply) []pushtest.Sent {
		var out []pushtest.Sent
		for _, s := range w.rec.Sends() {
			if s.Notification.Conv == r.Conv && s.Notification.Seq == r.Seq {
				out = append(out, s)
			}
		}
		return out
	}

	// Connected when sent: no notification, also once bob goes offline
	// and the notifier has caught up on him.
	caught := w.n.PushCaughtUpForTest()
	var live wire.Reply
	w.bobOnline(func(_, _ *conn) {
		live = w.send(w.dm, "while connected")
		w.pastMilli(live.Ts)
	})
	testwait.Eventually(t, "the catch-up of bob going offline", func() bool {
		return w.n.PushCaughtUpForTest() > caught && w.n.PushPendingForTest() == 0 &&
			w.n.EngineForTest().PushProgress() >= live.Index
	})
	if got := sendsOf(live); len(got) != 0 {
		t.Fatalf("notified of a message sent while connected: %+v", got)
	}

	// Sent after bob's phone closed, in the grace: both devices are told
	// once the grace runs out.
	phone, _ := dialConn(t, w.n, w.bobPhone)
	phone.conn.NetConn().Close()
	testwait.Eventually(t, "bob's phone closed on the node", func() bool {
		return w.n.InPresenceGraceForTest(w.bob.user)
	})
	inGrace := w.send(w.dm, "in the grace")
	testwait.Eventually(t, "the notifications after the grace", func() bool {
		return slices.Equal(providers(sendsOf(inGrace)), []string{push.ProviderFCM, push.ProviderWebPush})
	})
	if got := sendsOf(live); len(got) != 0 {
		t.Fatalf("notified of a message sent while connected: %+v", got)
	}
}

// TestNotifyRetriesAndPausesOnRetryAfter: a provider answering "retry
// later" gets the notification again after its Retry-After; the progress
// waits for it.
func TestNotifyRetriesAfterRetryAfter(t *testing.T) {
	w := newPushWorld(t)
	w.rec.Script("bob-fcm", pushtest.Scripted{Result: push.Result{Retryable: true, RetryAfter: time.Second, Status: 429}, Err: fmt.Errorf("quota")})
	s := w.send(w.dm, "retry me")
	testwait.Eventually(t, "a first attempt", func() bool { return len(w.rec.Sends()) >= 2 })
	if p := w.n.EngineForTest().PushProgress(); p >= s.Index {
		t.Fatalf("progress %d passed a message (%d) whose notification is to be retried", p, s.Index)
	}
	w.rec.Script("bob-fcm", pushtest.Scripted{})
	got := w.handled(s.Index, w.dm, s.Seq)
	if n := len(got); n != 3 { // webpush once; fcm refused, then sent
		t.Fatalf("%d sends, want 3: %+v", n, got)
	}
}

// TestPushSetNeedsAConfiguredProvider: a node that sends no pushes says
// so, rather than store a target it will never use.
func TestPushSetNeedsAConfiguredProvider(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := register(t, n, "alice")
	a, _ := dialConn(t, n, login(t, n, alice, "phone"))
	wantCode(t, "push.set", a.do(t, map[string]any{"t": "push.set", "provider": "fcm", "token": "x"}), wire.CodeInvalid)
	wantCode(t, "push.set without provider", a.do(t, map[string]any{"t": "push.set", "token": "x"}), wire.CodeInvalid)
	wantOK(t, "notify.set", a.do(t, map[string]any{"t": "notify.set", "preview": true}))
}

// TestNotifyThroughEveryProvider: the node's notifier through the real
// senders to the fakes, which check each provider's request format (FCM
// v1 with OAuth2, APNs over HTTP/2 with an ES256 token, Web Push encrypted
// for the subscription with VAPID, signed webhooks): bob has one device
// on each and each gets the message.
func TestNotifyThroughEveryProvider(t *testing.T) {
	fcm, apns, web, hook := pushtest.NewFCM(t), pushtest.NewAPNs(t), pushtest.NewWebPush(t), pushtest.NewWebhookReceiver(t)
	cfg := testConfig(t.TempDir())
	cfg.Push = push.Config{
		FCM:     &push.FCMConfig{ServiceAccountFile: fcm.ServiceAccountFile, Endpoint: fcm.URL, HTTPClient: fcm.Client()},
		APNs:    &push.APNsConfig{KeyFile: apns.KeyFile, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: apns.Topic, Endpoint: apns.URL, HTTPClient: apns.Client()},
		WebPush: &push.WebPushConfig{VAPIDKeyFile: web.VAPIDKeyFile, Subject: "mailto:ops@example.com", HTTPClient: web.Client()},
		Webhook: &push.WebhookConfig{SecretFile: hook.SecretFile, HTTPClient: hook.Client()},
	}
	cfg.PresenceGrace = 50 * time.Millisecond
	cfg.PushProgressEvery = 20 * time.Millisecond
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a, hello := dialConn(t, n, login(t, n, alice, "phone"))
	var h wire.Hello
	if err := wire.Unmarshal(hello, &h); err != nil || h.VAPID == "" {
		t.Fatalf("hello has no VAPID key: %+v %v", h, err)
	}
	sub := web.Subscribe(t)
	for dev, req := range map[string]map[string]any{
		"android": {"provider": "fcm", "token": "fcm-registration-token"},
		"iphone":  {"provider": "apns", "token": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"},
		"browser": {"provider": "webpush", "endpoint": sub.Endpoint, "p256dh": sub.P256dh, "auth": sub.Auth},
		"relay":   {"provider": "webhook", "token": hook.URL + "/bob"},
	} {
		c, _ := dialConn(t, n, login(t, n, bob, dev))
		req["t"] = "push.set"
		wantOK(t, "push.set "+dev, c.do(t, req))
		if dev == "android" {
			wantOK(t, "notify.set", c.do(t, map[string]any{"t": "notify.set", "preview": true}))
		}
		c.conn.NetConn().Close()
	}
	testwait.Eventually(t, "bob offline", func() bool {
		rep := a.do(t, map[string]any{"t": "presence.sub", "users": []uint64{bob.user}})
		return rep.Type == wire.TypeOK && len(rep.Presence) == 1 && !rep.Presence[0].Online
	})
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	wantOK(t, "send", a.do(t, map[string]any{"t": "send", "conv": rep.Info.ID, "cmid": "m1", "body": "lunch at noon?"}))

	testwait.Eventually(t, "a notification at every provider", func() bool {
		return len(fcm.Messages()) == 1 && len(apns.Notifications()) == 1 && len(web.Messages()) == 1 && len(hook.Delivered()) == 1
	}, testwait.Detail(func() string {
		return fmt.Sprintf("fcm %d (refused %v), apns %d, webpush %d (refused %v), webhook %d (refused %v)",
			len(fcm.Messages()), fcm.Rejections(), len(apns.Notifications()), len(web.Messages()), web.Rejections(),
			len(hook.Delivered()), hook.Rejections())
	}))
	if m := fcm.Messages()[0]; m.Token != "fcm-registration-token" || m.Notification == nil || m.Notification.Body != "lunch at noon?" {
		t.Fatalf("fcm message %+v", m)
	}
	if nt := apns.Notifications()[0]; nt.APS.Alert.Body != "lunch at noon?" || nt.APS.Badge == nil || *nt.APS.Badge != 1 {
		t.Fatalf("apns notification %+v", nt.APS)
	}
	if !strings.Contains(string(web.Messages()[0].Plaintext), "lunch at noon?") {
		t.Fatalf("web push plaintext %s", web.Messages()[0].Plaintext)
	}
	if d := hook.Delivered()[0]; d.Event.Data.Body != "lunch at noon?" || d.Path != "/bob" {
		t.Fatalf("webhook %+v", d.Event.Data)
	}
}

// TestConformancePush walks §4.7's request rules on a node that sends
// pushes (to a recorder).
func TestConformancePush(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.PushSender = &pushtest.Recorder{}
	n := startNodeWith(t, cfg)
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	a, _ := dialConn(t, n, login(t, n, alice, "phone"))
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID
	c, _ := dialConn(t, n, login(t, n, carol, "phone"))

	t.Run("§4.7 push.set takes a token for fcm, apns and webhook, and endpoint, p256dh, auth for webpush", func(t *testing.T) {
		for _, req := range []map[string]any{
			{"provider": "fcm", "token": "t"}, {"provider": "apns", "token": "ab"}, {"provider": "webhook", "token": "https://relay.example/x"},
			{"provider": "webpush", "endpoint": "https://push.example/1", "p256dh": "k", "auth": "a"},
		} {
			req["t"] = "push.set"
			rep := a.do(t, req)
			wantOK(t, fmt.Sprint(req), rep)
			if rep.Index == 0 {
				t.Fatalf("%v: no idx in the reply to a write", req)
			}
		}
	})
	t.Run("§4.7 push.set errors", func(t *testing.T) {
		for _, c := range []struct {
			req  map[string]any
			code wire.Code
		}{
			{map[string]any{"token": "t"}, wire.CodeInvalid},
			{map[string]any{"provider": "pigeon", "token": "t"}, wire.CodeInvalid},
			{map[string]any{"provider": "fcm"}, wire.CodeInvalid},
			{map[string]any{"provider": "fcm", "token": "t", "endpoint": "https://e"}, wire.CodeInvalid},
			{map[string]any{"provider": "webpush", "endpoint": "https://e", "p256dh": "k"}, wire.CodeInvalid},
			{map[string]any{"provider": "webpush", "endpoint": "https://e", "p256dh": "k", "auth": "a", "token": "t"}, wire.CodeInvalid},
			{map[string]any{"provider": "fcm", "token": strings.Repeat("t", 4097)}, wire.CodeTooLarge},
			{map[string]any{"provider": "webpush", "endpoint": strings.Repeat("e", 2049), "p256dh": "k", "auth": "a"}, wire.CodeTooLarge},
			{map[string]any{"provider": "webpush", "endpoint": "https://e", "p256dh": strings.Repeat("k", 257), "auth": "a"}, wire.CodeTooLarge},
		} {
			c.req["t"] = "push.set"
			wantCode(t, fmt.Sprint(c.req), a.do(t, c.req), c.code)
		}
	})
	t.Run("§4.7 push.clear and notify.set are answered ok with idx", func(t *testing.T) {
		for _, req := range []map[string]any{{"t": "push.clear"}, {"t": "notify.set", "preview": true, "dnd": true}} {
			rep := a.do(t, req)
			wantOK(t, fmt.Sprint(req), rep)
			if rep.Index == 0 {
				t.Fatalf("%v: no idx", req)
			}
		}
	})
	t.Run("§4.7 user.get of oneself shows preview and dnd, of anyone else not", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "user.get", "user": alice.user})
		if rep.UserInfo == nil || !rep.UserInfo.Preview || !rep.UserInfo.DND {
			t.Fatalf("oneself: %+v", rep.UserInfo)
		}
		rep = c.do(t, map[string]any{"t": "user.get", "user": alice.user})
		if rep.UserInfo == nil || rep.UserInfo.Preview || rep.UserInfo.DND {
			t.Fatalf("someone else: %+v", rep.UserInfo)
		}
	})
	t.Run("§4.7 conv.mute sets muted_until in the member's ConvInfo; 0 unmutes", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "conv.mute", "conv": dm, "until": 4_102_444_800_000})
		wantOK(t, "conv.mute", rep)
		if rep.Conv != dm || rep.Index == 0 {
			t.Fatalf("reply %+v", rep)
		}
		if info := a.do(t, map[string]any{"t": "conv.get", "conv": dm}).Info; info == nil || info.MutedUntil != 4_102_444_800_000 {
			t.Fatalf("conv.get: %+v", info)
		}
		wantOK(t, "unmute", a.do(t, map[string]any{"t": "conv.mute", "conv": dm, "until": 0}))
		if info := a.do(t, map[string]any{"t": "conv.get", "conv": dm}).Info; info == nil || info.MutedUntil != 0 {
			t.Fatalf("conv.get after unmute: %+v", info)
		}
	})
	t.Run("§4.7 conv.mute errors", func(t *testing.T) {
		wantCode(t, "no conv", a.do(t, map[string]any{"t": "conv.mute", "until": -1}), wire.CodeInvalid)
		wantCode(t, "until -2", a.do(t, map[string]any{"t": "conv.mute", "conv": dm, "until": -2}), wire.CodeInvalid)
		wantCode(t, "no such conversation", a.do(t, map[string]any{"t": "conv.mute", "conv": 999, "until": -1}), wire.CodeNotFound)
		wantCode(t, "not a member", c.do(t, map[string]any{"t": "conv.mute", "conv": dm, "until": -1}), wire.CodeNotMember)
	})
}
