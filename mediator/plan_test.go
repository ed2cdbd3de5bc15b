package mediator

import (
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// A plan must list what the following sync does. A new worker whose phone a
// person entered by hand since the first sync: the sync adopts that contact
// (an update), the plan says create.
func TestPlanMatchesSyncWhenPhoneIsHeldByHand(t *testing.T) {
	workers := staff(3)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	e.workspace.AddContact(rapidpro.Contact{Name: "entered by hand", URNs: []string{"tel:+231777999001"}})
	e.setDirectory(append(workers, hw{id: "urn:uuid:new", name: "New", phones: []string{"0777 999 001"}, updated: later})...)
	plan := e.triggerWith("dry_run=true")
	e.clock.Advance(-3600e9)
	sync := e.triggerWith("")
	if !maps.Equal(actionCounts(plan), actionCounts(sync)) {
		t.Fatalf("the plan said %v, the sync did %v", actionCounts(plan), actionCounts(sync))
	}
}

type failFacilitySearch struct{ on bool }

func (f *failFacilitySearch) RoundTrip(req *http.Request) (*http.Response, error) {
	if f.on && strings.Contains(req.URL.Path, "facility-search") {
		// A status the client does not retry, so the test needs no backoff.
		return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("not installed")), Request: req}, nil
	}
	return http.DefaultTransport.RoundTrip(req)
}

// The organizations were stored by a run whose facility pull then failed.
// The plan must resolve districts from the stored organizations, as the
// sync does.
func TestPlanUsesStoredOrganizationsWhenFacilitiesNeverPulled(t *testing.T) {
	fail := &failFacilitySearch{on: true}
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility), oimHTTP: &http.Client{Transport: fail}})
	if tx := e.trigger(); tx.Response.Status != "Failed" {
		t.Fatalf("run 1: %s", tx.Response.Status)
	}
	fail.on = false
	s := func(v string) *string { return &v }
	e.workspace.AddContact(rapidpro.Contact{Name: "Fatu", URNs: []string{"tel:+231777200001"}, Groups: []rapidpro.GroupRef{{Name: fixtureGroup}},
		Fields: map[string]*string{"globalid": s(viaFacility.id), "cadre": s("Midwife"), "facility": s("Kakata Health Center"),
			"facility_id": s("urn:uuid:kakata-hc"), "district": s("Margibi")}})
	plan := e.triggerWith("dry_run=true")
	e.clock.Advance(-3600e9)
	sync := e.triggerWith("")
	if !maps.Equal(actionCounts(plan), actionCounts(sync)) {
		t.Fatalf("the plan said %v (%+v), the sync did %v", actionCounts(plan), planOf(t, plan), actionCounts(sync))
	}
}

// A phone handed from one worker to a new one in the same delta: the plan's
// check of the new worker's phone must see the first worker's contact as
// the plan has already updated it, not as RapidPro still holds it.
func TestPlanPhoneHandedOnToANewWorker(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := hw{id: "urn:uuid:a", name: "Ama", phones: []string{"0777 100 001"}}
	e.setDirectory(a)
	e.trigger()
	a.phones, a.updated = []string{"0886 100 009"}, later
	e.setDirectory(a, hw{id: "urn:uuid:n", name: "New", phones: []string{"0777 100 001"}, updated: later})
	plan := e.triggerWith("dry_run=true")
	e.clock.Advance(-3600e9)
	if sync := e.triggerWith(""); !maps.Equal(actionCounts(plan), actionCounts(sync)) {
		t.Fatalf("plan %v, sync %v", actionCounts(plan), actionCounts(sync))
	}
}

// A misspelt option is refused rather than ignored: ?dry-run=true must not
// run a real sync.
func TestSyncRefusesUnknownOptions(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(2)...)})
	for _, q := range []string{"dry-run=true", "dryrun=true", "confirm-retire=true", "full=yes"} {
		req, err := http.NewRequest(http.MethodPost, e.server.URL+"/sync?"+q, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(testSyncUser, testSyncPass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: %s %s", q, resp.Status, body)
		}
	}
	if n := len(e.workspace.Requests()); n != 0 {
		t.Fatalf("refused triggers made %d RapidPro requests", n)
	}
}
