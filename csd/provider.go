// Package csd speaks IHE Care Services Discovery (CSD) as OpenInfoMan serves
// it: a tolerant streaming reader for provider, facility and organization
// directories and SVS value sets, and a client for OpenInfoMan's paged search
// stored functions and for the updating function that adds an otherID.
package csd

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"time"
)

// Namespace is the CSD 2013 XML namespace. Documents also arrive without any
// namespace (the first mHero mediator's fragments), which is read the same way.
const Namespace = "urn:ihe:iti:csd:2013"

// Contact point codes from the CSD contactPoint value set.
const (
	ContactPhone = "BP"
	ContactFax   = "FAX"
	ContactEmail = "EMAIL"
)

// Provider is one health worker as read from a CSD providerDirectory. Fields
// that could not be used are left empty and explained in Problems, so a
// caller never has to guess why something is missing.
type Provider struct {
	// EntityID is @entityID, else the legacy @urn or @oid, trimmed but with
	// its case kept. Use Key for matching.
	EntityID      string
	OtherIDs      []OtherID
	CodedTypes    []Code // the cadre or provider type
	Names         []Name
	ContactPoints []ContactPoint
	Languages     []Code
	Facilities    []string // referenced facility entity ids, empty ones dropped
	Organizations []string // referenced organization entity ids, empty ones dropped
	Specialties   []Code
	Record        Record
	// Line is where the provider element starts in its document (1-based).
	Line int
	// Problems lists what was present but unusable, one sentence each.
	Problems []string
}

// OtherID is an identifier from another system; real documents put the value
// in the text as well as (or instead of) the attributes.
type OtherID struct {
	Code                   string
	AssigningAuthorityName string
	Value                  string
}

// Code is a coded value with its optional display text.
type Code struct {
	Code         string
	CodingScheme string
	Display      string
}

// Name is one demographic/name element.
type Name struct {
	CommonNames []string
	Honorific   string
	Forenames   []string
	Surname     string
}

// ContactPoint is one demographic/contactPoint: Code is BP, FAX, EMAIL or
// whatever the directory used; Value is the text of its codedType.
type ContactPoint struct {
	Code         string
	CodingScheme string
	Value        string
}

// Record is the record element of a provider, facility or organization.
// Created and Updated are zero when absent or unparsable (the raw text is
// kept for reporting).
type Record struct {
	Created         time.Time
	Updated         time.Time
	CreatedRaw      string
	UpdatedRaw      string
	Status          string
	SourceDirectory string
}

// Status is a provider's record status reduced to what a sync acts on.
type Status int

const (
	StatusUnknown Status = iota
	StatusActive
	StatusInactive
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusInactive:
		return "inactive"
	}
	return "unknown"
}

// State maps the record status as the CSD value sets and real data use it:
// 106-002 is reused for inactive, retired and deceased.
func (r Record) State() Status {
	switch strings.ToLower(strings.TrimSpace(r.Status)) {
	case "active", "106-001":
		return StatusActive
	case "inactive", "106-002", "retired", "deceased":
		return StatusInactive
	}
	return StatusUnknown
}

// Key is the identity used to match a provider across systems and runs: the
// entity id trimmed and lower-cased, since OpenInfoMan matches ids ignoring
// case and earlier tools mixed cases.
func (p *Provider) Key() string { return NormalizeID(p.EntityID) }

// NormalizeID turns an entity id into its matching key.
func NormalizeID(id string) string { return strings.ToLower(strings.TrimSpace(id)) }

// ContactValues returns the non-empty values of the contact points with the
// given code (compared ignoring case), in document order.
func (p *Provider) ContactValues(code string) []string {
	var out []string
	for _, cp := range p.ContactPoints {
		if strings.EqualFold(strings.TrimSpace(cp.Code), code) && strings.TrimSpace(cp.Value) != "" {
			out = append(out, strings.TrimSpace(cp.Value))
		}
	}
	return out
}

// Fingerprint sums up everything the provider says except when its record
// was created or updated and where it stands in its document: a record
// whose dates moved while its data did not keeps its fingerprint, so a
// caller can tell that mapping it again would give what it gave before.
func (p *Provider) Fingerprint() [sha256.Size]byte {
	buf := make([]byte, 0, 1024)
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	strs := func(list []string) {
		buf = binary.AppendUvarint(buf, uint64(len(list)))
		for _, s := range list {
			str(s)
		}
	}
	codes := func(list []Code) {
		buf = binary.AppendUvarint(buf, uint64(len(list)))
		for _, c := range list {
			str(c.Code)
			str(c.CodingScheme)
			str(c.Display)
		}
	}
	str(p.EntityID)
	buf = binary.AppendUvarint(buf, uint64(len(p.OtherIDs)))
	for _, id := range p.OtherIDs {
		str(id.Code)
		str(id.AssigningAuthorityName)
		str(id.Value)
	}
	codes(p.CodedTypes)
	buf = binary.AppendUvarint(buf, uint64(len(p.Names)))
	for _, n := range p.Names {
		strs(n.CommonNames)
		str(n.Honorific)
		strs(n.Forenames)
		str(n.Surname)
	}
	buf = binary.AppendUvarint(buf, uint64(len(p.ContactPoints)))
	for _, cp := range p.ContactPoints {
		str(cp.Code)
		str(cp.CodingScheme)
		str(cp.Value)
	}
	codes(p.Languages)
	strs(p.Facilities)
	strs(p.Organizations)
	codes(p.Specialties)
	str(p.Record.Status)
	str(p.Record.SourceDirectory)
	strs(p.Problems)
	return sha256.Sum256(buf)
}
