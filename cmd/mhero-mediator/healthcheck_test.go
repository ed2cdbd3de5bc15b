package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	var slow = make(chan struct{})
	defer close(slow)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok\n"))
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/slow":
			select {
			case <-slow:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	stdout, _, err := runCommand(t, "healthcheck", "--url", srv.URL+"/healthz")
	if err != nil || !strings.Contains(stdout, "200 OK") {
		t.Fatalf("healthy service: %v, stdout %q", err, stdout)
	}
	for path, want := range map[string]string{"/down": "503", "/moved": "302", "/missing": "404"} {
		if _, _, err := runCommand(t, "healthcheck", "--url", srv.URL+path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %s named", path, err, want)
		}
	}

	start := time.Now()
	_, _, err = runCommand(t, "healthcheck", "--url", srv.URL+"/slow", "--timeout", "200ms")
	if err == nil || !strings.Contains(err.Error(), "did not answer within 200ms") {
		t.Errorf("slow service: err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the 200ms timeout took %s", d)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/healthz"
	closed.Close()
	if _, _, err := runCommand(t, "healthcheck", "--url", deadURL); err == nil {
		t.Error("nothing listening: healthcheck succeeded")
	}

	if _, _, err := runCommand(t, "healthcheck", "--timeout", "0s"); err == nil {
		t.Error("--timeout 0s accepted")
	}
	if err := run(context.Background(), []string{"healthcheck", "extra"}, &lockedBuffer{}, &lockedBuffer{}); !errors.Is(err, errUsage) {
		t.Errorf("an argument: %v, want usage", err)
	}
}

// Without --url, the check asks 127.0.0.1 on the service's port, read from
// MHERO_PORT as serve reads it, and MHERO_BIND when that is one address.
func TestHealthcheckFollowsServiceEnvironment(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	port := strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)

	t.Setenv("MHERO_PORT", port)
	t.Setenv("MHERO_BIND", "0.0.0.0")
	stdout, _, err := runCommand(t, "healthcheck")
	if err != nil || !strings.Contains(stdout, "http://127.0.0.1:"+port+"/healthz") {
		t.Fatalf("MHERO_PORT=%s: %v, stdout %q", port, err, stdout)
	}
	t.Setenv("MHERO_BIND", "127.0.0.1")
	if _, _, err := runCommand(t, "healthcheck"); err != nil {
		t.Fatalf("MHERO_BIND=127.0.0.1: %v", err)
	}
	t.Setenv("MHERO_BIND", "127.0.0.2")
	if _, _, err := runCommand(t, "healthcheck", "--timeout", "1s"); err == nil || !strings.Contains(err.Error(), "127.0.0.2:"+port) {
		t.Errorf("MHERO_BIND=127.0.0.2: err = %v, want that address asked", err)
	}
}
