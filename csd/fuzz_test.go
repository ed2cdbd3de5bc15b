package csd_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

// fuzzLimits keep each input cheap; the limits themselves are under test too.
var fuzzLimits = csd.Limits{MaxBytes: 1 << 20, MaxDepth: 32}

// addSeeds seeds f with the corpus documents (the Connectathon ones
// included) small enough to mutate usefully, and with the irregular forms of the table tests.
func addSeeds(f *testing.F) {
	for _, path := range corpusFiles(f) {
		if b, err := os.ReadFile(path); err == nil && len(b) < 32<<10 {
			f.Add(b)
		}
	}
	for _, doc := range []string{
		entityDoc,
		`<svs:RetrieveValueSetResponse xmlns:svs="urn:ihe:iti:svs:2008"><svs:ValueSet><svs:ConceptList><svs:Concept code="a" displayName="b"/></svs:ConceptList></svs:ValueSet></svs:RetrieveValueSetResponse>`,
		wrapCSD(`<provider urn="u"><facilities><facility entityID=""/></facilities><record created="0000-00-00T00:00:00" updated="2013-10-01T14:53:36"/></provider>`),
		`<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:providerDirectory><csd:provider oid="1"/></csd:providerDirectory></csd:CSD>`,
		`<provider entityID="e"><demographic><name><commonName>a</commonName><commonName>b</commonName></name></demographic></provider>`,
		`<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory><facility entityID="f"><primaryName>é</primaryName><address><addressLine component="city">x</addressLine></address></facility></facilityDirectory></CSD>`,
	} {
		f.Add([]byte(doc))
	}
}

func FuzzDecodeProviders(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		calls := 0
		stats, err := csd.DecodeProviders(bytes.NewReader(doc), fuzzLimits, func(p *csd.Provider) error {
			calls++
			if p.Line < 1 {
				t.Errorf("provider %q has line %d", p.EntityID, p.Line)
			}
			if p.EntityID == "" && len(p.Problems) == 0 {
				t.Errorf("provider without identity and without a problem")
			}
			return nil
		})
		if stats.Providers != calls {
			t.Errorf("stats.Providers = %d, callback saw %d", stats.Providers, calls)
		}
		if stats.Bytes > int64(len(doc)) {
			t.Errorf("read %d bytes of %d", stats.Bytes, len(doc))
		}
		if err == nil && stats.Root != "CSD" && stats.Root != "provider" {
			t.Errorf("accepted root %q", stats.Root)
		}
	})
}

func FuzzDecodeDirectory(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		d, err := csd.DecodeDirectory(bytes.NewReader(doc), fuzzLimits)
		if err != nil {
			return
		}
		for key, e := range d.Facilities {
			if key == "" || csd.NormalizeID(e.EntityID) != key {
				t.Errorf("facility %q filed under %q", e.EntityID, key)
			}
		}
		for key, e := range d.Organizations {
			if key == "" || csd.NormalizeID(e.EntityID) != key {
				t.Errorf("organization %q filed under %q", e.EntityID, key)
			}
		}
	})
}

func FuzzDecodeEntities(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, kind := range []csd.EntityKind{csd.KindFacility, csd.KindOrganization} {
			calls := 0
			stats, err := csd.DecodeEntities(bytes.NewReader(doc), fuzzLimits, kind, func(e *csd.Entity) error {
				calls++
				if e.Kind != kind || e.Line < 1 {
					t.Errorf("%s %q: kind %q, line %d", kind, e.EntityID, e.Kind, e.Line)
				}
				if e.EntityID == "" && len(e.Problems) == 0 {
					t.Errorf("%s without identity and without a problem", kind)
				}
				return nil
			})
			if stats.Entities != calls || stats.Providers != 0 {
				t.Errorf("stats %+v, callback saw %d", stats, calls)
			}
			if stats.Bytes > int64(len(doc)) {
				t.Errorf("read %d bytes of %d", stats.Bytes, len(doc))
			}
			if err == nil && stats.Root != "CSD" && stats.Root != string(kind) {
				t.Errorf("accepted root %q for %s", stats.Root, kind)
			}
		}
	})
}

func FuzzDecodeValueSet(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		concepts, err := csd.DecodeValueSet(bytes.NewReader(doc))
		if err != nil && concepts != nil {
			t.Errorf("concepts %q with error %v", concepts, err)
		}
		if _, ok := concepts[""]; ok {
			t.Error("a concept without a code was kept")
		}
	})
}
