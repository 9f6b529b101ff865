package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"parley/bench"
)

func TestParseArgsStorm(t *testing.T) {
	inv, err := parseArgs([]string{"-http", "http://a:1,http://b:2", "storm", "-users", "40", "-watch", "5",
		"-graph", "neighbours", "-flap", "0", "-offline", "7s", "-typing", "3", "-circle", "4", "-warmup", "3s", "-seed", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := inv.sc.(*bench.Storm)
	if !ok {
		t.Fatalf("scenario %T", inv.sc)
	}
	want := bench.Storm{Users: 40, Watch: 5, Graph: "neighbours", Flap: 0, Offline: 7 * time.Second,
		Typing: 3, Circle: 4, Warmup: 3 * time.Second, Seed: 9}
	if *s != want {
		t.Fatalf("storm %+v, want %+v", *s, want)
	}
	if inv.opts.Duration != stormDuration || len(inv.opts.HTTP) != 2 || inv.opts.HTTP[1] != "http://b:2" {
		t.Fatalf("options %+v", inv.opts)
	}

	// Without flags, the storm of the issue; an explicit duration stands.
	inv, err = parseArgs([]string{"-duration", "30s", "storm"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if *inv.sc.(*bench.Storm) != bench.DefaultStorm() || inv.opts.Duration != 30*time.Second {
		t.Fatalf("storm %+v for %v", inv.sc, inv.opts.Duration)
	}
	// Other scenarios keep the harness's default duration.
	if inv, err = parseArgs([]string{"idle"}, io.Discard); err != nil || inv.opts.Duration != 0 {
		t.Fatalf("idle: %v, duration %v", err, inv.opts.Duration)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"nosuch"}, {"storm", "extra"}, {"storm", "-users", "x"}, {"-h"},
	} {
		var out strings.Builder
		if _, err := parseArgs(args, &out); err == nil || out.Len() == 0 {
			t.Errorf("%q: err %v, output %q", args, err, out.String())
		}
	}
}

func TestParseArgsMixed(t *testing.T) {
	inv, err := parseArgs([]string{"-chart", "out.svg", "mixed", "-users", "300", "-groups", "1.5", "-group-min", "4",
		"-group-max", "8", "-directs", "3", "-send-rate", "10", "-type-for", "1s", "-read-delay", "500ms",
		"-reconnect", "0.2", "-offline", "3s", "-warmup", "2s", "-seed", "7", "-drain", "4s", "-body", "64"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := inv.sc.(*bench.Mixed)
	if !ok {
		t.Fatalf("scenario %T", inv.sc)
	}
	want := bench.Mixed{Users: 300, Groups: 1.5, GroupMin: 4, GroupMax: 8, Directs: 3, Rate: 10, TypeFor: time.Second,
		ReadDelay: 500 * time.Millisecond, Reconnect: 0.2, Offline: 3 * time.Second, BodyBytes: 64,
		Warmup: 2 * time.Second, Drain: 4 * time.Second, Seed: 7}
	if *m != want {
		t.Fatalf("mixed %+v, want %+v", *m, want)
	}
	if inv.chart != "out.svg" || inv.opts.Duration != mixedDuration {
		t.Fatalf("chart %q, duration %v", inv.chart, inv.opts.Duration)
	}

	// Without flags, the mixed of the issue, not the storm's shared
	// defaults; an explicit duration stands.
	inv, err = parseArgs([]string{"mixed", "-duration", "12s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if *inv.sc.(*bench.Mixed) != bench.DefaultMixed() || inv.opts.Duration != 12*time.Second {
		t.Fatalf("mixed %+v for %v", inv.sc, inv.opts.Duration)
	}
}

func TestTable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("direct.json", `{"scenario":"direct","params":{"senders":1},"command":"parleybench direct",`+
		`"counts":{"conns":2},"latency":{"deliver":{"count":5,"p50_us":500,"p99_us":900,"p99_9_us":950,"max_us":1000}},`+
		`"figures":[{"name":"throughput (acked)","value":1500,"unit":"msg/s"}]}`)
	empty := write("idle.json", "")
	write("idle.err", "some progress\nparleybench: the node does not answer\n\n")
	write("docs/bench/direct.svg", "<svg/>")

	var out, errOut strings.Builder
	code := table([]string{"-charts", filepath.Join(dir, "docs/bench"), "-doc", filepath.Join(dir, "docs/BENCHMARKS.md"),
		"direct=" + good, "idle=" + empty, "gone=" + filepath.Join(dir, "nope.json")}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"| [direct](#direct) | direct | 2 | throughput (acked): 1500 msg/s | send → deliver | 500µs | 900µs | 950µs | 1ms |",
		"| idle | | | | | | | | | | no report: parleybench: the node does not answer |",
		"| gone | | | | | | | | | | no report: open",
		"](bench/direct.svg)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	for _, args := range [][]string{{}, {"noequals"}, {"=x.json"}, {"-nosuchflag", "a=b"}} {
		errOut.Reset()
		if code := table(args, io.Discard, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}

func TestParseArgsAbuse(t *testing.T) {
	inv, err := parseArgs([]string{"-http", "http://127.0.0.1:1", "abuse", "-phase", "5s", "-recovery", "2s", "-rate", "10",
		"-attacks", "conn-flood,length-bomb", "-attack-from", "127.0.0.2", "-bomb-conns", "2", "-flood-conns", "3",
		"-conn-attempts", "100", "-slowloris", "20", "-keepalives", "5", "-guesses", "50", "-read-conns", "2", "-drain", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, ok := inv.sc.(*bench.Abuse)
	if !ok {
		t.Fatalf("scenario %T", inv.sc)
	}
	want := bench.Abuse{Phase: 5 * time.Second, Recovery: 2 * time.Second, Rate: 10, Attacks: "conn-flood,length-bomb",
		From: "127.0.0.2", Drain: 3 * time.Second, BombConns: 2, FloodConns: 3, ConnAttempts: 100, Slowloris: 20,
		KeepAlives: 5, Guesses: 50, ReadConns: 2}
	if !reflect.DeepEqual(*a, want) {
		t.Fatalf("abuse %+v, want %+v", *a, want)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	// The run lasts the baseline and two attacks, each with its recovery.
	if inv.opts.Duration != 3*5*time.Second+2*2*time.Second {
		t.Fatalf("duration %v", inv.opts.Duration)
	}

	// Without flags: every attack, the defaults (15 s phases, 5 s
	// recoveries, 20 msg/s).
	if inv, err = parseArgs([]string{"abuse"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if a := inv.sc.(*bench.Abuse); !reflect.DeepEqual(*a, bench.Abuse{Attacks: "all"}) || a.Validate() != nil {
		t.Fatalf("abuse %+v", *a)
	}
	if inv.opts.Duration != 7*15*time.Second+6*5*time.Second {
		t.Fatalf("duration %v", inv.opts.Duration)
	}

	// -duration does not apply; an unknown attack is refused by Validate.
	var out strings.Builder
	if _, err := parseArgs([]string{"abuse", "-duration", "10s"}, &out); err == nil || !strings.Contains(out.String(), "-duration") {
		t.Fatalf("err %v, output %q", err, out.String())
	}
	if inv, err = parseArgs([]string{"abuse", "-attacks", "nosuch"}, io.Discard); err != nil || inv.sc.Validate() == nil {
		t.Fatalf("err %v, validate %v", err, inv.sc.Validate())
	}
}
