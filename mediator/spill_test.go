package mediator

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
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

// chunkedStep is one run of a chunking scenario: what changes before it.
type chunkedStep struct {
	name    string
	workers []hw
	full    bool
	before  func(e *env) // changes RapidPro before the run
}

// A run that writes its providers in chunks ends exactly as one that holds
// them all: the same contacts, counts and state, through duplicates whose
// copies fall in different chunks, a phone handed from a worker of a later
// chunk to one of an earlier chunk, contacts found by the first run's scan,
// leavers, and write-back.
func TestChunkedRunsEndAsOneRun(t *testing.T) {
	workers := staff(14)
	// A duplicate id: the first copy falls beyond the first chunk, the
	// second copy later still.
	workers[5].id = "urn:uuid:dup"
	workers[11].id = "URN:UUID:DUP"
	workers[7].status = "Inactive"
	workers[8].phones = nil
	workers[9].phones = workers[10].phones // two workers share a phone
	handed := slices.Clone(workers)
	// Worker 0 (first chunk) takes worker 12's phone; worker 12 (the third
	// chunk) takes a new one.
	handed[0].phones, handed[0].updated = workers[12].phones, later
	handed[12].phones, handed[12].updated = []string{"0886 400 012"}, later
	for _, i := range []int{1, 2, 3, 4, 6, 9} { // so that worker 12 falls two chunks later
		handed[i].name, handed[i].updated = handed[i].name+" B.", later
	}
	// Five renamed, so that some are spilled; worker 4 gone from the registry.
	renamed := slices.Concat(handed[:4], handed[5:])
	for _, i := range []int{1, 2, 3, 8, 11} {
		renamed[i].name, renamed[i].updated = renamed[i].name+" K.", "2024-03-03T09:00:00Z"
	}
	steps := []chunkedStep{
		{name: "first sync", workers: workers, before: func(e *env) {
			// Found by the workspace scan: contacts an earlier tool made for
			// workers 1, 6 and 12, and one entered by hand with worker 13's
			// phone. Worker 12's holds worker 1's phone, so worker 1 (first
			// chunk) waits for worker 12 (a later chunk) to let it go.
			e.workspace.AddField(FieldGlobalID, "text")
			for _, c := range []struct{ key, phone string }{
				{"urn:uuid:staff-01", "tel:+231886999001"}, {"urn:uuid:staff-06", "tel:+231886999006"}, {"urn:uuid:staff-12", "tel:+231777300001"},
			} {
				e.workspace.AddContact(rapidpro.Contact{Name: "Old tool", URNs: []string{c.phone}, Fields: map[string]*string{FieldGlobalID: &c.key}})
			}
			e.workspace.AddContact(rapidpro.Contact{Name: "By hand", URNs: []string{"tel:+231777300013"}})
		}},
		{name: "phone handed on", workers: handed},
		{name: "reconciliation", workers: renamed, full: true},
		{name: "nothing changed", workers: renamed, full: true},
	}
	run := func(chunkSize, concurrency int) chunkedOutcome {
		e := newEnv(t, envOptions{doc: directory(workers...), chunkSize: chunkSize, concurrency: concurrency, tune: func(s *Settings) { s.WriteBack.Enabled = true }})
		var out chunkedOutcome
		for _, step := range steps {
			e.setDirectory(step.workers...)
			if step.before != nil {
				step.before(e)
			}
			e.clock.Advance(time.Hour)
			r, err := e.syncer.RunWith(t.Context(), RunOptions{Full: step.full})
			if err != nil || r.Err != nil {
				t.Fatalf("chunk size %d, %s: %v %v", chunkSize, step.name, err, r.Err)
			}
			out.counts = append(out.counts, reportCounts(r))
			if done, of := r.meter.processed.Load(), r.meter.toWrite.Load(); done != of {
				t.Errorf("chunk size %d, %s: the progress meter ended at %d of %d", chunkSize, step.name, done, of)
			}
		}
		out.contacts = map[string]string{}
		seen := map[string]bool{}
		for _, c := range e.workspace.Contacts() {
			c.UUID, c.CreatedOn, c.ModifiedOn = "", time.Time{}, time.Time{}
			for i := range c.Groups {
				c.Groups[i].UUID = ""
			}
			data, _ := json.Marshal(c)
			k := field(c, FieldGlobalID)
			if seen[k] && k != "" {
				t.Errorf("chunk size %d: two contacts with globalid %s", chunkSize, k)
			}
			seen[k] = true
			out.contacts[k+"/"+c.Name] = string(data)
		}
		out.state = recordsWithoutUUIDs(t, e.state)
		out.otherIDs = map[string]int{}
		for k, ids := range e.otherIDs() {
			out.otherIDs[k] = len(ids)
		}
		return out
	}
	whole := run(0, 1)
	for _, concurrency := range []int{1, 8} {
		compareChunked(t, steps, whole, run(3, concurrency))
	}
	// The scenario reaches what it is about.
	first, handedOn, reconciled := whole.counts[0], whole.counts[1], whole.counts[2]
	if first["failed_duplicate_globalid"] != 2 || first["updated"] != 4 || handedOn["updated"] != 8 || handedOn["failed"] != 0 || reconciled["group_removed"] != 1 {
		t.Errorf("the scenario missed its cases: first %v, handed on %v, reconciled %v", first, handedOn, reconciled)
	}
}

// chunkedOutcome is how a chunking scenario ends.
type chunkedOutcome struct {
	counts   []map[string]int
	contacts map[string]string
	state    string
	otherIDs map[string]int
}

func compareChunked(t *testing.T, steps []chunkedStep, whole, chunked chunkedOutcome) {
	t.Helper()
	for i, step := range steps {
		if !maps.Equal(whole.counts[i], chunked.counts[i]) {
			t.Errorf("%s: in chunks of 3 %v\nwhole %v", step.name, chunked.counts[i], whole.counts[i])
		}
	}
	if !maps.Equal(whole.contacts, chunked.contacts) {
		t.Errorf("RapidPro's contacts differ:\nin chunks of 3 %v\nwhole %v", chunked.contacts, whole.contacts)
	}
	if whole.state != chunked.state {
		t.Errorf("the state differs:\nin chunks of 3\n%s\nwhole\n%s", chunked.state, whole.state)
	}
	if !maps.Equal(whole.otherIDs, chunked.otherIDs) || len(whole.otherIDs) == 0 {
		t.Errorf("write-back: in chunks of 3 %v, whole %v", chunked.otherIDs, whole.otherIDs)
	}
}

// reportCounts are a run's counts that do not depend on timing.
func reportCounts(r *Report) map[string]int {
	out := map[string]int{
		"providers": r.Providers, "mapped": r.Mapped, "created": r.Created, "updated": r.Updated, "unchanged": r.Unchanged,
		"inactive": r.Inactive, "group_added": r.GroupAdded, "group_removed": r.GroupRemoved, "deferred": r.Deferred,
		"pending": r.Pending, "rejected": r.Rejected, "urn_conflicts": r.URNConflicts, "written_back": r.WrittenBack,
	}
	for k, n := range r.Failed {
		out["failed_"+k] = n
		out["failed"] += n
	}
	for k, n := range r.Skipped {
		out["skipped_"+k] = n
	}
	for k, n := range r.Actions {
		out["action_"+k] = n
	}
	return out
}

// recordsWithoutUUIDs lists the provider records, pending work and rejects
// of the state, contact UUIDs left out (each workspace makes its own).
func recordsWithoutUUIDs(t *testing.T, s *State) string {
	t.Helper()
	var b strings.Builder
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketProviders, bucketPending, bucketRejected} {
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				if string(name) == string(bucketProviders) {
					var r Record
					if err := json.Unmarshal(v, &r); err != nil {
						return err
					}
					r.UUID, r.Raw = fmt.Sprint(r.UUID != ""), fmt.Sprint(r.Raw != "") // the raw context holds the workspace URL
					v, _ = json.Marshal(r)
				}
				fmt.Fprintf(&b, "%s/%s=%s\n", name, k, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A run that stops while providers wait in the spill file leaves every one
// of them pending, moves the watermark, and the next run creates each once.
func TestStoppedChunkedRunLeavesTheRestPending(t *testing.T) {
	workers := staff(12)
	e := newEnv(t, envOptions{doc: directory(workers...), chunkSize: 3, retryCap: time.Second})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 5, Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"created": "5", "deferred": "7", "pending": "7", "mapped": "12"})
	if open := openSpillFiles(t); open > 0 {
		t.Errorf("%d spill files still open after the run", open)
	}
	if wm, _ := e.state.Watermark(); wm.IsZero() {
		t.Fatal("the watermark did not move, though every provider is created or pending")
	}
	tx, _ = e.next()
	wantProps(t, tx, map[string]string{"created": "7", "retried": "7", "pending": "0"})
	got := contactsByGlobalID(e.workspace.Contacts())
	if len(got) != 12 || len(e.workspace.Contacts()) != 12 {
		t.Fatalf("%d contacts for %d globalids, want 12 each", len(e.workspace.Contacts()), len(got))
	}
}

// openSpillFiles counts this process's open spill files.
func openSpillFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd here:", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.Contains(target, "mhero-spill-") {
			n++
		}
	}
	return n
}

// The intake holds up to its bound, spills active providers beyond it but
// never a retirement, and holds a key pulled again beside its spilled copy.
func TestIntakeSpillsBeyondItsBound(t *testing.T) {
	in := testIntake(t)
	in.spillDir, in.maxHeld = t.TempDir(), 2
	t.Cleanup(func() { in.spill.close() })
	provider := func(id, status, name string) *csd.Provider {
		return &csd.Provider{EntityID: id, Names: []csd.Name{{CommonNames: []string{name}}}, Record: csd.Record{Status: status},
			ContactPoints: []csd.ContactPoint{{Code: csd.ContactPhone, Value: "0777 100 001"}}}
	}
	var held []string
	for _, p := range []*csd.Provider{
		provider("urn:uuid:a", "Active", "A"),
		provider("urn:uuid:b", "Active", "B"),
		provider("urn:uuid:c", "Active", "C"),   // spilled
		provider("urn:uuid:d", "Inactive", "D"), // a retirement: held
		provider("urn:uuid:e", "Active", "E"),   // spilled
		provider("urn:uuid:C", "Active", "C2"),  // c again: held, c comes back
		provider("urn:uuid:f", "Active", "F"),   // spilled
	} {
		it, err := in.take(p)
		if err != nil {
			t.Fatal(err)
		}
		if it != nil {
			held = append(held, it.Contact.Name)
		}
	}
	if want := []string{"A", "B", "D", "C2"}; !slices.Equal(held, want) {
		t.Errorf("held %v, want %v", held, want)
	}
	if in.spill.len() != 3 || !in.comesLater("urn:uuid:e") || in.comesLater("urn:uuid:c") {
		t.Errorf("%d spilled; e comes later %v, c %v", in.spill.len(), in.comesLater("urn:uuid:e"), in.comesLater("urn:uuid:c"))
	}
	back, err := in.reloaded()
	if err != nil || len(back) != 1 || back[0].Contact.Name != "C" || !back[0].pulled {
		t.Fatalf("read back %v, %v; want C", back, err)
	}
	var chunks [][]string
	for {
		chunk, err := in.nextChunk()
		if err != nil {
			t.Fatal(err)
		}
		if len(chunk) == 0 {
			break
		}
		var names []string
		for _, it := range chunk {
			names = append(names, it.Contact.Name)
		}
		chunks = append(chunks, names)
	}
	if fmt.Sprint(chunks) != "[[E F]]" || in.comesLater("urn:uuid:e") {
		t.Errorf("chunks %v, want [[E F]] and none to come", chunks)
	}
}
