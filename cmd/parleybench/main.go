// Command parleybench loads Parley nodes and reports throughput, latency
// and the cost of connections. Run it with -h for the flags; docs/BENCHMARKS.md
// has the reference runs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"parley/bench"
)

func main() {
	// The harness re-executes this binary as its worker processes.
	if len(os.Args) > 1 && os.Args[1] == bench.WorkerArg {
		os.Exit(bench.WorkerMain())
	}
	os.Exit(run())
}

func run() int {
	if len(os.Args) > 1 && os.Args[1] == "table" {
		return table(os.Args[2:], os.Stdout, os.Stderr)
	}
	if len(os.Args) > 1 && os.Args[1] == "sweep" {
		return sweep(os.Args[2:], os.Stdout, os.Stderr)
	}
	inv, err := parseArgs(os.Args[1:], os.Stderr)
	if err != nil {
		return 2
	}
	sc, opts := inv.sc, inv.opts
	if inv.progress && term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stderr.Fd())) {
		opts.Progress = bench.NewBarProgress(os.Stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, sc, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parleybench:", err)
		return 1
	}
	rep.Command = "parleybench " + strings.Join(os.Args[1:], " ")
	if inv.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parleybench:", err)
		return 1
	}
	if inv.chart != "" {
		if err := bench.WriteChartFile(inv.chart, rep); err != nil {
			fmt.Fprintln(os.Stderr, "parleybench: chart:", err)
			return 1
		}
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// table is "parleybench table NAME=REPORT.json ...": a Markdown summary of
// -json reports, each linked to its chart DIR/NAME.svg when -charts DIR is
// given and the chart exists (the link relative to the document -doc). A
// file that holds no report (a run that failed before reporting) gets a
// row that says so, with the last line of NAME.err beside it if there is
// one (the run's stderr).
func table(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("parleybench table", flag.ContinueOnError)
	fs.SetOutput(errOut)
	charts := fs.String("charts", "", "directory of the charts NAME.svg; empty: no links")
	doc := fs.String("doc", "docs/BENCHMARKS.md", "the document the table goes into, for the charts' links")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: parleybench table [-charts DIR -doc FILE] NAME=REPORT.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var runs []bench.SuiteRun
	for _, arg := range fs.Args() {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			fmt.Fprintf(errOut, "parleybench table: %q is not NAME=REPORT.json\n", arg)
			return 2
		}
		run := bench.SuiteRun{Name: name}
		if b, err := os.ReadFile(path); err != nil {
			run.Err = err.Error()
		} else if err := json.Unmarshal(b, &run.Report); err != nil || run.Report == nil || run.Report.Scenario == "" {
			run.Report, run.Err = nil, "no JSON report in "+path
			if last := lastLine(strings.TrimSuffix(path, ".json") + ".err"); last != "" {
				run.Err = last
			}
		} else if chart := filepath.Join(*charts, name+".svg"); *charts != "" && fileExists(chart) {
			if rel, err := filepath.Rel(filepath.Dir(*doc), chart); err == nil {
				run.Chart = filepath.ToSlash(rel)
			}
		}
		runs = append(runs, run)
	}
	if err := bench.WriteSuiteMarkdown(out, runs); err != nil {
		fmt.Fprintln(errOut, "parleybench table:", err)
		return 1
	}
	return 0
}

// sweep reads the reports of a rate sweep (direct at fixed rates, one JSON
// report per step; scripts/sweep.sh runs one) and writes a table per
// series and, with -chart, delivered msg/s and p99 against the offered
// rate.
func sweep(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("parleybench sweep", flag.ContinueOnError)
	fs.SetOutput(errOut)
	chart := fs.String("chart", "", "write the SVG chart to this file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: parleybench sweep [-chart FILE] SERIES=REPORT.json...  (one argument per step; steps of a series share its name)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var names []string
	var points []bench.SweepPoint
	for _, arg := range fs.Args() {
		i := strings.LastIndex(arg, "=")
		if i <= 0 || i == len(arg)-1 {
			fmt.Fprintf(errOut, "parleybench sweep: %q is not SERIES=REPORT.json\n", arg)
			return 2
		}
		name, path := arg[:i], arg[i+1:]
		var rep bench.Report
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		var p bench.SweepPoint
		if err == nil {
			p, err = bench.SweepPointOf(&rep)
		}
		if err != nil {
			fmt.Fprintf(errOut, "parleybench sweep: %s: %v\n", path, err)
			return 1
		}
		names, points = append(names, name), append(points, p)
	}
	series := bench.SweepSeriesOf(names, points)
	if err := bench.WriteSweepMarkdown(out, series); err != nil {
		fmt.Fprintln(errOut, "parleybench sweep:", err)
		return 1
	}
	if *chart != "" {
		f, err := os.Create(*chart)
		if err == nil {
			err = bench.WriteSweepChart(f, series)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(errOut, "parleybench sweep: chart:", err)
			return 1
		}
	}
	return 0
}

// lastLine returns the last non-blank line of a file, or "".
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
