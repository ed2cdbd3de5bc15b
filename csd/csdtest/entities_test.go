package csdtest_test

import (
	"bytes"
	"crypto/sha256"
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

// entities: facilities F1…F4 updated on consecutive days, F5 without a
// record, F3 closed; organizations O1, O2; one provider.
const entities = `<?xml version="1.0" encoding="UTF-8"?>
<CSD xmlns="urn:ihe:iti:csd:2013">
  <organizationDirectory>
    <organization entityID="urn:uuid:O1"><primaryName>Bong</primaryName><record updated="2024-01-01T00:00:00Z" status="Active"/></organization>
    <organization entityID="urn:uuid:O2"><primaryName>Lofa</primaryName><parent entityID="urn:uuid:O1"/><record updated="2024-01-03T00:00:00Z" status="Active"/></organization>
  </organizationDirectory>
  <facilityDirectory>
    <facility entityID="urn:uuid:F1"><primaryName>Clinique générale</primaryName><record updated="2024-01-01T00:00:00Z" status="Active"/></facility>
    <facility entityID="urn:uuid:F2"><record updated="2024-01-02T00:00:00Z" status="Active"/></facility>
    <facility entityID="urn:uuid:F3"><record updated="2024-01-03T00:00:00Z" status="104-004"/></facility>
    <facility entityID="urn:uuid:F4"><record updated="2024-01-04T00:00:00Z" status="Active"/></facility>
    <facility entityID="urn:uuid:F5"/>
  </facilityDirectory>
  <providerDirectory><provider entityID="urn:uuid:P1"><record updated="2024-01-01T00:00:00Z" status="Active"/></provider></providerDirectory>
</CSD>`

// searchEntities posts requestParams to a search and decodes the entities
// of kind in the answer, checking that no other directory is filled.
func searchEntities(t *testing.T, s *csdtest.Server, function string, kind csd.EntityKind, params string) (int, []string) {
	t.Helper()
	status, body := post(t, s.URL()+"/CSD/csr/Providers/careServicesRequest/"+function, `<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013">`+params+`</csd:requestParams>`)
	if status != http.StatusOK {
		return status, nil
	}
	d, err := csd.DecodeDirectory(strings.NewReader(body), csd.Limits{})
	if err != nil {
		t.Fatalf("decoding the answer: %v\n%s", err, body)
	}
	providers, err := csd.DecodeProviders(strings.NewReader(body), csd.Limits{}, func(*csd.Provider) error { return nil })
	if err != nil || providers.Providers != 0 {
		t.Errorf("answer holds %d providers (%v)", providers.Providers, err)
	}
	var ids []string
	_, err = csd.DecodeEntities(strings.NewReader(body), csd.Limits{}, kind, func(e *csd.Entity) error {
		ids = append(ids, strings.TrimPrefix(e.EntityID, "urn:uuid:"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if other := map[csd.EntityKind]int{csd.KindFacility: len(d.Organizations), csd.KindOrganization: len(d.Facilities)}[kind]; other != 0 {
		t.Errorf("answer holds %d entities of the other kind:\n%s", other, body)
	}
	return status, ids
}

func TestEntitySearch(t *testing.T) {
	s := newServer(t, entities, csdtest.Options{})
	all := []string{"F1", "F2", "F3", "F4", "F5"}
	tests := []struct {
		name       string
		function   string
		kind       csd.EntityKind
		params     string
		wantStatus int
		wantIDs    []string
	}{
		{"every facility", csd.FacilitySearch, csd.KindFacility, ``, 200, all},
		{"facility page", csd.FacilitySearch, csd.KindFacility, `<csd:start>2</csd:start><csd:max>2</csd:max>`, 200, []string{"F2", "F3"}},
		{"short last facility page", csd.FacilitySearch, csd.KindFacility, `<csd:start>5</csd:start><csd:max>2</csd:max>`, 200, []string{"F5"}},
		{"max 0 is unlimited", csd.FacilitySearch, csd.KindFacility, `<csd:max>0</csd:max>`, 200, all},
		{"fractional max fails", csd.FacilitySearch, csd.KindFacility, `<csd:max>1.5</csd:max>`, 422, nil},
		{"updated filter drops facilities without record", csd.FacilitySearch, csd.KindFacility, `<csd:record updated="2024-01-03T00:00:00Z"/>`, 200, []string{"F3", "F4"}},
		{"unparsable updated is ignored", csd.FacilitySearch, csd.KindFacility, `<csd:record updated="yesterday"/>`, 200, all},
		{"status filter", csd.FacilitySearch, csd.KindFacility, `<csd:record status="104-004"/>`, 200, []string{"F3"}},
		{"id ignores case", csd.FacilitySearch, csd.KindFacility, `<csd:id entityID="URN:UUID:f4"/>`, 200, []string{"F4"}},
		{"unimplemented parameter", csd.FacilitySearch, csd.KindFacility, `<csd:primaryName>x</csd:primaryName>`, 501, nil},
		{"every organization", csd.OrganizationSearch, csd.KindOrganization, ``, 200, []string{"O1", "O2"}},
		{"organization page", csd.OrganizationSearch, csd.KindOrganization, `<csd:start>2</csd:start><csd:max>5</csd:max>`, 200, []string{"O2"}},
		{"organizations updated since", csd.OrganizationSearch, csd.KindOrganization, `<csd:record updated="2024-01-02T00:00:00+02:00"/>`, 200, []string{"O2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ids := searchEntities(t, s, tt.function, tt.kind, tt.params)
			if status != tt.wantStatus || !reflect.DeepEqual(ids, tt.wantIDs) {
				t.Errorf("got %d %q, want %d %q", status, ids, tt.wantStatus, tt.wantIDs)
			}
		})
	}
}

func TestEntitySearchQuirks(t *testing.T) {
	bad := `<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory>
<facility entityID="ok"><record updated="2024-01-01T00:00:00Z" status="Active"/></facility>
<facility entityID="ihris"><record updated="0000-00-00T00:00:00" status="Active"/></facility>
</facilityDirectory><organizationDirectory><organization entityID="o"><record updated="2024-01-01T00:00:00Z" status="Active"/></organization></organizationDirectory></CSD>`
	s := newServer(t, bad, csdtest.Options{})
	// One stored date that is not one fails the facility search, not the
	// organization search: each searches its own directory.
	if status, _ := searchEntities(t, s, csd.FacilitySearch, csd.KindFacility, `<csd:record updated="2020-01-01T00:00:00Z"/><csd:max>1</csd:max>`); status != 422 {
		t.Errorf("facility search: %d, want 422", status)
	}
	if status, ids := searchEntities(t, s, csd.OrganizationSearch, csd.KindOrganization, `<csd:record updated="2020-01-01T00:00:00Z"/>`); status != 200 || !reflect.DeepEqual(ids, []string{"o"}) {
		t.Errorf("organization search: %d %q", status, ids)
	}
	for _, tt := range []struct {
		opts csdtest.Options
		want []string
	}{
		{csdtest.Options{IgnorePaging: true}, []string{"F1", "F2", "F3", "F4", "F5"}},
		{csdtest.Options{IgnoreStart: true}, []string{"F1", "F2"}},
	} {
		s := newServer(t, entities, tt.opts)
		if status, ids := searchEntities(t, s, csd.FacilitySearch, csd.KindFacility, `<csd:start>3</csd:start><csd:max>2</csd:max>`); status != 200 || !reflect.DeepEqual(ids, tt.want) {
			t.Errorf("%+v: %d %q, want %q", tt.opts, status, ids, tt.want)
		}
	}
	// An unknown document answers an empty 200 whatever the search.
	for _, f := range []string{csd.FacilitySearch, csd.OrganizationSearch} {
		if status, body := post(t, s.URL()+"/CSD/csr/Nope/careServicesRequest/"+f, `<requestParams/>`); status != 200 || body != "" {
			t.Errorf("%s on an unknown document: %d %q", f, status, body)
		}
	}
}

// TestEntitySearchPrefixed: a prefixed facility stays well-formed out of its
// document, its directory's declarations included.
func TestEntitySearchPrefixed(t *testing.T) {
	doc := `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:facilityDirectory xmlns:x="urn:x">
<csd:facility entityID="f"><csd:primaryName>A &amp; B</csd:primaryName><csd:extension type="t" urn="u"><x:y/></csd:extension></csd:facility>
</csd:facilityDirectory></csd:CSD>`
	s := newServer(t, doc, csdtest.Options{})
	_, body := post(t, s.URL()+"/CSD/csr/Providers/careServicesRequest/"+csd.FacilitySearch, `<requestParams xmlns="urn:ihe:iti:csd:2013"/>`)
	var names []string
	if _, err := csd.DecodeEntities(strings.NewReader(body), csd.Limits{}, csd.KindFacility, func(e *csd.Entity) error {
		names = append(names, e.Name)
		return nil
	}); err != nil || !reflect.DeepEqual(names, []string{"A & B"}) {
		t.Errorf("names %q, err %v\n%s", names, err, body)
	}
}

func TestGenerateHierarchy(t *testing.T) {
	var doc bytes.Buffer
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := csdtest.Generate(&doc, 120, csdtest.GenerateOptions{Seed: 3, Start: start, Hierarchy: true}); err != nil {
		t.Fatal(err)
	}
	d, err := csd.DecodeDirectory(bytes.NewReader(doc.Bytes()), csd.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Problems) != 0 || len(d.Organizations) != 1+csdtest.GeneratedDistricts+csdtest.GeneratedChiefdoms || len(d.Facilities) != csdtest.GeneratedFacilities {
		t.Fatalf("%d organizations, %d facilities, problems %q", len(d.Organizations), len(d.Facilities), d.Problems)
	}
	level := func(id string) string {
		o, ok := d.Organization(id)
		if !ok || len(o.CodedTypes) != 1 || len(o.Problems) != 0 || !o.Record.Updated.Equal(start) || o.Record.State() != csd.StatusActive {
			t.Errorf("organization %s: %+v, %v", id, o, ok)
			return ""
		}
		return o.CodedTypes[0].Code
	}
	// Walking up from any facility reaches the country through a chiefdom
	// and a district.
	for k := range csdtest.GeneratedFacilities {
		f, _ := d.Facility(csdtest.GeneratedFacilityID(k))
		if len(f.Organizations) != 1 || f.Organizations[0] != csdtest.GeneratedChiefdomID(k%csdtest.GeneratedChiefdoms) ||
			f.Name != fmt.Sprintf("Centre de santé %d", k) || len(f.CodedTypes) != 1 || !f.Record.Created.Equal(start) {
			t.Fatalf("facility %d = %+v", k, f)
		}
		chiefdom, _ := d.Organization(f.Organizations[0])
		district, _ := d.Organization(chiefdom.Parent)
		country, _ := d.Organization(district.Parent)
		got := []string{level(chiefdom.EntityID), level(district.EntityID), level(country.EntityID), country.Parent}
		if !reflect.DeepEqual(got, []string{"chiefdom", "district", "country", ""}) || country.EntityID != csdtest.GeneratedCountryID {
			t.Fatalf("facility %d: levels %q up to %s", k, got, country.EntityID)
		}
	}
	// Every provider's facility is in the directory.
	n := 0
	if _, err := csd.DecodeProviders(bytes.NewReader(doc.Bytes()), csd.Limits{}, func(p *csd.Provider) error {
		n++
		for _, id := range p.Facilities {
			if _, ok := d.Facility(id); !ok {
				t.Errorf("provider %s: facility %s not found", p.EntityID, id)
			}
		}
		return nil
	}); err != nil || n != 120 {
		t.Errorf("%d providers, err %v", n, err)
	}
}

// TestGenerateWithoutHierarchyIsUnchanged pins the generator's output from
// before the Hierarchy option, which other packages' tests depend on.
func TestGenerateWithoutHierarchyIsUnchanged(t *testing.T) {
	for _, tt := range []struct {
		opts csdtest.GenerateOptions
		want string
	}{
		{csdtest.GenerateOptions{}, "408425ad821d3e19a9a1c609fc046ce060291290c0ab8389fec8aea41d93d081"},
		{csdtest.GenerateOptions{Seed: 7, Start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Step: 24 * time.Hour}, "10a545d4c9bd35b41ec30859b20aaa832c1f697201824ebf9ab3ff89c2d1f2f2"},
	} {
		h := sha256.New()
		if err := csdtest.Generate(h, 1000, tt.opts); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%x", h.Sum(nil)); got != tt.want {
			t.Errorf("Generate(1000, %+v) has sha256 %s, want %s", tt.opts, got, tt.want)
		}
	}
}

// getDirectory fetches the served document.
func getDirectory(t *testing.T, s *csdtest.Server) string {
	t.Helper()
	resp, err := http.Get(s.URL() + "/CSD/getDirectory/Providers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("getDirectory: %d, %v", resp.StatusCode, err)
	}
	return string(body)
}
