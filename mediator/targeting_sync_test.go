package mediator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// triggerWith calls /sync as an operator does, with query parameters
// (full, dry_run, confirm_retire), and returns the mediator's response.
func (e *env) triggerWith(query string) openhim.Response {
	e.t.Helper()
	e.clock.Advance(3600e9)
	req, err := http.NewRequest(http.MethodPost, e.server.URL+"/sync?"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth(testSyncUser, testSyncPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/sync?%s: %s: %s", query, resp.Status, body)
	}
	for _, secret := range []string{testToken, testOIMPass, testSyncPass} {
		if bytes.Contains(body, []byte(secret)) {
			e.t.Fatalf("the response carries a secret: %s", body)
		}
	}
	var r openhim.Response
	if err := json.Unmarshal(body, &r); err != nil {
		e.t.Fatalf("%v: %s", err, body)
	}
	return r
}

// operator is a RapidPro client for what a person does by hand, through
// the API (or the UI).
func (e *env) operator() *rapidpro.Client {
	e.t.Helper()
	c, err := rapidpro.New(rapidpro.Config{BaseURL: e.workspace.URL(), Token: testToken})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func field(c rapidpro.Contact, key string) string {
	if v := c.Fields[key]; v != nil {
		return *v
	}
	return ""
}

// connectathon is the Connectathon 2015 providers document with the
// facility and organization directories of its companion documents, as one
// OpenInfoMan document.
func connectathon(t *testing.T) []byte {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile("../testdata/csd-corpus/openinfoman/service_directories/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	section := func(doc, dir string) string {
		m := regexp.MustCompile(`(?s)<` + dir + `>.*</` + dir + `>`).FindString(doc)
		if m == "" {
			t.Fatalf("no %s", dir)
		}
		return m
	}
	doc := read("CSD-Providers-Connectathon-20150120.xml")
	doc = strings.Replace(doc, "<organizationDirectory/>", section(read("CSD-Organizations-Connectathon-20150120.xml"), "organizationDirectory"), 1)
	doc = strings.Replace(doc, "<facilityDirectory/>", section(read("CSD-Facilities-Connectathon-20150120.xml"), "facilityDirectory"), 1)
	return []byte(doc)
}

// The Connectathon documents: every contact carries cadre, specialty and
// facility as the documents say. Its organizations have no parents, so no
// provider has a district; and shared phones leave some providers without
// a contact (URN conflicts), so only the contacts made are listed.
func TestConnectathonContactsCarryTargeting(t *testing.T) {
	e := newEnv(t, envOptions{doc: connectathon(t), workspace: rapidprotest.Options{}, tune: func(s *Settings) { s.RapidPro.Country = "US" }})
	tx := e.trigger()
	type want struct{ cadre, specialty, facility, facilityID, language string }
	wants := map[string]want{
		"urn:uuid:a97b9397-ce4e-4a57-b12a-0d46ce6f36b7": {cadre: "Physician/Medical Oncology", specialty: "109-003", language: "eng"},
		"urn:uuid:9a879858-8e96-486b-a2be-05a580f0e6ee": {cadre: "Physician/Mammographer", specialty: "109-005", facility: "Connectathon Radiology Facility", facilityID: "urn:uuid:e9964293-e169-4298-b4d0-ab07bf0cd78f", language: "eng"},
		"urn:uuid:4384c07a-86e2-40da-939b-5f7a04a73715": {cadre: "Radiology Technician", specialty: "109-005", language: "eng"},
		"urn:uuid:d973d698-5b43-4340-acc9-de48d0acb376": {cadre: "Radiology Technician", specialty: "109-005", language: "spa"},
		"urn:uuid:b6553152-7a90-4940-8d6a-b1017310a159": {cadre: "Physician/Medical Oncology", specialty: "109-003", language: "eng"},
		"urn:uuid:51f3fdbe-ed30-4d55-b7f8-50955c86b2cf": {cadre: "Nurse Practitioner", specialty: "109-003", language: "eng"},
		"urn:uuid:c54d631b-d1be-4754-89e4-732ed73c4b50": {cadre: "Nurse Practitioner", specialty: "109-003", language: "eng"},
		"urn:uuid:c0999c57-80fb-47d9-8324-54ff7fe4e692": {cadre: "Nurse Practitioner", specialty: "109-003", language: "eng"},
		"urn:uuid:0e3ba7dd-bfe3-4eb9-a510-4676f245ef46": {cadre: "Nurse Practitioner", specialty: "109-003", language: "eng"},
	}
	contacts := e.workspace.Contacts()
	// Shared phones: the first provider in registry order with each phone
	// gets a contact, the others are URN conflicts.
	var got []string
	for _, c := range contacts {
		got = append(got, field(c, "globalid"))
	}
	slices.Sort(got)
	if want := []string{
		"urn:uuid:4384c07a-86e2-40da-939b-5f7a04a73715", "urn:uuid:a97b9397-ce4e-4a57-b12a-0d46ce6f36b7", "urn:uuid:b6553152-7a90-4940-8d6a-b1017310a159",
		"urn:uuid:c54d631b-d1be-4754-89e4-732ed73c4b50", "urn:uuid:d973d698-5b43-4340-acc9-de48d0acb376",
	}; !slices.Equal(got, want) {
		t.Fatalf("contacts for %v, want %v\n%s", got, want, tx.RawBody)
	}
	// What every provider resolves to, the four without a contact included
	// (the Mammographer, the one with a facility, among them), from the
	// directories the run stored.
	dir, err := e.state.Directory()
	if err != nil {
		t.Fatal(err)
	}
	mapper := Mapper{Country: "US", Targeting: &Targeting{Directory: dir}}
	_, err = csd.DecodeProviders(bytes.NewReader(connectathon(t)), csd.Limits{}, func(p *csd.Provider) error {
		m := mapper.Map(p)
		w := wants[m.Key]
		resolved := want{m.Targets["cadre"], m.Targets["specialty"], m.Targets["facility"], m.Targets["facility_id"], m.Language}
		if resolved != w {
			t.Errorf("%s resolves to %+v, want %+v", m.Key, resolved, w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range contacts {
		id := field(c, "globalid")
		w, ok := wants[id]
		if !ok {
			t.Errorf("contact %s has globalid %q, not a Connectathon provider", c.UUID, id)
			continue
		}
		got := want{field(c, "cadre"), field(c, "specialty"), field(c, "facility"), field(c, "facility_id"), c.Language}
		if got != w {
			t.Errorf("%s: %+v, want %+v", id, got, w)
		}
		if d := field(c, "district"); d != "" {
			t.Errorf("%s: district %q, want none (the Connectathon organizations are flat)", id, d)
		}
	}
	wantProps(t, tx, map[string]string{"targeting_no_district": "9"})
}

// kakata is a country → district → chiefdom → facility hierarchy.
var kakata = places{
	orgs: []place{
		{id: "urn:uuid:lr", name: "Liberia"},
		{id: "urn:uuid:margibi", name: "Margibi", parent: "urn:uuid:lr"},
		{id: "urn:uuid:bong", name: "Bong", parent: "urn:uuid:lr"},
		{id: "urn:uuid:kakata-district", name: "Kakata District", parent: "urn:uuid:margibi"},
		{id: "urn:uuid:jorquelleh", name: "Jorquelleh", parent: "urn:uuid:bong"},
	},
	facilities: []place{
		{id: "urn:uuid:kakata-hc", name: "Kakata Health Center", parent: "urn:uuid:kakata-district"},
		{id: "urn:uuid:phebe", name: "Phebe Hospital", parent: "urn:uuid:jorquelleh"},
	},
}

var (
	viaFacility = hw{id: "urn:uuid:via-facility", name: "Fatu", phones: []string{"0777 200 001"}, cadre: "Midwife", facility: "urn:uuid:kakata-hc"}
	viaOrg      = hw{id: "urn:uuid:via-org", name: "Musu", phones: []string{"0777 200 002"}, cadre: "Nurse", org: "urn:uuid:jorquelleh"}
	viaBoth     = hw{id: "urn:uuid:via-both", name: "Kebeh", phones: []string{"0777 200 003"}, cadre: "Midwife", facility: "urn:uuid:phebe", org: "urn:uuid:margibi"}
	elsewhere   = hw{id: "urn:uuid:elsewhere", name: "Siaka", phones: []string{"0777 200 004"}, cadre: "Nurse", facility: "urn:uuid:phebe"}
)

func TestDistrictThroughFacilityOrganizationAndBoth(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility, viaOrg, viaBoth)})
	e.trigger()
	for _, tc := range []struct {
		id, district, facility string
	}{
		{viaFacility.id, "Margibi", "Kakata Health Center"},
		{viaOrg.id, "Bong", ""},
		{viaBoth.id, "Margibi", "Phebe Hospital"}, // its own organization comes first
	} {
		c, ok := e.contactOf(tc.id)
		if !ok {
			t.Fatalf("no contact for %s", tc.id)
		}
		if got := field(c, "district"); got != tc.district {
			t.Errorf("%s: district %q, want %q", tc.id, got, tc.district)
		}
		if got := field(c, "facility"); got != tc.facility {
			t.Errorf("%s: facility %q, want %q", tc.id, got, tc.facility)
		}
	}
}

// A facility renamed in the registry reaches the contacts of its providers
// in the next run, although none of their records changed, and nothing else
// is written.
func TestRenamedFacilityUpdatesExactlyItsContacts(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility, viaOrg, viaBoth, elsewhere)})
	e.trigger()
	renamed := kakata
	renamed.facilities = []place{kakata.facilities[0], {id: "urn:uuid:phebe", name: "Phebe Hospital and School of Nursing", parent: "urn:uuid:jorquelleh", updated: later}}
	if err := e.registry.SetDocument(directoryWith(renamed, viaFacility, viaOrg, viaBoth, elsewhere)); err != nil {
		t.Fatal(err)
	}
	before := len(e.workspace.Requests())
	tx, _ := e.next()
	var updated []string
	for _, r := range e.writes(before) {
		if r.Path != "/api/v2/contacts.json" || r.Query.Get("uuid") == "" {
			t.Errorf("unexpected write %s %s?%s %s", r.Method, r.Path, r.Query.Encode(), r.Body)
			continue
		}
		if !strings.Contains(r.Body, `"facility":"Phebe Hospital and School of Nursing"`) || strings.Contains(r.Body, "urns") || strings.Contains(r.Body, "name") {
			t.Errorf("the update carries more than the facility: %s", r.Body)
		}
		updated = append(updated, r.Query.Get("uuid"))
	}
	var want []string
	for _, w := range []hw{viaBoth, elsewhere} {
		c, _ := e.contactOf(w.id)
		want = append(want, c.UUID)
		if got := field(c, "facility"); got != "Phebe Hospital and School of Nursing" {
			t.Errorf("%s: facility %q", w.id, got)
		}
	}
	slices.Sort(updated)
	slices.Sort(want)
	if !slices.Equal(updated, want) {
		t.Fatalf("updated %v, want exactly %v\n%s", updated, want, tx.RawBody)
	}
	wantProps(t, tx, map[string]string{"updated": "2", "unchanged": "2", "directory_changed": "a facility or organization changed: every provider was mapped again"})
	// And the run after that has nothing to do.
	if _, reqs := e.next(); len(reqs) != 0 {
		t.Fatalf("the next run made %d requests", len(reqs))
	}
}

// Operators put contacts in their own groups and give them fields of their
// own; updates carry only the owned fields that differ, so ten syncs with
// changes keep what operators set.
func TestOperatorGroupsAndFieldsSurviveTenSyncs(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility)})
	e.trigger()
	c, _ := e.contactOf(viaFacility.id)
	e.workspace.AddField("Training Cohort", "text")
	e.workspace.AddGroup("Ebola responders")
	e.workspace.AddGroup("Bong supervisors")
	cohort := "2024-B"
	if _, err := e.operator().UpdateContact(context.Background(), c.UUID, rapidpro.ContactWrite{
		Groups: []string{fixtureGroup, "Ebola responders", "Bong supervisors"},
		Fields: map[string]*string{"training_cohort": &cohort},
		URNs:   append(slices.Clone(c.URNs), "whatsapp:231777200001"),
	}); err != nil {
		t.Fatal(err)
	}
	since := len(e.workspace.Requests())
	w := viaFacility
	for i := range 10 {
		w.name, w.updated = fmt.Sprintf("Fatu %d", i), fmt.Sprintf("2025-01-%02dT00:00:00Z", i+2)
		w.phones = []string{fmt.Sprintf("0777 200 1%02d", i)}
		e.setDirectory(w)
		if err := e.registry.SetDocument(directoryWith(kakata, w)); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(24 * 3600e9)
		e.next()
	}
	got, _ := e.contactOf(viaFacility.id)
	if got.Name != "Fatu 9" || field(got, "training_cohort") != "2024-B" {
		t.Fatalf("contact %+v", got)
	}
	if names := groupNames(got); !slices.Equal(names, []string{"Bong supervisors", "Ebola responders", fixtureGroup}) {
		t.Fatalf("groups %v", names)
	}
	if !slices.Contains(got.URNs, "whatsapp:231777200001") || !slices.Contains(got.URNs, "tel:+231777200109") || len(got.URNs) != 2 {
		t.Fatalf("urns %v", got.URNs)
	}
	for _, r := range e.writes(since) {
		if strings.Contains(r.Body, `"groups"`) && r.Query.Get("uuid") != "" {
			t.Fatalf("an update sent groups: %s", r.Body)
		}
	}
}

func staff(n int) []hw {
	var out []hw
	for i := range n {
		out = append(out, hw{id: fmt.Sprintf("urn:uuid:staff-%02d", i), name: fmt.Sprintf("Worker %02d", i), phones: []string{fmt.Sprintf("0777 300 %03d", i)}})
	}
	return out
}

func (e *env) inGroup(id string) bool {
	c, ok := e.contactOf(id)
	if !ok {
		e.t.Fatalf("no contact for %s: deleted?", id)
	}
	return slices.Contains(groupNames(c), fixtureGroup) && c.Status == "active"
}

func props(r openhim.Response, want map[string]string) error {
	var bad []string
	for k, v := range want {
		if got := r.Properties[k]; got != v {
			bad = append(bad, fmt.Sprintf("%s = %q, want %q", k, got, v))
		}
	}
	if len(bad) > 0 {
		body, _ := json.Marshal(r.Properties)
		return fmt.Errorf("%s\n%s", strings.Join(bad, "; "), body)
	}
	return nil
}

// A worker removed from the registry leaves the group at the next full
// reconciliation (by schedule or on demand), is never deleted, and rejoins
// when the registry has them again.
func TestLeaverLeavesAtReconciliationAndRejoins(t *testing.T) {
	workers := staff(20)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	e.trigger()
	gone := workers[3]
	e.setDirectory(slices.Delete(slices.Clone(workers), 3, 4)...)
	if tx, _ := e.next(); tx.Response.Properties["group_removed"] != "0" || !e.inGroup(gone.id) {
		t.Fatalf("a delta run retired a worker it cannot know has left: %s", tx.RawBody)
	}
	// The daily reconciliation comes by itself.
	e.clock.Advance(24 * 3600e9)
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"full": "a full reconciliation: the whole registry was compared with the group", "group_removed": "1", "action_leave_group": "1", "providers": "19"})
	if e.inGroup(gone.id) {
		t.Fatal("the leaver is still in the group")
	}
	if tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %s", tx.Response.Status)
	}
	back := gone
	back.updated = "2025-01-03T00:00:00Z"
	e.setDirectory(append(slices.Clone(workers), back)...)
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"group_added": "1", "action_rejoin": "1", "created": "0"})
	if !e.inGroup(gone.id) || len(e.workspace.Contacts()) != 20 {
		t.Fatalf("the worker did not rejoin their own contact: %d contacts", len(e.workspace.Contacts()))
	}
}

// A broken registry looks like a mass departure: a reconciliation that
// would retire more than the allowed share retires nobody and says why,
// until an operator confirms.
func TestCircuitBreakerHoldsMassRetirement(t *testing.T) {
	workers := staff(20)
	for _, tc := range []struct {
		name      string
		registry  []hw
		held      string
		why       string
		confirmed string
	}{
		{name: "an empty registry", registry: nil, held: "20", why: "the registry returned no providers", confirmed: "20"},
		{name: "three of twenty gone", registry: workers[3:], held: "3", why: "would retire 3 of the 20 contacts the service manages, more than the 10% allowed", confirmed: "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{doc: directory(workers...)})
			e.trigger()
			e.setDirectory(tc.registry...)
			before := len(e.workspace.Requests())
			r := e.triggerWith("full=true")
			if err := props(r, map[string]string{"retire_held": tc.held, "group_removed": "0", "action_held": tc.held}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(r.Properties["breaker"], tc.why) || r.Status != openhim.StatusCompletedWithErrors {
				t.Fatalf("status %s, breaker %q", r.Status, r.Properties["breaker"])
			}
			if w := e.writes(before); len(w) != 0 {
				t.Fatalf("the breaker let %d writes through: %+v", len(w), w)
			}
			if got := testutil.ToFloat64(e.metrics.retireHeld); fmt.Sprint(got) != tc.held {
				t.Fatalf("mhero_sync_retirements_held %v, want %s", got, tc.held)
			}
			// Held, so the next reconciliation holds them again.
			if r := e.triggerWith("full=true"); r.Properties["retire_held"] != tc.held {
				t.Fatalf("second reconciliation: %v", r.Properties)
			}
			r = e.triggerWith("full=true&confirm_retire=true")
			if err := props(r, map[string]string{"retire_held": "0", "group_removed": tc.confirmed}); err != nil {
				t.Fatal(err)
			}
			if n := len(e.workspace.Contacts()); n != 20 {
				t.Fatalf("%d contacts: retiring must never delete", n)
			}
			if got := testutil.ToFloat64(e.metrics.retireHeld); got != 0 {
				t.Fatalf("mhero_sync_retirements_held %v after the confirmed run", got)
			}
		})
	}
}

// dump is everything the state holds, to show that a plan changed none of it.
func (e *env) dump() string {
	e.t.Helper()
	var b strings.Builder
	err := e.state.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&b, "%s/%s=%s\n", name, k, v)
				return nil
			})
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return b.String()
}

func planOf(t *testing.T, r openhim.Response) []PlanLine {
	t.Helper()
	var body struct {
		Plan []PlanLine `json:"plan"`
	}
	if err := json.Unmarshal([]byte(r.Response.Body), &body); err != nil {
		t.Fatal(err)
	}
	return body.Plan
}

func actionCounts(r openhim.Response) map[string]string {
	out := map[string]string{}
	for k, v := range r.Properties {
		if strings.HasPrefix(k, "action_") {
			out[k] = v
		}
	}
	return out
}

// A plan reads everything a sync reads, writes nothing anywhere, and lists
// exactly what the following sync then does.
func TestPlanIsWhatSyncDoes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first bool // plan before any sync
		query string
	}{
		{name: "first run", first: true},
		{name: "a delta", query: ""},
		{name: "a full reconciliation", query: "full=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			workers := staff(20)
			e := newEnv(t, envOptions{doc: directoryWith(kakata, append(workers, viaFacility, viaOrg)...)})
			if !tc.first {
				e.trigger()
				changed := slices.Clone(workers)
				changed = slices.Delete(changed, 0, 1)                                                                           // a leaver (found by a reconciliation)
				changed[0].name, changed[0].updated = "Renamed", later                                                           // an update
				changed[1].status, changed[1].updated = "Inactive", later                                                        // leaves the group
				changed[2].phones, changed[2].updated = []string{changed[3].phones[0]}, later                                    // a conflict
				changed[4].phones, changed[4].updated = nil, later                                                               // no phone left
				changed = append(changed, hw{id: "urn:uuid:new", name: "New", phones: []string{"0777 999 001"}, updated: later}) // a create
				moved := viaFacility
				moved.facility, moved.updated = "urn:uuid:phebe", later // the facility, and so the district, change
				e.registry.SetDocument(directoryWith(kakata, append(changed, moved, viaOrg)...))
			}
			state := e.dump()
			before, calls := len(e.workspace.Requests()), len(e.registry.Calls())
			plan := e.triggerWith(strings.Trim(tc.query+"&dry_run=true", "&"))
			for _, r := range e.workspace.Requests()[before:] {
				if r.Method != http.MethodGet {
					t.Errorf("the plan wrote to RapidPro: %s %s %s", r.Method, r.Path, r.Body)
				}
			}
			for _, c := range e.registry.Calls()[calls:] {
				if c.Updating {
					t.Errorf("the plan wrote to OpenInfoMan: %s", c.Function)
				}
			}
			if got := e.dump(); got != state {
				t.Errorf("the plan changed the state:\n%s\nwas\n%s", got, state)
			}
			lines := planOf(t, plan)
			perAction := map[string]string{}
			for _, l := range lines {
				n := 0
				fmt.Sscan(perAction["action_"+l.Action], &n)
				perAction["action_"+l.Action] = fmt.Sprint(n + 1)
			}
			if !maps.Equal(perAction, actionCounts(plan)) || plan.Properties["dry_run"] == "" {
				t.Fatalf("plan lines %v, counts %v", perAction, actionCounts(plan))
			}
			e.clock.Advance(-3600e9) // the sync sees the same registry and schedule as the plan
			sync := e.triggerWith(tc.query)
			if !maps.Equal(actionCounts(sync), actionCounts(plan)) {
				t.Fatalf("the plan said %v, the sync did %v\nplan: %+v", actionCounts(plan), actionCounts(sync), lines)
			}
			if plan.Status != sync.Status {
				t.Fatalf("the plan's status %q, the sync's %q", plan.Status, sync.Status)
			}
			if !tc.first && len(actionCounts(plan)) < 5 {
				t.Fatalf("the scenario exercises too few actions: %v", actionCounts(plan))
			}
		})
	}
}

// loseUpdateAnswers forwards OpenInfoMan requests and, while on, drops the
// answer of every updating call after it was carried out.
type loseUpdateAnswers struct{ on bool }

func (l *loseUpdateAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && l.on && strings.Contains(req.URL.Path, "/careServicesRequest/update/") {
		resp.Body.Close()
		return nil, fmt.Errorf("connection reset after the update")
	}
	return resp, err
}

// otherIDs reads the served document and returns each provider's RapidPro
// otherIDs with the default code.
func (e *env) otherIDs() map[string][]csd.OtherID { return e.otherIDsWithCode(DefaultWriteBackCode) }

// otherIDsWithCode returns each provider's otherIDs whose code, trimmed, is
// code.
func (e *env) otherIDsWithCode(code string) map[string][]csd.OtherID {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.registry.URL()+"/CSD/getDirectory/Providers", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth("oim", testOIMPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string][]csd.OtherID{}
	_, err = csd.DecodeProviders(resp.Body, csd.Limits{}, func(p *csd.Provider) error {
		for _, id := range p.OtherIDs {
			if strings.TrimSpace(id.Code) == code {
				out[p.Key()] = append(out[p.Key()], id)
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// With write-back on, each synced provider carries exactly one otherID with
// its contact's UUID; later syncs, full ones and those after a lost answer
// included, add none.
func TestWriteBackOncePerProvider(t *testing.T) {
	lose := &loseUpdateAnswers{}
	e := newEnv(t, envOptions{
		doc:     directory(staff(6)...),
		oimHTTP: &http.Client{Transport: lose},
		tune:    func(s *Settings) { s.WriteBack.Enabled = true },
	})
	check := func(when string) {
		t.Helper()
		ids := e.otherIDs()
		for _, c := range e.workspace.Contacts() {
			key := field(c, "globalid")
			want := []csd.OtherID{{Code: DefaultWriteBackCode, AssigningAuthorityName: e.workspace.URL(), Value: c.UUID}}
			if !slices.Equal(ids[key], want) {
				t.Errorf("%s: %s carries %+v, want %+v", when, key, ids[key], want)
			}
		}
		if len(ids) != 6 {
			t.Errorf("%s: %d providers carry an otherID, want 6", when, len(ids))
		}
	}
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"written_back": "6", "write_back_failed": "0"})
	check("after the first sync")

	calls := len(e.registry.Calls())
	e.next()
	if r := e.triggerWith("full=true"); r.Properties["written_back"] != "" {
		t.Fatalf("a full sync wrote back again: %v", r.Properties)
	}
	for _, c := range e.registry.Calls()[calls:] {
		if c.Updating {
			t.Fatalf("a later sync sent %s", c.Function)
		}
	}
	check("after two more syncs")

	// A new worker whose write-back lands but whose answer is lost: the next
	// run reads the provider before writing again.
	lose.on = true
	// Its record date is seen by this run only, so the next one must look
	// the provider up itself.
	updated := e.clock.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	e.setDirectory(append(staff(6), hw{id: "urn:uuid:new", name: "New", phones: []string{"0777 999 001"}, updated: updated})...)
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"write_back_failed": "1"})
	if tx.Response.Status != openhim.StatusCompletedWithErrors {
		t.Fatalf("status %s", tx.Response.Status)
	}
	lose.on = false
	tx, _ = e.next()
	if tx.Response.Status != openhim.StatusSuccessful || tx.Response.Properties["providers"] != "0" {
		t.Fatalf("the run after the lost answer: %s", tx.RawBody)
	}
	if got := e.otherIDs()["urn:uuid:new"]; len(got) != 1 {
		t.Fatalf("the new worker carries %+v, want exactly one otherID", got)
	}
}

// A targeting field an operator made with another type (RapidPro has a
// "district" type) is theirs: reported, left out of every write, never
// changed; the other fields are written.
func TestFieldOfAnotherTypeIsReportedNotWritten(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility)})
	e.workspace.AddField("District", "district")
	tx := e.trigger()
	if p := tx.Response.Properties["field_problem_01"]; !strings.Contains(p, `field "district" is of type district`) || tx.Response.Status != openhim.StatusSuccessful {
		t.Fatalf("status %s, field problem %q", tx.Response.Status, p)
	}
	c, _ := e.contactOf(viaFacility.id)
	if field(c, "district") != "" || field(c, "facility") != "Kakata Health Center" {
		t.Fatalf("fields %v", c.Fields)
	}
	for _, r := range e.workspace.Requests() {
		if r.Path == "/api/v2/fields.json" && r.Method == http.MethodPost && strings.Contains(r.Body, "District") {
			t.Fatalf("the operator's field was written: %s", r.Body)
		}
	}
}

// New mapping settings map every provider again, keeping the links: no
// workspace scan and no create, only the contacts whose fields change.
func TestMappingChangeRemapsKeepingLinks(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility, viaOrg, viaBoth)})
	e.trigger()
	next := e.syncer.Settings()
	next.Targeting.DistrictLevel = 3
	if err := e.syncer.SetSettings(next); err != nil {
		t.Fatal(err)
	}
	tx, reqs := e.next()
	wantProps(t, tx, map[string]string{"since": "full pull", "providers": "3", "created": "0", "updated": "3"})
	for _, r := range reqs {
		if r.Method == http.MethodGet && r.Path == "/api/v2/contacts.json" && r.Query.Get("uuid") == "" && r.Query.Get("group") == "" && r.Query.Get("urn") == "" {
			t.Fatalf("a mapping change scanned the whole workspace: %v", r.Query)
		}
	}
	for id, want := range map[string]string{viaFacility.id: "Kakata District", viaOrg.id: "Jorquelleh", viaBoth.id: "Jorquelleh"} {
		if c, _ := e.contactOf(id); field(c, "district") != want {
			t.Errorf("%s: district %q, want %q", id, field(c, "district"), want)
		}
	}
}

// Officials target by smart groups over the targeting fields, so a worker
// who leaves loses them as well as the managed group (their globalid stays,
// for their return), and gets them back on returning.
func TestRetiredWorkerDropsOutOfSmartGroups(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility, viaOrg)})
	e.trigger()
	gone := viaFacility
	gone.status, gone.updated = "Inactive", later
	if err := e.registry.SetDocument(directoryWith(kakata, gone, viaOrg)); err != nil {
		t.Fatal(err)
	}
	tx, _ := e.next()
	wantProps(t, tx, map[string]string{"group_removed": "1", "action_leave_group": "1"})
	c, _ := e.contactOf(gone.id)
	for _, k := range []string{"cadre", "facility", "facility_id", "district", "specialty"} {
		if v := field(c, k); v != "" {
			t.Errorf("a retired worker keeps %s = %q", k, v)
		}
	}
	if len(c.Groups) != 0 || field(c, "globalid") != gone.id {
		t.Fatalf("groups %v, globalid %q", groupNames(c), field(c, "globalid"))
	}
	if other, _ := e.contactOf(viaOrg.id); field(other, "district") != "Bong" {
		t.Fatalf("another worker lost their fields: %v", other.Fields)
	}
	back := viaFacility
	back.updated = "2025-01-02T00:00:00Z"
	if err := e.registry.SetDocument(directoryWith(kakata, back, viaOrg)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(24 * 3600e9)
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"group_added": "1", "action_rejoin": "1"})
	if c, _ := e.contactOf(gone.id); field(c, "district") != "Margibi" || !e.inGroup(gone.id) {
		t.Fatalf("the returning worker: %v in %v", c.Fields, groupNames(c))
	}
}

// An operator made WhatsApp the contact's preferred channel (first URN). A
// phone change in the registry replaces the tel URN and must leave the
// preferred channel alone: RapidPro takes the first URN sent as preferred.
func TestPhoneChangeKeepsThePreferredURN(t *testing.T) {
	e := newEnv(t, envOptions{doc: directoryWith(kakata, viaFacility)})
	e.trigger()
	c, _ := e.contactOf(viaFacility.id)
	if _, err := e.operator().UpdateContact(context.Background(), c.UUID, rapidpro.ContactWrite{
		URNs: append([]string{"whatsapp:231777200001"}, c.URNs...),
	}); err != nil {
		t.Fatal(err)
	}
	w := viaFacility
	w.phones, w.updated = []string{"0777 200 999"}, later
	if err := e.registry.SetDocument(directoryWith(kakata, w)); err != nil {
		t.Fatal(err)
	}
	e.next()
	got, _ := e.contactOf(viaFacility.id)
	if len(got.URNs) == 0 || got.URNs[0] != "whatsapp:231777200001" {
		t.Fatalf("urns %v: the operator's preferred WhatsApp URN is no longer first", got.URNs)
	}
}
