package csd_test

import (
	"os"
	"reflect"
	"sort"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

// connectathonEntity is what the test expects of one facility or
// organization, as the document says it.
type connectathonEntity struct {
	id, name, parent string
	codedType        csd.Code
	organizations    []string
}

const (
	scheme100 = "1.3.6.1.4.1.21367.100.1"
	idn       = "urn:uuid:08c3286e-2163-462c-b77f-1f431d7351ab"
	ngoTwo    = "urn:uuid:8cd347e8-8a2c-4900-98d2-a79dcd953995"
	radiology = "urn:uuid:e9964293-e169-4298-b4d0-ab07bf0cd78f"
)

var (
	connectathonFacilities = []connectathonEntity{
		{id: radiology, name: "Connectathon Radiology Facility", codedType: csd.Code{Code: "103-110", CodingScheme: scheme100, Display: "Radiology - Imaging Services"}, organizations: []string{idn}},
		{id: "urn:uuid:a3eb03db-0094-4059-9156-8de081cb5885", name: "Connectathon Dialysis Facility One", codedType: csd.Code{Code: "103-003", CodingScheme: scheme100, Display: "Dialysis"}, organizations: []string{idn}},
		{id: "urn:uuid:be4d27c3-21b8-481f-9fed-6524a8eb9bac", name: "Connectathon Dialysis Facility Two", codedType: csd.Code{Code: "103-003", CodingScheme: scheme100, Display: "Dialysis"}, organizations: []string{idn}},
	}
	// No organization has a parent: the documents have no hierarchy.
	connectathonOrganizations = []connectathonEntity{
		{id: idn, name: "Connectathon CSD IDN One", codedType: csd.Code{Code: "101-002", CodingScheme: scheme100, Display: "Integrated Delivery Network"}},
		{id: "urn:uuid:cfbf2236-62d3-409f-95ab-372fbc93afd0", name: "Connectathon CSD NGO One", codedType: csd.Code{Code: "101-003", CodingScheme: scheme100, Display: "Non-government Organization"}},
		{id: ngoTwo, name: "Connectathon CSD NGO Two", codedType: csd.Code{Code: "101-003", CodingScheme: scheme100, Display: "Non-government Organization"}},
		{id: "urn:uuid:d7dd6a08-203e-4333-a086-ed2fcde572d4", name: "Connectathon CSD NGO Quatre", codedType: csd.Code{Code: "101-003", CodingScheme: scheme100, Display: "Non-government Organization"}},
		{id: "urn:uuid:c3bab4bd-d830-4d5d-9d72-265b45894451", name: "Connectathon CSD NGO Trois", codedType: csd.Code{Code: "101-003", CodingScheme: scheme100, Display: "Non-government Organization"}},
	}
	// danglingReferences lists the facility and organization ids that the
	// Connectathon providers reference and neither directory holds: none.
	danglingReferences = []string(nil)
)

func openConnectathon(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(connectathonPath(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func decodeConnectathonEntities(t *testing.T, name string, kind csd.EntityKind) []*csd.Entity {
	t.Helper()
	var got []*csd.Entity
	stats, err := csd.DecodeEntities(openConnectathon(t, name), csd.Limits{}, kind, func(e *csd.Entity) error {
		got = append(got, e)
		return nil
	})
	if err != nil || stats.Root != "CSD" || stats.Entities != len(got) {
		t.Fatalf("DecodeEntities(%s): %v, stats %+v", name, err, stats)
	}
	return got
}

func TestConnectathonDirectories(t *testing.T) {
	tests := []struct {
		file string
		kind csd.EntityKind
		want []connectathonEntity
	}{
		{"CSD-Facilities-Connectathon-20150120.xml", csd.KindFacility, connectathonFacilities},
		{"CSD-Organizations-Connectathon-20150120.xml", csd.KindOrganization, connectathonOrganizations},
		// Each document's other directory is empty.
		{"CSD-Facilities-Connectathon-20150120.xml", csd.KindOrganization, nil},
		{"CSD-Organizations-Connectathon-20150120.xml", csd.KindFacility, nil},
		{"CSD-Providers-Connectathon-20150120.xml", csd.KindFacility, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+string(tt.kind), func(t *testing.T) {
			got := decodeConnectathonEntities(t, tt.file, tt.kind)
			if len(got) != len(tt.want) {
				t.Fatalf("%d entities, want %d", len(got), len(tt.want))
			}
			for i, e := range got {
				w := tt.want[i]
				if e.Kind != tt.kind || e.EntityID != w.id || e.Name != w.name || e.Parent != w.parent ||
					!reflect.DeepEqual(e.CodedTypes, []csd.Code{w.codedType}) || !reflect.DeepEqual(e.Organizations, w.organizations) {
					t.Errorf("entity %d = %+v\nwant %+v", i, *e, w)
				}
				// Every entity of the 2015 documents is active with good dates.
				if e.Record.State() != csd.StatusActive || e.Record.Updated.IsZero() || e.Record.Created.IsZero() || len(e.Problems) != 0 {
					t.Errorf("entity %s: record %+v, problems %q", e.EntityID, e.Record, e.Problems)
				}
			}
		})
	}
}

// TestConnectathonReferences resolves every facility and organization id
// that a Connectathon provider or facility references.
func TestConnectathonReferences(t *testing.T) {
	known := map[string]bool{}
	for _, e := range decodeConnectathonEntities(t, "CSD-Facilities-Connectathon-20150120.xml", csd.KindFacility) {
		known[csd.NormalizeID(e.EntityID)] = true
	}
	orgs := map[string]bool{}
	for _, e := range decodeConnectathonEntities(t, "CSD-Organizations-Connectathon-20150120.xml", csd.KindOrganization) {
		orgs[csd.NormalizeID(e.EntityID)] = true
	}
	var dangling []string
	resolve := func(id string, in map[string]bool) {
		if !in[csd.NormalizeID(id)] {
			dangling = append(dangling, id)
		}
	}
	references := 0
	_, err := csd.DecodeProviders(openConnectathon(t, "CSD-Providers-Connectathon-20150120.xml"), csd.Limits{}, func(p *csd.Provider) error {
		for _, id := range p.Facilities {
			references++
			resolve(id, known)
		}
		for _, id := range p.Organizations {
			references++
			resolve(id, orgs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range connectathonFacilities {
		for _, id := range f.organizations {
			references++
			resolve(id, orgs)
		}
	}
	// 10 organization references and 1 facility reference by providers, 3
	// organization references by facilities.
	if references != 14 {
		t.Errorf("%d references, want 14", references)
	}
	sort.Strings(dangling)
	if !reflect.DeepEqual(dangling, danglingReferences) {
		t.Errorf("dangling references %q, want %q", dangling, danglingReferences)
	}
}

func TestConnectathonProviderTypes(t *testing.T) {
	types, err := csd.DecodeValueSet(openConnectathon(t, "1.3.6.1.4.1.21367.200.105-providerTypeCode.xml"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"105-001": "Certified Nurse Midwife",
		"105-002": "Podiatry",
		"105-003": "Nurse Practitioner",
		"105-004": "Audiologist",
		"105-005": "Licensed Clinical Social Worker",
		"105-006": "Physician/Emergency Medicine",
		"105-007": "Physician/Medical Oncology",
		"105-008": "Physician/Gynecological Oncology",
		"105-009": "Physician/Pediatric Medicine",
		"105-110": "Physician/Thoracic Surgery",
		"105-111": "Physician/General Practice",
		"105-112": "Anesthesiology Assistant",
		"105-113": "Physician/Mammographer",
		"105-114": "Radiology Technician",
	}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("value set = %q", types)
	}
	// Every Connectathon provider's type is in the value set, with the
	// display text the value set gives it.
	_, err = csd.DecodeProviders(openConnectathon(t, "CSD-Providers-Connectathon-20150120.xml"), csd.Limits{}, func(p *csd.Provider) error {
		if len(p.CodedTypes) != 1 || types[p.CodedTypes[0].Code] != p.CodedTypes[0].Display {
			t.Errorf("provider %s: codedTypes %+v", p.EntityID, p.CodedTypes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
