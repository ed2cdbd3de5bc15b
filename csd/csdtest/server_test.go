package csdtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

const searchPath = "/CSD/csr/Providers/careServicesRequest/" + csd.ProviderSearch

// fiveProviders: p1…p4 updated on consecutive days, p5 has no record, p3 is
// inactive.
const fiveProviders = `<?xml version="1.0" encoding="UTF-8"?>
<CSD xmlns="urn:ihe:iti:csd:2013">
  <facilityDirectory><facility entityID="f1"><primaryName>Clinique générale</primaryName></facility></facilityDirectory>
  <providerDirectory>
    <provider entityID="urn:uuid:P1"><record updated="2024-01-01T00:00:00Z" status="Active"/></provider>
    <provider entityID="urn:uuid:P2"><record updated="2024-01-02T00:00:00+00:00" status="Active"/></provider>
    <provider entityID="urn:uuid:P3"><record updated="2024-01-03T00:00:00" status="106-002"/></provider>
    <provider entityID="urn:uuid:P4"><record updated="2024-01-04T00:00:00Z" status="Active"/></provider>
    <provider entityID="urn:uuid:P5"/>
  </providerDirectory>
</CSD>`

func newServer(t *testing.T, doc string, opts csdtest.Options) *csdtest.Server {
	t.Helper()
	s, err := csdtest.New([]byte(doc), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// search posts requestParams and decodes the providers of the answer.
func search(t *testing.T, s *csdtest.Server, params string) (int, []string) {
	t.Helper()
	status, body := post(t, s.URL()+searchPath, `<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013">`+params+`</csd:requestParams>`)
	if status != http.StatusOK {
		return status, nil
	}
	var ids []string
	if _, err := csd.DecodeProviders(strings.NewReader(body), csd.Limits{}, func(p *csd.Provider) error {
		ids = append(ids, strings.TrimPrefix(p.EntityID, "urn:uuid:"))
		return nil
	}); err != nil {
		t.Fatalf("decoding the answer: %v\n%s", err, body)
	}
	return status, ids
}

func TestProviderSearch(t *testing.T) {
	s := newServer(t, fiveProviders, csdtest.Options{})
	tests := []struct {
		name       string
		params     string
		wantStatus int
		wantIDs    []string
	}{
		{"no parameters", ``, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"first page", `<csd:start>1</csd:start><csd:max>2</csd:max>`, 200, []string{"P1", "P2"}},
		{"second page", `<csd:start>3</csd:start><csd:max>2</csd:max>`, 200, []string{"P3", "P4"}},
		{"short last page", `<csd:start>5</csd:start><csd:max>2</csd:max>`, 200, []string{"P5"}},
		{"past the end", `<csd:start>7</csd:start><csd:max>2</csd:max>`, 200, nil},
		{"max only", `<csd:max>3</csd:max>`, 200, []string{"P1", "P2", "P3"}},
		{"start only", `<csd:start>4</csd:start>`, 200, []string{"P4", "P5"}},
		{"max with blanks and a plus sign", `<csd:max> +2 </csd:max>`, 200, []string{"P1", "P2"}},
		// limit_items: a max whose fn:number is NaN or 0, or a negative
		// one, means unlimited.
		{"negative max is unlimited", `<csd:start>4</csd:start><csd:max>-1</csd:max>`, 200, []string{"P4", "P5"}},
		{"max 0 is unlimited", `<csd:max>0</csd:max>`, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"max 0 with start is unlimited", `<csd:start>2</csd:start><csd:max>0</csd:max>`, 200, []string{"P2", "P3", "P4", "P5"}},
		{"non-numeric max is unlimited", `<csd:start>3</csd:start><csd:max>all</csd:max>`, 200, []string{"P3", "P4", "P5"}},
		{"empty max is unlimited", `<csd:max/>`, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"fractional max fails the xs:integer cast", `<csd:max>2.5</csd:max>`, 422, nil},
		{"max in exponent form fails the cast", `<csd:start>1</csd:start><csd:max>1e1</csd:max>`, 422, nil},
		// A start whose fn:number is NaN or 0, or below 1, is ignored.
		{"start 0 is ignored", `<csd:start>0</csd:start><csd:max>2</csd:max>`, 200, []string{"P1", "P2"}},
		{"negative start is ignored", `<csd:start>-3</csd:start><csd:max>2</csd:max>`, 200, []string{"P1", "P2"}},
		{"non-numeric start is ignored", `<csd:start>one</csd:start><csd:max>2</csd:max>`, 200, []string{"P1", "P2"}},
		{"fractional start fails the cast", `<csd:start>1.5</csd:start><csd:max>2</csd:max>`, 422, nil},
		{"updated filter keeps >= and drops providers without record", `<csd:record updated="2024-01-02T00:00:00Z"/>`, 200, []string{"P2", "P3", "P4"}},
		{"updated filter with another zone", `<csd:record updated="2024-01-02T01:00:00+02:00"/>`, 200, []string{"P2", "P3", "P4"}},
		{"updated filter and paging", `<csd:record updated="2024-01-02T00:00:00Z"/><csd:start>2</csd:start><csd:max>1</csd:max>`, 200, []string{"P3"}},
		// filter_by_record catches the failed cast and drops the filter.
		{"unparsable updated is ignored", `<csd:record updated="last tuesday"/>`, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"empty updated is ignored", `<csd:record updated=""/>`, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"unparsable updated keeps the status filter", `<csd:record updated="soon" status="Active"/>`, 200, []string{"P1", "P2", "P4"}},
		{"status filter", `<csd:record status="Active"/>`, 200, []string{"P1", "P2", "P4"}},
		{"id filter ignores case", `<csd:id entityID="URN:UUID:p3"/>`, 200, []string{"P3"}},
		{"id filter is exact", `<csd:id entityID="urn:uuid:P"/>`, 200, nil},
		{"2013 id form is ignored", `<csd:id urn="urn:uuid:P3"/>`, 200, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"unimplemented parameter", `<csd:commonName>Dev</csd:commonName>`, 501, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ids := search(t, s, tt.params)
			if status != tt.wantStatus || !reflect.DeepEqual(ids, tt.wantIDs) {
				t.Errorf("got %d %q, want %d %q", status, ids, tt.wantStatus, tt.wantIDs)
			}
		})
	}
}

func TestProviderSearchDefaultNamespaceParams(t *testing.T) {
	s := newServer(t, fiveProviders, csdtest.Options{})
	status, body := post(t, s.URL()+searchPath, `<requestParams xmlns="urn:ihe:iti:csd:2013"><start>2</start><max>1</max></requestParams>`)
	if status != 200 || !strings.Contains(body, "urn:uuid:P2") || strings.Contains(body, "urn:uuid:P1") {
		t.Errorf("got %d %s", status, body)
	}
	if status, _ := post(t, s.URL()+searchPath, `<requestParams>`); status != http.StatusBadRequest {
		t.Errorf("malformed body: status %d", status)
	}
}

func TestProviderSearchInvalidStoredDate(t *testing.T) {
	doc := `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>
<provider entityID="ok"><record updated="2024-01-01T00:00:00Z" status="Active"/></provider>
<provider entityID="ihris"><record created="0000-00-00T00:00:00" updated="0000-00-00T00:00:00" status="Active"/></provider>
<provider entityID="empty"><record updated="" status="106-002"/></provider>
<provider entityID="none"><record status="Active"/></provider>
</providerDirectory></CSD>`
	s := newServer(t, doc, csdtest.Options{})
	const since = `<csd:record updated="2020-01-01T00:00:00Z"/>`
	tests := []struct {
		name       string
		params     string
		wantStatus int
		wantIDs    []string
	}{
		{"without filter", ``, 200, []string{"ok", "ihris", "empty", "none"}},
		{"with filter", since, 422, nil},
		// The cast fails even for a provider past the requested page.
		{"with filter and a page before the bad date", since + `<csd:max>1</csd:max>`, 422, nil},
		// Only providers the earlier filters kept are cast.
		{"id filter leaves only a good date", since + `<csd:id entityID="OK"/>`, 200, []string{"ok"}},
		{"id filter leaves only a missing date", since + `<csd:id entityID="none"/>`, 200, nil},
		{"id filter leaves an empty date", since + `<csd:id entityID="empty"/>`, 422, nil},
		{"status applies before the cast", `<csd:record updated="2020-01-01T00:00:00Z" status="106-002"/>`, 422, nil},
		{"status excludes the bad dates", `<csd:record updated="2020-01-01T00:00:00Z" status="Nope"/>`, 200, nil},
		{"unparsable filter casts nothing", `<csd:record updated="2020"/>`, 200, []string{"ok", "ihris", "empty", "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ids := search(t, s, tt.params)
			if status != tt.wantStatus || !reflect.DeepEqual(ids, tt.wantIDs) {
				t.Errorf("got %d %q, want %d %q", status, ids, tt.wantStatus, tt.wantIDs)
			}
		})
	}
	status, body := post(t, s.URL()+searchPath, `<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013">`+since+`</csd:requestParams>`)
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, "Error executing xquery") {
		t.Errorf("with filter: %d %q", status, body)
	}
}

func TestProviderSearchPagingSwitches(t *testing.T) {
	tests := []struct {
		name    string
		opts    csdtest.Options
		params  string
		wantIDs []string
	}{
		{"IgnorePaging returns every match", csdtest.Options{IgnorePaging: true}, `<csd:start>3</csd:start><csd:max>2</csd:max>`, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"IgnorePaging keeps the filters", csdtest.Options{IgnorePaging: true}, `<csd:record status="Active"/><csd:max>1</csd:max>`, []string{"P1", "P2", "P4"}},
		{"IgnorePaging does not cast max", csdtest.Options{IgnorePaging: true}, `<csd:max>2.5</csd:max>`, []string{"P1", "P2", "P3", "P4", "P5"}},
		{"IgnoreStart repeats the first page", csdtest.Options{IgnoreStart: true}, `<csd:start>3</csd:start><csd:max>2</csd:max>`, []string{"P1", "P2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, fiveProviders, tt.opts)
			if status, ids := search(t, s, tt.params); status != 200 || !reflect.DeepEqual(ids, tt.wantIDs) {
				t.Errorf("got %d %q, want %q", status, ids, tt.wantIDs)
			}
		})
	}
}

func TestServerRoutes(t *testing.T) {
	s := newServer(t, fiveProviders, csdtest.Options{})
	if status, body := post(t, s.URL()+"/CSD/csr/Nope/careServicesRequest/"+csd.ProviderSearch, `<requestParams/>`); status != 200 || body != "" {
		t.Errorf("unknown document: %d %q, want 200 and an empty body", status, body)
	}
	if status, _ := post(t, s.URL()+"/CSD/csr/Providers/careServicesRequest/urn:example:nope", `<requestParams/>`); status != 404 {
		t.Errorf("unknown function: %d", status)
	}
	if status, _ := post(t, s.URL()+"/CSD/csr/Providers/careServicesRequest/update/"+csd.ProviderSearch, `<requestParams/>`); status != 404 {
		t.Errorf("updating call: %d", status)
	}
	resp, err := http.Get(s.URL() + "/CSD/getDirectory/Providers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != fiveProviders {
		t.Errorf("getDirectory: %d, body %d bytes", resp.StatusCode, len(body))
	}
	d, err := csd.DecodeDirectory(bytes.NewReader(body), csd.Limits{})
	if f, _ := d.Facility("f1"); err != nil || f.Name != "Clinique générale" {
		t.Errorf("directory: %+v, %v", d, err)
	}
	if got := s.Requests(); got != 4 {
		t.Errorf("Requests = %d, want 4", got)
	}
}

func TestServerAuth(t *testing.T) {
	s := newServer(t, fiveProviders, csdtest.Options{Username: "oim", Password: "s3cret"})
	url := s.URL() + searchPath
	for _, tt := range []struct {
		user, pass string
		want       int
	}{{"", "", 401}, {"oim", "wrong", 401}, {"other", "s3cret", 401}, {"oim", "s3cret", 200}} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`<requestParams/>`))
		if tt.user != "" {
			req.SetBasicAuth(tt.user, tt.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s/%s: status %d, want %d", tt.user, tt.pass, resp.StatusCode, tt.want)
		}
	}
	if s.Requests() != 4 {
		t.Errorf("Requests = %d, want 4", s.Requests())
	}
}

func TestFailNextAndSetDocument(t *testing.T) {
	s := newServer(t, fiveProviders, csdtest.Options{})
	s.FailNext(http.StatusServiceUnavailable, 2)
	for i, want := range []int{503, 503, 200} {
		if status, _ := search(t, s, ``); status != want {
			t.Errorf("request %d: status %d, want %d", i+1, status, want)
		}
	}
	if err := s.SetDocument([]byte(`<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID="urn:uuid:NEW"/></providerDirectory></CSD>`)); err != nil {
		t.Fatal(err)
	}
	if _, ids := search(t, s, ``); !reflect.DeepEqual(ids, []string{"NEW"}) {
		t.Errorf("after SetDocument: %q", ids)
	}
	if err := s.SetDocument([]byte(`<html/>`)); err == nil {
		t.Error("SetDocument accepted an html document")
	}
}

func TestPrefixedDocumentStaysWellFormed(t *testing.T) {
	doc := `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013" xmlns:lr="urn:liberia"><csd:providerDirectory>
<csd:provider entityID="urn:uuid:A"><csd:demographic><csd:name><csd:commonName>Fatu &amp; Co</csd:commonName></csd:name></csd:demographic>
<csd:extension><lr:position title="Nurse"/></csd:extension></csd:provider>
</csd:providerDirectory></csd:CSD>`
	s := newServer(t, doc, csdtest.Options{})
	_, body := post(t, s.URL()+searchPath, `<requestParams xmlns="urn:ihe:iti:csd:2013"/>`)
	var names []string
	if _, err := csd.DecodeProviders(strings.NewReader(body), csd.Limits{}, func(p *csd.Provider) error {
		names = append(names, p.Names[0].CommonNames...)
		return nil
	}); err != nil || !reflect.DeepEqual(names, []string{"Fatu & Co"}) {
		t.Errorf("names %q, err %v\n%s", names, err, body)
	}
}

func TestNewRejectsNonCSD(t *testing.T) {
	for _, doc := range []string{``, `<html/>`, `<CSD><providerDirectory></CSD>`} {
		if _, err := csdtest.New([]byte(doc), csdtest.Options{}); err == nil {
			t.Errorf("New(%q) succeeded", doc)
		}
	}
}

func TestGenerate(t *testing.T) {
	const n = 30
	var a, b bytes.Buffer
	opts := csdtest.GenerateOptions{Seed: 7, Start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Step: 24 * time.Hour}
	if err := csdtest.Generate(&a, n, opts); err != nil {
		t.Fatal(err)
	}
	if err := csdtest.Generate(&b, n, opts); err != nil || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("the same seed wrote different documents (err %v)", err)
	}
	seen := map[string]bool{}
	i := 0
	_, err := csd.DecodeProviders(&a, csd.Limits{}, func(p *csd.Provider) error {
		if seen[p.Key()] || p.EntityID != csdtest.GeneratedEntityID(7, i) {
			t.Errorf("provider %d: id %q repeated or unexpected", i, p.EntityID)
		}
		seen[p.Key()] = true
		wantInactive := i%10 == 9
		if len(p.Problems) > 0 || len(p.Names) != 1 || len(p.CodedTypes) != 1 || len(p.Languages) != 1 ||
			len(p.ContactValues(csd.ContactPhone)) != i%3 || len(p.ContactValues(csd.ContactFax)) != 1 ||
			(p.Record.State() == csd.StatusInactive) != wantInactive || p.Record.State() == csd.StatusUnknown ||
			!reflect.DeepEqual(p.Facilities, []string{csdtest.GeneratedFacilityID(i % csdtest.GeneratedFacilities)}) {
			t.Errorf("provider %d = %+v", i, p)
		}
		wantCreated := opts.Start.Add(time.Duration(i) * opts.Step)
		if !p.Record.Created.Equal(wantCreated) || !p.Record.Updated.Equal(wantCreated.Add(12*time.Hour)) {
			t.Errorf("provider %d: created %v updated %v", i, p.Record.Created, p.Record.Updated)
		}
		i++
		return nil
	})
	if err != nil || i != n {
		t.Fatalf("decoded %d providers, err %v", i, err)
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestGenerateWriteError(t *testing.T) {
	err := csdtest.Generate(&failingWriter{after: 100 << 10}, 10000, csdtest.GenerateOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v", err)
	}
	if err := csdtest.Generate(io.Discard, -1, csdtest.GenerateOptions{}); err == nil {
		t.Error("negative count accepted")
	}
}

func ExampleGenerate() {
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, 3, csdtest.GenerateOptions{Seed: 1}); err != nil {
		panic(err)
	}
	s, err := csdtest.New(doc.Bytes(), csdtest.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	c := &csd.Client{BaseURL: s.URL(), Document: "Providers", PageSize: 2}
	stats, err := c.Providers(context.Background(), csd.ProviderQuery{}, func(p *csd.Provider) error { return nil })
	fmt.Println(stats.Providers, stats.Pages, err)
	// Output: 3 2 <nil>
}
