package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"parley/wire"
)

// The node answers each bomb frame with its code (the decoder the node
// runs, without a node).
func TestAbuseBombFrames(t *testing.T) {
	for _, f := range BombFrames {
		var r wire.Request
		if e := wire.DecodeRequest(f.Frame, &r); e == nil || e.Code != f.Code {
			t.Errorf("%s: got %v, want %s", f.Name, e, f.Code)
		}
	}
	if len(BombFrames[0].Frame) != 32 || len(BombFrames[1].Frame) != 18 {
		t.Fatalf("the finding's frames are 32 and 18 bytes, not %d and %d", len(BombFrames[0].Frame), len(BombFrames[1].Frame))
	}
}

func TestAbuseValidate(t *testing.T) {
	for _, a := range []Abuse{
		{Phase: time.Millisecond}, {Recovery: -1}, {Rate: -1}, {Rate: 1e6}, {Attacks: "length-bomb,nosuch"},
		{From: "not-an-ip"}, {BombConns: -1}, {ConnAttempts: 1 << 30}, {ReadConns: 100},
	} {
		if a.Validate() == nil {
			t.Errorf("%+v: valid", a)
		}
	}
	a := Abuse{Attacks: " big-replies, length-bomb ", Phase: 2 * time.Second, Recovery: time.Second}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	// The attacks run in their fixed order, whatever the order asked.
	want := []string{"baseline", "length-bomb", "length-bomb recovery", "big-replies", "big-replies recovery"}
	if got := a.withDefaults().phaseNames(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("phases %q", got)
	}
	if d := a.PlannedDuration(); d != 3*2*time.Second+2*time.Second {
		t.Fatalf("planned %v", d)
	}
}

// The canary's bodies carry the intended send time and the phase.
func TestAbuseCanaryBody(t *testing.T) {
	l := &abuseLoad{padding: strings.Repeat("x", abuseCanaryBody)}
	at := time.Unix(1_790_000_000, 123456789)
	b := l.canaryBody(at, 7)
	stamp, seg, ok := parseCanaryBody(b)
	if !ok || !stamp.Equal(at) || seg != 7 || len(b) != abuseCanaryBody {
		t.Fatalf("%q: %v %d %v", b, stamp, seg, ok)
	}
	for _, bad := range []string{"", "12 x", "x 1 y", "12 -1 y"} {
		if _, _, ok := parseCanaryBody(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Every attack against a real node, with short phases, while the canary
// chats. Only counts and outcomes are checked: the canary lost nothing,
// each attack met the refusal the node promises, and /healthz answered
// after every phase. Latencies are logged, never asserted.
func TestAbuseEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	// The throttle stays on (login-guess tests it); the per-user cap and
	// the HTTP timeouts are lowered so that the attacks meet them within
	// short phases.
	node := startNode(t, "-auth-throttle=true", "-ws-max-conns-per-user", "10",
		"-http-read-timeout", "1s", "-http-idle-timeout", "1s")
	sc := &Abuse{
		Phase: 2 * time.Second, Recovery: 500 * time.Millisecond, Rate: 20, Drain: 30 * time.Second,
		BombConns: 2, FloodConns: 2, ConnAttempts: 200, Slowloris: 20, KeepAlives: 10, Guesses: 200, ReadConns: 4,
	}
	opts := Options{
		HTTP: []string{node.http}, WS: []string{node.ws}, Settle: 100 * time.Millisecond,
		Duration: sc.PlannedDuration(), DrainTimeout: 2 * time.Minute, InProcess: true,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, sc, opts)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	_ = rep.WriteText(&text)
	t.Logf("report:\n%s", text.String())

	res := rep.Result
	if res.Acked == 0 || res.Sent != res.Acked || res.Delivered != res.Acked || res.Undelivered != 0 || res.Dropped != 0 {
		t.Fatalf("canary: %+v", res)
	}
	phases := sc.Phases()
	if len(phases) != 1+2*len(AbuseAttacks) {
		t.Fatalf("%d phases", len(phases))
	}
	byName := make(map[string]AbusePhase)
	for _, p := range phases {
		byName[p.Name] = p
		if p.Lost != 0 || p.Delivered != p.Acked {
			t.Errorf("%s: canary acked %d, delivered %d", p.Name, p.Acked, p.Delivered)
		}
		for k, v := range p.CanaryErrors {
			if strings.HasPrefix(k, "failed ") {
				t.Errorf("%s: canary %s: %d", p.Name, k, v)
			}
		}
		if (p.Attack == "" || p.Attack == p.Name) && p.HealthAfter != "ok" {
			t.Errorf("%s: /healthz after the phase: %q", p.Name, p.HealthAfter)
		}
	}

	bomb := byName[AttackLengthBomb].Counters
	for _, code := range []wire.Code{wire.CodeBadFrame, wire.CodeInvalid, wire.CodeTooLarge} {
		if bomb["reply "+string(code)] == 0 {
			t.Errorf("length-bomb: no %s reply: %v", code, bomb)
		}
	}
	for k, v := range bomb {
		if code, ok := strings.CutPrefix(k, "reply "); ok && code != "bad_frame" && code != "invalid" && code != "too_large" {
			t.Errorf("length-bomb: %d replies %s", v, code)
		}
		if strings.HasPrefix(k, "closed by the server") {
			t.Errorf("length-bomb: %s: %d", k, v)
		}
	}
	if bomb["frames sent"] == 0 || bomb["replies"] != bomb["frames sent"] {
		t.Errorf("length-bomb: %d frames sent, %d replies", bomb["frames sent"], bomb["replies"])
	}

	if flood := byName[AttackMalformedFlood].Counters; flood["closed by the server: close 1008 rate limit exceeded"] == 0 {
		t.Errorf("malformed-flood: no 1008 close: %v", flood)
	}

	cf := byName[AttackConnFlood].Counters
	if up := cf["upgraded (101)"]; up == 0 || up > 10 {
		t.Errorf("conn-flood: %d upgraded with a cap of 10 per user", up)
	}
	if cf["refused 429 with Retry-After"] == 0 || sumCounts(prefixed(cf, "refused 503 without")) != 0 ||
		cf["refused 429 without Retry-After"] != 0 {
		t.Errorf("conn-flood: %v", cf)
	}

	if lg := byName[AttackLoginGuess].Counters; lg["HTTP 429 (canary's name)"]+lg["HTTP 429 (random names)"] == 0 {
		t.Errorf("login-guess: no 429: %v", lg)
	}

	br := byName[AttackBigReplies].Counters
	if br["victim still connected"] != 1 || sumCounts(prefixed(br, "victim closed by the server: ")) != 0 {
		t.Errorf("big-replies: the victim: %v", br)
	}
	if rep.Failed() {
		// Besides the checks above, a failure can only be /healthz slower
		// than its probe timeout during a phase: worth seeing, not a
		// verdict of this test (timing).
		t.Logf("failures: %q", rep.Failures)
	}
}
