package csd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

var rapidproID = csd.OtherID{Code: "rapidpro_contact_id", AssigningAuthorityName: "https://rapidpro.example.org/mhero", Value: "5e1c9a55-0c6b-4d0e-9a8e-21a3f4b7c9d2"}

// providerByID reads one provider back through provider-search.
func providerByID(t *testing.T, c *csd.Client, id string) *csd.Provider {
	t.Helper()
	var got *csd.Provider
	if _, err := c.Providers(context.Background(), csd.ProviderQuery{EntityID: id}, func(p *csd.Provider) error {
		got = p
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatalf("provider %s not found", id)
	}
	return got
}

func TestAddOtherID(t *testing.T) {
	s := startOIM(t, generated(t, 5), csdtest.Options{})
	c := newClient(s)
	id := csdtest.GeneratedEntityID(42, 3)
	before := providerByID(t, c, id)
	// Upper case: the function compares ids ignoring case.
	if err := c.AddOtherID(context.Background(), strings.ToUpper(id), rapidproID); err != nil {
		t.Fatal(err)
	}
	after := providerByID(t, c, id)
	if want := append(before.OtherIDs, rapidproID); !reflect.DeepEqual(after.OtherIDs, want) {
		t.Errorf("otherIDs = %+v, want %+v", after.OtherIDs, want)
	}
	// record@updated is not bumped, so an updated-since pull from after the
	// provider's last update does not see the write.
	if after.Record != before.Record {
		t.Errorf("record changed: %+v → %+v", before.Record, after.Record)
	}
	ids, _, err := pull(t, c, csd.ProviderQuery{UpdatedSince: before.Record.Updated.Add(time.Second)})
	if err != nil || len(ids) != 1 || ids[0] == id {
		t.Errorf("updated since the write: %q, %v", ids, err)
	}
	// A second call appends a second otherID: the function never replaces.
	if err := c.AddOtherID(context.Background(), id, rapidproID); err != nil {
		t.Fatal(err)
	}
	if got := providerByID(t, c, id).OtherIDs; len(got) != len(before.OtherIDs)+2 {
		t.Errorf("after two writes: %+v", got)
	}
	want := []csdtest.Call{{Function: csd.ProviderSearch}, {Function: csd.CreateOtherID, Updating: true}, {Function: csd.ProviderSearch},
		{Function: csd.ProviderSearch}, {Function: csd.CreateOtherID, Updating: true}, {Function: csd.ProviderSearch}}
	if got := s.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %+v", got)
	}
}

func TestAddOtherIDFailures(t *testing.T) {
	ambiguous := wrapCSD(`<provider entityID="urn:uuid:ABC"/><provider entityID="urn:uuid:abc"/>`)
	tests := []struct {
		name     string
		doc      string
		opts     csdtest.Options
		setup    func(s *csdtest.Server, c *csd.Client)
		entityID string
		id       csd.OtherID
		want     string
		wantIs   error
		wantAs   bool // a *csd.StatusError
		requests int
	}{
		{
			name: "no such provider", doc: string(generated(t, 3)), entityID: "urn:uuid:nobody", id: rapidproID,
			want: `csd: adding otherID rapidpro_contact_id to provider "urn:uuid:nobody": no single provider with this entityID; nothing was written`, wantIs: csd.ErrNoSuchProvider, requests: 1,
		},
		{
			name: "two providers differing in case", doc: ambiguous, entityID: "urn:uuid:abc", id: rapidproID,
			wantIs: csd.ErrNoSuchProvider, requests: 1,
		},
		{
			name: "unknown document", doc: string(generated(t, 3)), entityID: csdtest.GeneratedEntityID(42, 0), id: rapidproID,
			setup:  func(_ *csdtest.Server, c *csd.Client) { c.Document = "Nope" },
			want:   `document "Nope" is unknown to OpenInfoMan (empty response)`,
			wantIs: csd.ErrUnknownDocument, requests: 1,
		},
		{
			name: "500 is not retried", doc: string(generated(t, 3)), entityID: csdtest.GeneratedEntityID(42, 0), id: rapidproID,
			setup:  func(s *csdtest.Server, c *csd.Client) { c.RetryMax = 5; s.FailNext(http.StatusInternalServerError, 5) },
			want:   "OpenInfoMan answered 500 Internal Server Error",
			wantAs: true, requests: 1,
		},
		{
			name: "wrong password", doc: string(generated(t, 3)), entityID: csdtest.GeneratedEntityID(42, 0), id: rapidproID,
			opts:   csdtest.Options{Username: "oim", Password: "right"},
			setup:  func(_ *csdtest.Server, c *csd.Client) { c.Username, c.Password = "oim", "wrong" },
			want:   "401 Unauthorized (check the OpenInfoMan username and password)",
			wantAs: true, requests: 1,
		},
		{
			name: "no entityID", doc: string(generated(t, 3)), entityID: " ", id: rapidproID,
			want: "csd: AddOtherID needs an entityID and an otherID code",
		},
		{
			name: "no code", doc: string(generated(t, 3)), entityID: "x", id: csd.OtherID{Value: "v"},
			want: "csd: AddOtherID needs an entityID and an otherID code",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startOIM(t, []byte(tt.doc), tt.opts)
			c := newClient(s)
			if tt.setup != nil {
				tt.setup(s, c)
			}
			err := c.AddOtherID(context.Background(), tt.entityID, tt.id)
			var se *csd.StatusError
			switch {
			case err == nil:
				t.Fatal("no error")
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q, want %q", err, tt.want)
			case tt.wantIs != nil && !errors.Is(err, tt.wantIs):
				t.Errorf("error %v is not %v", err, tt.wantIs)
			case tt.wantAs && !errors.As(err, &se):
				t.Errorf("error %v is not a StatusError", err)
			}
			if s.Requests() != tt.requests {
				t.Errorf("server saw %d requests, want %d", s.Requests(), tt.requests)
			}
			// The document is unchanged: a failed write wrote nothing.
			req, _ := http.NewRequest(http.MethodGet, s.URL()+"/CSD/getDirectory/Providers", nil)
			req.SetBasicAuth(tt.opts.Username, tt.opts.Password)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tt.doc {
				t.Errorf("the document changed:\n%s", body)
			}
		})
	}
}

// TestAddOtherIDRequest pins the request, escaping included.
func TestAddOtherIDRequest(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		user, pass, _ := r.BasicAuth()
		got = fmt.Sprintf("%s %s %s %s:%s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"), user, pass, body)
		fmt.Fprint(w, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID="a"><otherID position="1"/></provider></providerDirectory></CSD>`)
	}))
	defer srv.Close()
	c := &csd.Client{BaseURL: srv.URL + "/", Document: "Providers", Username: "oim", Password: "pw"}
	err := c.AddOtherID(context.Background(), `a"<&'b`, csd.OtherID{Code: `c"1`, AssigningAuthorityName: "https://rp.example.org/?a=1&b=2", Value: "<uuid>"})
	if err != nil {
		t.Fatal(err)
	}
	want := "POST /CSD/csr/Providers/careServicesRequest/update/urn:openhie.org:openinfoman-hwr:stored-function:health_worker_create_otherid text/xml oim:pw " +
		`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:id entityID="a&#34;&lt;&amp;&#39;b"/>` +
		`<csd:otherID assigningAuthorityName="https://rp.example.org/?a=1&amp;b=2" code="c&#34;1">&lt;uuid&gt;</csd:otherID></csd:requestParams>`
	if got != want {
		t.Errorf("request %s\nwant    %s", got, want)
	}
}

// TestAddOtherIDAnswers reads answers the fake does not give.
func TestAddOtherIDAnswers(t *testing.T) {
	const written = `<CSD xmlns="urn:ihe:iti:csd:2013" xmlns:csd="urn:ihe:iti:csd:2013"><organizationDirectory/><serviceDirectory/><facilityDirectory/>` +
		`<providerDirectory><provider entityID="p"><otherID position="2"/></provider></providerDirectory></CSD>`
	tests := []struct {
		name   string
		status int
		body   string
		want   string // empty: no error
		wantIs error
	}{
		{"written", 200, written, "", nil},
		{"written after the route's rest:response", 200,
			`<rest:response xmlns:rest="http://exquery.org/ns/restxq"><http:response status="200"><http:header name="Content-Type" value="text/xml"/></http:response></rest:response>` + written, "", nil},
		{"prefixed", 200, `<csd:CSD xmlns:csd="urn:ihe:iti:csd:2013"><csd:providerDirectory><csd:provider entityID="p"/></csd:providerDirectory></csd:CSD>`, "", nil},
		{"not written", 200, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory/></CSD>`, "nothing was written", csd.ErrNoSuchProvider},
		{"a provider outside providerDirectory is not a write", 200, `<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory><provider entityID="p"/></facilityDirectory></CSD>`, "", csd.ErrNoSuchProvider},
		{"204", 204, ``, "unknown to OpenInfoMan", csd.ErrUnknownDocument},
		{"blank 200", 200, "\n", "unknown to OpenInfoMan", csd.ErrUnknownDocument},
		{"html", 200, `<html><body>Bad gateway</body></html>`, "the answer holds no CSD document", nil},
		{"malformed", 200, `<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory>`, "reading the answer: XML syntax error", nil},
		{"function not installed", 404, `No function found that matches the request.`,
			"OpenInfoMan answered 404 Not Found: No function found that matches the request. (is openinfoman-hwr, which defines urn:openhie.org:openinfoman-hwr:stored-function:health_worker_create_otherid, installed?)", nil},
		{"xquery error", 422, `Error executing xquery.`, "OpenInfoMan answered 422 Unprocessable Entity", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			err := (&csd.Client{BaseURL: srv.URL, Document: "Providers"}).AddOtherID(context.Background(), "p", rapidproID)
			switch {
			case tt.want == "" && tt.wantIs == nil && err != nil:
				t.Errorf("error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want %q", err, tt.want)
			case tt.wantIs != nil && !errors.Is(err, tt.wantIs):
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
		})
	}
}

// TestAddOtherIDTransportErrorNotRetried: even a connection error is not
// retried, since the write may have happened.
func TestAddOtherIDTransportErrorNotRetried(t *testing.T) {
	var attempts atomic.Int64
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		attempts.Add(1)
		return nil, errors.New("connection reset by peer")
	})
	c := &csd.Client{BaseURL: "http://oim.invalid", Document: "Providers", RetryMax: 5, HTTPClient: &http.Client{Transport: rt}}
	err := c.AddOtherID(context.Background(), "p", rapidproID)
	if err == nil || !strings.Contains(err.Error(), `csd: adding otherID rapidpro_contact_id to provider "p": Post "http://oim.invalid/CSD/csr/Providers/careServicesRequest/update/`) || attempts.Load() != 1 {
		t.Errorf("err %v after %d attempts", err, attempts.Load())
	}
}

func ExampleClient_AddOtherID() {
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, 1, csdtest.GenerateOptions{Seed: 1}); err != nil {
		panic(err)
	}
	s, err := csdtest.New(doc.Bytes(), csdtest.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	c := &csd.Client{BaseURL: s.URL(), Document: "Providers"}
	id := csdtest.GeneratedEntityID(1, 0)
	fmt.Println(c.AddOtherID(context.Background(), id, csd.OtherID{Code: "rapidpro_contact_id", AssigningAuthorityName: "https://rapidpro.example.org", Value: "uuid-1"}))
	err = c.AddOtherID(context.Background(), "urn:uuid:nobody", csd.OtherID{Code: "rapidpro_contact_id"})
	fmt.Println(errors.Is(err, csd.ErrNoSuchProvider))
	// Output:
	// <nil>
	// true
}
