package mediator

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// Reasons a provider is rejected, besides RapidPro's own error kinds.
const (
	ReasonDuplicateGlobalID = "duplicate_globalid"
	ReasonURNConflict       = "urn_conflict"
	ReasonGroupAdd          = "group_add"
	ReasonGroupRemove       = "group_remove"
)

// actionChunk is RapidPro's limit on contacts per contact_actions call.
const actionChunk = 100

// writer applies one run's decisions to RapidPro.
type writer struct {
	rp     *rapidpro.Client
	group  rapidpro.Group
	idx    *index
	report *Report
	phase  *Phase
	logger *slog.Logger
	links  map[string]string // key → contact UUID, to store when the run ends

	toAdd    []pendingAction
	toRemove []pendingAction
	toBlock  []pendingAction
	stopped  error // set when the rest of the run must wait for the next one
}

type pendingAction struct {
	entityID, uuid string
}

func (w *writer) run(ctx context.Context, items []*item, inactivePolicy string) {
	for i, it := range items {
		if w.stopped != nil {
			w.report.Deferred += countPending(items[i:])
			break
		}
		switch {
		case it.Skipped != "":
			w.report.Skipped[it.Skipped]++
		case it.failed != "":
			w.reject(it.EntityID, it.failed, "another provider has the same globalid "+it.Key, false)
		case len(w.idx.duplicates[it.Key]) > 0:
			w.reject(it.EntityID, ReasonDuplicateGlobalID, "RapidPro contacts "+strings.Join(w.idx.duplicates[it.Key], ", ")+" share this globalid; merge them in RapidPro", false)
		case it.Status == csd.StatusInactive:
			w.retire(it, inactivePolicy)
		default:
			w.sync(ctx, it)
		}
	}
	w.groupActions(ctx, "add", w.toAdd, ReasonGroupAdd, func() { w.report.GroupAdded++ })
	w.groupActions(ctx, "remove", w.toRemove, ReasonGroupRemove, func() { w.report.GroupRemoved++ })
	w.groupActions(ctx, "block", w.toBlock, "block", func() { w.report.Blocked++ })
}

// countPending counts the providers a stopped run leaves for the next.
func countPending(items []*item) int {
	n := 0
	for _, it := range items {
		if it.Skipped == "" && it.failed == "" {
			n++
		}
	}
	return n
}

// retire applies the inactive policy to a provider no longer active.
func (w *writer) retire(it *item, policy string) {
	w.report.Inactive++
	c := w.idx.byKey[it.Key]
	if c == nil || policy == InactiveIgnore {
		return
	}
	w.links[it.Key] = c.UUID
	switch {
	case policy == InactiveRemoveFromGroup && inGroup(c, w.group.UUID):
		w.toRemove = append(w.toRemove, pendingAction{it.EntityID, c.UUID})
	case policy == InactiveBlock && c.Status == "active":
		w.toBlock = append(w.toBlock, pendingAction{it.EntityID, c.UUID})
	}
}

// sync creates or updates one active provider's contact, if it differs.
func (w *writer) sync(ctx context.Context, it *item) {
	c := w.idx.byKey[it.Key]
	if c == nil {
		// A contact someone entered by hand with this phone is adopted rather
		// than duplicated; one linked to another health worker is not.
		for _, u := range it.Contact.URNs {
			if owner := w.idx.byURN[u]; owner != nil && globalID(owner) == "" {
				c = owner
				break
			}
		}
	}
	var urns, taken []string
	for _, u := range it.Contact.URNs {
		if owner := w.idx.byURN[u]; owner != nil && owner != c {
			taken = append(taken, u)
		} else {
			urns = append(urns, u)
		}
	}
	if len(taken) > 0 {
		w.report.URNConflicts += len(taken)
		w.logger.Warn("phone belongs to another contact", "entity_id", it.EntityID, "urns", taken)
	}
	if len(urns) == 0 {
		w.reject(it.EntityID, ReasonURNConflict, "every phone belongs to another contact: "+strings.Join(taken, ", "), false)
		return
	}

	if c == nil {
		w.create(ctx, it, urns)
		return
	}
	w.links[it.Key] = c.UUID
	if change, ok := contactChange(c, it.Contact, urns); ok {
		w.phase.Requests++
		updated, err := w.rp.UpdateContact(ctx, c.UUID, change)
		if err != nil {
			w.fail(it.EntityID, err)
			return
		}
		// RapidPro drops a phone that another contact took meanwhile and still
		// answers 200; only the answer shows it.
		if missing := missingURNs(change.URNs, updated.URNs); len(missing) > 0 {
			w.report.URNConflicts += len(missing)
			w.logger.Warn("RapidPro kept a phone on another contact", "entity_id", it.EntityID, "urns", missing)
		}
		w.idx.add(&updated)
		c = &updated
		w.report.Updated++
	} else {
		w.report.Unchanged++
	}
	if !inGroup(c, w.group.UUID) && c.Status == "active" {
		w.toAdd = append(w.toAdd, pendingAction{it.EntityID, c.UUID})
	}
}

func (w *writer) create(ctx context.Context, it *item, urns []string) {
	w.phase.Requests++
	created, err := w.rp.CreateContact(ctx, rapidpro.ContactWrite{
		Name:   it.Contact.Name,
		URNs:   urns,
		Groups: []string{w.group.UUID},
		Fields: fieldPointers(it.Contact.Fields),
	})
	if err != nil {
		w.fail(it.EntityID, err)
		return
	}
	w.idx.add(&created)
	w.links[it.Key] = created.UUID
	w.report.Created++
}

// contactChange is the update that brings c to the mapped contact: only the
// keys that differ and only the fields this service owns. The HR record owns
// the phones, so the tel URNs are replaced, and other schemes kept.
func contactChange(c *rapidpro.Contact, want Contact, urns []string) (rapidpro.ContactWrite, bool) {
	var change rapidpro.ContactWrite
	changed := false
	if want.Name != "" && c.Name != want.Name {
		change.Name, changed = want.Name, true
	}
	var tel, other []string
	for _, u := range c.URNs {
		if strings.HasPrefix(u, "tel:") {
			tel = append(tel, u)
		} else {
			other = append(other, u)
		}
	}
	if !slices.Equal(tel, urns) {
		change.URNs, changed = append(slices.Clone(urns), other...), true
	}
	for k, v := range want.Fields {
		if cur := c.Fields[k]; cur == nil || *cur != v {
			if change.Fields == nil {
				change.Fields = map[string]*string{}
			}
			change.Fields[k], changed = &v, true
		}
	}
	return change, changed
}

func missingURNs(sent, got []string) []string {
	var missing []string
	for _, u := range sent {
		if strings.HasPrefix(u, "tel:") && !slices.Contains(got, u) {
			missing = append(missing, u)
		}
	}
	return missing
}

func fieldPointers(fields map[string]string) map[string]*string {
	out := make(map[string]*string, len(fields))
	for k, v := range fields {
		out[k] = &v
	}
	return out
}

func inGroup(c *rapidpro.Contact, groupUUID string) bool {
	return slices.ContainsFunc(c.Groups, func(g rapidpro.GroupRef) bool { return g.UUID == groupUUID })
}

// groupActions applies a contact_actions action in chunks of 100. RapidPro
// fails a whole chunk for one bad contact, so a failed chunk is halved until
// the contact that fails it is found.
func (w *writer) groupActions(ctx context.Context, action string, pending []pendingAction, reason string, done func()) {
	for chunk := range slices.Chunk(pending, actionChunk) {
		w.groupAction(ctx, action, chunk, reason, done)
	}
}

func (w *writer) groupAction(ctx context.Context, action string, pending []pendingAction, reason string, done func()) {
	if w.stopped != nil {
		w.report.Deferred += len(pending)
		return
	}
	uuids := make([]string, len(pending))
	for i, p := range pending {
		uuids[i] = p.uuid
	}
	group := w.group.UUID
	if action == "block" {
		group = ""
	}
	w.phase.Requests++
	err := w.rp.ContactAction(ctx, action, uuids, group)
	switch {
	case err == nil:
		for range pending {
			done()
		}
	case len(pending) > 1 && !isTransient(err):
		half := len(pending) / 2
		w.groupAction(ctx, action, pending[:half], reason, done)
		w.groupAction(ctx, action, pending[half:], reason, done)
	default:
		for _, p := range pending {
			w.failAs(p.entityID, reason, err)
		}
	}
}

// fail records a RapidPro error against a provider, by the error's kind.
func (w *writer) fail(entityID string, err error) {
	w.failAs(entityID, errorReason(err), err)
}

func (w *writer) failAs(entityID, reason string, err error) {
	transient := isTransient(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || rapidpro.KindOf(err) == rapidpro.KindThrottled {
		// Waiting longer than a run may is the next run's job.
		if w.stopped == nil {
			w.stopped = err
			w.logger.Warn("writes stopped, the rest is left for the next run", "err", err)
		}
		w.report.Deferred++
		w.report.Transient++
		return
	}
	w.reject(entityID, reason, err.Error(), transient)
}

func (w *writer) reject(entityID, reason, detail string, transient bool) {
	w.report.Failed[reason]++
	if transient {
		w.report.Transient++
	}
	w.report.addReject(Reject{EntityID: entityID, Reason: reason, Detail: detail})
	w.logger.Warn("provider not synced", "entity_id", entityID, "reason", reason, "detail", detail)
}

// errorReason names a RapidPro failure for counts and metrics.
func errorReason(err error) string {
	if k := rapidpro.KindOf(err); k == rapidpro.KindURNInUse {
		return ReasonURNConflict
	} else if k != rapidpro.KindUnknown {
		return k.String()
	}
	return "error"
}

// isTransient tells the failures worth trying again next run, which hold the
// watermark back, from rejects that will not change until the data does.
func isTransient(err error) bool {
	switch rapidpro.KindOf(err) {
	case rapidpro.KindServer, rapidpro.KindTransport, rapidpro.KindThrottled:
		return true
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
