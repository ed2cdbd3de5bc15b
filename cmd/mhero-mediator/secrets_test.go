package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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
	st := newStack(t, openhimtest.Options{Users: map[string]string{"mhero@moh.example": corePass}},
		csdtest.Options{Username: "oim", Password: oimPass}, rapidprotest.Options{Token: rpToken},
		"--oim-username", "oim", "--oim-password", oimPass, "--rapidpro-rate", "0",
		"--openhim-username", "mhero@moh.example", "--openhim-password", corePass,
		"--sync-username", "openhim", "--sync-password", syncPass, "--log-level", "debug")
	core, port := st.core, st.port
	var logs bytes.Buffer
	svc, tick, stop := st.serve(t, &logs, nil)
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
	stop()
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
