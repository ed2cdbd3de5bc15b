// Package mediator decides what to sync from the health worker registry to
// RapidPro and runs it: mapping providers to contacts, matching them against
// what RapidPro holds, writing only the differences, and reporting the run.
package mediator

import (
	"fmt"
	"maps"
	"strings"

	"github.com/nyaruka/gocommon/i18n"
	"github.com/nyaruka/gocommon/stringsx"
	"github.com/nyaruka/gocommon/urns"

	"github.com/openhie/mhero-mediator/csd"
)

// FieldGlobalID is the contact field holding the provider's matching key. The
// name is kept from the first mHero mediator so existing workspaces continue
// to match.
const FieldGlobalID = "globalid"

// maxNameLength is RapidPro API v2's limit on a contact name, in characters.
const maxNameLength = 64

// Reasons a provider does not become a contact, used in reports and metric
// labels.
const (
	SkipNoID         = "no_id"
	SkipNoPhone      = "no_phone"
	SkipInvalidPhone = "invalid_phone"
)

// Contact is the RapidPro contact a provider maps to: the keys of a RapidPro
// POST body that this service owns.
type Contact struct {
	Name     string            `json:"name,omitempty"`
	Language string            `json:"language,omitempty"` // ISO 639-3; empty leaves RapidPro's alone
	URNs     []string          `json:"urns"`
	Fields   map[string]string `json:"fields"` // an empty value clears the field
}

// Mapping is the outcome of mapping one provider.
type Mapping struct {
	EntityID string
	Key      string // the globalid: entity id trimmed and lower-cased
	Status   csd.Status
	Contact  Contact // set unless Skipped
	Skipped  string  // one of the Skip reasons, empty when the provider maps to a contact
	// Targets holds the targeting fields by RapidPro key and Language the
	// contact language, resolved even for a skipped provider to show what
	// would be written.
	Targets  map[string]string `json:",omitempty"`
	Language string            `json:",omitempty"`
	// Left marks a worker the registry no longer has, found by a
	// reconciliation from their contact: only the key is known.
	Left bool `json:",omitempty"`
	// RetireConfirmed marks a retirement an operator let past the circuit
	// breaker: a run that defers it does not hold it again.
	RetireConfirmed bool `json:",omitempty"`
	Problems        []string
}

// Mapper turns providers into contacts. Country is the ISO 3166-1 alpha-2
// country whose numbering plan applies to numbers written without a country
// code; with none, only numbers in international form are accepted.
type Mapper struct {
	Country i18n.Country
	// Targeting, when set, adds the fields officials target by.
	Targeting *Targeting
	// phones, when set, remembers the numbers normalised in this run: a
	// clinic's phone listed for all its staff is parsed once.
	phones *phoneCache
}

// phoneCache holds normalised numbers, up to a bound so that a run's
// memory does not grow with the registry: when full it starts over.
type phoneCache struct {
	max     int
	entries map[string]phoneResult
}

type phoneResult struct {
	urn string
	err error
}

func newPhoneCache(max int) *phoneCache {
	return &phoneCache{max: max, entries: map[string]phoneResult{}}
}

// Map maps one provider. It never fails: what cannot be used is skipped or
// reported in Problems, next to the problems the reader found.
func (m Mapper) Map(p *csd.Provider) Mapping {
	mp := Mapping{
		EntityID: p.EntityID,
		Key:      p.Key(),
		Status:   p.Record.State(),
		Problems: append([]string(nil), p.Problems...),
	}
	if mp.Key == "" {
		mp.Skipped = SkipNoID
		return mp
	}
	if m.Targeting != nil {
		mp.Targets, mp.Language = m.Targeting.resolve(p)
	}

	raw := p.ContactValues(csd.ContactPhone)
	phones, problems := m.phoneURNs(raw)
	mp.Problems = append(mp.Problems, problems...)
	switch {
	case len(raw) == 0:
		mp.Skipped = SkipNoPhone
		return mp
	case len(phones) == 0:
		mp.Skipped = SkipInvalidPhone
		return mp
	}

	mp.Contact = Contact{
		Name:     displayName(p),
		Language: mp.Language,
		URNs:     phones,
		Fields:   map[string]string{FieldGlobalID: mp.Key},
	}
	maps.Copy(mp.Contact.Fields, mp.Targets)
	if mp.Contact.Name == "" {
		mp.Problems = append(mp.Problems, "provider has no name")
	}
	return mp
}

// displayName is the first non-empty commonName, else forenames and surname,
// cut to RapidPro's limit.
func displayName(p *csd.Provider) string {
	for _, n := range p.Names {
		for _, cn := range n.CommonNames {
			if cn = strings.Join(strings.Fields(cn), " "); cn != "" {
				return stringsx.Truncate(cn, maxNameLength)
			}
		}
	}
	for _, n := range p.Names {
		parts := append(append([]string(nil), n.Forenames...), n.Surname)
		if name := strings.Join(strings.Fields(strings.Join(parts, " ")), " "); name != "" {
			return stringsx.Truncate(name, maxNameLength)
		}
	}
	return ""
}

// phoneSeparators split a contact point holding several numbers, as registry
// clerks write them ("777123456/886123456").
var phoneSeparators = func(r rune) bool { return r == '/' || r == ',' || r == ';' }

// phoneURNs normalises business phone values to E.164 tel URNs, in order and
// without duplicates, and explains each number it could not use.
func (m Mapper) phoneURNs(values []string) ([]string, []string) {
	var out, problems []string
	seen := map[string]bool{}
	for _, value := range values {
		for _, number := range strings.FieldsFunc(value, phoneSeparators) {
			number = strings.TrimSpace(number)
			if number == "" {
				continue
			}
			urn, err := m.phoneURN(number)
			if err != nil {
				problems = append(problems, fmt.Sprintf("phone %q: %v", number, err))
				continue
			}
			if !seen[urn] {
				seen[urn] = true
				out = append(out, urn)
			}
		}
	}
	return out, problems
}

func (m Mapper) phoneURN(number string) (string, error) {
	if m.phones == nil {
		return m.parsePhone(number)
	}
	if r, ok := m.phones.entries[number]; ok {
		return r.urn, r.err
	}
	urn, err := m.parsePhone(number)
	if len(m.phones.entries) >= m.phones.max {
		clear(m.phones.entries)
	}
	m.phones.entries[number] = phoneResult{urn, err}
	return urn, err
}

func (m Mapper) parsePhone(number string) (string, error) {
	// 00 is the international prefix in most of the countries mHero serves;
	// libphonenumber would otherwise read it as a national number.
	if rest, ok := strings.CutPrefix(number, "00"); ok {
		number = "+" + rest
	}
	urn, err := urns.ParsePhone(number, m.Country, false, false)
	if err != nil {
		return "", err
	}
	// ParsePhone's contract is E.164, but RapidPro would accept a short code
	// here; a health worker's phone never is one.
	if !strings.HasPrefix(string(urn), "tel:+") {
		return "", fmt.Errorf("not an international number (%s)", urn)
	}
	return string(urn), nil
}
