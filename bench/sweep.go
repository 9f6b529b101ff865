package bench

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A sweep is the direct scenario run at rising offered rates, one report
// per rate (scripts/sweep.sh runs it): where the delivered rate stops
// following the offered one is the capacity, and what happens past it is
// the overload behaviour (does goodput hold, or collapse?). SweepPoint is
// one step, read from its report; WriteSweepMarkdown and WriteSweepChart
// show the steps of one or more series (a series: one setup, e.g. one node
// with 1,000 pairs).

// SweepPoint is one step of a sweep.
type SweepPoint struct {
	Offered   float64 // scheduled msg/s
	Acked     float64 // msg/s acknowledged over the load
	Delivered float64 // msg/s delivered over the load
	P50, P99  int64   // send → deliver, µs from the intended send time
	// ServerCPUPerMsg is µs of server CPU (all nodes) per message; 0 when
	// the report has none.
	ServerCPUPerMsg float64
	// HarnessCPUPerMsg is µs of the harness's CPU per message: on a
	// machine it shares with the nodes, what they could not have.
	HarnessCPUPerMsg float64
	Retries          map[string]int64 // retried attempts by error code
	Failed           map[string]int64 // messages given up, by last code
	Missed           int64            // scheduled sends never issued
	Undelivered      int64            // acked and not delivered
	Dropped          int64            // connections the server dropped
}

// SweepSeries is the steps of one setup, by offered rate.
type SweepSeries struct {
	Name   string
	Points []SweepPoint
}

// SweepPointOf reads a step from a direct report at a fixed rate.
func SweepPointOf(rep *Report) (SweepPoint, error) {
	if rep == nil || rep.Scenario != "direct" || rep.Counts == nil {
		return SweepPoint{}, errors.New("not a direct report")
	}
	rate, _ := rep.Params["rate"].(string)
	offered, err := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
	if err != nil || offered <= 0 {
		return SweepPoint{}, fmt.Errorf("not a fixed-rate run (rate %q)", rate)
	}
	c := rep.Counts
	p := SweepPoint{
		Offered: offered, Retries: c.Retries, Failed: c.Failed,
		Missed: c.Missed, Undelivered: c.Undelivered, Dropped: c.Dropped,
	}
	for _, f := range rep.Figures {
		switch f.Name {
		case "throughput (acked)":
			p.Acked = f.Value
		case "throughput (delivered)":
			p.Delivered = f.Value
		case "server CPU per message":
			p.ServerCPUPerMsg = f.Value
		case "harness CPU per message":
			p.HarnessCPUPerMsg = f.Value
		}
	}
	if s, ok := rep.Latency["deliver"]; ok {
		p.P50, p.P99 = s.P50, s.P99
	}
	return p, nil
}

// peak is the highest delivered rate of the series.
func (s *SweepSeries) peak() float64 {
	var m float64
	for _, p := range s.Points {
		m = max(m, p.Delivered)
	}
	return m
}

// WriteSweepMarkdown writes a table per series: one row per step, and
// under it the series' peak and the goodput at its highest offered rate
// as a share of that peak (a collapse shows as a small share).
func WriteSweepMarkdown(w io.Writer, series []SweepSeries) error {
	var b strings.Builder
	for _, s := range series {
		fmt.Fprintf(&b, "**%s**\n\n", s.Name)
		b.WriteString("| offered msg/s | delivered msg/s | p50 | p99 | busy / timeout / other retries | given up | missed | undelivered | dropped conns | server CPU per msg | harness CPU per msg |\n")
		b.WriteString("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range s.Points {
			busy, timeout := p.Retries["busy"], p.Retries["timeout"]
			other := sumCounts(p.Retries) - busy - timeout
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %d / %d / %d | %d | %d | %d | %d | %s | %s |\n",
				formatValue(p.Offered), formatValue(math.Round(p.Delivered)), formatMicros(p.P50), formatMicros(p.P99),
				busy, timeout, other, sumCounts(p.Failed), p.Missed, p.Undelivered, p.Dropped,
				formatCPU(p.ServerCPUPerMsg), formatCPU(p.HarnessCPUPerMsg))
		}
		if n := len(s.Points); n > 0 {
			last, peak := s.Points[n-1], s.peak()
			share := 0.0
			if peak > 0 {
				share = 100 * last.Delivered / peak
			}
			fmt.Fprintf(&b, "\nPeak delivered: %s msg/s; at %s msg/s offered, %s msg/s (%.0f%% of the peak).\n\n",
				formatValue(math.Round(peak)), formatValue(last.Offered), formatValue(math.Round(last.Delivered)), share)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// formatCPU is a per-message CPU figure, or a dash where the report had
// none.
func formatCPU(us float64) string {
	if us <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f µs", us)
}

// sweepColors are the series' colours, in order.
var sweepColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// WriteSweepChart draws two panels against the offered rate: delivered
// msg/s (with the line where delivered = offered), and p99 send → deliver
// on a log scale.
func WriteSweepChart(w io.Writer, series []SweepSeries) error {
	const (
		width, height = 860, 380
		left, right   = 70, 20
		top, bottom   = 40, 50
		gap           = 70
	)
	panelW := (width - left - right - gap) / 2
	plotH := height - top - bottom
	var xMax, yMax float64
	for _, s := range series {
		for _, p := range s.Points {
			xMax, yMax = max(xMax, p.Offered), max(yMax, p.Delivered, p.Offered)
		}
	}
	if xMax == 0 {
		return errors.New("bench: sweep chart: no points")
	}
	xStep := niceStep(xMax, 5)
	xMax = math.Ceil(xMax/xStep) * xStep
	yMax = min(yMax, xMax)
	yStep := niceStep(yMax, 5)
	yMax = math.Ceil(yMax/yStep) * yStep

	c := &svgWriter{}
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	c.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")

	// Left: goodput.
	x0, y0 := float64(left), float64(top+plotH)
	px := func(x0, v float64) float64 { return x0 + v/xMax*float64(panelW) }
	py := func(v float64) float64 { return y0 - v/yMax*float64(plotH) }
	c.printf(`<text x="%g" y="%d" font-weight="bold">delivered msg/s against offered</text>`+"\n", x0, top-15)
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		c.printf(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x0, x0+float64(panelW), py(v), py(v), x0-5, py(v)+4, formatValue(v))
	}
	c.printf(`<line x1="%g" y1="%g" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="4 3"/>`+"\n", x0, y0, px(x0, yMax), py(yMax))
	// Right: p99 latency, log scale from 1 ms to the largest p99.
	x1 := x0 + float64(panelW+gap)
	var p99Max float64 = 1000
	for _, s := range series {
		for _, p := range s.Points {
			p99Max = max(p99Max, float64(p.P99))
		}
	}
	ax := logAxis{lo: 3, hi: math.Ceil(math.Log10(p99Max)), y0: y0, y1: float64(top)}
	c.printf(`<text x="%g" y="%d" font-weight="bold">p99 send → deliver against offered</text>`+"\n", x1, top-15)
	for v := 1000.0; v <= math.Pow(10, ax.hi)*1.01; v *= 10 {
		c.printf(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x1, x1+float64(panelW), ax.y(v), ax.y(v), x1-5, ax.y(v)+4, formatMicros(int64(v)))
	}
	for _, xa := range []float64{x0, x1} {
		for v := 0.0; v <= xMax+xStep/2; v += xStep {
			c.printf(`<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", px(xa, v), y0+16, formatValue(v))
		}
		c.printf(`<text x="%.1f" y="%g" text-anchor="middle">offered msg/s</text>`+"\n", xa+float64(panelW)/2, y0+34)
		c.printf(`<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", xa, y0, xa+float64(panelW), y0)
	}
	for i, s := range series {
		color := sweepColors[i%len(sweepColors)]
		pts := slices.Clone(s.Points)
		slices.SortFunc(pts, func(a, b SweepPoint) int { return int(a.Offered - b.Offered) })
		var good, lat []string
		for _, p := range pts {
			good = append(good, fmt.Sprintf("%.1f,%.1f", px(x0, p.Offered), py(min(p.Delivered, yMax))))
			if p.P99 > 0 {
				lat = append(lat, fmt.Sprintf("%.1f,%.1f", px(x1, p.Offered), ax.y(max(float64(p.P99), 1000))))
			}
		}
		for _, line := range [][]string{good, lat} {
			if len(line) == 0 {
				continue
			}
			c.printf(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(line, " "))
			for _, pt := range line {
				x, y, _ := strings.Cut(pt, ",")
				c.printf(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, color)
			}
		}
		c.printf(`<rect x="%g" y="%d" width="10" height="10" fill="%s"/><text x="%g" y="%d">%s</text>`+"\n",
			x0+10, top+8+16*i, color, x0+25, top+17+16*i, esc(s.Name))
	}
	c.printf("</svg>\n")
	if c.err != nil {
		return c.err
	}
	_, err := w.Write(c.b.Bytes())
	return err
}

// sortedSeries orders series by name and each one's points by offered rate.
func sortedSeries(bySeries map[string][]SweepPoint) []SweepSeries {
	var out []SweepSeries
	for _, name := range slices.Sorted(maps.Keys(bySeries)) {
		pts := bySeries[name]
		slices.SortFunc(pts, func(a, b SweepPoint) int {
			switch {
			case a.Offered < b.Offered:
				return -1
			case a.Offered > b.Offered:
				return 1
			}
			return 0
		})
		out = append(out, SweepSeries{Name: name, Points: pts})
	}
	return out
}

// SweepSeriesOf groups steps by series name, ordered by name and rate.
func SweepSeriesOf(names []string, points []SweepPoint) []SweepSeries {
	by := make(map[string][]SweepPoint)
	for i, n := range names {
		by[n] = append(by[n], points[i])
	}
	return sortedSeries(by)
}
