package mediator

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const (
	testToken     = "secret-rapidpro-token-0123456789abcdef0123"
	testOIMPass   = "secret-oim-password"
	testSyncUser  = "openhim"
	testSyncPass  = "secret-sync-password"
	testURN       = "urn:mediator:mhero-sync-test"
	fixtureGroup  = "mHero"
	otherGroup    = "Kakata nurses"
	fixtureSource = "../testdata/providers-demo.xml"
)

// clock runs at real speed from a chosen start and can jump ahead, so a
// test can skip the hours between runs while short waits still end.
type clock struct {
	mu    sync.Mutex
	start time.Time
	base  time.Time
}

func newClock(base time.Time) *clock { return &clock{start: time.Now(), base: base} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.Add(time.Since(c.start))
}

// Advance jumps the clock ahead by d.
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.base = c.base.Add(d) }

// env is the whole path: a fake OpenInfoMan, a RapidPro emulator, a fake
// OpenHIM core and the mediator's HTTP service, all on loopback.
type env struct {
	t         *testing.T
	registry  *csdtest.Server
	workspace *rapidprotest.Server
	core      *openhimtest.Core
	state     *State
	syncer    *Syncer
	srv       *Server
	server    *httptest.Server
	clock     *clock
	metrics   *Metrics
	completed chan string // transactions the completer finished, with answerBudget
}

type envOptions struct {
	doc          []byte
	rapidProHTTP *http.Client
	retryCap     time.Duration
	workspace    rapidprotest.Options // Token and Country are set by newEnv
	pageSize     int                  // provider-search page size; default 5
	ratePerHour  int                  // the client's RapidPro budget; default none
	tune         func(*Settings)      // changes the settings before the first run
	oimHTTP      *http.Client
	cadreNames   map[string]string
	answerBudget time.Duration // when set, runs that outlast it are completed asynchronously
	concurrency  int           // writes in flight at once; default one at a time
	maxPending   int           // pending work a run takes on; default the Syncer's
	chunkSize    int           // changed providers a run holds at once; default the Syncer's
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.doc == nil {
		o.doc = readFixture(t)
	}
	registry, err := csdtest.New(o.doc, csdtest.Options{Document: "Providers", Username: "oim", Password: testOIMPass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(registry.Close)
	o.workspace.Token, o.workspace.Country = testToken, "LR"
	workspace := rapidprotest.New(o.workspace)
	t.Cleanup(workspace.Close)
	core := openhimtest.New(openhimtest.Options{})
	t.Cleanup(core.Close)

	state, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { state.Close() })
	clk := newClock(time.Date(2025, 1, 1, 6, 0, 0, 0, time.UTC))
	metrics := NewMetrics(nil)
	if o.retryCap == 0 {
		o.retryCap = 5 * time.Second
	}
	if o.pageSize == 0 {
		o.pageSize = 5
	}
	settings := Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: registry.URL(), Username: "oim", Password: testOIMPass, Document: "Providers", PageSize: o.pageSize},
		RapidPro:       RapidProSettings{URL: workspace.URL(), Token: testToken, Group: fixtureGroup},
		InactivePolicy: InactiveRemoveFromGroup,
	}
	if o.tune != nil {
		o.tune(&settings)
	}
	syncer, err := NewSyncer(settings, Options{
		State: state, Metrics: metrics, RapidProHTTP: o.rapidProHTTP, OpenInfoManHTTP: o.oimHTTP, RapidProRetryAfterCap: o.retryCap, RapidProRatePerHour: o.ratePerHour,
		LookupThreshold: 10, WatermarkMargin: time.Minute, Now: clk.Now, CadreNames: o.cadreNames,
		WriteConcurrency: o.concurrency, MaxPending: o.maxPending, ChunkSize: o.chunkSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	var completer *Completer
	completed := make(chan string, 16)
	if o.answerBudget > 0 {
		completer = newTestCompleter(t, core, state, completed)
	}
	srv := NewServer(ServerOptions{Syncer: syncer, Metrics: metrics, MediatorURN: testURN, Username: testSyncUser, Password: testSyncPass,
		Completer: completer, AnswerBudget: o.answerBudget})
	srv.SetReady(true) // as serve does once registered and configured
	server := httptest.NewServer(srv.Echo)
	t.Cleanup(server.Close)
	e := &env{t: t, registry: registry, workspace: workspace, core: core, state: state, syncer: syncer, srv: srv, server: server, clock: clk, metrics: metrics, completed: completed}
	e.register(testURN, testSyncUser, testSyncPass)
	return e
}

// register registers urn with core as serve does, its polling route aimed at
// the test server with the given sync credentials: core.Poll calls what the
// registration declares, so a port or password mismatch shows.
func (e *env) register(urn, user, pass string) {
	e.t.Helper()
	addr := e.server.Listener.Addr().(*net.TCPAddr)
	reg := Registration{
		URN: urn, Version: "1.0.0", Host: addr.IP.String(), Port: addr.Port, Username: user, Password: pass,
		PollingSchedule: "*/10 * * * *", ChannelTimeout: time.Hour, Settings: Settings{InactivePolicy: InactiveRemoveFromGroup},
	}
	client := openhim.NewClient(openhim.Config{BaseURL: e.core.URL(), Auth: openhim.NewBasicAuth("root@openhim.org", "openhim-password"), HTTPClient: e.core.Client()})
	if err := client.Register(context.Background(), reg.Mediator()); err != nil {
		e.t.Fatal(err)
	}
}

func readFixture(t *testing.T) []byte {
	t.Helper()
	doc, err := os.ReadFile(fixtureSource)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// trigger calls /sync as OpenHIM's polling channel does and returns what
// core recorded.
func (e *env) trigger() openhimtest.Transaction {
	e.t.Helper()
	tx, err := e.core.Poll(context.Background(), testURN)
	if err != nil {
		e.t.Fatal(err)
	}
	if tx.StoreError != nil {
		e.t.Fatalf("core could not store the response: %v\n%s", tx.StoreError, tx.RawBody)
	}
	if tx.ValidationError != nil {
		e.t.Fatalf("core could not record the response: %v\n%s", tx.ValidationError, tx.RawBody)
	}
	for _, secret := range []string{testToken, testOIMPass, testSyncPass} {
		if strings.Contains(tx.RawBody, secret) {
			e.t.Fatalf("the OpenHIM response carries a secret: %s", tx.RawBody)
		}
	}
	return tx
}

// writes are the requests that change RapidPro, since index from.
func (e *env) writes(from int) []rapidprotest.Request {
	var out []rapidprotest.Request
	for _, r := range e.workspace.Requests()[from:] {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

func contactsByGlobalID(cs []rapidpro.Contact) map[string]rapidpro.Contact {
	out := map[string]rapidpro.Contact{}
	for _, c := range cs {
		if v := c.Fields[FieldGlobalID]; v != nil {
			out[*v] = c
		}
	}
	return out
}

func groupNames(c rapidpro.Contact) []string {
	var names []string
	for _, g := range c.Groups {
		names = append(names, g.Name)
	}
	sort.Strings(names)
	return names
}

func fixtureID(n string) string { return "urn:uuid:7d1e2c00-0000-4000-8000-0000000000" + n }

// editProvider applies old, new replacement pairs inside one provider of doc.
func editProvider(t *testing.T, doc []byte, n string, oldNew ...string) []byte {
	t.Helper()
	s := string(doc)
	start := strings.Index(s, `<provider entityID="`+fixtureID(n)+`"`)
	if start < 0 {
		t.Fatalf("fixture has no provider %s", n)
	}
	end := start + strings.Index(s[start:], "</provider>")
	block := s[start:end]
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(block, oldNew[i]) {
			t.Fatalf("provider %s has no %q", n, oldNew[i])
		}
		block = strings.Replace(block, oldNew[i], oldNew[i+1], 1)
	}
	return []byte(s[:start] + block + s[end:])
}

func TestSyncEndToEnd(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Entered by hand before mHero, in a group someone else manages.
	e.workspace.AddGroup(otherGroup)
	e.workspace.AddContact(rapidpro.Contact{Name: "Grace S.", URNs: []string{"tel:+231777123406"}, Groups: []rapidpro.GroupRef{{Name: otherGroup}}})

	tx := e.trigger()
	if tx.Response.Status != openhim.StatusCompletedWithErrors {
		t.Fatalf("status %q, want %q: %s", tx.Response.Status, openhim.StatusCompletedWithErrors, tx.RawBody)
	}
	wantCounts := map[string]string{
		"providers": "23", "created": "15", "updated": "1", "unchanged": "0", "inactive": "2",
		"group_added": "1", "skipped_no_phone": "1", "skipped_invalid_phone": "1",
		"failed_duplicate_globalid": "2", "failed_urn_conflict": "1", "failed": "3", "deferred": "0",
	}
	for k, want := range wantCounts {
		if got := tx.Response.Properties[k]; got != want {
			t.Errorf("property %s = %q, want %q", k, got, want)
		}
	}
	names := make([]string, 0, len(tx.Response.Orchestrations))
	for _, o := range tx.Response.Orchestrations {
		names = append(names, o.Name)
	}
	if want := []string{"RapidPro setup", "OpenInfoMan organization-search", "OpenInfoMan facility-search", "OpenInfoMan provider-search", "RapidPro reads", "RapidPro writes"}; !slices.Equal(names, want) {
		t.Errorf("orchestrations %q, want one per phase %q", names, want)
	}

	contacts := contactsByGlobalID(e.workspace.Contacts())
	if len(contacts) != 16 || len(e.workspace.Contacts()) != 16 {
		t.Fatalf("%d contacts (%d with a globalid), want 16", len(e.workspace.Contacts()), len(contacts))
	}
	want := map[string]struct {
		name   string
		urns   []string
		groups []string
	}{
		"01": {"Mary Kollie", []string{"tel:+231777123401"}, []string{fixtureGroup}},
		"02": {"Joseph Flomo", []string{"tel:+231886123402", "tel:+231777123402"}, []string{fixtureGroup}},
		"04": {"Musu Kamara", []string{"tel:+231777123404", "tel:+231886123404"}, []string{fixtureGroup}},
		"05": {"Samuel Tarr", []string{"tel:+231777123405"}, []string{fixtureGroup}},
		"06": {"Grace Sirleaf", []string{"tel:+231777123406"}, []string{otherGroup, fixtureGroup}},
		"08": {"Fatu Johnson", []string{"tel:+231777123499"}, []string{fixtureGroup}},
		"17": {"Hawa Sheriff", []string{"tel:+231886123417", "tel:+231886123418"}, []string{fixtureGroup}},
	}
	for n, w := range want {
		c, ok := contacts[fixtureID(n)]
		if !ok {
			t.Errorf("no contact for provider %s", n)
			continue
		}
		if c.Name != w.name || !slices.Equal(c.URNs, w.urns) || !slices.Equal(groupNames(c), w.groups) {
			t.Errorf("provider %s: contact %q %q %q, want %q %q %q", n, c.Name, c.URNs, groupNames(c), w.name, w.urns, w.groups)
		}
	}
	for _, n := range []string{"09", "10", "11", "12", "19", "aa"} {
		if _, ok := contacts[fixtureID(n)]; ok {
			t.Errorf("provider %s got a contact; it must not", n)
		}
	}

	// Nothing changed: no write at all.
	e.clock.Advance(time.Hour)
	before := len(e.workspace.Requests())
	tx = e.trigger()
	if w := e.writes(before); len(w) != 0 {
		t.Fatalf("second run wrote %d times: %+v", len(w), w)
	}
	// The first run's rejects (the duplicate pair's key and the conflict)
	// still stand, so the run is not Successful, though it met none anew.
	if tx.Response.Status != openhim.StatusCompletedWithErrors || tx.Response.Properties["rejected"] != "2" || tx.Response.Properties["failed"] != "0" {
		t.Fatalf("second run status %q: %s", tx.Response.Status, tx.RawBody)
	}

	// One provider changed: exactly one write.
	changed := editProvider(t, readFixture(t), "01", "0777 123 401", "0777 123 501", `updated="2024-03-01T09:00:00Z"`, `updated="2025-01-01T07:30:00Z"`)
	if err := e.registry.SetDocument(changed); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	before = len(e.workspace.Requests())
	tx = e.trigger()
	w := e.writes(before)
	if len(w) != 1 || w[0].Query.Get("uuid") == "" {
		t.Fatalf("changed run wrote %+v, want exactly one update by uuid", w)
	}
	if got := tx.Response.Properties["updated"]; got != "1" {
		t.Errorf("updated = %q, want 1", got)
	}
	c := contactsByGlobalID(e.workspace.Contacts())[fixtureID("01")]
	if !slices.Equal(c.URNs, []string{"tel:+231777123501"}) {
		t.Errorf("changed contact urns %q, want the new phone only", c.URNs)
	}
}

func TestSyncInactiveLeavesGroup(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.workspace.AddGroup(otherGroup)
	e.trigger()
	id := fixtureID("20")
	c := contactsByGlobalID(e.workspace.Contacts())[id]
	if !slices.Equal(groupNames(c), []string{fixtureGroup}) {
		t.Fatalf("before: groups %q", groupNames(c))
	}
	doc := editProvider(t, readFixture(t), "20", `updated="2024-03-01T09:00:00Z" status="Active"`, `updated="2025-01-01T07:00:00Z" status="106-002"`)
	if err := e.registry.SetDocument(doc); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	tx := e.trigger()
	if got := tx.Response.Properties["group_removed"]; got != "1" {
		t.Fatalf("group_removed = %q, want 1: %s", got, tx.RawBody)
	}
	after := contactsByGlobalID(e.workspace.Contacts())[id]
	if len(after.Groups) != 0 || after.UUID != c.UUID {
		t.Fatalf("after: contact %s groups %q, want the same contact out of every group", after.UUID, groupNames(after))
	}
}

func TestConcurrentTriggersStartOneRun(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}})

	first := make(chan openhimtest.Transaction)
	go func() { first <- e.trigger() }()
	<-gate.entered // the first run is now inside RapidPro

	second := e.trigger()
	if second.Response.Status != openhim.StatusCompleted || !strings.Contains(second.Response.Response.Body, "in progress") {
		t.Fatalf("second trigger: %s", second.RawBody)
	}
	close(gate.release)
	tx := <-first
	if tx.Response.Status != openhim.StatusCompletedWithErrors {
		t.Fatalf("first trigger status %q", tx.Response.Status)
	}
	runs := 0
	for _, r := range e.workspace.Requests() {
		if strings.HasSuffix(r.Path, "/workspace.json") {
			runs++
		}
	}
	if runs != 1 {
		t.Fatalf("%d runs reached RapidPro, want 1", runs)
	}
}

// gateTransport holds the first request until released.
type gateTransport struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		select {
		case <-g.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestFaultRapidProDuringSync(t *testing.T) {
	tests := []struct {
		name    string
		outcome string
		fault   rapidprotest.Fault
		// first run's properties beyond the fixture's own rejects
		wantFirst map[string]string
	}{
		{
			name:      "throttled with a short Retry-After",
			outcome:   "slept on, every contact created in the run",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 3, Status: http.StatusTooManyRequests, RetryAfter: time.Second},
			wantFirst: map[string]string{"deferred": "0", "failed": "3", "created": "15"},
		},
		{
			name:      "throttled for longer than a run waits",
			outcome:   "the run stops; the rest pending, created by the next run",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 3, Status: http.StatusTooManyRequests, RetryAfter: time.Hour},
			wantFirst: map[string]string{"deferred": "16", "created": "3"},
		},
		{
			name:      "server error on a create",
			outcome:   "that provider pending, created by the next run",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 2, Status: http.StatusInternalServerError},
			wantFirst: map[string]string{"failed_server": "1", "created": "14"},
		},
		{
			name:      "server error after the create committed",
			outcome:   "the lookup finds the contact: created once",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 2, Status: http.StatusInternalServerError, AfterCommit: true},
			wantFirst: map[string]string{"failed": "3", "created": "15"},
		},
		{
			name:      "connection dropped after the create committed",
			outcome:   "the lookup finds the contact: created once",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Skip: 4, Drop: true, AfterCommit: true},
			wantFirst: map[string]string{"failed": "3", "created": "15"},
		},
		{
			name:      "connection dropped on a group add",
			outcome:   "retried; the contact joins the group, no duplicate",
			fault:     rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contact_actions.json", Drop: true},
			wantFirst: map[string]string{"failed": "3", "group_added": "1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{retryCap: 2 * time.Second})
			e.workspace.AddGroup(otherGroup)
			e.workspace.AddContact(rapidpro.Contact{Name: "Grace S.", URNs: []string{"tel:+231777123406"}, Groups: []rapidpro.GroupRef{{Name: otherGroup}}})
			e.workspace.Inject(tc.fault)
			tx := e.trigger()
			if tx.Response.Status != openhim.StatusCompletedWithErrors {
				t.Fatalf("first run %q: %s", tx.Response.Status, tx.RawBody)
			}
			for k, want := range tc.wantFirst {
				if got := tx.Response.Properties[k]; got != want {
					t.Errorf("first run: %s = %q, want %q", k, got, want)
				}
			}
			// The watermark advances either way: what failed transiently or
			// was deferred is pending in the state, and tried first next run.
			transient := tx.Response.Properties["deferred"] != "0" || tx.Response.Properties["failed_server"] != "" || tx.Response.Properties["failed_transport"] != ""
			if pending := tx.Response.Properties["pending"] != "0"; pending != transient {
				t.Errorf("first run: pending %q with transient failures %v", tx.Response.Properties["pending"], transient)
			}
			e.clock.Advance(time.Hour)
			tx = e.trigger()
			if tx.Response.Status == openhim.StatusFailed {
				t.Fatalf("second run failed: %s", tx.RawBody)
			}
			all := e.workspace.Contacts()
			byID := contactsByGlobalID(all)
			if len(all) != 16 || len(byID) != 16 {
				t.Fatalf("%d contacts, %d with a globalid, want 16 of each (no duplicate, nothing lost): %s", len(all), len(byID), tx.RawBody)
			}
			for id, c := range byID {
				if !slices.Contains(groupNames(c), fixtureGroup) {
					t.Errorf("contact of %s is not in %s after the second run", id, fixtureGroup)
				}
			}
			// A third run has nothing left to do.
			e.clock.Advance(time.Hour)
			before := len(e.workspace.Requests())
			e.trigger()
			if w := e.writes(before); len(w) != 0 {
				t.Fatalf("third run still wrote %+v", w)
			}
		})
	}
}

func TestSyncFailsWhenRegistryFails(t *testing.T) {
	e := newEnv(t, envOptions{})
	// What OpenInfoMan answers when its XQuery fails.
	e.registry.FailNext(http.StatusUnprocessableEntity, 1)
	tx := e.trigger()
	if tx.Response.Status != openhim.StatusFailed {
		t.Fatalf("status %q, want Failed: %s", tx.Response.Status, tx.RawBody)
	}
	for _, w := range e.writes(0) {
		if strings.Contains(w.Path, "contact") {
			t.Fatalf("a run whose pull failed wrote a contact: %+v", w)
		}
	}
	if wm, _ := e.state.Watermark(); !wm.IsZero() {
		t.Fatalf("watermark advanced to %v by a failed run", wm)
	}
	var body struct{ Error string }
	if err := json.Unmarshal([]byte(tx.Response.Response.Body), &body); err != nil || !strings.Contains(body.Error, "OpenInfoMan") {
		t.Fatalf("response body %q does not say what failed", tx.Response.Response.Body)
	}
}

func TestRegistrationAcceptedByCore(t *testing.T) {
	core := openhimtest.New(openhimtest.Options{})
	defer core.Close()
	reg := Registration{
		URN: testURN, Version: "1.0.0", Host: "mhero-sync", Port: 8544, Username: testSyncUser, Password: testSyncPass,
		PollingSchedule: "*/10 * * * *", ChannelTimeout: time.Hour,
		Settings: Settings{
			OpenInfoMan:    OpenInfoManSettings{URL: "http://openinfoman:8984", Document: "Providers", PageSize: 500},
			RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: testToken, Group: "mHero", Country: "LR"},
			InactivePolicy: InactiveRemoveFromGroup,
		},
	}
	m := reg.Mediator()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	client := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewBasicAuth("root@openhim.org", "openhim-password"), HTTPClient: core.Client()})
	if err := client.Register(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if _, ok := core.Mediator(testURN); !ok {
		t.Fatal("core did not store the registration")
	}
	ch := m.DefaultChannelConfig[0]
	if ch.Type != "polling" || ch.PollingSchedule == "" || ch.Timeout != 3600000 || m.Endpoints[0].Port != 8544 {
		t.Fatalf("channel %+v, endpoint %+v", ch, m.Endpoints[0])
	}
}

func TestConsoleConfigChangesSettings(t *testing.T) {
	base := Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: "http://openinfoman:8984", Password: "kept", Document: "Providers", PageSize: 500},
		RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: "kept-token", Group: "mHero"},
		InactivePolicy: InactiveRemoveFromGroup,
	}
	tests := []struct {
		name    string
		config  string
		check   func(Settings) bool
		wantErr string
	}{
		{"group and policy", `{"rapidpro": {"url": "https://rapidpro.example.org", "group": "Health Workers", "token": ""}, "inactivePolicy": "block"}`,
			func(s Settings) bool {
				return s.RapidPro.Group == "Health Workers" && s.InactivePolicy == InactiveBlock && s.RapidPro.Token == "kept-token"
			}, ""},
		{"page size and country", `{"openinfoman": {"url": "http://oim:8984", "document": "Providers", "pageSize": 200, "password": ""}, "rapidpro": {"url": "https://r.example.org", "group": "mHero", "country": "lr"}}`,
			func(s Settings) bool {
				return s.OpenInfoMan.PageSize == 200 && s.OpenInfoMan.Password == "kept" && s.RapidPro.Country == "LR"
			}, ""},
		{"targeting, reconciliation and write-back", `{"targeting": {"facilitiesDocument": "Facilities", "districtLevel": 3, "districtCode": "", "cadreScheme": "1.3.6.1.4.1.21367.100.1"}, "reconcile": {"everyHours": 6, "maxRetireShare": 0.05}, "writeBack": {"enabled": true, "code": "", "authority": ""}}`,
			func(s Settings) bool {
				return s.Targeting.FacilitiesDocument == "Facilities" && s.Targeting.DistrictLevel == 3 && s.Reconcile.every() == 6*time.Hour &&
					s.Reconcile.maxShare() == 0.05 && s.WriteBack.Enabled && s.otherID("u").Code == DefaultWriteBackCode && s.otherID("u").AssigningAuthorityName == "https://rapidpro.example.org"
			}, ""},
		{"a retire share above one", `{"reconcile": {"maxRetireShare": 1.5}}`, nil, "maxRetireShare 1.5"},
		{"a targeting label RapidPro refuses", `{"targeting": {"fields": {"cadre": {"label": "Cadre?"}}}}`, nil, "letters, digits"},
		{"unknown policy", `{"inactivePolicy": "delete"}`, nil, `inactive policy "delete"`},
		{"not an object", `"OK"`, nil, "console config"},
		{"bad url", `{"openinfoman": {"url": "openinfoman", "document": "Providers", "pageSize": 1}}`, nil, "not an http(s) URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := base.WithConsoleConfig([]byte(tc.config))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "kept-token") {
					t.Fatal("the error carries the token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(got) {
				t.Fatalf("settings %+v", got)
			}
		})
	}
}

// Two RapidPro contacts claiming one health worker (left by an earlier
// tool) are reported for a person to merge; neither is written.
func TestSyncRefusesDuplicateContactsInRapidPro(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.workspace.AddField("globalid", "text")
	id := fixtureID("03")
	for _, phone := range []string{"tel:+231777000001", "tel:+231777000002"} {
		e.workspace.AddContact(rapidpro.Contact{Name: "Comfort W.", URNs: []string{phone}, Fields: map[string]*string{FieldGlobalID: strp(id)}})
	}
	// Neither is in the managed group: the first, full pull reads the whole
	// workspace and so finds both.
	before := e.workspace.Contacts()

	tx := e.trigger()
	if got := tx.Response.Properties["failed_duplicate_globalid"]; got != "3" {
		t.Fatalf("failed_duplicate_globalid = %q, want 3 (the fixture's pair and this one): %s", got, tx.RawBody)
	}
	after := map[string]rapidpro.Contact{}
	for _, c := range e.workspace.Contacts() {
		after[c.UUID] = c
	}
	for _, c := range before {
		if a := after[c.UUID]; a.Name != c.Name || !slices.Equal(a.URNs, c.URNs) || !a.ModifiedOn.Equal(c.ModifiedOn) {
			t.Errorf("duplicate contact %s was written: %+v", c.UUID, a)
		}
	}
	if !strings.Contains(tx.RawBody, "merge them in RapidPro") {
		t.Errorf("the response does not say what to do: %s", tx.RawBody)
	}
}
