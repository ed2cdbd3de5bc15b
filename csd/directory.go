package csd

import (
	"encoding/xml"
	"fmt"
	"io"
)

// Entity is a facility or organization reduced to what a provider's
// reference needs to resolve to.
type Entity struct {
	EntityID string // as written (entityID, else urn or oid)
	Name     string // primaryName
	Parent   string // parent@entityID: the administrative hierarchy
	// Organizations lists the entity ids under the facility's organizations.
	Organizations []string
	// Address maps addressLine@component (city, stateProvince, …) to its
	// text. When an entity has several addresses the first value of each
	// component wins.
	Address map[string]string
}

// Directory holds the facility and organization directories of a CSD
// document, keyed by NormalizeID.
type Directory struct {
	Facilities    map[string]Entity
	Organizations map[string]Entity
	// Problems lists entities that were present but could not be used.
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

// DecodeDirectory reads the facilityDirectory and organizationDirectory of a
// CSD document; other directories are skipped. The 2013 drafts' British
// organisationDirectory is not CSD and yields no entities.
func DecodeDirectory(r io.Reader, lim Limits) (*Directory, error) {
	rd := newReader(r, lim)
	root, err := rd.root("CSD")
	if err != nil {
		return nil, err
	}
	if !isCSD(root.Name, "CSD") {
		return nil, rd.unexpected(root, "CSD")
	}
	d := &Directory{Facilities: map[string]Entity{}, Organizations: map[string]Entity{}}
	err = rd.children(func(dir xml.StartElement) error {
		var kind string
		var into map[string]Entity
		switch {
		case isCSD(dir.Name, "facilityDirectory"):
			kind, into = "facility", d.Facilities
		case isCSD(dir.Name, "organizationDirectory"):
			kind, into = "organization", d.Organizations
		default:
			return rd.skipDirectory(dir)
		}
		return rd.children(func(c xml.StartElement) error {
			if !isCSD(c.Name, kind) {
				return rd.bounded(c, rd.skip)
			}
			return rd.bounded(c, func() error { return rd.entity(c, kind, into, &d.Problems) })
		})
	})
	if err != nil {
		return nil, err
	}
	if err := rd.end(); err != nil {
		return nil, err
	}
	return d, nil
}

func (r *reader) entity(se xml.StartElement, kind string, into map[string]Entity, problems *[]string) error {
	line := r.line
	e := Entity{EntityID: entityID(se)}
	err := r.children(func(c xml.StartElement) error {
		if !inCSD(c.Name) {
			return r.skip()
		}
		switch c.Name.Local {
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
		}
		return r.skip()
	})
	if err != nil {
		return err
	}
	key := NormalizeID(e.EntityID)
	if key == "" {
		*problems = append(*problems, fmt.Sprintf("%s at line %d has no entityID, urn or oid; ignored", kind, line))
		return nil
	}
	if _, dup := into[key]; dup {
		*problems = append(*problems, fmt.Sprintf("%s %q at line %d repeats an earlier id; the first is kept", kind, e.EntityID, line))
		return nil
	}
	into[key] = e
	return nil
}
