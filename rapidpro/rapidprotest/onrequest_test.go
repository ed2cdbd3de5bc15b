package rapidprotest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

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

// WaitIdle returns once a dead client's last request, cut off before its
// body, has been recorded and refused, and not while a connection is open.
func TestWaitIdle(t *testing.T) {
	e := newEnv(t, rapidprotest.Options{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const create = `{"name":"Musu","urns":["tel:0777123456"]}`
	head := "POST " + contacts + " HTTP/1.1\r\nHost: rapidpro\r\nAuthorization: Token " + e.srv.Token() +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(create)) + "\r\n\r\n"

	// One whole request, answered: the connection stays open.
	if _, err := io.WriteString(conn, head+create); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create answered %d", resp.StatusCode)
	}
	wantBusy(t, e.srv)

	// A second request dies before its body: it must not create a contact
	// from nothing.
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	wantIdle(t, e.srv)
	reqs := e.srv.Requests()
	if len(reqs) != 2 || reqs[1].Status != http.StatusBadRequest {
		t.Fatalf("requests %+v, want the cut one recorded and refused", reqs)
	}
	if n := len(e.srv.Contacts()); n != 1 {
		t.Fatalf("%d contacts, want 1", n)
	}
}

// WaitIdle also waits for a handler still running after its connection was
// hijacked and closed: a dropped request whose hook has not returned.
func TestWaitIdleWaitsForHandlers(t *testing.T) {
	hooked, release := make(chan struct{}), make(chan struct{})
	e := newEnv(t, rapidprotest.Options{OnRequest: func(r rapidprotest.Request) {
		if r.Status == 0 {
			close(hooked)
			<-release
		}
	}})
	e.srv.Inject(rapidprotest.Fault{Drop: true})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET "+contacts+" HTTP/1.1\r\nHost: rapidpro\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d bytes (%v), want the connection dropped", n, err)
	}
	<-hooked
	wantBusy(t, e.srv)
	close(release)
	wantIdle(t, e.srv)
}

// wantBusy checks that WaitIdle does not return within a short wait: long
// enough for its probe connection to be accepted, so that only what the
// test holds open keeps it waiting.
func wantBusy(t *testing.T, srv *rapidprotest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.WaitIdle(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle = %v, want it still waiting", err)
	}
}

func wantIdle(t *testing.T, srv *rapidprotest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}
