package bench

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func reportWith(sc Scenario, res *Result, samples ...ServerSample) *Report {
	rep := newReport(sc, &Options{Duration: 10 * time.Second})
	rep.finish(res, samples)
	sc.Report(rep)
	return rep
}

func figure(rep *Report, name string) (float64, bool) {
	for _, f := range rep.Figures {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
}

// TestDirectReportSumsTheCluster: against a cluster, the server figures are
// the sum over the nodes (each node applies every message).
func TestDirectReportSumsTheCluster(t *testing.T) {
	t0 := time.Now()
	h := NewHistogram()
	h.Record(time.Millisecond)
	res := &Result{Workers: 1, Conns: 2, Sent: 100, Acked: 100, Delivered: 100, Start: t0, End: t0.Add(time.Second),
		Latency: map[string]*Histogram{"deliver": h, "ack": h}}
	var samples []ServerSample
	for _, node := range []string{"a", "b", "c"} {
		samples = append(samples,
			ServerSample{Phase: "connected", Node: node, At: t0, CPUSeconds: 1, CPUWaitSeconds: 2, CPUSystemSecs: 0.4},
			ServerSample{Phase: "loaded", Node: node, At: t0.Add(time.Second), CPUSeconds: 1.5, CPUWaitSeconds: 2.25, CPUSystemSecs: 0.6})
	}
	res.HarnessCPU, res.HarnessCPUSystem = 0.5, 0.2
	rep := reportWith(&Direct{Senders: 1}, res, samples...)
	if v, _ := figure(rep, "harness CPU per message"); v != 5000 {
		t.Errorf("harness cpu per message %v µs, want 5000", v)
	}
	if v, _ := figure(rep, "server CPU during the load"); v != 1.5 {
		t.Errorf("cluster cpu %v cores, want 1.5 (0.5 on each of 3 nodes)", v)
	}
	if v, _ := figure(rep, "server CPU per message"); v != 15000 {
		t.Errorf("cluster cpu per message %v µs, want 15000", v)
	}
	rep.addHarnessFigures()
	if v, _ := figure(rep, "server threads waiting for a CPU, mean"); v != 0.75 {
		t.Errorf("cluster cpu wait %v threads, want 0.75 (0.25 on each of 3 nodes)", v)
	}
	if v, _ := figure(rep, "server CPU in the kernel"); v < 39.99 || v > 40.01 {
		t.Errorf("server kernel share %v%%, want 40 (0.2 of 0.5 s on each node)", v)
	}
	if v, _ := figure(rep, "harness CPU in the kernel"); v < 39.99 || v > 40.01 {
		t.Errorf("harness kernel share %v%%, want 40", v)
	}
	rep.Figures = nil
	rep.Server = []ServerSample{
		{Phase: "connected", CommitSum: 1, CommitCount: 100, ApplySum: 0.5, ApplyCount: 100},
		{Phase: "loaded", CommitSum: 3, CommitCount: 1100, ApplySum: 0.6, ApplyCount: 1100},
	}
	rep.addHarnessFigures()
	if v, _ := figure(rep, "raft commit latency, mean (server)"); v != 2 {
		t.Errorf("commit latency %v ms, want 2", v)
	}
	if v, _ := figure(rep, "raft apply time per entry, mean (server)"); v < 99.99 || v > 100.01 {
		t.Errorf("apply time %v µs, want 100", v)
	}
}

// TestServerSampleAddSumsEveryFigure: a figure added to ServerSample is
// summed over the nodes, or this fails.
func TestServerSampleAddSumsEveryFigure(t *testing.T) {
	var one ServerSample
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Float64 {
			f.SetFloat(1)
		}
	}
	sum := one
	sum.add(one)
	s := reflect.ValueOf(sum)
	for i := range s.NumField() {
		if f := s.Field(i); f.Kind() == reflect.Float64 && f.Float() != 2 {
			t.Errorf("%s: %v after adding 1 to 1", s.Type().Field(i).Name, f.Float())
		}
	}
}

func TestDirectReport(t *testing.T) {
	t0 := time.Now()
	h := NewHistogram()
	h.Record(2 * time.Millisecond)
	res := &Result{
		Workers: 1, Conns: 8, Sent: 1000, Acked: 1000, Delivered: 990, Undelivered: 10,
		Retries: map[string]int64{"rate_limited": 5},
		Start:   t0, End: t0.Add(2 * time.Second),
		Latency: map[string]*Histogram{"deliver": h, "ack": h},
	}
	rep := reportWith(&Direct{Senders: 4}, res,
		ServerSample{Phase: "connected", At: t0, CPUSeconds: 1, Commits: 10, Commands: 10},
		ServerSample{Phase: "loaded", At: t0.Add(4 * time.Second), CPUSeconds: 3, Commits: 510, Commands: 1010})
	if v, _ := figure(rep, "throughput (acked)"); v != 500 {
		t.Errorf("throughput %v", v)
	}
	if v, _ := figure(rep, "server CPU during the load"); v != 0.5 {
		t.Errorf("cpu %v", v)
	}
	if v, _ := figure(rep, "server CPU per message"); v != 2000 {
		t.Errorf("cpu per message %v µs", v)
	}
	if v, _ := figure(rep, "commands per Raft entry"); v != 2 {
		t.Errorf("batching %v", v)
	}
	if !rep.Failed() || !strings.Contains(strings.Join(rep.Failures, "|"), "10 of 1000 acked messages were not delivered") {
		t.Errorf("failures %q", rep.Failures)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "rate limit") {
		t.Errorf("warnings %q", rep.Warnings)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"senders=4", "send → deliver", "2ms", "FAILED: 10 of 1000", "rate_limited 5", "throughput (acked)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	lat := back["latency"].(map[string]any)["deliver"].(map[string]any)
	if lat["count"].(float64) != 1 || lat["p99_us"].(float64) != 2000 {
		t.Errorf("JSON latency %v", lat)
	}
	if _, has := back["counts"].(map[string]any)["latency"]; has {
		t.Error("JSON counts carry the raw histograms")
	}

	clean := reportWith(&Direct{Senders: 4}, &Result{Acked: 5, Delivered: 5, Start: t0, End: t0.Add(time.Second)})
	if clean.Failed() {
		t.Errorf("clean run failed: %q", clean.Failures)
	}
}

func TestIdleReport(t *testing.T) {
	t0 := time.Now()
	res := &Result{Workers: 3, Conns: 1000, Dropped: 2}
	rep := reportWith(&Idle{Conns: 1000}, res,
		ServerSample{Phase: "baseline", At: t0, RSSBytes: 100 << 20, HeapInuseBytes: 4 << 20, Goroutines: 50},
		ServerSample{Phase: "connected", At: t0.Add(time.Second), CPUSeconds: 1, Connections: 1000},
		ServerSample{Phase: "loaded", At: t0.Add(11 * time.Second), RSSBytes: 100<<20 + 2_000_000, HeapInuseBytes: 4<<20 + 1_000_000,
			Goroutines: 50, CPUSeconds: 1.5, Connections: 998})
	if v, _ := figure(rep, "server RSS per connection"); v != 2000 {
		t.Errorf("rss per conn %v", v)
	}
	if v, _ := figure(rep, "server heap in use per connection"); v != 1000 {
		t.Errorf("heap per conn %v", v)
	}
	if v, _ := figure(rep, "server CPU while idle"); v != 5 {
		t.Errorf("idle cpu %v%%", v)
	}
	if !rep.Failed() || !strings.Contains(rep.Failures[0], "2 connections were dropped") {
		t.Errorf("failures %q", rep.Failures)
	}
	if len(rep.Warnings) != 2 { // node counts fewer; delta small against the baseline
		t.Errorf("warnings %q", rep.Warnings)
	}
	short := reportWith(&Idle{Conns: 1000}, &Result{Conns: 990})
	if !short.Failed() || !strings.Contains(short.Failures[0], "only 990 of 1000") {
		t.Errorf("failures %q", short.Failures)
	}
}

func TestValidate(t *testing.T) {
	bad := []Scenario{
		&Direct{Senders: -1}, &Direct{Rate: -1}, &Direct{Window: 1000}, &Direct{BodyBytes: 10},
		&Direct{Drain: time.Hour}, &Idle{Conns: -5},
	}
	for _, sc := range bad {
		if sc.Validate() == nil {
			t.Errorf("%+v validated", sc)
		}
	}
	for _, sc := range []Scenario{&Direct{}, &Direct{Senders: 1024, Rate: 5000}, &Idle{}, &Idle{Conns: 15000}} {
		if err := sc.Validate(); err != nil {
			t.Errorf("%+v: %v", sc, err)
		}
	}
	o := Options{HTTP: []string{"ftp://x"}, WS: nil, Duration: -1, ConnsPerWorker: 20000}
	err := o.Validate()
	for _, want := range []string{"HTTP URL", "no WebSocket URL", "duration", "conns per worker"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a mention of %q", err, want)
		}
	}
	good := Options{HTTP: []string{"http://127.0.0.1:7070"}, WS: []string{"ws://127.0.0.1:7071/v1/ws"}}.withDefaults()
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
}

func TestFormatMicros(t *testing.T) {
	for us, want := range map[int64]string{0: "0µs", 999: "999µs", 1500: "1.5ms", 149_000: "149ms", 2_340_000: "2.34s"} {
		if got := formatMicros(us); got != want {
			t.Errorf("formatMicros(%d) = %q, want %q", us, got, want)
		}
	}
}
