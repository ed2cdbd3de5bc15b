// Package csdtest is an in-process OpenInfoMan for tests and demos. It serves
// one CSD document through the provider-search, facility-search and
// organization-search stored functions with the behaviour of the real server
// (openhie/openinfoman), quirks included: an empty 200 for an unknown
// document, an unparsable updated filter ignored, 422 when an active updated
// filter meets a stored record@updated that is not a date, 1-based start/max
// paging with csd_bl:limit_items' reading of odd values. It also runs
// openinfoman-hwr's updating function health_worker_create_otherid, which
// changes the served document as the real one does.
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
	"slices"
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
	// Listener, when set, is served instead of a new loopback listener on
	// a free port: a long-running fake on a fixed address. Close closes it.
	Listener net.Listener
}

// Server is a running fake OpenInfoMan.
type Server struct {
	srv      *httptest.Server
	opts     Options
	requests atomic.Int64

	// mu guards the document, which an update changes in place, and what
	// follows.
	mu         sync.Mutex
	doc        *document
	failStatus int
	failCount  int
	calls      []Call
}

// Call is one careServicesRequest the server received (past authentication).
type Call struct {
	Function string // the stored function's URN, from the path
	// Updating: the request went to an updating route (…/update/…) or
	// named an updating function.
	Updating bool
}

// directories are the CSD directories, in the order OpenInfoMan's answers
// list them.
var directories = []string{"organizationDirectory", "serviceDirectory", "facilityDirectory", "providerDirectory"}

// searches maps each stored query function served to the directory it
// searches; facility_search.xq and organization_search.xq filter and page
// like provider_search.xq (csd_bl:filter_by_primary_id, filter_by_record,
// limit_items).
var searches = map[string]string{
	csd.ProviderSearch:     "providerDirectory",
	csd.FacilitySearch:     "facilityDirectory",
	csd.OrganizationSearch: "organizationDirectory",
}

// updating lists the stored updating functions served.
var updating = map[string]bool{csd.CreateOtherID: true}

type document struct {
	// tree is the parsed document, changed in place by updates under
	// Server.mu; served entries are re-serialized when changed.
	tree *etree.Document
	// raw is what getDirectory serves: the bytes given while no update has
	// changed the tree, then its serialization, made on demand.
	raw  []byte
	dirs map[string]*directory
}

// directory holds the entries of every directory element of one name, as
// the stored functions' /CSD/providerDirectory/* selects them.
type directory struct {
	// nsDecls repeats the prefix declarations of the entries' ancestors on
	// the response root, so prefixed entries stay well-formed out of
	// context.
	nsDecls string
	entries []storedEntry
}

type storedEntry struct {
	entityID     string
	hasRecord    bool
	status       string
	hasUpdated   bool // record@updated is present, possibly empty
	updatedRaw   string
	updated      time.Time
	updatedValid bool
	xml          []byte // never changed once made: an update makes new bytes
	elem         *etree.Element
	// inCSD: the CSD root and the directory are in the CSD namespace, which
	// the stored functions' paths require (the fake's searches do not check).
	inCSD bool
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
	l := opts.Listener
	if l == nil {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("csdtest: listening: %w", err)
		}
	}
	s := &Server{opts: opts, doc: d}
	mux := http.NewServeMux()
	// Updating functions answer on both routes, as OpenInfoMan's generated
	// modules declare them; query functions only on the first.
	mux.HandleFunc("POST /CSD/csr/{doc}/careServicesRequest/{function}", func(w http.ResponseWriter, r *http.Request) { s.careServicesRequest(w, r, false) })
	mux.HandleFunc("POST /CSD/csr/{doc}/careServicesRequest/update/{function}", func(w http.ResponseWriter, r *http.Request) { s.careServicesRequest(w, r, true) })
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

// Calls lists the careServicesRequests received past authentication, in
// order, so that a test can tell that a run sent no update.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

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

// FailNext answers the next n careServicesRequests of a known function,
// queries and updates alike, with status.
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
	d := &document{tree: tree, raw: raw, dirs: map[string]*directory{}}
	decls := func(e *etree.Element) string {
		var b strings.Builder
		for _, a := range e.Attr {
			if a.Space == "xmlns" {
				b.WriteByte(' ')
				a.WriteTo(&b, &tree.WriteSettings)
			}
		}
		return b.String()
	}
	rootDecls := decls(root)
	for _, name := range directories {
		d.dirs[name] = &directory{nsDecls: rootDecls}
	}
	for _, el := range root.ChildElements() {
		dir, ok := d.dirs[el.Tag]
		if !ok {
			continue
		}
		dir.nsDecls += decls(el)
		inCSD := root.NamespaceURI() == csd.Namespace && el.NamespaceURI() == csd.Namespace
		// Every child element, whatever its name: the functions select
		// /CSD/providerDirectory/* and so on.
		for _, e := range el.ChildElements() {
			dir.entries = append(dir.entries, store(e, &tree.WriteSettings, inCSD))
		}
	}
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

func store(e *etree.Element, ws *etree.WriteSettings, inCSD bool) storedEntry {
	se := storedEntry{entityID: e.SelectAttrValue("entityID", ""), elem: e, inCSD: inCSD}
	for _, c := range e.ChildElements() {
		if c.Tag == "record" {
			se.hasRecord = true
			se.status = c.SelectAttrValue("status", "")
			if a := c.SelectAttr("updated"); a != nil {
				se.hasUpdated, se.updatedRaw = true, a.Value
				se.updated, se.updatedValid = parseDateTime(a.Value)
			}
			break
		}
	}
	var b bytes.Buffer
	e.WriteTo(&b, ws)
	se.xml = b.Bytes()
	return se
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

func (s *Server) careServicesRequest(w http.ResponseWriter, r *http.Request, updateRoute bool) {
	function := r.PathValue("function")
	s.mu.Lock()
	s.calls = append(s.calls, Call{Function: function, Updating: updateRoute || updating[function]})
	s.mu.Unlock()
	dir, isSearch := searches[function]
	if !updating[function] && (!isSearch || updateRoute) {
		http.Error(w, "csdtest: unknown stored function "+function, http.StatusNotFound)
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
	if isSearch {
		s.search(w, r, dir)
		return
	}
	s.createOtherID(w, r)
}

func (s *Server) search(w http.ResponseWriter, r *http.Request, dir string) {
	q, status, err := parseParams(r.Body, s.opts.IgnorePaging)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	if s.opts.IgnoreStart {
		q.start = 1
	}
	s.mu.Lock()
	d := s.doc.dirs[dir]
	selected, err := d.search(q)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, errXQuery+": "+err.Error(), http.StatusUnprocessableEntity)
		return
	}
	entries := make([][]byte, len(selected))
	for i, e := range selected {
		entries[i] = e.xml
	}
	writeCSD(w, d.nsDecls, dir, entries)
}

// writeCSD answers with a CSD document whose directory dir holds entries,
// the others empty, as the stored functions' wrappers do.
func writeCSD(w http.ResponseWriter, nsDecls, dir string, entries [][]byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	var b bytes.Buffer
	fmt.Fprintf(&b, "<CSD xmlns=%q%s>\n", csd.Namespace, nsDecls)
	for _, name := range directories {
		if name != dir {
			fmt.Fprintf(&b, "  <%s/>\n", name)
			continue
		}
		fmt.Fprintf(&b, "  <%s>\n", name)
		for _, e := range entries {
			b.WriteString("    ")
			b.Write(e)
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "  </%s>\n", name)
	}
	b.WriteString("</CSD>\n")
	_, _ = b.WriteTo(w)
}

// getDirectory returns the whole document, as OpenInfoMan's dump does. An
// unknown document gets 404 here; what OpenInfoMan answers is unverified.
func (s *Server) getDirectory(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("doc") != s.opts.Document {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	d := s.doc
	if d.raw == nil {
		var b bytes.Buffer
		_, _ = d.tree.WriteTo(&b) // a bytes.Buffer does not fail
		d.raw = b.Bytes()
	}
	raw := d.raw
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_, _ = w.Write(raw)
}

// query is the parsed requestParams of a search.
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
			return q, http.StatusNotImplemented, fmt.Errorf("csdtest: search parameter %s is not implemented", p.Tag)
		}
	}
	return q, 0, nil
}

// search selects entries in document order, as the stored functions do.
func (d *directory) search(q query) ([]storedEntry, error) {
	var out []storedEntry
	position := 0
	for _, p := range d.entries {
		if q.entityID != nil && !sameID(p.entityID, *q.entityID) {
			continue
		}
		if q.status != nil && (!p.hasRecord || p.status != *q.status) {
			continue
		}
		if q.updated != nil {
			// The filter casts the record@updated of every entry the
			// earlier filters kept (an empty one included), so one bad
			// value fails the whole call. An entry without one is dropped.
			if p.hasUpdated && !p.updatedValid {
				return nil, fmt.Errorf("%s %q: record@updated %q is not an xs:dateTime", p.elem.Tag, p.entityID, p.updatedRaw)
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

// sameID compares entity ids as csd_bl:filter_by_primary_id does, both
// upper-cased.
func sameID(a, b string) bool { return strings.ToUpper(a) == strings.ToUpper(b) }
