package rapidpro_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

func TestContactStatusFromLegacyFlags(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"status wins", `{"status": "archived", "blocked": false, "stopped": false}`, "archived"},
		{"status without flags", `{"status": "stopped"}`, "stopped"},
		{"old server, active", `{"blocked": false, "stopped": false}`, "active"},
		{"old server, blocked", `{"blocked": true, "stopped": false}`, "blocked"},
		{"old server, stopped", `{"blocked": false, "stopped": true}`, "stopped"},
		{"old server, both set", `{"blocked": true, "stopped": true}`, "blocked"},
		{"old server, one flag only", `{"stopped": false}`, "active"},
		{"deleted, current server", `{"status": null, "blocked": null, "stopped": null}`, ""},
		{"deleted, old server", `{"blocked": null, "stopped": null}`, ""},
		{"nothing at all", `{}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c rapidpro.Contact
			if err := json.Unmarshal([]byte(tt.json), &c); err != nil {
				t.Fatal(err)
			}
			if c.Status != tt.want {
				t.Fatalf("Status = %q, want %q", c.Status, tt.want)
			}
		})
	}
}

// TestRedirectRefusedWithCallerClient: a caller's own client (which follows
// redirects by default) must not turn a POST answered by a 301 into a GET
// elsewhere that "succeeds" with an empty contact.
func TestRedirectRefusedWithCallerClient(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	}))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path+"?session=s3cr3t", http.StatusMovedPermanently)
	}))
	defer srv.Close()

	tests := []struct {
		name   string
		client func() *http.Client
	}{
		{"caller's client trusting the target", target.Client},
		{"caller's client with a timeout", func() *http.Client { c := target.Client(); c.Timeout = time.Minute; return c }},
		{"default client", func() *http.Client { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := tt.client()
			c, err := rapidpro.New(rapidpro.Config{BaseURL: srv.URL, Token: token, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			before := elsewhere.Load()
			ct, err := c.CreateContact(context.Background(), rapidpro.ContactWrite{Name: "A", URNs: []string{"tel:+231777123456"}})
			if err == nil {
				t.Fatalf("redirect followed: contact %+v", ct)
			}
			e := wantKind(t, err, rapidpro.KindUnknown)
			if e.Status != http.StatusMovedPermanently {
				t.Fatalf("status %d, want 301", e.Status)
			}
			msg := err.Error()
			if !strings.Contains(msg, target.URL+"/api/v2/contacts.json") || strings.Contains(msg, "s3cr3t") {
				t.Fatalf("error %q should name the target without its query", msg)
			}
			if n := elsewhere.Load() - before; n != 0 {
				t.Fatalf("%d requests reached the redirect target", n)
			}
			if c.Sent() != 1 {
				t.Fatalf("Sent() = %d, want 1 (a 301 is not retried, nor reconciled)", c.Sent())
			}
			if hc != nil && hc.CheckRedirect != nil {
				t.Fatal("the caller's client was modified")
			}
		})
	}
}

// TestLimiterDeadlineIsDeadlineExceeded: a wait the context's deadline would
// cut short fails at once, as the run's timeout, without sending anything.
func TestLimiterDeadlineIsDeadlineExceeded(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*rapidpro.Config)
		prime func(*rapidprotest.Server) // makes the next call wait
	}{
		{
			name: "token bucket empty",
			cfg:  func(c *rapidpro.Config) { c.RatePerHour = 1 },
		},
		{
			name: "scope paused by a 429",
			cfg:  func(c *rapidpro.Config) { c.RetryMax = -1 },
			prime: func(srv *rapidprotest.Server) {
				srv.Inject(rapidprotest.Fault{Status: http.StatusTooManyRequests, RetryAfter: 3 * time.Second})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, rapidprotest.Options{}, tt.cfg)
			if tt.prime != nil {
				tt.prime(s.srv)
			}
			_, _ = s.c.Workspace(context.Background()) // spends the token, or gets the 429
			sent := s.c.Sent()

			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			_, err := s.c.Fields(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if took := time.Since(start); took > 500*time.Millisecond {
				t.Fatalf("took %s: the wait should be refused up front", took)
			}
			if s.c.Sent() != sent {
				t.Fatalf("%d requests sent, want none", s.c.Sent()-sent)
			}
			e := wantKind(t, err, rapidpro.KindTransport)
			if e.Status != 0 {
				t.Fatalf("status %d, want 0 (nothing sent)", e.Status)
			}
		})
	}
}

// TestSentCountsEveryRequest: Sent matches what the server received, for
// retries, pages, lookups after a failed create and connections net/http
// silently re-sends.
func TestSentCountsEveryRequest(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, setup) error
		want int64
	}{
		{
			name: "three pages",
			run: func(ctx context.Context, s setup) error {
				for i := range 5 {
					s.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+23177700000" + string(rune('0'+i))}})
				}
				return s.c.Contacts(ctx, rapidpro.ContactQuery{}, func(rapidpro.Contact) error { return nil })
			},
			want: 3,
		},
		{
			name: "retries on 503 then success",
			run: func(ctx context.Context, s setup) error {
				s.srv.Inject(rapidprotest.Fault{Status: http.StatusServiceUnavailable, Times: 2})
				_, err := s.c.Workspace(ctx)
				return err
			},
			want: 3,
		},
		{
			name: "create committed, answer lost, lookup finds it",
			run: func(ctx context.Context, s setup) error {
				s.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Status: http.StatusBadGateway, AfterCommit: true})
				_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: "A", URNs: []string{"tel:+231777123456"}})
				return err
			},
			want: 2,
		},
		{
			name: "dropped connections after a kept-alive one",
			run: func(ctx context.Context, s setup) error {
				if _, err := s.c.Workspace(ctx); err != nil {
					return err
				}
				s.srv.Inject(rapidprotest.Fault{Drop: true, Times: 2})
				_, err := s.c.Workspace(ctx)
				return err
			},
			want: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, rapidprotest.Options{PageSize: 2})
			if err := tt.run(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if got, server := s.c.Sent(), int64(len(s.srv.Requests())); got != tt.want || got != server {
				t.Fatalf("Sent() = %d, server received %d, want %d", got, server, tt.want)
			}
		})
	}
}
