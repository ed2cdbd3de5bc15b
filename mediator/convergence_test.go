package mediator

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// hw is one health worker of a hand-made directory.
type hw struct {
	id, name string
	phones   []string
	status   string // default Active
	updated  string // default 2024-03-01T09:00:00Z
	cadre    string // a codedType display text
	facility string // a facility entity id
	org      string // an organization entity id
}

func directory(workers ...hw) []byte { return directoryWith(places{}, workers...) }

// places are a hand-made document's facility and organization directories.
type places struct {
	orgs       []place
	facilities []place
}

// place is an organization (parent: its parent) or a facility (parent: its
// organization).
type place struct{ id, name, parent, updated string }

func (p place) xml(kind string) string {
	updated := p.updated
	if updated == "" {
		updated = "2024-03-01T09:00:00Z"
	}
	link := ""
	switch {
	case p.parent != "" && kind == "organization":
		link = fmt.Sprintf(`<parent entityID=%q/>`, p.parent)
	case p.parent != "":
		link = fmt.Sprintf(`<organizations><organization entityID=%q/></organizations>`, p.parent)
	}
	return fmt.Sprintf(`<%s entityID=%q><codedType code="x" codingScheme="y">%s type</codedType><primaryName>%s</primaryName>%s<record created="2024-01-01T00:00:00Z" updated=%q status="Active"/></%s>`,
		kind, p.id, kind, p.name, link, updated, kind)
}

func directoryWith(pl places, workers ...hw) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><CSD xmlns="urn:ihe:iti:csd:2013"><organizationDirectory>`)
	for _, o := range pl.orgs {
		b.WriteString(o.xml("organization"))
	}
	b.WriteString(`</organizationDirectory><serviceDirectory/><facilityDirectory>`)
	for _, f := range pl.facilities {
		b.WriteString(f.xml("facility"))
	}
	b.WriteString(`</facilityDirectory><providerDirectory>`)
	for _, w := range workers {
		status, updated := w.status, w.updated
		if status == "" {
			status = "Active"
		}
		if updated == "" {
			updated = "2024-03-01T09:00:00Z"
		}
		fmt.Fprintf(&b, `<provider entityID=%q>`, w.id)
		if w.cadre != "" {
			fmt.Fprintf(&b, `<codedType code="c" codingScheme="local">%s</codedType>`, w.cadre)
		}
		fmt.Fprintf(&b, `<demographic><name><commonName>%s</commonName></name>`, w.name)
		for _, p := range w.phones {
			fmt.Fprintf(&b, `<contactPoint><codedType code="BP" codingScheme="urn:ihe:iti:csd:2013:contactPoint">%s</codedType></contactPoint>`, p)
		}
		b.WriteString(`</demographic>`)
		if w.org != "" {
			fmt.Fprintf(&b, `<organizations><organization entityID=%q/></organizations>`, w.org)
		}
		if w.facility != "" {
			fmt.Fprintf(&b, `<facilities><facility entityID=%q/></facilities>`, w.facility)
		}
		fmt.Fprintf(&b, `<record created="2024-01-01T00:00:00Z" updated=%q status=%q/></provider>`, updated, status)
	}
	b.WriteString(`</providerDirectory></CSD>`)
	return []byte(b.String())
}

// later is a record date after the env clock's start, so that a delta run
// pulls the provider.
const later = "2025-01-01T07:30:00Z"

func (e *env) setDirectory(workers ...hw) {
	e.t.Helper()
	if err := e.registry.SetDocument(directory(workers...)); err != nil {
		e.t.Fatal(err)
	}
}

// next advances the clock and triggers a run, returning it and the RapidPro
// requests it made.
func (e *env) next() (openhimtest.Transaction, []rapidprotest.Request) {
	e.t.Helper()
	e.clock.Advance(time.Hour)
	before := len(e.workspace.Requests())
	tx := e.trigger()
	return tx, e.workspace.Requests()[before:]
}

// loseRecord forgets the link and digest of key, as if the process had died
// after the write and before recording it.
func (e *env) loseRecord(key string) {
	e.t.Helper()
	if err := e.state.commit(&progress{records: map[string]Record{key: {EntityID: key}}}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) contactOf(id string) (rapidpro.Contact, bool) {
	c, ok := contactsByGlobalID(e.workspace.Contacts())[strings.ToLower(id)]
	return c, ok
}

func wantProps(t *testing.T, tx openhimtest.Transaction, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := tx.Response.Properties[k]; got != v {
			t.Errorf("property %s = %q, want %q\n%s", k, got, v, tx.RawBody)
		}
	}
}

func TestIdleRunMakesNoRapidProRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.trigger()
	tx, reqs := e.next()
	if len(reqs) != 0 {
		t.Fatalf("an idle run made %d RapidPro requests: %+v", len(reqs), reqs)
	}
	if tx.Response.Status != openhim.StatusCompletedWithErrors && tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %q", tx.Response.Status)
	}
}

// Record dates that moved without a change of data cost nothing: the
// state's digests answer for them.
func TestTouchedRecordsCostNoRequests(t *testing.T) {
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, 300, csdtest.GenerateOptions{Seed: 7}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{doc: doc.Bytes(), pageSize: 100})
	e.trigger()
	doc.Reset()
	if err := csdtest.Generate(&doc, 300, csdtest.GenerateOptions{Seed: 7, Start: time.Date(2025, 1, 1, 6, 30, 0, 0, time.UTC), Step: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := e.registry.SetDocument(doc.Bytes()); err != nil {
		t.Fatal(err)
	}
	tx, reqs := e.next()
	if got := tx.Response.Properties["providers"]; got != "300" {
		t.Fatalf("the delta pulled %s providers, want all 300 touched", got)
	}
	if len(reqs) != 0 {
		t.Fatalf("300 touched providers cost %d RapidPro requests, want 0", len(reqs))
	}
	if got := tx.Response.Properties["mapped"]; got != "0" {
		t.Fatalf("%s touched providers mapped again, want 0: their data did not change", got)
	}
}

func TestPhoneOrderIsNotChurn(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001", "0886 100 001"}}
	e.setDirectory(a)
	e.trigger()
	// RapidPro keeps its own order; the same set written the other way round
	// is no change.
	a.phones, a.updated = []string{"0886 100 001", "0777 100 001"}, later
	e.setDirectory(a)
	_, reqs := e.next()
	if len(reqs) != 0 {
		t.Fatalf("reordered phones cost %d requests: %+v", len(reqs), reqs)
	}
}

// The new phone is held by a contact the run never looked
// up; RapidPro drops it on update with 200.
func TestLinkedContactNeverLosesEveryPhone(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	// Someone else enters the worker's new number by hand, after the scan.
	e.workspace.AddContact(rapidpro.Contact{Name: "Stranger", URNs: []string{"tel:+231886100002"}})
	a.phones, a.updated = []string{"0886 100 002"}, later
	e.setDirectory(a)
	tx, _ := e.next()
	c, _ := e.contactOf("urn:uuid:a")
	if len(c.URNs) == 0 {
		t.Fatalf("the contact lost every phone: %+v", c)
	}
	if tx.Response.Status == openhim.StatusSuccessful {
		t.Fatalf("a contact that differs from the registry was reported Successful: %s", tx.RawBody)
	}
	wantProps(t, tx, map[string]string{"failed_urn_conflict": "1"})
}

// A duplicate key in a later delta.
func TestLaterDeltaDuplicateKeyIsRejected(t *testing.T) {
	e := newEnv(t, envOptions{})
	first := hw{id: "urn:uuid:bb01", name: "First Worker", phones: []string{"0777 100 001"}}
	e.setDirectory(first)
	e.trigger()
	second := hw{id: "URN:UUID:BB01", name: "Second Worker", phones: []string{"0777 200 002"}, updated: later}
	e.setDirectory(first, second)
	tx, _ := e.next()
	c, _ := e.contactOf("urn:uuid:bb01")
	if c.Name != "First Worker" || !slices.Equal(c.URNs, []string{"tel:+231777100001"}) {
		t.Fatalf("the first worker's contact was overwritten: %+v", c)
	}
	wantProps(t, tx, map[string]string{"failed_duplicate_globalid": "1"})
}

// A phone handed from A to B in one delta, B first.
func TestPhoneHandedOnInOneDelta(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 300 003"}}
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(b, a)
	e.trigger()
	b.phones, b.updated = []string{"0777 100 001"}, later
	a.phones, a.updated = []string{"0886 100 009"}, later
	e.setDirectory(b, a)
	tx, _ := e.next()
	if tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %q: %s", tx.Response.Status, tx.RawBody)
	}
	cb, _ := e.contactOf("urn:uuid:b")
	ca, _ := e.contactOf("urn:uuid:a")
	if !slices.Equal(cb.URNs, []string{"tel:+231777100001"}) || !slices.Equal(ca.URNs, []string{"tel:+231886100009"}) {
		t.Fatalf("B %q, A %q", cb.URNs, ca.URNs)
	}
}

// 403 and 409 stop the run; the provider stays pending and
// is done by the next run.
func TestFaultForbiddenAndLimitKeepWorkPending(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusConflict} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.setDirectory(hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}},
				hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 200 002"}})
			e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: status})
			tx := e.trigger()
			wantProps(t, tx, map[string]string{"created": "0", "deferred": "2", "pending": "2"})
			if tx.Response.Status != openhim.StatusCompletedWithErrors {
				t.Fatalf("status %q", tx.Response.Status)
			}
			tx, _ = e.next()
			wantProps(t, tx, map[string]string{"created": "2", "retried": "2", "pending": "0"})
			if n := len(e.workspace.Contacts()); n != 2 {
				t.Fatalf("%d contacts, want 2", n)
			}
		})
	}
}

// A new target gets every worker, not only the next delta: each part of the
// fingerprint forces a full pull, and the target ends with every contact.
func TestTargetChangeForcesFullPull(t *testing.T) {
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	tests := []struct {
		name   string
		change func(t *testing.T, e *env, s *Settings) *rapidprotest.Server // the workspace to check afterwards
	}{
		{"group", func(t *testing.T, e *env, s *Settings) *rapidprotest.Server {
			s.RapidPro.Group = "mHero Console"
			return e.workspace
		}},
		{"RapidPro workspace", func(t *testing.T, e *env, s *Settings) *rapidprotest.Server {
			other := rapidprotest.New(rapidprotest.Options{Token: testToken, Country: "LR"})
			t.Cleanup(other.Close)
			s.RapidPro.URL = other.URL()
			return other
		}},
		{"OpenInfoMan document", func(t *testing.T, e *env, s *Settings) *rapidprotest.Server {
			other, err := csdtest.New(directory(a), csdtest.Options{Document: "Liberia", Username: "oim", Password: testOIMPass})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(other.Close)
			s.OpenInfoMan.URL, s.OpenInfoMan.Document = other.URL(), "Liberia"
			return e.workspace
		}},
		{"inactive policy", func(t *testing.T, e *env, s *Settings) *rapidprotest.Server {
			s.InactivePolicy = InactiveBlock
			return e.workspace
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.setDirectory(a)
			e.trigger()
			next := e.syncer.Settings()
			target := tc.change(t, e, &next)
			if err := e.syncer.SetSettings(next); err != nil {
				t.Fatal(err)
			}
			tx, _ := e.next()
			wantProps(t, tx, map[string]string{"since": "full pull", "providers": "1"})
			if tx.Response.Properties["retargeted"] == "" {
				t.Errorf("the run does not say the target changed: %s", tx.RawBody)
			}
			group := next.RapidPro.Group
			var found bool
			for _, c := range target.Contacts() {
				found = found || slices.Contains(groupNames(c), group)
			}
			if !found {
				t.Fatalf("the target has no contact in %q: %+v", group, target.Contacts())
			}
		})
	}
}

// An inactive worker whose phone was struck off too.
func TestInactiveWithoutPhoneIsRetired(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	a.phones, a.status, a.updated = nil, "Inactive", later
	e.setDirectory(a)
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"group_removed": "1"})
	if c, _ := e.contactOf("urn:uuid:a"); len(c.Groups) != 0 {
		t.Fatalf("still in %q", groupNames(c))
	}
}

// A reactivated worker rejoins: a contact this service blocked is
// unblocked first; one a person blocked is left blocked and reported, since
// unblocking also clears an opt-out.
func TestReactivatedWorkerRejoins(t *testing.T) {
	for _, tc := range []struct {
		name          string
		blockedByHand bool
		want          map[string]string
	}{
		{name: "blocked by this service", want: map[string]string{"unblocked": "1", "group_added": "1", "action_rejoin": "1"}},
		{name: "blocked by a person", blockedByHand: true, want: map[string]string{"unblocked": "0", "failed_contact_blocked": "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			next := e.syncer.Settings()
			next.InactivePolicy = InactiveBlock
			if err := e.syncer.SetSettings(next); err != nil {
				t.Fatal(err)
			}
			a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
			e.setDirectory(a)
			e.trigger()
			c, _ := e.contactOf(a.id)
			if tc.blockedByHand {
				if err := e.operator().ContactAction(context.Background(), "block", []string{c.UUID}, ""); err != nil {
					t.Fatal(err)
				}
				a.name, a.updated = "Ama K.", later // a change, so the run meets the blocked contact
			} else {
				a.status, a.updated = "Inactive", later
				e.setDirectory(a)
				tx, _ := e.next()
				wantProps(t, tx, map[string]string{"blocked": "1"})
				a.status, a.updated = "Active", "2025-01-01T09:30:00Z"
			}
			e.setDirectory(a)
			tx, _ := e.next()
			wantProps(t, tx, tc.want)
			got, _ := e.contactOf(a.id)
			if tc.blockedByHand {
				if tx.Response.Status == openhim.StatusSuccessful || got.Status != "blocked" {
					t.Fatalf("a contact a person blocked: status %q, run %s", got.Status, tx.Response.Status)
				}
				return
			}
			if got.Status != "active" || !slices.Equal(groupNames(got), []string{fixtureGroup}) || tx.Response.Status != openhim.StatusSuccessful {
				t.Fatalf("contact %s in %v after rejoining; run %s", got.Status, groupNames(got), tx.RawBody)
			}
		})
	}
}

// A run cut by its timeout defers what is left, and the
// next run finishes it.
func TestFaultTimeoutDefersTheRest(t *testing.T) {
	var workers []hw
	for i := range 40 {
		workers = append(workers, hw{id: fmt.Sprintf("urn:uuid:w%02d", i), name: "W", phones: []string{fmt.Sprintf("0777 100 %03d", i)}})
	}
	// The run's time runs out after its fifth create: cut there, not after
	// a wall-clock time that a loaded machine may spend on setting up.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var creates atomic.Int32
	e := newEnv(t, envOptions{doc: directory(workers...), workspace: rapidprotest.Options{OnRequest: func(q rapidprotest.Request) {
		if q.Method == http.MethodPost && q.Path == "/api/v2/contacts.json" && creates.Add(1) == 5 {
			cancel(context.DeadlineExceeded)
		}
	}}})
	r, err := e.syncer.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Deferred == 0 || r.Created == 0 || sum(r.Failed) != 0 {
		t.Fatalf("created %d, deferred %d, failed %v: want some of each but failures", r.Created, r.Deferred, r.Failed)
	}
	if r.Pending != r.Deferred {
		t.Fatalf("pending %d, deferred %d", r.Pending, r.Deferred)
	}
	e.clock.Advance(time.Hour)
	r, _ = e.syncer.Run(context.Background())
	if r.Pending != 0 || len(e.workspace.Contacts()) != 40 {
		t.Fatalf("second run: pending %d, %d contacts", r.Pending, len(e.workspace.Contacts()))
	}
}

// A RapidPro that is down stops the run after a few failures in a row
// rather than trying every provider.
func TestFaultOutageStopsTheRun(t *testing.T) {
	var workers []hw
	for i := range 30 {
		workers = append(workers, hw{id: fmt.Sprintf("urn:uuid:w%02d", i), name: "W", phones: []string{fmt.Sprintf("0777 100 %03d", i)}})
	}
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusInternalServerError, Times: 1000})
	r, _ := e.syncer.Run(context.Background())
	if r.Created != 0 || r.Pending != 30 || !strings.Contains(r.StoppedBy, "in a row") {
		t.Fatalf("created %d, pending %d, stopped by %q", r.Created, r.Pending, r.StoppedBy)
	}
	creates := 0
	for _, q := range e.workspace.Requests() {
		if q.Method == http.MethodPost && strings.HasSuffix(q.Path, "contacts.json") {
			creates++
		}
	}
	if creates > 5 {
		t.Fatalf("%d creates sent to a RapidPro that is down, want at most 5", creates)
	}
}

// A crash that loses the record of the last creates never duplicates them:
// the create of the next run finds the phone taken by its own contact.
func TestFaultLostRecordsAreFoundNotDuplicated(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	e.loseRecord("urn:uuid:a")
	e.state.SetWatermark(time.Time{})
	tx, _ := e.next()
	if n := len(e.workspace.Contacts()); n != 1 {
		t.Fatalf("%d contacts, want 1: %s", n, tx.RawBody)
	}
	if tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %q: %s", tx.Response.Status, tx.RawBody)
	}
	_, reqs := e.next()
	if len(reqs) != 0 {
		t.Fatalf("the run after made %d requests", len(reqs))
	}
}

// The acceptance case of a national first sync: 10,000 providers against a
// RapidPro enforcing its default 3,600 requests an hour, with time scaled so
// that an hour of budget passes in 3 s and a run may take 55 min / scale.
// Every run must add progress, and all runs together may spend at most one
// write per provider, plus 40, plus 10 a run.
func TestFirstSyncConvergesAtRapidProRate(t *testing.T) {
	if raceEnabled {
		t.Skip("time-scaled: test.sh runs it without -race, where the fakes keep up with the scaled rate")
	}
	const (
		providers = 10_000
		scale     = 1200
	)
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, providers, csdtest.GenerateOptions{Seed: 42}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{
		doc: doc.Bytes(), pageSize: 500, ratePerHour: 3600 * scale,
		workspace: rapidprotest.Options{RateLimit: 3600, RateWindow: time.Hour / scale},
	})
	runTimeout := 55 * time.Minute / scale

	var runs, total, created, rejected int
	lastPending := -1
	for runs = 1; ; runs++ {
		if runs > 40 {
			t.Fatalf("no convergence after 40 runs: %d created, %d pending", created, lastPending)
		}
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		before := len(e.workspace.Requests())
		r, err := e.syncer.Run(ctx)
		cancel()
		if err != nil || r.Status == openhim.StatusFailed {
			t.Fatalf("run %d: %v %v", runs, err, r.Err)
		}
		made := len(e.workspace.Requests()) - before
		total += made
		created += r.Created
		rejected += sum(r.Failed)
		t.Logf("run %d: %d requests, %d created, %d deferred, %d pending, %d failed", runs, made, r.Created, r.Deferred, r.Pending, sum(r.Failed))
		if made == 0 {
			break
		}
		if lastPending >= 0 && r.Pending >= lastPending && r.Created == 0 {
			t.Fatalf("run %d added no progress: pending %d", runs, r.Pending)
		}
		lastPending = r.Pending
		e.clock.Advance(time.Minute)
	}
	if budget := providers + 40 + 10*runs; total > budget {
		t.Errorf("%d RapidPro requests over %d runs, budget %d", total, runs, budget)
	}
	contacts := e.workspace.Contacts()
	if len(contacts) != created || len(contactsByGlobalID(contacts)) != created {
		t.Errorf("%d contacts (%d distinct globalids), %d created: a duplicate or a lost create", len(contacts), len(contactsByGlobalID(contacts)), created)
	}
	want := 0
	for i := range providers {
		if i%3 != 0 && i%10 != 9 { // csdtest: i mod 3 phones, every tenth inactive
			want++
		}
	}
	// A provider with one phone taken by another worker is both created
	// (with the others) and rejected.
	if created > want || created+rejected < want {
		t.Errorf("%d created and %d rejected, want %d active providers with a phone accounted for", created, rejected, want)
	}
	throttled := 0
	for _, q := range e.workspace.Requests() {
		if q.Status == http.StatusTooManyRequests {
			throttled++
		}
	}
	t.Logf("converged in %d runs: %d requests (budget %d), %d contacts, %d rejected, %d answered 429", runs, total, providers+40+10*runs, len(contacts), rejected, throttled)
}

// The orchestrations count every request, each page of a listing included.
func TestRequestCountsAreExact(t *testing.T) {
	e := newEnv(t, envOptions{workspace: rapidprotest.Options{PageSize: 2}})
	for i := range 5 {
		e.workspace.AddContact(rapidpro.Contact{Name: "Other", URNs: []string{fmt.Sprintf("tel:+23188600000%d", i)}})
	}
	tx := e.trigger()
	counted := 0
	for _, o := range tx.Response.Orchestrations {
		if strings.HasPrefix(o.Name, "RapidPro") {
			var n int
			body := o.Response.Body
			if _, err := fmt.Sscanf(body[strings.LastIndex(body, "; ")+2:], "%d requests", &n); err != nil {
				t.Fatalf("orchestration %q body %q: %v", o.Name, body, err)
			}
			counted += n
		}
	}
	if sent := len(e.workspace.Requests()); counted != sent {
		t.Fatalf("orchestrations count %d RapidPro requests, the workspace received %d", counted, sent)
	}
}

// Core's MongoDB refuses property keys with a dot, so a
// run with skips, rejects and failures must use none.
func TestReportKeysAreStorable(t *testing.T) {
	r := newReport(time.Now())
	r.Skipped[SkipNoPhone], r.Failed[ReasonURNConflict] = 1, 1
	r.addReject(Reject{EntityID: "urn:uuid:a", Reason: ReasonURNConflict, Detail: "tel:+231777100001"})
	r.settle()
	for k := range r.OpenHIM(testURN).Properties {
		if strings.ContainsAny(k, ".$") {
			t.Errorf("property key %q cannot be stored by OpenHIM core", k)
		}
	}
}

// A provider deferred by the run that read the workspace keeps the contact
// that read found, so that the next run, which reads no more, updates it
// rather than creating a second one.
func TestFaultDeferredProviderKeepsItsContact(t *testing.T) {
	e := newEnv(t, envOptions{retryCap: time.Second})
	e.workspace.AddField(FieldGlobalID, "text")
	old := e.workspace.AddContact(rapidpro.Contact{Name: "Ama (old tool)", URNs: []string{"tel:+231777100001"}, Fields: map[string]*string{FieldGlobalID: strp("urn:uuid:a")}})
	e.setDirectory(hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 200 002"}},
		hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0886 100 001"}})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"deferred": "2", "pending": "2"})
	e.clock.Advance(2 * time.Hour)
	tx = e.trigger()
	wantProps(t, tx, map[string]string{"created": "1", "updated": "1", "pending": "0"})
	c, _ := e.contactOf("urn:uuid:a")
	if c.UUID != old.UUID || !slices.Equal(c.URNs, []string{"tel:+231886100001"}) || len(e.workspace.Contacts()) != 2 {
		t.Fatalf("contact of a: %+v; %d contacts", c, len(e.workspace.Contacts()))
	}
}

// An OpenInfoMan that ignores start repeats its first page: the pull
// ends, and the watermark stays so that no provider past it is lost.
func TestFaultRegistryIgnoresStart(t *testing.T) {
	e := newEnv(t, envOptions{})
	registry, err := csdtest.New(readFixture(t), csdtest.Options{Document: "Providers", Username: "oim", Password: testOIMPass, IgnoreStart: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(registry.Close)
	next := e.syncer.Settings()
	next.OpenInfoMan.URL = registry.URL()
	if err := e.syncer.SetSettings(next); err != nil {
		t.Fatal(err)
	}
	tx := e.trigger()
	if tx.Response.Status != openhim.StatusCompletedWithErrors || tx.Response.Properties["pull_incomplete"] == "" {
		t.Fatalf("status %q: %s", tx.Response.Status, tx.RawBody)
	}
	if wm, _ := e.state.Watermark(); !wm.IsZero() {
		t.Fatalf("watermark moved to %v past providers the pull may have missed", wm)
	}
}

// Older RapidPro servers send blocked and stopped but no
// status; their contacts must still join the group.
func TestContactsWithoutStatusJoinTheGroup(t *testing.T) {
	e := newEnv(t, envOptions{workspace: rapidprotest.Options{OmitStatus: true}})
	e.workspace.AddContact(rapidpro.Contact{Name: "Grace S.", URNs: []string{"tel:+231777123406"}})
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"group_added": "1"})
	for id, c := range contactsByGlobalID(e.workspace.Contacts()) {
		if !slices.Contains(groupNames(c), fixtureGroup) {
			t.Errorf("contact of %s is not in %s", id, fixtureGroup)
		}
	}
}

// A crash that lost the record of a create, followed by a change of the
// worker's phone (or status) before the restart: the restart reads the
// group once and finds the contact by its globalid, never creating a second
// one nor leaving a leaver in the group.
func TestFaultLostBatchThenChange(t *testing.T) {
	for _, tc := range []struct {
		name, outcome string
		change        func(*hw)
	}{
		{name: "phone changed", outcome: "the contact found by globalid is updated, not duplicated", change: func(a *hw) { a.phones = []string{"0886 100 001"} }},
		{name: "worker left", outcome: "the contact found by globalid leaves the group", change: func(a *hw) { a.status = "Inactive" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
			e.setDirectory(a)
			e.trigger()
			e.loseRecord("urn:uuid:a")
			e.state.SetWriting(e.clock.Now())
			tc.change(&a)
			a.updated = later
			e.setDirectory(a)
			tx, _ := e.next()
			contacts := e.workspace.Contacts()
			if len(contacts) != 1 {
				t.Fatalf("%d contacts, want 1: %s", len(contacts), tx.RawBody)
			}
			c := contacts[0]
			if a.status == "Inactive" && len(c.Groups) != 0 {
				t.Fatalf("the leaver is still in %q", groupNames(c))
			}
			if a.status == "" && !slices.Equal(c.URNs, []string{"tel:+231886100001"}) {
				t.Fatalf("urns %q", c.URNs)
			}
		})
	}
}

// A lookup that fails for one provider keeps that provider pending; the
// others are written in the same run.
func TestFaultLookupFailsForOneProvider(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	b := hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 200 002"}}
	e.setDirectory(a, b)
	e.trigger()
	a.name, a.updated = "Ama K.", later
	b.name, b.updated = "Bea K.", later
	e.setDirectory(a, b)
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodGet, Path: "/api/v2/contacts.json", Status: http.StatusInternalServerError, Times: 5})
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"updated": "1", "pending": "1", "failed_server": "1"})
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"updated": "1", "pending": "0", "retried": "1"})
}

// A reject stands until the provider's contact is confirmed as the
// registry says: until then no run is Successful, however idle.
func TestStandingRejectKeepsRunsFromSuccess(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	b := hw{id: "urn:uuid:b", name: "Bea", phones: []string{"0777 100 001"}}
	e.setDirectory(a, b)
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"failed_urn_conflict": "1", "rejected": "1"})
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"failed": "0", "rejected": "1"})
	if tx.Response.Status != openhim.StatusCompletedWithErrors {
		t.Fatalf("an idle run with a standing reject is %q", tx.Response.Status)
	}
	// The same data again costs nothing: it would meet the same conflict.
	b.updated = later
	e.setDirectory(a, b)
	tx, reqs := e.next()
	if len(reqs) != 0 || tx.Response.Properties["rejected"] != "1" || tx.Response.Properties["providers"] != "1" {
		t.Fatalf("a touched rejected provider cost %d requests: %s", len(reqs), tx.RawBody)
	}
	b.phones, b.updated = []string{"0777 200 002"}, "2025-01-01T09:30:00Z"
	e.setDirectory(a, b)
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"created": "1", "rejected": "0"})
	if tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %q once the conflict is resolved: %s", tx.Response.Status, tx.RawBody)
	}
}
