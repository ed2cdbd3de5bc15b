package rapidprotest_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// TestLookupParams: ?uuid= and ?urn= as BaseAPIView and the contacts
// endpoint handle them, on every method.
func TestLookupParams(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	c := e.srv.AddContact(rapidpro.Contact{Name: "A", URNs: []string{"tel:+231777123456"}})
	tests := []struct {
		name, method, query, body string
		status                    int
		want                      string
	}{
		{"GET bad uuid", "GET", "uuid=nope", "", 400, `{"detail": "Param 'uuid': nope is not a valid UUID."}`},
		{"POST bad uuid", "POST", "uuid=nope", `{"name": "X"}`, 400, `{"detail": "Param 'uuid': nope is not a valid UUID."}`},
		{"DELETE bad uuid", "DELETE", "uuid=nope", "", 400, `{"detail": "Param 'uuid': nope is not a valid UUID."}`},
		{"GET uuid in capitals (parsed as a UUID)", "GET", "uuid=" + strings.ToUpper(c.UUID), "", 200, ""},
		{"POST uuid in capitals (matched as text)", "POST", "uuid=" + strings.ToUpper(c.UUID), `{}`, 404,
			`{"detail": "No Contact matches the given query."}`},
		{"GET unparsable phone matches nothing", "GET", "urn=" + url.QueryEscape("tel:123"), "", 200,
			`{"next": null, "previous": null, "results": []}`},
		{"GET no scheme", "GET", "urn=12345", "", 400, `{"detail": "Invalid URN: 12345"}`},
		{"POST upsert with unparsable phone", "POST", "urn=" + url.QueryEscape("tel:123"), `{"name": "B"}`, 400,
			`{"non_field_errors": ["Invalid URN: tel:123. Ensure phone numbers contain country codes."]}`},
		{"POST both", "POST", "uuid=" + c.UUID + "&urn=" + url.QueryEscape("tel:+231777123456"), `{}`, 400,
			`{"detail": "URL can only contain one of the following parameters: urn, uuid"}`},
		{"GET both filter together", "GET", "uuid=" + c.UUID + "&urn=" + url.QueryEscape("tel:0777123456"), "", 200, ""},
		{"POST empty body updates nothing", "POST", "uuid=" + c.UUID, "", 200, ""},
		{"groups bad uuid", "GET", "uuid=nope", "", 400, `{"detail": "Param 'uuid': nope is not a valid UUID."}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := contacts
			if strings.HasPrefix(tt.name, "groups") {
				path = "/api/v2/groups.json"
			}
			a := e.call(tt.method, path+"?"+tt.query, tt.body)
			e.want(a, tt.status, tt.want)
			if tt.method == "GET" && tt.status == 200 && tt.want == "" && !strings.Contains(a.body, c.UUID) {
				t.Fatalf("contact not listed: %s", a.body)
			}
		})
	}
	if n := len(e.srv.Contacts()); n != 1 {
		t.Fatalf("%d contacts, want 1", n)
	}
}

// TestAfterBeforeWithoutZone: the iso8601 parser takes zone-less values (as
// UTC) and dates alone.
func TestAfterBeforeWithoutZone(t *testing.T) {
	base := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, rapidprotest.Options{})
	for i := range 3 {
		e.srv.AddContact(rapidpro.Contact{Name: string(rune('A' + i)), URNs: []string{"tel:+23177700000" + string(rune('0'+i))},
			CreatedOn: base.Add(time.Duration(i) * 24 * time.Hour)})
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"after=2024-05-02T00:00:00.000", []string{"B", "C"}},
		{"before=2024-05-02T00:00:00", []string{"A", "B"}},
		{"after=2024-05-02", []string{"B", "C"}},
		{"after=2024-05-02T01:00:00%2B01:00", []string{"B", "C"}},
		{"after=2024-05-02T00:00:00.000001", []string{"C"}},
		{"after=yesterday", nil},
		{"after=2024-13-01", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			a := e.call("GET", contacts+"?reverse=true&"+tt.query, "")
			e.want(a, 200, "")
			var p struct{ Results []wireContact }
			if err := json.Unmarshal([]byte(a.body), &p); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range p.Results {
				names = append(names, str(c.Name))
			}
			if !slices.Equal(names, tt.want) {
				t.Fatalf("got %v, want %v", names, tt.want)
			}
		})
	}
}

// TestNamesTrimmed: name and language are DRF CharFields (trimmed); numbers
// are taken as text.
func TestNamesTrimmed(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	tests := []struct {
		body           string
		name, language string
	}{
		{`{"name": "  Ama Mensah \t", "language": " fra "}`, "Ama Mensah", "fra"},
		{`{"name": 12345}`, "12345", "<null>"},
		{`{"name": "` + strings.Repeat("é", 64) + `  "}`, strings.Repeat("é", 64), "<null>"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			a := e.call("POST", contacts, tt.body)
			e.want(a, 201, "")
			c := e.contact(a)
			if str(c.Name) != tt.name || str(c.Language) != tt.language {
				t.Fatalf("name %q language %q, want %q %q", str(c.Name), str(c.Language), tt.name, tt.language)
			}
		})
	}
}

// rawContact keeps every key of a contact as sent, to see nulls and absences.
func rawContact(t *testing.T, body string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStatusKeys: deleted contacts have status, blocked and stopped null;
// OmitStatus drops "status" as older servers did.
func TestStatusKeys(t *testing.T) {
	tests := []struct {
		name                     string
		opts                     rapidprotest.Options
		deleted                  bool
		status, blocked, stopped string // raw JSON; "" = key absent
	}{
		{"live", rapidprotest.Options{}, false, `"active"`, `false`, `false`},
		{"deleted", rapidprotest.Options{}, true, `null`, `null`, `null`},
		{"older server, live", rapidprotest.Options{OmitStatus: true}, false, "", `false`, `false`},
		{"older server, deleted", rapidprotest.Options{OmitStatus: true}, true, "", `null`, `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts)
			c := e.srv.AddContact(rapidpro.Contact{Name: "A", URNs: []string{"tel:+231777123456"}})
			query := "?uuid=" + c.UUID
			if tt.deleted {
				e.want(e.call("DELETE", contacts+query, ""), 204, "")
				query += "&deleted=true"
			}
			a := e.call("GET", contacts+query, "")
			var p struct{ Results []json.RawMessage }
			if err := json.Unmarshal([]byte(a.body), &p); err != nil || len(p.Results) != 1 {
				t.Fatalf("listing %s", a.body)
			}
			m := rawContact(t, string(p.Results[0]))
			for key, want := range map[string]string{"status": tt.status, "blocked": tt.blocked, "stopped": tt.stopped} {
				if got := string(m[key]); got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
			var decoded rapidpro.Contact
			_ = json.Unmarshal(p.Results[0], &decoded)
			if want := map[bool]string{false: "active", true: ""}[tt.deleted]; decoded.Status != want {
				t.Errorf("the client reads status %q, want %q", decoded.Status, want)
			}
		})
	}
}

// TestListsNewestFirst: fields and groups are ordered by -created_on, -id,
// across pages.
func TestListsNewestFirst(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{PageSize: 2})
	for _, n := range []string{"One", "Two", "Three"} {
		e.srv.AddField(n, "text")
		e.srv.AddGroup(n)
	}
	for _, tt := range []struct{ path, key string }{{"/api/v2/fields.json", "name"}, {"/api/v2/groups.json", "name"}} {
		t.Run(tt.path, func(t *testing.T) {
			var names []string
			path := tt.path
			for path != "" {
				a := e.call("GET", path, "")
				var p struct {
					Next    *string
					Results []map[string]any
				}
				if err := json.Unmarshal([]byte(a.body), &p); err != nil {
					t.Fatal(err)
				}
				for _, r := range p.Results {
					names = append(names, r[tt.key].(string))
				}
				path = ""
				if p.Next != nil {
					u, _ := url.Parse(*p.Next)
					path = u.RequestURI()
				}
			}
			if !slices.Equal(names, []string{"Three", "Two", "One"}) {
				t.Fatalf("got %v, want newest first", names)
			}
		})
	}
}
