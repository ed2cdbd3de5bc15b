// Package csdtest is an in-process OpenInfoMan for tests and demos. It serves
// one CSD document through the provider-search stored function with the
// behaviour of the real server (openhie/openinfoman), quirks included: an
// empty 200 for an unknown document, 422 when an updated filter meets a
// stored record@updated that is not a date, 1-based start/max paging.
package csdtest

import (
	"bytes"
	"crypto/subtle"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
	updatedRaw   string // empty when record@updated is absent
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
			sp.updatedRaw = c.SelectAttrValue("updated", "")
			sp.updated, sp.updatedValid = parseDateTime(sp.updatedRaw)
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
	q, status, err := parseParams(r.Body)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
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

// parseParams reads requestParams in any namespace prefix. It answers with
// the status to send on failure.
func parseParams(body io.Reader) (query, int, error) {
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
			// OpenInfoMan casts with xs:int; a failed cast fails the query.
			n, err := strconv.Atoi(strings.TrimSpace(p.Text()))
			if err != nil {
				return q, http.StatusUnprocessableEntity, fmt.Errorf("%s %q is not an integer", p.Tag, p.Text())
			}
			if p.Tag == "start" {
				q.start = n
			} else {
				q.max = n
			}
		case "record":
			if a := p.SelectAttr("updated"); a != nil {
				// protocols.md §2.2 reads OpenInfoMan's code as silently
				// dropping an unparsable filter (unverified on a live server);
				// the issue asks for 422, which is also what a failed
				// xs:dateTime cast does elsewhere in the function.
				t, ok := parseDateTime(a.Value)
				if !ok {
					return q, http.StatusUnprocessableEntity, fmt.Errorf("%s: record@updated %q is not an xs:dateTime", errXQuery, a.Value)
				}
				q.updated = &t
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
	if q.updated != nil {
		// The filter casts every stored record@updated, so one bad value
		// fails the whole call.
		for _, p := range d.providers {
			if p.updatedRaw != "" && !p.updatedValid {
				return nil, fmt.Errorf("provider %q: record@updated %q is not an xs:dateTime", p.entityID, p.updatedRaw)
			}
		}
	}
	var out []storedProvider
	position := 0
	for _, p := range d.providers {
		if q.entityID != nil && !strings.EqualFold(p.entityID, *q.entityID) {
			continue
		}
		if q.status != nil && (!p.hasRecord || p.status != *q.status) {
			continue
		}
		if q.updated != nil && (p.updatedRaw == "" || p.updated.Before(*q.updated)) {
			continue
		}
		// subsequence($providers, start, max): positions start ≤ p < start+max.
		position++
		if position < q.start {
			continue
		}
		if q.max >= 0 && position >= q.start+q.max {
			break
		}
		out = append(out, p)
	}
	return out, nil
}
