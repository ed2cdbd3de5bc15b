package csd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

// hierarchy is a generated document with its organizations and facilities.
func hierarchy(t testing.TB, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := csdtest.Generate(&b, n, csdtest.GenerateOptions{Seed: 42, Start: genStart, Hierarchy: true}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pullEntities collects the ids of a whole facility or organization pull.
func pullEntities(t *testing.T, c *csd.Client, kind csd.EntityKind, q csd.EntityQuery) ([]string, csd.PullStats, error) {
	t.Helper()
	pull := c.Facilities
	if kind == csd.KindOrganization {
		pull = c.Organizations
	}
	var ids []string
	stats, err := pull(context.Background(), q, func(e *csd.Entity) error {
		if e.Kind != kind {
			t.Errorf("%s %s delivered by the %s pull", e.Kind, e.EntityID, kind)
		}
		ids = append(ids, e.EntityID)
		return nil
	})
	return ids, stats, err
}

func generatedOrganizations() []string {
	ids := []string{csdtest.GeneratedCountryID}
	for d := range csdtest.GeneratedDistricts {
		ids = append(ids, csdtest.GeneratedDistrictID(d))
	}
	for c := range csdtest.GeneratedChiefdoms {
		ids = append(ids, csdtest.GeneratedChiefdomID(c))
	}
	return ids
}

func generatedFacilities() []string {
	var ids []string
	for k := range csdtest.GeneratedFacilities {
		ids = append(ids, csdtest.GeneratedFacilityID(k))
	}
	return ids
}

func TestClientEntitiesPageThroughEveryEntityOnce(t *testing.T) {
	s := startOIM(t, hierarchy(t, 30), csdtest.Options{})
	tests := []struct {
		kind     csd.EntityKind
		pageSize int
		want     []string
		pages    int
	}{
		// 50 facilities: five full pages, then an empty one.
		{csd.KindFacility, 10, generatedFacilities(), 6},
		{csd.KindFacility, 15, generatedFacilities(), 4},
		{csd.KindFacility, 0, generatedFacilities(), 1},
		// 17 organizations.
		{csd.KindOrganization, 5, generatedOrganizations(), 4},
		{csd.KindOrganization, 17, generatedOrganizations(), 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s by %d", tt.kind, tt.pageSize), func(t *testing.T) {
			c := newClient(s)
			c.PageSize = tt.pageSize
			ids, stats, err := pullEntities(t, c, tt.kind, csd.EntityQuery{})
			if err != nil {
				t.Fatal(err)
			}
			want := csd.PullStats{Pages: tt.pages, Requests: tt.pages, Entities: len(tt.want), Stop: csd.StopShortPage}
			if stats != want || !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("stats %+v, ids %q\nwant %+v, %q", stats, ids, want, tt.want)
			}
		})
	}
}

// entityDates has facilities and organizations updated on consecutive days,
// one without a record, and a provider that a facility pull must not see.
const entityDates = `<CSD xmlns="urn:ihe:iti:csd:2013">
<organizationDirectory>
  <organization entityID="o1"><record updated="2024-01-01T00:00:00Z" status="Active"/></organization>
  <organization entityID="o2"><record updated="2024-01-03T00:00:00Z" status="Active"/></organization>
</organizationDirectory>
<facilityDirectory>
  <facility entityID="f1"><record updated="2024-01-01T00:00:00Z" status="Active"/></facility>
  <facility entityID="f2"><record updated="2024-01-02T00:00:00Z" status="Active"/></facility>
  <facility entityID="f3"><record updated="2024-01-03T00:00:00Z" status="Active"/></facility>
  <facility entityID="f4"/>
</facilityDirectory>
<providerDirectory><provider entityID="p1"><record updated="2024-01-05T00:00:00Z" status="Active"/></provider></providerDirectory>
</CSD>`

func TestClientEntitiesUpdatedSince(t *testing.T) {
	s := startOIM(t, []byte(entityDates), csdtest.Options{Document: "Facilities"})
	c := newClient(s)
	c.Document, c.PageSize = "Facilities", 1
	day := func(d int) time.Time { return time.Date(2024, 1, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		kind  csd.EntityKind
		since time.Time
		want  []string
	}{
		{csd.KindFacility, time.Time{}, []string{"f1", "f2", "f3", "f4"}},
		{csd.KindFacility, day(2), []string{"f2", "f3"}},
		{csd.KindFacility, day(4), nil},
		{csd.KindOrganization, day(2).In(time.FixedZone("WAT", 3600)), []string{"o2"}},
	}
	for _, tt := range tests {
		ids, stats, err := pullEntities(t, c, tt.kind, csd.EntityQuery{UpdatedSince: tt.since})
		if err != nil || !reflect.DeepEqual(ids, tt.want) || stats.Entities != len(tt.want) || stats.Providers != 0 {
			t.Errorf("%s since %v: ids %q, stats %+v, err %v; want %q", tt.kind, tt.since, ids, stats, err, tt.want)
		}
	}
}

// TestClientEntitiesRequestBody pins what OpenInfoMan receives.
func TestClientEntitiesRequestBody(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.URL.Path+" "+b.String())
		fmt.Fprint(w, `<CSD xmlns="urn:ihe:iti:csd:2013"><organizationDirectory/><facilityDirectory/></CSD>`)
	}))
	defer srv.Close()
	c := &csd.Client{BaseURL: srv.URL, Document: "Sierra Leone", PageSize: 20}
	since := time.Date(2024, 4, 30, 8, 20, 0, 0, time.FixedZone("CEST", 2*3600))
	if _, err := c.Facilities(context.Background(), csd.EntityQuery{UpdatedSince: since}, func(*csd.Entity) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Organizations(context.Background(), csd.EntityQuery{}, func(*csd.Entity) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/CSD/csr/Sierra Leone/careServicesRequest/urn:ihe:iti:csd:2014:stored-function:facility-search " +
			`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:record updated="2024-04-30T06:20:00Z"/><csd:start>1</csd:start><csd:max>20</csd:max></csd:requestParams>`,
		"/CSD/csr/Sierra Leone/careServicesRequest/urn:ihe:iti:csd:2014:stored-function:organization-search " +
			`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:start>1</csd:start><csd:max>20</csd:max></csd:requestParams>`,
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %q\nwant %q", got, want)
	}
}

// TestClientEntitiesStopRules runs the stop rules, retries and errors of
// Providers on facility and organization pulls: they share one pull.
func TestClientEntitiesStopRules(t *testing.T) {
	doc := hierarchy(t, 0)
	tests := []struct {
		name      string
		kind      csd.EntityKind
		opts      csdtest.Options
		setup     func(s *csdtest.Server, c *csd.Client)
		wantErr   string
		wantIs    error
		wantStats csd.PullStats
	}{
		{
			name: "paging ignored", kind: csd.KindFacility, opts: csdtest.Options{IgnorePaging: true},
			wantStats: csd.PullStats{Pages: 1, Requests: 1, Entities: 50, Stop: csd.StopUnpaged},
		},
		{
			name: "start ignored", kind: csd.KindOrganization, opts: csdtest.Options{IgnoreStart: true},
			wantStats: csd.PullStats{Pages: 2, Requests: 2, Entities: 10, Repeats: 10, Stop: csd.StopRepeated},
		},
		{
			name: "page bound", kind: csd.KindFacility,
			setup:     func(_ *csdtest.Server, c *csd.Client) { c.MaxPages = 3 },
			wantErr:   "csd: page 4 (start 31): more than 3 pages (Client.MaxPages) of 10 facilities, every one full: pull bound exceeded",
			wantIs:    csd.ErrPullBound,
			wantStats: csd.PullStats{Pages: 3, Requests: 3, Entities: 30},
		},
		{
			name: "entity bound on an unpaged answer", kind: csd.KindOrganization, opts: csdtest.Options{IgnorePaging: true},
			setup:     func(_ *csdtest.Server, c *csd.Client) { c.MaxPages = 1 },
			wantErr:   "more than 10 organizations (Client.MaxPages 1 × PageSize 10): pull bound exceeded",
			wantIs:    csd.ErrPullBound,
			wantStats: csd.PullStats{Pages: 1, Requests: 1, Entities: 10},
		},
		{
			name: "retried once", kind: csd.KindFacility,
			setup:     func(s *csdtest.Server, _ *csd.Client) { s.FailNext(http.StatusServiceUnavailable, 1) },
			wantStats: csd.PullStats{Pages: 6, Requests: 7, Entities: 50, Stop: csd.StopShortPage},
		},
		{
			name: "status error", kind: csd.KindOrganization,
			setup:     func(s *csdtest.Server, c *csd.Client) { c.RetryMax = -1; s.FailNext(http.StatusUnprocessableEntity, 1) },
			wantErr:   "csd: page 1 (start 1): OpenInfoMan answered 422 Unprocessable Entity",
			wantStats: csd.PullStats{Pages: 1, Requests: 1},
		},
		{
			name: "unknown document", kind: csd.KindFacility,
			setup:     func(_ *csdtest.Server, c *csd.Client) { c.Document = "Nope" },
			wantErr:   `csd: page 1 (start 1): document "Nope" is unknown to OpenInfoMan (empty response)`,
			wantIs:    csd.ErrUnknownDocument,
			wantStats: csd.PullStats{Pages: 1, Requests: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startOIM(t, doc, tt.opts)
			c := newClient(s)
			c.PageSize = 10
			if tt.setup != nil {
				tt.setup(s, c)
			}
			ids, stats, err := pullEntities(t, c, tt.kind, csd.EntityQuery{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want %q", err, tt.wantErr)
			case tt.wantIs != nil && !errors.Is(err, tt.wantIs):
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if stats != tt.wantStats || len(ids) != tt.wantStats.Entities || s.Requests() != tt.wantStats.Requests {
				t.Errorf("stats %+v, %d ids, server saw %d requests; want %+v", stats, len(ids), s.Requests(), tt.wantStats)
			}
		})
	}
}

// TestClientEntitiesDedupe: a facility inserted at the front between two
// pages shifts the second page, which repeats one facility.
func TestClientEntitiesDedupe(t *testing.T) {
	doc := hierarchy(t, 0)
	s := startOIM(t, doc, csdtest.Options{})
	c := newClient(s)
	c.PageSize = 20
	shifted := bytes.Replace(doc, []byte("<facilityDirectory>"), []byte(`<facilityDirectory><facility entityID="urn:uuid:inserted"/>`), 1)
	n := 0
	stats, err := c.Facilities(context.Background(), csd.EntityQuery{}, func(*csd.Entity) error {
		if n++; n == 1 {
			return s.SetDocument(shifted)
		}
		return nil
	})
	if err != nil || stats.Repeats != 1 || stats.Entities != 50 || n != 50 {
		t.Errorf("stats %+v, %d delivered, err %v", stats, n, err)
	}
}

func TestClientEntitiesCallbackError(t *testing.T) {
	s := startOIM(t, hierarchy(t, 0), csdtest.Options{})
	stop := errors.New("stop")
	_, err := newClient(s).Organizations(context.Background(), csd.EntityQuery{}, func(e *csd.Entity) error {
		if e.EntityID == csdtest.GeneratedDistrictID(1) {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), fmt.Sprintf("csd: page 1 (start 1): csd: organization %q at line ", csdtest.GeneratedDistrictID(1))) {
		t.Errorf("err = %v", err)
	}
}
