package openhim

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Authenticator adds credentials to a request for the management API.
type Authenticator interface {
	Authenticate(ctx context.Context, req *http.Request) error
}

type basicAuth struct{ username, password string }

// NewBasicAuth authenticates with HTTP Basic, the scheme core v7.1+ prefers.
// It never calls GET /authenticate, which v8 answers 404 for users created in
// the console.
func NewBasicAuth(username, password string) Authenticator {
	return basicAuth{username: username, password: password}
}

func (b basicAuth) Authenticate(_ context.Context, req *http.Request) error {
	req.SetBasicAuth(b.username, b.password)
	return nil
}

type tokenAuth struct {
	baseURL, username, password string
	hc                          *http.Client
}

// NewTokenAuth authenticates with core's legacy token scheme, the only one of
// core up to v4 and the default of v5–v7.0. Before each call it fetches the
// user's salt and core's clock from GET /authenticate/<email> and uses that
// clock as auth-ts, so clock skew between the hosts cannot push requests out
// of core's ±10 s window. hc nil means a default client with a timeout.
func NewTokenAuth(baseURL, username, password string, hc *http.Client) Authenticator {
	return newTokenAuth(baseURL, username, password, hc)
}

func newTokenAuth(baseURL, username, password string, hc *http.Client) *tokenAuth {
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &tokenAuth{baseURL: strings.TrimRight(baseURL, "/"), username: username, password: password, hc: hc}
}

// TokenHash computes the auth-token header:
// hex(sha512(hex(sha512(userSalt+password)) + authSalt + ts)).
func TokenHash(userSalt, password, authSalt, ts string) string {
	passhash := sha512.Sum512([]byte(userSalt + password))
	token := sha512.Sum512([]byte(hex.EncodeToString(passhash[:]) + authSalt + ts))
	return hex.EncodeToString(token[:])
}

type authenticateReply struct {
	Salt string `json:"salt"`
	TS   string `json:"ts"`
}

// fetchSalt asks core for the user's password salt and its current time.
func (t *tokenAuth) fetchSalt(ctx context.Context) (authenticateReply, error) {
	var reply authenticateReply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL+"/authenticate/"+url.PathEscape(t.username), nil)
	if err != nil {
		return reply, fmt.Errorf("openhim: token auth for %s: %w", t.username, err)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return reply, fmt.Errorf("openhim: token auth for %s: %w", t.username, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return reply, fmt.Errorf("openhim: token auth for %s: reading salt: %w", t.username, err)
	}
	if resp.StatusCode != http.StatusOK {
		return reply, &StatusError{Method: http.MethodGet, Path: "/authenticate/" + t.username, StatusCode: resp.StatusCode, Message: errorText(body)}
	}
	if err := json.Unmarshal(body, &reply); err != nil || reply.Salt == "" {
		return reply, fmt.Errorf("openhim: token auth for %s: GET /authenticate answered without a salt", t.username)
	}
	return reply, nil
}

func (t *tokenAuth) Authenticate(ctx context.Context, req *http.Request) error {
	reply, err := t.fetchSalt(ctx)
	if err != nil {
		return err
	}
	ts := reply.TS
	if ts == "" {
		ts = time.Now().UTC().Format(timestampLayout)
	}
	// A fresh auth-salt per request; core accepts any non-empty string.
	authSalt := rand.Text()
	req.Header.Set("auth-username", t.username)
	req.Header.Set("auth-ts", ts)
	req.Header.Set("auth-salt", authSalt)
	req.Header.Set("auth-token", TokenHash(reply.Salt, t.password, authSalt, ts))
	return nil
}

// Scheme names, as logs and errors give them.
const (
	SchemeBasic = "basic"
	SchemeToken = "token"
)

// schemeAuth is implemented by this package's single-scheme Authenticators,
// which name their scheme and user for error messages (never the password).
type schemeAuth interface {
	Authenticator
	scheme() string
	user() string
}

func (b basicAuth) scheme() string  { return SchemeBasic }
func (b basicAuth) user() string    { return b.username }
func (t *tokenAuth) scheme() string { return SchemeToken }
func (t *tokenAuth) user() string   { return t.username }

// multiScheme is implemented by an Authenticator that tries more than one
// scheme. The Client authenticates each call with current(); after a 401 it
// retries once with alternative(), if any; and it reports every scheme core
// did not refuse with accepted().
type multiScheme interface {
	current() Authenticator
	alternative(ctx context.Context) (Authenticator, error)
	accepted(Authenticator)
}

// Values of AutoAuth.chosen.
const (
	autoUndecided int32 = iota
	autoBasic
	autoToken
)

// AutoAuth finds the scheme core accepts by itself. Until core has accepted
// one it sends Basic, the scheme of core v7.1+; when core refuses Basic with
// 401 and GET /authenticate/<email> answers 200, as a core up to v7.0 (token
// only by default) does, it retries the call with token auth. The first
// scheme core accepts is kept for good and logged once. When both are
// refused, the Client's error names both schemes and the user.
type AutoAuth struct {
	// Logger gets the chosen scheme, once; nil means slog.Default().
	Logger *slog.Logger

	basic  basicAuth
	token  *tokenAuth
	chosen atomic.Int32
}

// NewAutoAuth returns an AutoAuth for the management API at baseURL. hc is
// what GET /authenticate is sent with; nil means a default client.
func NewAutoAuth(baseURL, username, password string, hc *http.Client) *AutoAuth {
	return &AutoAuth{
		basic: basicAuth{username: username, password: password},
		token: newTokenAuth(baseURL, username, password, hc),
	}
}

// Authenticate adds the credentials of the scheme in use: Basic until core
// has accepted token auth.
func (a *AutoAuth) Authenticate(ctx context.Context, req *http.Request) error {
	return a.current().Authenticate(ctx, req)
}

// Scheme is the scheme core accepted, SchemeBasic or SchemeToken; "" until
// core has accepted one.
func (a *AutoAuth) Scheme() string {
	switch a.chosen.Load() {
	case autoBasic:
		return SchemeBasic
	case autoToken:
		return SchemeToken
	}
	return ""
}

func (a *AutoAuth) current() Authenticator {
	if a.chosen.Load() == autoToken {
		return a.token
	}
	return a.basic
}

// alternative offers token auth after core refused Basic, as long as no
// scheme has been chosen and core has a token login for the user: a core
// that accepted one scheme before does not switch to the other.
func (a *AutoAuth) alternative(ctx context.Context) (Authenticator, error) {
	if a.chosen.Load() != autoUndecided {
		return nil, nil
	}
	if _, err := a.token.fetchSalt(ctx); err != nil {
		return nil, err
	}
	return a.token, nil
}

func (a *AutoAuth) accepted(auth Authenticator) {
	choice, name := autoBasic, SchemeBasic
	if auth == Authenticator(a.token) {
		choice, name = autoToken, SchemeToken
	}
	if a.chosen.CompareAndSwap(autoUndecided, choice) {
		log := a.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Info("openhim authentication scheme chosen", "scheme", name, "user", a.basic.username)
	}
}
