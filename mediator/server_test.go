package mediator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestSyncRefusesOtherCallers(t *testing.T) {
	e := newEnv(t, envOptions{})
	for i, tc := range []struct{ user, pass string }{{"", ""}, {testSyncUser, "wrong"}, {"someone", testSyncPass}} {
		// A channel installed from a registration with other credentials.
		urn := fmt.Sprintf("%s-other-%d", testURN, i)
		e.register(urn, tc.user, tc.pass)
		tx, err := e.core.Poll(context.Background(), urn)
		if err != nil {
			t.Fatal(err)
		}
		if tx.HTTPStatus != http.StatusUnauthorized {
			t.Errorf("user %q: status %d, want 401", tc.user, tx.HTTPStatus)
		}
	}
	if n := len(e.workspace.Requests()); n != 0 {
		t.Fatalf("refused triggers reached RapidPro %d times", n)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	if code, _ := get(t, e.server.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	e.srv.SetReady(false) // as serve starts, before registering with OpenHIM
	if code, _ := get(t, e.server.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before registration %d, want 503", code)
	}
	// A poll that comes first is refused with the reason, and runs nothing.
	req, _ := http.NewRequest(http.MethodGet, e.server.URL+"/sync", nil)
	req.SetBasicAuth(testSyncUser, testSyncPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "not yet registered with OpenHIM") || len(e.workspace.Requests()) != 0 {
		t.Errorf("/sync before registration: %s %s", resp.Status, body)
	}
	e.srv.SetReady(true)
	if code, _ := get(t, e.server.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after registration %d", code)
	}

	e.trigger()
	_, metrics := get(t, e.server.URL+"/metrics")
	for _, want := range []string{
		`mhero_sync_runs_total{result="completed_with_errors"} 1`,
		`mhero_sync_runs_total{result="failed"} 0`, // pre-initialised
		`mhero_sync_outstanding_providers{kind="rejected"} 2`,
		`mhero_sync_providers_total{outcome="deferred"} 0`,
		`mhero_sync_urn_conflicts_total 1`,
		`mhero_upstream_request_duration_seconds_count{system="rapidpro"}`,
		`mhero_upstream_transport_errors_total{class="refused",system="openinfoman"} 0`,
		`mhero_rapidpro_throttle_wait_seconds_total{scope="v2_contacts"} 0`,
		`mhero_rapidpro_retry_after_seconds_count{scope="v2"} 0`,
		`mhero_sync_contacts_written_total{action="created"} 16`,
		`mhero_sync_contacts_written_total{action="updated"} 0`,
		`mhero_sync_providers_skipped_total{reason="no_phone"} 1`,
		`mhero_sync_providers_failed_total{reason="duplicate_globalid"} 2`,
		`mhero_sync_duration_seconds_count 1`,
		`mhero_sync_in_progress 0`,
		`mhero_sync_last_success_timestamp_seconds 1.7357112e+09`,
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestShutdownLetsARunFinish(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}})
	done := make(chan openhimtest.Transaction)
	go func() { done <- e.trigger() }()
	<-gate.entered

	shutdown := make(chan error)
	go func() { shutdown <- e.srv.Shutdown(context.Background()) }()
	close(gate.release)
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
	tx := <-done
	if tx.Response.Status != openhim.StatusCompletedWithErrors || tx.Response.Properties["created"] != "16" {
		t.Fatalf("run cut short by a graceful shutdown: %s", tx.RawBody)
	}
}

func TestShutdownStopsARunCleanly(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}})
	done := make(chan openhimtest.Transaction)
	go func() { done <- e.trigger() }()
	<-gate.entered

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tx := <-done
	if tx.Response.Status != openhim.StatusFailed || !strings.Contains(tx.Response.Properties["error"], "context canceled") {
		t.Fatalf("stopped run reported %s", tx.RawBody)
	}
	if wm, _ := e.state.Watermark(); !wm.IsZero() {
		t.Fatal("a stopped run advanced the watermark")
	}
}

// GET /status shows the run going on, then the runs done and where the
// state stands, and never a secret.
func TestStatusShowsRunsAndState(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}})
	done := make(chan openhimtest.Transaction)
	go func() { done <- e.trigger() }()
	<-gate.entered // the run's first RapidPro request is held

	status := func() (Status, string) {
		t.Helper()
		code, body := get(t, e.server.URL+"/status")
		if code != http.StatusOK {
			t.Fatalf("/status %d: %s", code, body)
		}
		for _, secret := range []string{testToken, testOIMPass, testSyncPass} {
			if strings.Contains(body, secret) {
				t.Fatalf("/status carries a secret: %s", body)
			}
		}
		var st Status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		return st, body
	}
	during, body := status()
	if during.Current == nil || during.Current.Phase != "RapidPro setup" || len(during.Runs) != 0 {
		t.Fatalf("during the run: %s", body)
	}
	close(gate.release)
	<-done
	after, body := status()
	if after.Current != nil || len(after.Runs) != 1 || after.Runs[0].Counts["created"] != "16" || after.State.Watermark.IsZero() ||
		after.State.Rejected != 2 || after.State.Providers == 0 || after.State.TargetFingerprint == "" {
		t.Fatalf("after the run: %s", body)
	}
}

// The server refuses oversized bodies, and with SeparateOps serves /metrics
// and /status only on its own listener.
func TestServerLimitsAndSeparateOps(t *testing.T) {
	e := newEnv(t, envOptions{})
	req, _ := http.NewRequest(http.MethodPost, e.server.URL+"/sync", strings.NewReader(strings.Repeat("x", 1<<20)))
	req.SetBasicAuth(testSyncUser, testSyncPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || len(e.workspace.Requests()) != 0 {
		t.Fatalf("a 1 MiB trigger: %s", resp.Status)
	}

	split := NewServer(ServerOptions{Syncer: e.syncer, Metrics: e.metrics, SeparateOps: true})
	main, ops := httptest.NewServer(split.Echo), httptest.NewServer(split.Ops)
	defer main.Close()
	defer ops.Close()
	for _, path := range []string{"/metrics", "/status"} {
		if code, _ := get(t, main.URL+path); code != http.StatusNotFound {
			t.Errorf("%s on the main listener: %d", path, code)
		}
		if code, _ := get(t, ops.URL+path); code != http.StatusOK {
			t.Errorf("%s on the ops listener: %d", path, code)
		}
	}
	if split.Echo.Server.ReadHeaderTimeout == 0 || split.Ops.Server.ReadHeaderTimeout == 0 {
		t.Fatal("no ReadHeaderTimeout")
	}
}

// A shutdown whose grace is shorter than the run cuts the run, which
// leaves its work pending, and ends without an error: the service exits 0.
func TestShutdownCutsALongRunWithoutError(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Echo.Server.Serve(ln) }()
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/sync", nil)
		req.SetBasicAuth(testSyncUser, testSyncPass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-gate.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("a shutdown that cut a run: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
	<-answered
	if wm, _ := e.state.Watermark(); !wm.IsZero() {
		t.Fatal("a cut run advanced the watermark")
	}
	// A deploy is not a failing run: the run counts as cut.
	if cut, failed := testutil.ToFloat64(e.metrics.runs.WithLabelValues("cut")), testutil.ToFloat64(e.metrics.runs.WithLabelValues("failed")); cut != 1 || failed != 0 {
		t.Fatalf("runs cut %v, failed %v", cut, failed)
	}
}
