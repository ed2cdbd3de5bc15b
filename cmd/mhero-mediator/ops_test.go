package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
)

// --ops-addr serves /metrics and /status on a listener of their own, so an
// operator can keep them off the address OpenHIM reaches.
func TestOpsAddrServesMetricsApart(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	opsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	svc, err := commandService("serve", []string{
		"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t0ken-not-used",
		"--state-file", filepath.Join(t.TempDir(), "state.db"),
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--ops-addr", fmt.Sprintf("127.0.0.1:%d", opsPort),
	}, &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close()
	ctx, cancel := context.WithCancel(context.Background())
	served, listening := make(chan error, 1), make(chan struct{})
	go func() { served <- svc.serve(ctx, func(string) { close(listening) }) }()
	<-listening
	for _, tc := range []struct {
		port int
		path string
		want int
	}{
		{opsPort, "/metrics", http.StatusOK}, {opsPort, "/status", http.StatusOK},
		{port, "/metrics", http.StatusNotFound}, {port, "/status", http.StatusNotFound}, {port, "/healthz", http.StatusOK},
	} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", tc.port, tc.path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("port %d %s: %d, want %d", tc.port, tc.path, resp.StatusCode, tc.want)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
