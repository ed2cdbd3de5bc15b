package openhim_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

const chosenLine = "openhim authentication scheme chosen"

// Auto auth against a token-only core (up to v7.0 as installed), a
// basic-only one (v7.1+ with token turned off) and one with both: it
// registers and beats with each, keeps the scheme it found, and logs it
// once.
func TestAutoAuthFindsTheScheme(t *testing.T) {
	for _, tc := range []struct {
		name       string
		authTypes  []string
		wantScheme string
		// wantRefused is the number of 401s core answers in all: one Basic
		// attempt before a token-only core is found out, none after.
		wantRefused int
	}{
		{"token-only core", []string{"token"}, openhim.SchemeToken, 1},
		{"basic-only core", []string{"basic"}, openhim.SchemeBasic, 0},
		{"core with both", nil, openhim.SchemeBasic, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := newCore(t, openhimtest.Options{AuthTypes: tc.authTypes})
			var logs bytes.Buffer
			auth := openhim.NewAutoAuth(core.URL(), rootEmail, rootPassword, core.Client())
			auth.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			if auth.Scheme() != "" {
				t.Fatalf("Scheme() = %q before any call", auth.Scheme())
			}
			client := newClient(core, auth)
			ctx := context.Background()
			if err := client.Register(ctx, mheroMediator()); err != nil {
				t.Fatalf("Register: %v", err)
			}
			for i := range 3 {
				if _, err := client.Heartbeat(ctx, testURN, time.Duration(i)*time.Second, i == 0); err != nil {
					t.Fatalf("Heartbeat %d: %v", i, err)
				}
			}
			if got := auth.Scheme(); got != tc.wantScheme {
				t.Errorf("Scheme() = %q, want %q", got, tc.wantScheme)
			}
			if n := strings.Count(logs.String(), chosenLine); n != 1 || !strings.Contains(logs.String(), "scheme="+tc.wantScheme) || !strings.Contains(logs.String(), "user="+rootEmail) {
				t.Errorf("want the scheme %s and the user logged once, got %d lines:\n%s", tc.wantScheme, n, logs.String())
			}
			refused := 0
			for _, r := range core.Requests() {
				if r.Status == http.StatusUnauthorized {
					refused++
				}
				if r.Status < 300 && r.Path != "/authenticate/"+rootEmail && r.AuthScheme != tc.wantScheme {
					t.Errorf("%s %s accepted with %q auth, want %q", r.Method, r.Path, r.AuthScheme, tc.wantScheme)
				}
			}
			if refused != tc.wantRefused {
				t.Errorf("core refused %d calls, want %d", refused, tc.wantRefused)
			}
			if strings.Contains(logs.String(), rootPassword) {
				t.Errorf("log reveals the password:\n%s", logs.String())
			}
		})
	}
}

// Every refusal says what to check, names the user and the schemes tried,
// and never the password.
func TestRefusalErrors(t *testing.T) {
	const (
		nonAdmin = "viewer@moh.example"
		wrong    = "wrong-secret-pw"
	)
	users := map[string]string{rootEmail: rootPassword, nonAdmin: rootPassword}
	auto := func(user, password string) func(string, *http.Client) openhim.Authenticator {
		return func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewAutoAuth(u, user, password, hc)
		}
	}
	for _, tc := range []struct {
		name       string
		authTypes  []string
		auth       func(baseURL string, hc *http.Client) openhim.Authenticator
		wantStatus int
		want       []string
	}{
		{"auto, wrong password, token-only core", []string{"token"}, auto(rootEmail, wrong),
			http.StatusUnauthorized, []string{`user "root@openhim.org"`, "both basic and token auth", "check the username and password"}},
		{"auto, wrong password, basic-only core", []string{"basic"}, auto(rootEmail, wrong),
			http.StatusUnauthorized, []string{`user "root@openhim.org"`, "both basic and token auth"}},
		{"auto, unknown user", nil, auto("nobody@example.org", wrong),
			http.StatusUnauthorized, []string{`user "nobody@example.org" with basic auth`, "no token login", "404"}},
		{"basic on a token-only core", []string{"token"}, func(string, *http.Client) openhim.Authenticator {
			return openhim.NewBasicAuth(rootEmail, rootPassword)
		}, http.StatusUnauthorized, []string{`user "root@openhim.org" with basic auth`, "--openhim-auth auto"}},
		{"token, wrong password", nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewTokenAuth(u, rootEmail, wrong, hc)
		}, http.StatusUnauthorized, []string{`user "root@openhim.org" with token auth`, "check the username and password"}},
		{"basic, user not in group admin", nil, func(string, *http.Client) openhim.Authenticator {
			return openhim.NewBasicAuth(nonAdmin, rootPassword)
		}, http.StatusForbidden, []string{"is not an admin, API access to addMediator denied", `accepted user "viewer@moh.example"`, "group admin"}},
		{"auto, user not in group admin, token-only core", []string{"token"}, auto(nonAdmin, rootPassword),
			http.StatusForbidden, []string{`accepted user "viewer@moh.example"`, "mediator-manage-all"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := newCore(t, openhimtest.Options{Users: users, NonAdmins: []string{nonAdmin}, AuthTypes: tc.authTypes})
			err := newClient(core, tc.auth(core.URL(), core.Client())).Register(context.Background(), mheroMediator())
			var se *openhim.StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.wantStatus || !openhim.IsRefused(err) {
				t.Fatalf("Register = %v, want a refusal with status %d", err, tc.wantStatus)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			for _, secret := range []string{wrong, rootPassword, base64.StdEncoding.EncodeToString([]byte(rootEmail + ":" + wrong))} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}
	if openhim.IsRefused(&openhim.StatusError{StatusCode: http.StatusBadRequest}) || openhim.IsRefused(errors.New("x")) {
		t.Error("IsRefused takes a 400 or a plain error for a refusal")
	}
}

// A token whose auth-ts is outside core's ±10 s window, by core's clock, is
// told apart from a wrong password. The service sends core's own time back,
// so only something between them can cause it: here a cache in front of
// core that serves an hour-old GET /authenticate.
func TestTokenClockSkewHasItsOwnMessage(t *testing.T) {
	core := newCore(t, openhimtest.Options{AuthTypes: []string{"token"}})
	target, err := url.Parse(core.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, "/authenticate/") {
			return nil
		}
		var reply map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
			return err
		}
		resp.Body.Close()
		ts, err := time.Parse(time.RFC3339Nano, reply["ts"])
		if err != nil {
			return err
		}
		reply["ts"] = ts.Add(-time.Hour).Format("2006-01-02T15:04:05.000Z")
		raw, _ := json.Marshal(reply)
		resp.Body = io.NopCloser(bytes.NewReader(raw))
		resp.ContentLength = int64(len(raw))
		resp.Header.Del("Content-Length")
		return nil
	}
	cache := httptest.NewServer(proxy)
	t.Cleanup(cache.Close)

	for _, tc := range []struct {
		name string
		auth openhim.Authenticator
		want []string
	}{
		{"token", openhim.NewTokenAuth(cache.URL, rootEmail, rootPassword, nil),
			[]string{`user "root@openhim.org" with token auth because clock skew`, "1h0m0s behind core's clock", "±10s token window"}},
		{"auto", openhim.NewAutoAuth(cache.URL, rootEmail, rootPassword, nil),
			[]string{`user "root@openhim.org" with basic auth, and with token auth because clock skew`, "1h0m0s behind"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := openhim.NewClient(openhim.Config{BaseURL: cache.URL, Auth: tc.auth})
			err := client.Register(context.Background(), mheroMediator())
			if !openhim.IsRefused(err) {
				t.Fatalf("Register = %v, want a 401", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "check the username and password") {
				t.Errorf("error %q blames the password for a clock skew", err)
			}
		})
	}
}

// scriptedAuth is Basic auth whose password is right or wrong call by call,
// as a script says; right once the script is used up.
type scriptedAuth struct {
	mu           sync.Mutex
	script       []bool // true: wrong password
	right, wrong openhim.Authenticator
}

func (a *scriptedAuth) Authenticate(ctx context.Context, req *http.Request) error {
	a.mu.Lock()
	wrong := len(a.script) > 0 && a.script[0]
	if len(a.script) > 0 {
		a.script = a.script[1:]
	}
	a.mu.Unlock()
	if wrong {
		return a.wrong.Authenticate(ctx, req)
	}
	return a.right.Authenticate(ctx, req)
}

// A refused registration or heartbeat waits AuthBackoff, counted per run of
// refusals, never the short Backoff meant for a core that is down.
func TestHeartbeaterBacksOffWhenRefused(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	const refused, accepted = true, false
	auth := &scriptedAuth{
		right: openhim.NewBasicAuth(rootEmail, rootPassword), wrong: openhim.NewBasicAuth(rootEmail, "wrong-secret-pw"),
		script: []bool{
			refused, refused, accepted, // registration
			accepted, refused, refused, accepted, refused, accepted, // beats 0–5
		},
	}
	var (
		mu                sync.Mutex
		authWaits, shorts []int
	)
	record := func(into *[]int) func(int) time.Duration {
		return func(attempt int) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			*into = append(*into, attempt)
			return 0
		}
	}
	th := startHeartbeater(t, &openhim.Heartbeater{
		Client: newClient(core, auth), Mediator: mheroMediator(),
		Backoff: record(&shorts), AuthBackoff: record(&authWaits),
	})
	<-th.registered
	for range 6 {
		th.beat() // the last one returns once beat 5 is handled
	}

	mu.Lock()
	defer mu.Unlock()
	// Registration: 1, 2; beats 1 and 2 refused in a row: 1, 2; beat 4
	// after the accepted beat 3: 1 again.
	if want := []int{1, 2, 1, 2, 1}; !slices.Equal(authWaits, want) {
		t.Errorf("AuthBackoff attempts %v, want %v", authWaits, want)
	}
	if len(shorts) != 0 {
		t.Errorf("Backoff used for refusals: attempts %v", shorts)
	}
	if n := len(th.errs); n != 5 {
		t.Errorf("OnError called %d times, want 5", n)
	}
}

func TestDefaultAuthBackoffIsMinutes(t *testing.T) {
	for _, tc := range []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 30 * time.Second, time.Minute},
		{2, time.Minute, 2 * time.Minute},
		{5, 7*time.Minute + 30*time.Second, 15 * time.Minute},
		{1000, 7*time.Minute + 30*time.Second, 15 * time.Minute},
	} {
		if d := openhim.DefaultAuthBackoff(tc.attempt); d < tc.min || d > tc.max {
			t.Errorf("attempt %d: %v outside [%v, %v]", tc.attempt, d, tc.min, tc.max)
		}
	}
}
