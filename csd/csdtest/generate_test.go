package csdtest_test

import (
	"bytes"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

func decodeGenerated(t *testing.T, n int, opts csdtest.GenerateOptions) []*csd.Provider {
	t.Helper()
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, n, opts); err != nil {
		t.Fatal(err)
	}
	var ps []*csd.Provider
	if _, err := csd.DecodeProviders(&doc, csd.Limits{}, func(p *csd.Provider) error {
		ps = append(ps, p)
		return nil
	}); err != nil || len(ps) != n {
		t.Fatalf("decoded %d of %d providers: %v", len(ps), n, err)
	}
	return ps
}

// Reachable: every provider active with one or two phones, none shared,
// in each of the national spellings.
func TestGenerateReachable(t *testing.T) {
	const n = 1000
	ps := decodeGenerated(t, n, csdtest.GenerateOptions{Seed: 5, Reachable: true, Hierarchy: true})
	spellings := map[string]*regexp.Regexp{
		"local spaced":  regexp.MustCompile(`^0\d{3} \d{3} \d{3}$`),
		"local":         regexp.MustCompile(`^0\d{9}$`),
		"international": regexp.MustCompile(`^\+231 \d{3} \d{3} \d{3}$`),
		"00":            regexp.MustCompile(`^00231\d{9}$`),
	}
	seen, spelt := map[string]bool{}, map[string]int{}
	second := 0
	for i, p := range ps {
		phones := p.ContactValues(csd.ContactPhone)
		if p.Record.State() != csd.StatusActive || len(phones) < 1 || len(phones) > 2 {
			t.Fatalf("provider %d: %s, phones %q", i, p.Record.State(), phones)
		}
		if len(phones) == 2 {
			second++
		}
		for _, ph := range phones {
			// The last nine digits are the number, whatever the spelling.
			compact := strings.ReplaceAll(ph, " ", "")
			digits := compact[len(compact)-9:]
			if seen[digits] {
				t.Errorf("provider %d: phone %q given twice", i, ph)
			}
			seen[digits] = true
			for name, re := range spellings {
				if re.MatchString(ph) {
					spelt[name]++
				}
			}
		}
	}
	if second != n*3/10 {
		t.Errorf("%d providers with a second phone, want %d", second, n*3/10)
	}
	for name := range spellings {
		if spelt[name] == 0 {
			t.Errorf("no phone spelt %s: %v", name, spelt)
		}
	}
}

// Updated and Changed move record dates and edit names, and nothing else:
// ids, forenames and phones stay those of the plain document.
func TestGenerateTouchedAndChanged(t *testing.T) {
	const n, k = 50, 7
	base := csdtest.GenerateOptions{Seed: 9, Reachable: true}
	touchedAt := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	changedAt := touchedAt.Add(time.Hour)
	plain := decodeGenerated(t, n, base)
	touched := base
	touched.Updated = touchedAt
	changed := touched
	changed.Changed, changed.Revision, changed.ChangedAt = k, 1, changedAt
	again := changed
	again.Revision = 2
	docs := map[string][]*csd.Provider{"touched": decodeGenerated(t, n, touched), "changed": decodeGenerated(t, n, changed), "again": decodeGenerated(t, n, again)}
	for i, p := range plain {
		for name, ps := range docs {
			q := ps[i]
			if q.EntityID != p.EntityID || q.Names[0].Forenames[0] != p.Names[0].Forenames[0] ||
				!reflect.DeepEqual(q.ContactPoints, p.ContactPoints) || !q.Record.Created.Equal(p.Record.Created) {
				t.Errorf("%s provider %d differs from the plain one beyond its name and record date", name, i)
			}
			edited := name != "touched" && i < k
			wantUpdated := touchedAt
			if edited {
				wantUpdated = changedAt
			}
			if !q.Record.Updated.Equal(wantUpdated) {
				t.Errorf("%s provider %d updated %v, want %v", name, i, q.Record.Updated, wantUpdated)
			}
			if (q.Names[0].Surname != p.Names[0].Surname) != edited {
				t.Errorf("%s provider %d: surname %q, plain %q", name, i, q.Names[0].Surname, p.Names[0].Surname)
			}
		}
		if i < k && docs["again"][i].Names[0].Surname == docs["changed"][i].Names[0].Surname {
			t.Errorf("provider %d: revision 2 kept revision 1's surname", i)
		}
	}
}
