package mediator

import (
	"slices"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

func phoneProvider(values ...string) *csd.Provider {
	p := &csd.Provider{
		EntityID: "urn:uuid:A1",
		Names:    []csd.Name{{CommonNames: []string{"Mary Kollie"}}},
	}
	for _, v := range values {
		p.ContactPoints = append(p.ContactPoints, csd.ContactPoint{Code: csd.ContactPhone, Value: v})
	}
	return p
}

func TestMapPhones(t *testing.T) {
	tests := []struct {
		name     string
		values   []string
		urns     []string
		skipped  string
		problems []string // substrings, in order
	}{
		{name: "local with trunk zero and spaces", values: []string{"0777 123 456"}, urns: []string{"tel:+231777123456"}},
		{name: "international with dashes", values: []string{"+231-777-123-456"}, urns: []string{"tel:+231777123456"}},
		{name: "two numbers joined by slash", values: []string{"777123456/886123456"}, urns: []string{"tel:+231777123456", "tel:+231886123456"}},
		{name: "comma and semicolon separators", values: []string{"777123456, 886123456;0886333523"}, urns: []string{"tel:+231777123456", "tel:+231886123456", "tel:+231886333523"}},
		{name: "double zero international prefix", values: []string{"00231888097810"}, urns: []string{"tel:+231888097810"}},
		{name: "double zero with dashes", values: []string{"00231-888-097-810"}, urns: []string{"tel:+231888097810"}},
		{name: "trunk zero after the country code", values: []string{"(+231) 0886-609-940"}, urns: []string{"tel:+231886609940"}},
		{name: "national without trunk zero", values: []string{"886333523"}, urns: []string{"tel:+231886333523"}},
		{name: "mhero-synch vector split in two", values: []string{"+231-773-219-26 / 880-609-979"}, urns: []string{"tel:+23177321926", "tel:+231880609979"}},
		{name: "foreign number kept", values: []string{"+263772785325"}, urns: []string{"tel:+263772785325"}},
		{name: "duplicates removed across contact points", values: []string{"0777123456", "+231777123456", "777123456"}, urns: []string{"tel:+231777123456"}},
		{name: "junk", values: []string{"44.44.44"}, skipped: SkipInvalidPhone, problems: []string{`phone "44.44.44": not a possible number`}},
		{name: "letters", values: []string{"call the clinic"}, skipped: SkipInvalidPhone, problems: []string{`phone "call the clinic"`}},
		{name: "empty value", values: []string{""}, skipped: SkipNoPhone},
		{name: "only separators", values: []string{" / ; "}, skipped: SkipInvalidPhone},
		{name: "no contact point", values: nil, skipped: SkipNoPhone},
		{name: "one good one bad", values: []string{"0777123456/12"}, urns: []string{"tel:+231777123456"}, problems: []string{`phone "12": not a possible number`}},
		{name: "too long for any plan", values: []string{"0777123456789012"}, skipped: SkipInvalidPhone, problems: []string{`phone "0777123456789012"`}},
	}
	mapper := Mapper{Country: "LR"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mapper.Map(phoneProvider(tc.values...))
			if m.Skipped != tc.skipped {
				t.Fatalf("skipped = %q, want %q (problems %q)", m.Skipped, tc.skipped, m.Problems)
			}
			if !slices.Equal(m.Contact.URNs, tc.urns) {
				t.Errorf("urns = %q, want %q", m.Contact.URNs, tc.urns)
			}
			if len(m.Problems) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d like %q", m.Problems, len(tc.problems), tc.problems)
			}
			for i, want := range tc.problems {
				if !strings.Contains(m.Problems[i], want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, m.Problems[i], want)
				}
			}
		})
	}
}

func TestMapPhonesWithoutCountry(t *testing.T) {
	m := Mapper{}.Map(phoneProvider("0777123456", "+231886123456"))
	if want := []string{"tel:+231886123456"}; !slices.Equal(m.Contact.URNs, want) {
		t.Fatalf("urns = %q, want %q: a local number cannot be placed without a country", m.Contact.URNs, want)
	}
	if len(m.Problems) != 1 || !strings.Contains(m.Problems[0], `"0777123456"`) {
		t.Fatalf("problems = %q, want the local number reported", m.Problems)
	}
}

func TestMapOnlyBusinessPhones(t *testing.T) {
	p := phoneProvider("555-777-4945")
	p.ContactPoints = append(p.ContactPoints,
		csd.ContactPoint{Code: csd.ContactFax, Value: "555-888-4945"},
		csd.ContactPoint{Code: csd.ContactEmail, Value: "someone@example.org"},
		csd.ContactPoint{Code: "bp", Value: "555-777-1111"}, // codes compare ignoring case
	)
	m := Mapper{Country: "US"}.Map(p)
	if want := []string{"tel:+15557774945", "tel:+15557771111"}; !slices.Equal(m.Contact.URNs, want) {
		t.Fatalf("urns = %q, want %q", m.Contact.URNs, want)
	}
}

func TestMapNameAndKey(t *testing.T) {
	long := strings.Repeat("é", 70)
	tests := []struct {
		name     string
		entityID string
		names    []csd.Name
		wantName string
		wantKey  string
		problem  string
	}{
		{name: "first commonName wins", entityID: "urn:uuid:1", names: []csd.Name{{CommonNames: []string{"Banargee, Dev", "Dev Banargee"}}}, wantName: "Banargee, Dev", wantKey: "urn:uuid:1"},
		{name: "empty commonName passed over", entityID: "urn:uuid:1", names: []csd.Name{{CommonNames: []string{"  ", "Dev Banargee"}}}, wantName: "Dev Banargee", wantKey: "urn:uuid:1"},
		{name: "commonName in a later name element", entityID: "urn:uuid:1", names: []csd.Name{{Forenames: []string{"Dev"}}, {CommonNames: []string{"Dr Dev"}}}, wantName: "Dr Dev", wantKey: "urn:uuid:1"},
		{name: "forenames and surname", entityID: "urn:uuid:1", names: []csd.Name{{Honorific: "Dr.", Forenames: []string{"Mary", "Jane"}, Surname: "Kollie"}}, wantName: "Mary Jane Kollie", wantKey: "urn:uuid:1"},
		{name: "surname only", entityID: "urn:uuid:1", names: []csd.Name{{Surname: "Kollie"}}, wantName: "Kollie", wantKey: "urn:uuid:1"},
		{name: "whitespace folded", entityID: "urn:uuid:1", names: []csd.Name{{CommonNames: []string{"  Mary \n  Kollie "}}}, wantName: "Mary Kollie", wantKey: "urn:uuid:1"},
		{name: "cut to 64 characters, not bytes", entityID: "urn:uuid:1", names: []csd.Name{{CommonNames: []string{long}}}, wantName: strings.Repeat("é", 64), wantKey: "urn:uuid:1"},
		{name: "no name at all", entityID: "urn:uuid:1", wantName: "", wantKey: "urn:uuid:1", problem: "provider has no name"},
		{name: "key trimmed and lower-cased", entityID: "  URN:UUID:A97B9397-CE4E-4A57-B12A-0D46CE6F36B7 ", names: []csd.Name{{CommonNames: []string{"X"}}}, wantName: "X", wantKey: "urn:uuid:a97b9397-ce4e-4a57-b12a-0d46ce6f36b7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &csd.Provider{EntityID: tc.entityID, Names: tc.names,
				ContactPoints: []csd.ContactPoint{{Code: "BP", Value: "0777123456"}}}
			m := Mapper{Country: "LR"}.Map(p)
			if m.Contact.Name != tc.wantName {
				t.Errorf("name = %q, want %q", m.Contact.Name, tc.wantName)
			}
			if m.Key != tc.wantKey || m.Contact.Fields[FieldGlobalID] != tc.wantKey {
				t.Errorf("key = %q, globalid = %q, want %q", m.Key, m.Contact.Fields[FieldGlobalID], tc.wantKey)
			}
			if tc.problem != "" && !slices.Contains(m.Problems, tc.problem) {
				t.Errorf("problems = %q, want %q", m.Problems, tc.problem)
			}
		})
	}
}

func TestMapSkipsProviderWithoutID(t *testing.T) {
	p := phoneProvider("0777123456")
	p.EntityID = "  "
	p.Problems = []string{"provider has no entityID, urn or oid"}
	m := Mapper{Country: "LR"}.Map(p)
	if m.Skipped != SkipNoID {
		t.Fatalf("skipped = %q, want %q", m.Skipped, SkipNoID)
	}
	if !slices.Equal(m.Problems, p.Problems) {
		t.Fatalf("problems = %q, want the reader's problems kept", m.Problems)
	}
}

func TestMapStatus(t *testing.T) {
	for status, want := range map[string]csd.Status{
		"Active": csd.StatusActive, "106-001": csd.StatusActive, " active ": csd.StatusActive,
		"106-002": csd.StatusInactive, "Retired": csd.StatusInactive, "deceased": csd.StatusInactive, "inactive": csd.StatusInactive,
		"": csd.StatusUnknown, "on leave": csd.StatusUnknown,
	} {
		p := phoneProvider("0777123456")
		p.Record.Status = status
		if got := (Mapper{Country: "LR"}).Map(p).Status; got != want {
			t.Errorf("status %q -> %v, want %v", status, got, want)
		}
	}
}

// A run's phone cache gives what parsing gives, for numbers it keeps and
// those it refuses, and never holds more than its bound.
func TestPhoneCacheGivesWhatParsingGives(t *testing.T) {
	numbers := []string{"0777 123 456", "not a phone", "0777 123 456", "+263772785325", "12", "0886333523", "not a phone", "00231888097810", "0777 123 456"}
	plain := Mapper{Country: "LR"}
	cached := Mapper{Country: "LR", phones: newPhoneCache(3)}
	for i, n := range numbers {
		want, wantErr := plain.phoneURN(n)
		got, err := cached.phoneURN(n)
		if got != want || (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Errorf("%d %q: cached %q %v, parsed %q %v", i, n, got, err, want, wantErr)
		}
		if len(cached.phones.entries) > 3 {
			t.Fatalf("%d numbers cached, bound 3", len(cached.phones.entries))
		}
	}
}
