package bench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run: what was run where, the merged counts,
// latency percentiles, server samples and the scenario's figures and
// verdicts. It marshals to the -json output as is.
type Report struct {
	Scenario string         `json:"scenario"`
	Params   map[string]any `json:"params"`
	Command  string         `json:"command,omitempty"` // set by the caller, for reproduction
	Started  time.Time      `json:"started"`
	Duration float64        `json:"duration_s"` // the configured load duration
	Go       string         `json:"go"`
	Platform string         `json:"platform"`
	CPUs     int            `json:"cpus"`
	// LoadAvg is the machine's load average when the run started (Linux):
	// the harness shares the machine with the node and anything else.
	LoadAvg string `json:"load_avg,omitempty"`

	// Result is the merged measurement, histograms included; Counts is the
	// same without the histograms, for the JSON output.
	Result  *Result            `json:"-"`
	Counts  *Result            `json:"counts"`
	Latency map[string]Summary `json:"latency"`
	// Timeline is each latency by second of the run (see Timeline),
	// timed from the start of the load.
	Timeline map[string][]TimelinePoint `json:"timeline,omitempty"`
	Server   []ServerSample             `json:"server"`

	Figures []Figure `json:"figures"`
	// Tables are a scenario's own tables (abuse: one row per phase),
	// printed after the figures.
	Tables   []Table  `json:"tables,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Failures are the scenario's verdicts: a run with failures measured
	// something broken (lost messages, dropped connections).
	Failures []string `json:"failures,omitempty"`
}

// Table is a scenario's table of results: a title, a header and rows of
// cells, as printed.
type Table struct {
	Title  string     `json:"title"`
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
}

// Figure is one headline number of a run.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

func newReport(sc Scenario, opts *Options) *Report {
	return &Report{
		Scenario: sc.Name(),
		Params:   sc.Params(),
		Started:  time.Now().UTC().Truncate(time.Second),
		Duration: opts.Duration.Seconds(),
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		CPUs:     runtime.NumCPU(),
		LoadAvg:  loadAvg(),
	}
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "" where
// /proc/loadavg does not exist.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

func (r *Report) finish(res *Result, samples []ServerSample) {
	r.Result = res
	counts := *res
	counts.Latency = nil
	r.Counts = &counts
	r.Latency = make(map[string]Summary, len(res.Latency))
	for name, h := range res.Latency {
		r.Latency[name] = h.Summary()
		if tl := h.Timeline(); tl != nil && tl.Len() > 0 {
			if r.Timeline == nil {
				r.Timeline = make(map[string][]TimelinePoint)
			}
			r.Timeline[name] = tl.Points(res.Start)
		}
	}
	r.Server = samples
}

// addHarnessFigures adds the figures every scenario shares, after the
// scenario's own.
func (r *Report) addHarnessFigures() {
	// The nodes' own view of Raft during the load: from proposing an entry
	// to applying it (commit), and the state machine's apply time.
	if s0, ok0 := r.Sample("connected"); ok0 {
		if s1, ok1 := r.Sample("loaded"); ok1 {
			if n := s1.CommitCount - s0.CommitCount; n > 0 {
				r.AddFigure("raft commit latency, mean (server)", (s1.CommitSum-s0.CommitSum)/n*1e3, "ms")
			}
			if n := s1.ApplyCount - s0.ApplyCount; n > 0 {
				r.AddFigure("raft apply time per entry, mean (server)", (s1.ApplySum-s0.ApplySum)/n*1e6, "µs")
			}
			// Threads runnable but waiting for a CPU, on average: against
			// the server's CPU it tells a starved machine from slow code.
			if wait, dt := s1.CPUWaitSeconds-s0.CPUWaitSeconds, s1.At.Sub(s0.At).Seconds(); wait > 0 && dt > 0 {
				r.AddFigure("server threads waiting for a CPU, mean", wait/dt, "threads")
			}
			// The kernel's part (system calls, mostly socket I/O): what no
			// change to the node's own code can remove. The total comes in
			// clock ticks and the kernel's part exactly, so over a short
			// load the part can read a little over the total.
			if cpu, sys := s1.CPUSeconds-s0.CPUSeconds, s1.CPUSystemSecs-s0.CPUSystemSecs; cpu > 0 && sys > 0 {
				r.AddFigure("server CPU in the kernel", min(sys/cpu, 1)*100, "%")
			}
		}
	}
	if secs := r.Result.Elapsed().Seconds(); r.Result.HarnessCPU > 0 && secs > 0 {
		r.AddFigure("harness CPU during the load", r.Result.HarnessCPU/secs, "cores")
		if sys := r.Result.HarnessCPUSystem; sys > 0 {
			r.AddFigure("harness CPU in the kernel", sys/r.Result.HarnessCPU*100, "%")
		}
	}
}

// Sample returns the sample of phase summed over the nodes, if taken: with
// a cluster, CPU, memory, connections and counters are the whole cluster's,
// so "per message" and "per connection" figures cost the cluster, not one
// node. At is the first node's.
func (r *Report) Sample(phase string) (ServerSample, bool) {
	var sum ServerSample
	found := false
	for _, s := range r.Server {
		if s.Phase != phase {
			continue
		}
		if !found {
			sum, found = s, true
			continue
		}
		sum.Node += "," + s.Node
		sum.add(s)
	}
	return sum, found
}

// AddFigure appends a figure.
func (r *Report) AddFigure(name string, value float64, unit string) {
	r.Figures = append(r.Figures, Figure{Name: name, Value: value, Unit: unit})
}

// Failed reports whether the scenario found a failure.
func (r *Report) Failed() bool { return len(r.Failures) > 0 }

// latencyOrder lists the histograms in report order; others follow by name.
var latencyOrder = []string{"deliver", "ack", "connect", "online", "offline", "typing"}

// latencyTitles are the table's names for the histograms.
var latencyTitles = map[string]string{
	"deliver": "send → deliver",
	"ack":     "send → ack",
	"connect": "connect → hello",
	"online":  "reconnect → watcher online",
	"offline": "disconnect → watcher offline (grace incl.)",
	"typing":  "typing start → member",
	"resume":  "reconnect → resumed (sync incl.)",
}

// WriteText writes the human-readable report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "parleybench %s  %s\n", r.Scenario, formatParams(r.Params))
	fmt.Fprintf(&b, "%s %s, %d CPUs, started %s, load %.0fs, %d worker(s)\n",
		r.Go, r.Platform, r.CPUs, r.Started.Format(time.RFC3339), r.Duration, r.Result.Workers)
	if r.LoadAvg != "" {
		fmt.Fprintf(&b, "machine load average at start: %s\n", r.LoadAvg)
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", r.Command)
	}

	res := r.Result
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "connections\t%d open\t%d failed\t%d dropped", res.Conns, res.ConnFailures, res.Dropped)
	if res.Pings > 0 {
		fmt.Fprintf(tw, "\t%d pings answered", res.Pings)
	}
	fmt.Fprintln(tw)
	if res.Sent > 0 || res.Missed > 0 {
		fmt.Fprintf(tw, "messages\t%d sent\t%d acked\t%d delivered\t%d undelivered\t%d duplicate acks\t%d missed\n",
			res.Sent, res.Acked, res.Delivered, res.Undelivered, res.Duplicates, res.Missed)
	}
	if len(res.Retries) > 0 {
		fmt.Fprintf(tw, "retries\t%s\n", formatCounts(res.Retries))
	}
	if len(res.Failed) > 0 {
		fmt.Fprintf(tw, "sends failed\t%s\n", formatCounts(res.Failed))
	}
	if len(res.Counters) > 0 {
		fmt.Fprintf(tw, "counts\t%s\n", formatCounts(res.Counters))
	}
	_ = tw.Flush()

	if len(r.Latency) > 0 {
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency\tcount\tp50\tp90\tp99\tp99.9\tmax\t")
		for _, name := range sortedLatencyNames(r.Latency) {
			s := r.Latency[name]
			title := cmp.Or(latencyTitles[name], name)
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", title, s.Count,
				formatMicros(s.P50), formatMicros(s.P90), formatMicros(s.P99), formatMicros(s.P999), formatMicros(s.Max))
		}
		_ = tw.Flush()
	}

	if len(r.Figures) > 0 {
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, f := range r.Figures {
			fmt.Fprintf(tw, "%s\t%s %s\n", f.Name, formatValue(f.Value), f.Unit)
		}
		_ = tw.Flush()
	}

	for _, t := range r.Tables {
		fmt.Fprintf(&b, "\n%s\n", t.Title)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(t.Header, "\t")+"\t")
		for _, row := range t.Rows {
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		_ = tw.Flush()
	}

	if len(r.Server) > 0 {
		fmt.Fprintf(&b, "\nserver samples (%s)\n", r.Server[0].Node)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "phase\t")
		for _, s := range r.Server {
			fmt.Fprintf(tw, "%s\t", s.Phase)
		}
		fmt.Fprintln(tw)
		type row struct {
			name string
			get  func(ServerSample) string
		}
		var rows []row
		if r.Server[0].Node != r.Server[len(r.Server)-1].Node {
			rows = append(rows, row{"node", func(s ServerSample) string { return s.Node }})
		}
		rows = append(rows, []row{
			{"rss", func(s ServerSample) string { return formatBytes(s.RSSBytes) }},
			{"heap in use", func(s ServerSample) string { return formatBytes(s.HeapInuseBytes) }},
			{"cpu seconds", func(s ServerSample) string { return fmt.Sprintf("%.2f", s.CPUSeconds) }},
			{"goroutines", func(s ServerSample) string { return fmt.Sprintf("%.0f", s.Goroutines) }},
			{"connections", func(s ServerSample) string { return fmt.Sprintf("%.0f", s.Connections) }},
			{"raft commits", func(s ServerSample) string { return fmt.Sprintf("%.0f", s.Commits) }},
			{"commands", func(s ServerSample) string { return fmt.Sprintf("%.0f", s.Commands) }},
		}...)
		for _, row := range rows {
			fmt.Fprintf(tw, "%s\t", row.name)
			for _, s := range r.Server {
				fmt.Fprintf(tw, "%s\t", row.get(s))
			}
			fmt.Fprintln(tw)
		}
		_ = tw.Flush()
	}

	if len(res.Errors) > 0 {
		b.WriteString("\nerrors seen:\n")
		for _, e := range res.Errors {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "\nWARNING: %s", w)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "\nFAILED: %s", f)
	}
	if len(r.Warnings)+len(r.Failures) > 0 {
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedLatencyNames(m map[string]Summary) []string {
	names := slices.Collect(maps.Keys(m))
	rank := func(n string) int {
		if i := slices.Index(latencyOrder, n); i >= 0 {
			return i
		}
		return len(latencyOrder)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b))
	})
	return names
}

func formatParams(p map[string]any) string {
	keys := slices.Sorted(maps.Keys(p))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, p[k])
	}
	return strings.Join(parts, " ")
}

func formatCounts(m map[string]int64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// formatMicros prints a latency with three significant digits in a unit
// that suits it.
func formatMicros(us int64) string {
	switch d := float64(us); {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.3gms", d/1e3)
	default:
		return fmt.Sprintf("%.3gs", d/1e6)
	}
}

func formatBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", v)
	}
}

func formatValue(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
