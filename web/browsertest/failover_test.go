package browsertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestFailover: three nodes; every node's /v1/config names all three.
// Bob's tab is connected to one of them; that node is killed (kill -9)
// while alice sends. Bob's tab moves to another node and shows every
// message once, in order.
func TestFailover(t *testing.T) {
	nodes := startCluster(t)
	b := newBrowser(t)
	alice, bob := b.tab("alice"), b.tab("bob")
	// Pages come from different nodes; each connects to any of the three.
	alice.register(nodes[0].HTTP, "alice", "alice-password")
	bob.register(nodes[1].HTTP, "bob", "bob-password")
	var urls string
	bob.eval("the WebSocket URLs", `document.body.dataset.wsUrls`, &urls)
	for _, n := range nodes {
		if !strings.Contains(urls, n.WS) {
			t.Fatalf("the page knows %q, not %s", urls, n.WS)
		}
	}
	alice.openDM("bob")
	bob.openConv("alice")
	want := []string{}
	for i := range 3 {
		text := fmt.Sprintf("before %d", i)
		alice.send(text)
		want = append(want, text)
	}
	bob.waitBodies("bob has the first messages", want)

	var on string
	bob.eval("bob's node", `document.body.dataset.node`, &on)
	victim := -1
	for i := range nodes {
		if fmt.Sprintf("n%d", i+1) == on {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("bob's page is on node %q", on)
	}
	nodes[victim].Kill9()
	// Bob writes at once, on the dead connection: his page keeps the
	// message pending and sends it again, with its cmid, on the next node.
	bob.send("bob after the kill")
	for i := range 5 {
		text := fmt.Sprintf("after %d", i)
		alice.send(text)
		want = append(want, text)
	}
	bob.wait("bob's tab moved to another node", `document.body.dataset.state === "synced" && document.body.dataset.node !== `+js(on))
	bob.waitTick("bob after the kill", "read")
	// Both pages: alice's messages once each and in order, bob's once,
	// wherever his retry landed among them.
	wantJSON, _ := json.Marshal(want)
	for _, p := range []*tab{alice, bob} {
		p.wait("every message once, in order", `(() => {
			const all = [...document.querySelectorAll("#msg-list .msg:not(.system) .body")].map(e => e.textContent);
			const bobs = all.filter(x => x === "bob after the kill").length;
			return bobs === 1 && JSON.stringify(all.filter(x => x !== "bob after the kill")) === `+js(string(wantJSON))+`;
		})()`)
	}
	alice.waitTick("after 4", "read")
}
