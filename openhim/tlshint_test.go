package openhim_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

var pinInError = regexp.MustCompile(`--openhim-cert-pin ([0-9a-f]{64})\b`)

// A certificate Go refuses gets an error that says what to do, with the pin
// of the certificate core actually sent; and that pin works. A CA file
// cannot help with a certificate that has no subject alternative names, as
// core's default one: Go refuses it for every host, "localhost" included.
func TestCertificateErrorsSuggestThePin(t *testing.T) {
	defaultCert, err := openhimtest.DefaultCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cnOnly := newCore(t, openhimtest.Options{TLS: true, TLSCertificate: &defaultCert})
	withSANs := newCore(t, openhimtest.Options{TLS: true}) // example.com, 127.0.0.1, ::1

	for _, tc := range []struct {
		name   string
		core   *openhimtest.Core
		host   string // dialled instead of 127.0.0.1
		caFile bool   // trust the core's certificate as a CA
		want   []string
	}{
		{"no SANs, CA file, by IP", cnOnly, "", true,
			[]string{"doesn't contain any IP SANs", "no subject alternative names", "no --openhim-ca-file can make it acceptable", "O=OpenHIM Default Certificate"}},
		{"no SANs, CA file, by name", cnOnly, "localhost", true,
			[]string{"legacy Common Name", "no subject alternative names"}},
		{"no SANs, system roots", cnOnly, "", false,
			[]string{"no subject alternative names"}},
		{"SANs, unknown CA", withSANs, "", false,
			[]string{"not signed by a CA this service trusts", "--openhim-ca-file"}},
		{"SANs, another name", withSANs, "localhost", true,
			[]string{"core's certificate is for example.com", "not localhost: call core by one of those names"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.core.URL()
			if tc.host != "" {
				u, err := url.Parse(base)
				if err != nil {
					t.Fatal(err)
				}
				u.Host = tc.host + ":" + u.Port()
				base = u.String()
			}
			caFile := ""
			if tc.caFile {
				caFile = filepath.Join(t.TempDir(), "core.pem")
				if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tc.core.Certificate().Raw}), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			register := func(caFile, pin string) error {
				cfg, err := openhim.TLSConfig(caFile, pin, false)
				if err != nil {
					t.Fatal(err)
				}
				hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
				client := openhim.NewClient(openhim.Config{BaseURL: base, Auth: openhim.NewBasicAuth(rootEmail, rootPassword), HTTPClient: hc})
				return client.Register(context.Background(), mheroMediator())
			}

			err := register(caFile, "")
			if err == nil {
				t.Fatal("Register succeeded; want the certificate refused")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			m := pinInError.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q suggests no --openhim-cert-pin", err)
			}
			sum := sha256.Sum256(tc.core.Certificate().Raw)
			if m[1] != hex.EncodeToString(sum[:]) || m[1] != openhim.CertificatePin(tc.core.Certificate()) {
				t.Fatalf("suggested pin %s is not the SHA-256 of core's certificate", m[1])
			}
			if err := register("", m[1]); err != nil {
				t.Fatalf("with the suggested pin: %v", err)
			}
		})
	}
}
