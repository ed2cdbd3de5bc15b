package main

import (
	"bytes"
	"context"
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

// After a restart, a poll that comes before the service has registered is
// answered 503 and runs nothing; the first run after it uses the console's
// config, which the state kept across the restart.
func TestRestartKeepsTheConsoleConfig(t *testing.T) {
	core := openhimtest.New(openhimtest.Options{})
	defer core.Close()
	doc, err := os.ReadFile(demoFixture)
	if err != nil {
		t.Fatal(err)
	}
	registry, err := csdtest.New(doc, csdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer registry.Close()
	workspace := rapidprotest.New(rapidprotest.Options{Country: "LR"})
	defer workspace.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--oim-url", registry.URL(), "--rapidpro-url", workspace.URL(), "--rapidpro-token", workspace.Token(), "--rapidpro-rate", "0",
		"--state-file", filepath.Join(t.TempDir(), "state.db"), "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "127.0.0.1",
		"--openhim-url", core.URL(), "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
	}
	start := func(hold *holdRegistration) (*service, chan time.Time, func()) {
		t.Helper()
		var stderr bytes.Buffer
		svc, err := commandService("serve", args, &stderr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hold != nil {
			hc := *svc.httpClients["openhim"]
			hold.next = hc.Transport
			hc.Transport = hold
			svc.httpClients["openhim"] = &hc
		}
		tick := make(chan time.Time)
		svc.heartbeatTick = tick
		ctx, cancel := context.WithCancel(context.Background())
		served, listening := make(chan error, 1), make(chan struct{})
		go func() { served <- svc.serve(ctx, func(string) { close(listening) }) }()
		<-listening
		return svc, tick, func() {
			cancel()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			svc.close()
		}
	}

	first, tick, stop := start(nil)
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
	second, tick, stop := start(hold)
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
	core := openhimtest.New(openhimtest.Options{})
	defer core.Close()
	doc, err := os.ReadFile(demoFixture)
	if err != nil {
		t.Fatal(err)
	}
	registry, err := csdtest.New(doc, csdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer registry.Close()
	workspace := rapidprotest.New(rapidprotest.Options{Country: "LR"})
	defer workspace.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	svc, err := commandService("serve", []string{
		"--oim-url", registry.URL(), "--rapidpro-url", workspace.URL(), "--rapidpro-token", workspace.Token(), "--rapidpro-rate", "3600",
		"--state-file", filepath.Join(t.TempDir(), "state.db"), "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "127.0.0.1",
		"--openhim-url", core.URL(), "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
		"--answer-budget", "300ms", "--shutdown-grace", "200ms",
	}, &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close()
	tick := make(chan time.Time)
	svc.heartbeatTick = tick
	ctx, cancel := context.WithCancel(context.Background())
	served, listening := make(chan error, 1), make(chan struct{})
	go func() { served <- svc.serve(ctx, func(string) { close(listening) }) }()
	<-listening
	tick <- time.Now() // registered and configured
	// At 3,600 requests an hour the 16 creates take 16 s: the run outlasts
	// the answer budget, and the shutdown's grace.
	tx, err := core.Poll(context.Background(), svc.cfg.mediatorURN)
	if err != nil || tx.Response.Status != openhim.StatusProcessing {
		t.Fatalf("answered %v %s", err, tx.RawBody)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	for _, x := range core.Transactions() {
		if x.ID == tx.ID && x.Status == openhim.StatusProcessing {
			t.Fatalf("after the shutdown the transaction is still Processing\n%s", stderr.String())
		}
	}
}
