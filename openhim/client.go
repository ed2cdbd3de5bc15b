package openhim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// ContentType marks a mediator response that core's router unpacks.
const ContentType = "application/json+openhim"

// Transaction statuses a mediator may set (docs/protocols.md, Mediator
// response). Core stores the exact spelling.
const (
	StatusProcessing          = "Processing"
	StatusPendingAsync        = "Pending Async" // core v8 channels with isAsynchronousProcess
	StatusSuccessful          = "Successful"
	StatusCompleted           = "Completed"
	StatusCompletedWithErrors = "Completed with error(s)"
	StatusFailed              = "Failed"
)

// ErrUnknownMediator is returned by Heartbeat when core does not know the urn,
// e.g. because someone deleted the mediator in the console. Re-register.
var ErrUnknownMediator = errors.New("mediator unknown to core")

const (
	// maxErrorBody bounds how much of an error reply is read and quoted.
	maxErrorBody = 64 << 10
	// maxQuotedError bounds the core message kept in an error string.
	maxQuotedError = 300
	// maxConfigBody bounds a heartbeat reply; config is a small document.
	maxConfigBody = 10 << 20
)

// StatusError is a reply from core with an unexpected status. Message is
// core's plain-text explanation, shortened to one line.
type StatusError struct {
	Method     string
	Path       string
	StatusCode int
	Message    string
	// Hint, for a refusal (401, 403), says what to check; it names the user,
	// never the password.
	Hint string
}

func (e *StatusError) Error() string {
	text := http.StatusText(e.StatusCode)
	msg := fmt.Sprintf("openhim: %s %s: %d %s", e.Method, e.Path, e.StatusCode, text)
	if e.Message != "" && e.Message != text {
		msg += ": " + e.Message
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// IsRefused reports whether err is core refusing the credentials (401) or
// the user's rights (403): retrying soon cannot help, a person must act.
func IsRefused(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden)
}

// errorText turns an error body into a short single line.
func errorText(body []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(string(body)))
	if len(s) > maxQuotedError {
		s = s[:maxQuotedError] + "…"
	}
	return s
}

// Config configures a Client.
type Config struct {
	BaseURL    string        // management API, e.g. https://openhim-core:8080
	Auth       Authenticator // nil sends no credentials
	HTTPClient *http.Client  // nil = a default client with a timeout
}

// Client calls core's management API.
type Client struct {
	baseURL string
	auth    Authenticator
	hc      *http.Client
}

func defaultHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second}
}

// NewClient returns a client for the management API at cfg.BaseURL.
func NewClient(cfg Config) *Client {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &Client{baseURL: strings.TrimRight(cfg.BaseURL, "/"), auth: cfg.Auth, hc: hc}
}

// do sends one API call and returns the status and (bounded) body. Core's
// refusals, 401 and 403, come back as a *StatusError whose Hint says what to
// check. With an Authenticator of several schemes (AutoAuth), a 401 is first
// retried once with the other scheme.
func (c *Client) do(ctx context.Context, method, path string, payload []byte, limit int64) (int, []byte, error) {
	auth := c.auth
	multi, isMulti := auth.(multiScheme)
	if isMulti {
		auth = multi.current()
	}
	r, err := c.send(ctx, method, path, payload, limit, auth)
	if err != nil {
		return r.status, nil, err
	}
	refused := []Authenticator{auth}
	var altErr error // why no other scheme was tried
	if r.status == http.StatusUnauthorized && isMulti {
		var alt Authenticator
		if alt, altErr = multi.alternative(ctx); alt != nil {
			auth = alt
			refused = append(refused, alt)
			if r, err = c.send(ctx, method, path, payload, limit, auth); err != nil {
				return r.status, nil, err
			}
		}
	}
	switch r.status {
	case http.StatusUnauthorized:
		return r.status, r.body, &StatusError{Method: method, Path: path, StatusCode: r.status, Message: errorText(r.body),
			Hint: unauthorizedHint(refused, isMulti, altErr, r)}
	case http.StatusForbidden:
		if isMulti {
			multi.accepted(auth)
		}
		return r.status, r.body, &StatusError{Method: method, Path: path, StatusCode: r.status, Message: errorText(r.body),
			Hint: forbiddenHint(auth)}
	}
	if isMulti {
		multi.accepted(auth)
	}
	return r.status, r.body, nil
}

// reply is what send got back.
type reply struct {
	status int
	body   []byte
	// date is core's Date header (zero if absent) and authTS the auth-ts the
	// request carried, to tell clock skew from a wrong password.
	date   time.Time
	authTS string
}

func (c *Client) send(ctx context.Context, method, path string, payload []byte, limit int64, auth Authenticator) (reply, error) {
	var reqBody io.Reader
	if payload != nil {
		reqBody = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reqBody)
	if err != nil {
		return reply{}, fmt.Errorf("openhim: %s %s: %w", method, path, err)
	}
	if payload != nil {
		// Without it core parses the body as {} (docs/protocols.md,
		// Registration).
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/plain, */*")
	if auth != nil {
		if err := auth.Authenticate(ctx, req); err != nil {
			return reply{}, fmt.Errorf("openhim: %s %s: %w", method, path, err)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if hint := certificateHint(err); hint != "" {
			return reply{}, fmt.Errorf("openhim: %s %s: %w; %s", method, path, err, hint)
		}
		return reply{}, fmt.Errorf("openhim: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		limit = maxErrorBody
	}
	r := reply{status: resp.StatusCode, authTS: req.Header.Get("auth-ts")}
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		r.date = date
	}
	// A body cut at the limit no longer parses, which callers that read it
	// report.
	if r.body, err = io.ReadAll(io.LimitReader(resp.Body, limit)); err != nil {
		return r, fmt.Errorf("openhim: %s %s: reading reply: %w", method, path, err)
	}
	return r, nil
}

// Register sends the registration document (POST /mediators) after checking
// it locally, so a document core would reject fails with a full explanation.
// Core answers 201 for a new mediator and for any re-registration; only a
// higher version changes what core holds.
func (c *Client) Register(ctx context.Context, m Mediator) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("openhim: register %s: %w", m.URN, err)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("openhim: register %s: %w", m.URN, err)
	}
	const path = "/mediators"
	status, body, err := c.do(ctx, http.MethodPost, path, payload, maxErrorBody)
	if err != nil {
		return err
	}
	// The body is ignored: v8 with Basic may leave stray text in it.
	if status < 200 || status > 299 {
		return &StatusError{Method: http.MethodPost, Path: path, StatusCode: status, Message: errorText(body)}
	}
	return nil
}

type heartbeatRequest struct {
	Uptime float64 `json:"uptime"`
	Config bool    `json:"config,omitempty"`
}

// Heartbeat reports the mediator alive (POST /mediators/:urn/heartbeat) and,
// when wantConfig is set or the config was changed in the console since the
// last beat, returns the config object with passwords in clear. nil means no
// change. A 404 returns an error wrapping ErrUnknownMediator.
func (c *Client) Heartbeat(ctx context.Context, urn string, uptime time.Duration, wantConfig bool) (json.RawMessage, error) {
	payload, err := json.Marshal(heartbeatRequest{Uptime: uptime.Seconds(), Config: wantConfig})
	if err != nil {
		return nil, fmt.Errorf("openhim: heartbeat %s: %w", urn, err)
	}
	path := "/mediators/" + url.PathEscape(urn) + "/heartbeat"
	status, body, err := c.do(ctx, http.MethodPost, path, payload, maxConfigBody)
	switch {
	case err != nil:
		return nil, err
	case status == http.StatusNotFound:
		return nil, fmt.Errorf("openhim: heartbeat %s: %w", urn, ErrUnknownMediator)
	case status < 200 || status > 299:
		return nil, &StatusError{Method: http.MethodPost, Path: path, StatusCode: status, Message: errorText(body)}
	}
	cfg, err := heartbeatConfig(body)
	if err != nil {
		return nil, fmt.Errorf("openhim: heartbeat %s: %w", urn, err)
	}
	return cfg, nil
}

// heartbeatConfig interprets a 200 heartbeat body. Core answers an empty body
// when nothing changed and Koa's "OK" when config was asked for but none is
// stored; only a JSON object is config.
func heartbeatConfig(body []byte) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, nil
	}
	if !json.Valid(trimmed) {
		return nil, errors.New("config in heartbeat reply is not valid JSON")
	}
	return json.RawMessage(bytes.Clone(trimmed)), nil
}

// PutTransaction completes a transaction asynchronously (PUT
// /transactions/:id; docs/protocols.md, Asynchronous completion), after
// checking r the way core's schema would:
// core discards an invalid update with only a log line.
func (c *Client) PutTransaction(ctx context.Context, id string, r Response) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("openhim: update transaction %s: %w", id, err)
	}
	payload, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("openhim: update transaction %s: %w", id, err)
	}
	path := "/transactions/" + url.PathEscape(id)
	status, body, err := c.do(ctx, http.MethodPut, path, payload, maxErrorBody)
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return &StatusError{Method: http.MethodPut, Path: path, StatusCode: status, Message: errorText(body)}
	}
	return nil
}
