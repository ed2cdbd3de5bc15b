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
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("openhim: %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
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

// do sends one API call and returns the status and (bounded) body. A 401 is
// retried once when the Authenticator can fall back to another scheme.
func (c *Client) do(ctx context.Context, method, path string, payload []byte, limit int64) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		status, body, err := c.send(ctx, method, path, payload, limit)
		if err != nil || status != http.StatusUnauthorized || attempt > 0 {
			return status, body, err
		}
		fb, ok := c.auth.(fallbackAuthenticator)
		if !ok || !fb.fallBack(ctx) {
			return status, body, nil
		}
	}
}

func (c *Client) send(ctx context.Context, method, path string, payload []byte, limit int64) (int, []byte, error) {
	var reqBody io.Reader
	if payload != nil {
		reqBody = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reqBody)
	if err != nil {
		return 0, nil, fmt.Errorf("openhim: %s %s: %w", method, path, err)
	}
	if payload != nil {
		// Without it core parses the body as {} (docs/protocols.md,
		// Registration).
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/plain, */*")
	if c.auth != nil {
		if err := c.auth.Authenticate(ctx, req); err != nil {
			return 0, nil, fmt.Errorf("openhim: %s %s: %w", method, path, err)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("openhim: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		limit = maxErrorBody
	}
	// A body cut at the limit no longer parses, which callers that read it
	// report.
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("openhim: %s %s: reading reply: %w", method, path, err)
	}
	return resp.StatusCode, body, nil
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
