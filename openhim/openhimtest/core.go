// Package openhimtest runs an in-process fake OpenHIM core for tests and
// demos. It implements the management API a mediator uses, validating
// requests the way core v8 does and answering with core's status codes and
// plain-text messages, and it sends the request a polling channel sends along
// the route a mediator registered. It records everything it sees, and refuses
// to store what core's MongoDB refuses. It needs no *testing.T.
package openhimtest

import (
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

// RootSalt is the password salt of the seeded root user in core's fixtures,
// the one of the token test vector in docs/protocols.md, Authentication.
const RootSalt = "d9bcb40e-ae65-478f-962e-5e5e5e7d0a01"

// Options configures a fake core.
type Options struct {
	// Users maps email to password; nil means root@openhim.org with
	// openhim-password. All users are admins unless listed in NonAdmins.
	Users map[string]string
	// NonAdmins are users not in group admin: core authenticates them and
	// answers their mediator and transaction calls 403.
	NonAdmins []string
	// AuthTypes enabled, a subset of "basic" and "token"; nil means both.
	// []string{"token"} is a core up to v7.0 as installed (v4 knows no
	// other scheme), []string{"basic"} a v7.1+ core with token turned off.
	// GET /authenticate answers in every mode, as in core.
	AuthTypes []string
	// TLS serves the API over HTTPS with a test certificate.
	TLS bool
	// TLSCertificate, with TLS, replaces the test certificate: for example
	// DefaultCertificate, shaped like core's bundled one.
	TLSCertificate *tls.Certificate
	// Now is core's clock, for the token window and timestamps; nil means
	// time.Now.
	Now func() time.Time
	// RouteClient is what polling channels call routes with; nil means
	// http.DefaultClient. Set it to trust a secured (HTTPS) route.
	RouteClient *http.Client
}

// authWindow is core's api.authWindowSeconds.
const authWindow = 10 * time.Second

// maxBody is core's api.maxPayloadSizeMB.
const maxBody = 50 << 20

type user struct {
	email, password, salt string
	admin                 bool
}

// Stored is what the fake core holds for a mediator.
type Stored struct {
	// Mediator is the stored registration, after any version-bump merge, with
	// passwords in clear.
	Mediator openhim.Mediator
	// Document is the same registration as stored JSON.
	Document json.RawMessage
	// Config is the current config (nil if none).
	Config         map[string]any
	ConfigModified time.Time
	Registrations  int // accepted POST /mediators for this urn, no-ops included
	Heartbeats     int
	LastHeartbeat  time.Time
	LastUptime     float64 // seconds
}

type mediator struct {
	doc               map[string]any // as core stores it
	registrations     int
	heartbeats        int
	lastHeartbeat     time.Time
	lastHeartbeatSeq  uint64
	lastUptime        float64
	configModified    time.Time
	configModifiedSeq uint64
}

// APIRequest is one call the fake core received on its management API.
type APIRequest struct {
	Method      string
	Path        string
	AuthScheme  string // "basic", "token" or "" when unauthenticated
	ContentType string
	Body        string
	Status      int
	Reply       string
}

// Core is a fake OpenHIM core.
type Core struct {
	srv         *httptest.Server
	routeClient *http.Client
	now         func() time.Time
	started     time.Time
	authTypes   []string

	mu           sync.Mutex
	users        map[string]user // by lower-cased email
	mediators    map[string]*mediator
	transactions []*Transaction
	channelIDs   map[string]string // urn and channel name → channel id
	requests     []APIRequest
	// seq orders heartbeats and config changes, so "changed since the last
	// heartbeat" holds even when the clock does not move between them.
	seq uint64
}

// New starts a fake core on a loopback port. Close it when done.
func New(opts Options) *Core {
	c := &Core{
		now:        opts.Now,
		authTypes:  opts.AuthTypes,
		users:      map[string]user{},
		mediators:  map[string]*mediator{},
		channelIDs: map[string]string{},
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.routeClient = opts.RouteClient
	if c.routeClient == nil {
		c.routeClient = http.DefaultClient
	}
	if c.authTypes == nil {
		c.authTypes = []string{"basic", "token"}
	}
	users := opts.Users
	if users == nil {
		users = map[string]string{"root@openhim.org": "openhim-password"}
	}
	for email, password := range users {
		salt := newID()
		if strings.EqualFold(email, "root@openhim.org") {
			salt = RootSalt
		}
		admin := !slices.ContainsFunc(opts.NonAdmins, func(e string) bool { return strings.EqualFold(e, email) })
		c.users[strings.ToLower(email)] = user{email: email, password: password, salt: salt, admin: admin}
	}
	c.started = c.now()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /authenticate/{email}", c.handleAuthenticate)
	mux.HandleFunc("GET /heartbeat", c.handlePublicHeartbeat)
	mux.HandleFunc("POST /mediators", c.authenticated("addMediator", c.handleRegister))
	mux.HandleFunc("GET /mediators/{urn}", c.authenticated("getMediator", c.handleGetMediator))
	// "removeMediator": core's 403 for a heartbeat names it, a copy-paste
	// slip.
	mux.HandleFunc("POST /mediators/{urn}/heartbeat", c.authenticated("removeMediator", c.handleHeartbeat))
	mux.HandleFunc("PUT /mediators/{urn}/config", c.authenticated("setConfig", c.handleSetConfig))
	mux.HandleFunc("PUT /transactions/{id}", c.authenticated("updateTransaction", c.handleUpdateTransaction))
	handler := c.recording(mux)
	if opts.TLS {
		c.srv = httptest.NewUnstartedServer(handler)
		if opts.TLSCertificate != nil {
			c.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*opts.TLSCertificate}}
		}
		c.srv.StartTLS()
	} else {
		c.srv = httptest.NewServer(handler)
	}
	return c
}

// URL is the management API's base URL.
func (c *Core) URL() string { return c.srv.URL }

// Close stops the server.
func (c *Core) Close() { c.srv.Close() }

// Client returns an HTTP client for the API; with TLS it trusts the fake's
// certificate.
func (c *Core) Client() *http.Client { return c.srv.Client() }

// Certificate is the TLS certificate the fake serves, or nil without TLS.
func (c *Core) Certificate() *x509.Certificate { return c.srv.Certificate() }

// Mediator returns what core holds for urn.
func (c *Core) Mediator(urn string) (Stored, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.mediators[urn]
	if !ok {
		return Stored{}, false
	}
	doc, err := json.Marshal(m.doc)
	if err != nil {
		panic(fmt.Sprintf("openhimtest: stored mediator is not JSON: %v", err))
	}
	s := Stored{
		Document:       doc,
		ConfigModified: m.configModified,
		Registrations:  m.registrations,
		Heartbeats:     m.heartbeats,
		LastHeartbeat:  m.lastHeartbeat,
		LastUptime:     m.lastUptime,
	}
	// The document passed core's checks, so it decodes; a failure here would
	// be a bug in the fake.
	if err := json.Unmarshal(doc, &s.Mediator); err != nil {
		panic(fmt.Sprintf("openhimtest: stored mediator does not decode: %v", err))
	}
	s.Config = s.Mediator.Config
	return s, true
}

// SetConfig changes a mediator's config as the console does (PUT
// /mediators/:urn/config): masked passwords are restored, the whole object is
// validated, and the next heartbeat delivers it once.
func (c *Core) SetConfig(urn string, cfg map[string]any) error {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("openhimtest: config is not JSON: %w", err)
	}
	status, msg := c.setConfig(urn, raw)
	if status != http.StatusOK {
		return fmt.Errorf("openhimtest: set config of %s: %d %s", urn, status, msg)
	}
	return nil
}

// DeleteMediator removes a mediator as the console's delete does.
func (c *Core) DeleteMediator(urn string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.mediators, urn)
}

// Heartbeats counts the heartbeats accepted for urn.
func (c *Core) Heartbeats(urn string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.mediators[urn]; ok {
		return m.heartbeats
	}
	return 0
}

// Registrations counts the accepted registrations of urn since it was last
// created.
func (c *Core) Registrations(urn string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.mediators[urn]; ok {
		return m.registrations
	}
	return 0
}

// Requests lists every API call received, oldest first.
func (c *Core) Requests() []APIRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// recording stores every request and its reply.
func (c *Core) recording(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			http.Error(w, "could not read request", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		// Core's clock, which a token's auth-ts is checked against.
		w.Header().Set("Date", c.now().UTC().Format(http.TimeFormat))
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.requests = append(c.requests, APIRequest{
			Method: r.Method, Path: r.URL.Path, AuthScheme: authScheme(r), ContentType: r.Header.Get("Content-Type"),
			Body: string(body), Status: rec.status, Reply: rec.body.String(),
		})
	})
}

type recorder struct {
	http.ResponseWriter
	status int
	body   strings.Builder
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// authScheme tells which scheme core v8 would try for r: token when any
// auth-* header is present, else Basic.
func authScheme(r *http.Request) string {
	for name := range r.Header {
		if strings.HasPrefix(strings.ToLower(name), "auth-") {
			return "token"
		}
	}
	if _, _, ok := r.BasicAuth(); ok {
		return "basic"
	}
	return ""
}

// authenticated answers 401 unless the request carries valid credentials
// of an enabled scheme, with Koa's status text as the body: core gives its
// reason only in its log. A user not in group admin then gets core's 403 for
// the API function named.
func (c *Core) authenticated(function string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme := authScheme(r)
		var u user
		ok := false
		if slices.Contains(c.authTypes, scheme) {
			switch scheme {
			case "token":
				u, ok = c.checkToken(r)
			case "basic":
				u, ok = c.checkBasic(r)
			}
		}
		if !ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "Unauthorized")
			return
		}
		if !u.admin {
			http.Error(w, fmt.Sprintf("User %s is not an admin, API access to %s denied.", u.email, function), http.StatusForbidden)
			return
		}
		next(w, r)
	}
}

func (c *Core) lookupUser(email string) (user, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.users[strings.ToLower(email)]
	return u, ok
}

func (c *Core) checkBasic(r *http.Request) (user, bool) {
	email, password, _ := r.BasicAuth()
	u, ok := c.lookupUser(email)
	return u, ok && subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) == 1
}

func (c *Core) checkToken(r *http.Request) (user, bool) {
	email, ts, salt, token := r.Header.Get("auth-username"), r.Header.Get("auth-ts"), r.Header.Get("auth-salt"), r.Header.Get("auth-token")
	if email == "" || ts == "" || salt == "" || token == "" {
		return user{}, false
	}
	u, ok := c.lookupUser(email)
	if !ok {
		return user{}, false
	}
	sent, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return user{}, false
	}
	if skew := c.now().Sub(sent); skew > authWindow || skew < -authWindow {
		return user{}, false
	}
	passhash := sha512.Sum512([]byte(u.salt + u.password))
	want := sha512.Sum512([]byte(hex.EncodeToString(passhash[:]) + salt + ts))
	return u, subtle.ConstantTimeCompare([]byte(hex.EncodeToString(want[:])), []byte(token)) == 1
}

func (c *Core) handleAuthenticate(w http.ResponseWriter, r *http.Request) {
	u, ok := c.lookupUser(r.PathValue("email"))
	if !ok {
		http.Error(w, fmt.Sprintf("Could not find user by email %s", r.PathValue("email")), http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"salt": u.salt, "ts": c.now().UTC().Format("2006-01-02T15:04:05.000Z")})
}

func (c *Core) handlePublicHeartbeat(w http.ResponseWriter, _ *http.Request) {
	now := c.now()
	c.mu.Lock()
	mediators := map[string]any{}
	for urn, m := range c.mediators {
		// Core reports an uptime only within 60 s of the last beat.
		if !m.lastHeartbeat.IsZero() && now.Sub(m.lastHeartbeat) <= time.Minute {
			mediators[urn] = m.lastUptime
		} else {
			mediators[urn] = nil
		}
	}
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"master": now.Sub(c.started).Seconds(), "mediators": mediators, "now": now.UnixMilli(),
	})
}

func (c *Core) handleGetMediator(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	m, ok := c.mediators[r.PathValue("urn")]
	var doc map[string]any
	if ok {
		doc = deepCopy(m.doc)
	}
	c.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("Could not find mediator with urn %s", r.PathValue("urn")), http.StatusNotFound)
		return
	}
	if cfg, ok := doc["config"].(map[string]any); ok {
		maskPasswords(configDefs(doc), cfg)
	}
	writeJSON(w, http.StatusOK, doc)
}

func (c *Core) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	urn := r.PathValue("urn")
	body, ok := jsonBody(r)
	if !ok {
		http.Error(w, errInvalidJSON, http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, known := c.mediators[urn]
	if !known {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if body["uptime"] == nil {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	reply := ""
	if m.configModifiedSeq > m.lastHeartbeatSeq || body["config"] == true {
		if cfg, ok := m.doc["config"]; ok && cfg != nil {
			raw, err := json.Marshal(cfg)
			if err != nil {
				panic(fmt.Sprintf("openhimtest: stored config is not JSON: %v", err))
			}
			reply = string(raw)
		} else {
			reply = "OK" // Koa's status text for a body-less 200 (core issue #548)
		}
	}
	c.seq++
	m.lastHeartbeatSeq = c.seq
	m.lastHeartbeat = c.now()
	m.heartbeats++
	if uptime, ok := body["uptime"].(float64); ok {
		m.lastUptime = uptime
	}
	if strings.HasPrefix(reply, "{") {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	} else if reply != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, reply)
}

func (c *Core) handleSetConfig(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	if !isJSONType(r) {
		raw = []byte("{}")
	}
	status, msg := c.setConfig(r.PathValue("urn"), raw)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func (c *Core) setConfig(urn string, raw []byte) (int, string) {
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg == nil {
		return http.StatusBadRequest, "config must be a JSON object"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.mediators[urn]
	if !ok {
		return http.StatusNotFound, "No mediator found for this urn."
	}
	defs := configDefs(m.doc)
	stored, _ := m.doc["config"].(map[string]any)
	restoreMaskedPasswords(defs, cfg, stored)
	if err := openhim.ValidateConfig(defs, cfg); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	m.doc["config"] = cfg
	c.seq++
	m.configModifiedSeq = c.seq
	m.configModified = c.now()
	return http.StatusOK, ""
}

// newID returns a MongoDB ObjectId-sized random hex id.
func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

// isJSONType reports whether koa-bodyparser would parse r's body as JSON.
func isJSONType(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// errInvalidJSON is koa-bodyparser's answer to a JSON body it cannot parse.
const errInvalidJSON = "invalid JSON, only supports object and array"

// jsonBody is the body as koa-bodyparser hands it to core: {} unless the
// Content-Type is JSON; ok is false when it is JSON but does not parse.
func jsonBody(r *http.Request) (body map[string]any, ok bool) {
	body = map[string]any{}
	if !isJSONType(r) {
		return body, true
	}
	raw, _ := io.ReadAll(r.Body)
	if len(strings.TrimSpace(string(raw))) == 0 {
		return body, true
	}
	var parsed any
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, false
	}
	// An array parses but has none of the fields core looks for.
	if obj, isObject := parsed.(map[string]any); isObject {
		body = obj
	}
	return body, true
}

func deepCopy(doc map[string]any) map[string]any {
	raw, err := json.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("openhimtest: stored document is not JSON: %v", err))
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		panic(fmt.Sprintf("openhimtest: stored document does not decode: %v", err))
	}
	return out
}
