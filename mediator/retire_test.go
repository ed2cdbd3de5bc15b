package mediator

import (
	"net/http"
	"slices"
	"strings"
	"testing"

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
