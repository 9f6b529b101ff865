package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"parley/bench"
)

// Every scenario of the harness has a command line, and nothing else does.
func TestScenarioCmdsCoverRegistry(t *testing.T) {
	var names []string
	for name, cmd := range scenarioCmds {
		names = append(names, name)
		if cmd.flags == nil || cmd.about == "" || cmd.duration == "" {
			t.Errorf("%s: incomplete command %+v", name, cmd)
		}
	}
	slices.Sort(names)
	if want := bench.ScenarioNames(); !slices.Equal(names, want) {
		t.Fatalf("commands for %q, scenarios %q", names, want)
	}
}

// A scenario's flags may come before its name too, as the harness's may
// come after it.
func TestParseArgsFlagsBeforeName(t *testing.T) {
	inv, err := parseArgs([]string{"-senders", "4", "-json", "-rate", "10", "direct", "-settle", "1s", "-progress=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := inv.sc.(*bench.Direct)
	if !ok || d.Senders != 4 || d.Rate != 10 || !inv.asJSON || inv.progress || inv.opts.Settle != time.Second {
		t.Fatalf("%T %+v, json %v, progress %v, options %+v", inv.sc, inv.sc, inv.asJSON, inv.progress, inv.opts)
	}
	if inv, err = parseArgs([]string{"--json", "--", "idle", "-conns", "3"}, io.Discard); err != nil || inv.sc.(*bench.Idle).Conns != 3 || !inv.asJSON {
		t.Fatalf("%v %+v", err, inv)
	}
	if got := scenarioArg([]string{"-json", "-http", "x", "-progress=false", "-users=3", "storm"}); got != 5 {
		t.Fatalf("scenario at %d, want 5", got)
	}
}

// Each scenario has its own FlagSet: another scenario's flag is refused,
// before the name or after it, and -h after the name shows that scenario's
// flags only.
func TestParseArgsOwnFlags(t *testing.T) {
	for _, args := range [][]string{
		{"idle", "-senders", "3"}, {"direct", "-users", "5"}, {"-senders", "2", "storm"}, {"abuse", "-members", "3"},
	} {
		var out strings.Builder
		if _, err := parseArgs(args, &out); err == nil || !strings.Contains(out.String(), "flag provided but not defined") {
			t.Errorf("%q: err %v, output %q", args, err, out.String())
		}
	}
	var out strings.Builder
	if _, err := parseArgs([]string{"group", "-h"}, &out); err == nil {
		t.Fatal("-h parsed")
	}
	usage := out.String()
	for _, want := range []string{"usage: parleybench [flags] group [flags]", "-members", "-senders", "-warmup", "-json", "-http"} {
		if !strings.Contains(usage, want) {
			t.Errorf("no %q in %s", want, usage)
		}
	}
	for _, other := range []string{"-users", "-phase", "-conns int", "-restart-cmd"} {
		if strings.Contains(usage, other) {
			t.Errorf("group's usage shows %q", other)
		}
	}
	// The general usage names every scenario on the line scripts/bench.sh
	// reads.
	out.Reset()
	if _, err := parseArgs([]string{"-h"}, &out); err == nil ||
		!strings.HasPrefix(out.String(), "usage: parleybench [flags] "+strings.Join(bench.ScenarioNames(), "|")+" [flags]\n") {
		t.Fatalf("err %v, usage %q", err, out.String())
	}
}
