package mediator

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// A worker who opted out (stopped) must never be unblocked by this service:
// blocking a stopped contact and later unblocking it clears the opt-out.
func TestStoppedContactIsNeverUnblocked(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(s *Settings) { s.InactivePolicy = InactiveBlock }})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.workspace.AddField("globalid", "text")
	gid := a.id
	// The worker texted STOP: RapidPro holds the contact as stopped, in no group.
	e.workspace.AddContact(rapidpro.Contact{Name: "Ama", Status: "stopped", URNs: []string{"tel:+231777100001"},
		Fields: map[string]*string{"globalid": &gid}})
	e.trigger() // reported contact_blocked: a stopped contact cannot join
	a.status, a.updated = "Inactive", later
	e.setDirectory(a)
	e.next() // the worker leaves: the block policy blocks the stopped contact
	a.status, a.updated = "Active", "2025-01-01T09:30:00Z"
	e.setDirectory(a)
	tx, _ := e.next() // the worker returns
	c, _ := e.contactOf(a.id)
	if c.Status == "active" {
		t.Fatalf("the opt-out was cleared: contact %s in %v, unblocked=%s", c.Status, groupNames(c), tx.Response.Properties["unblocked"])
	}
}

// A contact a person blocked stays blocked when its worker leaves and
// returns: this service did not block it.
func TestHandBlockedContactStaysBlockedAfterLeaveAndReturn(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(s *Settings) { s.InactivePolicy = InactiveBlock }})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	c, _ := e.contactOf(a.id)
	if err := e.operator().ContactAction(t.Context(), "block", []string{c.UUID}, ""); err != nil {
		t.Fatal(err)
	}
	a.status, a.updated = "Inactive", later
	e.setDirectory(a)
	e.next()
	a.status, a.updated = "Active", "2025-01-01T09:30:00Z"
	e.setDirectory(a)
	tx, _ := e.next()
	if c, _ := e.contactOf(a.id); c.Status != "blocked" {
		t.Fatalf("a contact a person blocked was unblocked: %s, unblocked=%s", c.Status, tx.Response.Properties["unblocked"])
	}
}

// The service unblocks its own blocked contact for a returning worker, but
// the group add that follows fails: the record still says "this service
// blocked it". Later a person blocks the contact; the next change of the
// worker must not unblock what the person blocked.
func TestBlockedFlagClearedOnceUnblocked(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(s *Settings) { s.InactivePolicy = InactiveBlock }})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	a.status, a.updated = "Inactive", later
	e.setDirectory(a)
	e.next() // blocked by this service
	a.status, a.updated = "Active", "2025-01-01T09:30:00Z"
	e.setDirectory(a)
	// unblock passes, the add after it is refused
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contact_actions.json", Skip: 1, Status: http.StatusBadRequest})
	e.next()
	e.triggerWith("full=true") // the reconciliation retries the reject: the worker rejoins
	c, _ := e.contactOf(a.id)
	if c.Status != "active" || !e.inGroup(a.id) {
		t.Fatalf("setup: %s in %v", c.Status, groupNames(c))
	}
	if err := e.operator().ContactAction(t.Context(), "block", []string{c.UUID}, ""); err != nil {
		t.Fatal(err)
	}
	a.name, a.updated = "Ama K.", "2025-01-01T12:30:00Z"
	e.setDirectory(a)
	e.next()
	if c, _ := e.contactOf(a.id); c.Status != "blocked" {
		t.Fatalf("a contact a person blocked was unblocked: %s", c.Status)
	}
}

// Registries with upper-case UUIDs (DHIS2, iHRIS exports): a worker found
// gone by a reconciliation whose state had no record of them (here: the
// operator changed the inactive policy, which starts the state over) must
// rejoin when they come back, not be rejected as a duplicate of themselves.
func TestLeaverWithUpperCaseIDRejoins(t *testing.T) {
	workers := staff(20)
	for i := range workers {
		workers[i].id = "urn:uuid:" + strings.ToUpper(strings.TrimPrefix(workers[i].id, "urn:uuid:")) // urn:uuid:STAFF-03
	}
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	gone := workers[3]
	e.setDirectory(slices.Delete(slices.Clone(workers), 3, 4)...)
	next := e.syncer.Settings()
	next.InactivePolicy = InactiveBlock
	if err := e.syncer.SetSettings(next); err != nil {
		t.Fatal(err)
	}
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"blocked": "1"})
	back := gone
	back.updated = "2025-01-03T00:00:00Z"
	e.setDirectory(append(slices.Clone(workers), back)...)
	tx, _ = e.next()
	if c, _ := e.contactOf(gone.id); c.Status != "active" || !slices.Contains(groupNames(c), fixtureGroup) {
		t.Fatalf("the returning worker did not rejoin: %s in %v\n%s", c.Status, groupNames(c), tx.RawBody)
	}
}

// A broken re-feed that marks half the registry inactive is as much a mass
// departure as an empty registry; a delta run retires them all, past the
// circuit breaker.
func TestDeltaMassRetirementIsHeld(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	broken := slices.Clone(workers)
	for i := range 10 {
		broken[i].status, broken[i].updated = "106-002", later
	}
	e.setDirectory(broken...)
	tx, _ := e.next()
	if tx.Response.Properties["full"] != "" {
		t.Fatal("not a delta run")
	}
	if got := tx.Response.Properties["group_removed"]; got != "0" {
		t.Fatalf("a delta run retired %s of 20 contacts with no breaker: %s", got, tx.Response.Properties["retire_held"])
	}
}

// Below the floor of a few retirements the share does not apply: a pilot of
// a few contacts sees a worker leave.
func TestBreakerLetsAPilotSeeAWorkerLeave(t *testing.T) {
	workers := staff(8)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	e.setDirectory(workers[1:]...)
	r := e.triggerWith("full=true")
	if r.Properties["retire_held"] != "0" {
		t.Fatalf("one leaver of 8 is held: %s", r.Properties["breaker"])
	}
}

func upperStaff(n int) []hw {
	ws := staff(n)
	for i := range ws {
		ws[i].id = "urn:uuid:" + strings.ToUpper(strings.TrimPrefix(ws[i].id, "urn:uuid:"))
	}
	return ws
}

// Leavers held by the breaker stay held, whatever case the registry writes
// ids in, and a confirmation (which makes the run a reconciliation) retires
// them.
func TestHeldUpperCaseLeaversStayHeld(t *testing.T) {
	workers := upperStaff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	e.setDirectory(workers[3:]...)
	if err := props(e.triggerWith("full=true"), map[string]string{"retire_held": "3", "group_removed": "0"}); err != nil {
		t.Fatal(err)
	}
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"retire_held": "3", "rejected": "0", "pending": "3"})
	if err := props(e.triggerWith("confirm_retire=true"), map[string]string{"group_removed": "3", "pending": "0"}); err != nil {
		t.Fatal(err)
	}
}

// After the managed group is renamed (a new target), workers retired long
// ago are not counted as retirements: nothing would change for them.
func TestRetargetHoldsNothingToRetire(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directoryWith(kakata, workers...)})
	e.trigger()
	left := slices.Clone(workers)
	for i := range 5 {
		left[i].status, left[i].updated = "Inactive", later
	}
	if err := e.registry.SetDocument(directoryWith(kakata, left...)); err != nil {
		t.Fatal(err)
	}
	if r := e.triggerWith("confirm_retire=true"); r.Properties["group_removed"] != "5" {
		t.Fatal(r.Properties)
	}
	next := e.syncer.Settings()
	next.RapidPro.Group = "mHero Liberia"
	if err := e.syncer.SetSettings(next); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := props(e.triggerWith(""), map[string]string{"retire_held": "0", "pending": "0"}); err != nil {
			t.Error(err)
		}
	}
}

// Leavers held by a reconciliation are judged again only by one: a registry
// restored with its old record dates releases them at the next
// reconciliation, and a confirmation (a reconciliation too) retires none.
func TestRestoredRegistryReleasesHeldLeavers(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	e.setDirectory()
	if r := e.triggerWith("full=true"); r.Properties["retire_held"] != "20" {
		t.Fatal(r.Properties)
	}
	e.setDirectory(workers...) // restored, dates unchanged
	if r := e.triggerWith(""); r.Properties["group_removed"] != "0" || r.Properties["retire_held"] != "20" {
		t.Fatalf("a delta run judged leavers it cannot see: %v", r.Properties)
	}
	if err := props(e.triggerWith("confirm_retire=true"), map[string]string{"group_removed": "0", "retire_held": "0", "pending": "0"}); err != nil {
		t.Error(err)
	}
	for _, w := range workers {
		if !e.inGroup(w.id) {
			t.Fatalf("%s left the group", w.id)
		}
	}
}

// A confirmed retirement cut short (RapidPro throttles) is finished by the
// next run without a second confirmation.
func TestConfirmedRetirementCutShortIsNotHeldAgain(t *testing.T) {
	workers := staff(20)
	for i := range workers {
		workers[i].cadre = "Nurse"
	}
	e := newEnv(t, envOptions{doc: directory(workers...), retryCap: time.Second})
	e.trigger()
	left := slices.Clone(workers)
	for i := range 6 {
		left[i].status, left[i].updated = "Inactive", later
	}
	e.setDirectory(left...)
	if tx, _ := e.next(); tx.Response.Properties["retire_held"] != "6" {
		t.Fatal(tx.RawBody)
	}
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 3, Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	if r := e.triggerWith("confirm_retire=true"); r.Properties["deferred"] == "0" {
		t.Fatal(r.Properties)
	}
	e.clock.Advance(2 * time.Hour)
	wantProps(t, e.trigger(), map[string]string{"retire_held": "0", "pending": "0", "group_removed": "6"})
}

// A leaver whose removal RapidPro refused is tried again by the next
// reconciliation.
func TestRefusedLeaverIsRetriedByTheNextReconciliation(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	e.setDirectory(workers[1:]...)
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contact_actions.json", Status: http.StatusBadRequest})
	if r := e.triggerWith("full=true"); r.Properties["failed_group_remove"] != "1" {
		t.Fatal(r.Properties)
	}
	if err := props(e.triggerWith("full=true"), map[string]string{"group_removed": "1", "rejected": "0"}); err != nil {
		t.Fatal(err)
	}
}

// A retirement deferred by a cut run acts later on the worker's own
// contact only, never on one a person entered with the same phone.
func TestDeferredRetirementAdoptsNoHandContact(t *testing.T) {
	e := newEnv(t, envOptions{retryCap: time.Second, tune: func(s *Settings) { s.InactivePolicy = InactiveBlock }})
	hand := e.workspace.AddContact(rapidpro.Contact{Name: "entered by hand", URNs: []string{"tel:+231777100001"}})
	e.setDirectory(hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 200 002"}},
		hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}, status: "Inactive"})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	e.trigger()
	e.clock.Advance(2 * time.Hour)
	e.trigger()
	for _, c := range e.workspace.Contacts() {
		if c.UUID == hand.UUID && c.Status != "active" {
			t.Fatalf("a contact entered by hand was %s", c.Status)
		}
	}
}

// A held retirement whose contact another write removed from the run's
// index mid-run must not crash the run.
func TestHeldRetirementWithContactGoneMidRun(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	x, _ := e.contactOf(workers[0].id)
	if _, err := e.operator().UpdateContact(t.Context(), x.UUID, rapidpro.ContactWrite{Fields: map[string]*string{"globalid": nil}}); err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(workers)
	for i := range 3 {
		changed[i].status, changed[i].updated = "Inactive", later
	}
	e.setDirectory(append([]hw{{id: "urn:uuid:y", name: "Yei", phones: workers[0].phones, updated: later}}, changed...)...)
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusNotFound})
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"retire_held": "3"})
}

// A run that finds a contact active clears the mark that this service had
// blocked it, even when the run rejects the worker for a phone conflict: a
// person who blocks it later keeps it blocked.
func TestConflictClearsStaleBlockedMark(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(s *Settings) { s.InactivePolicy = InactiveBlock }})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	b := hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 100 002"}}
	e.setDirectory(a, b)
	e.trigger()
	a.status, a.updated = "Inactive", later
	e.setDirectory(a, b)
	e.next()
	ca, _ := e.contactOf(a.id)
	cb, _ := e.contactOf(b.id)
	op := e.operator()
	if err := op.ContactAction(t.Context(), "unblock", []string{ca.UUID}, ""); err != nil {
		t.Fatal(err)
	}
	if err := op.ContactAction(t.Context(), "add", []string{ca.UUID}, cb.Groups[0].UUID); err != nil {
		t.Fatal(err)
	}
	a.status, a.updated, a.phones = "Active", "2025-01-01T09:30:00Z", []string{"0777 100 001", "0777 100 002"}
	e.setDirectory(a, b)
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"action_conflict": "1"})
	if recs, _ := e.state.Records([]string{"urn:uuid:a"}); recs["urn:uuid:a"].Blocked {
		t.Errorf("stale Blocked: %+v", recs["urn:uuid:a"])
	}
	if err := op.ContactAction(t.Context(), "block", []string{ca.UUID}, ""); err != nil {
		t.Fatal(err)
	}
	a.phones, a.name, a.updated = []string{"0777 100 001"}, "Ama K.", "2025-01-01T12:30:00Z"
	e.setDirectory(a, b)
	e.next()
	if c, _ := e.contactOf(a.id); c.Status != "blocked" {
		t.Fatalf("unblocked: %s", c.Status)
	}
}
