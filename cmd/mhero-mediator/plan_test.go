package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/mediator"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const (
	planProviders = "../../testdata/plan-providers.xml"
	planSnapshot  = "../../testdata/plan-snapshot.json"
	planGroup     = "mHero"
)

// planID is the entity id of the plan fixture's provider n.
func planID(n int) string { return "urn:uuid:9e1a0000-0000-4000-8000-00000000000" + strconv.Itoa(n) }

func runCommand(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// planEntry is one provider line of a plan.
type planEntry struct{ id, action, detail string }

func parsePlan(t *testing.T, out string) []planEntry {
	t.Helper()
	var entries []planEntry
	for line := range strings.Lines(out) {
		parts := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(parts) != 3 {
			t.Fatalf("plan line %q has %d tab-separated columns, want 3", line, len(parts))
		}
		entries = append(entries, planEntry{parts[0], parts[1], parts[2]})
	}
	return entries
}

var totalLine = regexp.MustCompile(`(?m)^([a-z_]+) +(\d+)$`)

// planTotals reads the totals a plan printed on stderr.
func planTotals(stderr string) map[string]int {
	totals := map[string]int{}
	for _, m := range totalLine.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.Atoi(m[2])
		totals[m[1]] = n
	}
	return totals
}

var actionCount = regexp.MustCompile(`(?m)^action_([a-z_]+): (\d+)$`)

// syncActions reads the action_* counts sync printed.
func syncActions(stdout string) map[string]int {
	counts := map[string]int{}
	for _, m := range actionCount.FindAllStringSubmatch(stdout, -1) {
		n, _ := strconv.Atoi(m[2])
		if n > 0 {
			counts[m[1]] = n
		}
	}
	return counts
}

type fileStamp struct {
	data  []byte
	mtime time.Time
}

func stamp(t *testing.T, path string) fileStamp {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileStamp{data, info.ModTime()}
}

// A plan made from the fixture files says exactly what the sync that
// follows does: the same plan against the live emulators, with nothing
// written to RapidPro, OpenInfoMan or the state file; then a sync against
// those emulators whose counts are the plan's totals and whose every
// provider ends as its plan line said; then a plan with nothing left to do.
func TestPlanMatchesTheSyncThatFollows(t *testing.T) {
	tests := []struct {
		name    string
		confirm bool
		retire  string // the action of the inactive 04 and of 09, gone from the registry
	}{
		{"breaker holds the retirements", false, mediator.OutcomeHeld},
		{"retirements confirmed", true, mediator.OutcomeLeave},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := []planEntry{
				{planID(1), mediator.OutcomeUnchanged, ""},
				{planID(2), mediator.OutcomeUpdate, "cadre"},
				{planID(3), mediator.OutcomeUpdate, "joins the group"},
				{planID(4), tc.retire, ""},
				{planID(5), mediator.OutcomeCreate, ""},
				{planID(6), mediator.OutcomeSkip, mediator.SkipNoPhone},
				{planID(7), mediator.OutcomeSkip, mediator.SkipInvalidPhone},
				{planID(8), mediator.OutcomeJoinGroup, ""},
				{planID(9), tc.retire, ""},
			}
			wantTotals := map[string]int{"create": 1, "update": 2, "unchanged": 1, "join_group": 1, "skip": 2, tc.retire: 2, "total": 9}
			stateFile := filepath.Join(t.TempDir(), "state.db")
			st, err := mediator.OpenState(stateFile)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			before := stamp(t, stateFile)
			extra := []string{"--state-file", stateFile, "--country", "LR"}
			if tc.confirm {
				extra = append(extra, "--confirm-retire")
			}

			checkPlan := func(stdout, stderr string) {
				t.Helper()
				got := parsePlan(t, stdout)
				if len(got) != len(want) {
					t.Fatalf("%d plan lines, want %d:\n%s", len(got), len(want), stdout)
				}
				for i, w := range want {
					if g := got[i]; g.id != w.id || g.action != w.action || !strings.Contains(g.detail, w.detail) {
						t.Errorf("plan line %d = %+v, want %s %s with %q in the detail", i, g, w.id, w.action, w.detail)
					}
				}
				if totals := planTotals(stderr); !equalCounts(totals, wantTotals) {
					t.Errorf("totals %v, want %v\n%s", totals, wantTotals, stderr)
				}
				if !strings.Contains(stderr, `a sync would first create the field "specialty"`) {
					t.Errorf("the plan does not say the specialty field would be created:\n%s", stderr)
				}
				if held := strings.Contains(stderr, "circuit breaker, 2 retirements held"); held != !tc.confirm {
					t.Errorf("breaker reported %v, want %v:\n%s", held, !tc.confirm, stderr)
				}
			}

			fromFiles, stderr, err := runCommand(t, append([]string{"plan", "--csd-file", planProviders, "--rapidpro-snapshot", planSnapshot}, extra...)...)
			if err != nil {
				t.Fatalf("plan from files: %v\n%s", err, stderr)
			}
			checkPlan(fromFiles, stderr)

			registry, err := csdFileRegistry(planProviders, "Providers")
			if err != nil {
				t.Fatal(err)
			}
			defer registry.Close()
			workspace, err := snapshotWorkspace(planSnapshot, "LR")
			if err != nil {
				t.Fatal(err)
			}
			defer workspace.Close()
			snapshot := workspace.Contacts()
			live := append([]string{"--oim-url", registry.URL(), "--rapidpro-url", workspace.URL(), "--rapidpro-token", workspace.Token(), "--rapidpro-rate", "0"}, extra...)
			fromLive, stderr, err := runCommand(t, append([]string{"plan"}, live...)...)
			if err != nil {
				t.Fatalf("plan against the emulators: %v\n%s", err, stderr)
			}
			checkPlan(fromLive, stderr)
			if fromLive != fromFiles {
				t.Errorf("the plan against the emulators differs from the plan from the files:\n%s\nvs\n%s", fromLive, fromFiles)
			}
			assertNothingWritten(t, workspace, registry)
			if after := stamp(t, stateFile); !bytes.Equal(after.data, before.data) || !after.mtime.Equal(before.mtime) {
				t.Errorf("a plan changed the state file")
			}

			synced, stderr, err := runCommand(t, append([]string{"sync"}, live...)...)
			if err != nil {
				t.Fatalf("sync: %v\n%s\n%s", err, synced, stderr)
			}
			delete(wantTotals, "total")
			if got := syncActions(synced); !equalCounts(got, wantTotals) {
				t.Errorf("sync did %v, the plan said %v\n%s", got, wantTotals, synced)
			}
			checkOutcomes(t, want, snapshot, workspace.Contacts())

			again, stderr, err := runCommand(t, append([]string{"plan"}, live...)...)
			if err != nil {
				t.Fatalf("plan after the sync: %v\n%s", err, stderr)
			}
			for _, e := range parsePlan(t, again) {
				if e.action != mediator.OutcomeUnchanged && e.action != mediator.OutcomeSkip && e.action != mediator.OutcomeHeld {
					t.Errorf("after the sync the plan still has %+v", e)
				}
			}
		})
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// assertNothingWritten checks that only reads reached the emulators.
func assertNothingWritten(t *testing.T, workspace *rapidprotest.Server, registry *csdtest.Server) {
	t.Helper()
	for _, q := range workspace.Requests() {
		if q.Method != "GET" {
			t.Errorf("a plan sent %s %s to RapidPro", q.Method, q.Path)
		}
	}
	for _, c := range registry.Calls() {
		if c.Updating {
			t.Errorf("a plan called OpenInfoMan's updating function %s", c.Function)
		}
	}
}

// checkOutcomes checks each provider's contact after the sync against its
// plan line and the targeting map resolves for it.
func checkOutcomes(t *testing.T, plan []planEntry, before, after []rapidpro.Contact) {
	t.Helper()
	lines, _, err := runMapCommand(t, planProviders)
	if err != nil {
		t.Fatal(err)
	}
	targeting := map[string]map[string]string{}
	for _, l := range lines {
		targeting[l.EntityID] = l.Targeting
	}
	byID := func(cs []rapidpro.Contact) map[string]rapidpro.Contact {
		out := map[string]rapidpro.Contact{}
		for _, c := range cs {
			if v := c.Fields[mediator.FieldGlobalID]; v != nil {
				out[*v] = c
			}
		}
		return out
	}
	old, now := byID(before), byID(after)
	for _, e := range plan {
		c, ok := now[e.id]
		inGroup := slices.ContainsFunc(c.Groups, func(g rapidpro.GroupRef) bool { return g.Name == planGroup })
		switch e.action {
		case mediator.OutcomeSkip:
			if ok {
				t.Errorf("%s was skipped, yet has contact %s", e.id, c.UUID)
			}
			continue
		case mediator.OutcomeLeave:
			if !ok || inGroup {
				t.Errorf("%s: contact %v in the group %v, want it out", e.id, ok, inGroup)
			}
			continue
		case mediator.OutcomeHeld:
			if !ok || !inGroup {
				t.Errorf("%s: contact %v in the group %v, want it kept", e.id, ok, inGroup)
			}
			continue
		}
		if !ok || !inGroup {
			t.Errorf("%s (%s): contact %v in the group %v", e.id, e.action, ok, inGroup)
			continue
		}
		for _, key := range []string{"cadre", "facility", "facility_id", "district"} {
			if got := deref(c.Fields[key]); got != targeting[e.id][key] {
				t.Errorf("%s: %s %q, want %q", e.id, key, got, targeting[e.id][key])
			}
		}
		if e.action == mediator.OutcomeUnchanged && !c.ModifiedOn.Equal(old[e.id].ModifiedOn) {
			t.Errorf("%s was planned unchanged, yet its contact was modified", e.id)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// --json prints each line as an object with the PlanLine keys.
func TestPlanJSON(t *testing.T) {
	stdout, stderr, err := runCommand(t, "plan", "--json", "--csd-file", planProviders, "--rapidpro-snapshot", planSnapshot,
		"--country", "LR", "--state-file", filepath.Join(t.TempDir(), "absent.db"))
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 9 {
		t.Fatalf("%d lines, want 9:\n%s", len(lines), stdout)
	}
	want := `{"entity_id":"` + planID(5) + `","action":"create"}`
	if lines[4] != want {
		t.Errorf("line 5 = %s, want %s", lines[4], want)
	}
}

func TestPlanErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	state := []string{"--state-file", filepath.Join(dir, "state.db")}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"snapshot without country", []string{"--csd-file", planProviders, "--rapidpro-snapshot", planSnapshot}, "--rapidpro-snapshot needs --country"},
		{"missing csd file", []string{"--csd-file", filepath.Join(dir, "absent.xml"), "--rapidpro-snapshot", planSnapshot, "--country", "LR"}, "csd-file: open"},
		{"csd file not CSD", []string{"--csd-file", write("page.xml", "<html/>"), "--rapidpro-snapshot", planSnapshot, "--country", "LR"}, "root must be CSD"},
		{"snapshot not JSON", []string{"--csd-file", planProviders, "--rapidpro-snapshot", write("s.json", "<html/>"), "--country", "LR"}, "s.json: JSON value 1"},
		{"snapshot of groups", []string{"--csd-file", planProviders, "--rapidpro-snapshot", write("g.json", `{"count": 2}`), "--country", "LR"}, "not a contacts.json page"},
		{"snapshot with an invalid phone", []string{"--csd-file", planProviders, "--rapidpro-snapshot", write("bad.json", `[{"uuid":"6b0c0000-0000-4000-8000-0000000000ff","status":"active","urns":["tel:12"]}]`), "--country", "LR"}, "contact 6b0c0000-0000-4000-8000-0000000000ff"},
		{"bad cadre names", []string{"--csd-file", planProviders, "--rapidpro-snapshot", planSnapshot, "--country", "LR", "--cadre-names", write("vs.xml", "<CSD/>")}, "cadre-names"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runCommand(t, append(append([]string{"plan"}, state...), tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q\n%s", err, tc.want, stderr)
			}
		})
	}
	if _, _, err := runCommand(t, "plan", "extra"); err != errUsage {
		t.Fatalf("plan with an argument: err = %v, want usage", err)
	}
}

// A snapshot is what curl saves: one or more contacts.json pages one after
// another, or a JSON array of contacts.
func TestReadSnapshot(t *testing.T) {
	const (
		a = `{"uuid":"6B0C0000-0000-4000-8000-0000000000AA","name":"A","status":"active","urns":["tel:+231777000001"],"modified_on":"2024-03-02T10:00:00Z"}`
		b = `{"uuid":"6b0c0000-0000-4000-8000-0000000000bb","name":"B","status":"blocked","urns":[]}`
		// Deleted contacts come with all of status, blocked and stopped null.
		deleted = `{"uuid":"6b0c0000-0000-4000-8000-0000000000cc","name":null,"status":null,"urns":[]}`
		aLater  = `{"uuid":"6b0c0000-0000-4000-8000-0000000000aa","name":"A2","status":"active","urns":["tel:+231777000001"],"modified_on":"2024-03-03T10:00:00Z"}`
	)
	tests := []struct {
		name string
		in   string
		want string // names in order; empty with err
		err  string
	}{
		{"array", "[" + a + "," + b + "]", "A B", ""},
		{"one page", `{"next":null,"previous":null,"results":[` + a + "," + b + `]}`, "A B", ""},
		{"pages as curl appends them", `{"next":"https://x/api/v2/contacts.json?cursor=1","results":[` + a + `]}{"next":null,"results":[` + b + `]}` + "\n", "A B", ""},
		{"pages and arrays mixed", "[" + a + "]\n" + `{"results":[` + b + `]}`, "A B", ""},
		{"a contact read twice keeps its latest form", "[" + a + "," + b + "," + aLater + "]", "A2 B", ""},
		{"an older form read last is ignored", "[" + aLater + "," + a + "]", "A2", ""},
		{"deleted contacts are left out", "[" + a + "," + deleted + "]", "A", ""},
		{"empty", "", "", ""},
		{"not JSON", "uuid,name\n", "", "JSON value 1"},
		{"a number", "[" + a + "] 7", "", "JSON value 2: neither"},
		{"an object without results", `{"results":[` + a + `]}{"uuid":"x"}`, "", "JSON value 2: an object without results"},
		{"a contact without uuid", `[{"name":"X","status":"active"}]`, "", "without uuid"},
		{"cut short", `{"results":[` + a, "", "JSON value 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			contacts, err := readSnapshot(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range contacts {
				names = append(names, c.Name)
			}
			if got := strings.Join(names, " "); got != tc.want {
				t.Fatalf("contacts %q, want %q", got, tc.want)
			}
		})
	}
}

// The workspace seeded from a snapshot holds its contacts as they were:
// UUIDs, groups (matched by name), fields, status and language.
func TestSnapshotWorkspace(t *testing.T) {
	ws, err := snapshotWorkspace(planSnapshot, "LR")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	contacts := ws.Contacts()
	if len(contacts) != 7 {
		t.Fatalf("%d contacts, want the snapshot's 7", len(contacts))
	}
	byUUID := map[string]rapidpro.Contact{}
	for _, c := range contacts {
		byUUID[c.UUID] = c
	}
	grace := byUUID["6b0c0000-0000-4000-8000-000000000003"]
	if grace.Name != "Grace S." || len(grace.Groups) != 1 || grace.Groups[0].Name != "Kakata nurses" {
		t.Errorf("contact 03 = %+v", grace)
	}
	joseph := byUUID["6b0c0000-0000-4000-8000-000000000002"]
	if deref(joseph.Fields["cadre"]) != "Nurse" || joseph.Language != "eng" || joseph.URNs[0] != "tel:+231777000002" {
		t.Errorf("contact 02 = %+v", joseph)
	}
	if _, ok := joseph.Fields["specialty"]; ok {
		t.Errorf("the snapshot has no specialty field, the workspace does")
	}
}

// sync --full makes the run a full reconciliation whatever the schedule,
// and --confirm-retire lets it past the circuit breaker. Held retirements
// stay pending, so every run holds them until one is confirmed.
func TestSyncFullConfirmRetire(t *testing.T) {
	registry, err := csdFileRegistry(planProviders, "Providers")
	if err != nil {
		t.Fatal(err)
	}
	defer registry.Close()
	workspace, err := snapshotWorkspace(planSnapshot, "LR")
	if err != nil {
		t.Fatal(err)
	}
	defer workspace.Close()
	args := []string{"sync", "--oim-url", registry.URL(), "--rapidpro-url", workspace.URL(), "--rapidpro-token", workspace.Token(),
		"--rapidpro-rate", "0", "--country", "LR", "--state-file", filepath.Join(t.TempDir(), "state.db")}

	steps := []struct {
		name  string
		flags []string
		full  bool
		held  int // retirements the breaker held
		left  int // contacts that left the group
	}{
		{"first run: full, as the state is new", nil, true, 2, 0},
		{"next run: not due, the held ones still held", nil, false, 2, 0},
		{"--full", []string{"--full"}, true, 2, 0},
		{"--full --confirm-retire", []string{"--full", "--confirm-retire"}, true, 0, 2},
		{"--full once they left", []string{"--full"}, true, 0, 0},
	}
	for _, step := range steps {
		out, stderr, err := runCommand(t, append(args, step.flags...)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s\n%s", step.name, err, out, stderr)
		}
		actions := syncActions(out)
		if full := strings.Contains(out, "full reconciliation:"); full != step.full {
			t.Errorf("%s: full reconciliation %v, want %v:\n%s", step.name, full, step.full, out)
		}
		if actions[mediator.OutcomeHeld] != step.held || actions[mediator.OutcomeLeave] != step.left {
			t.Errorf("%s: %d held, %d left the group; want %d and %d:\n%s", step.name,
				actions[mediator.OutcomeHeld], actions[mediator.OutcomeLeave], step.held, step.left, out)
		}
		if breaker := strings.Contains(out, "circuit breaker, 2 retirements held"); breaker != (step.held > 0) {
			t.Errorf("%s: breaker reported %v:\n%s", step.name, breaker, out)
		}
	}
	for _, c := range workspace.Contacts() {
		id := deref(c.Fields[mediator.FieldGlobalID])
		inGroup := slices.ContainsFunc(c.Groups, func(g rapidpro.GroupRef) bool { return g.Name == planGroup })
		if (id == planID(4) || id == planID(9)) && inGroup {
			t.Errorf("%s is still in the group after a confirmed reconciliation", id)
		}
	}
}
