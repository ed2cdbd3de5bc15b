// Package rapidpro is a client for the parts of RapidPro API v2 the mHero
// mediator uses: contacts, fields, groups, contact actions and the workspace.
//
// It retries only what cannot duplicate a contact, caps how long it sleeps on
// Retry-After, keeps a token bucket per rate-limit scope, and turns every
// failure into an *Error whose Kind says what happened.
package rapidpro

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/time/rate"
)

// Config configures a Client.
type Config struct {
	BaseURL string // e.g. https://rapidpro.example.org (the client appends /api/v2/…json)
	Token   string // sent as "Authorization: Token <t>"; never in errors or logs
	// HTTPClient is the base client, whose Transport callers may instrument;
	// nil = a default with timeouts. The client works on a copy that never
	// follows redirects and, when Timeout is 0, bounds each request by 90s
	// (defaultRequestTimeout).
	HTTPClient *http.Client

	RetryMax     int           // retries after the first attempt; 0 = 4, negative = none
	RetryWaitMin time.Duration // 0 = 1s
	RetryWaitMax time.Duration // 0 = 30s
	// RetryAfterCap is the longest Retry-After the client sleeps on (0 = 60s).
	// A longer one is not slept on: the call returns *Error{Kind:
	// KindThrottled, RetryAfter: d}, and so does every call on that scope
	// until the pause is over.
	RetryAfterCap time.Duration

	// RatePerHour is a client-side token bucket per scope (v2.contacts for
	// contacts.json, v2 for the rest); 0 = unlimited. Independently of it, a
	// 429 pauses its whole scope until Retry-After.
	RatePerHour int

	// Now is the clock a 429's pause is measured on; nil = time.Now. A
	// caller with its own clock passes it so the pause follows that clock.
	Now func() time.Time

	Logger *slog.Logger // nil = discard

	// OnWait, when set, hears how long a call waited for its rate scope
	// (the client's budget or a 429's pause) before it was sent; OnRetryAfter
	// hears each Retry-After RapidPro answered. For metrics.
	OnWait       func(scope string, waited time.Duration)
	OnRetryAfter func(scope string, after time.Duration)
}

// Client calls one RapidPro workspace. It is safe for concurrent use.
type Client struct {
	base          *url.URL
	token         string
	http          *http.Client
	retryMax      int
	waitMin       time.Duration
	waitMax       time.Duration
	retryAfterCap time.Duration
	log           *slog.Logger
	onWait        func(string, time.Duration)
	onRetryAfter  func(string, time.Duration)
	scopes        map[string]*scope
	sent          atomic.Int64 // requests sent on the wire, every attempt
}

// Sent is how many HTTP requests the client has sent so far: every attempt
// (retries included), every page, every lookup after a failed create. It is
// counted in the transport, so it is what reached the wire. Callers diff it
// around a phase for exact counts.
func (c *Client) Sent() int64 { return c.sent.Load() }

// Rate-limit scopes, named as RapidPro's throttle names them.
const (
	scopeContacts = "v2.contacts"
	scopeDefault  = "v2"
)

// Response bodies beyond these sizes are cut: a page of 250 contacts is far
// smaller than the first, an error body far smaller than the second.
const (
	maxBodyBytes  = 32 << 20
	maxErrorBytes = 64 << 10
)

// reconcileTimeout bounds the lookup after a create whose outcome is unknown,
// when the caller's context is already done.
const reconcileTimeout = 10 * time.Second

// defaultRequestTimeout bounds one HTTP request when the caller's client has
// no Timeout, so a hung connection costs at most this, not the whole run.
const defaultRequestTimeout = 90 * time.Second

// New checks cfg and builds a Client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("rapidpro: base URL is empty")
	}
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("rapidpro: base URL: %w", err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("rapidpro: base URL %q must be an absolute http(s) URL", base.Redacted())
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("rapidpro: base URL %q must not have a query or fragment", base.Redacted())
	}
	if strings.TrimSpace(cfg.Token) == "" {
		return nil, errors.New("rapidpro: token is empty")
	}

	c := &Client{
		base:          base,
		token:         cfg.Token,
		retryMax:      cfg.RetryMax,
		waitMin:       cfg.RetryWaitMin,
		waitMax:       cfg.RetryWaitMax,
		retryAfterCap: cfg.RetryAfterCap,
		log:           cfg.Logger,
		onWait:        cfg.OnWait,
		onRetryAfter:  cfg.OnRetryAfter,
	}
	c.http = ownHTTPClient(cfg.HTTPClient)
	switch {
	case c.retryMax == 0:
		c.retryMax = 4
	case c.retryMax < 0:
		c.retryMax = 0
	}
	if c.waitMin <= 0 {
		c.waitMin = time.Second
	}
	if c.waitMax <= 0 {
		c.waitMax = 30 * time.Second
	}
	c.waitMax = max(c.waitMax, c.waitMin)
	if c.retryAfterCap <= 0 {
		c.retryAfterCap = 60 * time.Second
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c.scopes = map[string]*scope{
		scopeContacts: newScope(scopeContacts, cfg.RatePerHour, now),
		scopeDefault:  newScope(scopeDefault, cfg.RatePerHour, now),
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 8
	return &http.Client{Transport: t, Timeout: defaultRequestTimeout}
}

// ownHTTPClient copies base (the caller's client stays as it was) and makes
// the copy safe for this API: redirects are refused, since following one
// (typically http→https) turns a POST into a GET that "succeeds" with an
// empty answer; a missing timeout gets a bound. The Transport is kept as
// given: wrapping an *http.Transport changes how net/http retries on a
// reused connection.
func ownHTTPClient(base *http.Client) *http.Client {
	if base == nil {
		base = defaultHTTPClient()
	}
	hc := *base
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if hc.Timeout <= 0 {
		hc.Timeout = defaultRequestTimeout
	}
	return &hc
}

// countSent counts one request per attempt, plus every extra time the
// transport writes the request within an attempt (net/http silently
// repeats an idempotent request whose reused connection was closed).
func (c *Client) countSent(ctx context.Context) (context.Context, func()) {
	var writes atomic.Int32
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() {
			if writes.Add(1) > 1 {
				c.sent.Add(1)
			}
		},
	})
	return ctx, func() {
		writes.Store(0)
		c.sent.Add(1)
	}
}

// scope is one of RapidPro's throttle buckets as seen from this client: a
// steady token bucket plus a pause set by the server's 429s.
type scope struct {
	name    string
	limiter *rate.Limiter // nil = unlimited
	now     func() time.Time

	mu          sync.Mutex
	pausedUntil time.Time
}

// paceShare is the share of the configured rate the client paces at.
const paceShare = 0.99

func newScope(name string, perHour int, now func() time.Time) *scope {
	s := &scope{name: name, now: now}
	if perHour > 0 {
		// Burst 1: the server's window slides over an hour, so any burst is
		// spent from the same hourly budget; pacing evenly wastes nothing.
		// The server counts arrivals: paced at exactly its rate, network
		// jitter puts one request too many into a window now and then, and
		// the 429 costs a Retry-After. Pacing a little under it does not.
		s.limiter = rate.NewLimiter(rate.Limit(paceShare*float64(perHour)/3600), 1)
	}
	return s
}

func (s *scope) pause(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until := s.now().Add(d); until.After(s.pausedUntil) {
		s.pausedUntil = until
	}
}

func (s *scope) pauseLeft() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pausedUntil.Sub(s.now())
}

// wait blocks until the scope may send one request. A pause longer than
// limit is not waited on; the caller gets it back as a throttle error.
func (s *scope) wait(ctx context.Context, limit time.Duration) (time.Duration, error) {
	if left := s.pauseLeft(); left > 0 {
		if left > limit {
			return left, nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < left {
			// Sleeping until the deadline would only end in the same error.
			return 0, fmt.Errorf("%w: scope %s is paused for %s", context.DeadlineExceeded, s.name, left)
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
	if s.limiter != nil {
		if err := s.limiter.Wait(ctx); err != nil {
			if _, hasDeadline := ctx.Deadline(); hasDeadline && ctx.Err() == nil {
				// x/time/rate refuses up front a wait the deadline would cut
				// short, with an error of its own; callers must see it as
				// the run's timeout, not as a transport failure.
				return 0, fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
			}
			return 0, err
		}
	}
	return 0, nil
}

// retryMode says which failures a request may be repeated after.
type retryMode int

const (
	// retryIdempotent: the request cannot duplicate anything (GET, update by
	// uuid, upsert by urn, contact actions), so transient failures and
	// throttling are retried.
	retryIdempotent retryMode = iota
	// retryThrottledOnly: a create. A 429 means nothing was committed, so it
	// is retried; after a 5xx or a lost connection the object may exist.
	retryThrottledOnly
)

// request is one API call.
type request struct {
	method   string
	endpoint string     // "contacts.json"
	query    url.Values // nil for none
	body     any        // marshalled to JSON; nil for none
	mode     retryMode
	pageURL  string // a `next` URL to call instead of endpoint+query
}

// do runs req and decodes a 2xx body into out (when out is non-nil).
func (c *Client) do(ctx context.Context, req request, out any) error {
	fail := func(err error) *Error {
		return &Error{Method: req.method, Endpoint: req.endpoint, Kind: KindTransport, Err: err}
	}

	target, err := c.url(req)
	if err != nil {
		e := fail(err)
		e.unsent = true
		return e
	}
	var body []byte
	if req.body != nil {
		if body, err = json.Marshal(req.body); err != nil {
			e := fail(fmt.Errorf("encoding body: %w", err))
			e.unsent = true
			return e
		}
	}

	sc := c.scopeOf(req.endpoint)
	if err := c.waitScope(ctx, sc, req); err != nil {
		return err
	}

	var rawBody any // a nil []byte would still make retryablehttp send a zero-length body
	if body != nil {
		rawBody = body
	}
	traced, attempt := c.countSent(ctx)
	hreq, err := retryablehttp.NewRequestWithContext(traced, req.method, target, rawBody)
	if err != nil {
		e := fail(err)
		e.unsent = true
		return e
	}
	hreq.Header.Set("Authorization", "Token "+c.token)
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "mhero-mediator")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}

	rc := &retryablehttp.Client{
		HTTPClient:     c.http,
		Logger:         retryLogger{c.log},
		RetryWaitMin:   c.waitMin,
		RetryWaitMax:   c.waitMax,
		RetryMax:       c.retryMax,
		CheckRetry:     c.checkRetry(req.mode, sc),
		Backoff:        c.backoff,
		ErrorHandler:   retryablehttp.PassthroughErrorHandler,
		PrepareRetry:   func(r *http.Request) error { return c.waitScope(r.Context(), sc, req) },
		RequestLogHook: func(retryablehttp.Logger, *http.Request, int) { attempt() },
	}
	start := time.Now()
	resp, err := rc.Do(hreq)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		var apiErr *Error
		if errors.As(err, &apiErr) {
			return apiErr
		}
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return fail(err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		e := parseError(req.method, req.endpoint, resp.StatusCode, resp.Header, data)
		if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
			e.Err = redirectError(resp)
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "rapidpro call failed",
			slog.String("method", req.method), slog.String("endpoint", req.endpoint),
			slog.Int("status", resp.StatusCode), slog.String("kind", e.Kind.String()),
			slog.Duration("took", time.Since(start)))
		return e
	}
	if out == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return fail(fmt.Errorf("reading answer: %w", err))
	}
	if err := json.Unmarshal(data, out); err != nil {
		e := fail(fmt.Errorf("decoding answer: %w", err))
		e.Status = resp.StatusCode
		return e
	}
	return nil
}

// redirectError says where a refused redirect pointed (scheme, host and
// path only: a query may carry anything), so the operator sees that the
// base URL is wrong.
func redirectError(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return errors.New("redirect without a Location (not followed): check the base URL")
	}
	target, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return errors.New("redirect to an unparsable Location (not followed): check the base URL")
	}
	shown := url.URL{Scheme: target.Scheme, Host: target.Host, Path: target.Path}
	return fmt.Errorf("redirected to %s (not followed): check the base URL", shown.String())
}

// waitScope waits for the request's scope, turning a pause too long to sleep
// on, or a cancelled wait, into an error raised before sending.
func (c *Client) waitScope(ctx context.Context, sc *scope, req request) error {
	began := time.Now()
	left, err := sc.wait(ctx, c.retryAfterCap)
	if waited := time.Since(began); c.onWait != nil && waited >= time.Millisecond {
		c.onWait(sc.name, waited)
	}
	switch {
	case err != nil:
		return &Error{Method: req.method, Endpoint: req.endpoint, Kind: KindTransport, Err: err, unsent: true}
	case left > 0:
		return &Error{Method: req.method, Endpoint: req.endpoint, Kind: KindThrottled, RetryAfter: left, unsent: true}
	}
	return nil
}

func (c *Client) scopeOf(endpoint string) *scope {
	if endpoint == "contacts.json" {
		return c.scopes[scopeContacts]
	}
	return c.scopes[scopeDefault]
}

// url builds the request URL. A `next` page URL is used as given, except
// that it must point at the configured host and keeps the configured
// scheme: the token must never be sent elsewhere, nor downgraded to http by
// a server that builds its links behind a TLS-terminating proxy.
func (c *Client) url(req request) (string, error) {
	if req.pageURL == "" {
		u := *c.base
		u.Path = c.base.Path + "/api/v2/" + req.endpoint
		u.RawPath = ""
		if len(req.query) > 0 {
			u.RawQuery = req.query.Encode()
		}
		return u.String(), nil
	}
	next, err := c.base.Parse(req.pageURL)
	if err != nil {
		return "", fmt.Errorf("next page URL: %w", err)
	}
	if next.Host != c.base.Host {
		return "", fmt.Errorf("next page URL points at host %q, not %q", next.Host, c.base.Host)
	}
	next.Scheme = c.base.Scheme
	next.User = nil
	return next.String(), nil
}

// checkRetry is the retry policy: only failures that cannot have committed
// anything, or requests that are safe to repeat, are retried; a Retry-After
// beyond the cap is not slept on.
func (c *Client) checkRetry(mode retryMode, sc *scope) retryablehttp.CheckRetry {
	return func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return false, ctxErr
		}
		if err != nil {
			return mode == retryIdempotent && retryableTransportError(err), nil
		}
		switch resp.StatusCode {
		case http.StatusTooManyRequests:
			d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			if ok {
				sc.pause(d) // the budget is the workspace's: hold back every caller
				c.log.Warn("rapidpro throttled", slog.String("scope", sc.name), slog.Duration("retry_after", d))
				if c.onRetryAfter != nil {
					c.onRetryAfter(sc.name, d)
				}
			}
			return !ok || d <= c.retryAfterCap, nil
		case http.StatusServiceUnavailable:
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && d > c.retryAfterCap {
				return false, nil
			}
			return mode == retryIdempotent, nil
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
			return mode == retryIdempotent, nil
		}
		return false, nil
	}
}

// retryableTransportError is false for errors a repeat cannot fix.
func retryableTransportError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		certInvalid      x509.CertificateInvalidError
		hostname         x509.HostnameError
		certVerify       *tls.CertificateVerificationError
		dnsErr           *net.DNSError
	)
	switch {
	case errors.As(err, &unknownAuthority), errors.As(err, &certInvalid),
		errors.As(err, &hostname), errors.As(err, &certVerify):
		return false
	case errors.As(err, &dnsErr):
		return dnsErr.IsTemporary || dnsErr.IsTimeout
	}
	return true
}

// backoff is retryablehttp's exponential backoff, honouring Retry-After but
// never beyond the cap (retryablehttp leaves Retry-After uncapped).
func (c *Client) backoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	return min(retryablehttp.DefaultBackoff(lo, hi, attempt, resp), c.retryAfterCap)
}

// retryLogger hands retryablehttp's messages to slog, with its per-attempt
// failures at debug level: the final outcome is what callers log.
type retryLogger struct{ log *slog.Logger }

func (l retryLogger) Error(msg string, kv ...any) { l.log.Debug(msg, kv...) }
func (l retryLogger) Info(msg string, kv ...any)  { l.log.Debug(msg, kv...) }
func (l retryLogger) Debug(msg string, kv ...any) { l.log.Debug(msg, kv...) }
func (l retryLogger) Warn(msg string, kv ...any)  { l.log.Debug(msg, kv...) }

// page is the envelope of every listing.
type page[T any] struct {
	Next    *string `json:"next"`
	Results []T     `json:"results"`
}

// list calls fn for every item of a listing, following `next` until null.
func list[T any](ctx context.Context, c *Client, endpoint string, query url.Values, fn func(T) error) error {
	req := request{method: http.MethodGet, endpoint: endpoint, query: query, mode: retryIdempotent}
	for {
		var p page[T]
		if err := c.do(ctx, req, &p); err != nil {
			return err
		}
		for _, item := range p.Results {
			if err := fn(item); err != nil {
				return err
			}
		}
		if p.Next == nil || *p.Next == "" {
			return nil
		}
		req.pageURL = *p.Next
	}
}
