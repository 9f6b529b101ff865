package browsertest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestChat: alice and bob register in two browser contexts, open a 1:1 and
// a group, chat, see typing, presence and read ticks; alice's second
// device (a third context) sees the conversation too. Then bob goes
// offline while alice sends, comes back and shows every message once, in
// order; then bob reloads and resumes from his stored cursor.
func TestChat(t *testing.T) {
	node := startNode(t)
	b := newBrowser(t)
	alice, bob := b.tab("alice"), b.tab("bob")
	alice.do("open the page", chromedp.Navigate(node.HTTP), chromedp.WaitVisible("#auth-user"))
	alice.wait("the login form's controls have labels", accessible)
	alice.register(node.HTTP, "alice", "alice-password")
	bob.register(node.HTTP, "bob", "bob-password")

	// A 1:1: it appears in bob's list, live.
	alice.openDM("bob")
	bob.openConv("alice")
	alice.wait("bob is shown online", `document.querySelector("#conv-sub .presence").dataset.online === "true"`)
	bob.wait("alice is shown online", `document.querySelector("#conv-sub .presence").dataset.online === "true"`)

	// Typing, then the message, its ticks up to read (bob has it open).
	alice.do("type", chromedpSendKeys("#composer-input", "hel"))
	bob.wait("bob sees alice typing", `document.getElementById("typing").textContent === "alice is typing…"`)
	alice.do("type on and send with Enter", chromedpSendKeys("#composer-input", "lo bob"+kb.Enter))
	bob.waitBodies("bob sees the message", []string{"hello bob"})
	bob.wait("the typing indicator goes", `document.getElementById("typing").textContent === ""`)
	alice.waitTick("hello bob", "read")
	bob.send("hi alice")
	alice.waitBodies("alice sees the reply", []string{"hello bob", "hi alice"})
	bob.waitTick("hi alice", "read")

	// A group: bob sees it, both write, alice's message is read by all.
	alice.createGroup("team", "bob")
	bob.openConv("team")
	alice.send("welcome to team")
	bob.waitBodies("bob sees the group message", []string{"welcome to team"})
	alice.waitTick("welcome to team", "read")
	bob.send("thanks")
	alice.waitBodies("alice sees bob in the group", []string{"welcome to team", "thanks"})
	bob.wait("the group lists its members", `document.getElementById("conv-sub").textContent.startsWith("2 members")`)
	alice.snapshot("alice-group")
	alice.wait("every control has a label or a name", accessible)
	alice.wait("text contrast is at least 4.5:1 (3:1 for large text)", contrast)

	// A phone-sized screen: the list or the conversation, with a way back.
	bob.do("a phone-sized screen", chromedp.EmulateViewport(390, 760))
	bob.wait("only the conversation shows", `getComputedStyle(document.getElementById("sidebar")).display === "none" && getComputedStyle(document.getElementById("back-btn")).display !== "none" && document.documentElement.scrollWidth <= 390`)
	bob.snapshot("bob-phone-group")
	bob.do("back to the list", chromedp.Click("#back-btn"))
	bob.wait("only the list shows", `getComputedStyle(document.getElementById("sidebar")).display !== "none" && getComputedStyle(document.getElementById("conv")).display === "none"`)
	bob.snapshot("bob-phone-list")
	bob.do("a desktop screen", chromedp.EmulateViewport(1000, 800))

	// Alice's second device: another context, the same account.
	alice2 := b.tab("alice2")
	alice2.login(node.HTTP, "alice", "alice-password")
	alice2.openConv("bob")
	alice2.waitBodies("alice's second device shows the 1:1", []string{"hello bob", "hi alice"})
	alice2.send("from my other device")
	alice.openConv("bob")
	alice.waitBodies("alice's first device shows what her second sent", []string{"hello bob", "hi alice", "from my other device"})
	alice.wait("as her own message", `[...document.querySelectorAll("#msg-list .msg.mine .body")].some(e => e.textContent === "from my other device")`)

	// A second tab of alice's first browser: the same device, signed in
	// already; what one tab sends the other shows once.
	aliceTab2 := alice.sameContext("alice-tab2")
	aliceTab2.do("open the page in another tab", chromedp.Navigate(node.HTTP))
	aliceTab2.wait("signed in already", `document.body.dataset.state === "synced"`)
	aliceTab2.openConv("bob")
	aliceTab2.send("from the second tab")
	alice.waitBodies("the first tab shows it once", []string{"hello bob", "hi alice", "from my other device", "from the second tab"})
	aliceTab2.waitBodies("the second tab shows it once", []string{"hello bob", "hi alice", "from my other device", "from the second tab"})
	aliceTab2.do("close the second tab", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error { return chromedp.Cancel(aliceTab2.ctx) }))

	// The device list: alice signs her other device out; its page goes
	// back to the login form and says why.
	var revokedSession string
	alice2.eval("alice2's stored session", `localStorage.getItem("parley.session")`, &revokedSession)
	alice.do("open the device list", chromedp.Click("#devices summary"))
	alice.wait("two devices, this one marked", `document.querySelectorAll("#device-list li").length === 2 && [...document.querySelectorAll("#device-list li span")].filter(s => s.textContent.includes("(this device)")).length === 1`)
	alice.do("sign the other device out", chromedp.Click("#device-list li button"))
	alice2.wait("the other device is signed out", `!document.getElementById("auth").hidden && document.getElementById("auth-error").textContent.includes("revoked")`)
	alice.wait("one device left", `document.querySelectorAll("#device-list li").length === 1`)
	// Reopened later with the revoked session: the handshakes fail without
	// a status the page can read; it asks GET /v1/token and returns to the
	// login form instead of retrying for ever.
	alice2.do("put the revoked session back and reload", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[chromedp.Void](`localStorage.setItem("parley.session", `+js(revokedSession)+`)`)(ctx, t)
		return err
	}), chromedpReload())
	alice2.wait("a revoked session ends at the login form", `!document.getElementById("auth").hidden && document.getElementById("auth-error").textContent.includes("log in again")`)

	// Bob goes offline; alice sends; bob comes back and shows each once, in order.
	bob.openConv("alice")
	bob.waitBodies("bob's 1:1 before going offline", []string{"hello bob", "hi alice", "from my other device", "from the second tab"})
	bob.offline(true)
	bob.wait("bob's page shows it is offline", `!document.getElementById("banner").hidden && document.body.dataset.state !== "synced"`)
	want := []string{"hello bob", "hi alice", "from my other device", "from the second tab"}
	for i := range 5 {
		text := fmt.Sprintf("while you were away %d", i)
		alice.send(text)
		want = append(want, text)
	}
	alice.waitTick("while you were away 4", "sent")
	if got := bob.bodies(); !slices.Equal(got, want[:4]) {
		t.Fatalf("bob got messages while offline: %q", got)
	}
	bob.offline(false)
	bob.wait("bob is back", `document.body.dataset.state === "synced" && document.getElementById("banner").hidden`)
	bob.waitBodies("bob shows every message once, in order", want)
	alice.waitTick("while you were away 4", "read")

	// A reload resumes from the stored cursor: not from 0, nothing twice.
	var cursor string
	bob.eval("bob's cursor", `document.body.dataset.cursor`, &cursor)
	alice.send("during the reload")
	want = append(want, "during the reload")
	bob.do("reload", chromedpReload())
	bob.wait("bob's page syncs again", `document.body.dataset.state === "synced"`)
	var since string
	bob.eval("the sync's since", `document.body.dataset.syncSince`, &since)
	if since == "" || since == "0" {
		t.Fatalf("after a reload bob synced from %q, want his stored cursor (was %s)", since, cursor)
	}
	bob.openConv("alice")
	bob.waitBodies("after the reload bob shows every message once, in order", want)
}

// accessible is true when every visible form control has a label and every
// visible button a name (its text or aria-label).
const accessible = `(() => {
	const shown = (e) => e.getClientRects().length > 0;
	const controls = [...document.querySelectorAll("input:not([type=file]), textarea, select")].filter(shown);
	const buttons = [...document.querySelectorAll("button, summary")].filter(shown);
	return controls.every(c => c.labels && c.labels.length > 0) && buttons.every(b => (b.getAttribute("aria-label") || b.textContent).trim() !== "");
})()`

// contrast is true when the text of every visible element with its own text
// has a contrast ratio of at least 4.5:1 against its background (3:1 for
// large text), WCAG 2.1 success criterion 1.4.3.
const contrast = `(() => {
	const rgb = (c) => { const m = c.match(/[\d.]+/g).map(Number); return { r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1 }; };
	const lum = ({ r, g, b }) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
	const bg = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.a > 0.5) return c; } return { r: 255, g: 255, b: 255, a: 1 }; };
	const bad = [];
	for (const el of document.querySelectorAll("body *")) {
		if (!el.getClientRects().length || el.closest("[hidden]") || el.disabled) continue;
		const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
		if (!own) continue;
		const cs = getComputedStyle(el);
		const l1 = lum(rgb(cs.color)), l2 = lum(bg(el));
		const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
		const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
		const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
		if (ratio < need) bad.push(el.tagName + "." + el.className + " " + ratio.toFixed(2));
	}
	window.__contrast = bad;
	return bad.length === 0;
})()`
