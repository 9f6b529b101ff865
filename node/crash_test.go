package node_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"parley/internal/nodeproc"
	"parley/wire"
)

// TestKill9LosesNoAcknowledgedMessage runs senders against a node process,
// kills it with SIGKILL in the middle, restarts it on the same data, lets the
// senders finish (the SDK retries with the same cmid), and checks that every
// acknowledged message is stored exactly once with its acknowledged seq and
// that the conversation's seqs are gap-free.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	d := nodeproc.Start(t, nodeproc.Options{})
	n := &remote{http: d.HTTP}
	alice, bob := n.register(t, "alice"), n.register(t, "bob")
	url := d.WS
	ca := dial(t, []string{url}, n.login(t, alice, "phone"), 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}

	const senders, perSender = 4, 60
	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // cmid -> seq
		wg    sync.WaitGroup
		half  = make(chan struct{})
		once  sync.Once
	)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				cmid := fmt.Sprintf("s%d-%d", s, i)
				rep, err := ca.SendWithID(ctx, dm.ID, cmid, "m "+cmid)
				if err != nil {
					t.Errorf("send %s: %v", cmid, err)
					return
				}
				mu.Lock()
				if prev, ok := acked[cmid]; ok && prev != rep.Seq {
					t.Errorf("cmid %s acked with seq %d and %d", cmid, prev, rep.Seq)
				}
				acked[cmid] = rep.Seq
				if len(acked) == senders*perSender/2 {
					once.Do(func() { close(half) })
				}
				mu.Unlock()
			}
		}()
	}
	<-half
	d.Kill9()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Read the whole conversation back after the restart.
	cb := dial(t, []string{url}, n.login(t, bob, "laptop"), 0)
	var evs []wire.Event
	var seq uint64
	for {
		page, more, err := cb.History(ctx, dm.ID, wire.DirAfter, seq, wire.MaxHistoryLimit)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, page...)
		if len(page) > 0 {
			seq = page[len(page)-1].Seq
		}
		if !more {
			break
		}
	}
	stored := map[string]uint64{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("seq gap: event %d has seq %d", i, e.Seq)
		}
		if e.Kind != wire.KindMessage {
			continue
		}
		if _, dup := stored[e.ClientMsgID]; dup {
			t.Fatalf("cmid %s stored twice", e.ClientMsgID)
		}
		stored[e.ClientMsgID] = e.Seq
	}
	if len(acked) != senders*perSender {
		t.Fatalf("%d acks, want %d", len(acked), senders*perSender)
	}
	for cmid, s := range acked {
		if got, ok := stored[cmid]; !ok || got != s {
			t.Fatalf("acked %s at seq %d, stored at %d (present %v)", cmid, s, got, ok)
		}
	}
}

// remote is the HTTP accounts API of a node in another process.
type remote struct{ http string }

func (r *remote) register(t *testing.T, name string) account {
	t.Helper()
	var out struct {
		UserID uint64 `json:"user_id"`
	}
	pw := "password-" + name
	if code := postJSON(t, r.http+"/v1/register", map[string]string{"username": name, "password": pw}, &out); code != http.StatusCreated {
		t.Fatalf("register %s: HTTP %d", name, code)
	}
	return account{user: out.UserID, name: name, password: pw}
}

func (r *remote) login(t *testing.T, a account, device string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	if code := postJSON(t, r.http+"/v1/login", map[string]string{"username": a.name, "password": a.password, "device": device}, &out); code != http.StatusOK {
		t.Fatalf("login %s: HTTP %d", a.name, code)
	}
	return out.Token
}
