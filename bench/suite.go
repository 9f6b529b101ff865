package bench

import (
	"cmp"
	"fmt"
	"io"
	"strings"
)

// SuiteRun is one run of a benchmark suite (scripts/bench.sh), for
// WriteSuiteMarkdown.
type SuiteRun struct {
	Name   string  // a short label: "direct-flat"
	Report *Report // as parleybench -json wrote it; nil when the run produced none
	Chart  string  // the run's chart, relative to the document; "" for none
	Err    string  // why there is no report
}

// WriteSuiteMarkdown writes a suite's results as Markdown: a summary table
// with a row per run, then per run its command, figures, latencies,
// warnings and failures, and chart. It reads only what the -json output
// holds, so it works on reports read back from files.
func WriteSuiteMarkdown(w io.Writer, runs []SuiteRun) error {
	var b strings.Builder
	b.WriteString("| run | scenario | connections | headline | latency | p50 | p99 | p99.9 | max | server CPU | verdict |\n")
	b.WriteString("|---|---|---:|---|---|---:|---:|---:|---:|---|---|\n")
	for _, run := range runs {
		rep := run.Report
		if rep == nil {
			fmt.Fprintf(&b, "| %s | | | | | | | | | | no report: %s |\n", mdCell(run.Name), mdCell(run.Err))
			continue
		}
		var conns int64
		if rep.Counts != nil {
			conns = rep.Counts.Conns
		}
		latName, lat := "", Summary{}
		if names := sortedLatencyNames(nonEmpty(rep.Latency)); len(names) > 0 {
			latName, lat = names[0], rep.Latency[names[0]]
		}
		latCells := "| | | | "
		if latName != "" {
			latCells = fmt.Sprintf("%s | %s | %s | %s | ", formatMicros(lat.P50), formatMicros(lat.P99),
				formatMicros(lat.P999), formatMicros(lat.Max))
		}
		fmt.Fprintf(&b, "| [%s](#%s) | %s | %d | %s | %s | %s%s | %s |\n",
			mdCell(run.Name), anchor(run.Name), mdCell(rep.Scenario), conns, mdCell(headline(rep)),
			mdCell(cmp.Or(latencyTitles[latName], latName)), latCells, mdCell(serverCPU(rep)), mdCell(verdict(rep)))
	}

	for _, run := range runs {
		fmt.Fprintf(&b, "\n### %s\n\n", run.Name)
		rep := run.Report
		if rep == nil {
			fmt.Fprintf(&b, "No report: %s\n", run.Err)
			continue
		}
		fmt.Fprintf(&b, "`%s`  \n%s, load %gs, %s\n\n", rep.Command, formatParams(rep.Params), rep.Duration, countsLine(rep))
		if len(rep.Figures) > 0 {
			b.WriteString("| figure | value |\n|---|---:|\n")
			for _, f := range rep.Figures {
				fmt.Fprintf(&b, "| %s | %s %s |\n", mdCell(f.Name), formatValue(f.Value), mdCell(f.Unit))
			}
			b.WriteString("\n")
		}
		if names := sortedLatencyNames(nonEmpty(rep.Latency)); len(names) > 0 {
			b.WriteString("| latency | count | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
			for _, name := range names {
				s := rep.Latency[name]
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", mdCell(cmp.Or(latencyTitles[name], name)), s.Count,
					formatMicros(s.P50), formatMicros(s.P90), formatMicros(s.P99), formatMicros(s.P999), formatMicros(s.Max))
			}
			b.WriteString("\n")
		}
		for _, f := range rep.Failures {
			fmt.Fprintf(&b, "- **FAILED:** %s\n", f)
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(&b, "- warning: %s\n", w)
		}
		if len(rep.Failures)+len(rep.Warnings) > 0 {
			b.WriteString("\n")
		}
		if run.Chart != "" {
			fmt.Fprintf(&b, "![%s: latency over time and percentile spectrum](%s)\n", run.Name, run.Chart)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func nonEmpty(m map[string]Summary) map[string]Summary {
	out := make(map[string]Summary, len(m))
	for k, s := range m {
		if s.Count > 0 {
			out[k] = s
		}
	}
	return out
}

// headline is a run's first rate (a figure per second), else its first
// figure.
func headline(rep *Report) string {
	for _, f := range rep.Figures {
		if strings.HasSuffix(f.Unit, "/s") {
			return fmt.Sprintf("%s: %s %s", f.Name, formatValue(f.Value), f.Unit)
		}
	}
	if len(rep.Figures) > 0 {
		f := rep.Figures[0]
		return strings.TrimSpace(fmt.Sprintf("%s: %s %s", f.Name, formatValue(f.Value), f.Unit))
	}
	return ""
}

// serverCPU is the run's server CPU figure (the first named so, not a cost
// per unit).
func serverCPU(rep *Report) string {
	for _, f := range rep.Figures {
		if strings.HasPrefix(f.Name, "server CPU") && !strings.Contains(f.Name, " per ") {
			return fmt.Sprintf("%s %s", formatValue(f.Value), f.Unit)
		}
	}
	return ""
}

func verdict(rep *Report) string {
	switch {
	case len(rep.Failures) > 0:
		return fmt.Sprintf("FAILED (%d)", len(rep.Failures))
	case len(rep.Warnings) > 0:
		return fmt.Sprintf("ok, %d warning(s)", len(rep.Warnings))
	default:
		return "ok"
	}
}

func countsLine(rep *Report) string {
	c := rep.Counts
	if c == nil {
		return ""
	}
	parts := []string{fmt.Sprintf("%d connections, %d worker(s)", c.Conns, c.Workers)}
	if c.Sent > 0 {
		parts = append(parts, fmt.Sprintf("%d sent, %d acked, %d delivered, %d undelivered", c.Sent, c.Acked, c.Delivered, c.Undelivered))
	}
	if len(c.Counters) > 0 {
		parts = append(parts, formatCounts(c.Counters))
	}
	return strings.Join(parts, "; ")
}

// mdCell makes s safe inside a Markdown table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// anchor is the GitHub anchor of a "### name" heading.
func anchor(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
