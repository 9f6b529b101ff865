package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWSHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"ws://127.0.0.1:7071/v1/ws": "127.0.0.1:7071",
		"ws://localhost:9":          "localhost:9",
		"ws://example.com/v1/ws":    "example.com:80",
	} {
		if got, err := wsHostPort(in); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := wsHostPort("wss://x:1"); err == nil {
		t.Error("wss accepted: the bare connections speak no TLS")
	}
}

// The kinds of failed attempts, from real failures.
func TestDialBareErrorKinds(t *testing.T) {
	ctx := t.Context()
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
		t.Cleanup(srv.Close)
		return "ws://" + srv.Listener.Addr().String() + "/v1/ws"
	}
	// A server that accepts the TCP connection and says nothing.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1)
	go func() {
		if c, err := mute.Accept(); err == nil {
			held <- c
		}
	}()
	t.Cleanup(func() {
		mute.Close()
		select {
		case c := <-held:
			c.Close()
		default:
		}
	})

	for _, tc := range []struct {
		url, want string
		timeout   time.Duration
	}{
		{"ws://" + closed + "/v1/ws", "refused", 5 * time.Second},
		{status(http.StatusUnauthorized), "unauthorized", 5 * time.Second},
		{status(http.StatusServiceUnavailable), "http 503", 5 * time.Second},
		{"ws://" + mute.Addr().String() + "/v1/ws", "timeout", 200 * time.Millisecond},
	} {
		_, err := dialBare(ctx, bareOptions{URL: tc.url, Token: "t", Timeout: tc.timeout})
		if err == nil {
			t.Fatalf("%s: dialled", tc.url)
		}
		if got := connErrorKind(err); got != tc.want {
			t.Errorf("%s: kind %q (%v), want %q", tc.url, got, err, tc.want)
		}
	}
}

func TestEndToEndConnect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := Options{
		HTTP: []string{node.http}, WS: []string{node.ws},
		Settle: 100 * time.Millisecond, Duration: time.Second,
		ConnsPerWorker: 20,
	}

	t.Run("storm", func(t *testing.T) {
		rep, err := Run(ctx, &Connect{Conns: 40}, opts)
		if err != nil {
			t.Fatal(err)
		}
		res := rep.Result
		if rep.Failed() || res.Conns != 40 || res.ConnFailures != 0 || res.Workers != 2 {
			t.Fatalf("failures %q, result %+v", rep.Failures, res)
		}
		for _, name := range []string{latConnect, latConnectScheduled} {
			if s := rep.Latency[name]; s.Count != 40 || s.P50 <= 0 || s.Max < s.P99 {
				t.Fatalf("%s latency %+v", name, s)
			}
		}
		// Measured from the common start, a connection waits at least as
		// long as its own attempt.
		if rep.Latency[latConnectScheduled].Max < rep.Latency[latConnect].Max {
			t.Fatalf("scheduled %+v below attempt %+v", rep.Latency[latConnectScheduled], rep.Latency[latConnect])
		}
		loaded, _ := rep.Sample("loaded")
		if loaded.Connections != 40 {
			t.Fatalf("the node held %v connections", loaded.Connections)
		}
		for _, name := range []string{"time until all connected", "server RSS per connection", "server CPU per connection (accept, upgrade, auth, hold)"} {
			if _, ok := figure(rep, name); !ok {
				t.Fatalf("no %q in %+v", name, rep.Figures)
			}
		}
	})

	t.Run("ramp", func(t *testing.T) {
		// 20 connections at 50/s: the last is due 380 ms after the start.
		rep, err := Run(ctx, &Connect{Conns: 20, Rate: 50}, opts)
		if err != nil {
			t.Fatal(err)
		}
		res := rep.Result
		if rep.Failed() || res.Conns != 20 || rep.Latency[latConnectScheduled].Count != 20 {
			t.Fatalf("failures %q, result %+v", rep.Failures, res)
		}
		if el := res.Elapsed(); el < 380*time.Millisecond {
			t.Fatalf("all connected %v after the start: the schedule was not followed", el)
		}
	})

	t.Run("refused", func(t *testing.T) {
		// Every attempt fails against a closed port: counted by kind, and a
		// failure of the run, not an error of the harness.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ws := fmt.Sprintf("ws://%s/v1/ws", ln.Addr())
		ln.Close()
		o := opts
		o.WS = []string{ws}
		rep, err := Run(ctx, &Connect{Conns: 3, Attempts: 2}, o)
		if err != nil {
			t.Fatal(err)
		}
		res := rep.Result
		if !rep.Failed() || res.ConnFailures != 3 || res.Counters[cntDialErrorPrefix+"refused"] != 6 {
			t.Fatalf("failures %q, result %+v", rep.Failures, res)
		}
	})
}
