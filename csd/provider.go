// Package csd speaks IHE Care Services Discovery (CSD) as OpenInfoMan serves
// it: a tolerant streaming reader for provider, facility and organization
// directories and SVS value sets, and a client for OpenInfoMan's paged search
// stored functions and for the updating function that adds an otherID.
package csd

import (
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
