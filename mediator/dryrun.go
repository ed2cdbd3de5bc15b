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
	idx      *index
	complete bool            // idx holds the whole workspace (the run scanned it)
	touched  map[string]bool // contacts the plan has updated: RapidPro still shows them as they were
	created  int
}

// Contacts reads from RapidPro, showing a contact the plan has updated as
// the plan left it (and only if it still matches).
func (d *dryRun) Contacts(ctx context.Context, q rapidpro.ContactQuery, fn func(rapidpro.Contact) error) error {
	return d.Client.Contacts(ctx, q, func(c rapidpro.Contact) error {
		if planned := d.idx.byUUID[c.UUID]; d.touched[c.UUID] && planned != nil {
			if q.URN != "" && !slices.Contains(planned.URNs, q.URN) {
				return nil
			}
			c = *planned
		}
		return fn(c)
	})
}

func (d *dryRun) CreateContact(ctx context.Context, w rapidpro.ContactWrite) (rapidpro.Contact, error) {
	// RapidPro refuses a create whose phone another contact holds; unless
	// the run read the whole workspace, it may not have read that contact,
	// so ask (a read, allowed in a plan).
	for _, u := range w.URNs {
		held := d.idx.byURN[u] != nil
		if !held && !d.complete {
			err := d.Contacts(ctx, rapidpro.ContactQuery{URN: u}, func(rapidpro.Contact) error { held = true; return nil })
			if err != nil {
				return rapidpro.Contact{}, err
			}
		}
		if held {
			return rapidpro.Contact{}, &rapidpro.Error{Method: "POST", Endpoint: "contacts.json", Status: 400, Kind: rapidpro.KindURNInUse,
				Fields: map[string][]string{"urns": {"URN is in use by another contact."}}}
		}
	}
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
	if d.touched == nil {
		d.touched = map[string]bool{}
	}
	d.touched[uuid] = true
	return c, nil
}

func (d *dryRun) ContactAction(context.Context, string, []string, string) error { return nil }
