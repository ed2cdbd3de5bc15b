package openhim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

func TestRegisterStoresMHeroMediator(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	ctx := context.Background()
	m := mheroMediator()
	if err := client.Register(ctx, m); err != nil {
		t.Fatalf("Register: %v", err)
	}

	stored, ok := core.Mediator(testURN)
	if !ok {
		t.Fatal("core does not hold the mediator")
	}
	if strings.Contains(string(stored.Document), `"methods"`) {
		t.Error("registration carries a methods field, which /channels rejects on a polling channel")
	}
	want := m
	want.Config = jsonRoundTrip(t, m.Config)
	if !reflect.DeepEqual(stored.Mediator, want) {
		t.Errorf("stored mediator differs:\n got %+v\nwant %+v", stored.Mediator, want)
	}
	for _, r := range core.Requests() {
		if r.Path == "/mediators" && r.ContentType != "application/json" {
			t.Errorf("registration sent Content-Type %q", r.ContentType)
		}
	}

	// Same version, changed description: core changes nothing and says 201.
	changed := m
	changed.Description = "changed"
	changed.Config = map[string]any{"inactivePolicy": "block"}
	if err := client.Register(ctx, changed); err != nil {
		t.Fatalf("re-Register: %v", err)
	}
	again, _ := core.Mediator(testURN)
	if again.Registrations != 2 || string(again.Document) != string(stored.Document) {
		t.Errorf("re-registration of the same version changed core (registrations %d):\n%s", again.Registrations, again.Document)
	}

	// The console shows config passwords masked.
	status, body := rawCall(t, core, http.MethodGet, "/mediators/"+testURN, "", nil)
	if status != http.StatusOK || strings.Contains(body, "oim-secret") || strings.Contains(body, "rp-secret-token") ||
		!strings.Contains(body, "**********") {
		t.Errorf("GET /mediators/:urn = %d %s, want passwords masked", status, body)
	}
}

func TestRegisterHigherVersionMergesConfig(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	ctx := context.Background()
	m := mheroMediator()
	if err := client.Register(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := core.SetConfig(testURN, map[string]any{"inactivePolicy": "block", "workers": 4}); err != nil {
		t.Fatal(err)
	}

	next := mheroMediator()
	next.Version = "1.3.0"
	next.Description = "new description"
	next.ConfigDefs = append(next.ConfigDefs, openhim.ConfigDef{Param: "dryRun", Type: "bool"})
	next.Config = map[string]any{"inactivePolicy": "ignore", "workers": 1, "dryRun": true}
	if err := client.Register(ctx, next); err != nil {
		t.Fatal(err)
	}

	stored, _ := core.Mediator(testURN)
	if stored.Mediator.Version != "1.3.0" || stored.Mediator.Description != "new description" {
		t.Errorf("version bump not applied: %s %q", stored.Mediator.Version, stored.Mediator.Description)
	}
	// Stored values win, new params get their default, missing params go.
	want := map[string]any{"inactivePolicy": "block", "workers": 4.0, "dryRun": true}
	if !reflect.DeepEqual(stored.Config, want) {
		t.Errorf("merged config = %v, want %v", stored.Config, want)
	}
}

func TestRegistrationRejected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(m *openhim.Mediator)
		msg    string
		// coreAccepts marks checks that only /channels runs, later, when the
		// default channel is installed; registration itself passes.
		coreAccepts bool
	}{
		{"no urn", func(m *openhim.Mediator) { m.URN = "" }, "URN is required", false},
		{"no version", func(m *openhim.Mediator) { m.Version = "" }, "Version is required. Must be in SemVer form x.y.z", false},
		{"version not semver", func(m *openhim.Mediator) { m.Version = "1.2" }, "Must be in SemVer form x.y.z", false},
		{"struct without template", func(m *openhim.Mediator) { m.ConfigDefs[0].Template = nil },
			"Must specify a template for struct param 'openinfoman'", false},
		{"template item without param", func(m *openhim.Mediator) { m.ConfigDefs[1].Template[0].Param = "" },
			"Must specify field 'param' in template definition for param 'rapidpro'", false},
		{"template item without type", func(m *openhim.Mediator) { m.ConfigDefs[1].Template[0].Type = "" },
			"Must specify field 'type' in template definition for param 'rapidpro'", false},
		{"nested struct", func(m *openhim.Mediator) { m.ConfigDefs[1].Template[0].Type = "struct" },
			"May not recursively specify 'struct' in template definitions (param 'rapidpro')", false},
		{"option without values", func(m *openhim.Mediator) { m.ConfigDefs[2].Values = nil },
			"Must specify a values array for option param 'inactivePolicy'", false},
		{"config key without def", func(m *openhim.Mediator) { m.Config["extra"] = "x" },
			"No config definition found for parameter extra", false},
		{"config string of wrong type", func(m *openhim.Mediator) { m.Config["watermark"] = 5 },
			"Expected config param watermark to be a string.", false},
		{"config number of wrong type", func(m *openhim.Mediator) { m.Config["workers"] = "2" },
			"Expected config param workers to be a number.", false},
		{"config option not a value", func(m *openhim.Mediator) { m.Config["inactivePolicy"] = "delete" },
			"Expected config param inactivePolicy to be one of ignore,remove-from-group,block", false},
		{"config struct with unknown field", func(m *openhim.Mediator) { m.Config["rapidpro"] = map[string]any{"uuid": "x"} },
			"Field uuid is not defined in template definition for config param rapidpro.", false},
		{"config password null", func(m *openhim.Mediator) {
			m.ConfigDefs = append(m.ConfigDefs, openhim.ConfigDef{Param: "secret", Type: "password"})
			m.Config["secret"] = nil
		}, "Expected config param secret to be a string representing a password.", false},
		{"config array not an array", func(m *openhim.Mediator) {
			m.ConfigDefs = append(m.ConfigDefs, openhim.ConfigDef{Param: "groups", Type: "string", Array: true})
			m.Config["groups"] = "mHero"
		}, "Expected config param groups to be an array of type string", false},
		{"config map with non-string value", func(m *openhim.Mediator) {
			m.ConfigDefs = append(m.ConfigDefs, openhim.ConfigDef{Param: "fields", Type: "map"})
			m.Config["fields"] = map[string]any{"cadre": 1}
		}, "Expected config param fields to only contain string values.", false},
		{"no endpoint", func(m *openhim.Mediator) { m.Endpoints = nil }, "At least 1 endpoint is required", false},
		{"no name", func(m *openhim.Mediator) { m.Name = "" }, "name: Path `name` is required.", false},
		{"endpoint without name", func(m *openhim.Mediator) { m.Endpoints[0].Name = "" }, "endpoints.0.name: Path `name` is required.", false},
		{"channel without name", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].Name = "" },
			"defaultChannelConfig.0.name: Path `name` is required.", false},
		{"channel without urlPattern", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].URLPattern = "" },
			"defaultChannelConfig.0.urlPattern: Path `urlPattern` is required.", false},
		{"channel route without name", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].Routes[0].Name = "" },
			"defaultChannelConfig.0.routes.0.name: Path `name` is required.", false},
		{"route port out of range", func(m *openhim.Mediator) { m.Endpoints[0].Port = 70000 }, "endpoints.0.port", false},
		{"polling channel timeout too long", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].Timeout = 3600001 },
			"defaultChannelConfig.0.timeout", true},
		{"polling channel without schedule", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].PollingSchedule = "" },
			"polling channel needs pollingSchedule", true},
		{"no enabled primary route", func(m *openhim.Mediator) { m.DefaultChannelConfig[0].Routes[0].Status = "disabled" },
			"exactly one enabled primary route is required, found 0", true},
		{"two primary routes", func(m *openhim.Mediator) {
			ch := &m.DefaultChannelConfig[0]
			second := ch.Routes[0]
			second.Name = "second"
			ch.Routes = append(ch.Routes, second)
		}, "exactly one enabled primary route is required, found 2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mheroMediator()
			tc.mutate(&m)

			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Validate() = %v, want it to contain %q", err, tc.msg)
			}

			core := newCore(t, openhimtest.Options{})
			doc, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			status, body := rawCall(t, core, http.MethodPost, "/mediators", "application/json", doc)
			switch {
			case tc.coreAccepts && status != http.StatusCreated:
				t.Errorf("core answered %d %q, want 201", status, body)
			case !tc.coreAccepts && (status != http.StatusBadRequest || !strings.Contains(body, tc.msg)):
				t.Errorf("core answered %d %q, want 400 containing %q", status, body, tc.msg)
			}

			// The client refuses before calling core.
			client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
			before := len(core.Requests())
			if err := client.Register(context.Background(), m); err == nil || len(core.Requests()) != before {
				t.Errorf("Register sent an invalid registration (err %v)", err)
			}
		})
	}
}

func TestRegistrationWithoutJSONContentType(t *testing.T) {
	core := newCore(t, openhimtest.Options{})
	doc, err := json.Marshal(mheroMediator())
	if err != nil {
		t.Fatal(err)
	}
	status, body := rawCall(t, core, http.MethodPost, "/mediators", "text/plain", doc)
	if status != http.StatusBadRequest || !strings.Contains(body, "URN is required") {
		t.Errorf("got %d %q, want 400 URN is required", status, body)
	}
}

func jsonRoundTrip(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
