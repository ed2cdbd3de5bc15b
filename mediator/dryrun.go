package mediator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// dryRun passes a plan's reads to RapidPro and answers its writes itself,
// as RapidPro would: a created contact holds what it was sent, an update
// replaces the tel URNs (dropping one another contact holds, as RapidPro
// does silently), merges the fields, and group actions succeed.
type dryRun struct {
	*rapidpro.Client
	idx     *index
	created int
}

func (d *dryRun) CreateContact(_ context.Context, w rapidpro.ContactWrite) (rapidpro.Contact, error) {
	d.created++
	c := rapidpro.Contact{
		UUID: fmt.Sprintf("planned-%d", d.created), Name: w.Name, Language: w.Language, Status: "active",
		URNs: slices.Clone(w.URNs), Fields: maps.Clone(w.Fields),
	}
	for _, g := range w.Groups {
		c.Groups = append(c.Groups, rapidpro.GroupRef{UUID: g})
	}
	return c, nil
}

func (d *dryRun) UpdateContact(_ context.Context, uuid string, w rapidpro.ContactWrite) (rapidpro.Contact, error) {
	// A retiring worker's contact is updated without being read.
	c := rapidpro.Contact{UUID: uuid, Status: "active"}
	old := d.idx.byUUID[uuid]
	if old != nil {
		c = *old
	} else {
		old = &c
	}
	if w.Name != "" {
		c.Name = w.Name
	}
	if w.Language != "" {
		c.Language = w.Language
	}
	if w.URNs != nil {
		c.URNs = nil
		for _, u := range w.URNs {
			if owner := d.idx.byURN[u]; owner == nil || owner.UUID == uuid || !strings.HasPrefix(u, "tel:") {
				c.URNs = append(c.URNs, u)
			}
		}
	}
	c.Fields = maps.Clone(old.Fields)
	if c.Fields == nil {
		c.Fields = map[string]*string{}
	}
	maps.Copy(c.Fields, w.Fields)
	return c, nil
}

func (d *dryRun) ContactAction(context.Context, string, []string, string) error { return nil }
