package csd_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

func fingerprintBase() csd.Provider {
	return csd.Provider{
		EntityID:      "urn:uuid:a",
		OtherIDs:      []csd.OtherID{{Code: "c", AssigningAuthorityName: "a", Value: "v"}},
		CodedTypes:    []csd.Code{{Code: "c", CodingScheme: "s", Display: "d"}},
		Names:         []csd.Name{{CommonNames: []string{"n"}, Honorific: "h", Forenames: []string{"f"}, Surname: "s"}},
		ContactPoints: []csd.ContactPoint{{Code: "BP", CodingScheme: "s", Value: "0777"}},
		Languages:     []csd.Code{{Code: "en", CodingScheme: "s", Display: "English"}},
		Facilities:    []string{"f"},
		Organizations: []string{"o"},
		Specialties:   []csd.Code{{Code: "s"}},
		Record:        csd.Record{Created: time.Unix(1, 0), Updated: time.Unix(2, 0), CreatedRaw: "1", UpdatedRaw: "2", Status: "Active", SourceDirectory: "d"},
		Line:          3,
		Problems:      []string{"p"},
	}
}

// Every value a provider carries changes its fingerprint, except the
// record's dates and the provider's line, and values never run together.
func TestFingerprint(t *testing.T) {
	tests := []struct {
		name  string
		alter func(p *csd.Provider)
		moves bool
	}{
		{"entity id", func(p *csd.Provider) { p.EntityID += "x" }, true},
		{"other id code", func(p *csd.Provider) { p.OtherIDs[0].Code += "x" }, true},
		{"other id authority", func(p *csd.Provider) { p.OtherIDs[0].AssigningAuthorityName += "x" }, true},
		{"other id value", func(p *csd.Provider) { p.OtherIDs[0].Value += "x" }, true},
		{"other id added", func(p *csd.Provider) { p.OtherIDs = append(p.OtherIDs, csd.OtherID{}) }, true},
		{"cadre code", func(p *csd.Provider) { p.CodedTypes[0].Code += "x" }, true},
		{"cadre scheme", func(p *csd.Provider) { p.CodedTypes[0].CodingScheme += "x" }, true},
		{"cadre display", func(p *csd.Provider) { p.CodedTypes[0].Display += "x" }, true},
		{"common name", func(p *csd.Provider) { p.Names[0].CommonNames[0] += "x" }, true},
		{"honorific", func(p *csd.Provider) { p.Names[0].Honorific += "x" }, true},
		{"forename", func(p *csd.Provider) { p.Names[0].Forenames[0] += "x" }, true},
		{"surname", func(p *csd.Provider) { p.Names[0].Surname += "x" }, true},
		{"contact code", func(p *csd.Provider) { p.ContactPoints[0].Code = "FAX" }, true},
		{"contact scheme", func(p *csd.Provider) { p.ContactPoints[0].CodingScheme += "x" }, true},
		{"phone", func(p *csd.Provider) { p.ContactPoints[0].Value += "1" }, true},
		{"language", func(p *csd.Provider) { p.Languages[0].Code = "fr" }, true},
		{"facility", func(p *csd.Provider) { p.Facilities[0] += "x" }, true},
		{"organization", func(p *csd.Provider) { p.Organizations[0] += "x" }, true},
		{"specialty", func(p *csd.Provider) { p.Specialties = nil }, true},
		{"status", func(p *csd.Provider) { p.Record.Status = "106-002" }, true},
		{"source directory", func(p *csd.Provider) { p.Record.SourceDirectory += "x" }, true},
		{"problems", func(p *csd.Provider) { p.Problems = nil }, true},
		{"values run together", func(p *csd.Provider) { p.Facilities, p.Organizations = nil, []string{"f", "o"} }, true},
		{"created", func(p *csd.Provider) { p.Record.Created, p.Record.CreatedRaw = time.Unix(5, 0), "5" }, false},
		{"updated", func(p *csd.Provider) { p.Record.Updated, p.Record.UpdatedRaw = time.Unix(6, 0), "6" }, false},
		{"line", func(p *csd.Provider) { p.Line = 99 }, false},
	}
	base := fingerprintBase()
	want := base.Fingerprint()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fingerprintBase()
			tt.alter(&p)
			if moved := p.Fingerprint() != want; moved != tt.moves {
				t.Errorf("fingerprint moved: %v, want %v", moved, tt.moves)
			}
		})
	}
}

// A field added to a provider must be added to Fingerprint (and to the
// table above) or be exempted there, else a changed record would pass for
// an unchanged one and never be synced.
func TestFingerprintKnowsEveryField(t *testing.T) {
	for _, c := range []struct {
		v      any
		fields int
	}{
		{csd.Provider{}, 12}, {csd.OtherID{}, 3}, {csd.Code{}, 3}, {csd.Name{}, 4}, {csd.ContactPoint{}, 3}, {csd.Record{}, 6},
	} {
		if n := reflect.TypeOf(c.v).NumField(); n != c.fields {
			t.Errorf("%T has %d fields, Fingerprint knows %d", c.v, n, c.fields)
		}
	}
}
