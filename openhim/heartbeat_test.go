package openhim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

func TestHeartbeatConfigDelivery(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	ctx := context.Background()
	m := mheroMediator()
	if err := client.Register(ctx, m); err != nil {
		t.Fatal(err)
	}
	changed := jsonRoundTrip(t, m.Config)
	changed["inactivePolicy"] = "block"

	for i, step := range []struct {
		name       string
		before     func() error
		wantConfig bool
		want       map[string]any // nil = no change
	}{
		{"first beat asks for config", nil, true, jsonRoundTrip(t, m.Config)},
		{"next beat: nothing changed", nil, false, nil},
		{"console change is pushed", func() error { return core.SetConfig(testURN, changed) }, false, changed},
		{"and pushed only once", nil, false, nil},
		{"asking again returns it", nil, true, changed},
	} {
		if step.before != nil {
			if err := step.before(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		}
		raw, err := client.Heartbeat(ctx, testURN, time.Duration(i)*time.Second, step.wantConfig)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var got map[string]any
		if raw != nil {
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		}
		if !equalJSON(got, step.want) {
			t.Errorf("%s: config = %v, want %v", step.name, got, step.want)
		}
	}
	if n := core.Heartbeats(testURN); n != 5 {
		t.Errorf("core counted %d heartbeats, want 5", n)
	}
}

func equalJSON(a, b map[string]any) bool {
	ra, _ := json.Marshal(a)
	rb, _ := json.Marshal(b)
	return bytes.Equal(ra, rb)
}

func TestHeartbeatWithoutStoredConfig(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	ctx := context.Background()
	m := mheroMediator()
	m.Config = nil
	if err := client.Register(ctx, m); err != nil {
		t.Fatal(err)
	}
	cfg, err := client.Heartbeat(ctx, testURN, time.Second, true)
	if err != nil || cfg != nil {
		t.Errorf("Heartbeat = %s, %v; want nil, nil for core's OK", cfg, err)
	}
	var last openhimtest.APIRequest
	for _, r := range core.Requests() {
		last = r
	}
	if last.Reply != "OK" {
		t.Errorf("core replied %q, want OK", last.Reply)
	}
}

func TestHeartbeatErrors(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	if _, err := client.Heartbeat(context.Background(), "urn:mediator:unknown", time.Second, false); !errors.Is(err, openhim.ErrUnknownMediator) {
		t.Errorf("unknown urn: %v, want ErrUnknownMediator", err)
	}
	if err := client.Register(context.Background(), mheroMediator()); err != nil {
		t.Fatal(err)
	}
	if status, _ := rawCall(t, core, http.MethodPost, "/mediators/"+url.PathEscape(testURN)+"/heartbeat", "application/json", []byte(`{"config":true}`)); status != http.StatusBadRequest {
		t.Errorf("heartbeat without uptime: %d, want 400", status)
	}
}

// tickingHeartbeater runs a Heartbeater with an unbuffered tick channel: a
// send on it returns once the previous beat is fully handled.
type tickingHeartbeater struct {
	tick       chan time.Time
	registered chan struct{}
	configs    chan json.RawMessage
	errs       chan error
	done       chan error
	cancel     context.CancelFunc
}

func startHeartbeater(t *testing.T, h *openhim.Heartbeater) *tickingHeartbeater {
	t.Helper()
	th := &tickingHeartbeater{
		tick:       make(chan time.Time),
		registered: make(chan struct{}, 100),
		configs:    make(chan json.RawMessage, 100),
		errs:       make(chan error, 100),
		done:       make(chan error, 1),
	}
	h.Tick = th.tick
	h.OnRegistered = func() { th.registered <- struct{}{} }
	h.OnConfig = func(cfg json.RawMessage) { th.configs <- cfg }
	h.OnError = func(err error) { th.errs <- err }
	if h.Logger == nil {
		h.Logger = slog.New(slog.DiscardHandler)
	}
	if h.Backoff == nil {
		h.Backoff = func(int) time.Duration { return 0 }
	}
	ctx, cancel := context.WithCancel(context.Background())
	th.cancel = cancel
	go func() { th.done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-th.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return th
}

// beat lets the previous beat finish and starts the next one.
func (th *tickingHeartbeater) beat() { th.tick <- time.Now() }

func TestHeartbeaterAsksForConfigPeriodically(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	th := startHeartbeater(t, &openhim.Heartbeater{
		Client: newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword)), Mediator: mheroMediator(), ConfigEvery: 3,
	})
	<-th.registered
	for range 5 {
		th.beat()
	}
	// Beats 1–5 are done; the 6th, without config, may still be running.

	var asked []bool
	for _, r := range core.Requests() {
		if strings.HasSuffix(r.Path, "/heartbeat") {
			var body struct{ Config bool }
			if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
				t.Fatal(err)
			}
			asked = append(asked, body.Config)
		}
	}
	want := []bool{true, false, false, true, false}
	if len(asked) < len(want) || !slices.Equal(asked[:len(want)], want) {
		t.Errorf("config asked on beats %v, want %v", asked, want)
	}
	if n := len(th.configs); n != 2 {
		t.Errorf("OnConfig called %d times, want 2", n)
	}
}

func TestHeartbeaterReRegistersWhenDeleted(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	th := startHeartbeater(t, &openhim.Heartbeater{
		Client: newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword)), Mediator: mheroMediator(),
	})
	<-th.registered
	th.beat()
	<-th.configs

	core.DeleteMediator(testURN)
	th.beat() // gets 404 and registers again
	<-th.registered
	if err := <-th.errs; !errors.Is(err, openhim.ErrUnknownMediator) {
		t.Errorf("OnError got %v, want ErrUnknownMediator", err)
	}
	th.beat() // asks for the config again
	th.beat()
	if cfg := <-th.configs; cfg == nil {
		t.Error("no config after re-registration")
	}
	if n := core.Registrations(testURN); n != 1 {
		t.Errorf("core counts %d registrations since the delete, want 1", n)
	}
}

func TestHeartbeaterRetriesUntilCoreIsUp(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	target, err := url.Parse(core.URL())
	if err != nil {
		t.Fatal(err)
	}
	// A load balancer in front of a core that is still starting.
	const failures = 4
	var calls atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= failures {
			http.Error(w, "core starting", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	var attempts []int
	client := openhim.NewClient(openhim.Config{BaseURL: front.URL, Auth: openhim.NewBasicAuth(rootEmail, rootPassword)})
	th := startHeartbeater(t, &openhim.Heartbeater{
		Client: client, Mediator: mheroMediator(),
		Backoff: func(attempt int) time.Duration { attempts = append(attempts, attempt); return 0 },
	})
	<-th.registered
	th.beat()
	if len(th.errs) != failures || !slices.Equal(attempts, []int{1, 2, 3, 4}) {
		t.Errorf("%d errors, backoff attempts %v; want %d and 1..4", len(th.errs), attempts, failures)
	}
	if n := core.Heartbeats(testURN); n != 1 {
		t.Errorf("core counted %d heartbeats, want 1", n)
	}
}

func TestHeartbeaterLogsNoSecrets(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failures := 0
	h := &openhim.Heartbeater{
		Client:   newClient(core, openhim.NewBasicAuth(rootEmail, "wrong-secret-pw")),
		Mediator: mheroMediator(),
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		Backoff:  func(int) time.Duration { return 0 },
		// A 401 waits AuthBackoff, not Backoff.
		AuthBackoff: func(int) time.Duration { return 0 },
		OnError: func(error) {
			if failures++; failures == 3 {
				cancel()
			}
		},
	}
	if err := h.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if !strings.Contains(logs.String(), "401") {
		t.Errorf("log does not show the 401:\n%s", logs.String())
	}
	for _, secret := range []string{"wrong-secret-pw", "change-me", "oim-secret", "rp-secret-token"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log reveals %q:\n%s", secret, logs.String())
		}
	}
}

func TestHeartbeaterRejectsInvalidRegistration(t *testing.T) {
	m := mheroMediator()
	m.Version = "one"
	h := &openhim.Heartbeater{Client: openhim.NewClient(openhim.Config{BaseURL: "http://127.0.0.1:1"}), Mediator: m}
	if err := h.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "SemVer") {
		t.Errorf("Run = %v, want the validation error", err)
	}
}

func TestExponentialBackoff(t *testing.T) {
	backoff := openhim.ExponentialBackoff(time.Second, time.Minute)
	for _, tc := range []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{4, 4 * time.Second, 8 * time.Second},
		{7, 30 * time.Second, time.Minute},
		{1000, 30 * time.Second, time.Minute},
	} {
		if d := backoff(tc.attempt); d < tc.min || d > tc.max {
			t.Errorf("attempt %d: %v outside [%v, %v]", tc.attempt, d, tc.min, tc.max)
		}
	}
}
