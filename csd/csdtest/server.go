// Package csdtest is an in-process OpenInfoMan for tests and demos. It serves
// one CSD document through the provider-search stored function with the
// behaviour of the real server (openhie/openinfoman), quirks included: an
// empty 200 for an unknown document, an unparsable updated filter ignored,
// 422 when an active updated filter meets a stored record@updated that is not
// a date, 1-based start/max paging with csd_bl:limit_items' reading of odd
// values.
package csdtest

import (
	"bytes"
	"crypto/subtle"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beevik/etree"
	"github.com/openhie/mhero-mediator/csd"
)

// Options configure a Server.
type Options struct {
	Document           string // the document name in URLs; default "Providers"
	Username, Password string // when Username is set, requests need basic auth or get 401
	// IgnorePaging makes the server answer every match whatever start and
	// max say, as a stored function without paging would.
	IgnorePaging bool
	// IgnoreStart makes the server honour max but always start at the first
	// match, so every page repeats the first one.
	IgnoreStart bool
}

// Server is a running fake OpenInfoMan.
type Server struct {
	srv      *httptest.Server
	opts     Options
	requests atomic.Int64

	mu         sync.Mutex
	doc        *document
	failStatus int
	failCount  int
}

type document struct {
	raw []byte
	// nsDecls repeats the prefix declarations of the providers' ancestors on
	// the response root, so prefixed providers stay well-formed out of
	// context.
	nsDecls   string
	providers []storedProvider
}

type storedProvider struct {
	entityID     string
	hasRecord    bool
	status       string
	hasUpdated   bool // record@updated is present, possibly empty
	updatedRaw   string
	updated      time.Time
	updatedValid bool
	xml          []byte
}

// New starts a server for doc, a CSD document. It needs no *testing.T so
// that demos can use it; call Close when done.
func New(doc []byte, opts Options) (*Server, error) {
	if opts.Document == "" {
		opts.Document = "Providers"
	}
	d, err := parseDocument(doc)
	if err != nil {
		return nil, err
	}
	// Listening here instead of httptest.NewServer returns the error instead
	// of panicking.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("csdtest: listening: %w", err)
	}
	s := &Server{opts: opts, doc: d}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /CSD/csr/{doc}/careServicesRequest/{function}", s.providerSearch)
	mux.HandleFunc("GET /CSD/getDirectory/{doc}", s.getDirectory)
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: s.authenticate(mux)}}
	s.srv.Start()
	return s, nil
}

// URL is the base URL, to be used as csd.Client.BaseURL.
func (s *Server) URL() string { return s.srv.URL }

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Requests counts the requests received, failed and unauthorized ones included.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// SetDocument replaces the served document, e.g. to change one provider
// between two sync runs or between two pages.
func (s *Server) SetDocument(doc []byte) error {
	d, err := parseDocument(doc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.doc = d
	s.mu.Unlock()
	return nil
}

// FailNext answers the next n provider-search requests with status.
func (s *Server) FailNext(status, n int) {
	s.mu.Lock()
	s.failStatus, s.failCount = status, n
	s.mu.Unlock()
}

func parseDocument(raw []byte) (*document, error) {
	tree, err := parseXML(raw)
	if err != nil {
		return nil, fmt.Errorf("csdtest: parsing the document: %w", err)
	}
	root := tree.Root()
	if root == nil || root.Tag != "CSD" {
		return nil, fmt.Errorf("csdtest: the document root must be CSD")
	}
	d := &document{raw: raw}
	var decls strings.Builder
	addDecls := func(e *etree.Element) {
		for _, a := range e.Attr {
			if a.Space == "xmlns" {
				decls.WriteByte(' ')
				a.WriteTo(&decls, &tree.WriteSettings)
			}
		}
	}
	addDecls(root)
	for _, dir := range root.ChildElements() {
		if dir.Tag != "providerDirectory" {
			continue
		}
		addDecls(dir)
		for _, p := range dir.ChildElements() {
			if p.Tag == "provider" {
				d.providers = append(d.providers, store(p, &tree.WriteSettings))
			}
		}
	}
	d.nsDecls = decls.String()
	return d, nil
}

// parseXML parses well-formed XML only. etree checks neither that end tags
// match nor, with ValidateInput, lets a document end with a newline, so
// encoding/xml checks first.
func parseXML(raw []byte) (*etree.Document, error) {
	dec := xml.NewDecoder(bytes.NewReader(raw))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	tree := etree.NewDocument()
	if err := tree.ReadFromBytes(raw); err != nil {
		return nil, err
	}
	return tree, nil
}

func store(p *etree.Element, ws *etree.WriteSettings) storedProvider {
	sp := storedProvider{entityID: p.SelectAttrValue("entityID", "")}
	for _, c := range p.ChildElements() {
		if c.Tag == "record" {
			sp.hasRecord = true
			sp.status = c.SelectAttrValue("status", "")
			if a := c.SelectAttr("updated"); a != nil {
				sp.hasUpdated, sp.updatedRaw = true, a.Value
				sp.updated, sp.updatedValid = parseDateTime(a.Value)
			}
			break
		}
	}
	var b bytes.Buffer
	p.WriteTo(&b, ws)
	sp.xml = b.Bytes()
	return sp
}

func parseDateTime(s string) (time.Time, bool) {
	t, err := csd.ParseDateTime(s)
	return t, err == nil
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.opts.Username != "" {
			user, pass, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(s.opts.Username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(pass), []byte(s.opts.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="OpenInfoMan"`)
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) current() *document {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doc
}

func (s *Server) takeFailure() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failCount <= 0 {
		return 0
	}
	s.failCount--
	return s.failStatus
}

// errXQuery is OpenInfoMan's body for a failed stored function.
const errXQuery = "Error executing xquery"

func (s *Server) providerSearch(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("function") != csd.ProviderSearch {
		http.Error(w, "csdtest: unknown stored function "+r.PathValue("function"), http.StatusNotFound)
		return
	}
	if status := s.takeFailure(); status != 0 {
		body := http.StatusText(status)
		if status == http.StatusUnprocessableEntity {
			body = errXQuery
		}
		http.Error(w, body, status)
		return
	}
	if r.PathValue("doc") != s.opts.Document {
		w.WriteHeader(http.StatusOK) // what OpenInfoMan does for an unknown document
		return
	}
	q, status, err := parseParams(r.Body, s.opts.IgnorePaging)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	if s.opts.IgnoreStart {
		q.start = 1
	}
	doc := s.current()
	selected, err := doc.search(q)
	if err != nil {
		http.Error(w, errXQuery+": "+err.Error(), http.StatusUnprocessableEntity)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	var b bytes.Buffer
	fmt.Fprintf(&b, "<CSD xmlns=%q%s>\n  <organizationDirectory/>\n  <serviceDirectory/>\n  <facilityDirectory/>\n  <providerDirectory>\n", csd.Namespace, doc.nsDecls)
	for _, p := range selected {
		b.WriteString("    ")
		b.Write(p.xml)
		b.WriteByte('\n')
	}
	b.WriteString("  </providerDirectory>\n</CSD>\n")
	_, _ = b.WriteTo(w)
}

// getDirectory returns the whole document, as OpenInfoMan's dump does. An
// unknown document gets 404 here; what OpenInfoMan answers is unverified.
func (s *Server) getDirectory(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("doc") != s.opts.Document {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_, _ = w.Write(s.current().raw)
}

// query is the parsed requestParams of a provider-search.
type query struct {
	start, max int // start is 1-based; max < 0 is unlimited
	updated    *time.Time
	status     *string
	entityID   *string
}

var (
	// xsDouble is the lexical form fn:number accepts; anything else is NaN.
	xsDouble = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?INF$|^NaN$`)
	// xsInteger is the lexical form of an xs:integer cast.
	xsInteger = regexp.MustCompile(`^[+-]?[0-9]+$`)
)

// limitParam reads a start or max value as csd_bl:limit_items does: a value
// whose fn:number is NaN or 0 does not count, and one that counts is cast
// with xs:integer, which fails (422) on a fraction or exponent.
func limitParam(raw string) (n int, counts bool, err error) {
	s := strings.TrimSpace(raw)
	if !xsDouble.MatchString(s) {
		return 0, false, nil
	}
	if f, _ := strconv.ParseFloat(s, 64); f == 0 || math.IsNaN(f) {
		return 0, false, nil
	}
	if !xsInteger.MatchString(s) {
		return 0, true, fmt.Errorf("%q is not an xs:integer", raw)
	}
	n, err = strconv.Atoi(s)
	if err != nil {
		return 0, true, fmt.Errorf("%q is out of range", raw)
	}
	return n, true, nil
}

// parseParams reads requestParams in any namespace prefix. It answers with
// the status to send on failure. Without paging, start and max are not read.
func parseParams(body io.Reader, ignorePaging bool) (query, int, error) {
	q := query{start: 1, max: -1}
	raw, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return q, http.StatusBadRequest, fmt.Errorf("csdtest: reading requestParams: %w", err)
	}
	tree, err := parseXML(raw)
	if err != nil {
		return q, http.StatusBadRequest, fmt.Errorf("csdtest: parsing requestParams: %w", err)
	}
	root := tree.Root()
	if root == nil || root.Tag != "requestParams" {
		return q, http.StatusBadRequest, fmt.Errorf("csdtest: the body must be a requestParams element")
	}
	for _, p := range root.ChildElements() {
		switch p.Tag {
		case "start", "max":
			if ignorePaging {
				continue
			}
			n, counts, err := limitParam(p.Text())
			if err != nil {
				return q, http.StatusUnprocessableEntity, fmt.Errorf("%s: %s %w", errXQuery, p.Tag, err)
			}
			// A start below 1 and a negative max are ignored, like one
			// that does not count.
			switch {
			case !counts:
			case p.Tag == "start" && n >= 1:
				q.start = n
			case p.Tag == "max" && n >= 0:
				q.max = n
			}
		case "record":
			if a := p.SelectAttr("updated"); a != nil {
				// csd_bl:filter_by_record casts the value inside try/catch
				// and drops the filter when the cast fails: the full result.
				if t, ok := parseDateTime(a.Value); ok {
					q.updated = &t
				}
			}
			if a := p.SelectAttr("status"); a != nil {
				q.status = &a.Value
			}
		case "id":
			// The 2013 form <id urn=…> is ignored, as OpenInfoMan does.
			if a := p.SelectAttr("entityID"); a != nil {
				q.entityID = &a.Value
			}
		default:
			// Returning everything for a filter we do not implement would let
			// a test pass for the wrong reason.
			return q, http.StatusNotImplemented, fmt.Errorf("csdtest: provider-search parameter %s is not implemented", p.Tag)
		}
	}
	return q, 0, nil
}

// search selects providers in document order, as the stored function does.
func (d *document) search(q query) ([]storedProvider, error) {
	var out []storedProvider
	position := 0
	for _, p := range d.providers {
		if q.entityID != nil && !strings.EqualFold(p.entityID, *q.entityID) {
			continue
		}
		if q.status != nil && (!p.hasRecord || p.status != *q.status) {
			continue
		}
		if q.updated != nil {
			// The filter casts the record@updated of every provider the
			// earlier filters kept (an empty one included), so one bad
			// value fails the whole call. A provider without one is dropped.
			if p.hasUpdated && !p.updatedValid {
				return nil, fmt.Errorf("provider %q: record@updated %q is not an xs:dateTime", p.entityID, p.updatedRaw)
			}
			if !p.hasUpdated || p.updated.Before(*q.updated) {
				continue
			}
		}
		// Paging comes after every filter: positions start ≤ p < start+max.
		// No early break, so that a bad date past the page still fails.
		position++
		if position >= q.start && (q.max < 0 || position < q.start+q.max) {
			out = append(out, p)
		}
	}
	return out, nil
}
