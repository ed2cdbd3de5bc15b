package openhimtest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

const urn = "urn:mediator:test"

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func call(t *testing.T, core *Core, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, core.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("root@openhim.org", "openhim-password")
	resp, err := core.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply bytes.Buffer
	if _, err := reply.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, reply.String()
}

const registration = `{"urn":"` + urn + `","version":"1.0.0","name":"test","endpoints":[{"name":"e","host":"h","port":1,"primary":true}],
 "configDefs":[{"param":"db","type":"struct","template":[{"param":"url","type":"string"},{"param":"password","type":"password"}]},
               {"param":"token","type":"password"}],
 "config":{"db":{"url":"u","password":"db-secret"},"token":"t-secret"}}`

func TestCoreEndpoints(t *testing.T) {
	clk := &clock{t: time.Date(2024, 5, 1, 6, 20, 0, 0, time.UTC)}
	core := New(Options{Now: clk.now})
	defer core.Close()

	for _, step := range []struct {
		name, method, path, body string
		wantStatus               int
		wantReply                string // substring
	}{
		{"invalid JSON", "POST", "/mediators", `{"urn":`, 400, "invalid JSON"},
		{"register", "POST", "/mediators", registration, 201, ""},
		{"heartbeat unknown urn", "POST", "/mediators/urn:mediator:other/heartbeat", `{}`, 404, ""},
		{"heartbeat without uptime", "POST", "/mediators/" + urn + "/heartbeat", `{"config":true}`, 400, ""},
		{"escaped urn", "POST", "/mediators/urn%3Amediator%3Atest/heartbeat", `{"uptime":1}`, 200, ""},
		{"masked GET", "GET", "/mediators/" + urn, "", 200, `"password":"**********"`},
		{"config with unknown key", "PUT", "/mediators/" + urn + "/config", `{"nope":1}`, 400, "No config definition found for parameter nope"},
		{"config of unknown urn", "PUT", "/mediators/urn:x/config", `{}`, 404, "No mediator found for this urn."},
		{"console keeps masked passwords", "PUT", "/mediators/" + urn + "/config",
			`{"db":{"url":"u2","password":"**********"},"token":"**********"}`, 200, ""},
		{"change delivered", "POST", "/mediators/" + urn + "/heartbeat", `{"uptime":2}`, 200,
			`{"db":{"password":"db-secret","url":"u2"},"token":"t-secret"}`},
		{"once", "POST", "/mediators/" + urn + "/heartbeat", `{"uptime":3}`, 200, ""},
		{"public heartbeat", "GET", "/heartbeat", "", 200, `"mediators":{"` + urn + `":3}`},
		{"unknown transaction", "PUT", "/transactions/abc", `{}`, 404, ""},
	} {
		status, reply := call(t, core, step.method, step.path, step.body)
		if status != step.wantStatus || !strings.Contains(reply, step.wantReply) {
			t.Errorf("%s: %d %q, want %d containing %q", step.name, status, reply, step.wantStatus, step.wantReply)
		}
		if step.name == "once" && reply != "" {
			t.Errorf("config delivered twice: %q", reply)
		}
	}

	clk.add(61 * time.Second)
	if _, reply := call(t, core, "GET", "/heartbeat", ""); !strings.Contains(reply, `"`+urn+`":null`) {
		t.Errorf("a mediator silent for 61 s still shows an uptime: %s", reply)
	}
	if err := core.SetConfig(urn, map[string]any{"token": 5}); err == nil {
		t.Error("SetConfig accepted a number for a password")
	}
	if s, ok := core.Mediator(urn); !ok || s.Heartbeats != 3 || s.LastUptime != 3 {
		t.Errorf("stored %+v", s)
	}
	if _, ok := core.Mediator("urn:x"); ok {
		t.Error("unknown mediator found")
	}
}

func TestCoreAuthTypes(t *testing.T) {
	core := New(Options{AuthTypes: []string{"basic"}, Users: map[string]string{"sync@example.org": "pw"}})
	defer core.Close()
	token := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewTokenAuth(core.URL(), "sync@example.org", "pw", nil)})
	if _, err := token.Heartbeat(context.Background(), urn, time.Second, false); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("token auth on a Basic-only core: %v, want 401", err)
	}
	basic := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewBasicAuth("sync@example.org", "pw")})
	if _, err := basic.Heartbeat(context.Background(), urn, time.Second, false); err == nil || !strings.Contains(err.Error(), openhim.ErrUnknownMediator.Error()) {
		t.Errorf("basic auth: %v, want unknown mediator", err)
	}
	var replies []int
	for _, r := range core.Requests() {
		replies = append(replies, r.Status)
	}
	if len(replies) != 3 || replies[0] != 200 || replies[1] != 401 || replies[2] != 404 {
		t.Errorf("replies %v, want salt 200, 401, 404", replies)
	}
}

func TestStoredDocumentDecodes(t *testing.T) {
	core := New(Options{})
	defer core.Close()
	if status, _ := call(t, core, "POST", "/mediators", registration); status != 201 {
		t.Fatal(status)
	}
	s, _ := core.Mediator(urn)
	var doc map[string]any
	if err := json.Unmarshal(s.Document, &doc); err != nil || s.Mediator.ConfigDefs[0].Template[1].Type != "password" {
		t.Errorf("stored %+v %v", s, err)
	}
}

// The fake answers each scheme as core does in each mode: 401 with Koa's
// "Unauthorized" for a scheme it does not accept or wrong credentials, 403
// naming the API function for a user not in group admin, and its own clock
// in the Date header, which a token's auth-ts is checked against.
func TestCoreAuthModes(t *testing.T) {
	clk := &clock{t: time.Date(2024, 5, 1, 6, 20, 0, 0, time.UTC)}
	users := map[string]string{"root@openhim.org": "openhim-password", "viewer@moh.example": "viewer-pw"}
	basic := func(user, password string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, password) }
	}
	token := func(user, password string) func(*http.Request) {
		return func(r *http.Request) {
			salt := RootSalt
			if user != "root@openhim.org" {
				return // only root's salt is known here
			}
			ts := clk.now().Format("2006-01-02T15:04:05.000Z")
			r.Header.Set("auth-username", user)
			r.Header.Set("auth-ts", ts)
			r.Header.Set("auth-salt", "s")
			r.Header.Set("auth-token", openhim.TokenHash(salt, password, "s", ts))
		}
	}
	for _, tc := range []struct {
		name       string
		authTypes  []string
		auth       func(*http.Request)
		wantStatus int
		wantReply  string
	}{
		{"token-only core, basic", []string{"token"}, basic("root@openhim.org", "openhim-password"), http.StatusUnauthorized, "Unauthorized"},
		{"token-only core, token", []string{"token"}, token("root@openhim.org", "openhim-password"), http.StatusCreated, ""},
		{"basic-only core, token", []string{"basic"}, token("root@openhim.org", "openhim-password"), http.StatusUnauthorized, "Unauthorized"},
		{"basic-only core, basic", []string{"basic"}, basic("root@openhim.org", "openhim-password"), http.StatusCreated, ""},
		{"wrong password", nil, basic("root@openhim.org", "nope"), http.StatusUnauthorized, "Unauthorized"},
		{"no credentials", nil, func(*http.Request) {}, http.StatusUnauthorized, "Unauthorized"},
		{"not an admin", nil, basic("viewer@moh.example", "viewer-pw"), http.StatusForbidden,
			"User viewer@moh.example is not an admin, API access to addMediator denied."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := New(Options{Users: users, NonAdmins: []string{"viewer@moh.example"}, AuthTypes: tc.authTypes, Now: clk.now})
			defer core.Close()
			req, err := http.NewRequest(http.MethodPost, core.URL()+"/mediators", strings.NewReader(registration))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			tc.auth(req)
			resp, err := core.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var reply bytes.Buffer
			if _, err := reply.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus || strings.TrimSpace(reply.String()) != tc.wantReply {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, reply.String(), tc.wantStatus, tc.wantReply)
			}
			if date, err := http.ParseTime(resp.Header.Get("Date")); err != nil || !date.Equal(clk.now()) {
				t.Errorf("Date %q, want core's clock %s", resp.Header.Get("Date"), clk.now())
			}
			// GET /authenticate answers in every mode, as in core.
			if status, _ := call(t, core, http.MethodGet, "/authenticate/root@openhim.org", ""); status != http.StatusOK {
				t.Errorf("GET /authenticate: %d, want 200", status)
			}
		})
	}
}
