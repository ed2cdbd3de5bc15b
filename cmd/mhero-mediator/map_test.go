package main

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	connectathonDir   = corpus + "/openinfoman/service_directories/"
	providerTypeCodes = corpus + "/openinfoman/svs/1.3.6.1.4.1.21367.200.105-providerTypeCode.xml"
	demoFixture       = "../../testdata/providers-demo.xml"
	mammographer      = "urn:uuid:9a879858-8e96-486b-a2be-05a580f0e6ee"
)

// targetingKeys are the keys of every line's targeting object with the
// default labels.
var targetingKeys = []string{"cadre", "district", "facility", "facility_id", "language", "specialty"}

// The Connectathon providers with their companion directories given by
// flag: the Mammographer works at the Radiology Facility, every line has
// the whole targeting object, and the summary counts what did not resolve
// (the organizations have no parents, so no district).
func TestMapTargetingConnectathon(t *testing.T) {
	lines, summary, err := runMapCommand(t, "--country", "US",
		"--facilities", connectathonDir+"CSD-Facilities-Connectathon-20150120.xml",
		"--organizations", connectathonDir+"CSD-Organizations-Connectathon-20150120.xml",
		connectathonDir+"CSD-Providers-Connectathon-20150120.xml")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 9 {
		t.Fatalf("%d lines, want 9", len(lines))
	}
	found := false
	for _, l := range lines {
		if keys := slices.Sorted(maps.Keys(l.Targeting)); !slices.Equal(keys, targetingKeys) {
			t.Errorf("%s: targeting keys %v, want %v", l.EntityID, keys, targetingKeys)
		}
		if l.EntityID != mammographer {
			continue
		}
		found = true
		want := map[string]string{
			"cadre": "Physician/Mammographer", "facility": "Connectathon Radiology Facility",
			"facility_id": "urn:uuid:e9964293-e169-4298-b4d0-ab07bf0cd78f", "district": "", "specialty": "109-005", "language": "eng",
		}
		for k, v := range want {
			if l.Targeting[k] != v {
				t.Errorf("Mammographer %s = %q, want %q", k, l.Targeting[k], v)
			}
		}
		if l.Contact == nil || l.Contact.Fields["facility"] != want["facility"] {
			t.Errorf("the Mammographer's contact does not carry the facility: %+v", l.Contact)
		}
	}
	if !found {
		t.Fatalf("no line for the Mammographer %s", mammographer)
	}
	for _, want := range []string{"9 providers, 9 contacts, 0 skipped", "3 facilities, 5 organizations", "unresolved references (no_district 9)"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary %q lacks %q", summary, want)
		}
	}

	// Without the directories the reference dangles, and says so.
	lines, summary, err = runMapCommand(t, "--country", "US", connectathonDir+"CSD-Providers-Connectathon-20150120.xml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(summary, "dangling_facility 1") {
		t.Errorf("summary %q does not count the dangling facility", summary)
	}
	for _, l := range lines {
		if l.EntityID == mammographer && l.Targeting["facility"] != "" {
			t.Errorf("facility %q without a facility directory", l.Targeting["facility"])
		}
	}
}

// The district follows --district-level and --district-code through the
// demo fixture's Liberia > district > chiefdom > facility hierarchy, read
// from the providers' own document; labels rename the keys; skipped
// providers are resolved too.
func TestMapTargetingDistrict(t *testing.T) {
	const (
		mary  = "urn:uuid:7d1e2c00-0000-4000-8000-000000000001" // Kakata Health Center
		moses = "urn:uuid:7d1e2c00-0000-4000-8000-000000000010" // no phone
	)
	tests := []struct {
		name    string
		args    []string
		entity  string
		key     string
		want    string
		summary string
	}{
		{"default level 2 is the district", nil, mary, "district", "Kakata", "3 facilities, 5 organizations"},
		{"level 1 is the country", []string{"--district-level", "1"}, mary, "district", "Liberia", ""},
		{"level 3 is the chiefdom", []string{"--district-level", "3"}, mary, "district", "Kakata Chiefdom", ""},
		{"level 5 is below the hierarchy", []string{"--district-level", "5"}, mary, "district", "", "no_district 23"},
		{"by code", []string{"--district-code", "district"}, mary, "district", "Kakata", ""},
		{"by another code", []string{"--district-code", "CHIEFDOM"}, mary, "district", "Kakata Chiefdom", ""},
		{"a label renames the key", []string{"--field-label", "district=County"}, mary, "county", "Kakata", ""},
		{"the old key is gone", []string{"--field-label", "district=County"}, mary, "district", "", ""},
		{"a skipped provider is resolved", nil, moses, "facility", "Kakata Health Center", "skipped (invalid_phone 1, no_phone 1)"},
		{"its cadre too", nil, moses, "cadre", "Medical Doctor", ""},
		{"a cadre scheme nobody uses", []string{"--cadre-scheme", "urn:other"}, mary, "cadre", "", ""},
		{"the scheme in use", []string{"--cadre-scheme", "URN:MHERO:LR:CADRE"}, mary, "cadre", "Midwife", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines, summary, err := runMapCommand(t, append(tc.args, demoFixture)...)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(lines, func(l mapLine) bool { return l.EntityID == tc.entity })
			if i < 0 {
				t.Fatalf("no line for %s", tc.entity)
			}
			if got := lines[i].Targeting[tc.key]; got != tc.want {
				t.Errorf("%s = %q, want %q (targeting %v)", tc.key, got, tc.want, lines[i].Targeting)
			}
			if !strings.Contains(summary, tc.summary) {
				t.Errorf("summary %q lacks %q", summary, tc.summary)
			}
		})
	}
}

// --cadre-names names the cadre of a registry whose providers carry the
// code only.
func TestMapCadreNames(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "codes.xml")
	err := os.WriteFile(doc, []byte(`<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>
<provider entityID="urn:uuid:c0de0000-0000-4000-8000-000000000001">
  <codedType code="105-003" codingScheme="1.3.6.1.4.1.21367.100.1"/>
  <demographic><contactPoint><codedType code="BP" codingScheme="urn:ihe:iti:csd:2013:contactPoint">0777123401</codedType></contactPoint></demographic>
</provider></providerDirectory></CSD>`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"the code without names", nil, "105-003"},
		{"the name from the value set", []string{"--cadre-names", providerTypeCodes}, "Nurse Practitioner"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines, _, err := runMapCommand(t, append(tc.args, doc)...)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != 1 || lines[0].Targeting["cadre"] != tc.want {
				t.Fatalf("lines %+v, want cadre %q", lines, tc.want)
			}
		})
	}
}

func TestMapTargetingErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"district level 0", []string{"--district-level", "0", demoFixture}, "--district-level 0"},
		{"missing facility file", []string{"--facilities", "absent.xml", demoFixture}, "facility directory: open absent.xml"},
		{"organizations that are not CSD", []string{"--organizations", corpus + "/README.md", demoFixture}, "organization directory " + corpus + "/README.md"},
		{"cadre names that are not a value set", []string{"--cadre-names", demoFixture, demoFixture}, "cadre-names"},
		{"a label RapidPro refuses", []string{"--field-label", "cadre=Cadre (HR)", demoFixture}, "letters, digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runMapCommand(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
