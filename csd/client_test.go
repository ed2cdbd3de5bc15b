package csd_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

var genStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func generated(t testing.TB, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := csdtest.Generate(&b, n, csdtest.GenerateOptions{Seed: 42, Start: genStart, Step: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func startOIM(t *testing.T, doc []byte, opts csdtest.Options) *csdtest.Server {
	t.Helper()
	s, err := csdtest.New(doc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// newClient has retries without real waiting, so tests do not sleep.
func newClient(s *csdtest.Server) *csd.Client {
	return &csd.Client{BaseURL: s.URL(), Document: "Providers", RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond}
}

// pull collects the ids of a whole pull.
func pull(t *testing.T, c *csd.Client, q csd.ProviderQuery) ([]string, csd.PullStats, error) {
	t.Helper()
	var ids []string
	stats, err := c.Providers(context.Background(), q, func(p *csd.Provider) error {
		ids = append(ids, p.EntityID)
		return nil
	})
	return ids, stats, err
}

func TestClientPagesThroughEveryProviderOnce(t *testing.T) {
	const n = 2500
	s := startOIM(t, generated(t, n), csdtest.Options{})
	c := newClient(s)
	c.PageSize = 500
	ids, stats, err := pull(t, c, csd.ProviderQuery{})
	if err != nil {
		t.Fatal(err)
	}
	// Five full pages, then an empty sixth one ends the pull.
	want := csd.PullStats{Pages: 6, Requests: 6, Providers: n, Stop: csd.StopShortPage}
	if stats != want || s.Requests() != 6 {
		t.Errorf("stats = %+v, server saw %d requests; want %+v", stats, s.Requests(), want)
	}
	if len(ids) != n {
		t.Fatalf("%d providers, want %d", len(ids), n)
	}
	for i, id := range ids {
		if id != csdtest.GeneratedEntityID(42, i) {
			t.Fatalf("provider %d is %s, want %s (document order, each once)", i, id, csdtest.GeneratedEntityID(42, i))
		}
	}
}

func TestClientShortLastPage(t *testing.T) {
	s := startOIM(t, generated(t, 1203), csdtest.Options{})
	c := newClient(s)
	c.PageSize = 400
	ids, stats, err := pull(t, c, csd.ProviderQuery{})
	if err != nil || len(ids) != 1203 || stats.Pages != 4 || s.Requests() != 4 {
		t.Errorf("%d providers, stats %+v, err %v", len(ids), stats, err)
	}
}

func TestClientUpdatedFilter(t *testing.T) {
	const n = 1000
	s := startOIM(t, generated(t, n), csdtest.Options{})
	c := newClient(s)
	c.PageSize = 100
	// Provider i was updated at genStart + i h + 30 min, so from genStart +
	// 700 h on, providers 700…999 remain: 300 of them.
	ids, stats, err := pull(t, c, csd.ProviderQuery{UpdatedSince: genStart.Add(700 * time.Hour).In(time.FixedZone("WAT", 3600))})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 300 || ids[0] != csdtest.GeneratedEntityID(42, 700) || ids[299] != csdtest.GeneratedEntityID(42, 999) {
		t.Errorf("%d providers from %s", len(ids), ids[0])
	}
	if stats.Pages != 4 {
		t.Errorf("Pages = %d, want 4 (3 full and an empty one)", stats.Pages)
	}
}

// TestClientRequestBody pins what OpenInfoMan receives.
func TestClientRequestBody(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+b.String())
		fmt.Fprint(w, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory/></CSD>`)
	}))
	defer srv.Close()
	c := &csd.Client{BaseURL: srv.URL + "/", Document: "Providers", PageSize: 2}
	since := time.Date(2024, 4, 30, 8, 20, 0, 999, time.FixedZone("CEST", 2*3600))
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{UpdatedSince: since}, func(*csd.Provider) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := "POST /CSD/csr/Providers/careServicesRequest/urn:ihe:iti:csd:2014:stored-function:provider-search text/xml " +
		`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:record updated="2024-04-30T06:20:00Z"/><csd:start>1</csd:start><csd:max>2</csd:max></csd:requestParams>`
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != want {
		t.Errorf("requests = %q\nwant [%q]", got, want)
	}
}

func TestClientRepeatsAcrossPages(t *testing.T) {
	const n = 10
	s := startOIM(t, generated(t, n), csdtest.Options{})
	c := newClient(s)
	c.PageSize = 4
	// While page 1 is read, a provider is inserted at the front of the
	// document: page 2 then starts one provider early and repeats the last
	// of page 1.
	shifted := bytes.Replace(generated(t, n), []byte("<providerDirectory>"), []byte(`<providerDirectory><provider entityID="urn:uuid:inserted"/>`), 1)
	var ids []string
	stats, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(p *csd.Provider) error {
		if len(ids) == 0 {
			if err := s.SetDocument(shifted); err != nil {
				return err
			}
		}
		ids = append(ids, p.EntityID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Page 1: 0-3; page 2 (start 5): 3-6 with 3 repeated; page 3 (start 9): 7-9.
	if stats.Repeats != 1 || stats.Providers != n || len(ids) != n || stats.Pages != 3 {
		t.Errorf("stats = %+v, ids %d", stats, len(ids))
	}
}

func TestClientDeliversIDsDifferingOnlyInCase(t *testing.T) {
	doc := `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID="urn:uuid:ABC"/><provider entityID="urn:uuid:abc"/><provider/><provider/></providerDirectory></CSD>`
	s := startOIM(t, []byte(doc), csdtest.Options{})
	ids, stats, err := pull(t, newClient(s), csd.ProviderQuery{})
	if err != nil || len(ids) != 4 || stats.Repeats != 0 {
		t.Errorf("ids %q, stats %+v, err %v", ids, stats, err)
	}
}

func TestClientErrors(t *testing.T) {
	const password = "pa55-w0rd-never-shown"
	badDate := `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID="x"><record updated="0000-00-00T00:00:00" status="Active"/></provider></providerDirectory></CSD>`
	tests := []struct {
		name     string
		doc      []byte
		opts     csdtest.Options
		setup    func(s *csdtest.Server, c *csd.Client)
		query    csd.ProviderQuery
		want     []string
		wantIs   error
		requests int
	}{
		{
			name:     "stored record@updated that is not a date",
			doc:      []byte(badDate),
			query:    csd.ProviderQuery{UpdatedSince: genStart},
			want:     []string{"csd: page 1 (start 1): OpenInfoMan answered 422 Unprocessable Entity", "Error executing xquery"},
			requests: 1,
		},
		{
			name:     "unknown document",
			doc:      generated(t, 3),
			setup:    func(_ *csdtest.Server, c *csd.Client) { c.Document = "Nope" },
			want:     []string{`csd: page 1 (start 1): document "Nope" is unknown to OpenInfoMan (empty response)`},
			wantIs:   csd.ErrUnknownDocument,
			requests: 1,
		},
		{
			name:     "wrong password",
			doc:      generated(t, 3),
			opts:     csdtest.Options{Username: "oim", Password: "right"},
			setup:    func(_ *csdtest.Server, c *csd.Client) { c.Username, c.Password = "oim", password },
			want:     []string{"csd: page 1 (start 1): OpenInfoMan answered 401 Unauthorized (check the OpenInfoMan username and password)"},
			requests: 1,
		},
		{
			name:     "no credentials",
			doc:      generated(t, 3),
			opts:     csdtest.Options{Username: "oim", Password: password},
			want:     []string{"401 Unauthorized"},
			requests: 1,
		},
		{
			name: "500 beyond RetryMax",
			doc:  generated(t, 30),
			setup: func(s *csdtest.Server, c *csd.Client) {
				c.PageSize, c.RetryMax = 10, 2
				s.FailNext(http.StatusInternalServerError, 100)
			},
			want:     []string{"csd: page 1 (start 1): after 3 attempts: OpenInfoMan answered 500 Internal Server Error"},
			requests: 3,
		},
		{
			name: "failure on a later page",
			doc:  generated(t, 30),
			setup: func(s *csdtest.Server, c *csd.Client) {
				c.PageSize, c.RetryMax = 10, -1
				// The first page is served, then every request fails.
				c.HTTPClient = &http.Client{Transport: failAfter(1, s)}
			},
			want:     []string{"csd: page 2 (start 11): OpenInfoMan answered 503 Service Unavailable"},
			requests: 2,
		},
		{
			name:     "not CSD",
			doc:      generated(t, 3),
			setup:    func(s *csdtest.Server, c *csd.Client) { c.HTTPClient = &http.Client{Transport: htmlAnswer{}} },
			want:     []string{"csd: page 1 (start 1): csd: line 1: expected element CSD or provider, found html"},
			requests: 0,
		},
		{
			name:     "body size limit",
			doc:      generated(t, 30),
			setup:    func(_ *csdtest.Server, c *csd.Client) { c.Limits.MaxBytes = 5000 },
			want:     []string{"csd: page 1 (start 1): csd: line ", "body size limit exceeded (more than 5000 bytes)"},
			requests: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startOIM(t, tt.doc, tt.opts)
			c := newClient(s)
			if tt.setup != nil {
				tt.setup(s, c)
			}
			_, _, err := pull(t, c, tt.query)
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q shows the password", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if s.Requests() != tt.requests {
				t.Errorf("server saw %d requests, want %d", s.Requests(), tt.requests)
			}
		})
	}
}

func TestClientBasicAuth(t *testing.T) {
	s := startOIM(t, generated(t, 5), csdtest.Options{Username: "oim", Password: "s3cret"})
	c := newClient(s)
	c.Username, c.Password = "oim", "s3cret"
	ids, _, err := pull(t, c, csd.ProviderQuery{})
	if err != nil || len(ids) != 5 {
		t.Errorf("%d providers, err %v", len(ids), err)
	}
}

func TestClientRetriesOnce(t *testing.T) {
	s := startOIM(t, generated(t, 5), csdtest.Options{})
	s.FailNext(http.StatusServiceUnavailable, 1)
	ids, stats, err := pull(t, newClient(s), csd.ProviderQuery{})
	if err != nil || len(ids) != 5 {
		t.Fatalf("%d providers, err %v", len(ids), err)
	}
	if stats.Requests != 2 || stats.Pages != 1 || s.Requests() != 2 {
		t.Errorf("stats = %+v, server saw %d", stats, s.Requests())
	}
}

func TestClientCallbackErrorStops(t *testing.T) {
	s := startOIM(t, generated(t, 50), csdtest.Options{})
	c := newClient(s)
	c.PageSize = 10
	stop := errors.New("rapidpro is down")
	seen := 0
	_, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(*csd.Provider) error {
		if seen++; seen == 15 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !strings.HasPrefix(err.Error(), "csd: page 2 (start 11): ") || s.Requests() != 2 {
		t.Errorf("err = %v after %d requests", err, s.Requests())
	}
}

func TestClientContextCancelled(t *testing.T) {
	s := startOIM(t, generated(t, 5), csdtest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newClient(s).Providers(ctx, csd.ProviderQuery{}, func(*csd.Provider) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestClientNeedsBaseURLAndDocument(t *testing.T) {
	_, err := (&csd.Client{BaseURL: "http://oim"}).Providers(context.Background(), csd.ProviderQuery{}, nil)
	if err == nil {
		t.Error("no error without a Document")
	}
}

// failAfter lets n requests through to s, then answers 503 itself.
func failAfter(n int, s *csdtest.Server) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if n--; n < 0 {
			s.FailNext(http.StatusServiceUnavailable, 1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// htmlAnswer is a proxy answering 200 with an error page.
type htmlAnswer struct{}

func (htmlAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/html")
	fmt.Fprint(rec, "<html><body>Bad gateway</body></html>")
	return rec.Result(), nil
}

// TestClientPagingAlwaysEnds: a server that ignores paging once made the
// pull loop until the sync timeout.
func TestClientPagingAlwaysEnds(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		opts      csdtest.Options
		pageSize  int
		maxPages  int
		wantErr   string // empty: no error
		wantStats csd.PullStats
		complete  bool
	}{
		{
			name: "paging honoured", n: 25, pageSize: 10,
			wantStats: csd.PullStats{Pages: 3, Requests: 3, Providers: 25, Stop: csd.StopShortPage},
			complete:  true,
		},
		{
			name: "paging ignored: the first page is the whole result", n: 25, pageSize: 10,
			opts:      csdtest.Options{IgnorePaging: true},
			wantStats: csd.PullStats{Pages: 1, Requests: 1, Providers: 25, Stop: csd.StopUnpaged},
			complete:  true,
		},
		{
			name: "paging ignored with exactly one page of matches", n: 10, pageSize: 10,
			opts:      csdtest.Options{IgnorePaging: true},
			wantStats: csd.PullStats{Pages: 2, Requests: 2, Providers: 10, Repeats: 10, Stop: csd.StopRepeated},
		},
		{
			name: "start ignored: the second page repeats the first", n: 25, pageSize: 10,
			opts:      csdtest.Options{IgnoreStart: true},
			wantStats: csd.PullStats{Pages: 2, Requests: 2, Providers: 10, Repeats: 10, Stop: csd.StopRepeated},
		},
		{
			name: "page bound", n: 30, pageSize: 10, maxPages: 2,
			wantErr:   "csd: page 3 (start 21): more than 2 pages (Client.MaxPages) of 10 providers, every one full: pull bound exceeded",
			wantStats: csd.PullStats{Pages: 2, Requests: 2, Providers: 20},
		},
		{
			name: "exactly at the page bound", n: 19, pageSize: 10, maxPages: 2,
			wantStats: csd.PullStats{Pages: 2, Requests: 2, Providers: 19, Stop: csd.StopShortPage},
			complete:  true,
		},
		{
			name: "provider bound on an unpaged answer", n: 25, pageSize: 10, maxPages: 2,
			opts:      csdtest.Options{IgnorePaging: true},
			wantErr:   "more than 20 providers (Client.MaxPages 2 × PageSize 10): pull bound exceeded",
			wantStats: csd.PullStats{Pages: 1, Requests: 1, Providers: 20},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startOIM(t, generated(t, tt.n), tt.opts)
			c := newClient(s)
			c.PageSize, c.MaxPages = tt.pageSize, tt.maxPages
			ids, stats, err := pull(t, c, csd.ProviderQuery{})
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, csd.ErrPullBound)) {
				t.Errorf("error %v, want %q wrapping ErrPullBound", err, tt.wantErr)
			}
			if stats != tt.wantStats || len(ids) != tt.wantStats.Providers || s.Requests() != tt.wantStats.Requests {
				t.Errorf("stats %+v, %d ids, server saw %d requests; want %+v", stats, len(ids), s.Requests(), tt.wantStats)
			}
			if stats.Complete() != tt.complete {
				t.Errorf("Complete() = %v", stats.Complete())
			}
		})
	}
}

// endlessPages answers every page with max fresh providers, as a registry
// growing faster than it is read would.
func endlessPages(w http.ResponseWriter, r *http.Request) {
	var params struct {
		Start int `xml:"start"`
		Max   int `xml:"max"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&params); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprint(w, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>`)
	for i := range params.Max {
		fmt.Fprintf(w, `<provider entityID="p%d"/>`, params.Start+i)
	}
	fmt.Fprint(w, `</providerDirectory></CSD>`)
}

func TestClientDefaultPageBound(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("reads a million providers; the race detector makes that slow")
	}
	srv := httptest.NewServer(http.HandlerFunc(endlessPages))
	defer srv.Close()
	// The default bound is derived from DefaultMaxProviders: 4 full pages
	// of 250,000 and one more for the short last page; a sixth is refused.
	c := &csd.Client{BaseURL: srv.URL, Document: "Providers", PageSize: csd.DefaultMaxProviders / 4}
	var n int
	stats, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(*csd.Provider) error { n++; return nil })
	wantPages := csd.DefaultMaxProviders/c.PageSize + 1
	if !errors.Is(err, csd.ErrPullBound) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d pages", wantPages)) {
		t.Errorf("err = %v", err)
	}
	if stats.Pages != wantPages || n != wantPages*c.PageSize {
		t.Errorf("stats %+v, %d providers", stats, n)
	}
}

func TestClientEntityID(t *testing.T) {
	s := startOIM(t, generated(t, 20), csdtest.Options{})
	want := csdtest.GeneratedEntityID(42, 7)
	ids, stats, err := pull(t, newClient(s), csd.ProviderQuery{EntityID: strings.ToUpper(want)})
	if err != nil || len(ids) != 1 || ids[0] != want || stats.Stop != csd.StopShortPage {
		t.Errorf("ids %q, stats %+v, err %v", ids, stats, err)
	}
	ids, _, err = pull(t, newClient(s), csd.ProviderQuery{EntityID: "urn:uuid:nobody", UpdatedSince: genStart})
	if err != nil || len(ids) != 0 {
		t.Errorf("unknown id: ids %q, err %v", ids, err)
	}
}

func TestClientEntityIDIsEscaped(t *testing.T) {
	var body bytes.Buffer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = body.ReadFrom(r.Body)
		fmt.Fprint(w, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory/></CSD>`)
	}))
	defer srv.Close()
	c := &csd.Client{BaseURL: srv.URL, Document: "Providers", PageSize: 5}
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{EntityID: `a"<&'b`}, func(*csd.Provider) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := `<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:id entityID="a&#34;&lt;&amp;&#39;b"/><csd:start>1</csd:start><csd:max>5</csd:max></csd:requestParams>`
	if body.String() != want {
		t.Errorf("body %s\nwant %s", body.String(), want)
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var followed int
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed++ }))
	defer target.Close()
	tests := []struct {
		name, location, want string
	}{
		{"absolute", target.URL + "/CSD/elsewhere?token=s3cret#frag", "OpenInfoMan answered 307 Temporary Redirect with Location " + target.URL + "/CSD/elsewhere (redirects are not followed; check the OpenInfoMan URL)"},
		{"relative", "/login?next=s3cret", "with Location http://127.0.0.1"},
		{"with user info", "http://oim:s3cret@" + strings.TrimPrefix(target.URL, "http://") + "/x", "with Location " + target.URL + "/x ("},
		{"none", "", "307 Temporary Redirect with no Location"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requests := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests++
				if tt.location != "" {
					w.Header().Set("Location", tt.location)
				}
				w.WriteHeader(http.StatusTemporaryRedirect)
			}))
			defer srv.Close()
			// The caller's client would follow; the pull must not change it.
			caller := &http.Client{}
			c := &csd.Client{BaseURL: srv.URL, Document: "Providers", HTTPClient: caller}
			_, stats, err := pull(t, c, csd.ProviderQuery{})
			var se *csd.StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("err %q shows the query or password", err)
			}
			if requests != 1 || stats.Requests != 1 || followed != 0 {
				t.Errorf("%d requests, stats %+v, %d followed", requests, stats, followed)
			}
			if caller.CheckRedirect != nil || caller.Timeout != 0 {
				t.Error("the caller's client was changed")
			}
		})
	}
}

func TestClientRequestTimeout(t *testing.T) {
	tests := []struct {
		name   string
		client *http.Client
		want   time.Duration
	}{
		{"caller without Timeout gets the default", &http.Client{}, csd.DefaultRequestTimeout},
		{"caller's Timeout is kept", &http.Client{Timeout: 42 * time.Second}, 42 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var left time.Duration
			rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if d, ok := r.Context().Deadline(); ok {
					left = time.Until(d)
				}
				rec := httptest.NewRecorder()
				fmt.Fprint(rec, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory/></CSD>`)
				return rec.Result(), nil
			})
			tt.client.Transport = rt
			c := &csd.Client{BaseURL: "http://oim.invalid", Document: "Providers", HTTPClient: tt.client}
			if _, _, err := pull(t, c, csd.ProviderQuery{}); err != nil {
				t.Fatal(err)
			}
			if left <= tt.want-time.Minute/2 || left > tt.want {
				t.Errorf("request deadline in %v, want about %v", left, tt.want)
			}
		})
	}
}
