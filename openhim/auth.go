package openhim

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

// fallbackAuthenticator is implemented by an Authenticator that can switch
// scheme after core rejected a request; the Client then retries once.
type fallbackAuthenticator interface {
	fallBack(ctx context.Context) bool
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

type autoAuth struct {
	basic    Authenticator
	token    *tokenAuth
	useToken atomic.Bool
}

// NewAutoAuth starts with Basic and switches to token auth for good once core
// rejects Basic with 401 while GET /authenticate/<email> answers 200: the
// behaviour needed to work against both v5–v7.0 (token only by default) and
// v7.1+ (Basic preferred, token deprecated). hc nil means a default client.
func NewAutoAuth(baseURL, username, password string, hc *http.Client) Authenticator {
	return &autoAuth{
		basic: NewBasicAuth(username, password),
		token: newTokenAuth(baseURL, username, password, hc),
	}
}

func (a *autoAuth) Authenticate(ctx context.Context, req *http.Request) error {
	if a.useToken.Load() {
		return a.token.Authenticate(ctx, req)
	}
	return a.basic.Authenticate(ctx, req)
}

func (a *autoAuth) fallBack(ctx context.Context) bool {
	if a.useToken.Load() {
		return false
	}
	if _, err := a.token.fetchSalt(ctx); err != nil {
		return false
	}
	a.useToken.Store(true)
	return true
}
