package openhim_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

func TestTLSConfig(t *testing.T) {
	core := newCore(t, openhimtest.Options{TLS: true})
	cert := core.Certificate()
	caFile := filepath.Join(t.TempDir(), "core.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	pin := hex.EncodeToString(sum[:])
	var colonPin []string
	for i := 0; i < len(pin); i += 2 {
		colonPin = append(colonPin, strings.ToUpper(pin[i:i+2]))
	}
	otherPin := strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name      string
		caFile    string
		pin       string
		insecure  bool
		configErr bool
		callErr   bool
	}{
		{"system roots do not trust core", "", "", false, false, true},
		{"CA file", caFile, "", false, false, false},
		{"pin matches", "", pin, false, false, false},
		{"pin as openssl prints it", "", strings.Join(colonPin, ":"), false, false, false},
		{"pin mismatch", "", otherPin, false, false, true},
		{"insecure", "", "", true, false, false},
		{"pin too short", "", "abcd", false, true, false},
		{"CA file without certificates", notPEM, "", false, true, false},
		{"missing CA file", filepath.Join(t.TempDir(), "none.pem"), "", false, true, false},
		{"two modes", caFile, pin, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := openhim.TLSConfig(tc.caFile, tc.pin, tc.insecure)
			if tc.configErr {
				if err == nil {
					t.Error("TLSConfig accepted invalid settings")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			client := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewBasicAuth(rootEmail, rootPassword), HTTPClient: hc})
			err = client.Register(context.Background(), mheroMediator())
			if tc.callErr != (err != nil) {
				t.Errorf("Register = %v, want error %v", err, tc.callErr)
			}
		})
	}
}
