package mediator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

// The registration's config, which core stores and older cores list in
// clear, carries the secrets given by flag only when the operator opted in;
// without them core accepts it, the console shows them empty, and an empty
// console value keeps the service's own.
func TestRegistrationConfigSecrets(t *testing.T) {
	settings := Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: "http://openinfoman:8984", Username: "oim", Password: testOIMPass, Document: "Providers", PageSize: 500},
		RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: testToken, Group: "mHero", Country: "LR"},
		InactivePolicy: InactiveRemoveFromGroup,
	}
	for _, tc := range []struct {
		name      string
		opt       bool
		wantToken string
		wantPass  string
	}{
		{"by default", false, "", ""},
		{"opted in", true, testToken, testOIMPass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := openhimtest.New(openhimtest.Options{})
			defer core.Close()
			reg := Registration{
				URN: testURN, Version: "1.0.0", Host: "mhero-sync", Port: 8544, PollingSchedule: "*/10 * * * *", ChannelTimeout: time.Hour,
				Settings: settings, ConfigSecrets: tc.opt,
			}
			client := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewBasicAuth("root@openhim.org", "openhim-password"), HTTPClient: core.Client()})
			if err := client.Register(context.Background(), reg.Mediator()); err != nil {
				t.Fatal(err)
			}
			var body string
			for _, r := range core.Requests() {
				if r.Path == "/mediators" {
					body = r.Body
				}
			}
			for _, secret := range []string{testToken, testOIMPass} {
				if got := strings.Contains(body, secret); got != tc.opt {
					t.Errorf("registration body holds %q: %v, want %v", secret, got, tc.opt)
				}
			}
			stored, _ := core.Mediator(testURN)
			rp, _ := stored.Config["rapidpro"].(map[string]any)
			oim, _ := stored.Config["openinfoman"].(map[string]any)
			if rp["token"] != tc.wantToken || oim["password"] != tc.wantPass || oim["username"] != "oim" || rp["group"] != "mHero" {
				t.Errorf("core stores rapidpro %v, openinfoman %v", rp, oim)
			}

			// The console sends back what it shows: the service keeps its own.
			raw, err := json.Marshal(stored.Config)
			if err != nil {
				t.Fatal(err)
			}
			next, err := settings.WithConsoleConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			if next.RapidPro.Token != testToken || next.OpenInfoMan.Password != testOIMPass {
				t.Errorf("after the console's config: token %q, password %q; want the flags'", next.RapidPro.Token, next.OpenInfoMan.Password)
			}
		})
	}
	if settings.OpenInfoMan.Password != testOIMPass || settings.RapidPro.Token != testToken {
		t.Error("WithoutSecrets changed the settings it was called on")
	}
}
