package bench

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"parley/wire"
)

// helloThenClose is a WebSocket server that says hello and hangs up at
// once, so that a dialer sees the hello and the close close together.
type helloThenClose struct{ hello []byte }

func (h *helloThenClose) OnOpen(c *gws.Conn) {
	_ = c.WriteMessage(gws.OpcodeBinary, h.hello)
	_ = c.WriteClose(1000, nil)
}
func (*helloThenClose) OnClose(*gws.Conn, error)              {}
func (*helloThenClose) OnPing(*gws.Conn, []byte)              {}
func (*helloThenClose) OnPong(*gws.Conn, []byte)              {}
func (*helloThenClose) OnMessage(_ *gws.Conn, m *gws.Message) { m.Close() }

// OnClose is for connections dialBare returned: one that ended before
// dialBare could return it is an error and no drop, whichever way the race
// between the hello and the close goes.
func TestBareOnCloseOnlyForReturnedConns(t *testing.T) {
	hello, err := wire.Marshal(&wire.Hello{Type: wire.TypeHello, User: 1, Protocol: 1})
	if err != nil {
		t.Fatal(err)
	}
	up := gws.NewUpgrader(&helloThenClose{hello: hello}, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := up.Upgrade(w, r); err == nil {
			c.ReadLoop()
		}
	}))
	defer srv.Close()
	url := "ws://" + srv.Listener.Addr().String() + "/v1/ws"

	var returned, failed int
	for range 40 {
		var closes atomic.Int32
		c, err := dialBare(t.Context(), bareOptions{
			URL: url, Token: "t", Timeout: 5 * time.Second,
			OnClose: func(*bareConn) { closes.Add(1) },
		})
		if err == nil {
			returned++
			<-c.gone
			if !waitUntil(5*time.Second, func() bool { return closes.Load() == 1 }) {
				t.Fatalf("a returned connection ended with %d OnClose calls", closes.Load())
			}
			continue
		}
		failed++
		time.Sleep(20 * time.Millisecond) // a call, if any, comes right after the close
		if n := closes.Load(); n != 0 {
			t.Fatalf("dial failed (%v), yet OnClose ran %d times", err, n)
		}
	}
	t.Logf("%d connections returned, %d closed before dialBare returned", returned, failed)
}
