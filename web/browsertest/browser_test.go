// Package browsertest drives the web app (web/) in headless Chromium with
// chromedp against real node processes: two people chatting, a tab going
// offline, a reload resuming from the stored cursor, and a tab whose node
// is killed moving to another node of a three-node cluster.
//
// The tests skip only when no Chromium can be found, and say so loudly;
// CI installs it (.ci/run). A step that fails saves a screenshot of every
// open tab and logs where.
package browsertest

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"parley/client"
	"parley/internal/nodeproc"
	"parley/wire"
)

var (
	parleyBin  string
	chromePath string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // listing (make fuzz does): nothing to build
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			chromePath = p
			break
		}
	}
	if chromePath == "" {
		fmt.Fprintln(os.Stderr, "!!!!!!!! web/browsertest: NO CHROMIUM FOUND (apt-get install chromium): THE BROWSER TESTS ARE SKIPPED !!!!!!!!")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "parley-browsertest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	if err := nodeproc.BuildTo(parleyBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needChrome(t *testing.T) {
	t.Helper()
	if chromePath == "" {
		t.Skip("SKIPPED: no Chromium found (apt-get install chromium)")
	}
}

// browser is one headless Chromium; each tab is in a browser context of its
// own (separate storage: another person or another device), unless it is
// opened with sameContextAs.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu   sync.Mutex
	tabs []*tab
}

type tab struct {
	b    *browser
	name string
	ctx  context.Context
}

func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	needChrome(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromePath),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1000, 800),
	}
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		cancelAlloc()
		t.Fatalf("starting %s: %v", chromePath, err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Screenshots outlive the test (t.TempDir would be removed with it).
	shots, err := os.MkdirTemp("", "parley-browsertest-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(shots)
		}
	})
	return &browser{t: t, ctx: ctx, shots: shots}
}

// tab opens a tab in a new browser context.
func (b *browser) tab(name string) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("tab %s: %v", name, err)
	}
	tb := &tab{b: b, name: name, ctx: ctx}
	b.mu.Lock()
	b.tabs = append(b.tabs, tb)
	b.mu.Unlock()
	return tb
}

// sameContext opens another tab in tb's browser context: the same
// storage, so the same signed-in device (two tabs of one browser).
func (tb *tab) sameContext(name string) *tab {
	b := tb.b
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(tb.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("tab %s: %v", name, err)
	}
	nt := &tab{b: b, name: name, ctx: ctx}
	b.mu.Lock()
	b.tabs = append(b.tabs, nt)
	b.mu.Unlock()
	return nt
}

// fail saves a screenshot of every tab and fails the test.
func (b *browser) fail(step string, err error) {
	b.t.Helper()
	b.mu.Lock()
	tabs := append([]*tab(nil), b.tabs...)
	b.mu.Unlock()
	var saved, states []string
	for _, tb := range tabs {
		ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](pageState))
		states = append(states, tb.name+": "+state)
		png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if serr != nil {
			continue
		}
		name := filepath.Join(b.shots, fmt.Sprintf("%s-%s.png", sanitize(step), tb.name))
		if os.WriteFile(name, png, 0o644) == nil {
			saved = append(saved, name)
		}
	}
	b.t.Fatalf("step %q: %v\npages:\n%s\nscreenshots: %s", step, err, strings.Join(states, "\n"), strings.Join(saved, " "))
}

// pageState sums up a page for a failure message: its data attributes,
// the open conversation and its messages.
const pageState = `JSON.stringify({data: {...document.body.dataset}, conv: document.getElementById("conv-title")?.textContent,
	messages: [...document.querySelectorAll("#msg-list .msg")].map(m => (m.dataset.seq || "-") + ":" + (m.dataset.state || "") + ":" + (m.querySelector(".body")?.textContent ?? m.textContent)),
	banner: document.getElementById("banner")?.textContent})`

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// stepTimeout bounds one step; generous, as a loaded machine may be slow
// (never wrong).
const stepTimeout = 90 * time.Second

// do runs actions on the tab as one step.
func (tb *tab) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	tb.b.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.b.fail(tb.name+": "+step, err)
	}
}

// wait polls a JavaScript condition until it is true.
func (tb *tab) wait(step, cond string) {
	tb.b.t.Helper()
	tb.do(step, poll(cond))
}

func poll(cond string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout-5*time.Second))(ctx, t)
		return chromedp.Void{}, err
	}
}

// eval evaluates a JavaScript expression whose value is JSON-decoded into v.
func (tb *tab) eval(step, expr string, v any) {
	tb.b.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage]("JSON.stringify("+expr+")"))
	if err == nil {
		var s string
		if err = json.Unmarshal(raw, &s); err == nil {
			err = json.Unmarshal([]byte(s), v)
		}
	}
	if err != nil {
		tb.b.fail(tb.name+": "+step, err)
	}
}

func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ---- the app's flows ----

func (tb *tab) register(url, user, password string) {
	tb.b.t.Helper()
	tb.do("open the page", chromedp.Navigate(url), chromedp.WaitVisible("#auth-user"))
	tb.do("register "+user,
		chromedp.SendKeys("#auth-user", user),
		chromedp.SendKeys("#auth-pass", password),
		chromedp.Click("#register-btn"),
	)
	tb.wait("synced after registering", `document.body.dataset.state === "synced"`)
}

func (tb *tab) login(url, user, password string) {
	tb.b.t.Helper()
	tb.do("open the page", chromedp.Navigate(url), chromedp.WaitVisible("#auth-user"))
	tb.do("log in "+user,
		chromedp.SendKeys("#auth-user", user),
		chromedp.SendKeys("#auth-pass", password),
		chromedp.Click("#login-btn"),
	)
	tb.wait("synced after logging in", `document.body.dataset.state === "synced"`)
}

func (tb *tab) openDM(peer string) {
	tb.b.t.Helper()
	tb.do("open a chat with "+peer, chromedp.SendKeys("#dm-user", peer), chromedp.Click("#dm-form button"))
	tb.wait("the chat with "+peer+" is open", `document.getElementById("conv-title").textContent === `+js(peer))
}

func (tb *tab) createGroup(name string, members ...string) {
	tb.b.t.Helper()
	tb.do("create group "+name,
		chromedp.Click(".group-new summary"),
		chromedp.SendKeys("#group-name", name),
		chromedp.SendKeys("#group-users", strings.Join(members, ",")),
		chromedp.Click("#group-form button"),
	)
	tb.wait("group "+name+" is open", `document.getElementById("conv-title").textContent === `+js(name))
}

// openConv clicks the conversation named name in the list, waiting for it.
func (tb *tab) openConv(name string) {
	tb.b.t.Helper()
	find := `[...document.querySelectorAll("#conv-list button")].find(b => b.querySelector(".conv-name").textContent === ` + js(name) + `)`
	tb.wait("conversation "+name+" is listed", find+` !== undefined`)
	tb.do("open "+name, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[chromedp.Void](find+`.click()`)(ctx, t)
		return err
	}))
	tb.wait(name+" is open", `document.getElementById("conv-title").textContent === `+js(name))
}

func (tb *tab) send(text string) {
	tb.b.t.Helper()
	tb.do("send "+text, chromedp.SendKeys("#composer-input", text), chromedp.Click("#send-btn"))
}

// bodies are the texts of the messages shown in the open conversation.
func (tb *tab) bodies() []string {
	tb.b.t.Helper()
	var out []string
	tb.eval("read the messages", `[...document.querySelectorAll("#msg-list .msg:not(.system) .body")].map(e => e.textContent)`, &out)
	return out
}

func (tb *tab) waitBodies(step string, want []string) {
	tb.b.t.Helper()
	w, _ := json.Marshal(want)
	tb.wait(step, `JSON.stringify([...document.querySelectorAll("#msg-list .msg:not(.system) .body")].map(e => e.textContent)) === `+js(string(w)))
}

// tick is the state of my message with this text: pending, sent, delivered, read.
func (tb *tab) waitTick(text, state string) {
	tb.b.t.Helper()
	tb.wait(fmt.Sprintf("%q shows %s", text, state), `[...document.querySelectorAll("#msg-list .msg.mine")].some(m => m.querySelector(".body").textContent === `+js(text)+` && m.dataset.state === `+js(state)+`)`)
}

// offline turns the tab's network off or on (DevTools network emulation
// and navigator.onLine, which fires the offline/online events).
func (tb *tab) offline(off bool) {
	tb.b.t.Helper()
	tb.do(fmt.Sprintf("network offline=%v", off), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		// Until the page sees it (navigator.onLine, and with it the
		// online/offline event the client listens to): on a loaded machine
		// one round of these calls was seen not to reach the page.
		for {
			if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, t, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
				MatchedNetworkConditions: []*network.Conditions{{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}},
			}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, t, network.OverrideNetworkState, network.OverrideNetworkStateParams{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}); err != nil {
				return err
			}
			online, err := chromedp.Evaluate[bool]("navigator.onLine")(ctx, t)
			if err != nil {
				return err
			}
			if online == !off {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}))
}

// ---- nodes ----

func startNode(t *testing.T) *nodeproc.Node {
	t.Helper()
	return nodeproc.Start(t, nodeproc.Options{Bin: parleyBin, Name: "n1"})
}

// startCluster starts three nodes, founds a cluster of them, and writes
// their WebSocket URLs into the file every node serves at /v1/config.
func startCluster(t *testing.T) []*nodeproc.Node {
	t.Helper()
	root := t.TempDir()
	token := "browsertest-admin-token-0123456789abcdef"
	tokenFile := filepath.Join(root, "admin.token")
	keyFile := filepath.Join(root, "cluster.key")
	urlsFile := filepath.Join(root, "ws-urls")
	for f, v := range map[string]string{tokenFile: token, keyFile: "browsertest-cluster-key-0123456789abcdef", urlsFile: ""} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var nodes []*nodeproc.Node
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, nodeproc.Start(t, nodeproc.Options{
			Bin: parleyBin, Dir: filepath.Join(root, name), Name: name, NotReady: true,
			Args: []string{"-id", name, "-bootstrap=false", "-admin-token-file", tokenFile, "-cluster-key-file", keyFile, "-web-ws-urls", "@" + urlsFile},
		}))
	}
	var servers []wire.ClusterServer
	var urls []string
	for i, n := range nodes {
		servers = append(servers, wire.ClusterServer{ID: fmt.Sprintf("n%d", i+1), Addr: n.RaftAddr})
		urls = append(urls, n.WS)
	}
	if err := os.WriteFile(urlsFile, []byte(strings.Join(urls, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := &client.Admin{Base: nodes[0].HTTP, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		err := admin.Init(ctx, servers)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster init: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the admin API until the node answers
	}
	for _, n := range nodes {
		if err := n.WaitReady(); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// Short names for the chromedp actions the scenarios use.
func chromedpSendKeys(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(sel, text)
}
func chromedpReload() chromedp.Action[chromedp.Void] { return chromedp.Reload() }

// snapshot saves a screenshot of the tab into $PARLEY_SCREENSHOTS, when set
// (to look at the app; nothing is checked).
func (tb *tab) snapshot(name string) {
	dir := os.Getenv("PARLEY_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
}
