package openhim

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// tokenWindow is core's api.authWindowSeconds: how far auth-ts may be from
// core's clock.
const tokenWindow = 10 * time.Second

// unauthorizedHint says why core answered 401: refused lists the
// Authenticators core refused, in order; multi tells that they came from an
// AutoAuth, and altErr why it tried no other scheme. It names the user,
// never the password.
func unauthorizedHint(refused []Authenticator, multi bool, altErr error, r reply) string {
	last := refused[len(refused)-1]
	if last == nil {
		return "no credentials were sent: set the OpenHIM username and password"
	}
	named, ok := last.(schemeAuth)
	if !ok {
		return "" // someone else's Authenticator
	}
	user, scheme := named.user(), named.scheme()
	skew := skewHint(r)
	switch {
	case len(refused) > 1 && skew != "":
		return fmt.Sprintf("core refused user %q with basic auth, and with token auth because %s", user, skew)
	case len(refused) > 1:
		return fmt.Sprintf("core refused user %q with both basic and token auth: check the username and password, and that the user exists in core", user)
	case skew != "":
		return fmt.Sprintf("core refused user %q with %s auth because %s", user, scheme, skew)
	case multi && altErr != nil:
		return fmt.Sprintf("core refused user %q with basic auth: check the username and password (token auth could not be tried: %s)", user, tokenUnavailable(altErr))
	case multi:
		return fmt.Sprintf("core refused user %q with %s auth, the scheme it accepted before: check the password, and that the user still exists in core", user, scheme)
	case scheme == SchemeBasic:
		return fmt.Sprintf("core refused user %q with basic auth: check the username and password; a core up to v7.0 accepts only token auth unless configured otherwise (--openhim-auth auto finds the scheme by itself)", user)
	default:
		return fmt.Sprintf("core refused user %q with token auth: check the username and password, and that core accepts token auth (core v7.1+ may accept basic only; --openhim-auth auto finds the scheme by itself)", user)
	}
}

// tokenUnavailable says why GET /authenticate gave no salt.
func tokenUnavailable(err error) string {
	var se *StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusNotFound {
		return "GET /authenticate answered 404, core knows no token login for this user"
	}
	return err.Error()
}

// skewHint tells, after a token 401, whether the auth-ts sent was outside
// core's window by core's own clock (its Date header); "" when it was not,
// or when either is unknown. Core's reason for a 401 is only in its log, so
// this is the one refusal the service can tell from a wrong password.
func skewHint(r reply) string {
	if r.authTS == "" || r.date.IsZero() {
		return ""
	}
	sent, err := time.Parse(time.RFC3339Nano, r.authTS)
	if err != nil {
		return ""
	}
	off := r.date.Sub(sent)
	// Date has whole seconds.
	if off.Abs() <= tokenWindow+time.Second {
		return ""
	}
	// Date has whole seconds: give the gap to the second, or the minute
	// once it is minutes.
	gap := off.Abs().Round(time.Second)
	if gap >= time.Minute {
		gap = off.Abs().Round(time.Minute)
	}
	direction := "behind"
	if off < 0 {
		direction = "ahead of"
	}
	return fmt.Sprintf("clock skew: the auth-ts sent (%s) was %s %s core's clock (%s), outside core's ±%s token window (api.authWindowSeconds): check both hosts' clocks (NTP), and that nothing between them caches GET /authenticate",
		r.authTS, gap, direction, r.date.UTC().Format(time.RFC3339), tokenWindow)
}

// forbiddenHint says why core answered 403: the credentials were right, the
// user's rights are not.
func forbiddenHint(auth Authenticator) string {
	user := "the user"
	if named, ok := auth.(schemeAuth); ok {
		user = fmt.Sprintf("user %q", named.user())
	}
	return fmt.Sprintf("core accepted %s but does not allow it this call: put the user in group admin (core up to v8.5), or give its role mediator-manage-all, mediator-view-all and channel-manage (later cores)", user)
}

// oidSubjectAltName is the subject alternative name extension.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// CertificatePin is the pin of cert that TLSConfig and --openhim-cert-pin
// take: the SHA-256 of its DER encoding, in hex. It equals the digits of
// `openssl x509 -noout -fingerprint -sha256`.
func CertificatePin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// certificateHint says what to do when Go refused core's certificate, with
// the pin that would accept it; "" for other errors. A certificate without
// subject alternative names, like core's bundled default, is refused for
// any host name whatever CA is trusted: Go ignores the Common Name.
func certificateHint(err error) string {
	const check = "first check that this is core's certificate: openssl x509 -noout -fingerprint -sha256 -in cert.pem on core's host prints the same digits"
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) && hostErr.Certificate != nil {
		cert := hostErr.Certificate
		if !slices.ContainsFunc(cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) }) {
			return fmt.Sprintf("core's certificate (%s) has no subject alternative names, and Go checks host names only there, so no --openhim-ca-file can make it acceptable: pin it instead with --openhim-cert-pin %s (%s)",
				cert.Subject, CertificatePin(cert), check)
		}
		names := slices.Clone(cert.DNSNames)
		for _, ip := range cert.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Sprintf("core's certificate is for %s, not %s: call core by one of those names in --openhim-url, or pin the certificate with --openhim-cert-pin %s (%s)",
			strings.Join(names, ", "), hostErr.Host, CertificatePin(cert), check)
	}
	var authErr x509.UnknownAuthorityError
	if errors.As(err, &authErr) && authErr.Cert != nil {
		return fmt.Sprintf("core's certificate (issued by %s) is not signed by a CA this service trusts: give that CA's certificate with --openhim-ca-file, or pin core's certificate with --openhim-cert-pin %s (%s)",
			authErr.Cert.Issuer, CertificatePin(authErr.Cert), check)
	}
	return ""
}
