// Package rapidprotest is an in-memory RapidPro workspace served over
// httptest, answering API v2 the way a real server does: the same statuses,
// error bodies, URN normalisation and uniqueness, update semantics (silent
// URN drop, group replacement, field merge), cursor paging and rate limits.
// Faults (status codes, delays, dropped connections, failures after the
// write committed) can be injected per request.
//
// It needs no *testing.T, so demos and other packages' tests can use it.
package rapidprotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nyaruka/gocommon/i18n"
	"github.com/nyaruka/gocommon/urns"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	Token      string           // the only accepted token; default "test-token"
	Country    string           // workspace default country (ISO alpha-2), e.g. "LR"; "" accepts only international numbers
	PageSize   int              // results per page; default 250
	RateLimit  int              // requests per scope (v2.contacts, v2) per RateWindow; 0 = unlimited
	RateWindow time.Duration    // default 1h
	Now        func() time.Time // clock for timestamps and the rate window; default time.Now
	// OmitStatus makes contacts look as older servers sent them: no
	// "status" key, only the deprecated "blocked" and "stopped" booleans.
	OmitStatus bool
	// OnRequest, when set, is called with each request once it has been
	// answered (Status as sent) or dropped (Status 0, also when the client
	// went away during an injected delay), from the request's own
	// goroutine and outside the server's lock, so it may call the server's
	// methods. The answer is written but may not have reached the client
	// yet. Tests use it to act at an exact point of a run instead of
	// sleeping.
	OnRequest func(Request)
	// Listener, when set, is served instead of a new loopback listener on
	// a free port: a long-running fake on a fixed address. Close closes it.
	Listener net.Listener
}

// Request is one request the server received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   string
	Status int // as answered; 0 when the connection was dropped, and while being handled
}

// Fault makes the server misbehave on matching requests.
type Fault struct {
	Method, Path string // match (Path like "/api/v2/contacts.json"); empty = any
	Skip         int    // let this many matching requests through first ("fail the Nth" = Skip N-1)
	Times        int    // how many matching requests to fault; default 1
	// Status answers with this status and the body the real server (or its
	// proxy) would send: 429 JSON detail with Retry-After, 500 plain text,
	// 502/504 HTML, 503 empty, others a JSON detail. 0 with Drop false
	// means the request is only delayed.
	Status      int
	RetryAfter  time.Duration // Retry-After for 429/503 (whole seconds, at least 1); 0 = no header
	Delay       time.Duration // wait before handling; with AfterCommit, after handling and before answering
	Drop        bool          // close the connection without answering
	AfterCommit bool          // handle the request (writes commit) and only then delay, fail or drop
	// Committed, with AfterCommit, is called once the request has been
	// handled and before the answer: a test can act (kill the client) at
	// the moment the write exists but its answer has not left.
	Committed func()
	// CutBody handles the request (writes commit), then sends the real
	// status line, headers and Content-Length but only the first half of
	// the body, and closes the connection: a reset mid-body.
	CutBody bool
	// Body, with Status, is sent instead of the default body for that
	// status: as text/html when it starts with "<", else as
	// application/json (valid or not). Status 200 with a Body answers
	// without handling the request (nothing commits) unless AfterCommit.
	Body string
}

// Server is an in-memory RapidPro workspace. Methods are safe for concurrent
// use.
type Server struct {
	opts      Options
	srv       *httptest.Server
	closed    chan struct{}
	closeOnce sync.Once

	mu            sync.Mutex
	workspaceUUID string
	seq           int64
	contacts      []*contact // creation order
	byUUID        map[string]*contact
	byURN         map[string]*contact
	groups        []*group
	fields        []*field
	requests      []Request
	faults        []*faultState
	hits          map[string][]time.Time // rate-limit scope → times of counted requests

	// Open connections and requests being handled, for WaitIdle; changed
	// is closed and replaced whenever either moves. A lock of their own:
	// the accept loop must not wait for s.mu, which a listing holds long.
	connMu   sync.Mutex
	open     map[net.Conn]struct{}
	handling int
	changed  chan struct{}
}

type faultState struct {
	Fault
	seen, applied int
}

// Workspace object limits.
const (
	maxFields = 250
	maxGroups = 250
)

// New starts a server on a loopback port. Close it when done.
func New(opts Options) *Server {
	if opts.Token == "" {
		opts.Token = "test-token"
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 250
	}
	if opts.RateWindow <= 0 {
		opts.RateWindow = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:          opts,
		closed:        make(chan struct{}),
		workspaceUUID: newUUID(),
		byUUID:        map[string]*contact{},
		byURN:         map[string]*contact{},
		hits:          map[string][]time.Time{},
		open:          map[net.Conn]struct{}{},
		changed:       make(chan struct{}),
	}
	if opts.Listener != nil {
		s.srv = &httptest.Server{Listener: opts.Listener, Config: &http.Server{Handler: http.HandlerFunc(s.serve)}}
	} else {
		s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	}
	s.srv.Config.ConnState = s.trackConn
	s.srv.Start()
	return s
}

// URL is the server's base URL, to use as rapidpro.Config.BaseURL.
func (s *Server) URL() string { return s.srv.URL }

// Token is the token the server accepts.
func (s *Server) Token() string { return s.opts.Token }

// Close stops the server, cutting short any injected delay.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.srv.Close()
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// Inject adds a fault. Faults are checked in the order injected; every
// matching fault counts a request toward its Skip, and the first one due
// applies.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultState{Fault: f})
}

// WaitIdle waits until no connection is open and no request is being
// handled. Once a client has died, every request the server received from
// it has then been recorded and finished: answered, or dropped with Status
// 0. A live client's idle keep-alive connection keeps it waiting until ctx
// ends, and so does a Close running at the same time (the closing listener
// may never accept its probe).
func (s *Server) WaitIdle(ctx context.Context) error {
	// A connection still in the listener's queue is not counted yet. The
	// queue is first in, first out, so once a connection dialled now has
	// been accepted, every one before it has too.
	probe, err := s.dialProbe()
	if err != nil {
		return err
	}
	defer func() {
		if probe != nil {
			probe.Close()
		}
	}()
	for {
		s.connMu.Lock()
		if probe != nil && s.accepted(probe) {
			probe.Close() // the server sees EOF and closes its end
			probe = nil
		}
		idle := probe == nil && len(s.open) == 0 && s.handling == 0
		conns, handling, changed := len(s.open), s.handling, s.changed
		s.connMu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("rapidprotest: not idle (%d connections open, %d requests being handled): %w", conns, handling, ctx.Err())
		}
	}
}

// dialProbe connects to the server's own TCP listener. It returns nil once
// the server is closed, and on another kind of listener, whose two ends
// cannot be matched by address.
func (s *Server) dialProbe() (net.Conn, error) {
	select {
	case <-s.closed:
		return nil, nil
	default:
	}
	addr := s.srv.Listener.Addr()
	if addr.Network() != "tcp" {
		return nil, nil
	}
	probe, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		return nil, fmt.Errorf("rapidprotest: probe connection: %w", err)
	}
	return probe, nil
}

// accepted reports whether the server has taken probe's connection.
// Callers hold s.connMu.
func (s *Server) accepted(probe net.Conn) bool {
	for c := range s.open {
		if c.RemoteAddr().String() == probe.LocalAddr().String() {
			return true
		}
	}
	return false
}

func (s *Server) trackConn(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.track(func() { s.open[c] = struct{}{} })
	case http.StateClosed, http.StateHijacked:
		s.track(func() { delete(s.open, c) })
	}
}

// track applies change under s.connMu and wakes WaitIdle.
func (s *Server) track(change func()) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	change()
	close(s.changed)
	s.changed = make(chan struct{})
}

const maxRequestBody = 1 << 20

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// A hijacked connection counts as closed while its handler still runs.
	s.track(func() { s.handling++ })
	defer s.track(func() { s.handling-- })
	body, bodyErr := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))

	s.mu.Lock()
	idx := len(s.requests)
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: string(body),
	})
	var f Fault
	if bodyErr == nil {
		f = s.dueFault(r.Method, r.URL.Path)
	}
	s.mu.Unlock()
	if s.opts.OnRequest != nil {
		// Deferred, so that it runs on every way out, a dropped
		// connection's panic included.
		defer func() {
			s.mu.Lock()
			req := s.requests[idx]
			s.mu.Unlock()
			s.opts.OnRequest(req)
		}()
	}

	// A body cut short (the client died sending it) never reaches the
	// application: the proxy in front refuses it.
	if bodyErr != nil {
		writeDetail(w, http.StatusBadRequest, "request body cut short")
		s.setStatus(idx, http.StatusBadRequest)
		return
	}
	// A delay holds the answer back: before handling, or with AfterCommit
	// after the write (the "committed, but the client timed out" case).
	if f.Delay > 0 && !f.AfterCommit && !s.sleep(r, f.Delay) {
		return // client gone or server closing: nobody reads an answer
	}
	failing := f.Status != 0 || f.Drop
	if failing && !f.AfterCommit && !f.CutBody {
		s.setStatus(idx, answerFault(w, f))
		return
	}

	rec := httptest.NewRecorder()
	s.handle(rec, r, body)
	if f.AfterCommit && f.Committed != nil {
		f.Committed()
	}
	if f.Delay > 0 && f.AfterCommit && !s.sleep(r, f.Delay) {
		return
	}
	if failing && !f.CutBody {
		s.setStatus(idx, answerFault(w, f))
		return
	}
	if f.CutBody {
		s.setStatus(idx, cutBody(w, rec))
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
	s.setStatus(idx, rec.Code)
}

// dueFault counts the request against every matching fault and returns the
// first that applies (the zero Fault if none). Callers hold s.mu.
func (s *Server) dueFault(method, path string) Fault {
	var due *faultState
	for _, f := range s.faults {
		if (f.Method != "" && f.Method != method) || (f.Path != "" && f.Path != path) {
			continue
		}
		f.seen++
		if due == nil && f.seen > f.Skip && f.applied < f.Times {
			f.applied++
			due = f
		}
	}
	if due == nil {
		return Fault{}
	}
	return due.Fault
}

func (s *Server) setStatus(idx, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[idx].Status = status
}

func (s *Server) sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.closed:
	}
	return false
}

// answerFault answers as the faulty server or proxy would and returns the
// status sent (0 for a dropped connection).
func answerFault(w http.ResponseWriter, f Fault) int {
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return 0
			}
		}
		panic(http.ErrAbortHandler) // no hijacking (HTTP/2): abort the stream instead
	}
	if f.Body != "" {
		ct := "application/json"
		if strings.HasPrefix(strings.TrimSpace(f.Body), "<") {
			ct = "text/html; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		return f.Status
	}
	switch f.Status {
	case http.StatusTooManyRequests:
		throttled(w, retryAfterSeconds(f.RetryAfter))
	case http.StatusInternalServerError:
		serverError(w)
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		text := fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n", text, text)
	case http.StatusServiceUnavailable:
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(retryAfterSeconds(f.RetryAfter)))
		}
		w.WriteHeader(f.Status)
	default:
		writeDetail(w, f.Status, http.StatusText(f.Status))
	}
	return f.Status
}

// cutBody sends rec's status, headers and full Content-Length but only half
// its body, then closes the connection. It returns the status sent.
func cutBody(w http.ResponseWriter, rec *httptest.ResponseRecorder) int {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	body := rec.Body.Bytes()
	h := rec.Header().Clone()
	h.Set("Content-Length", fmt.Sprint(len(body)))
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	_ = h.Write(buf)
	buf.WriteString("\r\n")
	_, _ = buf.Write(body[:len(body)/2])
	_ = buf.Flush()
	return rec.Code
}

// retryAfterSeconds rounds up to whole seconds, at least 1, as DRF does;
// 0 stays 0 (no header).
func retryAfterSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// handle answers one request that is not faulted.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, body []byte) {
	defer func() {
		// An unhandled error in RapidPro is a plain-text 500.
		if p := recover(); p != nil {
			serverError(w)
		}
	}()
	w.Header().Set("X-Temba-Workspace", s.workspaceUUID)

	name, ok := strings.CutPrefix(r.URL.Path, "/api/v2/")
	if !ok || name == "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "<html><body><h1>Not Found</h1></body></html>")
		return
	}
	if !strings.HasSuffix(name, ".json") {
		docsPage(w, r)
		return
	}
	if detail := s.authenticate(r); detail != "" {
		writeDetail(w, http.StatusForbidden, detail)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	scope := "v2"
	if name == "contacts.json" {
		scope = "v2.contacts"
	}
	if wait, limited := s.throttle(scope); limited {
		throttled(w, wait)
		return
	}

	handlers := map[string]map[string]func(http.ResponseWriter, *http.Request, []byte){
		"contacts.json": {
			http.MethodGet:    s.listContacts,
			http.MethodPost:   s.writeContact,
			http.MethodDelete: s.deleteContact,
		},
		"fields.json":          {http.MethodGet: s.listFields, http.MethodPost: s.writeField},
		"groups.json":          {http.MethodGet: s.listGroups, http.MethodPost: s.writeGroup},
		"contact_actions.json": {http.MethodPost: s.contactAction},
		"workspace.json":       {http.MethodGet: s.workspace},
		"org.json":             {http.MethodGet: s.workspace}, // deprecated alias
	}
	methods, ok := handlers[name]
	if !ok {
		// No URL pattern matches: Django's own HTML 404, not a DRF answer.
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n")
		return
	}
	h, ok := methods[r.Method]
	if !ok {
		writeDetail(w, http.StatusMethodNotAllowed, fmt.Sprintf("Method \"%s\" not allowed.", r.Method))
		return
	}
	h(w, r, body)
}

// docsPage is what RapidPro serves for an endpoint path without ".json": the
// browsable docs, which accept only GET.
func docsPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprint(w, "<html><body><h1>Method Not Allowed</h1></body></html>")
		return
	}
	fmt.Fprintf(w, "<html><head><title>API</title></head><body><h1>%s</h1></body></html>", r.URL.Path)
}

// authenticate returns "" for a good token, else the 403 detail. Both
// "Token <key>" (keyword in any case) and Basic user:key are accepted.
func (s *Server) authenticate(r *http.Request) string {
	header := r.Header.Get("Authorization")
	if header == "" {
		return "Authentication credentials were not provided."
	}
	keyword, cred, _ := strings.Cut(strings.TrimSpace(header), " ")
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(keyword) {
	case "token":
		if cred == s.opts.Token {
			return ""
		}
	case "basic":
		if _, pass, ok := r.BasicAuth(); ok && pass == s.opts.Token {
			return ""
		}
		return "Invalid token or email" // APIBasicAuthentication's text
	}
	return "Invalid token"
}

// throttle counts a request against scope's sliding window, or reports how
// many seconds until the oldest counted request leaves it. Callers hold s.mu.
func (s *Server) throttle(scope string) (int, bool) {
	if s.opts.RateLimit <= 0 {
		return 0, false
	}
	now := s.opts.Now()
	hits := s.hits[scope]
	for len(hits) > 0 && !hits[0].Add(s.opts.RateWindow).After(now) {
		hits = hits[1:]
	}
	if len(hits) >= s.opts.RateLimit {
		s.hits[scope] = hits
		return retryAfterSeconds(hits[0].Add(s.opts.RateWindow).Sub(now)), true
	}
	s.hits[scope] = append(hits, now)
	return 0, false
}

func throttled(w http.ResponseWriter, seconds int) {
	msg := "Request was throttled."
	switch {
	case seconds == 1: // DRF's ngettext: singular for exactly one
		w.Header().Set("Retry-After", "1")
		msg = "Request was throttled. Expected available in 1 second."
	case seconds > 1:
		w.Header().Set("Retry-After", fmt.Sprint(seconds))
		msg = fmt.Sprintf("Request was throttled. Expected available in %d seconds.", seconds)
	}
	writeDetail(w, http.StatusTooManyRequests, msg)
}

func serverError(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprint(w, "Server Error. Site administrators have been notified.")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own values always encode
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeDetail(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, map[string]string{"detail": detail})
}

// fieldErrors is a DRF validation error body: field → []string, or field →
// index/key → []string.
type fieldErrors map[string]any

func (e fieldErrors) add(field, msg string) {
	if _, ok := e[field]; !ok {
		e[field] = []string{msg}
	}
}

func (e fieldErrors) addAt(field, at, msg string) {
	m, ok := e[field].(map[string][]string)
	if !ok {
		if _, taken := e[field]; taken {
			return
		}
		m = map[string][]string{}
		e[field] = m
	}
	m[at] = append(m[at], msg)
}

// decodeObject reads a body that must be one JSON object, answering 400 as
// RapidPro's WriteSerializer does when it is not. An empty body is an empty
// object, as DRF parses it.
func decodeObject(w http.ResponseWriter, body []byte) (map[string]json.RawMessage, bool) {
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]json.RawMessage{}, true
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err == nil && obj != nil {
		return obj, true
	}
	var anything any
	if err := json.Unmarshal(body, &anything); err != nil {
		writeDetail(w, http.StatusBadRequest, "JSON parse error - "+err.Error())
		return nil, false
	}
	writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{"Request body should be a single JSON object"}})
	return nil, false
}

// objectKeys lists the keys of a JSON object in the order sent (Python
// dicts keep it, and some checks report only the first offender).
func objectKeys(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := t.(string)
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return keys
		}
	}
	return keys
}

// stringValue decodes a JSON string, reporting whether it was null.
func stringValue(raw json.RawMessage) (value string, null, ok bool) {
	if string(raw) == "null" {
		return "", true, true
	}
	err := json.Unmarshal(raw, &value)
	return value, false, err == nil
}

func (s *Server) now() time.Time {
	return s.opts.Now().UTC().Truncate(time.Microsecond)
}

func (s *Server) nextSeq() int64 {
	s.seq++
	return s.seq
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var hex32 = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)

// parseUUID accepts what Python's uuid.UUID() does (hyphens optional, braces,
// "urn:uuid:" prefix, any case) and returns the canonical lower-case form.
func parseUUID(s string) (string, bool) {
	h := strings.ReplaceAll(strings.ReplaceAll(s, "urn:", ""), "uuid:", "")
	h = strings.ReplaceAll(strings.Trim(h, "{}"), "-", "")
	if !hex32.MatchString(h) {
		return "", false
	}
	h = strings.ToLower(h)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

// uuidParamProblem is the 400 detail for a ?name= that is not a UUID, as
// BaseAPIView words it; "" when it is one (or absent).
func uuidParamProblem(q url.Values, name string) string {
	if v, present := q[name]; present && len(v) > 0 {
		if _, ok := parseUUID(v[0]); !ok {
			return fmt.Sprintf("Param '%s': %s is not a valid UUID.", name, v[0])
		}
	}
	return ""
}

// notFound is Django's get_object_or_404 text, which DRF 3.15+ keeps.
func notFound(w http.ResponseWriter, model string) {
	writeDetail(w, http.StatusNotFound, fmt.Sprintf("No %s matches the given query.", model))
}

// normalizeURN normalises a URN as the server does: tel numbers through
// libphonenumber with the workspace country, other schemes by their own
// rules. ok is false for an invalid URN.
func (s *Server) normalizeURN(raw string) (string, bool) {
	return s.normalizeURNIn(raw, s.opts.Country)
}

// normalizeURNIn is normalizeURN with the given country ("" = none).
func (s *Server) normalizeURNIn(raw, country string) (string, bool) {
	u, err := urns.Parse(raw)
	if err != nil {
		return "", false
	}
	scheme, path, _, _ := u.ToParts()
	if scheme == urns.Phone.Prefix {
		tel, err := urns.ParsePhone(path, i18n.Country(country), false, false)
		if err != nil || !strings.HasPrefix(string(tel), "tel:+") {
			return "", false
		}
		return string(tel), true
	}
	n := u.Normalize()
	if n.Validate() != nil {
		return "", false
	}
	return string(n.Identity()), true
}

// lookupURN is the identity a ?urn= (or a contact_actions URN) is looked up
// by, as URN.normalize computes it: a phone that does not parse is kept as
// its bare digits and letters, so it is not an error here, it just matches
// nothing. Only a URN without scheme or path, or of an unknown scheme, is
// invalid. contact_actions normalises without the workspace country.
func lookupURN(raw, country string) (string, bool) {
	u, err := urns.Parse(raw)
	if err != nil {
		return "", false
	}
	scheme, path, _, _ := u.ToParts()
	if scheme != urns.Phone.Prefix {
		return string(u.Normalize().Identity()), true
	}
	number := strings.TrimSpace(path)
	var b strings.Builder
	for _, r := range strings.ToLower(number) {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' {
			b.WriteRune(r)
		}
	}
	normalized := b.String()
	if tel, err := urns.ParsePhone(number, i18n.Country(country), false, false); err == nil && strings.HasPrefix(string(tel), "tel:+") {
		return string(tel), true
	}
	if normalized == "" {
		return "", false
	}
	return "tel:" + normalized, true
}

// cursorKey orders paged items: by time (contacts' modified_on), then by
// creation sequence.
type cursorKey struct {
	t   int64
	seq int64
}

func (k cursorKey) less(o cursorKey) bool {
	return k.t < o.t || (k.t == o.t && k.seq < o.seq)
}

func (k cursorKey) encode() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%d", k.t, k.seq))
}

func decodeCursor(s string) (cursorKey, bool) {
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursorKey{}, false
	}
	var k cursorKey
	if _, err := fmt.Sscanf(string(data), "%d:%d", &k.t, &k.seq); err != nil {
		return cursorKey{}, false
	}
	return k, true
}

// writePage answers a listing with cursor paging. items must already be in
// listing order (ascending keys, or descending when desc).
func writePage[T any](w http.ResponseWriter, r *http.Request, pageSize int, items []T, key func(T) cursorKey, desc bool) {
	writePageOf(w, r, pageSize, items, key, desc, func(t T) T { return t })
}

// writePageOf is writePage rendering only the page's items, so that a
// listing of many contacts costs one page's rendering per request, as a
// database cursor does.
func writePageOf[T, U any](w http.ResponseWriter, r *http.Request, pageSize int, items []T, key func(T) cursorKey, desc bool, render func(T) U) {
	start := 0
	if c := r.URL.Query().Get("cursor"); c != "" {
		after, ok := decodeCursor(c)
		if !ok {
			writeDetail(w, http.StatusNotFound, "Invalid cursor")
			return
		}
		for start < len(items) {
			k := key(items[start])
			if (desc && k.less(after)) || (!desc && after.less(k)) {
				break
			}
			start++
		}
	}
	end := min(start+pageSize, len(items))
	var next *string
	if end < len(items) {
		q := r.URL.Query()
		q.Set("cursor", key(items[end-1]).encode())
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		u := (&url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}).String()
		next = &u
	}
	results := make([]U, 0, end-start)
	for _, item := range items[start:end] {
		results = append(results, render(item))
	}
	writeJSON(w, http.StatusOK, struct {
		Next     *string `json:"next"`
		Previous *string `json:"previous"`
		Results  []U     `json:"results"`
	}{next, nil, results})
}

// exportContact converts to the client's type for Go callers (snapshots);
// it never goes on the wire.
func (s *Server) exportContact(c *contact) rapidpro.Contact {
	groups := make([]rapidpro.GroupRef, 0, len(c.groups))
	for _, g := range c.groups {
		groups = append(groups, rapidpro.GroupRef{UUID: g.uuid, Name: g.name})
	}
	return rapidpro.Contact{
		UUID:       c.uuid,
		Name:       c.name,
		Language:   c.language,
		URNs:       append([]string{}, c.urns...),
		Groups:     groups,
		Fields:     s.fieldValues(c),
		Status:     c.status,
		CreatedOn:  c.created,
		ModifiedOn: c.modified,
	}
}

// iso8601Pattern follows the Python iso8601 package RapidPro parses after
// and before with: the date alone, or with a time, and a zone that may be
// missing (then UTC).
var iso8601Pattern = regexp.MustCompile(`^(\d{4})(?:-?(\d{1,2})(?:-?(\d{1,2})(?:[T ](\d{2})(?::?(\d{2}))?(?::?(\d{1,2})(?:[.,](\d+))?)?(Z|[-+]\d{2}(?::?\d{2})?)?)?)?)?$`)

func parseISO8601(s string) (time.Time, bool) {
	m := iso8601Pattern.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, false
	}
	num := func(v string, def int) int {
		if v == "" {
			return def
		}
		n := 0
		for _, r := range v {
			n = n*10 + int(r-'0')
		}
		return n
	}
	year, month, day := num(m[1], 0), num(m[2], 1), num(m[3], 1)
	hour, minute, sec := num(m[4], 0), num(m[5], 0), num(m[6], 0)
	frac := m[7]
	if len(frac) > 6 {
		frac = frac[:6]
	}
	micros := num((frac + "000000")[:6], 0)
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	loc := time.UTC
	if z := m[8]; z != "" && z != "Z" {
		sign := 1
		if z[0] == '-' {
			sign = -1
		}
		digits := strings.ReplaceAll(z[1:], ":", "")
		offset := num(digits[:2], 0)*3600 + num(digits[2:], 0)*60
		loc = time.FixedZone(z, sign*offset)
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, micros*1000, loc)
	if t.Day() != day { // 31 April and the like
		return time.Time{}, false
	}
	return t, true
}
