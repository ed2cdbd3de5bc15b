package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// Secrets stay where the operator put them: after registering and a sync,
// no configured secret is in the logs, core's transactions (orchestrations
// included), /status, /metrics or what core was sent at registration —
// except the sync password in the route core must call /sync with.
func TestSecretsStayHome(t *testing.T) {
	const (
		rpToken  = "rp-secret-t0ken-0123456789abcdef0123456"
		oimPass  = "oim-secret-pa55"
		corePass = "core-secret-pa55"
		syncPass = "sync-secret-pa55"
	)
	core := openhimtest.New(openhimtest.Options{Users: map[string]string{"mhero@moh.example": corePass}})
	defer core.Close()
	doc, err := os.ReadFile(demoFixture)
	if err != nil {
		t.Fatal(err)
	}
	registry, err := csdtest.New(doc, csdtest.Options{Username: "oim", Password: oimPass})
	if err != nil {
		t.Fatal(err)
	}
	defer registry.Close()
	workspace := rapidprotest.New(rapidprotest.Options{Token: rpToken, Country: "LR"})
	defer workspace.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	svc, err := commandService("serve", []string{
		"--oim-url", registry.URL(), "--oim-username", "oim", "--oim-password", oimPass,
		"--rapidpro-url", workspace.URL(), "--rapidpro-token", rpToken, "--rapidpro-rate", "0",
		"--state-file", filepath.Join(t.TempDir(), "state.db"), "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "127.0.0.1",
		"--openhim-url", core.URL(), "--openhim-username", "mhero@moh.example", "--openhim-password", corePass,
		"--sync-username", "openhim", "--sync-password", syncPass, "--log-level", "debug",
	}, &logs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close()
	tick := make(chan time.Time)
	svc.heartbeatTick = tick
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- svc.serve(ctx, nil) }()
	tick <- time.Now() // registered, and the first beat has applied the config
	tx, err := core.Poll(context.Background(), svc.cfg.mediatorURN)
	if err != nil || tx.Response.Properties["created"] == "" {
		t.Fatalf("the sync: %v %s", err, tx.RawBody)
	}
	get := func(path string) string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	places := map[string]string{"/status": get("/status"), "/metrics": get("/metrics")}
	for i, t := range core.Transactions() {
		places[fmt.Sprintf("transaction %d", i)] = t.RawBody
	}
	for _, r := range core.Requests() {
		places["core request "+r.Method+" "+r.Path] += r.Body
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	places["logs"] = logs.String()
	for where, text := range places {
		for _, secret := range []string{rpToken, oimPass, corePass, syncPass} {
			if secret == syncPass && strings.HasPrefix(where, "core request POST /mediators") {
				continue // the route core calls /sync with needs it
			}
			if strings.Contains(text, secret) {
				t.Errorf("%s carries a secret (%.6s…)", where, secret)
			}
		}
	}
}
