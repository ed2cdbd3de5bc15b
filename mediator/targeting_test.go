package mediator

import (
	"maps"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

// hierarchy is a country → district → chiefdom → facility tree, with the
// irregular forms real exports have: a cycle, a dangling parent, a flat
// organization, and DHIS2-style level codes.
func hierarchy() *Directory {
	d := NewDirectory()
	org := func(id, name, parent, code string) {
		e := &csd.Entity{EntityID: id, Name: name, Parent: parent}
		if code != "" {
			e.CodedTypes = []csd.Code{{Code: code, CodingScheme: "dhis2:orgUnitLevel"}}
		}
		d.Add(csd.KindOrganization, e)
	}
	org("urn:uuid:sl", "Sierra Leone", "", "level1")
	org("urn:uuid:bo", "Bo", "urn:uuid:sl", "level2")
	org("urn:uuid:kenema", "Kenema", "urn:uuid:sl", "level2")
	org("urn:uuid:badjia", "Badjia", "urn:uuid:bo", "level3")
	org("urn:uuid:nongowa", "Nongowa", "urn:uuid:kenema", "level3")
	org("urn:uuid:loop-a", "Loop A", "urn:uuid:loop-b", "")
	org("urn:uuid:loop-b", "Loop B", "urn:uuid:loop-a", "")
	org("urn:uuid:orphan", "Orphan", "urn:uuid:missing", "")
	org("urn:uuid:flat", "Flat NGO", "", "")
	d.Add(csd.KindFacility, &csd.Entity{EntityID: "urn:uuid:ngalu", Name: "Ngalu CHC", Organizations: []string{"urn:uuid:badjia"}})
	d.Add(csd.KindFacility, &csd.Entity{EntityID: "URN:UUID:KENEMA-GH", Name: "Kenema Government Hospital", Organizations: []string{"urn:uuid:nongowa"}})
	return d
}

func TestTargetingResolves(t *testing.T) {
	midwife := []csd.Code{{Code: "MW", CodingScheme: "local", Display: " Midwife "}}
	tests := []struct {
		name       string
		settings   TargetingSettings
		provider   csd.Provider
		want       map[string]string
		wantLang   string
		wantCounts map[string]int
	}{
		{
			name:     "through a facility",
			provider: csd.Provider{CodedTypes: midwife, Facilities: []string{"urn:uuid:ngalu"}},
			want:     map[string]string{"cadre": "Midwife", "facility": "Ngalu CHC", "facility_id": "urn:uuid:ngalu", "district": "Bo"},
		},
		{
			name:     "through an organization",
			provider: csd.Provider{Organizations: []string{"urn:uuid:badjia"}},
			want:     map[string]string{"district": "Bo"},
		},
		{
			name:     "through both: the provider's own organization first",
			provider: csd.Provider{Facilities: []string{"urn:uuid:kenema-gh"}, Organizations: []string{"urn:uuid:badjia"}},
			want:     map[string]string{"facility": "Kenema Government Hospital", "facility_id": "URN:UUID:KENEMA-GH", "district": "Bo"}, // the directory's spelling
		},
		{
			name:     "the district organization itself",
			provider: csd.Provider{Organizations: []string{"URN:UUID:BO"}},
			want:     map[string]string{"district": "Bo"},
		},
		{
			name:       "empty and dangling facilities are skipped and counted",
			provider:   csd.Provider{Facilities: []string{"urn:uuid:gone", "urn:uuid:ngalu"}},
			want:       map[string]string{"facility": "Ngalu CHC", "facility_id": "urn:uuid:ngalu", "district": "Bo"},
			wantCounts: map[string]int{TargetDanglingFacility: 1},
		},
		{
			name:       "a cycle is tolerated; the next organization resolves",
			provider:   csd.Provider{Organizations: []string{"urn:uuid:loop-a", "urn:uuid:nongowa"}},
			want:       map[string]string{"district": "Kenema"},
			wantCounts: map[string]int{TargetHierarchyCycle: 1},
		},
		{
			name:       "a dangling parent and a flat organization give no district",
			provider:   csd.Provider{Organizations: []string{"urn:uuid:orphan", "urn:uuid:flat", "urn:uuid:nowhere"}},
			want:       map[string]string{},
			wantCounts: map[string]int{TargetDanglingParent: 1, TargetDanglingOrganization: 1, TargetNoDistrict: 1},
		},
		{
			name:     "level 3 is the chiefdom",
			settings: TargetingSettings{DistrictLevel: 3},
			provider: csd.Provider{Facilities: []string{"urn:uuid:ngalu"}},
			want:     map[string]string{"facility": "Ngalu CHC", "facility_id": "urn:uuid:ngalu", "district": "Badjia"},
		},
		{
			name:     "the district by its organization type code",
			settings: TargetingSettings{DistrictCode: "level2"},
			provider: csd.Provider{Organizations: []string{"urn:uuid:nongowa"}},
			want:     map[string]string{"district": "Kenema"},
		},
		{
			name:     "cadre of the configured scheme, by value set name; specialties sorted; language to ISO 639-3",
			settings: TargetingSettings{CadreScheme: "1.3.6.1.4.1.21367.100.1"},
			provider: csd.Provider{
				CodedTypes:  []csd.Code{{Code: "CHW", CodingScheme: "local", Display: "Community health worker"}, {Code: "105-114", CodingScheme: "1.3.6.1.4.1.21367.100.1"}},
				Specialties: []csd.Code{{Code: "109-005"}, {Code: "x", Display: "Anaesthesia"}, {Code: "109-005"}},
				Languages:   []csd.Code{{Code: "xx-invalid"}, {Code: "fr", CodingScheme: "BCP 47"}},
			},
			want:     map[string]string{"cadre": "Radiology Technician", "specialty": "109-005, Anaesthesia"},
			wantLang: "fra",
		},
		{
			name:     "a code without a name stays a code; a three-letter language is kept",
			provider: csd.Provider{CodedTypes: []csd.Code{{Code: "PPS"}}, Languages: []csd.Code{{Code: "eng"}}},
			want:     map[string]string{"cadre": "PPS"},
			wantLang: "eng",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := &Targeting{Settings: tc.settings, Directory: hierarchy(), CadreNames: map[string]string{"105-114": "Radiology Technician"}}
			got, lang := tg.resolve(&tc.provider)
			want := map[string]string{"cadre": "", "facility": "", "facility_id": "", "district": "", "specialty": ""}
			maps.Copy(want, tc.want)
			if !maps.Equal(got, want) {
				t.Errorf("fields %v, want %v", got, want)
			}
			if lang != tc.wantLang {
				t.Errorf("language %q, want %q", lang, tc.wantLang)
			}
			if tc.wantCounts == nil {
				tc.wantCounts = map[string]int{}
			}
			if tg.Counts == nil {
				tg.Counts = map[string]int{}
			}
			if !maps.Equal(tg.Counts, tc.wantCounts) {
				t.Errorf("counts %v, want %v", tg.Counts, tc.wantCounts)
			}
		})
	}
}

func TestTargetingSettings(t *testing.T) {
	tests := []struct {
		name    string
		fields  map[string]FieldSpec
		problem string
	}{
		{name: "defaults"},
		{name: "a label of its own", fields: map[string]FieldSpec{"cadre": {Label: "Health Worker Cadre"}}},
		{name: "a key and its label", fields: map[string]FieldSpec{"district": {Key: "mhero_district", Label: "mHero District"}}},
		{name: "a key RapidPro would not derive", fields: map[string]FieldSpec{"district": {Key: "dist", Label: "District"}}, problem: `derives the key "district"`},
		{name: "a clash with globalid", fields: map[string]FieldSpec{"cadre": {Label: "GlobalID"}}, problem: "share the key"},
		{name: "two fields on one key", fields: map[string]FieldSpec{"facility": {Label: "Place"}, "district": {Label: "Place"}}, problem: "share the key"},
		{name: "an unknown field", fields: map[string]FieldSpec{"region": {Label: "Region"}}, problem: "is not one of"},
		{name: "a label RapidPro refuses", fields: map[string]FieldSpec{"cadre": {Label: "Cadre (HR)"}}, problem: "letters, digits"},
		{name: "a reserved key", fields: map[string]FieldSpec{"cadre": {Label: "Created On"}}, problem: "reserves"},
		{name: "a key search reads as an attribute", fields: map[string]FieldSpec{"cadre": {Label: "Name"}}, problem: "contact attribute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			problems := strings.Join(TargetingSettings{Fields: tc.fields}.validate(), "; ")
			if tc.problem == "" && problems != "" || !strings.Contains(problems, tc.problem) {
				t.Fatalf("problems %q, want one with %q", problems, tc.problem)
			}
		})
	}
}
