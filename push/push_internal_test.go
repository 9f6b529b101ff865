package push

import (
	"net/http"
	"regexp"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{"-5", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
	} {
		if got := retryAfter(http.Header{"Retry-After": {tc.v}}, now); got != tc.want {
			t.Errorf("Retry-After %q: %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestUUIDFromKey(t *testing.T) {
	canonical := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := uuidFromKey("m1/d1"), uuidFromKey("m1/d2")
	if !canonical.MatchString(a) || !canonical.MatchString(b) {
		t.Fatalf("%s %s not canonical lowercase v8 UUIDs", a, b)
	}
	if a == b || a != uuidFromKey("m1/d1") {
		t.Fatal("UUID must be a function of the key alone")
	}
}
