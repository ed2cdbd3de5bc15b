package mediator

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// readMode says what a run reads of RapidPro besides what its work needs.
type readMode struct {
	scan    bool // the whole workspace: the first run for a target
	crashed bool // the group, if a provider has no link: the last run crashed
	group   bool // the group: a reconciliation looks for leavers in it
	// settled are the providers the run left unmapped: their contacts are
	// counted and checked for duplicates, not held (see holds).
	settled *settledSet
}

// index holds what a run knows of RapidPro's contacts, one entry per
// contact however often it was fetched.
type index struct {
	byUUID map[string]*rapidpro.Contact
	byKey  map[string]*rapidpro.Contact
	byURN  map[string]*rapidpro.Contact
	// duplicates lists, by globalid, the contacts that share one: left by
	// earlier tools, they are for a person to merge, never for a silent pick.
	duplicates map[string][]string

	// Of the contacts a read of the group or workspace found: how many
	// carry a globalid (the contacts this service manages, when the group
	// was read), how many were counted and not held, and the first one
	// seen with each settled provider's globalid, to find duplicates among
	// contacts not held.
	managed, unheld int
	settledFirst    map[uint64][16]byte
	// groupRead is set once the group (or the whole workspace) was read:
	// a later chunk of the run does not read it again.
	groupRead bool
}

func newIndex() *index {
	return &index{
		byUUID: map[string]*rapidpro.Contact{}, byKey: map[string]*rapidpro.Contact{},
		byURN: map[string]*rapidpro.Contact{}, duplicates: map[string][]string{},
	}
}

// add records c, replacing what was known of the same contact unless that
// is newer: with writes in flight, a lookup's answer can arrive after a
// write's answer that it predates. Only the fields with a value are kept:
// RapidPro sends every field of the workspace with each contact, most of
// them null, and an absent field reads as null.
func (ix *index) add(c *rapidpro.Contact) {
	maps.DeleteFunc(c.Fields, func(_ string, v *string) bool { return v == nil })
	if old := ix.byUUID[c.UUID]; old != nil {
		if c.ModifiedOn.Before(old.ModifiedOn) {
			return
		}
		ix.remove(old)
	}
	ix.byUUID[c.UUID] = c
	if k := globalID(c); k != "" {
		if other := ix.byKey[k]; other != nil {
			if !slices.Contains(ix.duplicates[k], other.UUID) {
				ix.duplicates[k] = append(ix.duplicates[k], other.UUID)
			}
			ix.duplicates[k] = append(ix.duplicates[k], c.UUID)
		}
		ix.byKey[k] = c
	}
	for _, u := range c.URNs {
		ix.byURN[u] = c
	}
}

// forget lets go of the contacts of a chunk's providers, once written,
// but those of conflicts carried to a later chunk: a later chunk has other
// providers, and a phone one of them wants is found again by its lookup or
// by the write that meets it.
func (ix *index) forget(items []*item) {
	for _, it := range items {
		if it.waiting {
			continue
		}
		for _, uuid := range []string{it.rec.UUID, it.uuid, it.contactUUID} {
			if c := ix.byUUID[uuid]; c != nil && uuid != "" {
				ix.remove(c)
			}
		}
		if c := ix.byKey[it.Key]; c != nil && it.Key != "" {
			ix.remove(c)
		}
	}
}

func (ix *index) remove(c *rapidpro.Contact) {
	if cur := ix.byUUID[c.UUID]; cur != nil {
		c = cur // a newer copy may have replaced the one the caller holds
	}
	delete(ix.byUUID, c.UUID)
	for _, u := range c.URNs {
		if ix.byURN[u] == c {
			delete(ix.byURN, u)
		}
	}
	if k := globalID(c); k != "" && ix.byKey[k] == c {
		delete(ix.byKey, k)
	}
}

// contactFor is the contact a provider's retirement acts on: its linked
// one, else the one with its globalid. The run reads every linked contact,
// so a linked contact not found is gone from RapidPro.
func (ix *index) contactFor(it *item) *rapidpro.Contact {
	if c := ix.byUUID[it.rec.UUID]; c != nil && it.rec.UUID != "" {
		return c
	}
	return ix.byKey[it.Key]
}

func globalID(c *rapidpro.Contact) string {
	if v := c.Fields[FieldGlobalID]; v != nil {
		return csd.NormalizeID(*v)
	}
	return ""
}

// read finds the contacts the run's work may touch. The first run for a
// target reads the whole workspace once: RapidPro cannot filter contacts by
// field, and a contact with a provider's globalid or phone outside the group
// (an earlier tool's, or entered by hand) is found only by reading it. Later
// runs read only what their linked providers need: each contact by its UUID
// (a retiring one's included),
// or the group when more than the lookup threshold need reading, and each
// new phone, which RapidPro would otherwise drop on update and still answer
// 200. A provider without a link after the scan has no contact; its create
// reports a phone taken since.
//
// After a crash, the outcomes of the last writes may be unrecorded: their
// providers have no link although their contacts exist (created into the
// group), so the group is read once to find them. A reconciliation reads
// the group to find the contacts of workers who left.
//
// What it finds goes into idx, which may hold what an earlier chunk of the
// run read: a contact found there is not read again.
func (s *Syncer) read(ctx context.Context, rp *rapidpro.Client, boot bootstrap, idx *index, work []*item, mode readMode) error {
	// Every contact read is checked against the settled providers'
	// globalids, those of lookups too: a second contact with one is a
	// duplicate wherever it was found.
	noteSettled := func(c *rapidpro.Contact) {
		if k := globalID(c); k != "" && mode.settled.has(k) {
			idx.noteSettled(k, c.UUID, mode.settled)
		}
	}
	collect := func(c rapidpro.Contact) error {
		noteSettled(&c)
		idx.add(&c)
		return nil
	}
	holds := mode.holds(work)
	// Each managed contact is counted once, should paging return one twice
	// (by a hash of its UUID: 16 bytes a contact).
	managed, seed := map[uint64]struct{}{}, maphash.MakeSeed()
	collectAll := func(c rapidpro.Contact) error {
		if globalID(&c) != "" && inGroup(&c, boot.GroupUUID) {
			managed[maphash.String(seed, c.UUID)] = struct{}{}
			idx.managed = len(managed)
		}
		noteSettled(&c)
		if holds(&c) {
			idx.add(&c)
		} else {
			idx.unheld++
		}
		return nil
	}
	if mode.scan {
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{}, collectAll); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
		idx.groupRead = true
		return nil
	}
	// A retiring worker's contact is read too: its status decides whether
	// blocking it is this service's doing (and so may be undone), and a
	// stopped contact must never be touched.
	var linked []*item
	for _, it := range work {
		if it.rec.UUID != "" && idx.byUUID[it.rec.UUID] == nil {
			linked = append(linked, it)
		}
	}
	unlinked := slices.ContainsFunc(work, func(it *item) bool { return it.rec.UUID == "" })
	// The group costs a request per 250 members: worth it only when that is
	// fewer than one lookup per contact.
	// A dry run before the group exists has no group to read.
	readGroup := mode.group || (mode.crashed && unlinked) || (len(linked) > s.opts.LookupThreshold && (boot.GroupCount+249)/250 < len(linked))
	if readGroup && boot.GroupUUID != "" && !idx.groupRead {
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{Group: boot.GroupUUID}, collectAll); err != nil {
			return fmt.Errorf("group %q: %w", boot.GroupName, err)
		}
		idx.groupRead = true
	}
	for _, it := range linked {
		if idx.byUUID[it.rec.UUID] != nil {
			continue
		}
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{UUID: it.rec.UUID}, collect); err != nil {
			if stopsRun(err) {
				return fmt.Errorf("contact %s: %w", it.rec.UUID, err)
			}
			it.readErr = err // this provider waits for the next run; the others go on
		}
	}
	looked := map[string]bool{}
	for _, it := range work {
		c := idx.byUUID[it.rec.UUID]
		if c == nil || it.rec.UUID == "" || it.readErr != nil || it.action != actionSync {
			continue // deleted in RapidPro: created anew, and a create reports taken phones itself
		}
		for _, u := range it.Contact.URNs {
			if slices.Contains(c.URNs, u) || idx.byURN[u] != nil || looked[u] {
				continue
			}
			looked[u] = true
			if err := rp.Contacts(ctx, rapidpro.ContactQuery{URN: u}, collect); err != nil {
				if stopsRun(err) {
					return fmt.Errorf("phone lookup: %w", err)
				}
				it.readErr = err
			}
		}
	}
	return nil
}

// holds tells which contacts of a group or workspace read the run must hold
// in its index: all of them, unless the run left providers unmapped as
// settled. Then a settled provider's contact (most of a reconciliation's
// group) is held only when the run's work may touch it: it is linked to a
// provider with work, or holds one of the phones that work wants.
func (m readMode) holds(work []*item) func(*rapidpro.Contact) bool {
	if m.settled == nil || m.settled.len() == 0 {
		return func(*rapidpro.Contact) bool { return true }
	}
	uuids, urns := map[string]bool{}, map[string]bool{}
	for _, it := range work {
		uuids[it.rec.UUID] = true
		for _, u := range it.Contact.URNs {
			urns[u] = true
		}
	}
	return func(c *rapidpro.Contact) bool {
		k := globalID(c)
		_, canonical := parseUUID(c.UUID) // noteSettled cannot keep others: add finds their duplicates
		return k == "" || !m.settled.has(k) || !canonical || uuids[c.UUID] || slices.ContainsFunc(c.URNs, func(u string) bool { return urns[u] })
	}
}

// noteSettled remembers the first contact read with a settled provider's
// globalid, held or not (16 bytes, where a contact is a kilobyte), so that
// a second one is found a duplicate, as add finds among those held.
func (ix *index) noteSettled(key, uuid string, settled *settledSet) {
	id, ok := parseUUID(uuid)
	if !ok {
		return // not RapidPro's form: holds keeps it, and add finds its duplicates
	}
	h := settled.hash(key)
	first, seen := ix.settledFirst[h]
	if !seen {
		if ix.settledFirst == nil {
			ix.settledFirst = map[uint64][16]byte{}
		}
		ix.settledFirst[h] = id
		return
	}
	if first == id {
		return
	}
	for _, u := range []string{formatUUID(first), uuid} {
		if !slices.Contains(ix.duplicates[key], u) {
			ix.duplicates[key] = append(ix.duplicates[key], u)
		}
	}
}

// parseUUID reads a UUID in its canonical text form.
func parseUUID(s string) ([16]byte, bool) {
	var id [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	hexDigits := s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(id[:], []byte(hexDigits)); err != nil || formatUUID(id) != s {
		return id, false // upper case would not read back the same
	}
	return id, true
}

func formatUUID(id [16]byte) string {
	h := hex.EncodeToString(id[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
