package csd

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// OpenInfoMan's stored functions used here. The three searches take the
// same id, record and start/max parameters and answer a whole CSD document
// with only their own directory filled.
const (
	ProviderSearch     = "urn:ihe:iti:csd:2014:stored-function:provider-search"
	FacilitySearch     = "urn:ihe:iti:csd:2014:stored-function:facility-search"
	OrganizationSearch = "urn:ihe:iti:csd:2014:stored-function:organization-search"
	// CreateOtherID is an updating function of openhie/openinfoman-hwr; see
	// Client.AddOtherID.
	CreateOtherID = "urn:openhie.org:openinfoman-hwr:stored-function:health_worker_create_otherid"
)

// Client defaults.
const (
	DefaultPageSize     = 500
	DefaultRetryMax     = 3
	DefaultRetryWaitMin = time.Second
	DefaultRetryWaitMax = 30 * time.Second
	// DefaultMaxProviders sizes the default page bound (Client.MaxPages):
	// several times the largest national health worker registry.
	DefaultMaxProviders = 1_000_000
	// DefaultRequestTimeout bounds one request, body included, when the
	// caller's http.Client has no Timeout: a stalled OpenInfoMan must not
	// hold a sync run until its own timeout.
	DefaultRequestTimeout = 10 * time.Minute
)

// ErrPullBound is wrapped by the error of a pull that went past
// Client.MaxPages pages, or MaxPages × PageSize entries.
var ErrPullBound = errors.New("pull bound exceeded")

// ErrUnknownDocument is how OpenInfoMan answers a query on a document it does
// not hold: 200 with an empty body.
var ErrUnknownDocument = errors.New("unknown to OpenInfoMan (empty response)")

// Client pulls providers, facilities and organizations from an OpenInfoMan
// document through the paged search stored functions, and adds otherIDs to
// providers. Document is the document every call queries: facilities kept in
// another document are read with a copy of the Client naming that one. It is
// safe for concurrent use once set up.
type Client struct {
	BaseURL            string // e.g. http://openinfoman:8984 (no trailing /CSD)
	Document           string // e.g. "Providers"
	Username, Password string // optional basic auth; never in errors or logs
	PageSize           int    // entries per request; 0 means DefaultPageSize
	// HTTPClient carries the requests; nil means a client with timeouts.
	// Callers pass their own to instrument its transport (every attempt,
	// retries included, goes through it).
	HTTPClient *http.Client
	// RetryMax is how often a page is retried after a transport error, 429
	// or 5xx (a page read is safe to repeat); 0 means DefaultRetryMax and a
	// negative value disables retries. AddOtherID is never retried.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff between retries,
	// Retry-After included; zero means the defaults.
	RetryWaitMin, RetryWaitMax time.Duration
	// MaxPages bounds one pull, against a server that keeps sending full
	// pages: requesting more pages, or receiving more than MaxPages ×
	// PageSize entries, fails with ErrPullBound. 0 means
	// DefaultMaxProviders / PageSize + 1.
	MaxPages int
	Limits   Limits
}

// ProviderQuery selects the providers of a pull.
type ProviderQuery struct {
	// UpdatedSince, unless zero, keeps providers whose record@updated is at
	// or after it (sent as record@updated in UTC with a Z).
	UpdatedSince time.Time
	// EntityID, unless empty, keeps the provider with this entityID,
	// compared ignoring case (sent as <csd:id entityID="…"/>).
	EntityID string
}

// PullStop says why a pull ended without an error.
type PullStop string

const (
	// StopShortPage: a page held fewer than PageSize entries, the normal end.
	StopShortPage PullStop = "short page"
	// StopUnpaged: a page held more than PageSize entries, so OpenInfoMan
	// ignored start and max; that page was taken as the whole result.
	StopUnpaged PullStop = "paging ignored"
	// StopRepeated: a page repeated the previous one (the same entityIDs in
	// the same order), so OpenInfoMan ignored start. Entries beyond the
	// first page may be missing: the pull is not complete.
	StopRepeated PullStop = "page repeated"
)

// PullStats counts what a pull did.
type PullStats struct {
	Pages    int // pages requested
	Requests int // HTTP attempts, retries included
	// Providers counts the providers, and Entities the facilities or
	// organizations, handed to the callback; a pull fills one of them.
	Providers int
	Entities  int
	Repeats   int // entries skipped because their entityID was already delivered
	// Stop says why the pull ended, at page Pages; empty after an error. A
	// run report should show anything but StopShortPage.
	Stop PullStop
}

// Complete reports whether the pull ended having read every match, so that
// a caller may advance its watermark.
func (s PullStats) Complete() bool { return s.Stop == StopShortPage || s.Stop == StopUnpaged }

// StatusError is an HTTP answer other than 200 from OpenInfoMan.
type StatusError struct {
	StatusCode int
	Status     string // e.g. "422 Unprocessable Entity"
	Body       string // the start of the body, for diagnosis
	// Location is where a redirect pointed, without query, fragment or
	// user info; redirects are not followed.
	Location string
}

func (e *StatusError) Error() string {
	msg := "OpenInfoMan answered " + e.Status
	if e.StatusCode >= 300 && e.StatusCode < 400 {
		// Following would resend the request as a GET, or resend the
		// credentials elsewhere.
		where := "no Location"
		if e.Location != "" {
			where = "Location " + e.Location
		}
		return msg + " with " + where + " (redirects are not followed; check the OpenInfoMan URL)"
	}
	switch e.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += " (check the OpenInfoMan username and password)"
	case http.StatusUnprocessableEntity:
		msg += ` ("Error executing xquery": the stored function failed, e.g. on a stored record@updated that is not a date)`
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// EntityQuery selects the facilities or organizations of a pull.
type EntityQuery struct {
	// UpdatedSince, unless zero, keeps entities whose record@updated is at
	// or after it, as ProviderQuery.UpdatedSince does.
	UpdatedSince time.Time
}

// Providers calls fn for every provider matching q, page by page, each page
// decoded straight from the response body. Pages are not a snapshot of the
// document, so a provider whose exact entityID was already delivered in this
// pull is skipped and counted in Repeats (ids differing only in case are both
// delivered: telling them apart is the caller's business). An error from fn
// stops the pull and is returned wrapped.
//
// The pull ends at a short page, at a page of more than PageSize providers
// (a server ignoring paging: that page is the whole result), at a page that
// repeats the previous one (a server ignoring start), or with ErrPullBound;
// PullStats.Stop tells which.
func (c *Client) Providers(ctx context.Context, q ProviderQuery, fn func(*Provider) error) (PullStats, error) {
	return pull(ctx, c, providerSearch, q.EntityID, q.UpdatedSince, fn)
}

// Facilities calls fn for every facility of the document matching q, through
// facility-search, paged, deduplicated and ended exactly as Providers is;
// PullStats.Entities counts them.
func (c *Client) Facilities(ctx context.Context, q EntityQuery, fn func(*Entity) error) (PullStats, error) {
	return pull(ctx, c, facilitySearch, "", q.UpdatedSince, fn)
}

// Organizations calls fn for every organization of the document matching q,
// through organization-search, as Facilities does for facilities.
func (c *Client) Organizations(ctx context.Context, q EntityQuery, fn func(*Entity) error) (PullStats, error) {
	return pull(ctx, c, organizationSearch, "", q.UpdatedSince, fn)
}

// search is a paged search stored function and how to read its answer.
type search[T any] struct {
	function string // the stored function's URN
	noun     string // what it finds, plural, for errors
	// decode reads one answer, returning how many entries it held.
	decode func(r io.Reader, lim Limits, deliver func(T) error) (int, error)
	id     func(T) string
	count  func(*PullStats) *int // the count of delivered entries
}

var (
	providerSearch = search[*Provider]{
		function: ProviderSearch,
		noun:     "providers",
		decode: func(r io.Reader, lim Limits, deliver func(*Provider) error) (int, error) {
			stats, err := DecodeProviders(r, lim, deliver)
			return stats.Providers, err
		},
		id:    func(p *Provider) string { return p.EntityID },
		count: func(s *PullStats) *int { return &s.Providers },
	}
	facilitySearch     = entitySearch(FacilitySearch, KindFacility, "facilities")
	organizationSearch = entitySearch(OrganizationSearch, KindOrganization, "organizations")
)

func entitySearch(function string, kind EntityKind, noun string) search[*Entity] {
	return search[*Entity]{
		function: function,
		noun:     noun,
		decode: func(r io.Reader, lim Limits, deliver func(*Entity) error) (int, error) {
			stats, err := DecodeEntities(r, lim, kind, deliver)
			return stats.Entities, err
		},
		id:    func(e *Entity) string { return e.EntityID },
		count: func(s *PullStats) *int { return &s.Entities },
	}
}

// pull runs a paged search; see Client.Providers for its rules.
func pull[T any](ctx context.Context, c *Client, s search[T], entityID string, since time.Time, fn func(T) error) (PullStats, error) {
	var stats PullStats
	if c.BaseURL == "" || c.Document == "" {
		return stats, errors.New("csd: Client needs a BaseURL and a Document")
	}
	pageSize := c.PageSize
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	maxPages := c.MaxPages
	if maxPages <= 0 {
		maxPages = DefaultMaxProviders/pageSize + 1
	}
	maxEntries := maxPages * pageSize
	if maxEntries/pageSize != maxPages {
		maxEntries = int(^uint(0) >> 1) // overflowed: no entry bound
	}
	endpoint := c.endpoint(s.function)
	hc := c.retryClient(&stats.Requests)
	delivered := s.count(&stats)
	// Holds one id per delivered entry, about 100 bytes each: the entry
	// bound keeps it under ~100 MB.
	seen := map[string]struct{}{}
	// The ids of this page and the previous one, in order, to notice a
	// repeated page; only PageSize of them matter.
	var ids, prevIDs []string
	deliver := func(v T) error {
		id := s.id(v)
		if len(ids) < pageSize {
			ids = append(ids, id)
		}
		if *delivered >= maxEntries {
			return fmt.Errorf("more than %d %s (Client.MaxPages %d × PageSize %d): %w", maxEntries, s.noun, maxPages, pageSize, ErrPullBound)
		}
		if id != "" {
			if _, dup := seen[id]; dup {
				stats.Repeats++
				return nil
			}
			seen[id] = struct{}{}
		}
		*delivered++
		return fn(v)
	}
	for page := 1; ; page++ {
		start := (page-1)*pageSize + 1
		if page > maxPages {
			return stats, fmt.Errorf("csd: page %d (start %d): more than %d pages (Client.MaxPages) of %d %s, every one full: %w", page, start, maxPages, pageSize, s.noun, ErrPullBound)
		}
		stats.Pages++
		before := stats.Requests
		ids = ids[:0]
		n, err := fetchPage(ctx, c, hc, endpoint, requestParams(entityID, since, start, pageSize), s.decode, deliver)
		if err != nil {
			if attempts := stats.Requests - before; attempts > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempts, err)
			}
			return stats, fmt.Errorf("csd: page %d (start %d): %w", page, start, err)
		}
		switch {
		case n > pageSize:
			stats.Stop = StopUnpaged
			return stats, nil
		case n < pageSize:
			stats.Stop = StopShortPage
			return stats, nil
		case page > 1 && slices.Equal(ids, prevIDs):
			stats.Stop = StopRepeated
			return stats, nil
		}
		ids, prevIDs = prevIDs, ids
	}
}

// endpoint is the URL of a stored function on the Client's document; an
// updating function's name starts with "update/".
func (c *Client) endpoint(function string) string {
	return strings.TrimRight(c.BaseURL, "/") + "/CSD/csr/" + url.PathEscape(c.Document) + "/careServicesRequest/" + function
}

// fetchPage requests and decodes one page, returning how many entries it
// held (repeats included, for the stop rule).
func fetchPage[T any](ctx context.Context, c *Client, hc *retryablehttp.Client, endpoint string, body []byte, decode func(io.Reader, Limits, func(T) error) (int, error), deliver func(T) error) (int, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return 0, err
	}
	c.prepare(req.Request)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return 0, statusError(resp)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(1); err == io.EOF {
		return 0, fmt.Errorf("document %q is %w", c.Document, ErrUnknownDocument)
	}
	return decode(br, c.Limits, deliver)
}

// prepare sets what every request to OpenInfoMan carries.
func (c *Client) prepare(req *http.Request) {
	req.Header.Set("Content-Type", "text/xml")
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
}

// drain reads a little of what is left so that the connection can be
// reused after an error, then closes the body.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

func statusError(resp *http.Response) *StatusError {
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return &StatusError{StatusCode: resp.StatusCode, Status: resp.Status, Body: strings.Join(strings.Fields(string(snippet)), " "), Location: location(resp)}
}

// location is a redirect's target for an error message: resolved, and
// stripped of what may carry a secret (user info, query, fragment).
func location(resp *http.Response) string {
	if resp.StatusCode < 300 || resp.StatusCode >= 400 {
		return ""
	}
	u, err := resp.Location()
	if err != nil {
		return ""
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// requestParams builds the parameters of a search. The watermark is
// truncated to seconds, which can only widen the >= filter.
func requestParams(entityID string, since time.Time, start, pageSize int) []byte {
	var b strings.Builder
	b.WriteString(`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013">`)
	if entityID != "" {
		b.WriteString(`<csd:id entityID="`)
		_ = xml.EscapeText(&b, []byte(entityID)) // a strings.Builder does not fail
		b.WriteString(`"/>`)
	}
	if !since.IsZero() {
		fmt.Fprintf(&b, `<csd:record updated="%s"/>`, since.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, `<csd:start>%d</csd:start><csd:max>%d</csd:max></csd:requestParams>`, start, pageSize)
	return []byte(b.String())
}

// httpClient is the caller's client, or a default one, copied so that it is
// used without being changed (its transport's instrumentation included). A
// followed redirect would repeat the POST as a GET, so a 3xx is answered as
// an error instead.
func (c *Client) httpClient() *http.Client {
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	own := *hc
	own.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if own.Timeout <= 0 {
		own.Timeout = DefaultRequestTimeout
	}
	return &own
}

func (c *Client) retryClient(requests *int) *retryablehttp.Client {
	hc := c.httpClient()
	retryMax := c.RetryMax
	switch {
	case retryMax == 0:
		retryMax = DefaultRetryMax
	case retryMax < 0:
		retryMax = 0
	}
	waitMin, waitMax := c.RetryWaitMin, c.RetryWaitMax
	if waitMin <= 0 {
		waitMin = DefaultRetryWaitMin
	}
	if waitMax <= 0 {
		waitMax = DefaultRetryWaitMax
	}
	return &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       nil, // errors are returned; retries show in PullStats.Requests
		RetryWaitMin: waitMin,
		RetryWaitMax: waitMax,
		RetryMax:     retryMax,
		CheckRetry:   retryablehttp.DefaultRetryPolicy,
		Backoff:      cappedBackoff,
		// Hand back the last response so the error can name its status.
		ErrorHandler:   retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(retryablehttp.Logger, *http.Request, int) { *requests++ },
	}
}

// cappedBackoff is DefaultBackoff without its uncapped Retry-After
// (go-retryablehttp issue #247): a pull must not sleep for an hour inside one
// page.
func cappedBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	return min(retryablehttp.DefaultBackoff(lo, hi, attempt, resp), hi)
}

// defaultHTTPClient allows OpenInfoMan time to run the XQuery before it
// answers, but not forever.
var defaultHTTPClient = sync.OnceValue(func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 2 * time.Minute
	return &http.Client{Transport: t, Timeout: DefaultRequestTimeout}
})
