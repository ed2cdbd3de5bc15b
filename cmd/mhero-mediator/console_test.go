package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// holdRegistration holds every registration (POST /mediators) until
// released, so a test can poll a service that has not registered yet.
type holdRegistration struct {
	next    http.RoundTripper
	release chan struct{}
}

func (h *holdRegistration) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.URL.Path == "/mediators" {
		select {
		case <-h.release:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return h.next.RoundTrip(req)
}

// stack is a fake OpenHIM core, OpenInfoMan (the demo fixture) and RapidPro
// for a service under test, and the flags that point serve at them.
type stack struct {
	core      *openhimtest.Core
	registry  *csdtest.Server
	workspace *rapidprotest.Server
	port      int
	args      []string
}

func newStack(t *testing.T, core openhimtest.Options, oim csdtest.Options, rp rapidprotest.Options, extra ...string) *stack {
	t.Helper()
	st := &stack{core: openhimtest.New(core)}
	t.Cleanup(st.core.Close)
	doc, err := os.ReadFile(demoFixture)
	if err != nil {
		t.Fatal(err)
	}
	if st.registry, err = csdtest.New(doc, oim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.registry.Close)
	rp.Country = "LR"
	st.workspace = rapidprotest.New(rp)
	t.Cleanup(st.workspace.Close)
	if st.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	st.args = append([]string{
		"--oim-url", st.registry.URL(), "--rapidpro-url", st.workspace.URL(), "--rapidpro-token", st.workspace.Token(),
		"--state-file", filepath.Join(t.TempDir(), "state.db"), "--bind", "127.0.0.1", "--port", strconv.Itoa(st.port), "--public-host", "127.0.0.1",
		"--openhim-url", st.core.URL(),
	}, extra...)
	return st
}

// serve starts the service in process; its heartbeats go by tick. hold,
// when set, holds its registrations. stop ends it and closes its state.
func (st *stack) serve(t *testing.T, logs io.Writer, hold *holdRegistration) (svc *service, tick chan time.Time, stop func()) {
	t.Helper()
	svc, err := commandService("serve", st.args, logs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hold != nil {
		hc := *svc.httpClients["openhim"]
		hold.next = hc.Transport
		hc.Transport = hold
		svc.httpClients["openhim"] = &hc
	}
	tick = make(chan time.Time)
	svc.heartbeatTick = tick
	ctx, cancel := context.WithCancel(context.Background())
	served, listening := make(chan error, 1), make(chan struct{})
	go func() { served <- svc.serve(ctx, func(string) { close(listening) }) }()
	<-listening
	return svc, tick, func() {
		cancel()
		if err := <-served; err != nil {
			t.Fatalf("serve: %v", err)
		}
		svc.close()
	}
}

// After a restart, a poll that comes before the service has registered is
// answered 503 and runs nothing; the first run after it uses the console's
// config, which the state kept across the restart.
func TestRestartKeepsTheConsoleConfig(t *testing.T) {
	st := newStack(t, openhimtest.Options{}, csdtest.Options{}, rapidprotest.Options{},
		"--rapidpro-rate", "0", "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password")
	core, workspace := st.core, st.workspace
	first, tick, stop := st.serve(t, io.Discard, nil)
	tick <- time.Now() // registered, and the first beat has fetched the config
	cfg := first.syncer.Settings().ConsoleConfig()
	cfg["rapidpro"].(map[string]any)["group"] = "mHero Console"
	if err := core.SetConfig(first.cfg.mediatorURN, cfg); err != nil {
		t.Fatal(err)
	}
	tick <- time.Now()
	tick <- time.Now() // the beat after the first tick has delivered the config
	if g := first.syncer.Settings().RapidPro.Group; g != "mHero Console" {
		t.Fatalf("group %q after the console change", g)
	}
	stop()

	hold := &holdRegistration{release: make(chan struct{})}
	second, tick, stop := st.serve(t, io.Discard, hold)
	defer stop()
	if g := second.syncer.Settings().RapidPro.Group; g != "mHero Console" {
		t.Fatalf("after the restart the group is %q, want the console's from the state", g)
	}
	early, _ := core.Poll(context.Background(), second.cfg.mediatorURN)
	if early.HTTPStatus != http.StatusServiceUnavailable || !strings.Contains(early.RawBody, "not yet registered with OpenHIM") || len(workspace.Requests()) != 0 {
		t.Fatalf("a poll before registration: %d %q; %d RapidPro requests", early.HTTPStatus, early.RawBody, len(workspace.Requests()))
	}
	close(hold.release)
	tick <- time.Now() // registered, and the first beat has applied the config
	tx, err := core.Poll(context.Background(), second.cfg.mediatorURN)
	if err != nil {
		t.Fatal(err)
	}
	if got := groupsOf(workspace); !slices.Equal(got, []string{"mHero Console"}) {
		t.Fatalf("the first run after registration put contacts in groups %v: %s", got, tx.RawBody)
	}
}

func groupsOf(w *rapidprotest.Server) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range w.Contacts() {
		for _, g := range c.Groups {
			if !seen[g.Name] {
				seen[g.Name] = true
				out = append(out, g.Name)
			}
		}
	}
	return out
}

// A run answered Processing and cut by a shutdown has its transaction
// completed before the service exits, not left Processing until a restart.
func TestShutdownCompletesACutTransaction(t *testing.T) {
	st := newStack(t, openhimtest.Options{}, csdtest.Options{}, rapidprotest.Options{},
		"--rapidpro-rate", "3600", "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
		"--answer-budget", "300ms", "--shutdown-grace", "200ms")
	var stderr bytes.Buffer
	svc, tick, stop := st.serve(t, &stderr, nil)
	core := st.core
	tick <- time.Now() // registered and configured
	// At 3,600 requests an hour the 16 creates take 16 s: the run outlasts
	// the answer budget, and the shutdown's grace.
	tx, err := core.Poll(context.Background(), svc.cfg.mediatorURN)
	if err != nil || tx.Response.Status != openhim.StatusProcessing {
		t.Fatalf("answered %v %s", err, tx.RawBody)
	}
	stop()
	for _, x := range core.Transactions() {
		if x.ID == tx.ID && x.Status == openhim.StatusProcessing {
			t.Fatalf("after the shutdown the transaction is still Processing\n%s", stderr.String())
		}
	}
}
