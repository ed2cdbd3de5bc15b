package openhim_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

func TestTokenHash(t *testing.T) {
	const (
		userSalt = "d9bcb40e-ae65-478f-962e-5e5e5e7d0a01"
		ts       = "2024-01-02T03:04:05.123Z"
	)
	for _, tc := range []struct {
		name, authSalt, want string
	}{
		{"auth-salt is the user salt", userSalt, "0ca937d0368317ebaa8cf9665eae2af928c381c0eecbf767cc954fa53a52c3c8c7cf9b9d88db6fd9c6c0737c15a0438f0131c93aebfc75726e11bc132651fbc4"},
		{"auth-salt is random", "0f5c3c9e-1111-4222-8333-444455556666", "12175fbe8097e7ac6b25c5e4d72c25e4fcbdd1c0e3c8a1a1473010b8d6d6c38cdf19d1d485d85ebcdcb7b7464674b1a15a9c89830233a78c5a07789055aeee94"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := openhim.TokenHash(userSalt, rootPassword, tc.authSalt, ts); got != tc.want {
				t.Errorf("TokenHash = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	// Core's clock runs an hour ahead: token auth must still work because it
	// sends core's own time back as auth-ts.
	skewedNow := func() time.Time { return time.Now().Add(time.Hour) }
	for _, tc := range []struct {
		name       string
		authTypes  []string
		now        func() time.Time
		auth       func(baseURL string, hc *http.Client) openhim.Authenticator
		wantScheme string // scheme of the last registration attempt
		wantStatus int    // 0 = success
	}{
		{"basic", nil, nil, func(string, *http.Client) openhim.Authenticator {
			return openhim.NewBasicAuth(rootEmail, rootPassword)
		}, "basic", 0},
		{"token", []string{"token"}, skewedNow, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewTokenAuth(u, rootEmail, rootPassword, hc)
		}, "token", 0},
		{"email is case-insensitive for token", nil, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewTokenAuth(u, "Root@OpenHIM.org", rootPassword, hc)
		}, "token", 0},
		{"auto stays on basic", nil, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewAutoAuth(u, rootEmail, rootPassword, hc)
		}, "basic", 0},
		{"auto falls back to token", []string{"token"}, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewAutoAuth(u, rootEmail, rootPassword, hc)
		}, "token", 0},
		{"basic on a token-only core", []string{"token"}, nil, func(string, *http.Client) openhim.Authenticator {
			return openhim.NewBasicAuth(rootEmail, rootPassword)
		}, "basic", http.StatusUnauthorized},
		{"wrong basic password", nil, nil, func(string, *http.Client) openhim.Authenticator {
			return openhim.NewBasicAuth(rootEmail, "wrong-secret-pw")
		}, "basic", http.StatusUnauthorized},
		{"wrong token password", nil, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewTokenAuth(u, rootEmail, "wrong-secret-pw", hc)
		}, "token", http.StatusUnauthorized},
		{"auto with wrong password", []string{"token"}, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewAutoAuth(u, rootEmail, "wrong-secret-pw", hc)
		}, "token", http.StatusUnauthorized},
		{"token for an unknown user", nil, nil, func(u string, hc *http.Client) openhim.Authenticator {
			return openhim.NewTokenAuth(u, "nobody@example.org", "wrong-secret-pw", hc)
		}, "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := newCore(t, openhimtest.Options{AuthTypes: tc.authTypes, Now: tc.now})
			client := newClient(core, tc.auth(core.URL(), core.Client()))
			err := client.Register(context.Background(), mheroMediator())

			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				if n := core.Registrations(testURN); n != 1 {
					t.Errorf("core holds %d registrations, want 1", n)
				}
			} else {
				var statusErr *openhim.StatusError
				if !errors.As(err, &statusErr) || statusErr.StatusCode != tc.wantStatus {
					t.Fatalf("Register error = %v, want status %d", err, tc.wantStatus)
				}
				for _, secret := range []string{
					"wrong-secret-pw", rootPassword,
					base64.StdEncoding.EncodeToString([]byte(rootEmail + ":wrong-secret-pw")),
				} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q reveals a secret", err)
					}
				}
			}
			if tc.wantScheme != "" {
				var last openhimtest.APIRequest
				for _, r := range core.Requests() {
					if r.Path == "/mediators" {
						last = r
					}
				}
				if last.AuthScheme != tc.wantScheme {
					t.Errorf("last registration used %q auth, want %q", last.AuthScheme, tc.wantScheme)
				}
			}
		})
	}
}

func TestTokenAuthOutsideWindow(t *testing.T) {
	core := newCore(t, openhimtest.Options{AuthTypes: []string{"token"}})
	// Hashing a stale timestamp correctly still fails: core checks ±10 s.
	ts := time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05.000Z")
	req, err := http.NewRequest(http.MethodGet, core.URL()+"/mediators/"+testURN, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("auth-username", rootEmail)
	req.Header.Set("auth-ts", ts)
	req.Header.Set("auth-salt", "salt")
	req.Header.Set("auth-token", openhim.TokenHash(openhimtest.RootSalt, rootPassword, "salt", ts))
	resp, err := core.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", resp.StatusCode)
	}
}
