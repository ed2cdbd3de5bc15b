package rapidpro

import (
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
