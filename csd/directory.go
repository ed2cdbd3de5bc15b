package csd

import (
	"encoding/xml"
	"fmt"
	"io"
)

// EntityKind names a directory entry other than a provider.
type EntityKind string

const (
	KindFacility     EntityKind = "facility"
	KindOrganization EntityKind = "organization"
)

// Entity is a facility or organization with what a provider's reference
// resolves to and what targeting by place or type needs. Like Provider, what
// could not be used is left empty and explained in Problems.
type Entity struct {
	Kind     EntityKind
	EntityID string // as written (entityID, else urn or oid)
	Name     string // primaryName
	Parent   string // parent@entityID: the administrative hierarchy
	// CodedTypes are the entity's own codedType children (its type), not
	// those of its credentials, contact points or contacts.
	CodedTypes []Code
	// Organizations lists the entity ids under the facility's organizations.
	Organizations []string
	// Address maps addressLine@component (city, stateProvince, …) to its
	// text. When an entity has several addresses the first value of each
	// component wins.
	Address map[string]string
	Record  Record
	// Line is where the entity element starts in its document (1-based).
	Line int
	// Problems lists what was present but unusable, one sentence each.
	Problems []string
}

func (e *Entity) problem(msg string) { e.Problems = append(e.Problems, msg) }

// Directory holds the facility and organization directories of a CSD
// document, keyed by NormalizeID.
type Directory struct {
	Facilities    map[string]Entity
	Organizations map[string]Entity
	// Problems lists entities that were present but could not be used: no
	// id, or an id already taken. Each kept entity has its own Problems.
	Problems []string
}

// Facility looks a facility up by any spelling of its id.
func (d *Directory) Facility(id string) (Entity, bool) {
	e, ok := d.Facilities[NormalizeID(id)]
	return e, ok
}

// Organization looks an organization up by any spelling of its id.
func (d *Directory) Organization(id string) (Entity, bool) {
	e, ok := d.Organizations[NormalizeID(id)]
	return e, ok
}

// DecodeEntities reads a CSD document, or a bare facility or organization
// element (as kind says), and calls fn once per entry of the facilityDirectory
// or organizationDirectory, in document order; every other directory is
// skipped. Limits, memory and errors are as for DecodeProviders: one entity is
// held at a time, and DocumentStats.Entities counts the calls.
func DecodeEntities(r io.Reader, lim Limits, kind EntityKind, fn func(*Entity) error) (DocumentStats, error) {
	if kind != KindFacility && kind != KindOrganization {
		return DocumentStats{}, fmt.Errorf("csd: DecodeEntities: unknown entity kind %q", kind)
	}
	k := string(kind)
	return decodeEntities(r, lim, scope{expected: "CSD or " + k, bare: k, entries: map[string]string{k + "Directory": k}}, fn)
}

// directoryScope is what DecodeDirectory reads: both directories in one
// pass, from a CSD document only.
var directoryScope = scope{expected: "CSD", entries: map[string]string{
	"facilityDirectory":     string(KindFacility),
	"organizationDirectory": string(KindOrganization),
}}

// DecodeDirectory reads the facilityDirectory and organizationDirectory of a
// CSD document in one pass, as DecodeEntities does; other directories are
// skipped. The 2013 drafts' British organisationDirectory is not CSD and
// yields no entities.
func DecodeDirectory(r io.Reader, lim Limits) (*Directory, error) {
	d := &Directory{Facilities: map[string]Entity{}, Organizations: map[string]Entity{}}
	_, err := decodeEntities(r, lim, directoryScope, func(e *Entity) error {
		into := d.Facilities
		if e.Kind == KindOrganization {
			into = d.Organizations
		}
		key := NormalizeID(e.EntityID)
		switch _, dup := into[key]; {
		case key == "":
			d.Problems = append(d.Problems, fmt.Sprintf("%s at line %d has no entityID, urn or oid; ignored", e.Kind, e.Line))
		case dup:
			d.Problems = append(d.Problems, fmt.Sprintf("%s %q at line %d repeats an earlier id; the first is kept", e.Kind, e.EntityID, e.Line))
		default:
			into[key] = *e
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

func decodeEntities(r io.Reader, lim Limits, sc scope, fn func(*Entity) error) (DocumentStats, error) {
	n := 0
	stats, err := decodeDocument(r, lim, sc, (*reader).entity, func(e *Entity) error {
		n++
		if err := fn(e); err != nil {
			return fmt.Errorf("csd: %s %q at line %d: %w", e.Kind, e.EntityID, e.Line, err)
		}
		return nil
	})
	stats.Entities = n
	return stats, err
}

// entity reads one facility or organization element whose start tag se was
// read last; its kind is the element's name. Children are matched by local
// name within the CSD namespace, in any order.
func (r *reader) entity(se xml.StartElement, line int) (*Entity, error) {
	e := &Entity{Kind: EntityKind(se.Name.Local), EntityID: entityID(se), Line: line}
	if e.EntityID == "" {
		e.problem(fmt.Sprintf("%s has no entityID, urn or oid", e.Kind))
	}
	recordLine := 0
	err := r.children(func(c xml.StartElement) error {
		if !inCSD(c.Name) {
			return r.skip()
		}
		switch c.Name.Local {
		case "codedType":
			code, err := r.code(c)
			e.CodedTypes = append(e.CodedTypes, code)
			return err
		case "primaryName":
			return r.firstText(&e.Name)
		case "parent":
			if e.Parent == "" {
				e.Parent = entityID(c)
			}
		case "organizations":
			return r.children(func(o xml.StartElement) error {
				if id := entityID(o); isCSD(o.Name, "organization") && id != "" {
					e.Organizations = append(e.Organizations, id)
				}
				return r.skip()
			})
		case "address":
			return r.children(func(l xml.StartElement) error {
				if !isCSD(l.Name, "addressLine") {
					return r.skip()
				}
				component := attr(l, "component")
				v, err := r.text()
				if _, seen := e.Address[component]; !seen && v != "" {
					if e.Address == nil {
						e.Address = map[string]string{}
					}
					e.Address[component] = v
				}
				return err
			})
		case "record":
			return r.record(c, &e.Record, &recordLine, e.problem)
		}
		return r.skip()
	})
	return e, err
}
