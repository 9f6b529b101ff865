package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgDoc is what the tests read back from a chart.
type svgDoc struct {
	width, height float64
	title         string
	texts         []string
	series        map[string][][2]float64 // data-series → polyline points
}

// parseSVG checks that b is well-formed XML with an svg root and collects
// its polylines and texts.
func parseSVG(t *testing.T, b []byte) *svgDoc {
	t.Helper()
	doc := &svgDoc{series: make(map[string][][2]float64)}
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, b)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			attr := func(name string) string {
				for _, a := range el.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			if len(stack) == 0 {
				if el.Name.Local != "svg" || el.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v", el.Name)
				}
				doc.width, _ = strconv.ParseFloat(attr("width"), 64)
				doc.height, _ = strconv.ParseFloat(attr("height"), 64)
			}
			if el.Name.Local == "polyline" {
				var pts [][2]float64
				for _, p := range strings.Fields(attr("points")) {
					x, y, ok := strings.Cut(p, ",")
					fx, err1 := strconv.ParseFloat(x, 64)
					fy, err2 := strconv.ParseFloat(y, 64)
					if !ok || err1 != nil || err2 != nil {
						t.Fatalf("bad point %q in %s", p, attr("data-series"))
					}
					pts = append(pts, [2]float64{fx, fy})
				}
				name := attr("data-series")
				doc.series[name] = append(doc.series[name], pts...)
			}
			stack = append(stack, el.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 && stack[len(stack)-1] == "title" {
				doc.title += string(el)
			}
			if len(stack) > 0 && stack[len(stack)-1] == "text" {
				doc.texts = append(doc.texts, string(el))
			}
		}
	}
	if len(stack) != 0 {
		t.Fatalf("unclosed elements %v", stack)
	}
	return doc
}

func chartReport(t *testing.T) *Report {
	t.Helper()
	start := time.Unix(1_700_000_000, 0)
	deliver, ack := NewHistogram(), NewHistogram()
	deliver.timeline, ack.timeline = newTimeline(), newTimeline()
	// Ten seconds of load; seconds 4 and 5 stall (no value), then second 6
	// pays for it with 300 ms.
	for s := range 10 {
		if s == 4 || s == 5 {
			continue
		}
		lat := time.Millisecond
		if s == 6 {
			lat = 300 * time.Millisecond
		}
		at := start.Add(time.Duration(s)*time.Second + 500*time.Millisecond)
		for i := range 200 {
			d := lat + time.Duration(i)*10*time.Microsecond
			deliver.Record(d)
			deliver.timeline.Record(at, d)
			ack.Record(d / 2)
			ack.timeline.Record(at, d/2)
		}
	}
	res := &Result{Workers: 1, Start: start, End: start.Add(10 * time.Second),
		Latency: map[string]*Histogram{"deliver": deliver, "ack": ack, "empty": NewHistogram()}}
	rep := newReport(&Direct{Senders: 3, Rate: 100}, &Options{Duration: 10 * time.Second})
	rep.finish(res, nil)
	return rep
}

func TestChart(t *testing.T) {
	rep := chartReport(t)
	var b bytes.Buffer
	if err := WriteChart(&b, rep); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, b.Bytes())
	if !strings.Contains(doc.title, "parleybench direct") || !strings.Contains(doc.title, "senders=3") ||
		!strings.Contains(doc.title, "rate=100/s") {
		t.Fatalf("title %q", doc.title)
	}
	all := strings.Join(doc.texts, "|")
	for _, want := range []string{"send → deliver", "send → ack", "90%", "99%", "99.9%", "latency (log scale)",
		"seconds since the load started", "1ms", "100ms"} {
		if !strings.Contains(all, want) {
			t.Errorf("no text %q in %q", want, all)
		}
	}
	if strings.Contains(all, "empty") {
		t.Error("an empty histogram got a row")
	}
	for _, name := range []string{"deliver p50", "deliver p99", "deliver max", "deliver spectrum",
		"ack p50", "ack p99", "ack max", "ack spectrum"} {
		pts := doc.series[name]
		if len(pts) == 0 {
			t.Fatalf("no series %q (have %v)", name, doc.series)
		}
		for _, p := range pts {
			if p[0] < 0 || p[0] > doc.width || p[1] < 0 || p[1] > doc.height {
				t.Fatalf("series %q: point %v outside %vx%v", name, p, doc.width, doc.height)
			}
		}
	}
	// Eight buckets over time, drawn as two lines around the stall; the
	// stall's 300 ms sits above (smaller y) the 1 ms of the others.
	p50 := doc.series["deliver p50"]
	if len(p50) != 8 {
		t.Fatalf("deliver p50: %d points, want 8: %v", len(p50), p50)
	}
	if strings.Count(b.String(), `data-series="deliver p50"`) != 2 {
		t.Fatal("the stall does not break the line")
	}
	if !(p50[4][1] < p50[3][1]-50) || !(p50[4][0] > p50[3][0]) {
		t.Fatalf("the 300 ms bucket %v against the 1 ms one %v", p50[4], p50[3])
	}
	// The spectrum rises from left to right: 1,600 values, so it reaches
	// 99.9% (three decades) and no further.
	sp := doc.series["deliver spectrum"]
	for i := 1; i < len(sp); i++ {
		if sp[i][0] <= sp[i-1][0] || sp[i][1] > sp[i-1][1]+0.01 {
			t.Fatalf("spectrum not monotone at %d: %v then %v", i, sp[i-1], sp[i])
		}
	}
	if n := len(sp); n < 3*spectrumSteps || n > 4*spectrumSteps {
		t.Fatalf("%d spectrum points for 1,600 values", n)
	}
}

func TestChartFileAndErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "charts", "run.svg")
	if err := WriteChartFile(path, chartReport(t)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parseSVG(t, b)

	// Nothing to draw: no result (a report read from JSON), or no values.
	if err := WriteChart(io.Discard, &Report{Scenario: "idle"}); !errors.Is(err, errNoLatency) {
		t.Fatalf("no result: %v", err)
	}
	rep := newReport(&Idle{}, &Options{})
	rep.finish(&Result{Latency: map[string]*Histogram{"connect": NewHistogram()}}, nil)
	if err := WriteChart(io.Discard, rep); !errors.Is(err, errNoLatency) {
		t.Fatalf("empty histograms: %v", err)
	}

	// A histogram without a timeline still gets its distribution; hostile
	// parameters are escaped.
	h := NewHistogram()
	h.Record(time.Millisecond)
	rep = newReport(&Direct{}, &Options{})
	rep.Params["note"] = `<b>&"x"</b>`
	rep.finish(&Result{Latency: map[string]*Histogram{"deliver": h}}, nil)
	var buf bytes.Buffer
	if err := WriteChart(&buf, rep); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, buf.Bytes())
	if len(doc.series["deliver spectrum"]) == 0 || len(doc.series["deliver p50"]) != 0 ||
		!strings.Contains(doc.title, `<b>&"x"</b>`) {
		t.Fatalf("series %v, title %q", doc.series, doc.title)
	}
}

func TestNiceStepAndLabels(t *testing.T) {
	for _, c := range []struct {
		span float64
		want float64
	}{{10, 1}, {30, 5}, {95, 10}, {600, 100}, {0.5, 0.05}, {0, 1}} {
		if got := niceStep(c.span, 10); got != c.want {
			t.Errorf("niceStep(%v) = %v, want %v", c.span, got, c.want)
		}
	}
	want := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"}
	for d, w := range want {
		if got := percentileLabel(d); got != w {
			t.Errorf("percentileLabel(%d) = %q, want %q", d, got, w)
		}
	}
}
