package openhim

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSConfig builds the TLS settings for calls to core's management API, in
// one of three modes (docs/protocols.md, TLS to the management API):
//   - caFile: trust the PEM certificates in that file (plus normal hostname
//     checks). It cannot work with core's bundled default certificate, whose
//     only name is its Common Name (CN=localhost, no subject alternative
//     names): Go checks host names only against SANs, so it refuses such a
//     certificate for every host, "localhost" included, whatever CA is
//     trusted. A call that fails so says which pin to use instead.
//   - pinSHA256Hex: accept exactly the leaf certificate whose DER SHA-256 is
//     this hex value (colons allowed, as openssl prints it; CertificatePin
//     computes it), whatever its chain or names. The one mode for core's
//     default certificate.
//   - insecure: no verification at all; only behind an explicit flag.
//
// With none set it returns the system defaults. Combining modes is an error,
// since each one replaces the others' check.
func TLSConfig(caFile, pinSHA256Hex string, insecure bool) (*tls.Config, error) {
	modes := 0
	for _, set := range []bool{caFile != "", pinSHA256Hex != "", insecure} {
		if set {
			modes++
		}
	}
	if modes > 1 {
		return nil, errors.New("openhim tls: choose one of CA file, certificate pin or insecure")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("openhim tls: reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("openhim tls: no PEM certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	case pinSHA256Hex != "":
		pin, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(pinSHA256Hex), ":", ""))
		if err != nil || len(pin) != sha256.Size {
			return nil, errors.New("openhim tls: certificate pin must be 64 hex digits (SHA-256)")
		}
		// Chain and name checks are replaced by the pin check below.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if len(rawCerts) == 0 {
				return errors.New("openhim tls: core sent no certificate")
			}
			got := sha256.Sum256(rawCerts[0])
			if subtle.ConstantTimeCompare(got[:], pin) != 1 {
				return fmt.Errorf("openhim tls: core certificate SHA-256 %x does not match the pin", got)
			}
			return nil
		}
	case insecure:
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}
