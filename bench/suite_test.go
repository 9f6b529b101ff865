package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestWriteSuiteMarkdown(t *testing.T) {
	// A report goes through its JSON form, as the suite reads it.
	t0 := time.Now()
	h := NewHistogram()
	for i := range 100 {
		h.Record(time.Duration(i+1) * time.Millisecond)
	}
	res := &Result{Workers: 1, Conns: 8, Sent: 100, Acked: 100, Delivered: 100, Start: t0, End: t0.Add(time.Second),
		Latency: map[string]*Histogram{"deliver": h, "ack": h, "unused": NewHistogram()}}
	rep := reportWith(&Direct{Senders: 4}, res,
		ServerSample{Phase: "connected", At: t0, CPUSeconds: 1},
		ServerSample{Phase: "loaded", At: t0.Add(2 * time.Second), CPUSeconds: 2})
	rep.Command = "parleybench direct -senders 4"
	rep.Warnings = []string{"a | pipe"}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	failed := &Report{Scenario: "idle", Counts: &Result{Conns: 3}, Failures: []string{"only 3 of 5 connections were opened"},
		Figures: []Figure{{Name: "server RSS per connection", Value: 1193, Unit: "bytes"}}}

	var b strings.Builder
	err = WriteSuiteMarkdown(&b, []SuiteRun{
		{Name: "direct-flat", Report: &back, Chart: "bench/direct-flat.svg"},
		{Name: "idle", Report: failed},
		{Name: "group", Err: "exit status 2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "| run | scenario |") || !strings.HasPrefix(lines[1], "|---") {
		t.Fatalf("no table header:\n%s", out)
	}
	cols := strings.Count(lines[0], "|")
	for i, l := range lines[2:5] {
		if n := strings.Count(l, "|") - strings.Count(l, `\|`); n != cols {
			t.Fatalf("row %d has %d cells' bars, the header %d:\n%s", i, n, cols, l)
		}
	}
	for _, want := range []string{
		"| [direct-flat](#direct-flat) | direct | 8 | throughput (acked): 100 msg/s | send → deliver | 50ms | 99ms |",
		"| 0.5 cores | ok, 1 warning(s) |",
		"| [idle](#idle) | idle | 3 | server RSS per connection: 1193 bytes |",
		"FAILED (1)",
		"| group | | | | | | | | | | no report: exit status 2 |",
		"### direct-flat", "`parleybench direct -senders 4`",
		"| send → ack | 100 | 50ms |",
		"- warning: a | pipe",
		"- **FAILED:** only 3 of 5 connections were opened",
		"![direct-flat: latency over time and percentile spectrum](bench/direct-flat.svg)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "unused") {
		t.Errorf("an empty histogram is listed:\n%s", out)
	}
}
