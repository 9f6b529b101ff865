package node_test

// The conformance test walks docs/PROTOCOL.md section by section against a
// real node, over a raw WebSocket and raw HTTP: one check per normative
// sentence it can check, each named after its section. A client author
// reads the names as a checklist; a failure names the sentence the server
// (or the document) got wrong.

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/vmihailenco/msgpack/v5"

	"parley/node"
	"parley/wire"
)

// conn is a raw protocol connection that keeps the frames it skipped while
// waiting for a reply, so that events can be looked at afterwards.
type conn struct {
	*rawConn
	id      uint64
	pending [][]byte
}

func dialConn(t *testing.T, n *node.Node, token string) (*conn, []byte) {
	t.Helper()
	r := &rawConn{frames: make(chan []byte, 1024), closed: make(chan error, 1)}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	c, _, err := gws.NewClient(r, &gws.ClientOption{Addr: n.WSURL(), RequestHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	r.conn = c
	go c.ReadLoop()
	t.Cleanup(func() { c.NetConn().Close() })
	return &conn{rawConn: r}, r.next(t)
}

// send writes one request (its id set from the connection's counter unless
// the map has one) and returns the id.
func (c *conn) send(t *testing.T, m map[string]any) uint64 {
	t.Helper()
	if _, ok := m["id"]; !ok {
		c.id++
		m["id"] = c.id
	}
	c.request(t, m)
	id, _ := m["id"].(uint64)
	return id
}

// do sends a request and waits for its reply.
func (c *conn) do(t *testing.T, m map[string]any) wire.Reply {
	t.Helper()
	return c.replyTo(t, c.send(t, m))
}

// doRaw writes raw bytes and waits for the reply with id.
func (c *conn) doRaw(t *testing.T, b []byte, id uint64) wire.Reply {
	t.Helper()
	c.write(t, b)
	return c.replyTo(t, id)
}

func (c *conn) replyTo(t *testing.T, id uint64) wire.Reply {
	t.Helper()
	b := c.frame(t, func(b []byte, typ string) bool {
		if typ != wire.TypeOK && typ != wire.TypeError {
			return false
		}
		var rep wire.Reply
		return wire.Unmarshal(b, &rep) == nil && rep.ID == id
	})
	var rep wire.Reply
	if err := wire.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// frame returns the first frame, pending or new, that pred accepts; the
// others stay pending.
func (c *conn) frame(t *testing.T, pred func(b []byte, typ string) bool) []byte {
	t.Helper()
	for i, b := range c.pending {
		if typ, _ := wire.PeekType(b); pred(b, typ) {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return b
		}
	}
	for {
		b := c.next(t)
		if typ, _ := wire.PeekType(b); pred(b, typ) {
			return b
		}
		c.pending = append(c.pending, b)
	}
}

// event waits for an ev frame of conv with seq.
func (c *conn) event(t *testing.T, conv, seq uint64) wire.Event {
	t.Helper()
	var ev wire.Event
	c.frame(t, func(b []byte, typ string) bool {
		return typ == wire.TypeEvent && wire.Unmarshal(b, &ev) == nil && ev.Conv == conv && ev.Seq == seq
	})
	return ev
}

// generic decodes a frame into a map, to see which keys it has.
func generic(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wantOK(t *testing.T, what string, rep wire.Reply) {
	t.Helper()
	if rep.Type != wire.TypeOK {
		t.Fatalf("%s: %s %s (%s), want ok", what, rep.Type, rep.Code, rep.Message)
	}
}

func wantCode(t *testing.T, what string, rep wire.Reply, code wire.Code) {
	t.Helper()
	if rep.Type != wire.TypeError || rep.Code != code {
		t.Fatalf("%s: %s %q (%s), want error %q", what, rep.Type, rep.Code, rep.Message, code)
	}
}

// httpJSON posts a body and returns the status and the decoded JSON answer.
func httpJSON(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// rawHandshake sends a hand-written upgrade request and returns the status
// line's code, the headers and the body.
func rawHandshake(t *testing.T, n *node.Node, path string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	return rawHandshakeFrom(t, nil, n, path, headers...)
}

// rawHandshakeFrom is rawHandshake from the source address from (nil: any).
func rawHandshakeFrom(t *testing.T, from net.IP, n *node.Node, path string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimSuffix(n.WSURL(), "/v1/ws"), "ws://")
	d := net.Dialer{}
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n" + strings.Join(headers, "") + "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

const (
	upgradeHeaders = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)

// handshakeJSON checks a refused upgrade's body: §2's JSON error with the
// code and a message, returned for checks of its text.
func handshakeJSON(t *testing.T, body []byte, code wire.Code) string {
	t.Helper()
	var e struct{ Code, Message string }
	if err := json.Unmarshal(body, &e); err != nil || e.Code != string(code) || e.Message == "" {
		t.Fatalf("body %q, want JSON with code %q", body, code)
	}
	return e.Message
}

func TestConformance(t *testing.T) {
	n := startNode(t, t.TempDir())
	url := n.HTTPURL()
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ta, tb := login(t, n, alice, "phone"), login(t, n, bob, "phone")
	a, helloA := dialConn(t, n, ta)
	b, _ := dialConn(t, n, tb)

	// §1 Accounts.
	t.Run("§1 usernames are case-folded at register", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/register", `{"username":"Dave","password":"password-dave"}`)
		if st != 201 || m["username"] != "dave" {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§1 login folds case like register", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/login", `{"username":"DAVE","password":"password-dave"}`)
		if st != 200 || m["token"] == nil {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§1 errors are JSON with code and message", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/register", `{"username":"x","password":"password-x"}`)
		if st != 400 || m["code"] != string(wire.CodeInvalid) || m["message"] == "" {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§1 a password of a length never registered is 401 at login", func(t *testing.T) {
		for _, pw := range []string{"", "short", strings.Repeat("p", 300)} {
			st, m := httpJSON(t, url+"/v1/login", `{"username":"alice","password":"`+pw+`"}`)
			if st != 401 || m["code"] != string(wire.CodeUnauthorized) {
				t.Fatalf("password of %d bytes: %d %v", len(pw), st, m)
			}
		}
	})
	t.Run("§1 register with a password under 8 bytes is 400 invalid", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/register", `{"username":"erin","password":"short"}`)
		if st != 400 || m["code"] != string(wire.CodeInvalid) {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§1 unknown user and wrong password are both 401", func(t *testing.T) {
		for _, body := range []string{`{"username":"nobody","password":"password-x"}`, `{"username":"alice","password":"wrong-password"}`} {
			if st, m := httpJSON(t, url+"/v1/login", body); st != 401 || m["code"] != string(wire.CodeUnauthorized) {
				t.Fatalf("%s: %d %v", body, st, m)
			}
		}
	})
	t.Run("§1 an empty device name is stored as default", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/login", `{"username":"dave","password":"password-dave","device":""}`)
		if st != 200 {
			t.Fatalf("%d %v", st, m)
		}
		d, _ := dialConn(t, n, m["token"].(string))
		rep := d.do(t, map[string]any{"t": "device.list"})
		wantOK(t, "device.list", rep)
		var cur *wire.DeviceInfo
		for i := range rep.Devices {
			if rep.Devices[i].Current {
				cur = &rep.Devices[i]
			}
		}
		if cur == nil || cur.Name != "default" {
			t.Fatalf("devices %+v", rep.Devices)
		}
	})
	t.Run("§1 a device name over 64 bytes is 400 invalid", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/login", `{"username":"dave","password":"password-dave","device":"`+strings.Repeat("d", 65)+`"}`)
		if st != 400 || m["code"] != string(wire.CodeInvalid) {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§1 a body over 4096 bytes is 413 too_large", func(t *testing.T) {
		st, m := httpJSON(t, url+"/v1/login", `{"username":"dave","password":"`+strings.Repeat("p", 5000)+`"}`)
		if st != 413 || m["code"] != string(wire.CodeTooLarge) {
			t.Fatalf("%d %v", st, m)
		}
	})

	// §2 Connecting.
	t.Run("§2 handshake without token is 401", func(t *testing.T) {
		st, _, body := rawHandshake(t, n, "/v1/ws", upgradeHeaders)
		if st != 401 {
			t.Fatalf("status %d", st)
		}
		handshakeJSON(t, body, wire.CodeUnauthorized)
	})
	t.Run("§2 handshake with a bad token is 401", func(t *testing.T) {
		st, _, body := rawHandshake(t, n, "/v1/ws?token=garbage", upgradeHeaders)
		if st != 401 {
			t.Fatalf("status %d", st)
		}
		handshakeJSON(t, body, wire.CodeUnauthorized)
	})
	t.Run("§2 a plain GET is 426 before the token is looked at", func(t *testing.T) {
		for _, path := range []string{"/v1/ws", "/v1/ws?token=" + ta} {
			st, h, body := rawHandshake(t, n, path)
			if st != 426 || h.Get("Upgrade") != "websocket" {
				t.Fatalf("%s: status %d, headers %v", path, st, h)
			}
			handshakeJSON(t, body, wire.CodeInvalid)
		}
	})
	t.Run("§2 another WebSocket version is 426", func(t *testing.T) {
		st, h, body := rawHandshake(t, n, "/v1/ws?token="+ta, strings.Replace(upgradeHeaders, "Version: 13", "Version: 8", 1))
		if st != 426 || h.Get("Sec-WebSocket-Version") != "13" {
			t.Fatalf("status %d, headers %v", st, h)
		}
		handshakeJSON(t, body, wire.CodeInvalid)
	})
	t.Run("§2 an upgrade without a key is 400", func(t *testing.T) {
		st, _, body := rawHandshake(t, n, "/v1/ws?token="+ta, strings.Replace(upgradeHeaders, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1))
		if st != 400 {
			t.Fatalf("status %d", st)
		}
		handshakeJSON(t, body, wire.CodeInvalid)
	})
	t.Run("§2 a user over the per-account connection cap gets 429 with Retry-After", func(t *testing.T) {
		tc := login(t, n, carol, "tablet")
		for range 20 { // the default cap, all devices together
			dialConn(t, n, tc)
		}
		st, h, body := rawHandshake(t, n, "/v1/ws?token="+tc, upgradeHeaders)
		if st != 429 || h.Get("Retry-After") == "" {
			t.Fatalf("status %d, headers %v", st, h)
		}
		handshakeJSON(t, body, wire.CodeRateLimited)
	})
	t.Run("§2 any other path is 404", func(t *testing.T) {
		st, _, body := rawHandshake(t, n, "/v2/ws?token="+ta, upgradeHeaders)
		if st != 404 {
			t.Fatalf("status %d", st)
		}
		handshakeJSON(t, body, wire.CodeNotFound)
	})
	t.Run("§2 the token may come as a query parameter", func(t *testing.T) {
		st, _, _ := rawHandshake(t, n, "/v1/ws?token="+ta, upgradeHeaders)
		if st != 101 {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("§2 the server first sends hello", func(t *testing.T) {
		if typ, err := wire.PeekType(helloA); err != nil || typ != wire.TypeHello {
			t.Fatalf("first frame %q %v", typ, err)
		}
	})
	t.Run("§2 a text message closes 1003", func(t *testing.T) {
		c, _ := dialConn(t, n, ta)
		if err := c.conn.WriteMessage(gws.OpcodeText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		_, err := c.untilClosed(t)
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 1003 {
			t.Fatalf("closed with %v", err)
		}
	})
	t.Run("§2 a message over max_frame closes 1009", func(t *testing.T) {
		c, _ := dialConn(t, n, ta)
		_ = c.conn.WriteMessage(gws.OpcodeBinary, make([]byte, wire.MaxFrameBytes+1))
		_, err := c.untilClosed(t)
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 1009 {
			t.Fatalf("closed with %v", err)
		}
	})

	// §3 Frames.
	t.Run("§3 the reply carries the request's id", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "ping", "id": uint64(4242)})
		wantOK(t, "ping", rep)
		if rep.ID != 4242 {
			t.Fatalf("id %d", rep.ID)
		}
	})
	t.Run("§3 a map without t is bad_frame with the id echoed", func(t *testing.T) {
		wantCode(t, "no t", a.do(t, map[string]any{"id": uint64(7001)}), wire.CodeBadFrame)
	})
	t.Run("§3 a field of the wrong type is bad_frame with the id echoed", func(t *testing.T) {
		wantCode(t, "conv as string", a.do(t, map[string]any{"t": "history", "conv": "seven", "id": uint64(7002)}), wire.CodeBadFrame)
	})
	t.Run("§3 a float where an integer belongs is bad_frame", func(t *testing.T) {
		wantCode(t, "float conv", a.do(t, map[string]any{"t": "history", "conv": 1.5, "id": uint64(7003)}), wire.CodeBadFrame)
	})
	t.Run("§3 bytes after the map are bad_frame with the id echoed", func(t *testing.T) {
		frame, _ := msgpack.Marshal(map[string]any{"t": "ping", "id": uint64(7004)})
		wantCode(t, "trailing", a.doRaw(t, append(frame, 0xc0), 7004), wire.CodeBadFrame)
	})
	t.Run("§3 a frame that is not a map is bad_frame with id 0", func(t *testing.T) {
		frame, _ := msgpack.Marshal([]any{1, 2})
		wantCode(t, "array", a.doRaw(t, frame, 0), wire.CodeBadFrame)
	})
	t.Run("§3 an id above 2^53-1 is invalid with id 0", func(t *testing.T) {
		wantCode(t, "big id", a.doRaw(t, mustPack(t, map[string]any{"t": "ping", "id": uint64(1 << 53)}), 0), wire.CodeInvalid)
	})
	t.Run("§3 a negative unsigned value is invalid", func(t *testing.T) {
		wantCode(t, "negative conv", a.do(t, map[string]any{"t": "history", "conv": -1, "id": uint64(7005)}), wire.CodeInvalid)
	})
	t.Run("§3 unknown keys are ignored", func(t *testing.T) {
		wantOK(t, "ping", a.do(t, map[string]any{"t": "ping", "zzz": map[string]any{"a": []any{1, "x"}}}))
	})
	t.Run("§3 nil stands for the zero value", func(t *testing.T) {
		wantOK(t, "ping", a.do(t, map[string]any{"t": "ping", "conv": nil}))
	})
	t.Run("§3 an unknown t is unknown_type", func(t *testing.T) {
		wantCode(t, "teleport", a.do(t, map[string]any{"t": "teleport"}), wire.CodeUnknownType)
	})

	// §4.1 hello.
	t.Run("§4.1 hello carries v, user, dev, node, idx, ping_ms and limits", func(t *testing.T) {
		var h wire.Hello
		if err := wire.Unmarshal(helloA, &h); err != nil {
			t.Fatal(err)
		}
		m := generic(t, helloA)
		for _, k := range []string{"t", "v", "user", "dev", "node", "idx", "ping_ms", "limits"} {
			if _, ok := m[k]; !ok {
				t.Errorf("hello lacks %q", k)
			}
		}
		if h.Protocol != 1 || h.User != alice.user || h.Device == 0 || h.Node == "" || h.PingMS <= 0 {
			t.Fatalf("hello %+v", h)
		}
		l := h.Limits
		if l.MaxFrameBytes != wire.MaxFrameBytes || l.MaxBodyBytes != wire.MaxBodyBytes || l.Reads != wire.MaxReadsInFlight ||
			l.MaxReplyBytes <= 0 || l.MaxReplyBytes > wire.MaxReplyBytes || l.RatePerSecond <= 0 || l.RateBurst <= 0 {
			t.Fatalf("limits %+v", l)
		}
	})

	// §4.2 and §4.3: a 1:1, a group, their events and errors.
	dmRep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", dmRep)
	dm := dmRep.Info.ID
	t.Run("§4.3 a 1:1 starts with a created event", func(t *testing.T) {
		ev := a.event(t, dm, 1)
		if ev.Kind != wire.KindCreated || ev.Type != wire.TypeEvent || ev.From != alice.user || len(ev.Users) != 1 || ev.Users[0] != bob.user {
			t.Fatalf("first event %+v", ev)
		}
	})
	send := func(c *conn, conv uint64, cmid, body string) wire.Reply {
		return c.do(t, map[string]any{"t": "send", "conv": conv, "cmid": cmid, "body": body})
	}
	first := send(a, dm, "m1", "hello bob")
	t.Run("§4.2 send replies conv, seq, ts, idx, cmid", func(t *testing.T) {
		wantOK(t, "send", first)
		if first.Conv != dm || first.ClientMsgID != "m1" || first.Ts == 0 || first.Index == 0 || first.Duplicate {
			t.Fatalf("reply %+v", first)
		}
	})
	t.Run("§4.3 a 1:1's first message is seq 2", func(t *testing.T) {
		if first.Seq != 2 {
			t.Fatalf("seq %d", first.Seq)
		}
	})
	t.Run("§4.3 the sending device gets the ev frame too", func(t *testing.T) {
		ev := a.event(t, dm, 2)
		if ev.Body != "hello bob" || ev.From != alice.user || ev.ClientMsgID != "m1" || ev.Index != first.Index {
			t.Fatalf("event %+v", ev)
		}
		if got := b.event(t, dm, 2); got.Body != "hello bob" {
			t.Fatalf("bob got %+v", got)
		}
	})
	t.Run("§4.2 a send with a used cmid returns the original ack with dup", func(t *testing.T) {
		rep := send(a, dm, "m1", "again")
		wantOK(t, "dup", rep)
		if !rep.Duplicate || rep.Seq != first.Seq || rep.Index != first.Index {
			t.Fatalf("reply %+v", rep)
		}
	})
	t.Run("§4.2 send errors", func(t *testing.T) {
		wantCode(t, "65-byte cmid", send(a, dm, strings.Repeat("c", 65), "x"), wire.CodeInvalid)
		wantCode(t, "empty cmid", send(a, dm, "", "x"), wire.CodeInvalid)
		wantCode(t, "empty body", send(a, dm, "e1", ""), wire.CodeInvalid)
		wantCode(t, "body over 16384", send(a, dm, "e2", strings.Repeat("b", wire.MaxBodyBytes+1)), wire.CodeTooLarge)
		wantCode(t, "body not UTF-8", send(a, dm, "e3", "\xff"), wire.CodeInvalid)
		wantCode(t, "no conv", a.do(t, map[string]any{"t": "send", "cmid": "e4", "body": "x"}), wire.CodeInvalid)
		wantCode(t, "unknown conv", send(a, 999999, "e5", "x"), wire.CodeNotFound)
		wantCode(t, "reply_to past the end", a.do(t, map[string]any{"t": "send", "conv": dm, "cmid": "e6", "body": "x", "reply_to": 99}), wire.CodeNotFound)
		c, _ := dialConn(t, n, login(t, n, carol, "phone"))
		wantCode(t, "not a member", send(c, dm, "e7", "x"), wire.CodeNotMember)
		wantCode(t, "cmid used in another conversation", func() wire.Reply {
			g := a.do(t, map[string]any{"t": "group.create", "name": "cmid"})
			wantOK(t, "group.create", g)
			return send(a, g.Info.ID, "m1", "x")
		}(), wire.CodeConflict)
	})
	t.Run("§4.2 dm.open errors", func(t *testing.T) {
		wantCode(t, "with oneself", a.do(t, map[string]any{"t": "dm.open", "user": alice.user}), wire.CodeConflict)
		wantCode(t, "unknown user", a.do(t, map[string]any{"t": "dm.open", "user": 999999}), wire.CodeNotFound)
		wantCode(t, "no user", a.do(t, map[string]any{"t": "dm.open"}), wire.CodeInvalid)
	})

	grp := a.do(t, map[string]any{"t": "group.create", "name": "team", "users": []uint64{bob.user}})
	wantOK(t, "group.create", grp)
	g := grp.Info.ID
	t.Run("§4.3 a group's created event carries the initial users besides the creator and no member_added follows", func(t *testing.T) {
		ev := a.event(t, g, 1)
		if ev.Kind != wire.KindCreated || ev.Name != "team" || ev.From != alice.user || len(ev.Users) != 1 || ev.Users[0] != bob.user {
			t.Fatalf("created %+v", ev)
		}
		h := a.do(t, map[string]any{"t": "history", "conv": g})
		wantOK(t, "history", h)
		if len(h.Events) != 1 {
			t.Fatalf("history %+v", h.Events)
		}
	})
	t.Run("§4.2 group errors", func(t *testing.T) {
		wantCode(t, "remove a non-member", a.do(t, map[string]any{"t": "group.remove", "conv": g, "user": carol.user}), wire.CodeNotMember)
		wantCode(t, "admin of a non-member", a.do(t, map[string]any{"t": "group.admin", "conv": g, "user": carol.user, "admin": true}), wire.CodeNotMember)
		wantCode(t, "remove oneself", a.do(t, map[string]any{"t": "group.remove", "conv": g, "user": alice.user}), wire.CodeInvalid)
		wantCode(t, "last admin revokes own flag", a.do(t, map[string]any{"t": "group.admin", "conv": g, "user": alice.user, "admin": false}), wire.CodeConflict)
		wantCode(t, "non-admin adds", b.do(t, map[string]any{"t": "group.add", "conv": g, "users": []uint64{carol.user}}), wire.CodeForbidden)
		wantCode(t, "membership op on a 1:1", a.do(t, map[string]any{"t": "group.add", "conv": dm, "users": []uint64{carol.user}}), wire.CodeForbidden)
		wantCode(t, "add an unknown user", a.do(t, map[string]any{"t": "group.add", "conv": g, "users": []uint64{999999}}), wire.CodeNotFound)
		wantCode(t, "add nobody", a.do(t, map[string]any{"t": "group.add", "conv": g}), wire.CodeInvalid)
		wantCode(t, "name over 64 bytes", a.do(t, map[string]any{"t": "group.rename", "conv": g, "name": strings.Repeat("n", 65)}), wire.CodeTooLarge)
		wantCode(t, "leave a 1:1", a.do(t, map[string]any{"t": "group.leave", "conv": dm}), wire.CodeForbidden)
		wantCode(t, "rename a 1:1", a.do(t, map[string]any{"t": "group.rename", "conv": dm, "name": "x"}), wire.CodeForbidden)
		wantCode(t, "create with user 0", a.do(t, map[string]any{"t": "group.create", "name": "x", "users": []uint64{0}}), wire.CodeInvalid)
		wantCode(t, "presence.sub user 0", a.do(t, map[string]any{"t": "presence.sub", "users": []uint64{0}}), wire.CodeInvalid)
		wantCode(t, "create without name", a.do(t, map[string]any{"t": "group.create"}), wire.CodeInvalid)
		wantCode(t, "rename unknown conv", a.do(t, map[string]any{"t": "group.rename", "conv": 999999, "name": "x"}), wire.CodeNotFound)
		wantCode(t, "leave a group one is not in", a.do(t, map[string]any{"t": "group.leave", "conv": 999999}), wire.CodeNotFound)
	})
	t.Run("§4.2 over-maximum limits are capped, not refused", func(t *testing.T) {
		for _, req := range []map[string]any{
			{"t": "history", "conv": dm, "limit": 100000},
			{"t": "sync", "limit": 100000},
			{"t": "conv.list", "limit": 100000},
			{"t": "device.list", "limit": 100000},
			{"t": "block.list", "limit": 100000},
		} {
			wantOK(t, req["t"].(string), a.do(t, req))
		}
		for _, req := range []map[string]any{
			{"t": "history", "conv": dm, "limit": -1},
			{"t": "sync", "limit": -1},
			{"t": "conv.list", "limit": -1},
			{"t": "device.list", "limit": -1},
			{"t": "block.list", "limit": -1},
			{"t": "read.get", "conv": dm, "seq": 2, "limit": -1},
		} {
			if rep := a.do(t, req); rep.Code != wire.CodeInvalid {
				t.Errorf("%s with a negative limit: %s %q, want invalid", req["t"], rep.Type, rep.Code)
			}
		}
	})
	t.Run("§4.2 a sync page holds at most limit conversations", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "sync", "limit": 1})
		wantOK(t, "sync", rep)
		if len(rep.Changes) != 1 || !rep.More {
			t.Fatalf("%d changes, more %v", len(rep.Changes), rep.More)
		}
	})
	t.Run("§4.3 events inside replies carry no t", func(t *testing.T) {
		id := a.send(t, map[string]any{"t": "history", "conv": dm})
		raw := a.frame(t, func(b []byte, typ string) bool {
			var r wire.Reply
			return typ == wire.TypeOK && wire.Unmarshal(b, &r) == nil && r.ID == id
		})
		evs, _ := generic(t, raw)["events"].([]any)
		if len(evs) == 0 {
			t.Fatal("no events")
		}
		for _, e := range evs {
			if _, has := e.(map[string]any)["t"]; has {
				t.Fatalf("event with t: %v", e)
			}
		}
		id = a.send(t, map[string]any{"t": "sync"})
		raw = a.frame(t, func(b []byte, typ string) bool {
			var r wire.Reply
			return typ == wire.TypeOK && wire.Unmarshal(b, &r) == nil && r.ID == id
		})
		for _, c := range generic(t, raw)["changes"].([]any) {
			for _, e := range c.(map[string]any)["events"].([]any) {
				if _, has := e.(map[string]any)["t"]; has {
					t.Fatalf("sync event with t: %v", e)
				}
			}
		}
	})
	t.Run("§4.2 user.get by name folds case like login", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "user.get", "name": "BoB"})
		wantOK(t, "user.get", rep)
		if rep.UserInfo == nil || rep.UserInfo.ID != bob.user || rep.UserInfo.Username != "bob" {
			t.Fatalf("user %+v", rep.UserInfo)
		}
		wantCode(t, "unknown name", a.do(t, map[string]any{"t": "user.get", "name": "nobody"}), wire.CodeNotFound)
		wantCode(t, "neither", a.do(t, map[string]any{"t": "user.get"}), wire.CodeInvalid)
	})
	t.Run("§4.2 revoking another user's device is not_found", func(t *testing.T) {
		var h wire.Hello
		_ = wire.Unmarshal(helloA, &h)
		wantCode(t, "bob revokes alice's", b.do(t, map[string]any{"t": "device.revoke", "dev": h.Device}), wire.CodeNotFound)
		wantCode(t, "no dev", b.do(t, map[string]any{"t": "device.revoke"}), wire.CodeInvalid)
	})
	t.Run("§4.2 history, conv.get and read.get errors", func(t *testing.T) {
		c, _ := dialConn(t, n, login(t, n, carol, "tablet"))
		wantCode(t, "history not member", c.do(t, map[string]any{"t": "history", "conv": dm}), wire.CodeNotMember)
		wantCode(t, "history unknown conv", c.do(t, map[string]any{"t": "history", "conv": 999999}), wire.CodeNotFound)
		wantCode(t, "history bad dir", a.do(t, map[string]any{"t": "history", "conv": dm, "dir": "up"}), wire.CodeInvalid)
		wantCode(t, "conv.get not member", c.do(t, map[string]any{"t": "conv.get", "conv": dm}), wire.CodeNotMember)
		wantCode(t, "conv.get unknown conv", c.do(t, map[string]any{"t": "conv.get", "conv": 999999}), wire.CodeNotFound)
		wantCode(t, "read.get past the end", a.do(t, map[string]any{"t": "read.get", "conv": dm, "seq": 99}), wire.CodeNotFound)
		wantCode(t, "read.get no seq", a.do(t, map[string]any{"t": "read.get", "conv": dm}), wire.CodeInvalid)
		wantCode(t, "typing not member", c.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}), wire.CodeNotMember)
		wantCode(t, "typing unknown conv", c.do(t, map[string]any{"t": "typing", "conv": 999999, "on": true}), wire.CodeNotFound)
		wantCode(t, "receipt past the end", a.do(t, map[string]any{"t": "receipt", "conv": dm, "read": 99}), wire.CodeInvalid)
		wantCode(t, "receipt of nothing", a.do(t, map[string]any{"t": "receipt", "conv": dm}), wire.CodeInvalid)
		wantCode(t, "receipt not member", c.do(t, map[string]any{"t": "receipt", "conv": dm, "read": 1}), wire.CodeNotMember)
		wantCode(t, "presence.sub unknown user", a.do(t, map[string]any{"t": "presence.sub", "users": []uint64{999999}}), wire.CodeNotFound)
		wantCode(t, "presence.sub over 256", a.do(t, map[string]any{"t": "presence.sub", "users": make([]uint64, 257)}), wire.CodeTooLarge)
		wantCode(t, "privacy.set bad group_add", a.do(t, map[string]any{"t": "privacy.set", "group_add": "friends"}), wire.CodeInvalid)
		wantCode(t, "block oneself", a.do(t, map[string]any{"t": "block", "user": alice.user}), wire.CodeInvalid)
		wantCode(t, "block unknown", a.do(t, map[string]any{"t": "block", "user": 999999}), wire.CodeNotFound)
	})
	t.Run("§4.4 typing reaches the other members with conv, user, on, ttl_ms", func(t *testing.T) {
		wantOK(t, "typing", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
		raw := b.frame(t, func(_ []byte, typ string) bool { return typ == wire.TypeTypingEvent })
		var ty wire.Typing
		if err := wire.Unmarshal(raw, &ty); err != nil || ty.Conv != dm || ty.User != alice.user || !ty.On || ty.TTLms != 6000 {
			t.Fatalf("typing %+v %v", ty, err)
		}
	})
	t.Run("§4.4 presence.sub replies the current state of each user", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "presence.sub", "users": []uint64{bob.user, carol.user}})
		wantOK(t, "presence.sub", rep)
		if len(rep.Presence) != 2 || rep.Presence[0].User != bob.user || !rep.Presence[0].Online || rep.Presence[0].Type != "" {
			t.Fatalf("presence %+v", rep.Presence)
		}
	})
	t.Run("§4.5 a read receipt in a 1:1 reaches both members as a receipt frame", func(t *testing.T) {
		wantOK(t, "receipt", b.do(t, map[string]any{"t": "receipt", "conv": dm, "read": 2}))
		for _, c := range []*conn{a, b} {
			raw := c.frame(t, func(_ []byte, typ string) bool { return typ == wire.TypeReceiptEvent })
			var r wire.Receipt
			if err := wire.Unmarshal(raw, &r); err != nil || r.Conv != dm || r.User != bob.user || r.Read != 2 || r.Delivered != 2 || r.Index == 0 {
				t.Fatalf("receipt %+v %v", r, err)
			}
		}
	})
	t.Run("§4.3 a ConvSync of a conversation one left is gone with member_count 0", func(t *testing.T) {
		wantOK(t, "leave", b.do(t, map[string]any{"t": "group.leave", "conv": g}))
		rep := b.do(t, map[string]any{"t": "sync"})
		wantOK(t, "sync", rep)
		for _, c := range rep.Changes {
			if c.Info.ID == g {
				if !c.Gone || c.Info.MemberCount != 0 || len(c.Info.Members) != 0 {
					t.Fatalf("gone change %+v", c)
				}
				return
			}
		}
		t.Fatal("the group is not in the sync")
	})
	t.Run("§4.2 history before is newest first, after is oldest first", func(t *testing.T) {
		send(a, dm, "h1", "one")
		send(a, dm, "h2", "two")
		before := a.do(t, map[string]any{"t": "history", "conv": dm, "limit": 2})
		wantOK(t, "before", before)
		if len(before.Events) != 2 || before.Events[0].Seq <= before.Events[1].Seq || !before.More {
			t.Fatalf("before %+v more %v", before.Events, before.More)
		}
		after := a.do(t, map[string]any{"t": "history", "conv": dm, "dir": "after", "seq": 1, "limit": 2})
		wantOK(t, "after", after)
		if len(after.Events) != 2 || after.Events[0].Seq != 2 || after.Events[1].Seq != 3 || !after.More {
			t.Fatalf("after %+v more %v", after.Events, after.More)
		}
	})
	t.Run("§5 a sync whose more is false returns next as the cursor; from it, only newer changes", func(t *testing.T) {
		var cursor uint64
		for after, afterConv := uint64(0), uint64(0); ; {
			rep := a.do(t, map[string]any{"t": "sync", "since": 0, "after": after, "after_conv": afterConv, "limit": 1})
			wantOK(t, "sync", rep)
			if !rep.More {
				cursor = rep.Next
				break
			}
			after, afterConv = rep.Next, rep.NextConv
		}
		rep := a.do(t, map[string]any{"t": "sync", "since": cursor})
		wantOK(t, "sync", rep)
		if len(rep.Changes) != 0 || rep.More {
			t.Fatalf("changes after the cursor: %+v", rep.Changes)
		}
		sent := send(a, dm, "s1", "after the cursor")
		rep = a.do(t, map[string]any{"t": "sync", "since": cursor})
		wantOK(t, "sync", rep)
		if len(rep.Changes) != 1 || rep.Changes[0].Info.ID != dm || len(rep.Changes[0].Events) != 1 ||
			rep.Changes[0].Events[0].Seq != sent.Seq || rep.Changes[0].Events[0].Index <= cursor {
			t.Fatalf("changes %+v", rep.Changes)
		}
	})
	t.Run("§4.5 group senders get read_counts when others read", func(t *testing.T) {
		gr := a.do(t, map[string]any{"t": "group.create", "name": "readers", "users": []uint64{bob.user}})
		wantOK(t, "group.create", gr)
		m := send(a, gr.Info.ID, "rc1", "read me")
		wantOK(t, "send", m)
		wantOK(t, "receipt", b.do(t, map[string]any{"t": "receipt", "conv": gr.Info.ID, "read": m.Seq}))
		var rc wire.ReadCounts
		a.frame(t, func(f []byte, typ string) bool {
			if typ != wire.TypeReadCountsEvent || wire.Unmarshal(f, &rc) != nil || rc.Conv != gr.Info.ID {
				return false
			}
			for _, it := range rc.Items {
				if it.Seq == m.Seq && it.Read == 1 {
					return true
				}
			}
			return false
		})
		for _, it := range rc.Items {
			if it.Seq == m.Seq && (it.From != alice.user || it.Members != 1 || it.Delivered != 1) {
				t.Fatalf("item %+v", it)
			}
		}
	})
	t.Run("§4.6 a blocked user cannot open a 1:1 with the blocker nor send in it", func(t *testing.T) {
		wantOK(t, "block", b.do(t, map[string]any{"t": "block", "user": alice.user}))
		wantCode(t, "dm.open", a.do(t, map[string]any{"t": "dm.open", "user": bob.user}), wire.CodeForbidden)
		wantCode(t, "send", send(a, dm, "blocked", "x"), wire.CodeForbidden)
		wantCode(t, "group.create with the blocker", a.do(t, map[string]any{"t": "group.create", "name": "x", "users": []uint64{bob.user}}), wire.CodeForbidden)
		wantOK(t, "the blocker may still write", send(b, dm, "blocker", "x"))
		bl := b.do(t, map[string]any{"t": "block.list"})
		if bl.Type != wire.TypeOK || len(bl.Blocked) != 1 || bl.Blocked[0] != alice.user {
			t.Fatalf("block.list %+v", bl)
		}
		wantOK(t, "unblock", b.do(t, map[string]any{"t": "unblock", "user": alice.user}))
		wantOK(t, "unblock again changes nothing", b.do(t, map[string]any{"t": "unblock", "user": alice.user}))
		wantOK(t, "send after unblock", send(a, dm, "unblocked", "x"))
	})
	t.Run("§4.6 group_add nobody refuses group.add with forbidden", func(t *testing.T) {
		c, _ := dialConn(t, n, login(t, n, carol, "laptop"))
		wantOK(t, "privacy.set", c.do(t, map[string]any{"t": "privacy.set", "group_add": "nobody"}))
		me := c.do(t, map[string]any{"t": "user.get", "user": carol.user})
		if me.UserInfo == nil || me.UserInfo.GroupAdd != "nobody" {
			t.Fatalf("user.get of oneself %+v", me.UserInfo)
		}
		wantCode(t, "group.add", a.do(t, map[string]any{"t": "group.add", "conv": g, "users": []uint64{carol.user}}), wire.CodeForbidden)
		wantOK(t, "privacy.set back", c.do(t, map[string]any{"t": "privacy.set", "group_add": "everyone"}))
	})
	t.Run("§7 over 1000 users in a request is too_large", func(t *testing.T) {
		users := make([]uint64, wire.MaxUsersPerRequest+1)
		for i := range users {
			users[i] = uint64(i + 1)
		}
		wantCode(t, "group.create", a.do(t, map[string]any{"t": "group.create", "name": "big", "users": users}), wire.CodeTooLarge)
	})
	t.Run("§4.6 device.revoke of the asking device is answered ok, then closes 1008", func(t *testing.T) {
		tok := login(t, n, bob, "old")
		c, hello := dialConn(t, n, tok)
		other, _ := dialConn(t, n, tok) // another connection of the same device
		var h wire.Hello
		_ = wire.Unmarshal(hello, &h)
		id := c.send(t, map[string]any{"t": "device.revoke", "dev": h.Device})
		frames, err := c.untilClosed(t)
		var replies int
		for _, f := range frames {
			var rep wire.Reply
			if typ, _ := wire.PeekType(f); typ == wire.TypeOK || typ == wire.TypeError {
				if wire.Unmarshal(f, &rep) != nil || rep.ID != id || rep.Type != wire.TypeOK {
					t.Fatalf("reply %+v", rep)
				}
				replies++
			}
		}
		if replies != 1 {
			t.Fatalf("%d replies, want 1", replies)
		}
		requireClosed(t, err, 1008, "device revoked")
		_, err = other.untilClosed(t)
		requireClosed(t, err, 1008, "device revoked")
		if st, _, _ := rawHandshake(t, n, "/v1/ws?token="+tok, upgradeHeaders); st != 401 {
			t.Fatalf("revoked token: handshake %d, want 401", st)
		}
	})
}

func mustPack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
