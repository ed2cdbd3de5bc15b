package openhimtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/openhim"
)

// routeTo is the host and port of a test server, as a registration names
// them.
func routeTo(t *testing.T, serverURL string) (string, int) {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), port
}

// registerChannel registers urn with one default channel, given as JSON, the
// way a mediator does at start-up.
func registerChannel(t *testing.T, core *Core, urn, channel string) {
	t.Helper()
	doc := `{"urn":"` + urn + `","version":"1.0.0","name":"test","endpoints":[{"name":"e","host":"h","port":1,"primary":true}],
	 "defaultChannelConfig":[` + channel + `]}`
	if status, reply := call(t, core, "POST", "/mediators", doc); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, reply)
	}
}

// pollingChannel is a polling channel whose only route is route.
func pollingChannel(route string) string {
	return `{"name":"poll","urlPattern":"^/poll$","type":"polling","pollingSchedule":"*/10 * * * *","routes":[` + route + `]}`
}

// seen is what a route received.
type seen struct {
	method, path, user, pass string
	hasAuth                  bool
	channelID, txID          string
}

// recordingRoute serves a fixed json+openhim reply and reports each request.
func recordingRoute(t *testing.T) (*httptest.Server, <-chan seen) {
	t.Helper()
	got := make(chan seen, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		got <- seen{r.Method, r.URL.Path, user, pass, ok, r.Header.Get("Channel-Id"), r.Header.Get("X-Openhim-Transactionid")}
		w.Header().Set("Content-Type", openhim.ContentType)
		_, _ = w.Write([]byte(`{"status":"Successful","response":{"status":200,"body":"ok","timestamp":"2024-05-01T06:31:10.402Z"}}`))
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestPollCallsTheRegisteredRoute(t *testing.T) {
	listening, got := recordingRoute(t)
	host, port := routeTo(t, listening.URL)
	closed := httptest.NewServer(http.NotFoundHandler())
	_, closedPort := routeTo(t, closed.URL)
	closed.Close()

	route := func(extra string) string {
		return fmt.Sprintf(`{"name":"sync","host":%q,"port":%d,"primary":true%s}`, host, port, extra)
	}
	for _, tc := range []struct {
		name, channel                  string
		wantPath, wantUser, wantPass   string
		wantAuth, wantTransportFailure bool
	}{
		{name: "path and credentials of the route", channel: pollingChannel(route(`,"path":"/sync","username":"openhim","password":"change-me"`)),
			wantPath: "/sync", wantUser: "openhim", wantPass: "change-me", wantAuth: true},
		{name: "no credentials, no auth", channel: pollingChannel(route(`,"path":"/sync"`)), wantPath: "/sync"},
		{name: "username alone, no auth", channel: pollingChannel(route(`,"path":"/sync","username":"openhim"`)), wantPath: "/sync"},
		{name: "no path: the trigger's", channel: pollingChannel(route("")), wantPath: "/trigger"},
		{name: "non-primary and disabled routes skipped", channel: pollingChannel(
			`{"name":"other","host":"127.0.0.1","port":1,"primary":false},{"name":"off","host":"127.0.0.1","port":1,"primary":true,"status":"disabled"},` +
				route(`,"path":"/sync"`)), wantPath: "/sync"},
		// The mediator listens on one port and registers another: core
		// reaches nothing, and neither may the fake.
		{name: "registered port not the listening one", channel: pollingChannel(fmt.Sprintf(`{"name":"sync","host":%q,"port":%d,"path":"/sync","primary":true}`, host, closedPort)),
			wantTransportFailure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := New(Options{})
			defer core.Close()
			registerChannel(t, core, urn, tc.channel)

			tx, err := core.Poll(context.Background(), urn)
			if tc.wantTransportFailure {
				if err == nil || tx.Status != openhim.StatusFailed || !strings.Contains(tx.RouteURL, ":"+strconv.Itoa(closedPort)+"/") {
					t.Errorf("Poll = %+v, %v; want a Failed transaction to the registered port %d", tx, err, closedPort)
				}
				select {
				case r := <-got:
					t.Errorf("the listening server was called: %+v", r)
				default:
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := <-got
			want := seen{http.MethodGet, tc.wantPath, tc.wantUser, tc.wantPass, tc.wantAuth, tx.ChannelID, tx.ID}
			if r != want {
				t.Errorf("route got %+v, want %+v", r, want)
			}
			if tx.URN != urn || tx.Status != openhim.StatusSuccessful || tx.RouteURL != "http://"+net.JoinHostPort(host, strconv.Itoa(port))+tc.wantPath {
				t.Errorf("recorded %+v", tx)
			}
			again, err := core.Poll(context.Background(), urn)
			if err != nil || again.ChannelID != tx.ChannelID || again.ID == tx.ID {
				t.Errorf("second poll %+v, %v: want the same channel id, a new transaction id", again, err)
			}
			<-got
		})
	}
}

func TestPollRefusesWhatNoChannelWouldCall(t *testing.T) {
	route := `{"name":"sync","host":"127.0.0.1","port":8544,"path":"/sync","primary":true}`
	for _, tc := range []struct {
		name, channel string // "" registers nothing
		want          string
	}{
		{"unknown urn", "", "no mediator registered"},
		{"http channel", `{"name":"web","urlPattern":"^/web$","type":"http","routes":[` + route + `]}`, "no polling default channel"},
		{"disabled channel", `{"name":"poll","urlPattern":"^/p$","type":"polling","status":"disabled","routes":[` + route + `]}`, "is disabled"},
		{"no primary route", pollingChannel(`{"name":"sync","host":"127.0.0.1","port":8544,"primary":false}`), "no enabled primary route"},
		{"two primary routes", pollingChannel(route + "," + route), "more than one enabled primary route"},
		{"no port", pollingChannel(`{"name":"sync","host":"127.0.0.1","primary":true}`), "no usable host and port"},
		{"no host", pollingChannel(`{"name":"sync","port":8544,"primary":true}`), "no usable host and port"},
		{"kafka route", pollingChannel(`{"name":"sync","type":"kafka","host":"127.0.0.1","port":8544,"primary":true}`), "only http routes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := New(Options{})
			defer core.Close()
			if tc.channel != "" {
				registerChannel(t, core, urn, tc.channel)
			}
			tx, err := core.Poll(context.Background(), urn)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), urn) {
				t.Errorf("Poll = %+v, %v; want an error naming %s and saying %q", tx, err, urn, tc.want)
			}
			if n := len(core.Transactions()); n != 0 {
				t.Errorf("%d transactions recorded for a channel core would not run", n)
			}
		})
	}
}

func TestPollSecuredRoute(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", openhim.ContentType)
		_, _ = w.Write([]byte(`{"response":{"status":200,"body":"ok","timestamp":"2024-05-01T06:31:10.402Z"}}`))
	}))
	defer srv.Close()
	host, port := routeTo(t, srv.URL)
	core := New(Options{RouteClient: srv.Client()})
	defer core.Close()
	registerChannel(t, core, urn, pollingChannel(fmt.Sprintf(`{"name":"sync","host":%q,"port":%d,"path":"/sync","primary":true,"secured":true}`, host, port)))
	tx, err := core.Poll(context.Background(), urn)
	if err != nil || tx.Status != openhim.StatusSuccessful || !strings.HasPrefix(tx.RouteURL, "https://") {
		t.Errorf("Poll = %+v, %v", tx, err)
	}
}

// envelope is a valid json+openhim reply with edit applied to its decoded
// form.
func envelope(t *testing.T, edit func(map[string]any)) string {
	t.Helper()
	const base = `{"x-mediator-urn":"` + urn + `","status":"Completed with error(s)",
	 "response":{"status":200,"headers":{"content-type":"application/json"},"body":"{}","timestamp":"2024-05-01T06:31:10.402Z"},
	 "orchestrations":[{"name":"RapidPro contact writes",
	   "request":{"method":"POST","path":"/api/v2/contacts.json","headers":{"accept":"application/json"},"timestamp":"2024-05-01T06:20:05.001Z"},
	   "response":{"status":200,"headers":{"content-type":"application/json"},"body":"135 written","timestamp":"2024-05-01T06:31:09.990Z"}}],
	 "properties":{"watermark":"2024-05-01T06:20:00Z","rejected_invalid_phone":"11"}}`
	var doc map[string]any
	if err := json.Unmarshal([]byte(base), &doc); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(doc)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func at(doc map[string]any, path ...string) map[string]any {
	for _, p := range path {
		switch v := doc[p].(type) {
		case map[string]any:
			doc = v
		case []any:
			doc = v[0].(map[string]any)
		}
	}
	return doc
}

func TestStoreRefusesKeysMongoDBRefuses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		edit       func(map[string]any)
		header     string // a header of the HTTP reply itself
		wantErr    string // "" = stored
		wantStatus string
	}{
		{name: "clean", wantStatus: openhim.StatusCompletedWithErrors},
		{name: "dotted property", edit: func(d map[string]any) { at(d, "properties")["reject.20"] = "x" },
			wantErr: `properties: invalid key "reject.20" (key must not contain '.' sign)`, wantStatus: openhim.StatusProcessing},
		{name: "property starting with $", edit: func(d map[string]any) { at(d, "properties")["$where"] = "x" },
			wantErr: `properties: invalid key "$where" (key must not start with '$')`, wantStatus: openhim.StatusProcessing},
		{name: "$ inside a property is fine", edit: func(d map[string]any) { at(d, "properties")["cost$"] = "x" },
			wantStatus: openhim.StatusCompletedWithErrors},
		{name: "nested property", edit: func(d map[string]any) { at(d, "properties")["counts"] = map[string]any{"skipped.no_phone": "1"} },
			wantErr: `properties.counts: invalid key "skipped.no_phone"`, wantStatus: openhim.StatusProcessing},
		{name: "property in an array", edit: func(d map[string]any) { at(d, "properties")["list"] = []any{map[string]any{"a.b": 1}} },
			wantErr: `properties.list.0: invalid key "a.b"`, wantStatus: openhim.StatusProcessing},
		{name: "orchestration request header", edit: func(d map[string]any) { at(d, "orchestrations", "request", "headers")["x.trace"] = "1" },
			wantErr: `orchestrations.0.request.headers: invalid key "x.trace"`, wantStatus: openhim.StatusProcessing},
		{name: "orchestration response header", edit: func(d map[string]any) { at(d, "orchestrations", "response", "headers")["$x"] = "1" },
			wantErr: `orchestrations.0.response.headers: invalid key "$x"`, wantStatus: openhim.StatusProcessing},
		// Core escapes the first '.' and '$' of a response header name.
		{name: "response header with one dot, escaped", edit: func(d map[string]any) { at(d, "response", "headers")["x.trace"] = "1" },
			wantStatus: openhim.StatusCompletedWithErrors},
		{name: "response header with two dots", edit: func(d map[string]any) { at(d, "response", "headers")["x.trace.id"] = "1" },
			wantErr: "response.headers: invalid key \"x\uff0etrace.id\"", wantStatus: openhim.StatusProcessing},
		{name: "header of the HTTP reply", header: "X.Trace",
			wantErr: `orchestrations.1.response.headers: invalid key "x.trace"`, wantStatus: openhim.StatusProcessing},
		// Without a mediator status core's setFinalStatus writes the derived
		// one in a separate update, which succeeds.
		{name: "no mediator status", edit: func(d map[string]any) { delete(d, "status"); at(d, "properties")["reject.01"] = "x" },
			wantErr: `invalid key "reject.01"`, wantStatus: openhim.StatusSuccessful},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := envelope(t, tc.edit)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header()[tc.header] = []string{"1"} // set raw: Go would canonicalise it otherwise
				}
				w.Header().Set("Content-Type", openhim.ContentType)
				_, _ = w.Write([]byte(body))
			}))
			defer srv.Close()
			host, port := routeTo(t, srv.URL)
			core := New(Options{})
			defer core.Close()
			registerChannel(t, core, urn, pollingChannel(fmt.Sprintf(`{"name":"sync","host":%q,"port":%d,"path":"/sync","primary":true}`, host, port)))

			tx, err := core.Poll(context.Background(), urn)
			if err != nil || tx.ValidationError != nil {
				t.Fatalf("Poll = %+v, %v", tx, err)
			}
			if tx.Status != tc.wantStatus {
				t.Errorf("status %q, want %q", tx.Status, tc.wantStatus)
			}
			if tc.wantErr == "" {
				if tx.StoreError != nil || len(tx.Response.Orchestrations) != 1 || tx.Response.Properties["watermark"] == "" {
					t.Errorf("not stored as sent: %+v", tx)
				}
				return
			}
			if tx.StoreError == nil || !strings.Contains(tx.StoreError.Error(), tc.wantErr) {
				t.Errorf("store error %v, want %q", tx.StoreError, tc.wantErr)
			}
			if tx.Response.Response.Status != 0 || tx.Response.Orchestrations != nil || tx.Response.Properties != nil {
				t.Errorf("core stored part of a refused response: %+v", tx.Response)
			}
			if tx.RawBody != body || tx.HTTPStatus != http.StatusOK {
				t.Errorf("the reply itself is not kept for diagnosis: %+v", tx)
			}
		})
	}
}

func TestUpdateTransactionRefusesKeysMongoDBRefuses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", openhim.ContentType)
		_, _ = w.Write([]byte(`{"status":"Processing","response":{"status":202,"body":"started","timestamp":"2024-05-01T06:20:00Z"}}`))
	}))
	defer srv.Close()
	host, port := routeTo(t, srv.URL)
	core := New(Options{})
	defer core.Close()
	registerChannel(t, core, urn, pollingChannel(fmt.Sprintf(`{"name":"sync","host":%q,"port":%d,"path":"/sync","primary":true}`, host, port)))
	tx, err := core.Poll(context.Background(), urn)
	if err != nil || tx.Status != openhim.StatusProcessing {
		t.Fatalf("Poll = %+v, %v", tx, err)
	}

	for _, step := range []struct {
		name, body  string
		wantStatus  int
		wantStore   string // substring of StoreError; "" = none
		wantTxState string
		wantUpdates int
	}{
		// A PUT is written as sent: even one dot in a response header fails.
		{"dotted response header", envelope(t, func(d map[string]any) { at(d, "response", "headers")["x.trace"] = "1" }),
			http.StatusInternalServerError, `response.headers: invalid key "x.trace"`, openhim.StatusProcessing, 0},
		{"dotted property", envelope(t, func(d map[string]any) { at(d, "properties")["reject.01"] = "x" }),
			http.StatusInternalServerError, `properties: invalid key "reject.01"`, openhim.StatusProcessing, 0},
		{"clean", envelope(t, nil), http.StatusOK, "", openhim.StatusCompletedWithErrors, 1},
	} {
		status, reply := call(t, core, "PUT", "/transactions/"+tx.ID, step.body)
		got := core.Transactions()[0]
		if status != step.wantStatus || got.Status != step.wantTxState || got.Updates != step.wantUpdates {
			t.Errorf("%s: %d %q, transaction %q after %d updates; want %d, %q, %d", step.name, status, reply, got.Status, got.Updates,
				step.wantStatus, step.wantTxState, step.wantUpdates)
		}
		switch {
		case step.wantStore == "" && got.StoreError != nil:
			t.Errorf("%s: store error %v", step.name, got.StoreError)
		case step.wantStore != "" && (got.StoreError == nil || !strings.Contains(got.StoreError.Error(), step.wantStore)):
			t.Errorf("%s: store error %v, want %q", step.name, got.StoreError, step.wantStore)
		}
		if step.wantStore != "" && got.Response.Response.Body != "started" {
			t.Errorf("%s: a refused update changed the stored response: %+v", step.name, got.Response)
		}
	}
}
