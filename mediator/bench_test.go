package mediator

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// benchProviders decodes n generated providers with their hierarchy.
func benchProviders(b *testing.B, n int) ([]*csd.Provider, *Directory) {
	b.Helper()
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, n, csdtest.GenerateOptions{Seed: 3, Hierarchy: true}); err != nil {
		b.Fatal(err)
	}
	dir := NewDirectory()
	for _, kind := range []csd.EntityKind{csd.KindFacility, csd.KindOrganization} {
		if _, err := csd.DecodeEntities(bytes.NewReader(doc.Bytes()), csd.Limits{}, kind, func(e *csd.Entity) error {
			dir.Add(kind, e)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	var out []*csd.Provider
	if _, err := csd.DecodeProviders(bytes.NewReader(doc.Bytes()), csd.Limits{}, func(p *csd.Provider) error {
		out = append(out, p)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return out, dir
}

// BenchmarkMap maps a provider to its contact and targeting fields.
func BenchmarkMap(b *testing.B) {
	providers, dir := benchProviders(b, 1000)
	m := Mapper{Country: "LR", Targeting: &Targeting{Directory: dir}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.Map(providers[i%len(providers)])
	}
}

// BenchmarkDiff is what a run does for a provider whose contact it read:
// the digest, the decision and the change to send.
func BenchmarkDiff(b *testing.B) {
	providers, dir := benchProviders(b, 1000)
	m := Mapper{Country: "LR", Targeting: &Targeting{Directory: dir}}
	var items []*item
	var contacts []*rapidpro.Contact
	for _, p := range providers {
		mp := m.Map(p)
		if mp.Skipped != "" {
			continue
		}
		items = append(items, &item{Mapping: mp})
		fields := map[string]*string{}
		for k, v := range mp.Contact.Fields {
			fields[k] = &v
		}
		contacts = append(contacts, &rapidpro.Contact{UUID: "u", Name: mp.Contact.Name + " (old)", URNs: mp.Contact.URNs, Fields: fields, Status: "active"})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		it := items[i%len(items)]
		it.rec, it.action = Record{}, actionNone
		it.decide(InactiveRemoveFromGroup)
		contactChange(contacts[i%len(contacts)], it.Contact, it.Contact.URNs)
	}
}

// BenchmarkContactJSON is a create's body.
func BenchmarkContactJSON(b *testing.B) {
	providers, dir := benchProviders(b, 100)
	m := Mapper{Country: "LR", Targeting: &Targeting{Directory: dir}}
	var writes []rapidpro.ContactWrite
	for _, p := range providers {
		if mp := m.Map(p); mp.Skipped == "" {
			writes = append(writes, rapidpro.ContactWrite{Name: mp.Contact.Name, Language: mp.Contact.Language, URNs: mp.Contact.URNs,
				Groups: []string{"c8f2d1e4-7a1b-4c3d-8e9f-0a1b2c3d4e5f"}, Fields: fieldPointers(mp.Contact.Fields)})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := json.Marshal(writes[i%len(writes)]); err != nil {
			b.Fatal(err)
		}
	}
}
