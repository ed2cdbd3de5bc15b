package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

const (
	authTestToken   = "rp-t0ken-in-a-flag"
	authTestOIMPass = "oim-pa55-in-a-flag"
	authTestCorePW  = "openhim-password"
)

// serveUntilRegistered runs serve against core with args on top of the
// required flags (no --openhim-auth), until it has registered and sent its
// first heartbeat; it returns what serve logged.
func serveUntilRegistered(t *testing.T, core *openhimtest.Core, args ...string) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	svc, err := commandService("serve", append([]string{
		"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", authTestToken,
		"--oim-username", "oim", "--oim-password", authTestOIMPass,
		"--state-file", filepath.Join(t.TempDir(), "state.db"),
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "mhero-sync",
		"--openhim-url", core.URL(), "--openhim-username", "root@openhim.org", "--openhim-password", authTestCorePW,
	}, args...), &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close()
	tick := make(chan time.Time)
	svc.heartbeatTick = tick
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- svc.serve(ctx, nil) }()
	tick <- time.Now() // taken only once registered and past the first beat
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if n := core.Registrations(svc.cfg.mediatorURN); n != 1 {
		t.Fatalf("core holds %d registrations, want 1\n%s", n, stderr.String())
	}
	return stderr.String()
}

// A service started with no --openhim-auth registers with a token-only core
// (up to v7.0, as older mHero deployments run) and with a basic-only one,
// and logs the scheme it found, once.
func TestServeFindsTheOpenHIMAuthScheme(t *testing.T) {
	chosen := regexp.MustCompile(`msg="openhim authentication scheme chosen" scheme=(\w+) user=root@openhim.org`)
	for _, tc := range []struct {
		name      string
		authTypes []string
		want      string
	}{
		{"token-only core", []string{"token"}, openhim.SchemeToken},
		{"basic-only core", []string{"basic"}, openhim.SchemeBasic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := openhimtest.New(openhimtest.Options{AuthTypes: tc.authTypes})
			defer core.Close()
			logs := serveUntilRegistered(t, core)
			found := chosen.FindAllStringSubmatch(logs, -1)
			if len(found) != 1 || found[0][1] != tc.want {
				t.Fatalf("want the %s scheme logged once, got %v:\n%s", tc.want, found, logs)
			}
			for _, r := range core.Requests() {
				if strings.HasSuffix(r.Path, "/heartbeat") && r.AuthScheme != tc.want {
					t.Errorf("heartbeat sent with %q auth, want %q", r.AuthScheme, tc.want)
				}
			}
			if strings.Contains(logs, authTestCorePW) {
				t.Errorf("the OpenHIM password reached the log:\n%s", logs)
			}
		})
	}
}

// By default the registration's config carries none of the secrets given by
// flag: core stores that config, and older cores list it in clear. With
// --openhim-config-secrets it carries them.
func TestServeRegistrationKeepsSecretsHome(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		sent bool
	}{
		{"by default", nil, false},
		{"opted in", []string{"--openhim-config-secrets"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := openhimtest.New(openhimtest.Options{})
			defer core.Close()
			logs := serveUntilRegistered(t, core, tc.args...)
			var body string
			for _, r := range core.Requests() {
				if r.Path == "/mediators" {
					body = r.Body
				}
			}
			if body == "" {
				t.Fatal("no registration recorded")
			}
			for _, secret := range []string{authTestToken, authTestOIMPass} {
				if got := strings.Contains(body, secret); got != tc.sent {
					t.Errorf("registration body holds %q: %v, want %v", secret, got, tc.sent)
				}
				if strings.Contains(logs, secret) {
					t.Errorf("%q reached the log:\n%s", secret, logs)
				}
			}
		})
	}
}

// Against a core serving a certificate like its default one (no SANs),
// --openhim-ca-file fails whatever the CA, and the error gives the
// --openhim-cert-pin that works.
func TestOpenHIMCertificateWithoutSANs(t *testing.T) {
	cert, err := openhimtest.DefaultCertificate()
	if err != nil {
		t.Fatal(err)
	}
	core := openhimtest.New(openhimtest.Options{TLS: true, TLSCertificate: &cert})
	defer core.Close()
	caFile := filepath.Join(t.TempDir(), "core.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := openhim.CertificatePin(cert.Leaf)
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"CA file", []string{"--openhim-ca-file", caFile}, "--openhim-cert-pin " + pin},
		{"the pin the error gave", []string{"--openhim-cert-pin", pin}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := testService(t, testConfig(t, core.URL(), tc.args...))
			hb, err := svc.heartbeater(nil)
			if err != nil {
				t.Fatal(err)
			}
			err = hb.Client.Register(context.Background(), hb.Mediator)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "no subject alternative names") {
				t.Fatalf("Register = %v, want it to say %q", err, tc.wantErr)
			}
		})
	}
}

func TestOpenHIMAuthFlag(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	(&config{}).register(fs)
	if f := fs.Lookup("openhim-auth"); f.DefValue != "auto" {
		t.Errorf("--openhim-auth defaults to %q, want auto", f.DefValue)
	}
	if f := fs.Lookup("openhim-config-secrets"); f == nil || f.DefValue != "false" {
		t.Errorf("--openhim-config-secrets is %+v, want a flag off by default", f)
	}
	for _, tc := range []struct {
		value   string
		wantErr bool
	}{
		{"auto", false}, {"basic", false}, {"token", false}, {"Basic", true}, {"digest", true},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := &config{}
		cfg.register(fs)
		err := parseFlags(fs, []string{
			"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t",
			"--openhim-url", "http://127.0.0.1:1", "--openhim-username", "u", "--openhim-password", "p", "--openhim-auth", tc.value,
		})
		if err == nil {
			err = cfg.check()
		}
		if (err != nil) != tc.wantErr {
			t.Errorf("--openhim-auth %s: err = %v, want error %v", tc.value, err, tc.wantErr)
		}
	}
}
