package rapidprotest_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// clock is a settable clock for the emulator; each reading moves it on by
// step so every write gets a distinct timestamp.
type clock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.step)
	return t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	t   *testing.T
	srv *rapidprotest.Server
}

func newEnv(t *testing.T, opts rapidprotest.Options) env {
	t.Helper()
	if opts.Country == "" {
		opts.Country = "LR"
	}
	srv := rapidprotest.New(opts)
	t.Cleanup(srv.Close)
	return env{t, srv}
}

type answer struct {
	status int
	header http.Header
	body   string
}

// call sends a request with the server's token; path may carry a query.
func (e env) call(method, path, body string) answer {
	return e.callAs("Token "+e.srv.Token(), method, path, body)
}

func (e env) callAs(auth, method, path, body string) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL()+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(data)}
}

// want checks status and, when body is not empty, the JSON body.
func (e env) want(a answer, status int, body string) {
	e.t.Helper()
	if a.status != status {
		e.t.Fatalf("status %d, want %d (body %s)", a.status, status, a.body)
	}
	if body != "" && !jsonEqual(a.body, body) {
		e.t.Fatalf("body %s, want %s", a.body, body)
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return string(xs) == string(ys)
}

// wireContact is the contact as sent on the wire, keeping nulls visible.
type wireContact struct {
	UUID       string              `json:"uuid"`
	Name       *string             `json:"name"`
	Language   *string             `json:"language"`
	Status     string              `json:"status"`
	URNs       []string            `json:"urns"`
	Groups     []rapidpro.GroupRef `json:"groups"`
	Fields     map[string]*string  `json:"fields"`
	CreatedOn  string              `json:"created_on"`
	ModifiedOn string              `json:"modified_on"`
}

func (e env) contact(a answer) wireContact {
	e.t.Helper()
	var c wireContact
	if err := json.Unmarshal([]byte(a.body), &c); err != nil {
		e.t.Fatalf("decoding %s: %v", a.body, err)
	}
	return c
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

const contacts = "/api/v2/contacts.json"

func TestAuthAndRouting(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{Token: "secret"})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin@example.org:secret"))
	tests := []struct {
		name         string
		auth, method string
		path         string
		status       int
		body         string
		contentType  string
	}{
		{"token", "Token secret", "GET", "/api/v2/workspace.json", 200, "", "application/json"},
		{"keyword in any case", "TOKEN secret", "GET", "/api/v2/workspace.json", 200, "", "application/json"},
		{"basic with the token as password", basic, "GET", "/api/v2/workspace.json", 200, "", "application/json"},
		{"bad token", "Token nope", "GET", "/api/v2/workspace.json", 403, `{"detail": "Invalid token"}`, "application/json"},
		{"no token", "", "GET", contacts, 403, `{"detail": "Authentication credentials were not provided."}`, "application/json"},
		{"docs page without .json", "", "GET", "/api/v2/contacts", 200, "", "text/html"},
		{"POST without .json", "Token secret", "POST", "/api/v2/contacts", 405, "", "text/html"},
		{"unknown endpoint (Django's HTML 404)", "Token secret", "GET", "/api/v2/nothing.json", 404, "", "text/html"},
		{"bad basic credentials", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin@example.org:nope")), "GET", contacts, 403,
			`{"detail": "Invalid token or email"}`, "application/json"},
		{"method not allowed", "Token secret", "PUT", contacts, 405, `{"detail": "Method \"PUT\" not allowed."}`, "application/json"},
		{"outside the API", "Token secret", "GET", "/", 404, "", "text/html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.callAs(tt.auth, tt.method, tt.path, "")
			e.want(a, tt.status, tt.body)
			if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
				t.Fatalf("content type %q, want %q", ct, tt.contentType)
			}
			if strings.HasSuffix(tt.path, ".json") && tt.status == 200 && a.header.Get("X-Temba-Workspace") == "" {
				t.Fatal("no X-Temba-Workspace header")
			}
		})
	}
}

func TestCreateContact(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	e.srv.AddField("Global ID", "text")
	e.srv.AddField("Cadre", "text")
	g := e.srv.AddGroup("mHero")
	e.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231886000111"}})

	tests := []struct {
		name   string
		body   string
		status int
		want   string // the error body for a 400
	}{
		{"local number with the workspace country", `{"name": "A", "urns": ["tel:0777123456"]}`, 201, ""},
		{"taken URN", `{"urns": ["tel:+231777000001", "tel:0886 000 111"]}`, 400,
			`{"urns": {"1": ["URN is in use by another contact."]}}`},
		{"two taken URNs: only the first is reported", `{"urns": ["tel:+231777000001", "tel:+231886000111", "tel:+231886000111"]}`, 400,
			`{"urns": {"1": ["URN is in use by another contact."]}}`},
		{"one URN twice", `{"urns": ["tel:+231777000002", "tel:0777000002"]}`, 400,
			`{"urns": {"0": ["URN is in use by another contact."]}}`},
		{"invalid URN", `{"urns": ["tel:12"]}`, 400, `{"urns": {"0": ["Invalid URN: tel:12. Ensure phone numbers contain country codes."]}}`},
		{"null URN", `{"urns": [null]}`, 400, `{"urns": {"0": ["This field may not be null."]}}`},
		{"unknown field", `{"fields": {"xyz": "1"}}`, 400, `{"fields": ["Invalid contact field key: xyz"]}`},
		{"null character in a field", `{"fields": {"cadre": "a\u0000b"}}`, 400,
			`{"fields": {"cadre": ["Null characters are not allowed."]}}`},
		{"name over 64", fmt.Sprintf(`{"name": %q}`, strings.Repeat("n", 65)), 400,
			`{"name": ["Ensure this field has no more than 64 characters."]}`},
		{"name of 64 runes", fmt.Sprintf(`{"name": %q}`, strings.Repeat("é", 64)), 201, ""},
		{"empty name", `{"name": ""}`, 400, `{"name": ["This field may not be blank."]}`},
		{"unknown group", `{"groups": ["Nurses"]}`, 400, `{"groups": ["No such object: Nurses"]}`},
		{"groups as objects", fmt.Sprintf(`{"groups": [{"uuid": %q, "name": "mHero"}]}`, g.UUID), 400, ""},
		{"short language", `{"language": "fr"}`, 400, `{"language": ["Ensure this field has at least 3 characters."]}`},
		{"bibliographic language code", `{"language": "fre"}`, 400, `{"language": ["Not a valid ISO639-3 language code."]}`},
		{"blank name after trimming", `{"name": "   "}`, 400, `{"name": ["This field may not be blank."]}`},
		{"name as a boolean", `{"name": true}`, 400, `{"name": ["Not a valid string."]}`},
		{"several errors at once", `{"name": "", "urns": ["x"]}`, 400,
			`{"name": ["This field may not be blank."], "urns": {"0": ["Invalid URN: x. Ensure phone numbers contain country codes."]}}`},
		{"first unknown field key in the order sent", `{"fields": {"zzz": "1", "aaa": "2"}}`, 400, `{"fields": ["Invalid contact field key: zzz"]}`},
		{"not an object", `[{"name": "A"}]`, 400, `{"non_field_errors": ["Request body should be a single JSON object"]}`},
		{"group by name ignoring case", `{"groups": ["MHERO"], "fields": {"cadre": 12}}`, 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.call("POST", contacts, tt.body)
			e.want(a, tt.status, tt.want)
		})
	}

	got := e.srv.Contacts()
	if len(got) != 4 {
		t.Fatalf("%d contacts, want 4", len(got))
	}
	if !slices.Equal(got[1].URNs, []string{"tel:+231777123456"}) {
		t.Fatalf("URN stored as %v, want E.164", got[1].URNs)
	}
	if len(got[3].Groups) != 1 || got[3].Groups[0].UUID != g.UUID || str(got[3].Fields["cadre"]) != "12" {
		t.Fatalf("contact %+v: want the group and the number stringified", got[3])
	}
}

func TestCreateWithoutCountryNeedsInternationalNumbers(t *testing.T) {
	srv := rapidprotest.New(rapidprotest.Options{})
	defer srv.Close()
	e := env{t, srv}
	e.want(e.call("POST", contacts, `{"urns": ["tel:0777123456"]}`), 400,
		`{"urns": {"0": ["Invalid URN: tel:0777123456. Ensure phone numbers contain country codes."]}}`)
	e.want(e.call("POST", contacts, `{"urns": ["tel:+231777123456"]}`), 201, "")
}

func TestContactRepresentation(t *testing.T) {
	clk := &clock{now: time.Date(2024, 5, 1, 6, 20, 6, 123456789, time.UTC)}
	e := newEnv(t, rapidprotest.Options{Now: clk.Now})
	e.srv.AddField("Global ID", "text")
	e.srv.AddField("Facility", "text")
	e.srv.AddGroup("mHero")

	a := e.call("POST", contacts, `{"urns": ["tel:+231777123456"], "groups": ["mHero"], "fields": {"global_id": "x"}}`)
	e.want(a, 201, "")
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(a.body), &raw); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"name": `null`, "language": `null`, "status": `"active"`,
		"fields":      `{"facility": null, "global_id": "x"}`,
		"created_on":  `"2024-05-01T06:20:06.123456Z"`,
		"modified_on": `"2024-05-01T06:20:06.123456Z"`,
		"blocked":     `false`, "stopped": `false`, "notes": `[]`,
	} {
		if !jsonEqual(string(raw[key]), want) {
			t.Errorf("%s = %s, want %s", key, raw[key], want)
		}
	}
	c := e.contact(a)
	if len(c.Groups) != 1 || c.Groups[0].Name != "mHero" || c.Groups[0].UUID == "" {
		t.Errorf("groups = %+v, want [{uuid, name}]", c.Groups)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(c.UUID) {
		t.Errorf("uuid %q is not a v4 UUID", c.UUID)
	}
}

func TestUpdateSemantics(t *testing.T) {
	clk := &clock{now: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), step: time.Second}
	e := newEnv(t, rapidprotest.Options{Now: clk.Now})
	e.srv.AddField("Cadre", "text")
	e.srv.AddField("Facility", "text")
	e.srv.AddGroup("mHero")
	e.srv.AddGroup("Nurses")
	e.srv.AddGroup("Doctors")
	other := e.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231886000111"}})

	created := e.contact(e.call("POST", contacts,
		`{"name": "A", "urns": ["tel:+231777123456", "whatsapp:231777123456"], "groups": ["mHero", "Nurses"], "fields": {"cadre": "Midwife", "facility": "JFK"}}`))
	path := contacts + "?uuid=" + created.UUID

	steps := []struct {
		name    string
		body    string
		check   func(c wireContact) string
		changed bool
	}{
		{"fields merge: only sent keys change", `{"fields": {"cadre": "Senior Midwife"}}`, func(c wireContact) string {
			if str(c.Fields["cadre"]) != "Senior Midwife" || str(c.Fields["facility"]) != "JFK" {
				return fmt.Sprint(c.Fields)
			}
			return ""
		}, true},
		{"empty fields change nothing", `{"fields": {}}`, nil, false},
		{"same value changes nothing", `{"name": "A", "fields": {"cadre": "Senior Midwife"}}`, nil, false},
		{"null clears a field", `{"fields": {"facility": null}}`, func(c wireContact) string {
			if c.Fields["facility"] != nil || str(c.Fields["cadre"]) != "Senior Midwife" {
				return fmt.Sprint(c.Fields)
			}
			return ""
		}, true},
		{"empty string clears too", `{"fields": {"cadre": ""}}`, func(c wireContact) string {
			if c.Fields["cadre"] != nil {
				return fmt.Sprint(c.Fields)
			}
			return ""
		}, true},
		{"groups replace manual groups", `{"groups": ["doctors"]}`, func(c wireContact) string {
			if len(c.Groups) != 1 || c.Groups[0].Name != "Doctors" {
				return fmt.Sprint(c.Groups)
			}
			return ""
		}, true},
		{"omitted groups are kept", `{"name": "B"}`, func(c wireContact) string {
			if len(c.Groups) != 1 || str(c.Name) != "B" {
				return fmt.Sprint(c.Groups, str(c.Name))
			}
			return ""
		}, true},
		{"a taken URN is dropped silently", `{"urns": ["tel:+231777123456", "tel:0886000111"]}`, func(c wireContact) string {
			if !slices.Equal(c.URNs, []string{"tel:+231777123456"}) {
				return fmt.Sprint(c.URNs)
			}
			return ""
		}, true},
		{"urns replace the whole list", `{"urns": ["tel:+231777999999"]}`, func(c wireContact) string {
			if !slices.Equal(c.URNs, []string{"tel:+231777999999"}) {
				return fmt.Sprint(c.URNs)
			}
			return ""
		}, true},
		{"[] empties groups", `{"groups": []}`, func(c wireContact) string {
			if len(c.Groups) != 0 {
				return fmt.Sprint(c.Groups)
			}
			return ""
		}, true},
		{"null name clears it", `{"name": null}`, func(c wireContact) string {
			if c.Name != nil {
				return str(c.Name)
			}
			return ""
		}, true},
	}
	last := created
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			a := e.call("POST", path, st.body)
			e.want(a, 200, "")
			c := e.contact(a)
			if st.check != nil {
				if problem := st.check(c); problem != "" {
					t.Fatalf("got %s", problem)
				}
			}
			if moved := c.ModifiedOn != last.ModifiedOn; moved != st.changed {
				t.Fatalf("modified_on moved = %v, want %v (%s → %s)", moved, st.changed, last.ModifiedOn, c.ModifiedOn)
			}
			last = c
		})
	}

	// The freed URN is available again; the other contact kept its own.
	e.want(e.call("POST", contacts, `{"urns": ["tel:+231777123456"]}`), 201, "")
	if got := e.srv.Contacts()[0]; got.UUID != other.UUID || !slices.Equal(got.URNs, []string{"tel:+231886000111"}) {
		t.Fatalf("other contact now %+v", got)
	}

	e.want(e.call("POST", contacts+"?uuid=5e1c9a55-0c6b-4d0e-9a8e-21a3f4b7c9d2", `{"name": "X"}`), 404,
		`{"detail": "No Contact matches the given query."}`)
	e.want(e.call("POST", contacts+"?uuid=nope", `{"name": "X"}`), 400, `{"detail": "Param 'uuid': nope is not a valid UUID."}`)
}

func TestUpsert(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	existing := e.srv.AddContact(rapidpro.Contact{Name: "A", URNs: []string{"tel:+231777123456"}})
	urn := url.QueryEscape("tel:+231777123456")
	if urn != "tel%3A%2B231777123456" {
		t.Fatalf("escaped as %s", urn)
	}

	a := e.call("POST", contacts+"?urn="+urn, `{"name": "B"}`)
	e.want(a, 200, "")
	if c := e.contact(a); c.UUID != existing.UUID || str(c.Name) != "B" {
		t.Fatalf("upsert updated %+v", c)
	}
	a = e.call("POST", contacts+"?urn="+url.QueryEscape("tel:0886000111"), `{"name": "C"}`)
	e.want(a, 201, "")
	if c := e.contact(a); !slices.Equal(c.URNs, []string{"tel:+231886000111"}) {
		t.Fatalf("upsert created %+v", c)
	}
	e.want(e.call("POST", contacts+"?urn="+urn, `{"urns": ["tel:+231777123456"]}`), 400,
		`{"urns": ["Field not allowed when using URN in URL"]}`)
	e.want(e.call("POST", contacts+"?urn="+urn+"&uuid="+existing.UUID, `{}`), 400,
		`{"detail": "URL can only contain one of the following parameters: urn, uuid"}`)
	if n := len(e.srv.Contacts()); n != 2 {
		t.Fatalf("%d contacts, want 2", n)
	}
}

func TestListContacts(t *testing.T) {
	base := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, rapidprotest.Options{PageSize: 2})
	e.srv.AddGroup("mHero")
	for i := range 5 {
		e.srv.AddContact(rapidpro.Contact{
			Name: fmt.Sprintf("P%d", i), URNs: []string{fmt.Sprintf("tel:+23177700000%d", i)},
			Groups: []rapidpro.GroupRef{{Name: "mHero"}}, CreatedOn: base.Add(time.Duration(i) * time.Hour),
		})
	}
	type pageJSON struct {
		Next     *string       `json:"next"`
		Previous *string       `json:"previous"`
		Results  []wireContact `json:"results"`
	}
	list := func(path string) (names []string, pages int) {
		for path != "" {
			a := e.call("GET", path, "")
			e.want(a, 200, "")
			var p pageJSON
			if err := json.Unmarshal([]byte(a.body), &p); err != nil {
				t.Fatal(err)
			}
			for _, c := range p.Results {
				names = append(names, str(c.Name))
			}
			pages++
			path = ""
			if p.Next != nil {
				u, err := url.Parse(*p.Next)
				if err != nil || !u.IsAbs() || u.Query().Get("cursor") == "" {
					t.Fatalf("next %q is not an absolute URL with a cursor", *p.Next)
				}
				path = u.RequestURI()
			}
		}
		return names, pages
	}
	after := url.QueryEscape(base.Add(time.Hour).Format(time.RFC3339Nano))
	before := url.QueryEscape(base.Add(3 * time.Hour).Format(time.RFC3339Nano))
	tests := []struct {
		query string
		want  []string
		pages int
	}{
		{"", []string{"P4", "P3", "P2", "P1", "P0"}, 3},
		{"reverse=true", []string{"P0", "P1", "P2", "P3", "P4"}, 3},
		{"reverse=true&group=mHero", []string{"P0", "P1", "P2", "P3", "P4"}, 3},
		{"group=mhero", nil, 1},
		{"group=nobody", nil, 1},
		{"reverse=true&after=" + after + "&before=" + before, []string{"P1", "P2", "P3"}, 2},
		{"after=yesterday", nil, 1},
		{"urn=" + url.QueryEscape("tel:0777000003"), []string{"P3"}, 1},
		{"deleted=true", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			names, pages := list(contacts + "?" + tt.query)
			if !slices.Equal(names, tt.want) || pages != tt.pages {
				t.Fatalf("got %v in %d pages, want %v in %d", names, pages, tt.want, tt.pages)
			}
		})
	}
	e.want(e.call("GET", contacts+"?urn=12345", ""), 400, `{"detail": "Invalid URN: 12345"}`)
	e.want(e.call("GET", contacts+"?cursor=@@", ""), 404, `{"detail": "Invalid cursor"}`)
}

func TestFields(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	tests := []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"create", `{"name": "Facility Code", "type": "text"}`, 201,
			`{"key": "facility_code", "name": "Facility Code", "type": "text", "featured": false, "priority": 0,
			  "usages": {"flows": 0, "groups": 0, "campaign_events": 0}, "agent_access": "view",
			  "label": "Facility Code", "value_type": "text"}`},
		{"legacy label and value_type", `{"label": "Years", "value_type": "numeric"}`, 201, ""},
		{"duplicate name ignoring case", `{"name": "facility code", "type": "text"}`, 400, `{"name": ["This field must be unique."]}`},
		{"duplicate legacy label", `{"label": "FACILITY CODE", "value_type": "text"}`, 400, `{"label": ["This field must be unique."]}`},
		{"key collision is a plain 500", `{"name": "Facility-Code", "type": "text"}`, 500, ""},
		{"reserved key", `{"name": "Is", "type": "text"}`, 400, `{"name": ["Generated key \"is\" is invalid or a reserved name."]}`},
		{"key must start with a letter", `{"name": "2nd Phone", "type": "text"}`, 400,
			`{"name": ["Generated key \"2nd_phone\" is invalid or a reserved name."]}`},
		{"bad characters", `{"name": "Cadre/Grade", "type": "text"}`, 400, `{"name": ["Can only contain letters, numbers and hypens."]}`},
		{"spaces are trimmed", `{"name": " Cadre ", "type": "text"}`, 201, ""},
		{"numeric is only a legacy value_type", `{"name": "Age", "type": "numeric"}`, 400, `{"type": ["\"numeric\" is not a valid choice."]}`},
		{"too long", fmt.Sprintf(`{"name": %q, "type": "text"}`, strings.Repeat("a", 37)), 400,
			`{"name": ["Ensure this field has no more than 36 characters."]}`},
		{"bad type", `{"name": "Rank", "type": "string"}`, 400, `{"type": ["\"string\" is not a valid choice."]}`},
		{"no name", `{"type": "text"}`, 400, `{"non_field_errors": ["Field 'name' is required."]}`},
		{"no type", `{"name": "Rank"}`, 400, `{"non_field_errors": ["Field 'type' is required."]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.call("POST", "/api/v2/fields.json", tt.body)
			e.want(a, tt.status, tt.want)
			if tt.status == 500 && a.body != "Server Error. Site administrators have been notified." {
				t.Fatalf("500 body %q", a.body)
			}
		})
	}

	e.want(e.call("POST", "/api/v2/fields.json?key=years", `{"name": "Years Served", "type": "number"}`), 200, "")
	e.want(e.call("GET", "/api/v2/fields.json?key=years", ""), 200, `{"next": null, "previous": null, "results": [
		{"key": "years", "name": "Years Served", "type": "number", "featured": false, "priority": 0,
		 "usages": {"flows": 0, "groups": 0, "campaign_events": 0}, "agent_access": "view",
		 "label": "Years Served", "value_type": "numeric"}]}`)

	for i := 2; i < 250; i++ {
		e.srv.AddField(fmt.Sprintf("Extra %d", i), "text")
	}
	e.want(e.call("POST", "/api/v2/fields.json", `{"name": "One Too Many", "type": "text"}`), 409,
		`{"detail": "Cannot create object because workspace has reached limit."}`)
}

func TestGroups(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	a := e.call("POST", "/api/v2/groups.json", `{"name": "mHero"}`)
	e.want(a, 201, "")
	var g struct {
		UUID   string  `json:"uuid"`
		Name   string  `json:"name"`
		Query  *string `json:"query"`
		Status string  `json:"status"`
		System bool    `json:"system"`
		Count  int     `json:"count"`
	}
	if err := json.Unmarshal([]byte(a.body), &g); err != nil || g.UUID == "" || g.Query != nil || g.Name != "mHero" {
		t.Fatalf("created %s", a.body)
	}
	e.want(e.call("POST", "/api/v2/groups.json", `{"name": "MHERO"}`), 400, `{"name": ["This field must be unique."]}`)
	e.want(e.call("POST", "/api/v2/groups.json", `{"name": "a\"b"}`), 400, "")
	e.want(e.call("POST", "/api/v2/groups.json", fmt.Sprintf(`{"name": %q}`, strings.Repeat("g", 65))), 400, "")

	for _, q := range []string{"name=MHERO", "uuid=" + g.UUID} {
		a := e.call("GET", "/api/v2/groups.json?"+q, "")
		if !strings.Contains(a.body, g.UUID) {
			t.Fatalf("GET ?%s: %s", q, a.body)
		}
	}
	e.want(e.call("GET", "/api/v2/groups.json?name=Other", ""), 200, `{"next": null, "previous": null, "results": []}`)

	for i := 1; i < 250; i++ {
		e.srv.AddGroup(fmt.Sprintf("Group %d", i))
	}
	e.want(e.call("POST", "/api/v2/groups.json", `{"name": "One Too Many"}`), 409, "")
}

func TestContactActions(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	e.srv.AddGroup("mHero")
	e.srv.AddGroup("Nurses")
	a := e.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777000001"}, Groups: []rapidpro.GroupRef{{Name: "Nurses"}}})
	b := e.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777000002"}})
	groupsOf := func(i int) []string {
		var names []string
		for _, g := range e.srv.Contacts()[i].Groups {
			names = append(names, g.Name)
		}
		return names
	}
	action := func(body string) answer { return e.call("POST", "/api/v2/contact_actions.json", body) }

	// URNs are normalised without the workspace country: a local number
	// matches nothing, an international one with punctuation matches.
	e.want(action(fmt.Sprintf(`{"contacts": [%q, "tel:0777000002"], "action": "add", "group": "MHERO"}`, a.UUID)), 400,
		`{"contacts": ["No such object: tel:0777000002"]}`)
	res := action(fmt.Sprintf(`{"contacts": [%q, "tel:+231-777-000-002"], "action": "add", "group": "MHERO"}`, a.UUID))
	e.want(res, 204, "")
	if res.body != "" {
		t.Fatalf("204 with body %q", res.body)
	}
	if !slices.Equal(groupsOf(0), []string{"Nurses", "mHero"}) || !slices.Equal(groupsOf(1), []string{"mHero"}) {
		t.Fatalf("after add: %v, %v", groupsOf(0), groupsOf(1))
	}

	e.want(action(fmt.Sprintf(`{"contacts": [%q, "tel:+231999999999"], "action": "remove", "group": "mHero"}`, a.UUID)), 400,
		`{"contacts": ["No such object: tel:+231999999999"]}`)
	if !slices.Equal(groupsOf(0), []string{"Nurses", "mHero"}) {
		t.Fatalf("a failed action changed groups: %v", groupsOf(0))
	}

	many := make([]string, 101)
	for i := range many {
		many[i] = a.UUID
	}
	manyJSON, _ := json.Marshal(many)
	for _, tt := range []struct{ body, want string }{
		{fmt.Sprintf(`{"contacts": %s, "action": "add", "group": "mHero"}`, manyJSON),
			`{"contacts": ["Ensure this field has no more than 100 elements."]}`},
		{`{"contacts": [], "action": "add", "group": "mHero"}`, `{"contacts": ["Contacts can't be empty."]}`},
		{fmt.Sprintf(`{"contacts": [%q], "action": "add"}`, a.UUID),
			`{"non_field_errors": ["For action \"add\" you should also specify a group"]}`},
		{fmt.Sprintf(`{"contacts": [%q], "action": "block", "group": "mHero"}`, a.UUID),
			`{"non_field_errors": ["For action \"block\" you should not specify a group"]}`},
		{fmt.Sprintf(`{"contacts": [%q], "action": "add", "group": "Nobody"}`, a.UUID), `{"group": ["No such object: Nobody"]}`},
		{fmt.Sprintf(`{"contacts": [%q], "action": "explode"}`, a.UUID), `{"action": ["\"explode\" is not a valid choice."]}`},
		{fmt.Sprintf(`{"contacts": [%q], "action": "remove", "group": "mHero"}`, strings.ToUpper(a.UUID)),
			fmt.Sprintf(`{"contacts": ["No such object: %s"]}`, strings.ToUpper(a.UUID))},
	} {
		e.want(action(tt.body), 400, tt.want)
	}

	e.want(action(fmt.Sprintf(`{"contacts": [%q], "action": "remove", "group": "mHero"}`, b.UUID)), 204, "")
	if len(groupsOf(1)) != 0 {
		t.Fatalf("after remove: %v", groupsOf(1))
	}
	e.want(action(fmt.Sprintf(`{"contacts": [%q], "action": "block"}`, a.UUID)), 204, "")
	if c := e.srv.Contacts()[0]; c.Status != "blocked" || len(c.Groups) != 0 {
		t.Fatalf("blocked contact %+v: want no groups", c)
	}
	e.want(action(fmt.Sprintf(`{"contacts": [%q], "action": "add", "group": "mHero"}`, a.UUID)), 400,
		fmt.Sprintf(`{"non_field_errors": ["Non-active contacts cannot be added to groups: %s"]}`, a.UUID))
	e.want(action(fmt.Sprintf(`{"contacts": [%q], "action": "unblock"}`, a.UUID)), 204, "")

	e.want(action(fmt.Sprintf(`{"contacts": [%q], "action": "delete"}`, b.UUID)), 204, "")
	if n := len(e.srv.Contacts()); n != 1 {
		t.Fatalf("%d live contacts after delete", n)
	}
	// Deleting frees the URN.
	e.want(e.call("POST", contacts, `{"urns": ["tel:+231777000002"]}`), 201, "")
}

func TestRateLimit(t *testing.T) {
	clk := &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, rapidprotest.Options{RateLimit: 2, RateWindow: time.Hour, Now: clk.Now})

	e.want(e.call("GET", contacts, ""), 200, "")
	clk.Advance(10 * time.Minute)
	e.want(e.call("GET", contacts, ""), 200, "")
	clk.Advance(100 * time.Millisecond)
	a := e.call("POST", contacts, `{}`)
	e.want(a, 429, `{"detail": "Request was throttled. Expected available in 3000 seconds."}`)
	if a.header.Get("Retry-After") != "3000" {
		t.Fatalf("Retry-After %q, want 3000 (rounded up)", a.header.Get("Retry-After"))
	}
	// The v2 scope has its own budget; a bad token is not counted.
	e.want(e.callAs("Token wrong", "GET", "/api/v2/workspace.json", ""), 403, "")
	e.want(e.call("GET", "/api/v2/workspace.json", ""), 200, "")
	e.want(e.call("GET", "/api/v2/groups.json", ""), 200, "")
	e.want(e.call("GET", "/api/v2/fields.json", ""), 429, "")

	clk.Advance(50 * time.Minute)
	e.want(e.call("GET", contacts, ""), 200, "")
}

func TestFaults(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	ws := "/api/v2/workspace.json"
	e.srv.Inject(rapidprotest.Fault{Path: ws, Skip: 1, Times: 2, Status: 502})
	e.srv.Inject(rapidprotest.Fault{Method: "POST", Status: 503, RetryAfter: 1500 * time.Millisecond})

	e.want(e.call("GET", ws, ""), 200, "")
	a := e.call("GET", ws, "")
	if a.status != 502 || !strings.Contains(a.body, "<html>") {
		t.Fatalf("got %d %q, want an HTML 502", a.status, a.body)
	}
	e.want(e.call("GET", ws, ""), 502, "")
	e.want(e.call("GET", ws, ""), 200, "")

	a = e.call("POST", contacts, `{"name": "A"}`)
	if a.status != 503 || a.body != "" || a.header.Get("Retry-After") != "2" {
		t.Fatalf("got %d %q Retry-After %q", a.status, a.body, a.header.Get("Retry-After"))
	}
	if len(e.srv.Contacts()) != 0 {
		t.Fatal("a fault before commit wrote")
	}

	e.srv.Inject(rapidprotest.Fault{Path: contacts, Status: 500, AfterCommit: true})
	a = e.call("POST", contacts, `{"name": "A"}`)
	if a.status != 500 || a.body != "Server Error. Site administrators have been notified." || len(e.srv.Contacts()) != 1 {
		t.Fatalf("got %d %q with %d contacts", a.status, a.body, len(e.srv.Contacts()))
	}

	e.srv.Inject(rapidprotest.Fault{Path: contacts, Drop: true, AfterCommit: true})
	req, _ := http.NewRequest("POST", e.srv.URL()+contacts, strings.NewReader(`{"name": "B"}`))
	req.Header.Set("Authorization", "Token "+e.srv.Token())
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a dropped connection answered")
	}
	if len(e.srv.Contacts()) != 2 {
		t.Fatal("the write before the drop was lost")
	}

	var statuses []int
	for _, r := range e.srv.Requests() {
		statuses = append(statuses, r.Status)
	}
	if want := []int{200, 502, 502, 200, 503, 500, 0}; !slices.Equal(statuses, want) {
		t.Fatalf("recorded statuses %v, want %v", statuses, want)
	}
	if r := e.srv.Requests()[4]; r.Method != "POST" || r.Body != `{"name": "A"}` || r.Header.Get("Authorization") == "" {
		t.Fatalf("recorded %+v", r)
	}
}

func TestAddContactPanicsOnSeedMistakes(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	e.srv.AddContact(rapidpro.Contact{URNs: []string{"tel:+231777000001"}})
	tests := map[string]rapidpro.Contact{
		"taken URN":     {URNs: []string{"tel:0777000001"}},
		"invalid URN":   {URNs: []string{"tel:12"}},
		"unknown group": {Groups: []rapidpro.GroupRef{{Name: "Nobody"}}},
		"unknown field": {Fields: map[string]*string{"nope": nil}},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			e.srv.AddContact(c)
		})
	}
}
