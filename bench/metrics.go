package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape of a node's /metrics page (Prometheus text format
// 0.0.4): every sample line, in page order. HELP and TYPE comments are not
// kept; a histogram is its _bucket, _sum and _count samples.
type Metrics struct {
	Samples []Sample
}

// Sample is one line of the page.
type Sample struct {
	Name   string
	Labels []Label // in page order
	Value  float64
}

// Label is one name="value" pair of a sample.
type Label struct{ Name, Value string }

// Value returns the first sample named name whose labels include every
// given pair (labels alternates names and values).
func (m *Metrics) Value(name string, labels ...string) (float64, bool) {
	for i := range m.Samples {
		if s := &m.Samples[i]; s.Name == name && s.has(labels) {
			return s.Value, true
		}
	}
	return 0, false
}

// Sum adds up every sample named name, whatever its labels.
func (m *Metrics) Sum(name string) float64 {
	var sum float64
	for i := range m.Samples {
		if m.Samples[i].Name == name {
			sum += m.Samples[i].Value
		}
	}
	return sum
}

func (s *Sample) has(pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range s.Labels {
			if l.Name == pairs[i] && l.Value == pairs[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// maxMetricsLine bounds one line of a scrape; a node's lines are short.
const maxMetricsLine = 64 << 10

// ParseMetrics reads a page in the Prometheus text format.
func ParseMetrics(r io.Reader) (*Metrics, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMetricsLine)
	m := new(Metrics)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("bench: metrics line %d: %w", lineNo, err)
		}
		m.Samples = append(m.Samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: reading metrics: %w", err)
	}
	return m, nil
}

// parseSample parses `name{label="value",...} value [timestamp]`.
func parseSample(line string) (Sample, error) {
	var s Sample
	end := strings.IndexAny(line, "{ \t")
	if end <= 0 {
		return s, fmt.Errorf("no value in %q", line)
	}
	s.Name, line = line[:end], line[end:]
	if !validMetricName(s.Name) {
		return s, fmt.Errorf("bad metric name %q", s.Name)
	}
	if line[0] == '{' {
		var err error
		if s.Labels, line, err = parseLabels(line[1:]); err != nil {
			return s, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	fields := strings.Fields(line)
	if len(fields) == 0 || len(fields) > 2 {
		return s, fmt.Errorf("%s: want a value and an optional timestamp, got %q", s.Name, line)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("%s: bad value %q", s.Name, fields[0])
	}
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("%s: bad timestamp %q", s.Name, fields[1])
		}
	}
	s.Value = v
	return s, nil
}

// parseLabels parses the inside of {...} (the opening brace already
// consumed) and returns the labels and the rest of the line after '}'.
func parseLabels(in string) ([]Label, string, error) {
	var labels []Label
	for {
		in = strings.TrimLeft(in, " \t")
		if in == "" {
			return nil, "", fmt.Errorf("unterminated labels")
		}
		if in[0] == '}' {
			return labels, in[1:], nil
		}
		eq := strings.IndexByte(in, '=')
		if eq <= 0 {
			return nil, "", fmt.Errorf("label without '=' in %q", in)
		}
		name := strings.TrimSpace(in[:eq])
		in = strings.TrimLeft(in[eq+1:], " \t")
		if in == "" || in[0] != '"' {
			return nil, "", fmt.Errorf("label %s: value is not quoted", name)
		}
		value, rest, err := unquoteLabel(in[1:])
		if err != nil {
			return nil, "", fmt.Errorf("label %s: %w", name, err)
		}
		labels = append(labels, Label{Name: name, Value: value})
		in = strings.TrimLeft(rest, " \t")
		if in != "" && in[0] == ',' {
			in = in[1:]
		} else if in == "" || in[0] != '}' {
			return nil, "", fmt.Errorf("expected ',' or '}' after label %s", name)
		}
	}
}

// unquoteLabel reads a label value up to its closing quote, undoing the
// three escapes the format defines (\\, \" and \n).
func unquoteLabel(in string) (value, rest string, err error) {
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		switch c := in[i]; c {
		case '"':
			return b.String(), in[i+1:], nil
		case '\\':
			if i+1 == len(in) {
				return "", "", fmt.Errorf("dangling escape")
			}
			i++
			switch in[i] {
			case '\\':
				b.WriteByte('\\')
			case '"':
				b.WriteByte('"')
			case 'n':
				b.WriteByte('\n')
			default:
				return "", "", fmt.Errorf("unknown escape \\%c", in[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("unterminated value")
}

func validMetricName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// scraper reads one node's /metrics page.
type scraper struct {
	base   string // the node's HTTP base URL, naming it in samples
	url    string // full URL of the page
	client *http.Client
}

func newScraper(httpBase string) *scraper {
	return &scraper{
		base:   httpBase,
		url:    strings.TrimRight(httpBase, "/") + "/metrics",
		client: &http.Client{Timeout: 10 * time.Second},
	}
}

func (s *scraper) scrape(ctx context.Context) (*Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: scrape %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: scrape %s: HTTP %s", s.url, resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// ServerSample is what the harness reads from a node at one point of a run.
// A series the node does not export reads as 0.
type ServerSample struct {
	Phase          string    `json:"phase"` // baseline, connected, loaded
	Node           string    `json:"node"`  // the node's HTTP base URL
	At             time.Time `json:"at"`
	RSSBytes       float64   `json:"rss_bytes"`          // process_resident_memory_bytes
	CPUSeconds     float64   `json:"cpu_seconds"`        // process_cpu_seconds_total
	CPUWaitSeconds float64   `json:"cpu_wait_seconds"`   // parley_process_cpu_wait_seconds_total
	CPUSystemSecs  float64   `json:"cpu_system_seconds"` // parley_process_cpu_system_seconds_total
	HeapInuseBytes float64   `json:"heap_inuse_bytes"`   // go_memstats_heap_inuse_bytes
	Goroutines     float64   `json:"goroutines"`         // go_goroutines
	Connections    float64   `json:"connections"`        // parley_connections
	Commits        float64   `json:"raft_commits"`       // parley_commits_total
	Commands       float64   `json:"commands_committed"` // parley_commands_committed_total
	Rejected       float64   `json:"commands_rejected"`  // parley_commands_rejected_total
	IdleTimeouts   float64   `json:"idle_timeouts"`      // parley_idle_timeouts_total
	Overflows      float64   `json:"queue_overflows"`    // parley_queue_overflows_total
	RequestErrors  float64   `json:"request_errors"`     // parley_request_errors_total, all codes
	// Raft latency histograms, as running sums and counts: the mean over a
	// phase is the difference of sums over the difference of counts.
	CommitSum   float64 `json:"commit_seconds_sum"`   // parley_commit_seconds_sum
	CommitCount float64 `json:"commit_seconds_count"` // parley_commit_seconds_count
	ApplySum    float64 `json:"apply_seconds_sum"`    // parley_apply_seconds_sum
	ApplyCount  float64 `json:"apply_seconds_count"`  // parley_apply_seconds_count
}

// add sums o's figures into s; Phase, Node and At are left to the caller.
func (s *ServerSample) add(o ServerSample) {
	s.RSSBytes += o.RSSBytes
	s.CPUSeconds += o.CPUSeconds
	s.CPUWaitSeconds += o.CPUWaitSeconds
	s.CPUSystemSecs += o.CPUSystemSecs
	s.HeapInuseBytes += o.HeapInuseBytes
	s.Goroutines += o.Goroutines
	s.Connections += o.Connections
	s.Commits += o.Commits
	s.Commands += o.Commands
	s.Rejected += o.Rejected
	s.IdleTimeouts += o.IdleTimeouts
	s.Overflows += o.Overflows
	s.RequestErrors += o.RequestErrors
	s.CommitSum += o.CommitSum
	s.CommitCount += o.CommitCount
	s.ApplySum += o.ApplySum
	s.ApplyCount += o.ApplyCount
}

// NewServerSample extracts the series the reports use from a scrape.
func NewServerSample(phase, node string, at time.Time, m *Metrics) ServerSample {
	v := func(name string) float64 { return m.Sum(name) }
	return ServerSample{
		Phase:          phase,
		Node:           node,
		At:             at,
		RSSBytes:       v("process_resident_memory_bytes"),
		CPUSeconds:     v("process_cpu_seconds_total"),
		CPUWaitSeconds: v("parley_process_cpu_wait_seconds_total"),
		CPUSystemSecs:  v("parley_process_cpu_system_seconds_total"),
		HeapInuseBytes: v("go_memstats_heap_inuse_bytes"),
		Goroutines:     v("go_goroutines"),
		Connections:    v("parley_connections"),
		Commits:        v("parley_commits_total"),
		Commands:       v("parley_commands_committed_total"),
		Rejected:       v("parley_commands_rejected_total"),
		IdleTimeouts:   v("parley_idle_timeouts_total"),
		Overflows:      v("parley_queue_overflows_total"),
		RequestErrors:  v("parley_request_errors_total"),
		CommitSum:      v("parley_commit_seconds_sum"),
		CommitCount:    v("parley_commit_seconds_count"),
		ApplySum:       v("parley_apply_seconds_sum"),
		ApplyCount:     v("parley_apply_seconds_count"),
	}
}
