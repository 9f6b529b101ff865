package browsertest

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestAttachmentAndDelete: alice attaches a picture (uploaded over HTTP
// with its progress shown, sent as an attachment); bob's page shows it,
// downloaded with his token; alice deletes a message for everyone and
// bob's page shows it deleted.
func TestAttachmentAndDelete(t *testing.T) {
	node := startNode(t)
	b := newBrowser(t)
	alice, bob := b.tab("alice"), b.tab("bob")
	alice.register(node.HTTP, "alice", "alice-password")
	bob.register(node.HTTP, "bob", "bob-password")
	alice.openDM("bob")
	bob.openConv("alice")

	png, _ := base64.StdEncoding.DecodeString("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
	file := filepath.Join(t.TempDir(), "dot.png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	alice.do("attach a picture", chromedp.SetUploadFiles("#file-input", []string{file}))
	bob.wait("bob sees the picture", `[...document.querySelectorAll("#msg-list .msg .att img")].some(i => i.alt === "dot.png" && i.complete && i.naturalWidth > 0)`)
	alice.wait("alice sees it sent", `[...document.querySelectorAll("#msg-list .msg.mine")].some(m => m.querySelector(".att img") && m.dataset.state !== "pending")`)

	alice.send("a slip of the tongue")
	bob.waitBodies("bob has both", []string{"", "a slip of the tongue"})
	alice.do("delete it", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[chromedp.Void](`window.confirm = () => true; [...document.querySelectorAll("#msg-list .msg.mine")].find(m => m.querySelector(".body").textContent === "a slip of the tongue").querySelector(".del").click()`)(ctx, t)
		return err
	}))
	bob.waitBodies("bob sees it deleted", []string{"", "Message deleted"})
	alice.waitBodies("alice sees it deleted", []string{"", "Message deleted"})
}
