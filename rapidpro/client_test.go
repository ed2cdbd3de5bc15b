package rapidpro_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// token is distinctive so a leak into any message is easy to spot.
const token = "tok-5f0c2a9e1b7d4c3a8e6f0b1d2c3e4f5a6b7c8d9e"

type setup struct {
	srv  *rapidprotest.Server
	c    *rapidpro.Client
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newSetup starts an emulator and a client with fast retries. Every test
// checks at the end that the token never reached the logs.
func newSetup(t *testing.T, opts rapidprotest.Options, configure ...func(*rapidpro.Config)) setup {
	t.Helper()
	if opts.Token == "" {
		opts.Token = token
	}
	if opts.Country == "" {
		opts.Country = "LR"
	}
	srv := rapidprotest.New(opts)
	t.Cleanup(srv.Close)
	logs := &lockedBuffer{}
	cfg := rapidpro.Config{
		BaseURL:       srv.URL(),
		Token:         opts.Token,
		RetryWaitMin:  time.Millisecond,
		RetryWaitMax:  5 * time.Millisecond,
		RetryAfterCap: 5 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range configure {
		f(&cfg)
	}
	c, err := rapidpro.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), token) {
			t.Error("the token appears in the logs")
		}
	})
	return setup{srv: srv, c: c, logs: logs}
}

func ptr(s string) *string { return &s }

func value(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// requests counts the emulator's requests for method and path.
func requests(srv *rapidprotest.Server, method, path string) []rapidprotest.Request {
	var out []rapidprotest.Request
	for _, r := range srv.Requests() {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func wantKind(t *testing.T, err error, kind rapidpro.ErrorKind) *rapidpro.Error {
	t.Helper()
	var e *rapidpro.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *rapidpro.Error", err)
	}
	if e.Kind != kind {
		t.Fatalf("kind = %v, want %v (error: %v)", e.Kind, kind, err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("token in error %q", err)
	}
	return e
}

const contactsPath = "/api/v2/contacts.json"

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  rapidpro.Config
	}{
		{"no URL", rapidpro.Config{Token: token}},
		{"relative URL", rapidpro.Config{BaseURL: "rapidpro.example.org", Token: token}},
		{"ftp URL", rapidpro.Config{BaseURL: "ftp://rapidpro.example.org", Token: token}},
		{"query", rapidpro.Config{BaseURL: "https://rapidpro.example.org/?x=1", Token: token}},
		{"no token", rapidpro.Config{BaseURL: "https://rapidpro.example.org"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rapidpro.New(tt.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			} else if strings.Contains(err.Error(), token) {
				t.Fatalf("token in error %q", err)
			}
		})
	}
}

func TestCreateUpdateUpsert(t *testing.T) {
	s := newSetup(t, rapidprotest.Options{})
	ctx := context.Background()
	s.srv.AddField("Global ID", "text")
	s.srv.AddField("Cadre", "text")
	s.srv.AddField("Facility", "text")
	mhero := s.srv.AddGroup("mHero")
	s.srv.AddGroup("Nurses")

	created, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{
		Name:   "Provider One",
		URNs:   []string{"tel:+231777123456"},
		Groups: []string{mhero.UUID, "nurses"},
		Fields: map[string]*string{"global_id": ptr("urn:uuid:1"), "cadre": ptr("Midwife")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.UUID == "" || created.Name != "Provider One" || created.Status != "active" ||
		!slices.Equal(created.URNs, []string{"tel:+231777123456"}) || len(created.Groups) != 2 {
		t.Fatalf("created %+v", created)
	}
	if len(created.Fields) != 3 || created.Fields["facility"] != nil || value(created.Fields["cadre"]) != "Midwife" {
		t.Fatalf("created fields %v: want every key, unset ones nil", created.Fields)
	}
	if created.CreatedOn.IsZero() || created.ModifiedOn.IsZero() {
		t.Fatalf("timestamps not decoded: %+v", created)
	}

	// An update sends only the changed keys and leaves groups alone.
	updated, err := s.c.UpdateContact(ctx, created.UUID, rapidpro.ContactWrite{
		Fields: map[string]*string{"cadre": ptr("Senior Midwife"), "facility": ptr("JFK")},
	})
	if err != nil {
		t.Fatal(err)
	}
	posts := requests(s.srv, http.MethodPost, contactsPath)
	var sent map[string]any
	if err := json.Unmarshal([]byte(posts[len(posts)-1].Body), &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || sent["fields"] == nil {
		t.Fatalf("update sent %v, want only fields", sent)
	}
	if got := posts[len(posts)-1].Query.Get("uuid"); got != created.UUID {
		t.Fatalf("update went to uuid %q", got)
	}
	if updated.Name != "Provider One" || len(updated.Groups) != 2 || value(updated.Fields["global_id"]) != "urn:uuid:1" ||
		value(updated.Fields["cadre"]) != "Senior Midwife" || value(updated.Fields["facility"]) != "JFK" {
		t.Fatalf("updated %+v", updated)
	}

	// A nil field value clears it.
	cleared, err := s.c.UpdateContact(ctx, created.UUID, rapidpro.ContactWrite{Fields: map[string]*string{"facility": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if cleared.Fields["facility"] != nil || value(cleared.Fields["cadre"]) != "Senior Midwife" {
		t.Fatalf("after clearing %v", cleared.Fields)
	}

	// Upsert on an existing URN updates it; on a new URN creates.
	up, err := s.c.UpsertContact(ctx, "tel:+231777123456", rapidpro.ContactWrite{Name: "Provider Uno"})
	if err != nil {
		t.Fatal(err)
	}
	if up.UUID != created.UUID || up.Name != "Provider Uno" || len(up.Groups) != 2 {
		t.Fatalf("upsert of an existing URN gave %+v", up)
	}
	last := requests(s.srv, http.MethodPost, contactsPath)
	if q := last[len(last)-1]; q.Query.Get("urn") != "tel:+231777123456" || !strings.Contains(q.Body, "Provider Uno") {
		t.Fatalf("upsert request %+v", q)
	}
	fresh, err := s.c.UpsertContact(ctx, "tel:+231886000111", rapidpro.ContactWrite{Name: "Provider Two"})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.UUID == created.UUID || !slices.Equal(fresh.URNs, []string{"tel:+231886000111"}) {
		t.Fatalf("upsert of a new URN gave %+v", fresh)
	}
	if _, err := s.c.UpsertContact(ctx, "tel:+231886000111", rapidpro.ContactWrite{URNs: []string{}}); err == nil {
		t.Fatal("upsert with URNs accepted")
	}
	if n := len(s.srv.Contacts()); n != 2 {
		t.Fatalf("emulator holds %d contacts, want 2", n)
	}
}

func TestUpdateDropsTakenURNSilently(t *testing.T) {
	s := newSetup(t, rapidprotest.Options{})
	ctx := context.Background()
	a := s.srv.AddContact(rapidpro.Contact{Name: "A", URNs: []string{"tel:+231777000001"}})
	s.srv.AddContact(rapidpro.Contact{Name: "B", URNs: []string{"tel:+231777000002"}})

	got, err := s.c.UpdateContact(ctx, a.UUID, rapidpro.ContactWrite{URNs: []string{"tel:+231777000001", "tel:+231777000002"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.URNs, []string{"tel:+231777000001"}) {
		t.Fatalf("urns = %v: the taken URN should be dropped", got.URNs)
	}
}

func TestContactsPaging(t *testing.T) {
	base := time.Date(2024, 5, 1, 6, 0, 0, 0, time.UTC)
	s := newSetup(t, rapidprotest.Options{})
	for i := range 600 {
		s.srv.AddContact(rapidpro.Contact{
			Name:      fmt.Sprintf("Provider %d", i),
			URNs:      []string{fmt.Sprintf("tel:+231770%06d", i)},
			CreatedOn: base.Add(time.Duration(i) * time.Second),
		})
	}

	var got []rapidpro.Contact
	err := s.c.Contacts(context.Background(), rapidpro.ContactQuery{Reverse: true}, func(c rapidpro.Contact) error {
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 600 {
		t.Fatalf("got %d contacts, want 600", len(got))
	}
	seen := map[string]bool{}
	for i, c := range got {
		if seen[c.UUID] {
			t.Fatalf("contact %s listed twice", c.UUID)
		}
		seen[c.UUID] = true
		if want := fmt.Sprintf("Provider %d", i); c.Name != want {
			t.Fatalf("contact %d is %q, want %q (oldest first)", i, c.Name, want)
		}
	}
	gets := requests(s.srv, http.MethodGet, contactsPath)
	if len(gets) != 3 {
		t.Fatalf("%d pages fetched, want 3", len(gets))
	}
	for _, r := range gets[1:] {
		if r.Query.Get("cursor") == "" || r.Query.Get("reverse") != "true" {
			t.Fatalf("page request %v should carry the cursor and the filters", r.Query)
		}
	}

	// An error from fn stops the listing and comes back unchanged.
	stop := errors.New("stop")
	n := 0
	err = s.c.Contacts(context.Background(), rapidpro.ContactQuery{}, func(rapidpro.Contact) error {
		if n++; n == 300 {
			return stop
		}
		return nil
	})
	if err != stop || n != 300 {
		t.Fatalf("err = %v after %d contacts, want stop after 300", err, n)
	}
}

func TestContactsFilters(t *testing.T) {
	base := time.Date(2024, 5, 1, 6, 0, 0, 0, time.UTC)
	s := newSetup(t, rapidprotest.Options{})
	s.srv.AddGroup("mHero")
	for i := range 10 {
		c := rapidpro.Contact{
			Name:      fmt.Sprintf("P%d", i),
			URNs:      []string{fmt.Sprintf("tel:+23177700000%d", i)},
			CreatedOn: base.Add(time.Duration(i) * time.Minute),
		}
		if i%2 == 0 {
			c.Groups = []rapidpro.GroupRef{{Name: "mHero"}}
		}
		s.srv.AddContact(c)
	}
	names := func(q rapidpro.ContactQuery) []string {
		t.Helper()
		var out []string
		if err := s.c.Contacts(context.Background(), q, func(c rapidpro.Contact) error {
			out = append(out, c.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		q    rapidpro.ContactQuery
		want []string
	}{
		{"newest first by default", rapidpro.ContactQuery{After: base.Add(7 * time.Minute)}, []string{"P9", "P8", "P7"}},
		{"after and before are inclusive", rapidpro.ContactQuery{After: base.Add(3 * time.Minute), Before: base.Add(6 * time.Minute), Reverse: true},
			[]string{"P3", "P4", "P5", "P6"}},
		{"by group name", rapidpro.ContactQuery{Group: "mHero", Reverse: true}, []string{"P0", "P2", "P4", "P6", "P8"}},
		{"group name is case-sensitive here", rapidpro.ContactQuery{Group: "MHERO"}, nil},
		{"by URN, normalised", rapidpro.ContactQuery{URN: "tel:0777000004"}, []string{"P4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := names(tt.q); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	one := s.srv.Contacts()[5]
	if got := names(rapidpro.ContactQuery{UUID: one.UUID}); !slices.Equal(got, []string{"P5"}) {
		t.Fatalf("by uuid: %v", got)
	}
}

func TestErrorKindsFromEmulator(t *testing.T) {
	s := newSetup(t, rapidprotest.Options{})
	ctx := context.Background()
	s.srv.AddField("Global ID", "text")
	s.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777123456"}})

	tests := []struct {
		name string
		call func() error
		kind rapidpro.ErrorKind
		key  string // a key expected in Error.Fields
	}{
		{"URN in use", func() error {
			_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{URNs: []string{"tel:0777123456"}})
			return err
		}, rapidpro.KindURNInUse, "urns"},
		{"invalid URN", func() error {
			_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{URNs: []string{"tel:12"}})
			return err
		}, rapidpro.KindInvalidURN, "urns"},
		{"unknown field", func() error {
			_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: "X", Fields: map[string]*string{"xyz": ptr("1")}})
			return err
		}, rapidpro.KindUnknownField, "fields"},
		{"name too long", func() error {
			_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: strings.Repeat("é", 65)})
			return err
		}, rapidpro.KindValidation, "name"},
		{"unknown contact", func() error {
			_, err := s.c.UpdateContact(ctx, "5e1c9a55-0c6b-4d0e-9a8e-21a3f4b7c9d2", rapidpro.ContactWrite{Name: "X"})
			return err
		}, rapidpro.KindNotFound, "detail"},
		{"invalid URN in a query", func() error {
			// No scheme: the server cannot even normalise it (an
			// unparsable phone such as tel:12 just matches nothing).
			return s.c.Contacts(ctx, rapidpro.ContactQuery{URN: "12345"}, func(rapidpro.Contact) error { return nil })
		}, rapidpro.KindInvalidURN, "detail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := wantKind(t, tt.call(), tt.kind)
			if e.Status == 0 || len(e.Fields[tt.key]) == 0 {
				t.Fatalf("error %+v lacks status or %q messages", e, tt.key)
			}
		})
	}
	if n := len(s.srv.Contacts()); n != 1 {
		t.Fatalf("failed creates left %d contacts, want 1", n)
	}
}

func TestBadTokenIsForbidden(t *testing.T) {
	s := newSetup(t, rapidprotest.Options{})
	c, err := rapidpro.New(rapidpro.Config{BaseURL: s.srv.URL(), Token: token + "-wrong", RetryWaitMin: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Workspace(context.Background())
	e := wantKind(t, err, rapidpro.KindForbidden)
	if e.Status != http.StatusForbidden || e.Fields["detail"][0] != "Invalid token" {
		t.Fatalf("error %+v", e)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("the wrong token leaked: %q", err)
	}
	if n := len(s.srv.Requests()); n != 1 {
		t.Fatalf("403 sent %d requests, want 1 (no retry)", n)
	}
}

func TestThrottling(t *testing.T) {
	t.Run("Retry-After within the cap is slept on and retried", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		s.srv.Inject(rapidprotest.Fault{Path: "/api/v2/workspace.json", Status: 429, RetryAfter: time.Second})
		start := time.Now()
		if _, err := s.c.Workspace(context.Background()); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < time.Second {
			t.Fatalf("retried after %v, before Retry-After", took)
		}
		if n := len(s.srv.Requests()); n != 2 {
			t.Fatalf("%d requests, want 2", n)
		}
	})

	t.Run("429 without Retry-After backs off exponentially", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		s.srv.Inject(rapidprotest.Fault{Path: "/api/v2/groups.json", Status: 429, Times: 2})
		if _, _, err := s.c.GroupByName(context.Background(), "mHero"); err != nil {
			t.Fatal(err)
		}
		if n := len(s.srv.Requests()); n != 3 {
			t.Fatalf("%d requests, want 3", n)
		}
	})

	t.Run("Retry-After beyond the cap is returned, and pauses the scope", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) { c.RetryAfterCap = 100 * time.Millisecond })
		s.srv.Inject(rapidprotest.Fault{Path: contactsPath, Status: 429, RetryAfter: 812 * time.Second})
		ctx := context.Background()
		start := time.Now()
		_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: "A", URNs: []string{"tel:+231777123456"}})
		e := wantKind(t, err, rapidpro.KindThrottled)
		if e.RetryAfter != 812*time.Second || e.Status != 429 {
			t.Fatalf("error %+v, want 429 with RetryAfter 812s", e)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("took %v: the long Retry-After was slept on", took)
		}
		// The contacts scope stays paused without sending anything…
		_, err = s.c.UpdateContact(ctx, "5e1c9a55-0c6b-4d0e-9a8e-21a3f4b7c9d2", rapidpro.ContactWrite{Name: "B"})
		if e := wantKind(t, err, rapidpro.KindThrottled); e.RetryAfter < 800*time.Second || e.Status != 0 {
			t.Fatalf("second call %+v: want the remaining pause, not sent", e)
		}
		if n := len(s.srv.Requests()); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
		// …while the v2 scope is unaffected.
		if _, err := s.c.Workspace(ctx); err != nil {
			t.Fatal(err)
		}
		if len(s.srv.Contacts()) != 0 {
			t.Fatal("a throttled create committed")
		}
	})

	t.Run("the emulator's own rate limit", func(t *testing.T) {
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		s := newSetup(t, rapidprotest.Options{RateLimit: 2, RateWindow: time.Hour, Now: clock},
			func(c *rapidpro.Config) { c.RetryAfterCap = 100 * time.Millisecond })
		ctx := context.Background()
		for range 2 {
			if _, err := s.c.Workspace(ctx); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.c.Workspace(ctx)
		if e := wantKind(t, err, rapidpro.KindThrottled); e.RetryAfter != time.Hour {
			t.Fatalf("RetryAfter = %v, want 1h", e.RetryAfter)
		}
		// contacts.json has its own budget on the server (and on the client).
		if err := s.c.Contacts(ctx, rapidpro.ContactQuery{}, func(rapidpro.Contact) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the client's token bucket paces each scope", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) { c.RatePerHour = 36000 }) // one per 100ms
		ctx := context.Background()
		start := time.Now()
		for range 3 {
			if _, err := s.c.Workspace(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(start); took < 190*time.Millisecond {
			t.Fatalf("3 calls took %v, want ≥ 200ms at 10/s", took)
		}
	})

	t.Run("cancelling the context ends a wait for the bucket", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) { c.RatePerHour = 1 })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if _, err := s.c.Workspace(ctx); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := s.c.Workspace(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		wantKind(t, err, rapidpro.KindTransport)
	})
}

func TestServerErrors(t *testing.T) {
	t.Run("500 on update is retried", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		c := s.srv.AddContact(rapidpro.Contact{Name: "A", URNs: []string{"tel:+231777123456"}})
		s.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: contactsPath, Status: 500})
		got, err := s.c.UpdateContact(context.Background(), c.UUID, rapidpro.ContactWrite{Name: "B"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "B" || len(requests(s.srv, http.MethodPost, contactsPath)) != 2 {
			t.Fatalf("got %+v after %d posts", got, len(requests(s.srv, http.MethodPost, contactsPath)))
		}
	})

	t.Run("502 and 504 on a read are retried, then given up", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) { c.RetryMax = 2 })
		s.srv.Inject(rapidprotest.Fault{Status: 502})
		s.srv.Inject(rapidprotest.Fault{Status: 504})
		if _, err := s.c.Workspace(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.srv.Inject(rapidprotest.Fault{Status: 502, Times: 3})
		_, err := s.c.Workspace(context.Background())
		if e := wantKind(t, err, rapidpro.KindServer); e.Status != 502 {
			t.Fatalf("error %+v", e)
		}
		if n := len(s.srv.Requests()); n != 6 {
			t.Fatalf("%d requests, want 3 + 3", n)
		}
	})

	t.Run("400 is never retried", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		_, err := s.c.UpsertContact(context.Background(), "tel:+231777123456", rapidpro.ContactWrite{Fields: map[string]*string{"nope": ptr("1")}})
		wantKind(t, err, rapidpro.KindUnknownField)
		if n := len(s.srv.Requests()); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
}

// TestCreateNeverDuplicates covers creates whose answer is lost or a 5xx:
// the client never repeats the POST, returns the contact if it committed,
// and otherwise an error the caller may retry on.
func TestCreateNeverDuplicates(t *testing.T) {
	tests := []struct {
		name      string
		fault     rapidprotest.Fault
		committed bool
		kind      rapidpro.ErrorKind
	}{
		{"500 after commit", rapidprotest.Fault{Status: 500, AfterCommit: true}, true, 0},
		{"500 before commit", rapidprotest.Fault{Status: 500}, false, rapidpro.KindServer},
		{"502 after commit", rapidprotest.Fault{Status: 502, AfterCommit: true}, true, 0},
		{"dropped after commit", rapidprotest.Fault{Drop: true, AfterCommit: true}, true, 0},
		{"dropped before commit", rapidprotest.Fault{Drop: true}, false, rapidpro.KindTransport},
		{"429 is retried", rapidprotest.Fault{Status: 429}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, rapidprotest.Options{})
			tt.fault.Method, tt.fault.Path = http.MethodPost, contactsPath
			s.srv.Inject(tt.fault)
			w := rapidpro.ContactWrite{Name: "Provider One", URNs: []string{"tel:+231777123456"}}

			got, err := s.c.CreateContact(context.Background(), w)
			if tt.kind != 0 {
				wantKind(t, err, tt.kind)
				// The caller's retry.
				if got, err = s.c.CreateContact(context.Background(), w); err != nil {
					t.Fatalf("retry: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			all := s.srv.Contacts()
			if len(all) != 1 || all[0].UUID != got.UUID || got.Name != "Provider One" {
				t.Fatalf("emulator holds %d contacts (%+v), client got %+v", len(all), all, got)
			}
			if tt.committed {
				if n := len(requests(s.srv, http.MethodPost, contactsPath)); n != 1 {
					t.Fatalf("%d POSTs: a committed create was repeated", n)
				}
				if n := len(requests(s.srv, http.MethodGet, contactsPath)); n != 1 {
					t.Fatalf("%d lookups, want 1", n)
				}
			}
		})
	}

	t.Run("the caller's deadline passes after the create committed", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		s.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: contactsPath, AfterCommit: true, Delay: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		got, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: "Slow", URNs: []string{"tel:+231777123456"}})
		if err != nil {
			t.Fatal(err)
		}
		if all := s.srv.Contacts(); len(all) != 1 || all[0].UUID != got.UUID {
			t.Fatalf("emulator holds %+v, client got %+v", all, got)
		}
	})

	t.Run("a create without URNs cannot be reconciled", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		s.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: contactsPath, Status: 500, AfterCommit: true})
		_, err := s.c.CreateContact(context.Background(), rapidpro.ContactWrite{Name: "No Phone"})
		wantKind(t, err, rapidpro.KindServer)
		if n := len(s.srv.Requests()); n != 1 {
			t.Fatalf("%d requests, want the POST only", n)
		}
	})
}

func TestGroupsAndFields(t *testing.T) {
	ctx := context.Background()

	t.Run("EnsureGroup creates once, then finds", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		g, err := s.c.EnsureGroup(ctx, "mHero")
		if err != nil || g.UUID == "" || g.Name != "mHero" || g.Query != "" {
			t.Fatalf("EnsureGroup = %+v, %v", g, err)
		}
		again, err := s.c.EnsureGroup(ctx, "MHERO")
		if err != nil || again.UUID != g.UUID {
			t.Fatalf("second EnsureGroup = %+v, %v", again, err)
		}
		if n := len(requests(s.srv, http.MethodPost, "/api/v2/groups.json")); n != 1 {
			t.Fatalf("%d creates, want 1", n)
		}
	})

	t.Run("EnsureGroup after losing a creation race", func(t *testing.T) {
		var srv *rapidprotest.Server
		var once sync.Once
		// Another process creates the group between our GET and our POST.
		racer := roundTripper(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "groups.json") {
				once.Do(func() { srv.AddGroup("mHero") })
			}
			return resp, err
		})
		s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) { c.HTTPClient = &http.Client{Transport: racer} })
		srv = s.srv
		g, err := s.c.EnsureGroup(ctx, "mHero")
		if err != nil || g.UUID == "" {
			t.Fatalf("EnsureGroup = %+v, %v", g, err)
		}
		if n := len(requests(s.srv, http.MethodGet, "/api/v2/groups.json")); n != 2 {
			t.Fatalf("%d lookups, want 2", n)
		}
	})

	t.Run("EnsureGroup after a 500 that committed", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{})
		s.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/groups.json", Status: 500, AfterCommit: true})
		g, err := s.c.EnsureGroup(ctx, "mHero")
		if err != nil || g.UUID == "" {
			t.Fatalf("EnsureGroup = %+v, %v", g, err)
		}
		if n := len(requests(s.srv, http.MethodPost, "/api/v2/groups.json")); n != 1 {
			t.Fatalf("%d creates, want 1", n)
		}
	})

	t.Run("fields", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{PageSize: 2})
		for _, name := range []string{"Global ID", "Facility Code", "Cadre"} {
			f, err := s.c.CreateField(ctx, name, "text")
			if err != nil {
				t.Fatal(err)
			}
			if f.Key != rapidpro.FieldKey(name) || f.Name != name || f.Type != "text" {
				t.Fatalf("created %+v", f)
			}
		}
		_, err := s.c.CreateField(ctx, "facility code", "text")
		if e := wantKind(t, err, rapidpro.KindValidation); len(e.Fields["name"]) == 0 {
			t.Fatalf("duplicate name: %+v", e)
		}
		fields, err := s.c.Fields(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, f := range fields {
			keys = append(keys, f.Key)
		}
		if !slices.Equal(keys, []string{"cadre", "facility_code", "global_id"}) { // newest first
			t.Fatalf("keys %v (over two pages)", keys)
		}
	})

	t.Run("workspace", func(t *testing.T) {
		s := newSetup(t, rapidprotest.Options{Country: "LR"})
		ws, err := s.c.Workspace(ctx)
		if err != nil || ws.UUID == "" || ws.Country != "LR" || ws.Timezone == "" {
			t.Fatalf("Workspace = %+v, %v", ws, err)
		}
	})
}

func TestFieldKey(t *testing.T) {
	tests := map[string]string{
		"Facility Code":      "facility_code",
		"Facility-Code":      "facility_code",
		"  Global   ID  ":    "global_id",
		"globalId":           "globalid",
		"District 2":         "district_2",
		"123 Start":          "123_start",
		"Ünïcode Name":       "n_code_name",
		"---":                "",
		"Cadre / Speciality": "cadre_speciality",
	}
	for name, want := range tests {
		if got := rapidpro.FieldKey(name); got != want {
			t.Errorf("FieldKey(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestContactAction(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, rapidprotest.Options{})
	s.srv.AddGroup("mHero")
	a := s.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777000001"}})
	b := s.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777000002"}})

	if err := s.c.ContactAction(ctx, "add", []string{a.UUID, "tel:+231777000002"}, "mhero"); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.srv.Contacts() {
		if len(c.Groups) != 1 {
			t.Fatalf("contact %s groups %v after add", c.UUID, c.Groups)
		}
	}

	before := len(s.srv.Requests())
	for _, n := range []int{0, 101} {
		list := make([]string, n)
		for i := range list {
			list[i] = a.UUID
		}
		if err := s.c.ContactAction(ctx, "remove", list, "mHero"); err == nil {
			t.Fatalf("%d contacts accepted", n)
		}
	}
	if len(s.srv.Requests()) != before {
		t.Fatal("an invalid chunk was sent")
	}

	err := s.c.ContactAction(ctx, "remove", []string{a.UUID, "5e1c9a55-0c6b-4d0e-9a8e-21a3f4b7c9d2", b.UUID}, "mHero")
	if e := wantKind(t, err, rapidpro.KindValidation); !strings.Contains(e.Fields["contacts"][0], "No such object") {
		t.Fatalf("error %+v", e)
	}
	for _, c := range s.srv.Contacts() {
		if len(c.Groups) != 1 {
			t.Fatalf("a failed action changed contact %s", c.UUID)
		}
	}
}

// TestTokenNeverInErrors collects the errors of every failure path.
func TestTokenNeverInErrors(t *testing.T) {
	s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) {
		c.RetryMax = 1
		c.RetryAfterCap = 10 * time.Millisecond
	})
	ctx := context.Background()
	var errs []error
	collect := func(_ any, err error) { errs = append(errs, err) }

	s.srv.Inject(rapidprotest.Fault{Status: 500, Times: 2})
	collect(s.c.Workspace(ctx))
	s.srv.Inject(rapidprotest.Fault{Drop: true, Times: 2})
	collect(s.c.Workspace(ctx))
	s.srv.Inject(rapidprotest.Fault{Status: 429, RetryAfter: time.Minute})
	collect(s.c.Workspace(ctx))
	collect(s.c.CreateContact(ctx, rapidpro.ContactWrite{URNs: []string{"tel:12"}}))
	collect(s.c.UpdateContact(ctx, "not-a-uuid", rapidpro.ContactWrite{Name: "X"}))

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c, err := rapidpro.New(rapidpro.Config{BaseURL: dead.URL, Token: token, RetryMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	collect(c.Workspace(ctx))

	for i, err := range errs {
		if err == nil {
			t.Fatalf("call %d succeeded", i)
		}
		if strings.Contains(err.Error(), token) || strings.Contains(fmt.Sprintf("%+v", err), token) {
			t.Fatalf("token in error %d: %v", i, err)
		}
	}
	wantKind(t, errs[len(errs)-1], rapidpro.KindTransport)
}

func TestNextPageMustStayOnHost(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		fmt.Fprint(w, `{"next": "https://elsewhere.example/api/v2/contacts.json?cursor=abc", "previous": null, "results": []}`)
	}))
	defer srv.Close()
	c, err := rapidpro.New(rapidpro.Config{BaseURL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Contacts(context.Background(), rapidpro.ContactQuery{}, func(rapidpro.Contact) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "elsewhere.example") || hits != 1 {
		t.Fatalf("err = %v after %d requests", err, hits)
	}
}

func TestContactDecodesOddValues(t *testing.T) {
	var c rapidpro.Contact
	err := json.Unmarshal([]byte(`{"uuid": "u", "name": null, "language": null, "urns": [], "groups": [],
		"fields": {"a": "x", "b": null, "c": 12.5}, "status": "active",
		"created_on": "2024-05-01T06:20:06.123456Z", "modified_on": "2024-05-01T06:20:06.123456Z"}`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "" || value(c.Fields["a"]) != "x" || c.Fields["b"] != nil || value(c.Fields["c"]) != "12.5" ||
		c.CreatedOn.Nanosecond() != 123456000 {
		t.Fatalf("decoded %+v", c)
	}
}

func TestContactWriteOmitsUnsetParts(t *testing.T) {
	tests := []struct {
		w    rapidpro.ContactWrite
		want string
	}{
		{rapidpro.ContactWrite{}, `{}`},
		{rapidpro.ContactWrite{URNs: []string{}, Groups: []string{}}, `{"groups":[],"urns":[]}`},
		{rapidpro.ContactWrite{Name: "A", Fields: map[string]*string{"x": nil, "y": ptr("1")}}, `{"fields":{"x":null,"y":"1"},"name":"A"}`},
		{rapidpro.ContactWrite{Language: "fra", Fields: map[string]*string{}}, `{"language":"fra"}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.w)
		if err != nil || string(got) != tt.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tt.w, got, err, tt.want)
		}
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRedirectIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("https://elsewhere.example/", http.StatusMovedPermanently))
	defer srv.Close()
	c, err := rapidpro.New(rapidpro.Config{BaseURL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateContact(context.Background(), rapidpro.ContactWrite{Name: "A"})
	if e := wantKind(t, err, rapidpro.KindUnknown); e.Status != http.StatusMovedPermanently {
		t.Fatalf("error %+v", e)
	}
}

// The rate hooks hear each Retry-After RapidPro answers and each wait for
// the scope's budget, for metrics.
func TestRateHooks(t *testing.T) {
	var afters []time.Duration
	var waited time.Duration
	s := newSetup(t, rapidprotest.Options{}, func(c *rapidpro.Config) {
		c.RetryAfterCap = 100 * time.Millisecond
		c.RatePerHour = 3600 * 50 // one request every 20 ms
		c.OnRetryAfter = func(scope string, d time.Duration) {
			if scope == "v2.contacts" {
				afters = append(afters, d)
			}
		}
		c.OnWait = func(_ string, d time.Duration) { waited += d }
	})
	s.srv.Inject(rapidprotest.Fault{Path: contactsPath, Status: 429, RetryAfter: 812 * time.Second})
	ctx := context.Background()
	_, err := s.c.CreateContact(ctx, rapidpro.ContactWrite{Name: "A", URNs: []string{"tel:+231777123456"}})
	wantKind(t, err, rapidpro.KindThrottled)
	if len(afters) != 1 || afters[0] != 812*time.Second {
		t.Fatalf("Retry-After heard %v, want [812s]", afters)
	}
	for range 3 { // paced by the budget: the calls after the first wait
		if _, _, err := s.c.GroupByName(ctx, "mHero"); err != nil {
			t.Fatal(err)
		}
	}
	if waited < 10*time.Millisecond {
		t.Fatalf("waits heard %v, want the budget's pacing", waited)
	}
}
