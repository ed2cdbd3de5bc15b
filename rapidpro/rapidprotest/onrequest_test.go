package rapidprotest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// OnRequest sees every request once answered, with the status sent, and
// dropped ones with status 0; it may call the server (no lock is held).
func TestOnRequest(t *testing.T) {
	seen := make(chan rapidprotest.Request, 10)
	var srv *rapidprotest.Server
	e := newEnv(t, rapidprotest.Options{OnRequest: func(r rapidprotest.Request) {
		_ = srv.Requests() // would deadlock if the hook ran under the lock
		seen <- r
	}})
	srv = e.srv

	e.want(e.call(http.MethodPost, contacts, `{"name":"Musu","urns":["tel:0777123456"]}`), http.StatusCreated, "")
	r := <-seen
	if r.Method != http.MethodPost || r.Path != contacts || r.Status != http.StatusCreated || r.Body == "" {
		t.Fatalf("hook got %+v, want the answered create", r)
	}

	e.want(e.call(http.MethodGet, contacts+"?urn=tel:0777123456", ""), http.StatusOK, "")
	if r := <-seen; r.Method != http.MethodGet || r.Query.Get("urn") != "tel:0777123456" || r.Status != http.StatusOK {
		t.Fatalf("hook got %+v, want the answered lookup", r)
	}

	// A committed write whose connection is dropped: status 0.
	e.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, AfterCommit: true, Drop: true})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL()+contacts, nil)
	req.Header.Set("Authorization", "Token "+e.srv.Token())
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("dropped request answered")
	}
	if r := <-seen; r.Method != http.MethodPost || r.Status != 0 {
		t.Fatalf("hook got %+v, want the dropped request with status 0", r)
	}
	if n := len(srv.Requests()); n != 3 {
		t.Fatalf("%d requests recorded, want 3", n)
	}
	select {
	case r := <-seen:
		t.Fatalf("hook called once too often: %+v", r)
	default:
	}
}

// Fault.Committed runs once the write exists and before its answer leaves.
func TestCommittedHook(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	contactsAtHook := make(chan int, 1)
	e.srv.Inject(rapidprotest.Fault{Method: http.MethodPost, AfterCommit: true, Drop: true,
		Committed: func() { contactsAtHook <- len(e.srv.Contacts()) }})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL()+contacts, strings.NewReader(`{"name":"Musu","urns":["tel:0777123456"]}`))
	req.Header.Set("Authorization", "Token "+e.srv.Token())
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("dropped request answered")
	}
	if n := <-contactsAtHook; n != 1 {
		t.Fatalf("%d contacts when the hook ran, want the committed one", n)
	}
}
