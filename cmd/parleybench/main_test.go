package main

import (
	"io"
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
