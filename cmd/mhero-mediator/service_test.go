package main

import (
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// testConfig is a checked serve configuration for args on top of the
// required RapidPro flags, a temporary state file and an OpenHIM core at
// openHIMURL (never contacted unless the test serves).
func testConfig(t *testing.T, openHIMURL string, args ...string) *config {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &config{}
	cfg.register(fs)
	base := []string{
		"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t0ken-not-used",
		"--state-file", filepath.Join(t.TempDir(), "state.db"),
		"--openhim-url", openHIMURL, "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
	}
	if err := parseFlags(fs, append(base, args...)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testService(t *testing.T, cfg *config) *service {
	t.Helper()
	svc, err := newService(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.close() })
	return svc
}

var upstreamSystems = []string{"openinfoman", "rapidpro", "openhim"}

// Behind an http:// URL that answers 301, a followed redirect turns a POST
// create into a GET that "succeeds"; every upstream client must hand the
// 301 back instead, and still count the attempt.
func TestUpstreamClientsDoNotFollowRedirects(t *testing.T) {
	var followed atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { followed.Add(1) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/moved", http.StatusMovedPermanently)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	svc := testService(t, testConfig(t, srv.URL))

	for _, system := range upstreamSystems {
		t.Run(system, func(t *testing.T) {
			hc := svc.httpClients[system]
			if hc == nil {
				t.Fatalf("the service built no %s client", system)
			}
			resp, err := hc.Post(srv.URL+"/api/v2/contacts.json", "application/json", strings.NewReader(`{"name":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMovedPermanently || followed.Load() != 0 {
				t.Fatalf("status %d, redirect target hit %d times; want the 301 back, not followed", resp.StatusCode, followed.Load())
			}
		})
	}

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(svc.metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, system := range upstreamSystems {
		counted := false
		for line := range strings.Lines(rec.Body.String()) {
			if strings.HasPrefix(line, "mhero_upstream_requests_total{") && strings.Contains(line, `code="301"`) && strings.Contains(line, `system="`+system+`"`) {
				counted = true
			}
		}
		if !counted {
			t.Errorf("no mhero_upstream_requests_total for the %s 301:\n%s", system, rec.Body.String())
		}
	}
}

// A server that takes the request and never answers is cut by the header
// timeout, well before the overall one.
func TestUpstreamClientsTimeOutWaitingForHeaders(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for the handlers

	cfg := testConfig(t, srv.URL)
	cfg.upstreamTimeouts = map[string]upstreamTimeouts{}
	for _, system := range upstreamSystems {
		// Total bounds the test if the header timeout is lost.
		cfg.upstreamTimeouts[system] = upstreamTimeouts{TLSHandshake: time.Second, ResponseHeader: 50 * time.Millisecond, Total: 5 * time.Second}
	}
	svc := testService(t, cfg)
	for _, system := range upstreamSystems {
		t.Run(system, func(t *testing.T) {
			resp, err := svc.httpClients[system].Get(srv.URL + "/CSD/csr/Providers/careServicesRequest/urn:ihe:iti:csd:2014:stored-function:provider-search")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d from a server that never answers", resp.StatusCode)
			}
			if !strings.Contains(err.Error(), "timeout awaiting response headers") {
				t.Fatalf("err = %v, want the response header timeout", err)
			}
		})
	}
}

// The defaults the service runs with: OpenInfoMan waits longest for headers,
// its XQuery running first; every system has a total longer than its header
// wait and a TLS handshake bound.
func TestDefaultUpstreamTimeouts(t *testing.T) {
	tests := []struct {
		system         string
		responseHeader time.Duration
	}{
		{"openinfoman", 2 * time.Minute},
		{"rapidpro", 60 * time.Second},
		{"openhim", 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.system, func(t *testing.T) {
			got := (&config{}).timeouts(tc.system)
			if got.ResponseHeader != tc.responseHeader {
				t.Errorf("response header timeout %s, want %s", got.ResponseHeader, tc.responseHeader)
			}
			if got.Total <= got.ResponseHeader || got.TLSHandshake <= 0 {
				t.Errorf("timeouts %+v: want a TLS handshake bound and a total above the header timeout", got)
			}
		})
	}
	if len(defaultUpstreamTimeouts) != len(tests) {
		t.Errorf("%d systems have default timeouts, the test knows %d", len(defaultUpstreamTimeouts), len(tests))
	}
}
