package main

import (
	"io"
	"testing"
	"time"

	"parley/bench"
)

func TestParseArgsConnect(t *testing.T) {
	inv, err := parseArgs([]string{"connect", "-conns", "19000", "-connect-rate", "1000", "-attempts", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := inv.sc.(*bench.Connect)
	if !ok || *c != (bench.Connect{Conns: 19000, Rate: 1000, Attempts: 2}) {
		t.Fatalf("scenario %T %+v", inv.sc, inv.sc)
	}
	// The hold covers the 19 s ramp.
	if inv.opts.Duration != 24*time.Second {
		t.Fatalf("duration %v", inv.opts.Duration)
	}
	// All at once: the default hold; an explicit duration stands.
	if inv, err = parseArgs([]string{"connect"}, io.Discard); err != nil || inv.opts.Duration != 10*time.Second {
		t.Fatalf("%v, duration %v", err, inv.opts.Duration)
	}
	if inv, err = parseArgs([]string{"-duration", "3s", "connect", "-connect-rate", "10"}, io.Discard); err != nil || inv.opts.Duration != 3*time.Second {
		t.Fatalf("%v, duration %v", err, inv.opts.Duration)
	}
}

func TestParseArgsGroup(t *testing.T) {
	inv, err := parseArgs([]string{"group", "-members", "10000", "-senders", "4", "-rate", "200", "-window", "8",
		"-body", "64", "-drain", "5s", "-warmup", "2s", "-slow", "0.1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := inv.sc.(*bench.Group)
	if !ok {
		t.Fatalf("scenario %T", inv.sc)
	}
	want := bench.Group{Members: 10000, Senders: 4, Rate: 200, Window: 8, BodyBytes: 64, Drain: 5 * time.Second,
		Warmup: 2 * time.Second, Slow: 0.1}
	if g.Members != want.Members || g.Senders != want.Senders || g.Rate != want.Rate || g.Window != want.Window ||
		g.BodyBytes != want.BodyBytes || g.Drain != want.Drain || g.Warmup != want.Warmup || g.Slow != want.Slow {
		t.Fatalf("group %+v, want %+v", *g, want)
	}
	// storm's default warmup is not group's.
	if inv, err = parseArgs([]string{"group"}, io.Discard); err != nil || inv.sc.(*bench.Group).Warmup != 0 || inv.sc.(*bench.Group).Members != 1000 {
		t.Fatalf("%v %+v", err, inv.sc)
	}
}

func TestParseArgsSlowAndReconnect(t *testing.T) {
	inv, err := parseArgs([]string{"direct", "-senders", "10", "-slow", "0.1"}, io.Discard)
	if err != nil || inv.sc.(*bench.Direct).Slow != 0.1 {
		t.Fatalf("%v %+v", err, inv.sc)
	}
	inv, err = parseArgs([]string{"reconnect", "-conns", "200", "-backlog", "7", "-restart-cmd", "systemctl restart parley"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := inv.sc.(*bench.Reconnect)
	if !ok || *r != (bench.Reconnect{Conns: 200, Backlog: 7, RestartCmd: "systemctl restart parley"}) {
		t.Fatalf("scenario %T %+v", inv.sc, inv.sc)
	}
	if inv.opts.Duration != reconnectDuration {
		t.Fatalf("duration %v", inv.opts.Duration)
	}
}
