package mediator

import (
	"reflect"
	"testing"

	"github.com/openhie/mhero-mediator/rapidpro"
)

func strp(s string) *string { return &s }

func TestContactChange(t *testing.T) {
	want := Contact{Name: "Mary Kollie", URNs: []string{"tel:+231777123401"}, Fields: map[string]string{FieldGlobalID: "urn:uuid:1"}}
	current := func(mod func(*rapidpro.Contact)) *rapidpro.Contact {
		c := &rapidpro.Contact{
			UUID: "c1", Name: "Mary Kollie", URNs: []string{"tel:+231777123401"},
			Fields: map[string]*string{FieldGlobalID: strp("urn:uuid:1"), "district": strp("Bong")},
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name    string
		current *rapidpro.Contact
		urns    []string
		change  rapidpro.ContactWrite
		changed bool
	}{
		{name: "identical", current: current(nil), urns: want.URNs},
		{name: "field owned by others ignored", current: current(func(c *rapidpro.Contact) { c.Fields["district"] = nil }), urns: want.URNs},
		{name: "name differs", current: current(func(c *rapidpro.Contact) { c.Name = "M. Kollie" }), urns: want.URNs,
			change: rapidpro.ContactWrite{Name: "Mary Kollie"}, changed: true},
		{name: "globalid missing", current: current(func(c *rapidpro.Contact) { c.Fields[FieldGlobalID] = nil }), urns: want.URNs,
			change: rapidpro.ContactWrite{Fields: map[string]*string{FieldGlobalID: strp("urn:uuid:1")}}, changed: true},
		{name: "phone replaced, other schemes kept after it", current: current(func(c *rapidpro.Contact) {
			c.URNs = []string{"tel:+231886000000", "whatsapp:231777000000"}
		}), urns: want.URNs, change: rapidpro.ContactWrite{URNs: []string{"tel:+231777123401", "whatsapp:231777000000"}}, changed: true},
		{name: "phone replaced, a preferred other scheme kept first", current: current(func(c *rapidpro.Contact) {
			c.URNs = []string{"whatsapp:231777000000", "tel:+231886000000"}
		}), urns: want.URNs, change: rapidpro.ContactWrite{URNs: []string{"whatsapp:231777000000", "tel:+231777123401"}}, changed: true},
		{name: "phone order is RapidPro's: the same set is no change", current: current(func(c *rapidpro.Contact) {
			c.URNs = []string{"tel:+231886000000", "tel:+231777123401"}
		}), urns: []string{"tel:+231777123401", "tel:+231886000000"}},
		{name: "a phone added", current: current(nil), urns: []string{"tel:+231777123401", "tel:+231886000000"},
			change: rapidpro.ContactWrite{URNs: []string{"tel:+231777123401", "tel:+231886000000"}}, changed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			change, changed := contactChange(tc.current, want, tc.urns)
			if changed != tc.changed || !reflect.DeepEqual(change, tc.change) {
				t.Fatalf("change = %+v (%v), want %+v (%v)", change, changed, tc.change, tc.changed)
			}
		})
	}
}

func TestRejectDuplicateKeys(t *testing.T) {
	items := []*item{
		{Mapping: Mapping{EntityID: "urn:uuid:AA", Key: "urn:uuid:aa"}},
		{Mapping: Mapping{EntityID: "urn:uuid:bb", Key: "urn:uuid:bb"}},
		{Mapping: Mapping{EntityID: "URN:UUID:aa ", Key: "urn:uuid:aa"}},
		{Mapping: Mapping{EntityID: "urn:uuid:bb", Key: "urn:uuid:bb"}}, // the same record twice is not a duplicate
	}
	rejectDuplicateKeys(items)
	got := []string{items[0].failed, items[1].failed, items[2].failed, items[3].failed}
	want := []string{ReasonDuplicateGlobalID, "", ReasonDuplicateGlobalID, ""}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("failed = %q, want %q", got, want)
	}
}

// A confirmation clears a reject only where one stands, in the state or
// from earlier in the run: clearing for every confirmation doubled the
// state's writes of a first sync.
func TestConfirmationClearsOnlyAStandingReject(t *testing.T) {
	tests := []struct {
		name      string
		standing  bool
		wantClear bool
	}{
		{"no reject stands", false, false},
		{"a reject stands", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &writer{progress: newProgress(), rejected: map[string]bool{"k": tt.standing}}
			it := &item{Mapping: Mapping{EntityID: "K", Key: "k"}, digest: "d"}
			w.done(it, "u")
			_, cleared := w.progress.rejected["k"]
			if cleared != tt.wantClear || w.progress.records["k"].Digest != "d" {
				t.Fatalf("reject cleared %v, want %v; record %+v", cleared, tt.wantClear, w.progress.records["k"])
			}
		})
	}
}
