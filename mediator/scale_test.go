package mediator

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
)

// processCPU is the CPU time this process has used, fakes included.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// renameFacility renames a generated facility and moves its record date,
// leaving every provider record as it was.
func renameFacility(t *testing.T, doc []byte, k int, name, updated string) []byte {
	t.Helper()
	s := string(doc)
	at := strings.Index(s, fmt.Sprintf("<primaryName>Centre de santé %d</primaryName>", k))
	end := strings.Index(s[at:], "</facility>")
	if at < 0 || end < 0 {
		t.Fatalf("no facility %d", k)
	}
	block := s[at : at+end]
	renamed := strings.Replace(block, fmt.Sprintf("Centre de santé %d<", k), name+"<", 1)
	i := strings.Index(renamed, `updated="`)
	renamed = renamed[:i] + `updated="` + updated + renamed[i+len(`updated="`)+len("2020-01-01T00:00:00Z"):]
	return []byte(s[:at] + renamed + s[at+end:])
}

// A full reconciliation with nothing changed writes nothing and reads the
// group once; a renamed facility updates exactly its workers' contacts. At
// MHERO_SCALE_N providers (default 2,000) it also logs what each run cost:
//
//	MHERO_SCALE_N=100000 go test -run TestReconciliationAtScale -v -timeout 30m ./mediator
func TestReconciliationAtScale(t *testing.T) {
	n := 2000
	if v := os.Getenv("MHERO_SCALE_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := csdtest.Generate(&buf, n, csdtest.GenerateOptions{Seed: 11, Hierarchy: true}); err != nil {
		t.Fatal(err)
	}
	doc := buf.Bytes()
	e := newEnv(t, envOptions{doc: doc, pageSize: 500, concurrency: 8}) // as serve writes by default
	run := func(name string, o RunOptions) (*Report, int, int) {
		t.Helper()
		e.clock.Advance(time.Hour)
		before := len(e.workspace.Requests())
		cpu, wall := processCPU(), time.Now()
		r, err := e.syncer.RunWith(context.Background(), o)
		if err != nil || r.Err != nil {
			t.Fatalf("%s: %v %v", name, err, r.Err)
		}
		reqs := e.workspace.Requests()[before:]
		t.Logf("%s: %d providers, %d RapidPro requests (%d writes), wall %s, process CPU (fakes included) %s, actions %v",
			name, r.Providers, len(reqs), len(e.writes(before)), time.Since(wall).Round(time.Millisecond), (processCPU() - cpu).Round(time.Millisecond), r.Actions)
		return r, len(reqs), len(e.writes(before))
	}
	first, _, _ := run("first sync", RunOptions{})
	contacts := len(e.workspace.Contacts())
	if first.Created == 0 || contacts != first.Created {
		t.Fatalf("%d created, %d contacts", first.Created, contacts)
	}

	full, reads, writes := run("full reconciliation, nothing changed", RunOptions{Full: true})
	if writes != 0 || full.Actions[OutcomeLeave]+full.Actions[OutcomeCreate]+full.Actions[OutcomeUpdate] != 0 {
		t.Fatalf("an idle reconciliation wrote %d times: %v", writes, full.Actions)
	}
	if rejected := sum(first.Failed); full.Mapped != rejected {
		t.Errorf("an idle reconciliation mapped %d providers again, want only the %d rejected: the others' records did not change", full.Mapped, rejected)
	}
	if pages := (contacts + 249) / 250; reads != pages {
		t.Fatalf("an idle reconciliation made %d reads, want the group's %d pages", reads, pages)
	}

	const k = 7 // facility k serves providers i with i mod GeneratedFacilities == k
	var theirs []string
	for _, c := range e.workspace.Contacts() {
		if field(c, "facility") == fmt.Sprintf("Centre de santé %d", k) {
			theirs = append(theirs, c.UUID)
		}
	}
	if err := e.registry.SetDocument(renameFacility(t, doc, k, "Centre de santé Rebâti", e.clock.Now().UTC().Format(time.RFC3339))); err != nil {
		t.Fatal(err)
	}
	renamed, _, writes := run("a facility renamed", RunOptions{})
	if renamed.Mapped != n {
		t.Errorf("a renamed facility mapped %d providers again, want all %d: what each resolves to may have changed", renamed.Mapped, n)
	}
	if !renamed.DirectoryChanged || renamed.Updated != len(theirs) || writes != len(theirs) || len(theirs) == 0 {
		t.Fatalf("renaming a facility of %d contacts: %d updated, %d writes", len(theirs), renamed.Updated, writes)
	}
	for _, c := range e.workspace.Contacts() {
		if field(c, "facility") == fmt.Sprintf("Centre de santé %d", k) {
			t.Fatalf("contact %s still names the old facility", c.UUID)
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t.Logf("%d providers, %d contacts; peak RSS of the test process, fakes included: %d MiB", n, contacts, ru.Maxrss/1024)
}
