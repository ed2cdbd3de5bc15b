package csd_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

func decodeDirectoryFile(t *testing.T, name string) *csd.Directory {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir, "openinfoman/service_directories", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := csd.DecodeDirectory(f, csd.Limits{})
	if err != nil {
		t.Fatalf("DecodeDirectory(%s): %v", name, err)
	}
	return d
}

func TestDecodeDirectoryCorpus(t *testing.T) {
	t.Run("facilities 2015", func(t *testing.T) {
		d := decodeConnectathonDirectory(t, "CSD-Facilities-Connectathon-20150120.xml")
		if len(d.Facilities) != 3 || len(d.Organizations) != 0 || len(d.Problems) != 0 {
			t.Fatalf("%d facilities, %d organizations, problems %q", len(d.Facilities), len(d.Organizations), d.Problems)
		}
		// Upper case: references are matched ignoring case.
		f, ok := d.Facility("URN:UUID:E9964293-E169-4298-B4D0-AB07BF0CD78F")
		if !ok {
			t.Fatal("radiology facility not found")
		}
		at := time.Date(2014, 12, 1, 14, 0, 0, 0, time.UTC)
		want := csd.Entity{
			Kind:          csd.KindFacility,
			EntityID:      "urn:uuid:e9964293-e169-4298-b4d0-ab07bf0cd78f",
			Name:          "Connectathon Radiology Facility",
			CodedTypes:    []csd.Code{{Code: "103-110", CodingScheme: "1.3.6.1.4.1.21367.100.1", Display: "Radiology - Imaging Services"}},
			Organizations: []string{"urn:uuid:08c3286e-2163-462c-b77f-1f431d7351ab"},
			// The Billing address comes first; the contact persons' addresses are not the facility's.
			Address: map[string]string{"streetAddress": "1234 Cactus Way", "city": "Santa Fe", "stateProvince": "NM", "country": "USA", "postalCode": "87501"},
			Record: csd.Record{Created: at, Updated: at, CreatedRaw: "2014-12-01T14:00:00+00:00", UpdatedRaw: "2014-12-01T14:00:00+00:00",
				Status: "Active", SourceDirectory: "http://www.ihe.net"},
			Line: 6,
		}
		// Times are compared with Equal: a parsed +00:00 is not time.UTC.
		if !f.Record.Created.Equal(at) || !f.Record.Updated.Equal(at) {
			t.Errorf("record = %+v", f.Record)
		}
		f.Record.Created, f.Record.Updated = at, at
		if !reflect.DeepEqual(f, want) {
			t.Errorf("facility = %+v\nwant %+v", f, want)
		}
		if f, _ := d.Facility("urn:uuid:a3eb03db-0094-4059-9156-8de081cb5885"); f.Name != "Connectathon Dialysis Facility One" {
			t.Errorf("dialysis facility = %+v", f)
		}
	})
	t.Run("organizations 2015 keep non-ASCII text", func(t *testing.T) {
		d := decodeConnectathonDirectory(t, "CSD-Organizations-Connectathon-20150120.xml")
		if len(d.Organizations) != 5 || len(d.Facilities) != 0 {
			t.Fatalf("%d organizations, %d facilities", len(d.Organizations), len(d.Facilities))
		}
		o, ok := d.Organization("urn:uuid:d7dd6a08-203e-4333-a086-ed2fcde572d4")
		if !ok || o.Name != "Connectathon CSD NGO Quatre" || o.Address["streetAddress"] != "22 rue du général de Gaulle" || o.Address["city"] != "Nancy" {
			t.Errorf("organization = %+v, %v", o, ok)
		}
	})
	t.Run("every directory document", func(t *testing.T) {
		for _, name := range []string{
			"CSD-Facilities-Connectathon-20131201draft.xml", "CSD-Facilities-Connectathon-20131227.xml",
			"CSD-Organizations-Connectathon-20131201draft.xml", "CSD-Organizations-Connectathon-20131227.xml",
			"CSD-Providers-Connectathon-20150120.xml", "CSD-Services-Connectathon-20150120.xml",
			"facility_local_identifiers.xml", "providers.xml",
		} {
			d := decodeDirectoryFile(t, name)
			if len(d.Problems) != 0 {
				t.Errorf("%s: problems %q", name, d.Problems)
			}
		}
	})
}

func decodeConnectathonDirectory(t *testing.T, name string) *csd.Directory {
	t.Helper()
	f, err := os.Open(connectathonPath(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := csd.DecodeDirectory(f, csd.Limits{})
	if err != nil {
		t.Fatalf("DecodeDirectory(%s): %v", name, err)
	}
	return d
}

func TestDecodeDirectory(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, d *csd.Directory)
	}{
		{
			name: "prefixed, parent, urn and Spanish text",
			doc: `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:organizationDirectory>
<csd:organization entityID="urn:uuid:CHILD"><csd:primaryName>Servicio de Diálisis</csd:primaryName><csd:parent entityID="urn:uuid:root"/></csd:organization>
<csd:organization urn="urn:uuid:root"><csd:primaryName>Ministère de la Santé</csd:primaryName></csd:organization>
</csd:organizationDirectory></csd:CSD>`,
			check: func(t *testing.T, d *csd.Directory) {
				child, _ := d.Organization("urn:uuid:child")
				root, _ := d.Organization(child.Parent)
				if child.Name != "Servicio de Diálisis" || child.EntityID != "urn:uuid:CHILD" || root.Name != "Ministère de la Santé" {
					t.Errorf("child = %+v, root = %+v", child, root)
				}
			},
		},
		{
			name: "missing and repeated ids are reported",
			doc: `<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory>
<facility><primaryName>No id</primaryName></facility>
<facility entityID="F1"><primaryName>First</primaryName></facility>
<facility entityID="f1"><primaryName>Second</primaryName></facility>
</facilityDirectory></CSD>`,
			check: func(t *testing.T, d *csd.Directory) {
				if f, _ := d.Facility("f1"); len(d.Facilities) != 1 || f.Name != "First" || f.Line != 3 {
					t.Errorf("facilities = %+v", d.Facilities)
				}
				want := []string{"facility at line 2 has no entityID, urn or oid; ignored", `facility "f1" at line 4 repeats an earlier id; the first is kept`}
				if !reflect.DeepEqual(d.Problems, want) {
					t.Errorf("Problems = %q", d.Problems)
				}
			},
		},
		{
			name: "2013 draft organisationDirectory with oid attributes reads nothing",
			doc: `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:organisationDirectory>
<csd:organization oid="d1"><csd:primaryName>A District</csd:primaryName><csd:parent oid="p1"/></csd:organization>
</csd:organisationDirectory></csd:CSD>`,
			check: func(t *testing.T, d *csd.Directory) {
				if len(d.Organizations) != 0 || len(d.Facilities) != 0 || len(d.Problems) != 0 {
					t.Errorf("directory = %+v", d)
				}
			},
		},
		{
			name: "unknown lookups",
			doc:  `<CSD xmlns="urn:ihe:iti:csd:2013"/>`,
			check: func(t *testing.T, d *csd.Directory) {
				if _, ok := d.Facility("x"); ok {
					t.Error("found a facility in an empty directory")
				}
				if _, ok := d.Organization("x"); ok {
					t.Error("found an organization in an empty directory")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := csd.DecodeDirectory(strings.NewReader(tt.doc), csd.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, d)
		})
	}
}

func TestDecodeDirectoryErrors(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{`<provider entityID="e1"/>`, "csd: line 1: expected element CSD, found provider"},
		{"<CSD>\n<facilityDirectory>\n<facility entityID='x'>\n</CSD>", "csd: line 4:"},
	} {
		_, err := csd.DecodeDirectory(strings.NewReader(tt.doc), csd.Limits{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error = %v, want %q", err, tt.want)
		}
	}
}

// entityDoc holds both directories and a provider, each with a facility or
// organization; the codedTypes nested in credential, contactPoint and contact
// are not the entity's.
const entityDoc = `<?xml version="1.0" encoding="UTF-8"?>
<CSD xmlns="urn:ihe:iti:csd:2013">
  <providerDirectory><provider entityID="p1"><codedType code="X" codingScheme="s"/></provider></providerDirectory>
  <facilityDirectory>
    <facility entityID="urn:uuid:F1">
      <otherID code="mfl" assigningAuthorityName="moh">123</otherID>
      <codedType code="103-003" codingScheme="1.3.6.1.4.1.21367.100.1">Dialysis</codedType>
      <codedType code="clinic" codingScheme="urn:local"/>
      <primaryName>Centre de santé</primaryName>
      <contact><person><name><commonName>A</commonName></name></person><codedType code="in-contact" codingScheme="s"/></contact>
      <credential><codedType code="108-002" codingScheme="1.3.6.1.4.1.21367.100.1"/><number>1</number></credential>
      <contactPoint><codedType code="BP" codingScheme="urn:ihe:iti:csd:2013:contactPoint">555</codedType></contactPoint>
      <organizations><organization entityID="urn:uuid:O1"><service entityID="s1"/></organization><organization entityID=""/></organizations>
      <extension type="t" urn="u"><codedType code="in-extension" codingScheme="s"/></extension>
      <record created="0000-00-00T00:00:00" updated="2024-04-30T06:20:00Z" status="104-004" sourceDirectory="http://hris"/>
      <record created="2020-01-01T00:00:00Z" updated="2020-01-01T00:00:00Z" status="Inactive"/>
    </facility>
    <facility><primaryName>No id</primaryName></facility>
  </facilityDirectory>
  <serviceDirectory><service entityID="s1"><codedType code="svc" codingScheme="s"/></service></serviceDirectory>
  <organizationDirectory>
    <organization urn="urn:uuid:O1"><codedType code="district" codingScheme="urn:level">District</codedType><primaryName>Bong</primaryName><parent entityID="urn:uuid:O0"/></organization>
  </organizationDirectory>
</CSD>`

func TestDecodeEntities(t *testing.T) {
	f1 := &csd.Entity{
		Kind:     csd.KindFacility,
		EntityID: "urn:uuid:F1",
		Name:     "Centre de santé",
		CodedTypes: []csd.Code{
			{Code: "103-003", CodingScheme: "1.3.6.1.4.1.21367.100.1", Display: "Dialysis"},
			{Code: "clinic", CodingScheme: "urn:local"},
		},
		Organizations: []string{"urn:uuid:O1"},
		Record: csd.Record{Updated: time.Date(2024, 4, 30, 6, 20, 0, 0, time.UTC), CreatedRaw: "0000-00-00T00:00:00",
			UpdatedRaw: "2024-04-30T06:20:00Z", Status: "104-004", SourceDirectory: "http://hris"},
		Line: 5,
		Problems: []string{
			`record@created "0000-00-00T00:00:00" is not a date`,
			"record at line 16 ignored: the one at line 15 is used",
		},
	}
	noID := &csd.Entity{Kind: csd.KindFacility, Name: "No id", Line: 18, Problems: []string{"facility has no entityID, urn or oid"}}
	o1 := &csd.Entity{
		Kind: csd.KindOrganization, EntityID: "urn:uuid:O1", Name: "Bong", Parent: "urn:uuid:O0", Line: 22,
		CodedTypes: []csd.Code{{Code: "district", CodingScheme: "urn:level", Display: "District"}},
	}
	tests := []struct {
		name     string
		doc      string
		kind     csd.EntityKind
		want     []*csd.Entity
		wantRoot string
	}{
		{"facilities of a whole document", entityDoc, csd.KindFacility, []*csd.Entity{f1, noID}, "CSD"},
		{"organizations of a whole document", entityDoc, csd.KindOrganization, []*csd.Entity{o1}, "CSD"},
		{"bare facility", `<facility xmlns="urn:ihe:iti:csd:2013" entityID="f"><primaryName>F</primaryName></facility>`, csd.KindFacility,
			[]*csd.Entity{{Kind: csd.KindFacility, EntityID: "f", Name: "F", Line: 1}}, "facility"},
		{"bare organization without namespace, oid id", "\n<organization oid=\"1.2\"><parent oid=\"1\"/></organization>", csd.KindOrganization,
			[]*csd.Entity{{Kind: csd.KindOrganization, EntityID: "1.2", Parent: "1", Line: 2}}, "organization"},
		{"prefixed, other prefixes skipped", `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013" xmlns:x="urn:x"><csd:facilityDirectory>
<csd:facility entityID="f"><x:codedType code="no"/><csd:codedType code="yes" codingScheme="s">Y</csd:codedType></csd:facility>
<x:facility entityID="other"/></csd:facilityDirectory></csd:CSD>`, csd.KindFacility,
			[]*csd.Entity{{Kind: csd.KindFacility, EntityID: "f", Line: 2, CodedTypes: []csd.Code{{Code: "yes", CodingScheme: "s", Display: "Y"}}}}, "CSD"},
		{"2013 organisationDirectory is not CSD", `<CSD xmlns="urn:ihe:iti:csd:2013"><organisationDirectory><organization oid="1"/></organisationDirectory></CSD>`,
			csd.KindOrganization, nil, "CSD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*csd.Entity
			stats, err := csd.DecodeEntities(strings.NewReader(tt.doc), csd.Limits{}, tt.kind, func(e *csd.Entity) error {
				got = append(got, e)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				for i := range got {
					t.Logf("got %d: %+v", i, *got[i])
				}
				t.Errorf("want %d entities: %+v", len(tt.want), tt.want)
			}
			if stats.Entities != len(got) || stats.Providers != 0 || stats.Root != tt.wantRoot || stats.Bytes != int64(len(tt.doc)) {
				t.Errorf("stats = %+v", stats)
			}
		})
	}
}

func TestDecodeEntitiesErrors(t *testing.T) {
	stop := errors.New("stop")
	tests := []struct {
		name, doc string
		kind      csd.EntityKind
		fn        func(*csd.Entity) error
		lim       csd.Limits
		want      string
		wantIs    error
		entities  int
	}{
		{"unknown kind", entityDoc, "service", nil, csd.Limits{}, `csd: DecodeEntities: unknown entity kind "service"`, nil, 0},
		{"bare entity of the other kind", `<organization entityID="o"/>`, csd.KindFacility, nil, csd.Limits{},
			"csd: line 1: expected element CSD or facility, found organization", nil, 0},
		{"bare provider", `<provider entityID="p"/>`, csd.KindOrganization, nil, csd.Limits{},
			"csd: line 1: expected element CSD or organization, found provider", nil, 0},
		{"callback error stops and is wrapped", entityDoc, csd.KindFacility, func(*csd.Entity) error { return stop }, csd.Limits{},
			`csd: facility "urn:uuid:F1" at line 5: stop`, stop, 1},
		{"truncated", "<CSD>\n<facilityDirectory>\n<facility entityID='x'>\n</CSD>", csd.KindFacility, nil, csd.Limits{}, "csd: line 4:", nil, 0},
		{"element size", `<CSD><facilityDirectory><facility entityID="f"><primaryName>` + strings.Repeat("é", 600) + `</primaryName></facility></facilityDirectory></CSD>`,
			csd.KindFacility, nil, csd.Limits{MaxElementBytes: 1000}, "csd: line 1: element size limit exceeded (facility element longer than 1000 bytes)", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			fn := tt.fn
			if fn == nil {
				fn = func(*csd.Entity) error { return nil }
			}
			stats, err := csd.DecodeEntities(strings.NewReader(tt.doc), tt.lim, tt.kind, func(e *csd.Entity) error {
				calls++
				return fn(e)
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if calls != tt.entities || stats.Entities != calls {
				t.Errorf("%d calls, stats %+v", calls, stats)
			}
		})
	}
}

// TestDecodeEntitiesMemoryIsBounded streams facilities until the body size
// limit: the heap must not grow with them.
func TestDecodeEntitiesMemoryIsBounded(t *testing.T) {
	in := newEndless(`<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory>`,
		`<facility entityID="urn:uuid:0f000000-0000-4000-8000-000000000000"><codedType code="c" codingScheme="s">Clinic</codedType>`+
			`<primaryName>Centre de santé</primaryName><record created="2020-01-01T00:00:00Z" updated="2020-01-01T00:00:00Z" status="Active"/></facility>`)
	n := 0
	stats, err := csd.DecodeEntities(in, csd.Limits{MaxBytes: 32 << 20}, csd.KindFacility, func(*csd.Entity) error { n++; return nil })
	var le *csd.LimitError
	if !errors.As(err, &le) || le.Limit != "body size" {
		t.Fatalf("error %v, want the body size limit", err)
	}
	if n < 100_000 || stats.Entities != n {
		t.Errorf("%d facilities, stats %+v", n, stats)
	}
	if in.growth() > 64<<20 {
		t.Errorf("heap grew by %d bytes while decoding", in.growth())
	}
}

func ExampleDecodeEntities() {
	doc := `<CSD xmlns="urn:ihe:iti:csd:2013"><organizationDirectory>
<organization entityID="urn:uuid:c"><codedType code="chiefdom" codingScheme="urn:level"/><primaryName>Jorquelleh</primaryName><parent entityID="urn:uuid:d"/></organization>
</organizationDirectory></CSD>`
	_, err := csd.DecodeEntities(strings.NewReader(doc), csd.Limits{}, csd.KindOrganization, func(e *csd.Entity) error {
		fmt.Println(e.Name, e.CodedTypes[0].Code, e.Parent)
		return nil
	})
	fmt.Println(err)
	// Output:
	// Jorquelleh chiefdom urn:uuid:d
	// <nil>
}
