package testwait

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestEventuallyHolds(t *testing.T) {
	calls := 0
	r := &recorder{TB: t}
	Eventually(r, "the third call", func() bool { calls++; return calls == 3 })
	if r.failed != "" || calls != 3 {
		t.Fatalf("failed %q after %d calls", r.failed, calls)
	}
}

func TestEventuallyTimesOut(t *testing.T) {
	r := &recorder{TB: t}
	calls := 0
	Eventually(r, "never", func() bool { calls++; return false },
		Limit(20*time.Millisecond), Detail(func() string { return fmt.Sprintf("%d calls", calls) }))
	if !strings.Contains(r.failed, "waiting for never: ") || !strings.HasSuffix(r.failed, fmt.Sprintf("%d calls", calls)) || calls < 2 {
		t.Fatalf("failure %q after %d calls", r.failed, calls)
	}
}
