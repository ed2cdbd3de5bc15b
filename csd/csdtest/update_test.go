package csdtest_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

const updatePath = "/CSD/csr/Providers/careServicesRequest/update/" + csd.CreateOtherID

// withOtherIDs: P1 has one otherID, P2 none, p3/P3 differ only in case, the
// last provider has no entityID.
const withOtherIDs = `<CSD xmlns="urn:ihe:iti:csd:2013">
<providerDirectory>
<provider entityID="urn:uuid:P1"><otherID code="payroll" assigningAuthorityName="hris">7</otherID><record updated="2024-01-01T00:00:00Z" status="Active"/></provider>
<provider entityID="urn:uuid:P2"><record updated="2024-01-02T00:00:00Z" status="Active"/></provider>
<provider entityID="urn:uuid:p3"/><provider entityID="urn:uuid:P3"/>
<provider><record updated="2024-01-03T00:00:00Z" status="Active"/></provider>
</providerDirectory>
</CSD>`

// answer is the function's answer: the provider and the new otherID's
// position, or an empty providerDirectory.
func answer(entityID string, position int) string {
	dir := "  <providerDirectory>\n  </providerDirectory>\n"
	if position > 0 {
		dir = fmt.Sprintf("  <providerDirectory>\n    <provider entityID=%q>\n      <otherID position=\"%d\"/>\n    </provider>\n  </providerDirectory>\n", entityID, position)
	}
	return `<CSD xmlns="urn:ihe:iti:csd:2013" xmlns:csd="urn:ihe:iti:csd:2013">` + "\n  <organizationDirectory/>\n  <serviceDirectory/>\n  <facilityDirectory/>\n" + dir + "</CSD>\n"
}

func params(children string) string {
	return `<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013">` + children + `</csd:requestParams>`
}

func TestCreateOtherID(t *testing.T) {
	const rp = `<csd:otherID assigningAuthorityName="https://rp.example.org" code="rapidpro_contact_id">uuid-1</csd:otherID>`
	tests := []struct {
		name       string
		path       string // default updatePath
		body       string
		wantStatus int
		wantAnswer string
		// wantChange is the document after the call, as a replacement of
		// one string by another; empty: unchanged.
		from, to string
	}{
		{
			name: "appended after the record", body: params(`<csd:id entityID="urn:uuid:P1"/>` + rp),
			wantStatus: 200, wantAnswer: answer("urn:uuid:P1", 2),
			from: `"2024-01-01T00:00:00Z" status="Active"/></provider>`,
			to:   `"2024-01-01T00:00:00Z" status="Active"/><otherID code="rapidpro_contact_id" assigningAuthorityName="https://rp.example.org">uuid-1</otherID></provider>`,
		},
		{
			name: "route without /update, id in another case, no authority", path: "/CSD/csr/Providers/careServicesRequest/" + csd.CreateOtherID,
			body:       `<requestParams xmlns="urn:ihe:iti:csd:2013"><id entityID="URN:UUID:p2"/><otherID code="c"> v <b>w</b></otherID></requestParams>`,
			wantStatus: 200, wantAnswer: answer("urn:uuid:P2", 1),
			from: `"2024-01-02T00:00:00Z" status="Active"/></provider>`,
			to:   `"2024-01-02T00:00:00Z" status="Active"/><otherID code="c"> v w</otherID></provider>`,
		},
		{
			name: "an empty id matches the provider without one", body: params(`<csd:id entityID=""/>` + rp),
			wantStatus: 200, wantAnswer: answer("", 1),
			from: `"2024-01-03T00:00:00Z" status="Active"/></provider>`,
			to:   `"2024-01-03T00:00:00Z" status="Active"/><otherID code="rapidpro_contact_id" assigningAuthorityName="https://rp.example.org">uuid-1</otherID></provider>`,
		},
		{name: "unknown provider", body: params(`<csd:id entityID="urn:uuid:P9"/>` + rp), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "two providers differing in case", body: params(`<csd:id entityID="urn:uuid:P3"/>` + rp), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "no code", body: params(`<csd:id entityID="urn:uuid:P1"/><csd:otherID assigningAuthorityName="a">v</csd:otherID>`), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "no id", body: params(rp), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "2013 id form", body: params(`<csd:id urn="urn:uuid:P1"/>` + rp), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "children in no namespace are not read", body: `<requestParams><id entityID="urn:uuid:P1"/><otherID code="c">v</otherID></requestParams>`, wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "two otherIDs fail the XQuery", body: params(`<csd:id entityID="urn:uuid:P1"/>` + rp + rp), wantStatus: 422},
		{name: "two otherIDs for no provider do not", body: params(`<csd:id entityID="urn:uuid:P9"/>` + rp + rp), wantStatus: 200, wantAnswer: answer("", 0)},
		{name: "two ids fail the XQuery", body: params(`<csd:id entityID="urn:uuid:P1"/><csd:id entityID="urn:uuid:P2"/>` + rp), wantStatus: 422},
		{name: "malformed", body: `<csd:requestParams`, wantStatus: 400},
		{name: "not requestParams", body: `<csd:careServicesRequest xmlns:csd="urn:ihe:iti:csd:2013"/>`, wantStatus: 400},
		{name: "unknown document", path: "/CSD/csr/Nope/careServicesRequest/update/" + csd.CreateOtherID, body: params(`<csd:id entityID="urn:uuid:P1"/>` + rp), wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, withOtherIDs, csdtest.Options{})
			path := tt.path
			if path == "" {
				path = updatePath
			}
			status, body := post(t, s.URL()+path, tt.body)
			if status != tt.wantStatus || (status == 200 && body != tt.wantAnswer) {
				t.Errorf("got %d %q\nwant %d %q", status, body, tt.wantStatus, tt.wantAnswer)
			}
			want := withOtherIDs
			if tt.from != "" {
				if strings.Count(want, tt.from) != 1 {
					t.Fatalf("%q is not once in the document", tt.from)
				}
				want = strings.Replace(want, tt.from, tt.to, 1)
			}
			if got := getDirectory(t, s); got != want {
				t.Errorf("document\n%s\nwant\n%s", got, want)
			}
			if calls := s.Calls(); len(calls) != 1 || calls[0] != (csdtest.Call{Function: csd.CreateOtherID, Updating: true}) {
				t.Errorf("calls = %+v", calls)
			}
		})
	}
}

// TestCreateOtherIDIsServed: the searches serve the changed provider, with
// its record@updated as it was.
func TestCreateOtherIDIsServed(t *testing.T) {
	doc := `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:providerDirectory>
<csd:provider entityID="urn:uuid:A"><csd:record updated="2024-01-01T00:00:00Z" status="Active"/></csd:provider>
<csd:provider entityID="urn:uuid:B"><csd:record updated="2024-01-02T00:00:00Z" status="Active"/></csd:provider>
</csd:providerDirectory></csd:CSD>`
	s := newServer(t, doc, csdtest.Options{})
	c := &csd.Client{BaseURL: s.URL(), Document: "Providers"}
	for i, v := range []string{"one", "two"} {
		if err := c.AddOtherID(context.Background(), "urn:uuid:A", csd.OtherID{Code: "rapidpro_contact_id", AssigningAuthorityName: "rp", Value: v}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	// The prefixed document gets a prefixed otherID.
	if got := getDirectory(t, s); !strings.Contains(got, `status="Active"/><csd:otherID code="rapidpro_contact_id" assigningAuthorityName="rp">one</csd:otherID><csd:otherID code="rapidpro_contact_id" assigningAuthorityName="rp">two</csd:otherID></csd:provider>`) {
		t.Errorf("document:\n%s", got)
	}
	var got []string
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{UpdatedSince: mustTime("2024-01-02T00:00:00Z")}, func(p *csd.Provider) error {
		got = append(got, p.EntityID)
		return nil
	}); err != nil || !reflect.DeepEqual(got, []string{"urn:uuid:B"}) {
		t.Errorf("updated since the second day: %q, %v", got, err)
	}
	var a *csd.Provider
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{EntityID: "urn:uuid:A"}, func(p *csd.Provider) error { a = p; return nil }); err != nil || a == nil {
		t.Fatal(err)
	}
	want := []csd.OtherID{{Code: "rapidpro_contact_id", AssigningAuthorityName: "rp", Value: "one"}, {Code: "rapidpro_contact_id", AssigningAuthorityName: "rp", Value: "two"}}
	if !reflect.DeepEqual(a.OtherIDs, want) || a.Record.UpdatedRaw != "2024-01-01T00:00:00Z" {
		t.Errorf("provider A = %+v", a)
	}
	// SetDocument drops the changes.
	if err := s.SetDocument([]byte(doc)); err != nil || getDirectory(t, s) != doc {
		t.Errorf("after SetDocument: %v", err)
	}
}

func TestUpdatingRoutesAndCalls(t *testing.T) {
	s := newServer(t, withOtherIDs, csdtest.Options{})
	steps := []struct {
		path   string
		status int
	}{
		{"/CSD/csr/Providers/careServicesRequest/" + csd.ProviderSearch, 200},
		{"/CSD/csr/Providers/careServicesRequest/update/" + csd.ProviderSearch, 404},
		{"/CSD/csr/Providers/careServicesRequest/update/urn:openhie.org:openinfoman-hwr:stored-function:health_worker_delete_otherid", 404},
		{"/CSD/csr/Providers/careServicesRequest/urn:openhie.org:openinfoman:provider_create", 404},
		{updatePath, 503},
		{updatePath, 200},
		{"/CSD/csr/Providers/careServicesRequest/" + csd.FacilitySearch, 200},
	}
	for i, st := range steps {
		if i == 4 {
			s.FailNext(http.StatusServiceUnavailable, 1)
		}
		body := params(`<csd:id entityID="urn:uuid:P2"/><csd:otherID code="c">v</csd:otherID>`)
		if st.status == 200 && st.path != updatePath {
			body = params(``)
		}
		if status, _ := post(t, s.URL()+st.path, body); status != st.status {
			t.Errorf("%s: %d, want %d", st.path, status, st.status)
		}
	}
	want := []csdtest.Call{
		{Function: csd.ProviderSearch},
		{Function: csd.ProviderSearch, Updating: true},
		{Function: "urn:openhie.org:openinfoman-hwr:stored-function:health_worker_delete_otherid", Updating: true},
		{Function: "urn:openhie.org:openinfoman:provider_create"},
		{Function: csd.CreateOtherID, Updating: true},
		{Function: csd.CreateOtherID, Updating: true},
		{Function: csd.FacilitySearch},
	}
	if got := s.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %+v\nwant %+v", got, want)
	}
}

// TestCreateOtherIDConcurrently writes to every provider while others read:
// each write lands once, and the race detector watches the document.
func TestCreateOtherIDConcurrently(t *testing.T) {
	var doc strings.Builder
	doc.WriteString(`<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>`)
	const n = 20
	for i := range n {
		fmt.Fprintf(&doc, `<provider entityID="p%d"><record updated="2024-01-01T00:00:00Z" status="Active"/></provider>`, i)
	}
	doc.WriteString(`</providerDirectory></CSD>`)
	s := newServer(t, doc.String(), csdtest.Options{})
	c := &csd.Client{BaseURL: s.URL(), Document: "Providers", PageSize: 7}
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Add(3)
		go func() {
			defer wg.Done()
			errs <- c.AddOtherID(context.Background(), fmt.Sprintf("p%d", i), csd.OtherID{Code: "c", AssigningAuthorityName: "a", Value: fmt.Sprint(i)})
		}()
		go func() {
			defer wg.Done()
			_, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(*csd.Provider) error { return nil })
			errs <- err
		}()
		go func() {
			defer wg.Done()
			resp, err := http.Get(s.URL() + "/CSD/getDirectory/Providers")
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	got := 0
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(p *csd.Provider) error {
		if len(p.OtherIDs) != 1 || "p"+p.OtherIDs[0].Value != p.EntityID {
			t.Errorf("provider %s: %+v", p.EntityID, p.OtherIDs)
		}
		got++
		return nil
	}); err != nil || got != n {
		t.Errorf("%d providers, %v", got, err)
	}
}

func mustTime(s string) time.Time {
	t, err := csd.ParseDateTime(s)
	if err != nil {
		panic(err)
	}
	return t
}
