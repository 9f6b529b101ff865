package bench

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

func sweepReport(rate string, delivered float64, p99 int64, retries map[string]int64) *Report {
	return &Report{
		Scenario: "direct",
		Params:   map[string]any{"rate": rate, "senders": 1000},
		Counts:   &Result{Retries: retries, Missed: 7},
		Latency:  map[string]Summary{"deliver": {P50: 900, P99: p99}},
		Figures: []Figure{
			{Name: "throughput (acked)", Value: delivered, Unit: "msg/s"},
			{Name: "throughput (delivered)", Value: delivered, Unit: "msg/s"},
			{Name: "server CPU per message", Value: 21.5, Unit: "µs"},
			{Name: "harness CPU per message", Value: 30.25, Unit: "µs"},
		},
	}
}

func TestSweepReportAndChart(t *testing.T) {
	var names []string
	var pts []SweepPoint
	for _, r := range []*Report{
		sweepReport("20000/s", 19990, 9000, nil),
		sweepReport("5000/s", 5000, 2000, nil),
		sweepReport("100000/s", 18000, 90000, map[string]int64{"busy": 500, "timeout": 3, "unavailable": 2}),
	} {
		p, err := SweepPointOf(r)
		if err != nil {
			t.Fatal(err)
		}
		names, pts = append(names, "one node, 1,000 pairs"), append(pts, p)
	}
	if _, err := SweepPointOf(&Report{Scenario: "direct", Params: map[string]any{"rate": "flat-out"}, Counts: &Result{}}); err == nil {
		t.Fatal("a flat-out run read as a step")
	}
	series := SweepSeriesOf(names, pts)
	if len(series) != 1 || series[0].Points[0].Offered != 5000 || series[0].Points[2].Offered != 100000 {
		t.Fatalf("series %+v", series)
	}
	var md bytes.Buffer
	if err := WriteSweepMarkdown(&md, series); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| 100000 | 18000 | 900µs | 90ms | 500 / 3 / 2 | 0 | 7 | 0 | 0 | 21.5 µs | 30.2 µs |",
		"Peak delivered: 19990 msg/s; at 100000 msg/s offered, 18000 msg/s (90% of the peak).",
	} {
		if !strings.Contains(md.String(), want) {
			t.Fatalf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var svg bytes.Buffer
	if err := WriteSweepChart(&svg, series); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil {
		t.Fatalf("chart is not XML: %v", err)
	}
	if n := strings.Count(svg.String(), "<polyline"); n != 2 {
		t.Fatalf("%d lines, want goodput and p99", n)
	}
}
