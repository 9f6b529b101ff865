package bench

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Charts. WriteChart draws a run's latencies as one SVG image, by hand
// with the standard library: per latency histogram (in report order, at
// most maxChartRows), a row of two panels:
//
//   - over time: the p50, p99 and maximum of each bucket of the histogram's
//     Timeline (a second, or wider on long runs), against seconds since the
//     load started; a bucket with no value breaks the lines, so a stall
//     shows as a gap;
//   - the distribution: latency at each percentile, the percentile on a log
//     axis of 1/(1-q) as HDR plots draw it (0%, 90%, 99%, 99.9%, …), up to
//     the resolution of the count (a percentile needs 1/(1-q) values).
//
// Both panels share the row's log-scale latency axis. The title names the
// scenario, its parameters and the machine.

const (
	maxChartRows = 4

	chartWidth   = 1000
	chartHeader  = 82 // title lines
	chartRowH    = 300
	chartFooter  = 10
	chartPlotTop = 40  // from the row's top to its plot area
	chartPlotH   = 210 // plot area height
	chartTimeX0  = 75  // over-time panel, plot area
	chartTimeX1  = 575
	chartDistX0  = 655 // distribution panel, plot area
	chartDistX1  = 975

	// maxSpectrumDecades: the spectrum stops at 99.999%.
	maxSpectrumDecades = 5
	spectrumSteps      = 20 // points per decade
)

// Series colours, one per statistic.
var chartColours = map[string]string{
	"p50": "#1f77b4", "p99": "#ff7f0e", "max": "#d62728", "spectrum": "#2ca02c",
}

// errNoLatency is returned for a report without any latency to draw.
var errNoLatency = errors.New("bench: chart: the run recorded no latency")

// WriteChartFile writes WriteChart's image to path, creating its
// directory.
func WriteChartFile(path string, rep *Report) error {
	var b bytes.Buffer
	if err := WriteChart(&b, rep); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// WriteChart draws rep's latencies (see Charts). It needs the histograms
// of rep.Result, so only the process that ran the scenario can draw it; a
// report read back from JSON has none.
func WriteChart(w io.Writer, rep *Report) error {
	if rep.Result == nil {
		return errNoLatency
	}
	var names []string
	summaries := make(map[string]Summary)
	for name, h := range rep.Result.Latency {
		if h != nil && h.Count() > 0 {
			summaries[name] = h.Summary()
		}
	}
	names = sortedLatencyNames(summaries)
	if len(names) == 0 {
		return errNoLatency
	}
	if len(names) > maxChartRows {
		names = names[:maxChartRows]
	}

	c := &svgWriter{}
	height := chartHeader + len(names)*chartRowH + chartFooter
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		chartWidth, height, chartWidth, height)
	title := "parleybench " + rep.Scenario
	c.printf("<title>%s</title>\n", esc(title+"  "+formatParams(rep.Params)))
	c.printf(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	c.printf(`<text x="12" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", esc(title))
	params := formatParams(rep.Params)
	for i, line := range wrapWords(params, 150, 2) {
		c.printf(`<text x="12" y="%d">%s</text>`+"\n", 40+14*i, esc(line))
	}
	machine := fmt.Sprintf("%s %s, %d CPUs, started %s, load %s, %d worker(s)",
		rep.Go, rep.Platform, rep.CPUs, rep.Started.Format(time.RFC3339),
		time.Duration(rep.Duration*float64(time.Second)), rep.Result.Workers)
	c.printf(`<text x="12" y="72" fill="#555555">%s</text>`+"\n", esc(machine))

	for i, name := range names {
		top := chartHeader + i*chartRowH
		c.row(name, rep.Result.Latency[name], top, rep.Result.Start, rep.Duration)
	}
	c.printf("</svg>\n")
	if c.err != nil {
		return c.err
	}
	_, err := w.Write(c.b.Bytes())
	return err
}

// svgWriter accumulates the image.
type svgWriter struct {
	b   bytes.Buffer
	err error
}

func (c *svgWriter) printf(format string, a ...any) {
	if c.err == nil {
		_, c.err = fmt.Fprintf(&c.b, format, a...)
	}
}

// logAxis maps microseconds to a plot's y coordinate, log10.
type logAxis struct {
	lo, hi float64 // decades: log10 of the bottom and top values
	y0, y1 float64 // pixel rows of the bottom and top
}

func (a logAxis) y(us float64) float64 {
	v := math.Log10(max(us, 1))
	return a.y0 + (v-a.lo)/(a.hi-a.lo)*(a.y1-a.y0)
}

// row draws the two panels of one histogram with its top at top; time
// runs from origin, the start of the load (zero: the first bucket), and
// the axis covers the load's duration (seconds) and every bucket.
func (c *svgWriter) row(name string, h *Histogram, top int, origin time.Time, duration float64) {
	sum := h.Summary()
	var points []TimelinePoint
	if tl := h.Timeline(); tl != nil {
		points = tl.Points(origin)
	}

	// The spectrum: (decade of 1/(1-q), µs).
	type spPoint struct{ x, us float64 }
	var spectrum []spPoint
	decades := min(math.Log10(float64(max(sum.Count, 1))), maxSpectrumDecades)
	for k := 0; float64(k) <= decades*spectrumSteps+1e-9; k++ {
		x := float64(k) / spectrumSteps
		q := 100 * (1 - math.Pow(10, -x))
		spectrum = append(spectrum, spPoint{x, float64(h.Quantile(q).Microseconds())})
	}

	// The latency axis covers every value drawn.
	lo, hi := float64(sum.P50), float64(sum.Max)
	for _, p := range points {
		lo = min(lo, float64(p.P50))
		hi = max(hi, float64(p.Max))
	}
	for _, p := range spectrum {
		lo = min(lo, p.us)
	}
	ax := logAxis{lo: math.Floor(math.Log10(max(lo, 1))), hi: math.Ceil(math.Log10(max(hi, 1)))}
	if ax.hi <= ax.lo {
		ax.hi = ax.lo + 1
	}
	plotTop := float64(top + chartPlotTop)
	ax.y0, ax.y1 = plotTop+chartPlotH, plotTop

	title := cmp.Or(latencyTitles[name], name)
	c.printf(`<g class="row" data-latency="%s">`+"\n", esc(name))
	c.printf(`<text x="12" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", top+22, esc(fmt.Sprintf(
		"%s: %d values, p50 %s, p99 %s, p99.9 %s, max %s", title, sum.Count,
		formatMicros(sum.P50), formatMicros(sum.P99), formatMicros(sum.P999), formatMicros(sum.Max))))

	// Over time.
	c.yAxis(ax, chartTimeX0, chartTimeX1)
	if len(points) == 0 {
		c.printf(`<text x="%d" y="%.1f" fill="#777777">no timeline recorded</text>`+"\n", chartTimeX0+10, plotTop+20)
	} else {
		t0 := min(points[0].At, 0) // the load's start, or what came before it
		t1 := max(points[len(points)-1].At+points[len(points)-1].Width, duration)
		c.timeAxis(t0, t1, plotTop, origin.IsZero())
		if t0 < 0 && !origin.IsZero() {
			x := chartTimeX0 + (0-t0)/(t1-t0)*(chartTimeX1-chartTimeX0)
			c.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#777777" stroke-dasharray="4,3"/>`+"\n",
				x, plotTop, x, plotTop+chartPlotH)
			c.printf(`<text x="%.1f" y="%.1f" fill="#555555">load starts</text>`+"\n", x+4, plotTop+chartPlotH-6)
		}
		tx := func(t float64) float64 {
			return chartTimeX0 + (t-t0)/(t1-t0)*(chartTimeX1-chartTimeX0)
		}
		for _, stat := range []string{"max", "p99", "p50"} {
			var segs [][]string
			var prev *TimelinePoint
			for i := range points {
				p := &points[i]
				if prev == nil || p.At-prev.At > 1.5*p.Width {
					segs = append(segs, nil)
				}
				v := map[string]int64{"p50": p.P50, "p99": p.P99, "max": p.Max}[stat]
				segs[len(segs)-1] = append(segs[len(segs)-1],
					fmt.Sprintf("%.1f,%.1f", tx(p.At+p.Width/2), ax.y(float64(v))))
				prev = p
			}
			for _, seg := range segs {
				if len(seg) == 1 { // a lone bucket: a dot the line can't show
					c.printf(`<circle cx="%s" cy="%s" r="2" fill="%s" data-series="%s %s"/>`+"\n",
						strings.Split(seg[0], ",")[0], strings.Split(seg[0], ",")[1], chartColours[stat], esc(name), stat)
				}
				c.printf(`<polyline class="series" data-series="%s %s" fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n",
					esc(name), stat, chartColours[stat], strings.Join(seg, " "))
			}
		}
		c.legend(chartTimeX1, plotTop-6, []string{"p50", "p99", "max"},
			fmt.Sprintf("per %s", time.Duration(points[0].Width*float64(time.Second))))
	}

	// The distribution.
	c.yAxis(ax, chartDistX0, chartDistX1)
	xmax := max(math.Ceil(decades), 2)
	dx := func(x float64) float64 { return chartDistX0 + x/xmax*(chartDistX1-chartDistX0) }
	for d := 0; d <= int(xmax); d++ {
		x := dx(float64(d))
		c.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", x, plotTop, x, plotTop+chartPlotH)
		c.printf(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, plotTop+chartPlotH+14, percentileLabel(d))
	}
	c.printf(`<text x="%d" y="%.1f" text-anchor="middle" fill="#555555">percentile (log scale of 1/(1−q))</text>`+"\n",
		(chartDistX0+chartDistX1)/2, plotTop+chartPlotH+30)
	pts := make([]string, len(spectrum))
	for i, p := range spectrum {
		pts[i] = fmt.Sprintf("%.1f,%.1f", dx(p.x), ax.y(p.us))
	}
	c.printf(`<polyline class="series" data-series="%s spectrum" fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n",
		esc(name), chartColours["spectrum"], strings.Join(pts, " "))
	c.printf(`<text x="%d" y="%.1f" text-anchor="end" fill="%s">max %s</text>`+"\n",
		chartDistX1-4, plotTop+14, chartColours["max"], formatMicros(sum.Max))
	c.printf("</g>\n")
}

// yAxis draws the latency grid and labels of a panel spanning x0..x1.
func (c *svgWriter) yAxis(ax logAxis, x0, x1 int) {
	c.printf(`<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="none" stroke="#999999"/>`+"\n",
		x0, ax.y1, x1-x0, ax.y0-ax.y1)
	steps := []float64{1, 2, 5}
	if ax.hi-ax.lo > 3 {
		steps = []float64{1}
	}
	for d := ax.lo; d < ax.hi+0.5; d++ {
		for _, m := range steps {
			us := m * math.Pow(10, d)
			if math.Log10(us) > ax.hi+1e-9 {
				break
			}
			y := ax.y(us)
			colour := "#eeeeee"
			if m == 1 {
				colour = "#d5d5d5"
			}
			c.printf(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", x0, y, x1, y, colour)
			c.printf(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y+4, formatMicros(int64(us)))
		}
	}
	c.printf(`<text transform="translate(%d,%.1f) rotate(-90)" text-anchor="middle" fill="#555555">latency (log scale)</text>`+"\n",
		x0-52, (ax.y0+ax.y1)/2)
}

// timeAxis draws the time grid and labels of the over-time panel.
func (c *svgWriter) timeAxis(t0, t1, plotTop float64, fromFirst bool) {
	step := niceStep(t1-t0, 10)
	for t := math.Ceil(t0/step) * step; t <= t1+1e-9; t += step {
		x := chartTimeX0 + (t-t0)/(t1-t0)*(chartTimeX1-chartTimeX0)
		c.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eeeeee"/>`+"\n", x, plotTop, x, plotTop+chartPlotH)
		c.printf(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, plotTop+chartPlotH+14, strconv.FormatFloat(math.Round(t*1000)/1000+0, 'f', -1, 64)) // +0: no "-0"
	}
	label := "seconds since the load started (time measured)"
	if fromFirst {
		label = "seconds since the first measurement"
	}
	c.printf(`<text x="%d" y="%.1f" text-anchor="middle" fill="#555555">%s</text>`+"\n",
		(chartTimeX0+chartTimeX1)/2, plotTop+chartPlotH+30, label)
}

// legend draws the statistics' colours in a line above a panel, ending
// at x.
func (c *svgWriter) legend(x int, y float64, stats []string, note string) {
	const item = 52
	x0 := x - item*len(stats) - 60
	for i, s := range stats {
		lx := x0 + item*i
		c.printf(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", lx, y-4, lx+16, y-4, chartColours[s])
		c.printf(`<text x="%d" y="%.1f">%s</text>`+"\n", lx+20, y, s)
	}
	c.printf(`<text x="%d" y="%.1f" text-anchor="end" fill="#555555">%s</text>`+"\n", x, y, esc(note))
}

// niceStep returns a round step (1, 2 or 5 times a power of ten) that cuts
// span into at most about n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// percentileLabel names decade d of 1/(1-q): 0%, 90%, 99%, 99.9%, …
func percentileLabel(d int) string {
	switch d {
	case 0:
		return "0%"
	case 1:
		return "90%"
	default:
		return "99" + strings.TrimSuffix("."+strings.Repeat("9", d-2), ".") + "%"
	}
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // never fails on a Builder
	return b.String()
}

// wrapWords splits s at spaces into at most n lines of about width
// characters; the last line takes the rest.
func wrapWords(s string, width, n int) []string {
	var lines []string
	for len(s) > width && len(lines) < n-1 {
		cut := strings.LastIndexByte(s[:width], ' ')
		if cut <= 0 {
			cut = width
		}
		lines = append(lines, s[:cut])
		s = strings.TrimLeft(s[cut:], " ")
	}
	return append(lines, s)
}
