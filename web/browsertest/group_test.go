package browsertest

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// TestGroupMembership: alice creates a group with bob, adds carol from the
// members panel, removes bob; carol leaves. Every page shows the changes
// as they happen.
func TestGroupMembership(t *testing.T) {
	node := startNode(t)
	b := newBrowser(t)
	alice, bob, carol := b.tab("alice"), b.tab("bob"), b.tab("carol")
	alice.register(node.HTTP, "alice", "alice-password")
	bob.register(node.HTTP, "bob", "bob-password")
	carol.register(node.HTTP, "carol", "carol-password")

	alice.createGroup("crew", "bob")
	bob.openConv("crew")
	alice.do("open the members panel", chromedp.Click("#members-btn"))
	alice.wait("two members listed, alice admin", `document.querySelectorAll("#member-list li").length === 2 && document.getElementById("member-list").textContent.includes("alice (you) · admin")`)
	alice.do("add carol", chromedp.SendKeys("#add-user", "carol"), chromedp.Click("#add-form button"))
	carol.openConv("crew")
	alice.wait("three members", `document.querySelectorAll("#member-list li").length === 3`)
	bob.wait("bob sees carol added", `[...document.querySelectorAll("#msg-list .msg.system")].some(e => e.textContent === "alice added carol")`)
	alice.send("hello crew")
	carol.waitBodies("carol gets the group's messages", []string{"hello crew"})

	alice.do("remove bob", chromedp.Click(`#member-list button[aria-label="Remove bob"]`))
	bob.wait("bob is out", `document.getElementById("conv-sub").textContent === "You are no longer a member"`)
	carol.wait("carol sees bob removed", `[...document.querySelectorAll("#msg-list .msg.system")].some(e => e.textContent === "alice removed bob")`)
	alice.send("without bob")
	carol.waitBodies("carol gets it", []string{"hello crew", "without bob"})

	carol.do("open carol's members panel", chromedp.Click("#members-btn"))
	carol.do("leave", chromedp.Click("#leave-btn"))
	alice.wait("alice sees carol leave", `[...document.querySelectorAll("#msg-list .msg.system")].some(e => e.textContent === "carol left")`)
	alice.wait("one member left", `document.getElementById("conv-sub").textContent.startsWith("1 members")`)
	bob.wait("bob never got the later message", `![...document.querySelectorAll("#msg-list .body")].some(e => e.textContent === "without bob")`)
}
