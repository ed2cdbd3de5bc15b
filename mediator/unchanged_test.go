package mediator

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// A reconciliation neither maps nor holds the workers whose records did not
// change, yet a second contact made since with one's globalid is still
// found and reported, as it would be for a worker mapped again.
func TestSettledWorkerWithADuplicateContactIsRejected(t *testing.T) {
	workers := staff(6)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	wantProps(t, e.trigger(), map[string]string{"created": "6", "mapped": "6"})
	key := "urn:uuid:staff-02"
	copied := e.workspace.AddContact(rapidpro.Contact{Name: "Copy", URNs: []string{"tel:+231886555000"},
		Fields: map[string]*string{FieldGlobalID: &key}, Groups: []rapidpro.GroupRef{{Name: fixtureGroup}}})

	before := len(e.workspace.Requests())
	r, err := e.syncer.RunWith(context.Background(), RunOptions{Full: true})
	if err != nil || r.Err != nil {
		t.Fatal(err, r.Err)
	}
	if r.Mapped != 0 || r.Unchanged != 5 || r.Failed[ReasonDuplicateGlobalID] != 1 || r.Actions[OutcomeLeave] != 0 {
		t.Fatalf("mapped %d, unchanged %d, failed %v, actions %v; want 0 mapped, 5 unchanged, 1 duplicate, no leaver",
			r.Mapped, r.Unchanged, r.Failed, r.Actions)
	}
	if len(r.Rejects) != 1 || r.Rejects[0].EntityID != key || !strings.Contains(r.Rejects[0].Detail, copied.UUID) {
		t.Fatalf("rejects %+v, want staff-02's naming contact %s", r.Rejects, copied.UUID)
	}
	if w := e.writes(before); len(w) != 0 {
		t.Fatalf("the reconciliation wrote %d times", len(w))
	}
}

// A release whose mapping code differs maps every provider again, even in
// a run that would otherwise trust their records: contacts confirmed under
// the old rules (a number the old phone metadata refused, say) are mapped
// under the new ones.
func TestNewMappingCodeMapsEveryProviderAgain(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(5)...)})
	wantProps(t, e.trigger(), map[string]string{"created": "5"})
	full := func() *Report {
		t.Helper()
		r, err := e.syncer.RunWith(context.Background(), RunOptions{Full: true})
		if err != nil || r.Err != nil {
			t.Fatal(err, r.Err)
		}
		return r
	}
	if r := full(); r.Mapped != 0 {
		t.Fatalf("same release: %d mapped again, want 0", r.Mapped)
	}
	defer func(old string) { mappingCode = old }(mappingCode)
	mappingCode += " next"
	if r := full(); r.Mapped != 5 || r.Unchanged != 5 {
		t.Fatalf("new mapping code: %d mapped, %d unchanged; want all 5 mapped, and unchanged", r.Mapped, r.Unchanged)
	}
	if r := full(); r.Mapped != 0 {
		t.Fatalf("the run after: %d mapped again, want 0", r.Mapped)
	}
}

// What a record resolves through is part of its raw context, value by
// value: a facility's organizations cannot run together.
func TestRawContext(t *testing.T) {
	dir := func(orgs ...string) *Directory {
		d := NewDirectory()
		d.Facilities["f"] = Place{ID: "f", Name: "F", Orgs: orgs}
		return d
	}
	base := rawContext("m", InactiveRemoveFromGroup, dir("a", "b"))
	for name, other := range map[string]string{
		"orgs run together": rawContext("m", InactiveRemoveFromGroup, dir("a b")),
		"another org":       rawContext("m", InactiveRemoveFromGroup, dir("a", "c")),
		"mapping settings":  rawContext("n", InactiveRemoveFromGroup, dir("a", "b")),
		"inactive policy":   rawContext("m", InactiveBlock, dir("a", "b")),
		"no directory":      rawContext("m", InactiveRemoveFromGroup, nil),
	} {
		if other == base {
			t.Errorf("%s: same raw context", name)
		}
	}
	if again := rawContext("m", InactiveRemoveFromGroup, dir("a", "b")); again != base {
		t.Error("the same inputs gave another raw context")
	}
}

// A state that cannot be read during the pull fails the run on the state,
// not on OpenInfoMan.
func TestUnreadableRecordFailsTheRunOnTheState(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(3)...)})
	e.trigger()
	if err := e.state.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProviders).Put([]byte("urn:uuid:staff-01"), []byte("{"))
	}); err != nil {
		t.Fatal(err)
	}
	r, err := e.syncer.RunWith(context.Background(), RunOptions{Full: true})
	if err != nil || r.Err == nil || !strings.HasPrefix(r.Err.Error(), "state: ") || !strings.Contains(r.Err.Error(), "urn:uuid:staff-01") {
		t.Fatalf("run error %v, want one on the state naming the record", r.Err)
	}
}

// testIntake is a sync run's intake over a new state, mapping Liberian
// numbers under the inactive policy remove-from-group.
func testIntake(t *testing.T) *intake {
	t.Helper()
	state, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { state.Close() })
	in := newIntake()
	in.state, in.mapper, in.context, in.pending = state, Mapper{Country: "LR"}, "ctx", map[string]bool{}
	in.settled = newSettledSet(InactiveRemoveFromGroup)
	return in
}

// A provider pulled twice in one run (OpenInfoMan's pages overlapping) is
// counted once: as settled while every copy is unchanged, as an item once a
// copy needs mapping.
func TestProviderPulledTwiceIsCountedOnce(t *testing.T) {
	in := testIntake(t)
	state := in.state
	p := &csd.Provider{EntityID: "urn:uuid:A", Names: []csd.Name{{CommonNames: []string{"Ama"}}}, Record: csd.Record{Status: "Active"},
		ContactPoints: []csd.ContactPoint{{Code: csd.ContactPhone, Value: "0777 100 001"}}}
	changed := *p
	changed.Names = []csd.Name{{CommonNames: []string{"Ama K."}}}
	rec, _ := json.Marshal(Record{EntityID: p.EntityID, UUID: "u", Digest: "d", Raw: rawDigest(in.context, p)})
	if err := state.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketProviders).Put([]byte(p.Key()), rec) }); err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		p            *csd.Provider
		item         bool
		settledAfter int
	}{
		{p, false, 1},       // unchanged: settled
		{p, false, 1},       // the same again: still one
		{&changed, true, 0}, // a changed copy: an item, no longer settled
		{p, true, 0},        // an unchanged copy after it: an item too, never settled beside one
	} {
		it, err := in.take(step.p)
		if err != nil {
			t.Fatal(err)
		}
		if (it != nil) != step.item || in.settled.len() != step.settledAfter {
			t.Errorf("copy %d: item %v, %d settled; want item %v, %d settled", i+1, it != nil, in.settled.len(), step.item, step.settledAfter)
		}
	}
}

// A duplicate of an unchanged worker's contact found by a phone lookup, not
// by the group read, is reported as one found in the group would be.
func TestSettledWorkerDuplicateFoundByALookup(t *testing.T) {
	workers := staff(3)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	key := "urn:uuid:staff-01"
	e.workspace.AddContact(rapidpro.Contact{Name: "Copy", URNs: []string{"tel:+231886555111"}, Fields: map[string]*string{FieldGlobalID: &key}})
	moved := slices.Clone(workers)
	moved[2].phones, moved[2].updated = []string{"0886 555 111"}, later
	e.setDirectory(moved...)
	r, err := e.syncer.RunWith(context.Background(), RunOptions{Full: true})
	if err != nil || r.Err != nil {
		t.Fatal(err, r.Err)
	}
	if r.Failed[ReasonDuplicateGlobalID] != 1 || r.Mapped != 1 {
		t.Fatalf("failed %v, %d mapped; want staff-01 rejected as a duplicate, 1 mapped", r.Failed, r.Mapped)
	}
}

// A run takes on at most MaxPending of the work earlier runs left, the
// first in key order; the rest waits its turn in the state. A provider
// pulled again while its older form waits is written in its newer form,
// and the older one is never written back by a later run.
func TestPendingBeyondTheBoundWaitsItsTurn(t *testing.T) {
	workers := staff(6)
	e := newEnv(t, envOptions{doc: directory(workers...), maxPending: 2})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	wantProps(t, e.trigger(), map[string]string{"created": "0", "pending": "6"})

	workers[5].name, workers[5].updated = "Renamed", later
	e.setDirectory(workers...)
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"retried": "2", "created": "3", "pending": "3"})
	for runs := 0; ; runs++ {
		if runs == 3 {
			t.Fatalf("still %s pending after 3 more runs", tx.Response.Properties["pending"])
		}
		if tx, _ = e.next(); tx.Response.Properties["pending"] == "0" {
			break
		}
	}
	if c, ok := e.contactOf(workers[5].id); !ok || c.Name != "Renamed" {
		t.Fatalf("staff-05's contact %+v, want the newer name", c)
	}
	if n := len(contactsByGlobalID(e.workspace.Contacts())); n != 6 {
		t.Fatalf("%d contacts, want 6", n)
	}
}

// The index keeps the newest copy of a contact it was given: a lookup
// answered after a write it predates (writes overlap) does not bring the
// old phones back.
func TestIndexKeepsTheNewerCopy(t *testing.T) {
	at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	older := rapidpro.Contact{UUID: "c", URNs: []string{"tel:+231777000001"}, ModifiedOn: at}
	newer := rapidpro.Contact{UUID: "c", URNs: []string{"tel:+231777000002"}, ModifiedOn: at.Add(time.Second)}
	for _, tc := range []struct {
		name  string
		order []rapidpro.Contact
	}{
		{"newer last", []rapidpro.Contact{older, newer}},
		{"older last", []rapidpro.Contact{newer, older}},
	} {
		ix := newIndex()
		for _, c := range tc.order {
			ix.add(&c)
		}
		if ix.byURN["tel:+231777000001"] != nil || ix.byURN["tel:+231777000002"] == nil || ix.byUUID["c"].URNs[0] != "tel:+231777000002" {
			t.Errorf("%s: index holds %+v", tc.name, ix.byUUID["c"])
		}
	}
}
