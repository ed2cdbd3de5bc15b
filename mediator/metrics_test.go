package mediator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTransportClass(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&net.DNSError{Err: "no such host", Name: "rapidpro.invalid"}, "dns"},
		{fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), "tls"},
		{context.DeadlineExceeded, "timeout"},
		{errors.New("something else"), "other"},
	}
	for _, tc := range tests {
		if got := transportClass(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}

// A dead upstream shows: a refused connection is counted by system and
// class, where it used to count nothing at all.
func TestTransportErrorsAreCounted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	m := NewMetrics(nil)
	client := &http.Client{Transport: m.InstrumentTransport("rapidpro", nil)}
	if _, err := client.Get("http://" + addr + "/api/v2/workspace.json"); err == nil {
		t.Fatal("a closed port answered")
	}
	if got := testutil.ToFloat64(m.transportErrors.WithLabelValues("rapidpro", "refused")); got != 1 {
		t.Fatalf("refused connections counted %v, want 1", got)
	}
}

// After a restart the last-success gauge starts from the state's watermark,
// so a staleness alert does not fire on every deploy.
func TestLastSuccessSeededFromTheState(t *testing.T) {
	st, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	when := time.Date(2025, 1, 1, 6, 0, 0, 0, time.UTC)
	if err := st.SetWatermark(when); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	_, err = NewSyncer(Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: "http://oim:8984", Document: "Providers", PageSize: 500},
		RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: "t", Group: "mHero"},
		InactivePolicy: InactiveRemoveFromGroup,
	}, Options{State: st, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.lastSuccess); got != float64(when.Unix()) {
		t.Fatalf("last success %v, want %d", got, when.Unix())
	}
}
