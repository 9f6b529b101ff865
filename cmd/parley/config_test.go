package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	http    string
	workers int
	rate    float64
	quota   int64
	retain  time.Duration
	allow   bool
	fcm     string
}

func sampleFlags() (*flag.FlagSet, *sample) {
	fs := flag.NewFlagSet("parley", flag.ContinueOnError)
	s := &sample{}
	fs.StringVar(&s.http, "http", "127.0.0.1:7070", "HTTP API address")
	fs.IntVar(&s.workers, "push-workers", 16, "push workers")
	fs.Float64Var(&s.rate, "conn-rate", 100, "requests per second")
	fs.Int64Var(&s.quota, "media-quota-bytes", 1<<30, "quota")
	fs.DurationVar(&s.retain, "send-retention", 7*24*time.Hour, "retention")
	fs.BoolVar(&s.allow, "push-allow-private", false, "allow private")
	fs.StringVar(&s.fcm, "push-fcm-key", "", "FCM key file")
	fs.String("config", "", "")
	fs.Bool("print-config", false, "")
	return fs, s
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "parley.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsFlagsAndTheCommandLineWins(t *testing.T) {
	fs, s := sampleFlags()
	if err := fs.Parse([]string{"-push-workers", "4"}); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, `
http = "0.0.0.0:7070"
push-workers = 64          # the command line says 4
conn-rate = 2.5
send-retention = "36h"
media-quota-bytes = 5368709120

[push]
allow-private = true
fcm-key = "/etc/parley/fcm.json"
`)
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	want := sample{http: "0.0.0.0:7070", workers: 4, rate: 2.5, quota: 5 << 30, retain: 36 * time.Hour, allow: true, fcm: "/etc/parley/fcm.json"}
	if *s != want {
		t.Fatalf("got %+v\nwant %+v", *s, want)
	}
}

func TestConfigFileRefusals(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{`htp = "x"`, `"htp" is not a setting`},
		{"[push]\nfcm-keys = \"x\"", `"push-fcm-keys" is not a setting`},
		{`send-retention = "soon"`, "send-retention: invalid value"},
		{`push-workers = "many"`, "push-workers: invalid value"},
		{`push-workers = [1, 2]`, "push-workers: a []interface {}"},
		{`config = "other.toml"`, `"config" is not a setting`},
		{"push-fcm-key = \"a\"\n[push]\nfcm-key = \"b\"", "set twice"},
		{`http = `, "parley.toml"},
	} {
		fs, _ := sampleFlags()
		err := applyConfigFile(fs, writeFile(t, c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.file, err, c.want)
		}
	}
}

// TestPrintConfigReadsBack: what -print-config writes, -config reads back
// to the same settings.
func TestPrintConfigReadsBack(t *testing.T) {
	fs, s := sampleFlags()
	if err := fs.Parse([]string{"-http", "10.0.0.1:80", "-send-retention", "90m", "-push-allow-private", "-conn-rate", "0.25", "-push-fcm-key", `C:\keys\"fcm".json`}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printConfig(&out, fs); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "print-config =") || !strings.Contains(out.String(), "# HTTP API address\nhttp = \"10.0.0.1:80\"") {
		t.Fatalf("printed:\n%s", out.String())
	}
	fs2, s2 := sampleFlags()
	if err := fs2.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs2, writeFile(t, out.String())); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if *s2 != *s {
		t.Fatalf("read back %+v, want %+v", *s2, *s)
	}
}
