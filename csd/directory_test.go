package csd_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

func decodeDirectoryFile(t *testing.T, name string) *csd.Directory {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir, "openinfoman/service_directories", name))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("corpus file %s not found", name)
	}
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
		d := decodeDirectoryFile(t, "CSD-Facilities-Connectathon-20150120.xml")
		if len(d.Facilities) != 3 || len(d.Organizations) != 0 || len(d.Problems) != 0 {
			t.Fatalf("%d facilities, %d organizations, problems %q", len(d.Facilities), len(d.Organizations), d.Problems)
		}
		// Upper case: references are matched ignoring case.
		f, ok := d.Facility("URN:UUID:E9964293-E169-4298-B4D0-AB07BF0CD78F")
		if !ok {
			t.Fatal("radiology facility not found")
		}
		want := csd.Entity{
			EntityID:      "urn:uuid:e9964293-e169-4298-b4d0-ab07bf0cd78f",
			Name:          "Connectathon Radiology Facility",
			Organizations: []string{"urn:uuid:08c3286e-2163-462c-b77f-1f431d7351ab"},
			// The Billing address comes first; the contact persons' addresses are not the facility's.
			Address: map[string]string{"streetAddress": "1234 Cactus Way", "city": "Santa Fe", "stateProvince": "NM", "country": "USA", "postalCode": "87501"},
		}
		if !reflect.DeepEqual(f, want) {
			t.Errorf("facility = %+v\nwant %+v", f, want)
		}
		if f, _ := d.Facility("urn:uuid:a3eb03db-0094-4059-9156-8de081cb5885"); f.Name != "Connectathon Dialysis Facility One" {
			t.Errorf("dialysis facility = %+v", f)
		}
	})
	t.Run("organizations 2015 keep non-ASCII text", func(t *testing.T) {
		d := decodeDirectoryFile(t, "CSD-Organizations-Connectathon-20150120.xml")
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
				if f, _ := d.Facility("f1"); len(d.Facilities) != 1 || f.Name != "First" {
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
