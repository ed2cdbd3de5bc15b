package openhim_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

const (
	rootEmail    = "root@openhim.org"
	rootPassword = "openhim-password"
	testURN      = "urn:mediator:mhero-sync-go"
)

func newCore(t *testing.T, opts openhimtest.Options) *openhimtest.Core {
	t.Helper()
	core := openhimtest.New(opts)
	t.Cleanup(core.Close)
	return core
}

func newClient(core *openhimtest.Core, auth openhim.Authenticator) *openhim.Client {
	return openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: auth, HTTPClient: core.Client()})
}

// registerAt registers mheroMediator with its polling route pointing at a
// test server, so that core.Poll(ctx, testURN) calls that server as the
// installed channel would.
func registerAt(t *testing.T, core *openhimtest.Core, serverURL string) {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	m := mheroMediator()
	m.DefaultChannelConfig[0].Routes[0].Host, m.DefaultChannelConfig[0].Routes[0].Port = u.Hostname(), port
	if err := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword)).Register(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// mheroMediator is a realistic registration (docs/protocols.md, Registration).
func mheroMediator() openhim.Mediator {
	return openhim.Mediator{
		URN:         testURN,
		Version:     "1.2.0",
		Name:        "mHero sync (Go)",
		Description: "OIM providers to RapidPro contacts",
		Endpoints:   []openhim.Route{{Name: "sync", Type: "http", Host: "mhero-sync", Port: 8544, Path: "/sync", Primary: true}},
		DefaultChannelConfig: []openhim.Channel{{
			Name: "mHero - provider sync", URLPattern: "^/mhero-sync$", Type: "polling", PollingSchedule: "20 6 * * *",
			Status: "enabled", AuthType: "private", Allow: []string{"mhero-admin"}, Timeout: 3600000,
			Routes: []openhim.Route{{
				Name: "mhero-sync", Type: "http", Host: "mhero-sync", Port: 8544, Path: "/sync", Primary: true,
				Status: "enabled", Username: "openhim", Password: "change-me",
			}},
		}},
		ConfigDefs: []openhim.ConfigDef{
			{Param: "openinfoman", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "url", Type: "string"}, {Param: "username", Type: "string"}, {Param: "password", Type: "password"},
				{Param: "document", Type: "string"}, {Param: "pageSize", Type: "number"},
			}},
			{Param: "rapidpro", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "url", Type: "string"}, {Param: "token", Type: "password"}, {Param: "group", Type: "string"}, {Param: "country", Type: "string"},
			}},
			{Param: "inactivePolicy", Type: "option", Values: []string{"ignore", "remove-from-group", "block"}},
			{Param: "workers", Type: "number"},
			{Param: "watermark", DisplayName: "Last successful run start (RFC 3339 UTC)", Type: "string"},
		},
		Config: map[string]any{
			"openinfoman":    map[string]any{"url": "http://openinfoman:8984", "username": "", "password": "oim-secret", "document": "Providers", "pageSize": 500},
			"rapidpro":       map[string]any{"url": "https://rapidpro.example.org", "token": "rp-secret-token", "group": "mHero", "country": "LR"},
			"inactivePolicy": "remove-from-group",
			"workers":        2,
			"watermark":      "1970-01-01T00:00:00Z",
		},
	}
}

// rawCall sends body to the fake core as root with Basic auth, bypassing the
// client's own checks.
func rawCall(t *testing.T, core *openhimtest.Core, method, path, contentType string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, core.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.SetBasicAuth(rootEmail, rootPassword)
	resp, err := core.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(reply)
}
