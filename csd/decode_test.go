package csd_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

// decodeAll collects the providers of doc, failing the test on error.
func decodeAll(t *testing.T, doc string) ([]*csd.Provider, csd.DocumentStats) {
	t.Helper()
	var got []*csd.Provider
	stats, err := csd.DecodeProviders(strings.NewReader(doc), csd.Limits{}, func(p *csd.Provider) error {
		got = append(got, p)
		return nil
	})
	if err != nil {
		t.Fatalf("DecodeProviders: %v", err)
	}
	if stats.Providers != len(got) {
		t.Fatalf("stats.Providers = %d, callback saw %d", stats.Providers, len(got))
	}
	return got, stats
}

func wrapCSD(providers string) string {
	return `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>` + providers + `</providerDirectory></CSD>`
}

func TestDecodeProvidersTolerance(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, ps []*csd.Provider)
	}{
		{
			name: "csd prefix",
			doc: `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:providerDirectory>
<csd:provider entityID="urn:uuid:A1"><csd:demographic><csd:name><csd:commonName>Prefixed</csd:commonName></csd:name></csd:demographic></csd:provider>
</csd:providerDirectory></csd:CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "urn:uuid:A1")
				if got := ps[0].Names[0].CommonNames; !reflect.DeepEqual(got, []string{"Prefixed"}) {
					t.Errorf("CommonNames = %q", got)
				}
			},
		},
		{
			name: "other prefix bound to the CSD namespace",
			doc:  `<x:CSD xmlns:x="urn:ihe:iti:csd:2013"><x:providerDirectory><x:provider entityID="e1"/></x:providerDirectory></x:CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
			},
		},
		{
			name: "no namespace",
			doc:  `<CSD><providerDirectory><provider entityID="e1"/></providerDirectory></CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
			},
		},
		{
			name: "csd prefix bound to another namespace is not CSD",
			doc:  `<CSD xmlns="urn:ihe:iti:csd:2013" xmlns:csd="urn:other"><providerDirectory><csd:provider entityID="foreign"/><provider entityID="e1"/></providerDirectory></CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
			},
		},
		{
			name: "urn instead of entityID",
			doc:  wrapCSD(`<provider urn="urn:uuid:legacy"/>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "urn:uuid:legacy")
				wantNoProblems(t, ps[0])
			},
		},
		{
			name: "oid instead of entityID",
			doc:  wrapCSD(`<provider oid="1.2.3.4"/>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "1.2.3.4")
			},
		},
		{
			name: "entityID wins over urn and empty entityID falls back",
			doc:  wrapCSD(`<provider entityID="e1" urn="u1"/><provider entityID=" " urn="u2"/>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				if len(ps) != 2 || ps[0].EntityID != "e1" || ps[1].EntityID != "u2" {
					t.Fatalf("ids = %v", ids(ps))
				}
			},
		},
		{
			name: "no identity is delivered with a problem",
			doc:  wrapCSD(`<provider><demographic><name><commonName>Nobody</commonName></name></demographic></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "")
				wantProblem(t, ps[0], "provider has no entityID, urn or oid")
			},
		},
		{
			name: "upper-case uuid keeps its case, key is lower",
			doc:  wrapCSD(`<provider entityID=" urn:uuid:ABC-DEF "/>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "urn:uuid:ABC-DEF")
				if ps[0].Key() != "urn:uuid:abc-def" {
					t.Errorf("Key = %q", ps[0].Key())
				}
			},
		},
		{
			name: "two forenames and three commonNames in order",
			doc: wrapCSD(`<provider entityID="e1"><demographic><name>
<commonName>Kollie, Musu</commonName><commonName></commonName><commonName>Musu Kollie</commonName><commonName>M. Kollie</commonName>
<forename>Musu</forename><forename>Grace</forename><surname>Kollie</surname><honorific>Dr.</honorific></name></demographic></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				want := csd.Name{CommonNames: []string{"Kollie, Musu", "Musu Kollie", "M. Kollie"}, Forenames: []string{"Musu", "Grace"}, Surname: "Kollie", Honorific: "Dr."}
				if !reflect.DeepEqual(ps[0].Names, []csd.Name{want}) {
					t.Errorf("Names = %+v", ps[0].Names)
				}
			},
		},
		{
			name: "missing codedType",
			doc:  wrapCSD(`<provider entityID="e1"><demographic/></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				if len(ps[0].CodedTypes) != 0 {
					t.Errorf("CodedTypes = %v", ps[0].CodedTypes)
				}
				wantNoProblems(t, ps[0])
			},
		},
		{
			name: "impossible dates",
			doc:  wrapCSD(`<provider entityID="e1"><record created="0000-00-00T00:00:00" updated="0000-00-00T00:00:00" status="Active"/></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				r := ps[0].Record
				if !r.Created.IsZero() || !r.Updated.IsZero() {
					t.Errorf("times = %v, %v; want zero", r.Created, r.Updated)
				}
				if r.CreatedRaw != "0000-00-00T00:00:00" || r.UpdatedRaw != "0000-00-00T00:00:00" {
					t.Errorf("raw = %q, %q", r.CreatedRaw, r.UpdatedRaw)
				}
				wantProblem(t, ps[0], `record@created "0000-00-00T00:00:00" is not a date`)
				wantProblem(t, ps[0], `record@updated "0000-00-00T00:00:00" is not a date`)
				if r.State() != csd.StatusActive {
					t.Errorf("State = %v", r.State())
				}
			},
		},
		{
			name: "dates with zone, without zone and with fractional seconds",
			doc: wrapCSD(`<provider entityID="e1"><record created="2014-12-01T14:00:00+00:00" updated="2013-10-01T14:53:36" status="106-001"/></provider>
<provider entityID="e2"><record created="2024-04-30T06:20:00.123Z" updated="2024-04-30T08:20:00.5+02:00" status="active"/></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				wantTimes := []time.Time{
					time.Date(2014, 12, 1, 14, 0, 0, 0, time.UTC), time.Date(2013, 10, 1, 14, 53, 36, 0, time.UTC),
					time.Date(2024, 4, 30, 6, 20, 0, 123e6, time.UTC), time.Date(2024, 4, 30, 6, 20, 0, 5e8, time.UTC),
				}
				got := []time.Time{ps[0].Record.Created, ps[0].Record.Updated, ps[1].Record.Created, ps[1].Record.Updated}
				for i := range got {
					if !got[i].Equal(wantTimes[i]) {
						t.Errorf("time %d = %v, want %v", i, got[i], wantTimes[i])
					}
				}
				wantNoProblems(t, ps[0])
				wantNoProblems(t, ps[1])
			},
		},
		{
			name: "empty references are dropped with a problem",
			doc: wrapCSD(`<provider entityID="e1"><facilities><facility entityID=""/><facility entityID="f1"/></facilities>
<organizations><organization entityID=" "/><organization urn="o1"/></organizations></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				p := ps[0]
				if !reflect.DeepEqual(p.Facilities, []string{"f1"}) || !reflect.DeepEqual(p.Organizations, []string{"o1"}) {
					t.Errorf("Facilities = %q, Organizations = %q", p.Facilities, p.Organizations)
				}
				wantProblem(t, p, "facility reference at line 1 has no entityID; ignored")
				wantProblem(t, p, "organization reference at line 2 has no entityID; ignored")
			},
		},
		{
			name: "otherID with text and with attributes only",
			doc:  wrapCSD(`<provider entityID="e1"><otherID code="c1" assigningAuthorityName="a1">v1</otherID><otherID code="c2" assigningAuthorityName="a2"/></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				want := []csd.OtherID{{Code: "c1", AssigningAuthorityName: "a1", Value: "v1"}, {Code: "c2", AssigningAuthorityName: "a2"}}
				if !reflect.DeepEqual(ps[0].OtherIDs, want) {
					t.Errorf("OtherIDs = %+v", ps[0].OtherIDs)
				}
			},
		},
		{
			name: "unknown elements, extensions and foreign namespaces are skipped",
			doc: `<CSD xmlns="urn:ihe:iti:csd:2013" xmlns:lr="urn:liberia"><lr:meta><provider entityID="not-a-provider"/></lr:meta><providerDirectory>
<lr:note>ignore</lr:note><provider entityID="e1"><extension type="position"><position title="Nurse"><codedType code="X"/></position></extension>
<lr:codedType code="foreign"/><credential><codedType code="108-001"/><number>1</number></credential><codedType code="CHW" codingScheme="s">Community Health Worker</codedType></provider>
</providerDirectory><lr:trailer/></CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
				want := []csd.Code{{Code: "CHW", CodingScheme: "s", Display: "Community Health Worker"}}
				if !reflect.DeepEqual(ps[0].CodedTypes, want) {
					t.Errorf("CodedTypes = %+v", ps[0].CodedTypes)
				}
			},
		},
		{
			name: "elements in any order",
			doc: wrapCSD(`<provider entityID="e1"><record updated="2020-01-01T00:00:00Z" status="106-002"/><language code="en">English</language>
<demographic><contactPoint><codedType code="BP">0777 123 456</codedType></contactPoint><name><commonName>Late Name</commonName></name></demographic>
<specialty code="109-003"/><codedType code="CHW"/><otherID code="c">v</otherID></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				p := ps[0]
				if p.Record.State() != csd.StatusInactive || len(p.Languages) != 1 || len(p.Names) != 1 ||
					len(p.Specialties) != 1 || len(p.CodedTypes) != 1 || len(p.OtherIDs) != 1 {
					t.Errorf("provider = %+v", p)
				}
				if got := p.ContactValues(csd.ContactPhone); !reflect.DeepEqual(got, []string{"0777 123 456"}) {
					t.Errorf("phones = %q", got)
				}
			},
		},
		{
			name: "directories in any order, several providerDirectories",
			doc: `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID="e1"/></providerDirectory>
<facilityDirectory><facility entityID="f1"/></facilityDirectory><providerDirectory><provider entityID="e2"/></providerDirectory></CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				if got := ids(ps); !reflect.DeepEqual(got, []string{"e1", "e2"}) {
					t.Errorf("ids = %q", got)
				}
			},
		},
		{
			name: "contact points: BP, FAX, EMAIL, empty and uncoded",
			doc: wrapCSD(`<provider entityID="e1"><demographic>
<contactPoint><codedType code="BP" codingScheme="urn:ihe:iti:csd:2013:contactPoint"> 555-777-1111 </codedType></contactPoint>
<contactPoint><codedType code="FAX">555-888-1111</codedType></contactPoint>
<contactPoint><codedType code="EMAIL">a@example.org</codedType></contactPoint>
<contactPoint><codedType code="BP"></codedType></contactPoint>
<contactPoint><equipment>phone</equipment></contactPoint>
</demographic></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				p := ps[0]
				want := []csd.ContactPoint{
					{Code: "BP", CodingScheme: "urn:ihe:iti:csd:2013:contactPoint", Value: "555-777-1111"},
					{Code: "FAX", Value: "555-888-1111"},
					{Code: "EMAIL", Value: "a@example.org"},
				}
				if !reflect.DeepEqual(p.ContactPoints, want) {
					t.Errorf("ContactPoints = %+v", p.ContactPoints)
				}
				wantProblem(t, p, "contactPoint BP at line 5 has no value; ignored")
				wantProblem(t, p, "contactPoint at line 6 has no codedType; ignored")
			},
		},
		{
			name: "second record is reported",
			doc:  wrapCSD(`<provider entityID="e1"><record status="Active"/><record status="Inactive"/></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				if ps[0].Record.Status != "Active" {
					t.Errorf("Status = %q", ps[0].Record.Status)
				}
				wantProblem(t, ps[0], "record at line 1 ignored: the one at line 1 is used")
			},
		},
		{
			name: "non-ASCII, entities and CDATA",
			doc:  wrapCSD(`<provider entityID="e1"><demographic><name><commonName>Hélène &amp; Diálisis <![CDATA[<général>]]></commonName></name></demographic></provider>`),
			check: func(t *testing.T, ps []*csd.Provider) {
				if got := ps[0].Names[0].CommonNames[0]; got != "Hélène & Diálisis <général>" {
					t.Errorf("commonName = %q", got)
				}
			},
		},
		{
			name: "bare provider root without namespace",
			doc:  `<?xml version="1.0"?><!-- fragment --><provider entityID="e1"><demographic><name><commonName>A</commonName></name></demographic></provider>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
			},
		},
		{
			name: "byte order mark, doctype, comments and ASCII declaration",
			doc:  "\ufeff<?xml version=\"1.0\" encoding=\"US-ASCII\"?>\n<!DOCTYPE CSD>\n<!-- x -->" + wrapCSD(`<provider entityID="e1"/>`) + "\n<!-- end -->\n",
			check: func(t *testing.T, ps []*csd.Provider) {
				wantOne(t, ps, "e1")
			},
		},
		{
			name: "empty directory",
			doc:  `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory/></CSD>`,
			check: func(t *testing.T, ps []*csd.Provider) {
				if len(ps) != 0 {
					t.Errorf("got %d providers", len(ps))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, _ := decodeAll(t, tt.doc)
			tt.check(t, ps)
		})
	}
}

func TestDecodeProvidersLines(t *testing.T) {
	doc := "<CSD xmlns='urn:ihe:iti:csd:2013'>\n<providerDirectory>\n  <provider entityID='a'/>\n\n  <provider\n    entityID='b'>\n  </provider>\n</providerDirectory>\n</CSD>\n"
	ps, stats := decodeAll(t, doc)
	if len(ps) != 2 || ps[0].Line != 3 || ps[1].Line != 5 {
		t.Fatalf("lines = %d, %d; want 3, 5", ps[0].Line, ps[1].Line)
	}
	if stats.Root != "CSD" || stats.Bytes != int64(len(doc)) {
		t.Errorf("stats = %+v, want Root CSD and Bytes %d", stats, len(doc))
	}
}

func TestDecodeProvidersErrors(t *testing.T) {
	deep := wrapCSD(`<provider entityID="e1"><extension>` + strings.Repeat("<a>", 70) + strings.Repeat("</a>", 70) + `</extension></provider>`)
	tests := []struct {
		name      string
		doc       string
		lim       csd.Limits
		wantType  any // pointer to the expected error type
		wantInMsg []string
	}{
		{
			name:      "html root",
			doc:       "<?xml version='1.0'?>\n\n<html><body>Bad gateway</body></html>",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"csd: line 3: expected element CSD or provider, found html"},
		},
		{
			name:      "foo root",
			doc:       `<foo/>`,
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"line 1", "expected element CSD or provider, found foo"},
		},
		{
			name:      "CSD in another namespace",
			doc:       `<CSD xmlns="urn:not:csd"/>`,
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"found CSD (namespace urn:not:csd)"},
		},
		{
			name:      "empty input",
			doc:       "",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"line 1", "found end of input"},
		},
		{
			name:      "text instead of XML",
			doc:       "Error executing xquery",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"line 1", `found text "Error executing xquery"`},
		},
		{
			name:      "mismatched end tag",
			doc:       "<CSD xmlns='urn:ihe:iti:csd:2013'>\n<providerDirectory>\n<provider entityID='a'>\n</providerDirectory>\n</CSD>",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"csd: line 4:", "providerDirectory"},
		},
		{
			name:      "truncated document",
			doc:       "<CSD xmlns='urn:ihe:iti:csd:2013'>\n<providerDirectory>\n<provider entityID='a'>",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"csd: line 3:", "unexpected EOF"},
		},
		{
			name:      "undefined entity",
			doc:       wrapCSD(`<provider entityID="a&nbsp;"/>`),
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"line 1", "entity"},
		},
		{
			name:      "second root element",
			doc:       wrapCSD(``) + "\n<CSD/>",
			wantType:  new(*csd.SyntaxError),
			wantInMsg: []string{"line 2: unexpected element CSD after the root element"},
		},
		{
			name:      "unsupported encoding",
			doc:       `<?xml version="1.0" encoding="ISO-8859-1"?><CSD/>`,
			wantInMsg: []string{"line 1", `document encoding "ISO-8859-1" is not supported`},
		},
		{
			name:      "body size limit",
			doc:       wrapCSD(strings.Repeat("<provider entityID=\"e\"/>\n", 100)),
			lim:       csd.Limits{MaxBytes: 1000},
			wantType:  new(*csd.LimitError),
			wantInMsg: []string{"body size limit exceeded (more than 1000 bytes)", "line "},
		},
		{
			name:      "nesting depth limit",
			doc:       deep,
			wantType:  new(*csd.LimitError),
			wantInMsg: []string{"csd: line 1: nesting depth limit exceeded (more than 64 levels)"},
		},
		{
			name:      "small nesting depth limit",
			doc:       wrapCSD(`<provider entityID="e1"><demographic><name/></demographic></provider>`),
			lim:       csd.Limits{MaxDepth: 4},
			wantType:  new(*csd.LimitError),
			wantInMsg: []string{"nesting depth limit exceeded (more than 4 levels)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := csd.DecodeProviders(strings.NewReader(tt.doc), tt.lim, func(*csd.Provider) error { return nil })
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantType != nil && !errors.As(err, tt.wantType) {
				t.Errorf("error %T (%v) is not %T", err, err, tt.wantType)
			}
			for _, want := range tt.wantInMsg {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestDecodeProvidersLimitBoundary(t *testing.T) {
	doc := wrapCSD(`<provider entityID="e1"/>`)
	for _, tt := range []struct {
		max     int64
		wantErr bool
	}{{int64(len(doc)), false}, {int64(len(doc)) - 1, true}} {
		_, err := csd.DecodeProviders(strings.NewReader(doc), csd.Limits{MaxBytes: tt.max}, func(*csd.Provider) error { return nil })
		var le *csd.LimitError
		if got := errors.As(err, &le); got != tt.wantErr {
			t.Errorf("MaxBytes %d for a %d-byte document: error %v", tt.max, len(doc), err)
		}
	}
}

func TestDecodeProvidersCallbackError(t *testing.T) {
	stop := errors.New("stop here")
	calls := 0
	doc := wrapCSD("\n<provider entityID=\"e1\"/>\n<provider entityID=\"e2\"/>\n<provider entityID=\"e3\"/>")
	stats, err := csd.DecodeProviders(strings.NewReader(doc), csd.Limits{}, func(p *csd.Provider) error {
		calls++
		if p.EntityID == "e2" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 || stats.Providers != 2 {
		t.Fatalf("err = %v, calls = %d, stats = %+v", err, calls, stats)
	}
	if want := `csd: provider "e2" at line 3: stop here`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestParseDateTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2014-12-01T14:00:00+00:00", time.Date(2014, 12, 1, 14, 0, 0, 0, time.UTC), true},
		{"2014-12-01T14:00:00-05:00", time.Date(2014, 12, 1, 19, 0, 0, 0, time.UTC), true},
		{"2013-10-01T14:53:36", time.Date(2013, 10, 1, 14, 53, 36, 0, time.UTC), true},
		{" 2024-04-30T06:20:00Z ", time.Date(2024, 4, 30, 6, 20, 0, 0, time.UTC), true},
		{"2024-04-30T06:20:00.250", time.Date(2024, 4, 30, 6, 20, 0, 25e7, time.UTC), true},
		{"0000-00-00T00:00:00", time.Time{}, false},
		{"2014-12-01", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := csd.ParseDateTime(tt.in)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseDateTime(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func ids(ps []*csd.Provider) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.EntityID)
	}
	return out
}

func wantOne(t *testing.T, ps []*csd.Provider, id string) {
	t.Helper()
	if len(ps) != 1 || ps[0].EntityID != id {
		t.Fatalf("providers = %q, want exactly [%q]", ids(ps), id)
	}
}

func wantProblem(t *testing.T, p *csd.Provider, want string) {
	t.Helper()
	for _, got := range p.Problems {
		if got == want {
			return
		}
	}
	t.Errorf("Problems = %q, want one %q", p.Problems, want)
}

func wantNoProblems(t *testing.T, p *csd.Provider) {
	t.Helper()
	if len(p.Problems) > 0 {
		t.Errorf("unexpected Problems %s", fmt.Sprint(p.Problems))
	}
}
