package bench

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/node_metrics.txt is a real scrape of a Parley node after a few
// benchmark runs.
func TestParseNodeMetrics(t *testing.T) {
	f, err := os.Open("testdata/node_metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ParseMetrics(f)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"go_goroutines", nil, 48},
		{"go_memstats_heap_inuse_bytes", nil, 9.58464e+06},
		{"parley_commands_committed_total", nil, 6428},
		{"parley_apply_seconds_bucket", []string{"le", "+Inf"}, 5749},
		{"parley_apply_seconds_bucket", []string{"le", "0.0002"}, 4536},
		{"parley_connections", nil, 0},
	}
	for _, c := range checks {
		if got, ok := m.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v, %v; want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := m.Value("parley_apply_seconds_bucket", "le", "0.3"); ok {
		t.Error("found a bucket that is not there")
	}
	s := NewServerSample("loaded", "http://node", time.Now(), m)
	if s.RSSBytes <= 0 || s.CPUSeconds <= 0 || s.Goroutines != 48 || s.Commands != 6428 || s.Commits != 5749 {
		t.Errorf("sample %+v", s)
	}
	if s.CommitSum != 25.913018002 || s.CommitCount != 5749 || s.ApplySum != 0.84927873 || s.ApplyCount != 5749 {
		t.Errorf("raft latency sums %v/%v, %v/%v", s.CommitSum, s.CommitCount, s.ApplySum, s.ApplyCount)
	}
}

func TestParseMetricsSyntax(t *testing.T) {
	page := `# HELP x_total A counter.
# TYPE x_total counter
x_total 1.5e3

req_total{code="busy",type="send"} 7
req_total{ code = "ok" , type="send", } 3 1700000000000
esc{path="a\\b\"c\nd"} -2
weird{le="+Inf"} +Inf
nan_metric NaN
neg_inf -Inf
name:with:colons 4
`
	m, err := ParseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Samples) != 8 {
		t.Fatalf("%d samples: %+v", len(m.Samples), m.Samples)
	}
	if v, _ := m.Value("x_total"); v != 1500 {
		t.Errorf("x_total = %v", v)
	}
	if v, _ := m.Value("req_total", "code", "ok"); v != 3 {
		t.Errorf("req_total{code=ok} = %v", v)
	}
	if v, _ := m.Value("req_total", "type", "send", "code", "busy"); v != 7 {
		t.Errorf("req_total{code=busy} = %v", v)
	}
	if got := m.Sum("req_total"); got != 10 {
		t.Errorf("sum = %v", got)
	}
	if got := m.Samples[3].Labels[0].Value; got != "a\\b\"c\nd" {
		t.Errorf("escaped label = %q", got)
	}
	if v, _ := m.Value("name:with:colons"); v != 4 {
		t.Errorf("colons = %v", v)
	}
	if v, ok := m.Value("missing"); ok || v != 0 {
		t.Error("missing series found")
	}
}

func TestParseMetricsErrors(t *testing.T) {
	for _, line := range []string{
		"novalue",
		"9starts_with_digit 1",
		"x{le=\"1\" 2",
		"x{le=1} 2",
		"x{le\"1\"} 2",
		"x{le=\"1\"}",
		"x{le=\"bad\\q\"} 1",
		"x{le=\"open} 1",
		"x abc",
		"x 1 notatimestamp",
		"x 1 2 3",
		"x{a=\"1\" b=\"2\"} 1",
	} {
		if _, err := ParseMetrics(strings.NewReader("ok 1\n" + line + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: got %v", line, err)
		}
	}
}

func TestScraper(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		w.Write([]byte("process_resident_memory_bytes 4096\n"))
	}))
	defer srv.Close()
	m, err := newScraper(srv.URL + "/").scrape(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Value("process_resident_memory_bytes"); v != 4096 {
		t.Fatalf("got %v", v)
	}
	if _, err := newScraper(srv.URL + "/nope").scrape(t.Context()); err == nil {
		t.Fatal("a 404 scraped fine")
	}
}
