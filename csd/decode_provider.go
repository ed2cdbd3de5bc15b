package csd

import (
	"encoding/xml"
	"fmt"
	"time"
)

// provider reads one provider element whose start tag se was read last.
// Children are matched by local name within the CSD namespace, in any order;
// unknown ones and extensions are skipped.
func (r *reader) provider(se xml.StartElement, line int) (*Provider, error) {
	p := &Provider{EntityID: entityID(se), Line: line}
	if p.EntityID == "" {
		p.problem("provider has no entityID, urn or oid")
	}
	recordLine := 0
	err := r.children(func(c xml.StartElement) error {
		if !inCSD(c.Name) {
			return r.skip()
		}
		switch c.Name.Local {
		case "otherID":
			value, err := r.text()
			p.OtherIDs = append(p.OtherIDs, OtherID{
				Code:                   attr(c, "code"),
				AssigningAuthorityName: attr(c, "assigningAuthorityName"),
				Value:                  value,
			})
			return err
		case "codedType":
			code, err := r.code(c)
			p.CodedTypes = append(p.CodedTypes, code)
			return err
		case "language":
			code, err := r.code(c)
			p.Languages = append(p.Languages, code)
			return err
		case "specialty":
			code, err := r.code(c)
			p.Specialties = append(p.Specialties, code)
			return err
		case "demographic":
			return r.demographic(p)
		case "facilities":
			return r.references(p, "facility", &p.Facilities)
		case "organizations":
			return r.references(p, "organization", &p.Organizations)
		case "record":
			return r.record(c, &p.Record, &recordLine, p.problem)
		}
		return r.skip()
	})
	return p, err
}

func (p *Provider) problem(msg string) { p.Problems = append(p.Problems, msg) }

// record reads the record element c, whose start tag was read last, into
// *rec, unless one was read already at line *seen: a second one is reported
// and skipped, so the first always wins.
func (r *reader) record(c xml.StartElement, rec *Record, seen *int, problem func(string)) error {
	if *seen != 0 {
		problem(fmt.Sprintf("record at line %d ignored: the one at line %d is used", r.line, *seen))
		return r.skip()
	}
	*seen = r.line
	*rec = Record{
		CreatedRaw:      attr(c, "created"),
		UpdatedRaw:      attr(c, "updated"),
		Status:          attr(c, "status"),
		SourceDirectory: attr(c, "sourceDirectory"),
	}
	rec.Created = recordTime("created", rec.CreatedRaw, problem)
	rec.Updated = recordTime("updated", rec.UpdatedRaw, problem)
	return r.skip()
}

// recordTime parses a record date; an impossible one such as
// 0000-00-00T00:00:00 (common in iHRIS exports) becomes the zero time.
func recordTime(name, raw string, problem func(string)) time.Time {
	if raw == "" {
		return time.Time{}
	}
	t, err := ParseDateTime(raw)
	if err != nil {
		problem(fmt.Sprintf("record@%s %q is not a date", name, raw))
	}
	return t
}

// code reads a coded element: @code, @codingScheme and the display text.
func (r *reader) code(se xml.StartElement) (Code, error) {
	display, err := r.text()
	return Code{Code: attr(se, "code"), CodingScheme: attr(se, "codingScheme"), Display: display}, err
}

// references collects the entity ids of the facility or organization
// children of a facilities or organizations element.
func (r *reader) references(p *Provider, local string, ids *[]string) error {
	return r.children(func(c xml.StartElement) error {
		if isCSD(c.Name, local) {
			if id := entityID(c); id != "" {
				*ids = append(*ids, id)
			} else {
				p.problem(fmt.Sprintf("%s reference at line %d has no entityID; ignored", local, r.line))
			}
		}
		return r.skip()
	})
}

func (r *reader) demographic(p *Provider) error {
	return r.children(func(c xml.StartElement) error {
		switch {
		case isCSD(c.Name, "name"):
			n, err := r.name()
			p.Names = append(p.Names, n)
			return err
		case isCSD(c.Name, "contactPoint"):
			return r.contactPoint(p)
		}
		return r.skip()
	})
}

func (r *reader) name() (Name, error) {
	var n Name
	err := r.children(func(c xml.StartElement) error {
		if !inCSD(c.Name) {
			return r.skip()
		}
		switch c.Name.Local {
		case "commonName":
			return r.appendText(&n.CommonNames)
		case "forename":
			return r.appendText(&n.Forenames)
		case "honorific":
			return r.firstText(&n.Honorific)
		case "surname":
			return r.firstText(&n.Surname)
		}
		return r.skip()
	})
	return n, err
}

// appendText appends the element's text unless it is empty.
func (r *reader) appendText(dst *[]string) error {
	v, err := r.text()
	if v != "" {
		*dst = append(*dst, v)
	}
	return err
}

// firstText keeps the first non-empty text of a repeated single-valued element.
func (r *reader) firstText(dst *string) error {
	v, err := r.text()
	if *dst == "" {
		*dst = v
	}
	return err
}

// contactPoint reads the codedType of a contactPoint, whose text is the
// number or address.
func (r *reader) contactPoint(p *Provider) error {
	line := r.line
	coded := false
	err := r.children(func(c xml.StartElement) error {
		if !isCSD(c.Name, "codedType") {
			return r.skip()
		}
		coded = true
		code, err := r.code(c)
		if err != nil {
			return err
		}
		if code.Display == "" {
			p.problem(fmt.Sprintf("contactPoint %s at line %d has no value; ignored", code.Code, line))
			return nil
		}
		p.ContactPoints = append(p.ContactPoints, ContactPoint{Code: code.Code, CodingScheme: code.CodingScheme, Value: code.Display})
		return nil
	})
	if err == nil && !coded {
		p.problem(fmt.Sprintf("contactPoint at line %d has no codedType; ignored", line))
	}
	return err
}
