package rapidpro_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// TestFaultCreateContact runs CreateContact against each failure the
// emulator can inject and checks the error kind, the requests sent and that
// the contact exists at most once.
func TestFaultCreateContact(t *testing.T) {
	const urn = "tel:+231777123456"
	post := func(f rapidprotest.Fault) rapidprotest.Fault {
		f.Method, f.Path = http.MethodPost, contactsPath
		return f
	}
	tests := []struct {
		name     string
		fault    rapidprotest.Fault
		wantErr  bool
		kind     rapidpro.ErrorKind // when wantErr
		sent     int64
		contacts int
		outcome  string
	}{
		{"429 short Retry-After", post(rapidprotest.Fault{Status: 429, RetryAfter: time.Second}),
			false, 0, 2, 1, "slept 1s on Retry-After, then created"},
		{"429 long Retry-After", post(rapidprotest.Fault{Status: 429, RetryAfter: time.Hour}),
			true, rapidpro.KindThrottled, 1, 0, "returned at once as throttled, nothing created"},
		{"429 without Retry-After", post(rapidprotest.Fault{Status: 429}),
			false, 0, 2, 1, "backed off, then created"},
		{"500 before commit", post(rapidprotest.Fault{Status: 500}),
			true, rapidpro.KindServer, 2, 0, "not repeated; lookup finds nothing"},
		{"500 after commit", post(rapidprotest.Fault{Status: 500, AfterCommit: true}),
			false, 0, 2, 1, "not repeated; lookup finds the contact"},
		{"502 HTML", post(rapidprotest.Fault{Status: 502}),
			true, rapidpro.KindServer, 2, 0, "not repeated; lookup finds nothing"},
		{"503 empty body", post(rapidprotest.Fault{Status: 503}),
			true, rapidpro.KindServer, 2, 0, "not repeated; lookup finds nothing"},
		{"connection dropped", post(rapidprotest.Fault{Drop: true}),
			true, rapidpro.KindTransport, 2, 0, "not repeated; lookup finds nothing"},
		{"connection reset mid-body", post(rapidprotest.Fault{CutBody: true}),
			false, 0, 2, 1, "answer cut; lookup finds the contact"},
		{"slow answer before commit", post(rapidprotest.Fault{Delay: time.Minute}),
			true, rapidpro.KindTransport, 2, 0, "timed out; lookup finds nothing"},
		{"slow answer after commit", post(rapidprotest.Fault{Delay: time.Minute, AfterCommit: true}),
			false, 0, 2, 1, "timed out; lookup finds the contact"},
		{"HTML body on 200", post(rapidprotest.Fault{Status: 200, Body: "<html><body>Welcome</body></html>"}),
			true, rapidpro.KindTransport, 2, 0, "undecodable; lookup finds nothing"},
		{"invalid JSON on 201 after commit", post(rapidprotest.Fault{Status: 201, Body: `{"uuid": `, AfterCommit: true}),
			false, 0, 2, 1, "undecodable; lookup finds the contact"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := faultSetup(t)
			s.srv.Inject(tt.fault)
			start := time.Now()
			ct, err := s.c.CreateContact(context.Background(), rapidpro.ContactWrite{Name: "Ama", URNs: []string{urn}})
			took := time.Since(start)

			if tt.wantErr {
				e := wantKind(t, err, tt.kind)
				if tt.kind == rapidpro.KindThrottled && (e.RetryAfter < time.Hour-time.Minute || took > time.Second) {
					t.Fatalf("%s: RetryAfter %s after %s, want about 1h without sleeping", tt.outcome, e.RetryAfter, took)
				}
			} else if err != nil || ct.UUID == "" {
				t.Fatalf("%s: got %+v, %v", tt.outcome, ct, err)
			}
			if got, server := s.c.Sent(), int64(len(s.srv.Requests())); got != tt.sent || server != tt.sent {
				t.Fatalf("%s: Sent() = %d, server saw %d, want %d", tt.outcome, got, server, tt.sent)
			}
			if n := len(s.srv.Contacts()); n != tt.contacts {
				t.Fatalf("%s: %d contacts, want %d", tt.outcome, n, tt.contacts)
			}
			if !tt.wantErr && ct.UUID != s.srv.Contacts()[0].UUID {
				t.Fatalf("%s: returned %s, stored %s", tt.outcome, ct.UUID, s.srv.Contacts()[0].UUID)
			}
		})
	}
}

// TestFaultRead runs idempotent reads against the same faults: they are
// retried, and the request count says how often.
func TestFaultRead(t *testing.T) {
	tests := []struct {
		name    string
		fault   rapidprotest.Fault
		wantErr bool
		kind    rapidpro.ErrorKind
		sent    int64
		outcome string
	}{
		{"429 short Retry-After", rapidprotest.Fault{Status: 429, RetryAfter: time.Second}, false, 0, 2, "slept, then read"},
		{"429 long Retry-After", rapidprotest.Fault{Status: 429, RetryAfter: time.Hour}, true, rapidpro.KindThrottled, 1, "throttled at once"},
		{"429 without Retry-After", rapidprotest.Fault{Status: 429}, false, 0, 2, "backed off, then read"},
		{"500 twice", rapidprotest.Fault{Status: 500, Times: 2}, false, 0, 3, "retried twice"},
		{"500 every time", rapidprotest.Fault{Status: 500, Times: 10}, true, rapidpro.KindServer, 3, "gave up after the retries"},
		{"502 HTML", rapidprotest.Fault{Status: 502}, false, 0, 2, "retried"},
		{"503 empty body", rapidprotest.Fault{Status: 503}, false, 0, 2, "retried"},
		{"slow answer", rapidprotest.Fault{Delay: time.Minute}, false, 0, 2, "timed out, retried"},
		{"connection reset mid-body", rapidprotest.Fault{CutBody: true}, true, rapidpro.KindTransport, 1, "body cut: not retried"},
		{"HTML body on 200", rapidprotest.Fault{Status: 200, Body: "<html></html>"}, true, rapidpro.KindTransport, 1, "undecodable"},
		{"invalid JSON on 200", rapidprotest.Fault{Status: 200, Body: `{"next": nul`}, true, rapidpro.KindTransport, 1, "undecodable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := faultSetup(t)
			s.srv.AddField("Global ID", "text")
			f := tt.fault
			f.Method, f.Path = http.MethodGet, "/api/v2/fields.json"
			s.srv.Inject(f)
			fields, err := s.c.Fields(context.Background())
			if tt.wantErr {
				wantKind(t, err, tt.kind)
			} else if err != nil || len(fields) != 1 {
				t.Fatalf("%s: got %v, %v", tt.outcome, fields, err)
			}
			if got, server := s.c.Sent(), int64(len(s.srv.Requests())); got != tt.sent || server != tt.sent {
				t.Fatalf("%s: Sent() = %d, server saw %d, want %d", tt.outcome, got, server, tt.sent)
			}
		})
	}
}

// faultSetup is a client with few retries, a short Retry-After cap and a
// short timeout, so that every fault plays out in well under a second.
func faultSetup(t *testing.T) setup {
	return newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) {
		c.RetryMax = 2
		c.RetryAfterCap = 2 * time.Second
		c.HTTPClient = &http.Client{Timeout: 500 * time.Millisecond}
	})
}
