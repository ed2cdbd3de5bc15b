package rapidpro

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestOwnHTTPClient(t *testing.T) {
	custom := &http.Transport{}
	tests := []struct {
		name        string
		base        *http.Client
		wantTimeout time.Duration
	}{
		{"nil gets the default", nil, defaultRequestTimeout},
		{"no timeout gets a bound", &http.Client{Transport: custom}, defaultRequestTimeout},
		{"a caller's timeout is kept", &http.Client{Transport: custom, Timeout: 5 * time.Second}, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before http.Client
			if tt.base != nil {
				before = *tt.base
			}
			got := ownHTTPClient(tt.base)
			if got == tt.base {
				t.Fatal("the caller's client is used, not a copy")
			}
			if got.Timeout != tt.wantTimeout {
				t.Fatalf("Timeout = %s, want %s", got.Timeout, tt.wantTimeout)
			}
			if got.CheckRedirect == nil || got.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
				t.Fatal("redirects are not refused")
			}
			if tt.base != nil {
				if got.Transport != custom {
					t.Fatal("the caller's transport is not used")
				}
				if tt.base.Timeout != before.Timeout || tt.base.CheckRedirect != nil {
					t.Fatal("the caller's client was modified")
				}
			}
		})
	}
}

// Each scope paces at 99% of the configured rate, one request at a time:
// the server counts arrivals in a sliding window, and at exactly its rate
// jitter put one request too many into a window (mhero-bench's budget
// scenario met a 429 and its Retry-After in most runs).
func TestScopePacesUnderTheRate(t *testing.T) {
	for _, perHour := range []int{3600, 1000, 360000} {
		s := newScope(scopeContacts, perHour, time.Now)
		if got, want := float64(s.limiter.Limit()), 0.99*float64(perHour)/3600; math.Abs(got-want) > 1e-9*want {
			t.Errorf("%d an hour: paced at %g a second, want %g", perHour, got, want)
		}
		if s.limiter.Burst() != 1 {
			t.Errorf("%d an hour: burst %d, want 1", perHour, s.limiter.Burst())
		}
	}
	if s := newScope(scopeContacts, 0, time.Now); s.limiter != nil {
		t.Error("no rate set, yet the scope is paced")
	}
}
