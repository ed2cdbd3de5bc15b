package csd_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

// faultServer is what a fault row pulls from: the csdtest OpenInfoMan, or a
// plain handler where the fake cannot misbehave that way.
type faultServer struct {
	url      string
	requests func() int
}

func faultOIM(doc []byte, opts csdtest.Options, setup func(*csdtest.Server)) func(*testing.T) faultServer {
	return func(t *testing.T) faultServer {
		s := startOIM(t, doc, opts)
		if setup != nil {
			setup(s)
		}
		return faultServer{url: s.URL(), requests: s.Requests}
	}
}

func faultHandler(h http.HandlerFunc) func(*testing.T) faultServer {
	return func(t *testing.T) faultServer {
		var n atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			h(w, r)
		}))
		t.Cleanup(srv.Close)
		return faultServer{url: srv.URL, requests: func() int { return int(n.Load()) }}
	}
}

const csdOpen = `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>`

// billionLaughs nests entities ten deep: expanded, &lol9; would be 3 GB.
func billionLaughs(use string) string {
	var b strings.Builder
	b.WriteString("<?xml version=\"1.0\"?>\n<!DOCTYPE CSD [\n<!ENTITY lol0 \"lol\">\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "<!ENTITY lol%d \"%s\">\n", i, strings.Repeat(fmt.Sprintf("&lol%d;", i-1), 10))
	}
	b.WriteString("]>\n" + csdOpen + use + "</providerDirectory></CSD>")
	return b.String()
}

func TestFaultClient(t *testing.T) {
	badDate := []byte(wrapCSD(`<provider entityID="a"><record updated="2024-01-01T00:00:00Z" status="Active"/></provider>` +
		`<provider entityID="b"><record updated="0000-00-00T00:00:00" status="Active"/></provider>`))
	deep := []byte(wrapCSD(`<provider entityID="a"/><provider entityID="b"><extension>` + strings.Repeat("<x>", 70) + strings.Repeat("</x>", 70) + `</extension></provider>`))
	tests := []struct {
		name    string
		outcome string
		server  func(*testing.T) faultServer
		client  func(*csd.Client)
		query   csd.ProviderQuery
		// wantErr parts the error must contain (none: no error); wantAs, if
		// set, is a pointer to the error type it must wrap.
		wantErr   []string
		wantAs    any
		wantIs    error
		providers int
		requests  int
		stop      csd.PullStop
		// maxAlloc, if set, bounds the bytes allocated during the pull.
		maxAlloc uint64
	}{
		{
			name:      "422 on a stored date that is not one",
			outcome:   "error naming the xquery failure; 4xx is not retried; nothing delivered",
			server:    faultOIM(badDate, csdtest.Options{}, nil),
			query:     csd.ProviderQuery{UpdatedSince: genStart},
			wantErr:   []string{"csd: page 1 (start 1): OpenInfoMan answered 422 Unprocessable Entity", "Error executing xquery"},
			wantAs:    new(*csd.StatusError),
			requests:  1,
			providers: 0,
		},
		{
			name:     "500 on every attempt",
			outcome:  "retried RetryMax times, then an error counting the attempts",
			server:   faultOIM(generated(t, 30), csdtest.Options{}, func(s *csdtest.Server) { s.FailNext(http.StatusInternalServerError, 100) }),
			client:   func(c *csd.Client) { c.RetryMax = 2 },
			wantErr:  []string{"csd: page 1 (start 1): after 3 attempts: OpenInfoMan answered 500 Internal Server Error"},
			wantAs:   new(*csd.StatusError),
			requests: 3,
		},
		{
			name:      "500 once",
			outcome:   "retried, then the pull completes",
			server:    faultOIM(generated(t, 30), csdtest.Options{}, func(s *csdtest.Server) { s.FailNext(http.StatusInternalServerError, 1) }),
			providers: 30,
			requests:  5, // four pages, the first twice
			stop:      csd.StopShortPage,
		},
		{
			name:     "empty 200 body",
			outcome:  "the document is unknown to OpenInfoMan: ErrUnknownDocument",
			server:   faultOIM(generated(t, 3), csdtest.Options{}, nil),
			client:   func(c *csd.Client) { c.Document = "Nope" },
			wantErr:  []string{`document "Nope" is unknown to OpenInfoMan (empty response)`},
			wantIs:   csd.ErrUnknownDocument,
			requests: 1,
		},
		{
			name:    "malformed XML",
			outcome: "syntax error with its line; providers before it delivered",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, csdOpen+"\n<provider entityID=\"a\"/>\n<provider entityID=\"b\">\n</providerDirectory></CSD>")
			}),
			wantErr:   []string{"csd: page 1 (start 1): csd: line 4: element <provider> closed by </providerDirectory>"},
			wantAs:    new(*csd.SyntaxError),
			providers: 1,
			requests:  1,
		},
		{
			name:    "connection cut mid-document",
			outcome: "unexpected EOF; providers before the cut delivered; a broken body is not retried",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, csdOpen+`<provider entityID="a"/><provider entityID="b"/><provider entityID="c"><demographic>`)
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // closes the connection without ending the chunked body
			}),
			wantErr:   []string{"csd: page 1 (start 1): csd: line 1: unexpected EOF"},
			providers: 2,
			requests:  1,
		},
		{
			name:      "deeply nested elements",
			outcome:   "MaxDepth LimitError; the provider before it delivered",
			server:    faultOIM(deep, csdtest.Options{}, nil),
			wantErr:   []string{"nesting depth limit exceeded (more than 64 levels)"},
			wantAs:    new(*csd.LimitError),
			providers: 1,
			requests:  1,
		},
		{
			name:    "billion laughs in text",
			outcome: "custom entities are never expanded: syntax error, memory flat",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, billionLaughs(`<provider entityID="a"><demographic><name><commonName>&lol9;</commonName></name></demographic></provider>`))
			}),
			wantErr:  []string{"invalid character entity &lol9;"},
			wantAs:   new(*csd.SyntaxError),
			requests: 1,
			maxAlloc: 16 << 20,
		},
		{
			name:    "billion laughs in an attribute",
			outcome: "not expanded either: syntax error before any provider",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, billionLaughs(`<provider entityID="&lol9;"/>`))
			}),
			wantErr:  []string{"invalid character entity &lol9;"},
			wantAs:   new(*csd.SyntaxError),
			requests: 1,
			maxAlloc: 16 << 20,
		},
		{
			name:    "external entity",
			outcome: "a SYSTEM entity is never fetched: syntax error",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `<!DOCTYPE CSD [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>`+csdOpen+`<provider entityID="&xxe;"/></providerDirectory></CSD>`)
			}),
			wantErr:  []string{"invalid character entity &xxe;"},
			wantAs:   new(*csd.SyntaxError),
			requests: 1,
		},
		{
			name:      "oversized document",
			outcome:   "MaxBytes LimitError; providers read before the cap delivered",
			server:    faultOIM(generated(t, 30), csdtest.Options{}, nil),
			client:    func(c *csd.Client) { c.Limits.MaxBytes = 5000 },
			wantErr:   []string{"body size limit exceeded (more than 5000 bytes)"},
			wantAs:    new(*csd.LimitError),
			providers: 4, // the header and four ~1 KB providers fit
			requests:  1,
		},
		{
			name:    "endless page",
			outcome: "element size LimitError naming the provider's line; memory flat",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, csdOpen+"<provider entityID=\"a\"/>\n<provider entityID=\"b\"><demographic><name><commonName>")
				chunk := []byte(strings.Repeat("a", 64<<10))
				// Ends once the client hangs up (or after 1 GiB, whatever).
				for range 1 << 14 {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}),
			wantErr:   []string{"csd: page 1 (start 1): csd: line 2: element size limit exceeded (provider element longer than 1048576 bytes)"},
			wantAs:    new(*csd.LimitError),
			providers: 1,
			requests:  1,
			maxAlloc:  32 << 20,
		},
		{
			name:      "server ignores paging",
			outcome:   "the first, oversized page is the whole result: one request, Stop unpaged",
			server:    faultOIM(generated(t, 25), csdtest.Options{IgnorePaging: true}, nil),
			providers: 25,
			requests:  1,
			stop:      csd.StopUnpaged,
		},
		{
			name:      "server repeats the same page",
			outcome:   "stops at the repeat: two requests, Stop repeated, the pull incomplete",
			server:    faultOIM(generated(t, 25), csdtest.Options{IgnoreStart: true}, nil),
			providers: 10,
			requests:  2,
			stop:      csd.StopRepeated,
		},
		{
			name:      "full pages forever",
			outcome:   "ErrPullBound at MaxPages",
			server:    faultHandler(endlessPages),
			client:    func(c *csd.Client) { c.MaxPages = 3 },
			wantErr:   []string{"csd: page 4 (start 31): more than 3 pages (Client.MaxPages)"},
			wantIs:    csd.ErrPullBound,
			providers: 30,
			requests:  3,
		},
		{
			name:    "redirect on POST",
			outcome: "not followed: StatusError naming the Location without its query",
			server: faultHandler(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/CSD/login?session=s3cret", http.StatusFound)
			}),
			wantErr:  []string{"OpenInfoMan answered 302 Found with Location http://127.0.0.1:", "/CSD/login (redirects are not followed"},
			wantAs:   new(*csd.StatusError),
			requests: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.server(t)
			c := &csd.Client{BaseURL: srv.url, Document: "Providers", PageSize: 10, RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond}
			if tt.client != nil {
				tt.client(c)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			providers := 0
			stats, err := c.Providers(context.Background(), tt.query, func(*csd.Provider) error {
				providers++
				return nil
			})
			runtime.ReadMemStats(&after)
			t.Logf("outcome %q: err %v; stats %+v", tt.outcome, err, stats)

			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(tt.wantErr) > 0 && err == nil {
				t.Fatal("no error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(fmt.Sprint(err), "s3cret") {
				t.Errorf("error %q shows a secret", err)
			}
			if tt.wantAs != nil && !errors.As(err, tt.wantAs) {
				t.Errorf("error %T (%v) does not wrap %T", err, err, tt.wantAs)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if providers != tt.providers || stats.Providers != tt.providers {
				t.Errorf("%d providers delivered (stats %d), want %d", providers, stats.Providers, tt.providers)
			}
			if got := srv.requests(); got != tt.requests || stats.Requests != tt.requests {
				t.Errorf("server saw %d requests, stats %d; want %d", got, stats.Requests, tt.requests)
			}
			if stats.Stop != tt.stop {
				t.Errorf("Stop = %q, want %q", stats.Stop, tt.stop)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; tt.maxAlloc > 0 && alloc > tt.maxAlloc {
				t.Errorf("allocated %d bytes during the pull, want at most %d", alloc, tt.maxAlloc)
			}
		})
	}
}
