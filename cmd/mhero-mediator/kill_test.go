package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const contactsPath = "/api/v2/contacts.json"

// isCreate reports whether q is a contact create: a POST to contacts.json
// without ?uuid= (an update names its contact).
func isCreate(q rapidprotest.Request) bool {
	return q.Method == http.MethodPost && q.Path == contactsPath && !q.Query.Has("uuid")
}

// TestFaultKillAndRestart SIGKILLs the real binary's first sync at several
// points, restarts it, and runs it until a run writes nothing: no contact
// may be duplicated or lost, whenever the process died.
func TestFaultKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and syncs 2,000 providers per row")
	}
	const (
		providers = 2000
		seed      = 7
		maxRuns   = 10
	)
	bin := buildBinary(t)
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, providers, csdtest.GenerateOptions{Seed: seed}); err != nil {
		t.Fatal(err)
	}
	want := 0 // active providers with a usable phone
	for i := range providers {
		if i%3 != 0 && i%10 != 9 { // csdtest: i mod 3 phones, every tenth inactive
			want++
		}
	}

	tests := []struct {
		name    string
		outcome string
		killAt  int // creates answered before the kill
		// inFlight kills while the next create is held by RapidPro after it
		// committed: the service never learns the contact's UUID.
		inFlight bool
	}{
		{name: "after 1 create", outcome: "no duplicate; converges on restart", killAt: 1},
		{name: "after 300 creates", outcome: "no duplicate; converges on restart", killAt: 300},
		{name: "after 1000 creates", outcome: "no duplicate; converges on restart", killAt: 1000},
		{name: "create committed, answer in flight", outcome: "committed contact adopted, not created twice; converges on restart", killAt: 500, inFlight: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			oim, err := csdtest.New(doc.Bytes(), csdtest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(oim.Close)

			kill := make(chan struct{}, 1)
			signal := func() {
				select {
				case kill <- struct{}{}:
				default:
				}
			}
			var (
				creates atomic.Int64
				srv     *rapidprotest.Server
				once    sync.Once
			)
			srv = rapidprotest.New(rapidprotest.Options{
				Country: "LR",
				OnRequest: func(q rapidprotest.Request) {
					if !isCreate(q) || q.Status != http.StatusCreated {
						return
					}
					if creates.Add(1) != int64(tc.killAt) {
						return
					}
					once.Do(func() {
						if !tc.inFlight {
							signal()
							return
						}
						// Called before this answer leaves, so the next
						// contacts write is the one held: it commits, then
						// waits until the client is gone.
						srv.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: contactsPath, AfterCommit: true, Delay: 10 * time.Minute, Committed: signal})
					})
				},
			})
			t.Cleanup(srv.Close)

			state := filepath.Join(t.TempDir(), "state.db")
			args := []string{"sync",
				"--oim-url", oim.URL(), "--oim-document", "Providers",
				"--rapidpro-url", srv.URL(), "--rapidpro-token", srv.Token(),
				"--state-file", state, "--country", "LR",
				"--rapidpro-rate", "0", "--log-level", "warn",
			}

			// The first sync, killed.
			cmd := exec.Command(bin, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-kill:
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				<-done
			case err := <-done:
				t.Fatalf("first sync ended (%v) before the kill point, after %d creates:\n%s", err, creates.Load(), out.String())
			}
			// Writes in flight beside the one that triggered the kill may
			// reach the server, and commit, after it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err = srv.WaitIdle(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			killedAt := len(contactsOf(srv))
			if tc.inFlight {
				// The held create is the one request the kill left without
				// an answer (status 0), and its contact exists.
				var unanswered []rapidprotest.Request
				for _, q := range srv.Requests() {
					if q.Status == 0 {
						unanswered = append(unanswered, q)
					}
				}
				if len(unanswered) != 1 || !isCreate(unanswered[0]) {
					t.Fatalf("the kill left %d requests unanswered, want only the held create: %+v", len(unanswered), unanswered)
				}
				var body struct {
					Fields map[string]string `json:"fields"`
				}
				if err := json.Unmarshal([]byte(unanswered[0].Body), &body); err != nil {
					t.Fatal(err)
				}
				if _, ok := contactsOf(srv)[body.Fields["globalid"]]; !ok {
					t.Fatalf("held create for %q did not commit", body.Fields["globalid"])
				}
			}
			t.Logf("killed after %d creates answered, %d contacts in RapidPro", creates.Load(), killedAt)

			// Restart until a run writes nothing.
			var runs int
			var summary map[string]int
			conflicts := 0 // providers a restart reported (a phone another worker holds)
			for runs = 1; ; runs++ {
				if runs > maxRuns {
					t.Fatalf("no run without a write after %d runs", maxRuns)
				}
				before := len(srv.Requests())
				cmd := exec.Command(bin, args...)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("run %d: %v\n%s%s", runs, err, stdout.String(), stderr.String())
				}
				summary = parseSummary(stdout.String())
				conflicts = max(conflicts, summary["failed"])
				writes := 0
				for _, q := range srv.Requests()[before:] {
					if q.Method != http.MethodGet {
						writes++
					}
				}
				t.Logf("run %d: %d writes; created %d, failed %d, urn_conflicts %d, pending %d", runs, writes,
					summary["created"], summary["failed"], summary["urn_conflicts"], summary["pending"])
				if writes == 0 {
					break
				}
			}

			contacts := srv.Contacts()
			byKey := contactsOf(srv)
			if len(byKey) != len(contacts) {
				t.Errorf("%d contacts but %d distinct globalids: a duplicate", len(contacts), len(byKey))
			}
			// A reported provider may still have been created with its other
			// phone, so the reports bound the count from below only.
			if len(contacts) > want || len(contacts)+conflicts < want {
				t.Errorf("%d contacts, want %d active providers with a phone, less at most the %d reported", len(contacts), want, conflicts)
			}
			for _, c := range contacts {
				if !slicesContainsGroup(c.Groups, "mHero") {
					t.Errorf("contact %s (%s) not in mHero", c.UUID, c.Name)
				}
			}
			t.Logf("converged: %d restarts, the last one writing nothing; %d contacts", runs, len(contacts))
		})
	}
}

// buildBinary builds this command once into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mhero-mediator")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// contactsOf indexes the workspace's contacts by globalid.
func contactsOf(srv *rapidprotest.Server) map[string]bool {
	out := map[string]bool{}
	for _, c := range srv.Contacts() {
		if v := c.Fields["globalid"]; v != nil {
			out[*v] = true
		}
	}
	return out
}

// parseSummary reads the "key: number" lines sync prints.
func parseSummary(out string) map[string]int {
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if n, err := strconv.Atoi(v); ok && err == nil {
			counts[k] = n
		}
	}
	return counts
}

func slicesContainsGroup(groups []rapidpro.GroupRef, name string) bool {
	for _, g := range groups {
		if g.Name == name {
			return true
		}
	}
	return false
}
