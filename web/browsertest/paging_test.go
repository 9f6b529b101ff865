package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"parley/client"
)

type account struct {
	UserID   uint64 `json:"user_id"`
	Token    string `json:"token"`
	DeviceID uint64 `json:"device_id"`
	Idx      uint64 `json:"idx"`
}

func postJSON(t *testing.T, url string, body any, want int) account {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a account
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPagingUnreadLastSeen: carol (the Go SDK) writes 130 messages to
// alice; alice's page gets them all, keeps the latest 100 over a reload,
// and pages the older ones from history as she scrolls up; messages that
// come while she looks elsewhere show as unread; carol leaving shows her
// last seen time.
func TestPagingUnreadLastSeen(t *testing.T) {
	node := startNode(t)
	postJSON(t, node.HTTP+"/v1/register", map[string]string{"username": "alice", "password": "alice-password"}, 201)
	postJSON(t, node.HTTP+"/v1/register", map[string]string{"username": "carol", "password": "carol-password"}, 201)
	alice := postJSON(t, node.HTTP+"/v1/login", map[string]string{"username": "alice", "password": "alice-password"}, 200)
	carolAcc := postJSON(t, node.HTTP+"/v1/login", map[string]string{"username": "carol", "password": "carol-password"}, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	carol, err := client.Dial(ctx, client.Config{URLs: []string{node.WS}, Token: carolAcc.Token, MinIndex: carolAcc.Idx})
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	dm, err := carol.OpenDirect(ctx, alice.UserID)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 130 {
		body := fmt.Sprintf("m%03d", i)
		if _, err := carol.Send(ctx, dm.ID, body); err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
	}

	b := newBrowser(t)
	page := b.tab("alice")
	page.login(node.HTTP, "alice", "alice-password")
	page.openConv("carol")
	page.waitBodies("alice has all 130 messages", want)

	// A reload: the cache keeps the latest 100; scrolling up pages the rest.
	page.do("reload", chromedpReload())
	page.wait("synced again", `document.body.dataset.state === "synced"`)
	page.openConv("carol")
	page.waitBodies("the cached latest 100", want[30:])
	page.do("scroll to the top", poll(`(document.getElementById("messages").scrollTop = 0, document.querySelectorAll("#msg-list .msg:not(.system)").length === 130)`))
	page.waitBodies("every message once, in order, after paging", want)

	// Unread: carol writes while alice is in another conversation.
	page.createGroup("elsewhere")
	for i := range 3 {
		if _, err := carol.Send(ctx, dm.ID, fmt.Sprintf("unread %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	find := `[...document.querySelectorAll("#conv-list button")].find(b => b.querySelector(".conv-name").textContent === "carol")`
	page.wait("3 unread from carol", find+`.querySelector(".unread")?.textContent === "3"`)
	page.wait("the title counts them", `document.title === "(3) Parley"`)
	page.wait("the last message in the list", find+`.querySelector(".conv-last").textContent === "unread 2"`)
	page.openConv("carol")
	page.wait("no unread once open", `!`+find+`.querySelector(".unread")?.textContent`)

	// Presence: carol online, then gone: alice sees when she was last seen.
	page.wait("carol online", `document.querySelector("#conv-sub .presence").dataset.online === "true"`)
	carol.Close()
	page.wait("carol offline, with a last seen time", `document.querySelector("#conv-sub .presence").dataset.online === "false" && document.getElementById("presence-text").textContent.includes("last seen")`)
}
