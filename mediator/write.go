package mediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// Reasons a provider is rejected, besides RapidPro's own error kinds.
const (
	ReasonDuplicateGlobalID = "duplicate_globalid"
	ReasonURNConflict       = "urn_conflict"
	ReasonContactBlocked    = "contact_blocked"
	ReasonStaleContact      = "stale_contact"
	ReasonGroupAdd          = "group_add"
	ReasonGroupRemove       = "group_remove"
	ReasonBlock             = "block"
	ReasonUnblock           = "unblock"
)

// Outcomes of a provider in a run, as a plan lists them.
const (
	OutcomeCreate    = "create"
	OutcomeUpdate    = "update"
	OutcomeUnchanged = "unchanged"
	OutcomeJoinGroup = "join_group"
	OutcomeRejoin    = "rejoin"
	OutcomeLeave     = "leave_group"
	OutcomeBlock     = "block"
	OutcomeConflict  = "conflict"
	OutcomeSkip      = "skip"
	OutcomeReject    = "reject"
	OutcomeDefer     = "defer"
	OutcomeHeld      = "held"
)

// commitEvery is how many outcomes are recorded per state transaction: a
// crash loses at most that many, and those are found again in RapidPro
// (by globalid, or by a create that reports their phone taken), never
// duplicated.
const commitEvery = 64

// contactOps are the RapidPro calls a writer makes; a dry run answers the
// writes itself.
type contactOps interface {
	Contacts(ctx context.Context, q rapidpro.ContactQuery, fn func(rapidpro.Contact) error) error
	CreateContact(ctx context.Context, w rapidpro.ContactWrite) (rapidpro.Contact, error)
	UpdateContact(ctx context.Context, uuid string, w rapidpro.ContactWrite) (rapidpro.Contact, error)
	ContactAction(ctx context.Context, action string, contacts []string, group string) error
}

// writer applies one run's decisions to RapidPro and records each outcome.
// Its fields are guarded by mu, which is released while a request is on
// the wire.
type writer struct {
	mu             sync.Mutex
	concurrency    int // requests to RapidPro in flight at once
	rp             contactOps
	groupUUID      string
	idx            *index
	report         *Report
	phase          *Phase
	logger         *slog.Logger
	state          *State // nil in a dry run: nothing is recorded
	progress       *progress
	policy         string
	maxConsecutive int
	targetKeys     []string // the targeting fields, cleared when a worker leaves

	toUnblock, toAdd, toRemove, toBlock []*item
	retry                               []*item // conflicts that later writes may resolve
	// comesLater tells a provider key a later chunk of the run writes; a
	// conflict over its phone is carried over to that chunk.
	comesLater  func(key string) bool
	carriedOver []*item

	claimed map[string]string // contact UUID → the key whose write took it in this run
	// rejected are the keys whose reject stands, in the state or from this
	// run: only those have one to clear when confirmed (a clear for every
	// confirmation doubled a first sync's state writes).
	rejected       map[string]bool
	stopped        error // set when the rest of the run must wait for the next one
	consecutive    int   // transient failures in a row
	bootstrapStale bool  // a write found the group or a field missing
}

// run handles every item, then the group actions, and records all outcomes.
// The error is the state's: RapidPro failures are in the report.
func (w *writer) run(ctx context.Context, items []*item) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, wrapped := w.rp.(unlockedOps); w.concurrency > 1 && !wrapped { // once, though a run writes in chunks
		w.rp = unlockedOps{ops: w.rp, mu: &w.mu}
	}
	if err := w.dispatch(ctx, items); err != nil {
		return err
	}
	// A phone handed from one worker to another in the same delta is free
	// only once the first worker's contact has let it go.
	retry := w.retry
	w.retry = nil
	for _, it := range retry {
		it.retried = true
		if w.stopped == nil && ctx.Err() != nil {
			w.stop(ctx.Err())
		}
		if w.stopped != nil {
			w.deferItem(it, w.knownUUID(it))
			continue
		}
		if w.carryOver(it) {
			continue
		}
		w.sync(ctx, it)
	}
	// A contact this service blocked is unblocked before it can rejoin.
	w.groupActions(ctx, "unblock", w.toUnblock, ReasonUnblock, &w.report.Unblocked, func(it *item) {
		it.clearBlocked = true
		w.later(&w.toAdd, it)
	})
	w.groupActions(ctx, "add", w.toAdd, ReasonGroupAdd, &w.report.GroupAdded, nil)
	w.groupActions(ctx, "remove", w.toRemove, ReasonGroupRemove, &w.report.GroupRemoved, nil)
	w.groupActions(ctx, "block", w.toBlock, ReasonBlock, &w.report.Blocked, func(it *item) {
		it.setBlocked = true
		w.done(it, it.uuid)
	})
	w.toUnblock, w.toAdd, w.toRemove, w.toBlock = nil, nil, nil, nil // the next chunk's are its own
	return w.flush(true)
}

func (w *writer) flush(force bool) error {
	if w.state == nil {
		return nil
	}
	if force || w.progress.len() >= commitEvery {
		return w.state.commit(w.progress)
	}
	return nil
}

func (w *writer) process(ctx context.Context, it *item) {
	switch {
	case it.Key == "":
		w.report.Skipped[it.Skipped]++
		it.note(OutcomeSkip, it.Skipped)
	case it.held:
		it.note(OutcomeHeld, "retirement held by the circuit breaker")
		w.keepPending(it, it.uuid)
	case it.failed != "":
		w.reject(it, it.rec.UUID, it.failed, it.failedDetail)
	case len(w.idx.duplicates[it.Key]) > 0:
		w.reject(it, it.rec.UUID, ReasonDuplicateGlobalID, "RapidPro contacts "+strings.Join(w.idx.duplicates[it.Key], ", ")+" share this globalid; merge them in RapidPro")
	case it.standingReject():
		w.record(it, it.rec) // reported by the rejected count; tried again when the data changes
		it.note(OutcomeReject, "rejected before, and the record has not changed since")
	case it.readErr != nil:
		w.fail(it, it.rec.UUID, it.readErr)
	case it.action == actionRetire:
		w.retire(ctx, it)
	case it.action == actionSync:
		w.sync(ctx, it)
	case it.Skipped != "" && it.Status != csd.StatusInactive && it.rec.UUID != "":
		w.report.Skipped[it.Skipped]++
		w.reject(it, it.rec.UUID, ReasonStaleContact, "the registry has no usable phone for this worker, yet their contact "+it.rec.UUID+" keeps the phones it had: correct the registry, or take the contact out of the group by hand")
	default:
		switch {
		case it.Status == csd.StatusInactive:
			w.report.Inactive++
			it.note(OutcomeUnchanged, "inactive")
		case it.Skipped != "":
			w.report.Skipped[it.Skipped]++
			it.note(OutcomeSkip, it.Skipped)
		default:
			w.report.Unchanged++
			it.note(OutcomeUnchanged, "")
		}
		w.done(it, it.rec.UUID)
	}
}

// retire applies the inactive policy to a provider no longer active.
func (w *writer) retire(ctx context.Context, it *item) {
	w.report.Inactive++
	c := w.idx.contactFor(it)
	switch {
	case c == nil:
		it.note(OutcomeUnchanged, "inactive, no contact")
		w.done(it, "") // no contact: nothing to take away
	case c.Status != "active":
		// In no group already; never blocked by this service, so never to
		// be unblocked by it (unblocking clears an opt-out).
		it.note(OutcomeUnchanged, "inactive, contact "+c.Status)
		w.done(it, c.UUID)
	case !wouldRetire(c, w.policy, w.groupUUID, w.targetKeys):
		it.note(OutcomeUnchanged, "inactive, already retired")
		w.done(it, c.UUID)
	case w.policy == InactiveRemoveFromGroup:
		if targeted(c, w.targetKeys) {
			// Smart groups select by these fields: a worker who left must
			// drop out of them as well as out of the managed group.
			// (Blocked contacts are in no group, smart or not.)
			if _, err := w.rp.UpdateContact(ctx, c.UUID, rapidpro.ContactWrite{Fields: w.clearTargets()}); err != nil {
				w.fail(it, c.UUID, err)
				return
			}
			w.consecutive = 0
		}
		it.uuid = c.UUID
		it.note(OutcomeLeave, it.leaveReason())
		w.later(&w.toRemove, it)
	case w.policy == InactiveBlock:
		it.uuid = c.UUID
		it.note(OutcomeBlock, it.leaveReason())
		w.later(&w.toBlock, it)
	}
}

// wouldRetire tells whether retiring under policy would change an active
// contact: it is in the group, or (removed from the group) still carries a
// targeting field a smart group could select it by.
func wouldRetire(c *rapidpro.Contact, policy, groupUUID string, targetKeys []string) bool {
	switch {
	case c.Status != "active":
		return false
	case policy == InactiveBlock:
		return true
	case policy == InactiveRemoveFromGroup:
		return inGroup(c, groupUUID) || targeted(c, targetKeys)
	}
	return false
}

// targeted tells whether a contact carries a targeting field value.
func targeted(c *rapidpro.Contact, targetKeys []string) bool {
	return slices.ContainsFunc(targetKeys, func(k string) bool { return c.Fields[k] != nil && *c.Fields[k] != "" })
}

// clearTargets is an update's fields that empties every targeting field.
func (w *writer) clearTargets() map[string]*string {
	out := map[string]*string{}
	for _, k := range w.targetKeys {
		out[k] = nil
	}
	return out
}

// knownUUID is the contact the run found for the provider, if any, so that
// a deferred provider keeps what the workspace read taught.
func (w *writer) knownUUID(it *item) string {
	c := w.contactOf(it)
	if it.action == actionRetire || it.held {
		// A retirement acts on its own contact only, never on one that
		// merely has the phone.
		c = w.idx.contactFor(it)
	}
	if c != nil {
		return c.UUID
	}
	return it.rec.UUID
}

// contactOf is the contact the provider is linked to or, failing that, one
// it may take over: its globalid's, or one entered by hand with its phone.
func (w *writer) contactOf(it *item) *rapidpro.Contact {
	if c := w.idx.byUUID[it.rec.UUID]; c != nil && it.rec.UUID != "" {
		return c
	}
	if c := w.idx.byKey[it.Key]; c != nil {
		return c
	}
	for _, u := range it.Contact.URNs {
		if owner := w.idx.byURN[u]; owner != nil && globalID(owner) == "" {
			return owner
		}
	}
	return nil
}

// sync creates or updates one active provider's contact, if it differs.
func (w *writer) sync(ctx context.Context, it *item) {
	c := w.contactOf(it)
	if w.concurrency > 1 && c != nil && !w.claim(c.UUID, it.Key) && !it.retried {
		// Another provider's write in flight took it: decide again once
		// the other writes are done.
		w.later(&w.retry, it)
		return
	}
	var free, taken []string
	for _, u := range it.Contact.URNs {
		if owner := w.idx.byURN[u]; owner != nil && owner != c {
			taken = append(taken, u)
		} else {
			free = append(free, u)
		}
	}
	if len(taken) > 0 && !it.retried {
		w.later(&w.retry, it)
		return
	}
	if len(free) == 0 {
		if c != nil && c.Status == "active" {
			it.clearBlocked = true
		}
		w.report.URNConflicts += len(taken)
		w.reject(it, uuidOf(c), ReasonURNConflict, "every phone belongs to another contact: "+strings.Join(taken, ", "))
		return
	}
	if c == nil {
		w.create(ctx, it, free, taken)
		return
	}
	change, changed := contactChange(c, it.Contact, free)
	if !changed {
		w.report.Unchanged++
		it.note(OutcomeUnchanged, "")
		w.settle(it, c, taken)
		return
	}
	it.note(OutcomeUpdate, describeChange(change))
	updated, err := w.rp.UpdateContact(ctx, c.UUID, change)
	if err != nil {
		if rapidpro.KindOf(err) == rapidpro.KindNotFound {
			// Deleted in RapidPro since it was read: the next run creates
			// it anew.
			it.rec.UUID = ""
			w.idx.remove(c)
		}
		w.fail(it, uuidOf(c), err)
		return
	}
	w.consecutive = 0
	w.idx.add(&updated)
	w.report.Updated++
	// RapidPro drops a phone that another contact holds and still answers
	// 200; only the answer shows it.
	w.settle(it, &updated, append(taken, missingURNs(change.URNs, updated.URNs)...))
}

func (w *writer) create(ctx context.Context, it *item, free, taken []string) {
	created, err := w.rp.CreateContact(ctx, rapidpro.ContactWrite{
		Name:     it.Contact.Name,
		Language: it.Contact.Language,
		URNs:     free,
		Groups:   []string{w.groupUUID},
		Fields:   fieldPointers(it.Contact.Fields),
	})
	if err != nil {
		if rapidpro.KindOf(err) == rapidpro.KindURNInUse && !it.lookedUp {
			// A phone is held by a contact the last read did not show: one
			// entered since, or this service's own whose record a crash
			// lost. Find it and decide again rather than duplicate.
			it.lookedUp = true
			if err := w.lookUp(ctx, free); err != nil {
				w.fail(it, "", err)
				return
			}
			w.sync(ctx, it)
			return
		}
		w.fail(it, "", err)
		return
	}
	w.consecutive = 0
	if globalID(&created) == it.Key {
		w.idx.add(createdView(created))
	} else {
		w.idx.add(&created)
	}
	if globalID(&created) != it.Key && !it.lookedUp {
		// A create whose answer was lost came back as the contact already
		// holding the phone, which is not this provider's: adopt it as a
		// contact found, not as one created.
		it.lookedUp = true
		w.sync(ctx, it)
		return
	}
	w.report.Created++
	it.note(OutcomeCreate, "")
	w.settle(it, &created, taken)
}

// createdView is what the index keeps of a contact this run created for
// its provider: what a later write may ask of it (its phones, globalid,
// status and groups). Its name and other fields are what was just sent;
// a first sync creates every contact, and keeping them all whole was most
// of its memory.
func createdView(c rapidpro.Contact) *rapidpro.Contact {
	return &rapidpro.Contact{UUID: c.UUID, Status: c.Status, URNs: c.URNs, Groups: c.Groups,
		Fields: map[string]*string{FieldGlobalID: c.Fields[FieldGlobalID]}}
}

// lookUp adds the contacts holding urns to the index.
func (w *writer) lookUp(ctx context.Context, urns []string) error {
	for _, u := range urns {
		err := w.rp.Contacts(ctx, rapidpro.ContactQuery{URN: u}, func(c rapidpro.Contact) error {
			w.idx.add(&c)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// settle finishes a provider whose contact c now holds what it was sent:
// it is rejected when a phone is held elsewhere or the contact is blocked,
// and otherwise joins the group (or is done if it is in it).
func (w *writer) settle(it *item, c *rapidpro.Contact, conflicts []string) {
	if c.Status == "active" {
		it.clearBlocked = true // whatever blocked it before, it is not blocked now
	}
	if len(conflicts) > 0 {
		w.report.URNConflicts += len(conflicts)
		w.reject(it, c.UUID, ReasonURNConflict, "phones held by other contacts: "+strings.Join(conflicts, ", "))
		it.noDigest = true
	}
	switch {
	case c.Status == "blocked" && it.rec.Blocked && !it.noDigest:
		// This service blocked it when the worker left: the worker is back.
		it.uuid = c.UUID
		it.note(OutcomeRejoin, "unblocked, then added to the group")
		w.later(&w.toUnblock, it)
	case c.Status == "blocked" || c.Status == "stopped" || c.Status == "archived":
		// Never unblocked otherwise: unblocking also clears an opt-out.
		if !it.noDigest {
			w.reject(it, c.UUID, ReasonContactBlocked, "the contact is "+c.Status+" in RapidPro; it cannot join the group until a person unblocks it")
		}
	case !inGroup(c, w.groupUUID):
		it.uuid = c.UUID
		switch {
		case it.rec.Digest == digestOf("inactive", w.policy) && it.outcome == OutcomeUpdate:
			it.note(OutcomeRejoin, "active again; updates "+it.outcomeDetail)
		case it.rec.Digest == digestOf("inactive", w.policy):
			it.note(OutcomeRejoin, "active again")
		case it.outcome == OutcomeUpdate:
			it.outcomeDetail += "; joins the group"
		case it.outcome != OutcomeCreate:
			it.note(OutcomeJoinGroup, "")
		}
		w.later(&w.toAdd, it)
	case !it.noDigest:
		w.done(it, c.UUID)
	}
}

func uuidOf(c *rapidpro.Contact) string {
	if c == nil {
		return ""
	}
	return c.UUID
}

// contactChange is the update that brings c to the mapped contact: only the
// keys that differ and only the fields this service owns. The HR record owns
// the phones, so the tel URNs are replaced when they differ as a set (the
// order RapidPro keeps is its own), and other schemes kept.
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
	if !sameSet(tel, urns) {
		change.URNs, changed = append(slices.Clone(urns), other...), true
		if len(c.URNs) > 0 && !strings.HasPrefix(c.URNs[0], "tel:") {
			// RapidPro prefers the first URN: an operator who put WhatsApp
			// first keeps it first.
			change.URNs = append(slices.Clone(other), urns...)
		}
	}
	if want.Language != "" && c.Language != want.Language {
		change.Language, changed = want.Language, true
	}
	for k, v := range want.Fields {
		// RapidPro shows an unset field as null; "" is sent as null too.
		if cur := c.Fields[k]; (cur == nil && v != "") || (cur != nil && *cur != v) {
			if change.Fields == nil {
				change.Fields = map[string]*string{}
			}
			change.Fields[k], changed = fieldValue(v), true
		}
	}
	return change, changed
}

// describeChange names what an update changes, for a plan: "name, urns,
// language, fields cadre district".
func describeChange(change rapidpro.ContactWrite) string {
	var parts []string
	if change.Name != "" {
		parts = append(parts, "name")
	}
	if change.Language != "" {
		parts = append(parts, "language")
	}
	if change.URNs != nil {
		parts = append(parts, "urns")
	}
	if len(change.Fields) > 0 {
		parts = append(parts, "fields "+strings.Join(slices.Sorted(maps.Keys(change.Fields)), " "))
	}
	return strings.Join(parts, ", ")
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
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

// fieldPointers is a create's fields: unset ones are left out.
func fieldPointers(fields map[string]string) map[string]*string {
	out := make(map[string]*string, len(fields))
	for k, v := range fields {
		if v != "" {
			out[k] = &v
		}
	}
	return out
}

// fieldValue is an update's value for a field: nil (null) clears it.
func fieldValue(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

func inGroup(c *rapidpro.Contact, groupUUID string) bool {
	return slices.ContainsFunc(c.Groups, func(g rapidpro.GroupRef) bool { return g.UUID == groupUUID })
}

// groupActions applies a contact_actions action in chunks of 100. RapidPro
// fails a whole chunk for one bad contact, so a failed chunk is halved until
// the contact that fails it is found.
// onSuccess, when set, finishes an item whose action succeeded; by default
// it is done.
func (w *writer) groupActions(ctx context.Context, action string, items []*item, reason string, count *int, onSuccess func(*item)) {
	if onSuccess == nil {
		onSuccess = func(it *item) { w.done(it, it.uuid) }
	}
	for chunk := range slices.Chunk(items, rapidpro.MaxActionContacts) {
		w.groupAction(ctx, action, chunk, reason, count, onSuccess)
	}
}

func (w *writer) groupAction(ctx context.Context, action string, items []*item, reason string, count *int, onSuccess func(*item)) {
	if w.stopped == nil && ctx.Err() != nil {
		w.stop(ctx.Err())
	}
	if w.stopped != nil {
		for _, it := range items {
			w.deferItem(it, it.uuid)
		}
		return
	}
	uuids := make([]string, len(items))
	for i, it := range items {
		uuids[i] = it.uuid
	}
	group := w.groupUUID
	if action == "block" || action == "unblock" {
		group = ""
	}
	err := w.rp.ContactAction(ctx, action, uuids, group)
	switch {
	case err == nil:
		w.consecutive = 0
		for _, it := range items {
			*count++
			onSuccess(it)
		}
	case len(items) > 1 && !stopsRun(err) && !isTransient(err):
		half := len(items) / 2
		w.groupAction(ctx, action, items[:half], reason, count, onSuccess)
		w.groupAction(ctx, action, items[half:], reason, count, onSuccess)
	default:
		for _, it := range items {
			w.failAs(it, it.uuid, reason, err)
		}
	}
}

// carryOver keeps a conflict for a later chunk of the run when a contact
// that chunk writes holds one of its phones (that write may let the phone
// go), and tells whether it did.
func (w *writer) carryOver(it *item) bool {
	it.waiting = w.comesLater != nil && slices.ContainsFunc(it.Contact.URNs, func(u string) bool {
		owner := w.idx.byURN[u]
		return owner != nil && w.comesLater(globalID(owner))
	})
	if it.waiting {
		w.carriedOver = append(w.carriedOver, it)
	}
	return it.waiting
}

// later keeps an item for a phase after the items' own writes; the others
// let go of their mapping once handled (see dispatch).
func (w *writer) later(list *[]*item, it *item) {
	it.queued = true
	*list = append(*list, it)
}

// done records that the provider's contact is as desired.
func (w *writer) done(it *item, uuid string) {
	rec := Record{EntityID: owner(it), UUID: uuid, Digest: it.digest, Blocked: it.blocked(), Raw: it.raw}
	if it.noDigest {
		rec.Digest, rec.Raw = "", ""
	} else {
		it.contactUUID = uuid
	}
	w.record(it, rec)
}

// owner is the entity id the state keeps for the key: the first one seen.
// A leaver knows only its contact's globalid, a lower-cased key: it never
// claims one, or the worker's return with the registry's spelling would be
// taken for a duplicate.
func owner(it *item) string {
	if it.rec.EntityID != "" || it.Left {
		return it.rec.EntityID
	}
	return strings.TrimSpace(it.EntityID)
}

func (w *writer) record(it *item, rec Record) {
	if it.Key == "" {
		return
	}
	if rec != it.rec {
		w.progress.records[it.Key] = rec
		if rec.Digest != "" && w.rejected[it.Key] {
			w.progress.rejected[it.Key] = "" // confirmed as desired: an earlier reject no longer stands
			delete(w.rejected, it.Key)
		}
	}
	if it.wasPending {
		w.progress.pending[it.Key] = nil
	}
}

// deferItem leaves the provider for the next run, which tries it first.
func (w *writer) deferItem(it *item, uuid string) {
	w.report.Deferred++
	it.note(OutcomeDefer, "left for the next run")
	w.keepPending(it, uuid)
}

func (w *writer) keepPending(it *item, uuid string) {
	m := it.Mapping
	w.progress.pending[it.Key] = &m
	if uuid != it.rec.UUID || it.rec.Digest != "" {
		// Keep what was learnt, so the next run need not look for it again,
		// and forget the digest: a write whose answer was lost may have
		// landed, so the contact is no longer known to match it.
		w.progress.records[it.Key] = Record{EntityID: owner(it), UUID: uuid, Blocked: it.blocked()}
	}
}

// fail handles a RapidPro error for a provider, by the error's kind.
func (w *writer) fail(it *item, uuid string, err error) {
	w.failAs(it, uuid, errorReason(err), err)
}

// failAs sorts a failure into three outcomes: failures that every provider
// would meet alike stop the run and defer the rest; transient ones keep this
// provider pending for the next run (and stop the run when they come in a
// row); the rest are rejects that wait for the registry record to change.
func (w *writer) failAs(it *item, uuid, reason string, err error) {
	switch {
	case missingSetup(err):
		w.bootstrapStale = true
		w.stop(fmt.Errorf("the group or a field this service set up is gone from RapidPro, the next run sets them up again: %w", err))
		w.deferItem(it, uuid)
	case stopsRun(err):
		w.stop(err)
		w.deferItem(it, uuid)
	case isTransient(err):
		w.report.Failed[reason]++
		w.report.addReject(Reject{EntityID: it.EntityID, Reason: reason, Detail: err.Error() + " (retried next run)"})
		w.logger.Warn("provider not synced, retried next run", "entity_id", it.EntityID, "reason", reason, "err", err)
		it.note(OutcomeDefer, reason)
		w.keepPending(it, uuid)
		if w.consecutive++; w.maxConsecutive > 0 && w.consecutive >= w.maxConsecutive {
			w.stop(fmt.Errorf("RapidPro failed %d times in a row: %w", w.consecutive, err))
		}
	default:
		w.consecutive = 0
		w.reject(it, uuid, reason, err.Error())
	}
}

func (w *writer) stop(err error) {
	if w.stopped != nil {
		return
	}
	w.stopped = err
	w.report.StoppedBy = err.Error()
	w.logger.Warn("writes stopped; the rest is left pending for the next run", "err", err)
}

func (w *writer) reject(it *item, uuid, reason, detail string) {
	w.report.Failed[reason]++
	w.report.addReject(Reject{EntityID: it.EntityID, Reason: reason, Detail: detail})
	w.logger.Warn("provider not synced", "entity_id", it.EntityID, "reason", reason, "detail", detail)
	if reason == ReasonURNConflict {
		it.note(OutcomeConflict, detail)
	} else {
		it.note(OutcomeReject, reason+": "+detail)
	}
	rec := Record{EntityID: owner(it), UUID: uuid, Rejected: it.digest, Blocked: it.blocked()}
	if reason == ReasonDuplicateGlobalID {
		rec = it.rec // which of two ids owns the key is the registry's to settle
	}
	w.record(it, rec)
	if it.Key != "" {
		w.progress.rejected[it.Key] = reason
		w.rejected[it.Key] = true
	}
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

// stopsRun tells the failures every further request would meet too: the
// run's time is up, RapidPro asks to wait longer than a run may, the token
// is refused, or the workspace is full.
func stopsRun(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch rapidpro.KindOf(err) {
	case rapidpro.KindThrottled, rapidpro.KindForbidden, rapidpro.KindLimit:
		return true
	}
	return false
}

// isTransient tells the failures worth trying again next run.
func isTransient(err error) bool {
	switch rapidpro.KindOf(err) {
	case rapidpro.KindServer, rapidpro.KindTransport:
		return true
	}
	return false
}

// missingSetup tells a write refused because the group or a field this
// service set up is gone: the cached bootstrap is stale.
func missingSetup(err error) bool {
	var e *rapidpro.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Kind == rapidpro.KindUnknownField || (e.Kind == rapidpro.KindValidation && len(e.Fields["groups"]) > 0) ||
		(e.Kind == rapidpro.KindValidation && slices.ContainsFunc(e.Fields["group"], func(m string) bool { return strings.Contains(m, "No such object") }))
}
