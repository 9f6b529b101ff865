package node

import (
	"log/slog"
	"testing"
)

func TestPlanFDs(t *testing.T) {
	for _, tc := range []struct {
		nofile, http       int
		reserve, ws, conns int
	}{
		// Low limits: the WebSocket port still gets a quarter.
		{256, 32, 2048, 64, 60},
		{1024, 256, 2048, 256, 240},
		// Ordinary ones: what the HTTP API and the reserve leave.
		{20_000, 256, 2048, 17_696, 16_590},
		{65_536, 256, 3276, 62_004, 58_128},
		{1 << 20, 256, 52_428, 995_892, 933_648},
	} {
		b := planFDs(tc.nofile, tc.http)
		if b.Reserve != tc.reserve || b.WS != tc.ws || wsMaxConnsFor(b.WS) != tc.conns {
			t.Errorf("nofile %d, http %d: %+v, cap %d; want reserve %d, ws %d, cap %d",
				tc.nofile, tc.http, b, wsMaxConnsFor(b.WS), tc.reserve, tc.ws, tc.conns)
		}
		// Upgraded plus pending handshakes (netpoll's default, a
		// sixteenth, at least 16) fit the WebSocket share, but for the
		// floor of 16 at tiny limits.
		if conns := wsMaxConnsFor(b.WS); conns+max(16, conns/16) > max(b.WS, conns+16) {
			t.Errorf("nofile %d: %d connections and their handshakes exceed %d sockets", tc.nofile, conns, b.WS)
		}
	}
}

func TestResolveWSCaps(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := DefaultConfig().withDefaults()
	if got := resolveWSCaps(&cfg, 20_000, log); got != (wsCaps{conns: 16_590, perUser: 20, perIP: 5000}) {
		t.Fatalf("defaults: %+v", got)
	}
	cfg.WSMaxConns, cfg.WSMaxConnsPerUser, cfg.WSMaxConnsPerIP = 100, -1, -1
	if got := resolveWSCaps(&cfg, 20_000, log); got != (wsCaps{conns: 100}) {
		t.Fatalf("explicit and off: %+v", got)
	}
	cfg.WSMaxConns = -1
	if got := resolveWSCaps(&cfg, 20_000, log); got.conns != 0 {
		t.Fatalf("negative: %+v", got)
	}
	cfg.WSMaxConns = 0
	if got := resolveWSCaps(&cfg, 0, log); got.conns != 0 {
		t.Fatalf("unknown limit: %+v", got)
	}
}
