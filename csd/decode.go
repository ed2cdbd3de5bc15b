package csd

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Limits bound what reading one document may cost. A zero field means the
// value from DefaultLimits.
type Limits struct {
	// MaxBytes caps the bytes read from one document. Memory does not grow
	// with the document (providers are handed over one at a time), so this
	// bounds time and bandwidth against a runaway or hostile response.
	MaxBytes int64
	// MaxDepth caps element nesting.
	MaxDepth int
	// MaxElementBytes caps what memory can hold while one document is read:
	// each entry of a directory (a provider, facility, organization or
	// service, read or skipped) and each single token elsewhere (a text run,
	// tag, comment or DOCTYPE), because encoding/xml holds a whole token in
	// memory and a provider is held until it is delivered.
	MaxElementBytes int64
}

// DefaultLimits: 512 MiB is nearly five times a whole 100,000-provider
// registry export (~110 MB as csdtest generates it), so even an unpaged
// getDirectory dump fits while an endless stream is still cut off. CSD itself
// nests at most about 10 levels (facility/organizations/organization/service/
// operatingHours/...), so 64 leaves ample room for extensions. A real
// provider is 1-5 KB, so 1 MiB per element is generous and keeps memory
// small however long the document.
var DefaultLimits = Limits{MaxBytes: 512 << 20, MaxDepth: 64, MaxElementBytes: 1 << 20}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxElementBytes <= 0 {
		l.MaxElementBytes = DefaultLimits.MaxElementBytes
	}
	return l
}

// DocumentStats describes one decoded document.
type DocumentStats struct {
	// Root is the local name of the root element: "CSD", or the bare entry
	// accepted instead ("provider", "facility" or "organization"). It is set
	// also when the root is rejected.
	Root string
	// Providers counts the providers DecodeProviders handed to its callback.
	Providers int
	// Entities counts the facilities or organizations DecodeEntities handed
	// to its callback. The two counts are separate so that neither is read
	// for the other: each decoder leaves the other count at 0.
	Entities int
	// Bytes counts the bytes read from the input.
	Bytes int64
}

// SyntaxError reports input that is not well-formed XML or not a CSD
// document, with the line where reading stopped.
type SyntaxError struct {
	Line int
	Msg  string
	Err  error // the underlying encoding/xml error, if any
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("csd: line %d: %s", e.Line, e.Msg) }

func (e *SyntaxError) Unwrap() error { return e.Err }

// LimitError reports a document that exceeded one of its Limits.
type LimitError struct {
	Limit string // "body size", "nesting depth" or "element size"
	Max   int64  // the limit's value, in bytes or levels
	// Line is where reading stopped; for the element size limit, where the
	// oversized element or token starts.
	Line int
	// Element names the oversized element ("provider", "facility"…) for the
	// element size limit; empty when a single token outside one was too long.
	Element string
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case limitDepth:
		return fmt.Sprintf("csd: line %d: %s limit exceeded (more than %d levels)", e.Line, e.Limit, e.Max)
	case limitElement:
		what := "text, tag, comment or DOCTYPE"
		if e.Element != "" {
			what = e.Element + " element"
		}
		return fmt.Sprintf("csd: line %d: %s limit exceeded (%s longer than %d bytes)", e.Line, e.Limit, what, e.Max)
	}
	return fmt.Sprintf("csd: line %d: %s limit exceeded (more than %d bytes)", e.Line, e.Limit, e.Max)
}

// rootsOfProviders names the root elements DecodeProviders accepts.
const rootsOfProviders = "CSD or provider"

const (
	limitBody    = "body size"
	limitDepth   = "nesting depth"
	limitElement = "element size"
)

// providerScope is what DecodeProviders reads.
var providerScope = scope{expected: rootsOfProviders, bare: "provider", entries: map[string]string{"providerDirectory": "provider"}}

// DecodeProviders reads a CSD document, or a bare provider element, and calls
// fn once per provider of the providerDirectory, in document order. Only one
// provider is held in memory at a time. Unusable content is explained in
// Provider.Problems rather than failing the document; malformed XML, a root
// other than CSD or provider, and exceeded limits are errors. An error from fn
// stops decoding and is returned wrapped.
func DecodeProviders(r io.Reader, lim Limits, fn func(*Provider) error) (DocumentStats, error) {
	n := 0
	stats, err := decodeDocument(r, lim, providerScope, (*reader).provider, func(p *Provider) error {
		n++
		if err := fn(p); err != nil {
			return fmt.Errorf("csd: provider %q at line %d: %w", p.EntityID, p.Line, err)
		}
		return nil
	})
	stats.Providers = n
	return stats, err
}

// scope says which entries of a document a decoder reads.
type scope struct {
	expected string            // the roots accepted, for errors: "CSD or provider"
	bare     string            // an entry element accepted as the root; "" for none
	entries  map[string]string // directory local name → local name of its entries
}

// decodeDocument reads a CSD document, or a bare entry when sc allows one,
// and hands each entry of sc's directories to deliver as soon as read decoded
// it, so that one entry at a time is held. read decodes the entry whose start
// tag se (at line) was read last, under the element size limit; everything
// else is skipped, each entry of another directory under that limit too.
func decodeDocument[T any](r io.Reader, lim Limits, sc scope, read func(rd *reader, se xml.StartElement, line int) (T, error), deliver func(T) error) (stats DocumentStats, err error) {
	rd := newReader(r, lim)
	defer func() { stats.Bytes = rd.in.read }()

	root, err := rd.root(sc.expected)
	if err != nil {
		return stats, err
	}
	stats.Root = root.Name.Local
	entry := func(se xml.StartElement) error {
		line := rd.line
		var v T
		err := rd.bounded(se, func() (err error) {
			v, err = read(rd, se, line)
			return err
		})
		if err != nil {
			return err
		}
		return deliver(v)
	}
	switch {
	case sc.bare != "" && isCSD(root.Name, sc.bare):
		err = entry(root)
	case isCSD(root.Name, "CSD"):
		err = rd.children(func(dir xml.StartElement) error {
			want, ok := sc.entries[dir.Name.Local]
			if !ok || !inCSD(dir.Name) {
				return rd.skipDirectory(dir)
			}
			return rd.children(func(c xml.StartElement) error {
				if isCSD(c.Name, want) {
					return entry(c)
				}
				return rd.bounded(c, rd.skip)
			})
		})
	default:
		return stats, rd.unexpected(root, sc.expected)
	}
	if err != nil {
		return stats, err
	}
	return stats, rd.end()
}

// ParseDateTime parses an xs:dateTime such as 2014-12-01T14:00:00+00:00,
// 2013-10-01T14:53:36 or 2024-04-30T06:20:00.123Z. A value without a zone is
// taken as UTC, the implicit timezone assumed for OpenInfoMan.
func ParseDateTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	// Fractional seconds are accepted by time.Parse even though the layout
	// does not show them.
	if t, err := time.Parse("2006-01-02T15:04:05", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not an xs:dateTime", s)
}

func isCSD(n xml.Name, local string) bool { return n.Local == local && inCSD(n) }

// inCSD matches on the namespace URI, never the prefix. The empty namespace
// is accepted because the first mHero mediator's fragments carry none.
func inCSD(n xml.Name) bool { return n.Space == Namespace || n.Space == "" }

func attr(se xml.StartElement, local string) string {
	for _, a := range se.Attr {
		if a.Name.Local == local && (a.Name.Space == "" || a.Name.Space == Namespace) {
			return strings.TrimSpace(a.Value)
		}
	}
	return ""
}

// entityID is the element's identity: @entityID, else the legacy @urn
// (iHRIS 2014) or @oid (2013 drafts).
func entityID(se xml.StartElement) string {
	for _, name := range [...]string{"entityID", "urn", "oid"} {
		if id := attr(se, name); id != "" {
			return id
		}
	}
	return ""
}

func describe(n xml.Name) string {
	if n.Space == "" {
		return n.Local
	}
	return fmt.Sprintf("%s (namespace %s)", n.Local, n.Space)
}

// reader walks the token stream, enforcing the limits and tracking lines.
type reader struct {
	xd  *xml.Decoder
	in  *limitedReader
	src *byteReader
	lim Limits
	// What xml.Decoder.Token keeps to match end tags and resolve namespace
	// prefixes, kept here so that next can call the cheaper RawToken: the
	// open elements, innermost last, and the prefixes they declare.
	open  []openElement
	ns    []nsBinding
	line  int   // line where the token last returned by next starts
	start int64 // offset where that token starts
	// The element under the element size limit, if any: its name, line and
	// the offset it may not read past.
	elem     string
	elemLine int
	elemStop int64
}

func newReader(r io.Reader, lim Limits) *reader {
	lim = lim.withDefaults()
	in := &limitedReader{r: r, remaining: lim.MaxBytes}
	src := &byteReader{r: in, buf: make([]byte, 64<<10)}
	xd := xml.NewDecoder(src)
	xd.CharsetReader = charsetReader
	return &reader{xd: xd, in: in, src: src, lim: lim}
}

// bounded runs fn, which reads the element se whose start tag was read last,
// under the element size limit. Nested calls share the outer budget.
func (r *reader) bounded(se xml.StartElement, fn func() error) error {
	if r.elemStop != 0 {
		return fn()
	}
	r.elem, r.elemLine, r.elemStop = se.Name.Local, r.line, r.start+r.lim.MaxElementBytes
	defer func() { r.elem, r.elemLine, r.elemStop = "", 0, 0 }()
	return fn()
}

// skipDirectory skips a directory other than the one wanted, each entry
// under the element size limit; an element that is no directory is skipped
// whole under it.
func (r *reader) skipDirectory(se xml.StartElement) error {
	if !strings.HasSuffix(se.Name.Local, "Directory") {
		return r.bounded(se, r.skip)
	}
	return r.children(func(c xml.StartElement) error { return r.bounded(c, r.skip) })
}

// charsetReader passes through the labels that are UTF-8 under another name
// and rejects the rest with a clear message (encoding/xml reads only UTF-8).
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "utf8", "us-ascii", "ascii":
		return in, nil
	}
	return nil, fmt.Errorf("document encoding %q is not supported; only UTF-8 is", label)
}

type tokenKind uint8

const (
	tokOther tokenKind = iota // comment, processing instruction or directive
	tokStart
	tokEnd
	tokText
)

// token is what next returns: the kind of token, and for a start tag the
// element, its names resolved as xml.Decoder.Token resolves them, or for
// text its bytes, valid until the next call of next.
type token struct {
	kind tokenKind
	se   xml.StartElement
	text xml.CharData
}

// openElement is an element whose end tag is still to come.
type openElement struct {
	name   xml.Name // as written: Space is the prefix
	nsMark int      // len(reader.ns) before the element's declarations
}

// nsBinding is a namespace declaration in scope: xmlns:prefix="uri", or
// xmlns="uri" for the empty prefix.
type nsBinding struct{ prefix, uri string }

// next returns the next token, read as xml.Decoder.Token reads it (the same
// tokens, names and errors) but without its per-token allocations. Positions
// are taken before the token is read: text between tags comes back as its
// own token, so this is where the returned token starts.
func (r *reader) next() (token, error) {
	r.line, _ = r.xd.InputPos()
	r.start = r.src.n
	// Inside a bounded element its budget is the tighter one, since it
	// started before this token.
	r.src.stop = r.start + r.lim.MaxElementBytes
	if r.elemStop != 0 {
		r.src.stop = r.elemStop
	}
	tok, err := r.xd.RawToken()
	if tok == nil && err != nil {
		if err == io.EOF && len(r.open) > 0 {
			err = r.syntaxError("unexpected EOF")
		}
		return token{}, r.wrap(err)
	}
	// Like Token, a token that comes with an error is returned and the error
	// left for the next call.
	switch t := tok.(type) {
	case xml.StartElement:
		r.push(&t)
		if len(r.open) > r.lim.MaxDepth {
			return token{}, &LimitError{Limit: limitDepth, Max: int64(r.lim.MaxDepth), Line: r.line}
		}
		return token{kind: tokStart, se: t}, nil
	case xml.EndElement:
		if err := r.pop(t.Name); err != nil {
			return token{}, r.wrap(err)
		}
		return token{kind: tokEnd}, nil
	case xml.CharData:
		return token{kind: tokText, text: t}, nil
	}
	return token{}, nil
}

// push does for the start tag se what xml.Decoder.Token does: it brings the
// namespaces se declares into scope, then resolves the prefixes of its names.
func (r *reader) push(se *xml.StartElement) {
	mark := len(r.ns)
	for _, a := range se.Attr {
		if a.Name.Space == xmlnsPrefix {
			r.ns = append(r.ns, nsBinding{a.Name.Local, a.Value})
		}
		if a.Name.Space == "" && a.Name.Local == xmlnsPrefix {
			r.ns = append(r.ns, nsBinding{"", a.Value})
		}
	}
	r.open = append(r.open, openElement{name: se.Name, nsMark: mark})
	r.translate(&se.Name, true)
	for i := range se.Attr {
		r.translate(&se.Attr[i].Name, false)
	}
}

// pop matches the end tag name (as written) to the innermost open element,
// with xml.Decoder.Token's errors, and takes that element's declarations out
// of scope.
func (r *reader) pop(name xml.Name) error {
	if len(r.open) == 0 {
		return r.syntaxError("unexpected end element </" + name.Local + ">")
	}
	s := r.open[len(r.open)-1]
	r.open = r.open[:len(r.open)-1]
	switch {
	case s.name.Local != name.Local:
		return r.syntaxError("element <" + s.name.Local + "> closed by </" + name.Local + ">")
	case s.name.Space != name.Space:
		ns := name.Space
		if name.Space == "" {
			ns = `""`
		}
		return r.syntaxError("element <" + s.name.Local + "> in space " + s.name.Space +
			" closed by </" + name.Local + "> in space " + ns)
	}
	r.ns = r.ns[:s.nsMark]
	return nil
}

const (
	xmlURL      = "http://www.w3.org/XML/1998/namespace"
	xmlnsPrefix = "xmlns"
	xmlPrefix   = "xml"
)

// translate resolves the prefix of n as xml.Decoder.Token does: the default
// namespace applies to element names only, and an undeclared prefix is kept.
func (r *reader) translate(n *xml.Name, isElementName bool) {
	switch {
	case n.Space == xmlnsPrefix:
		return
	case n.Space == "" && !isElementName:
		return
	case n.Space == xmlPrefix:
		n.Space = xmlURL
	case n.Space == "" && n.Local == xmlnsPrefix:
		return
	}
	for i := len(r.ns) - 1; i >= 0; i-- {
		if r.ns[i].prefix == n.Space {
			n.Space = r.ns[i].uri
			return
		}
	}
}

// syntaxError is an error of the document where the decoder stands, as
// xml.Decoder reports it.
func (r *reader) syntaxError(msg string) error {
	line, _ := r.xd.InputPos()
	return &xml.SyntaxError{Msg: msg, Line: line}
}

func (r *reader) wrap(err error) error {
	line, _ := r.xd.InputPos()
	if r.src.failed != nil && r.src.failed != io.EOF {
		// encoding/xml reports input that fails mid-character as invalid
		// UTF-8; the read error is the cause.
		err = r.src.failed
	}
	var se *xml.SyntaxError
	switch {
	case err == io.EOF:
		return err
	case errors.Is(err, errBodyTooLarge):
		return &LimitError{Limit: limitBody, Max: r.lim.MaxBytes, Line: line}
	case errors.Is(err, errElementTooLarge):
		if r.elemStop != 0 {
			return &LimitError{Limit: limitElement, Max: r.lim.MaxElementBytes, Line: r.elemLine, Element: r.elem}
		}
		return &LimitError{Limit: limitElement, Max: r.lim.MaxElementBytes, Line: r.line}
	case errors.As(err, &se):
		return &SyntaxError{Line: se.Line, Msg: se.Msg, Err: err}
	}
	return fmt.Errorf("csd: line %d: %w", line, err)
}

func (r *reader) unexpected(se xml.StartElement, expected string) error {
	return &SyntaxError{Line: r.line, Msg: fmt.Sprintf("expected element %s, found %s", expected, describe(se.Name))}
}

// root returns the document element, skipping the prolog; expected names
// what the caller accepts, for the error.
func (r *reader) root(expected string) (xml.StartElement, error) {
	expected = "expected element " + expected
	for {
		tok, err := r.next()
		if err == io.EOF {
			return xml.StartElement{}, &SyntaxError{Line: r.line, Msg: expected + ", found end of input"}
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch tok.kind {
		case tokStart:
			return tok.se, nil
		case tokText:
			if text := bytes.TrimSpace(bytes.TrimPrefix(tok.text, []byte("\ufeff"))); len(text) > 0 {
				return xml.StartElement{}, &SyntaxError{Line: r.line, Msg: fmt.Sprintf("%s, found text %q", expected, truncate(string(text), 40))}
			}
		}
	}
}

// end reads what follows the root element: only comments, processing
// instructions and white space may.
func (r *reader) end() error {
	for {
		tok, err := r.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokStart:
			return &SyntaxError{Line: r.line, Msg: fmt.Sprintf("unexpected element %s after the root element", describe(tok.se.Name))}
		case tokText:
			if len(bytes.TrimSpace(tok.text)) > 0 {
				return &SyntaxError{Line: r.line, Msg: "unexpected text after the root element"}
			}
		}
	}
}

// children calls fn for each child element of the element whose start tag
// was read last, up to its end tag. fn must consume the child entirely.
func (r *reader) children(fn func(xml.StartElement) error) error {
	for {
		tok, err := r.next()
		if err == io.EOF {
			return &SyntaxError{Line: r.line, Msg: "unexpected end of input"}
		}
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokStart:
			if err := fn(tok.se); err != nil {
				return err
			}
		case tokEnd:
			return nil
		}
	}
}

// skip consumes the rest of the element whose start tag was read last.
func (r *reader) skip() error {
	return r.children(func(xml.StartElement) error { return r.skip() })
}

// text returns the trimmed character data of the element whose start tag was
// read last, ignoring the content of any child elements.
func (r *reader) text() (string, error) {
	// A builder, not +=: text interleaved with comments would otherwise be
	// copied once per piece.
	var s strings.Builder
	for {
		tok, err := r.next()
		if err == io.EOF {
			return "", &SyntaxError{Line: r.line, Msg: "unexpected end of input"}
		}
		if err != nil {
			return "", err
		}
		switch tok.kind {
		case tokText:
			s.Write(tok.text)
		case tokStart:
			if err := r.skip(); err != nil {
				return "", err
			}
		case tokEnd:
			return strings.TrimSpace(s.String()), nil
		}
	}
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

var (
	errBodyTooLarge    = errors.New("body size limit exceeded")
	errElementTooLarge = errors.New("element size limit exceeded")
)

// byteReader feeds encoding/xml, which reads byte by byte from an
// io.ByteReader when given one, so n is exactly what it consumed: a token or
// element can be stopped at its budget before the decoder buffers it whole.
type byteReader struct {
	r        io.Reader
	buf      []byte
	pos, end int
	err      error
	n        int64 // bytes handed out
	stop     int64 // n may not pass it
	failed   error // the error handed to the decoder, if any
}

// ready makes a byte available within the budget, or says why not.
func (b *byteReader) ready() error {
	switch {
	case b.n >= b.stop:
		b.failed = errElementTooLarge
	case b.pos == b.end && !b.fill():
		b.failed = b.err
	default:
		return nil
	}
	return b.failed
}

func (b *byteReader) ReadByte() (byte, error) {
	// The common case first, kept small: the decoder calls this once a byte.
	if b.pos < b.end && b.n < b.stop {
		c := b.buf[b.pos]
		b.pos++
		b.n++
		return c, nil
	}
	if err := b.ready(); err != nil {
		return 0, err
	}
	c := b.buf[b.pos]
	b.pos++
	b.n++
	return c, nil
}

// Read exists because encoding/xml hands its reader to CharsetReader as an
// io.Reader; charsetReader gives this one back.
func (b *byteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := b.ready(); err != nil {
		return 0, err
	}
	k := copy(p[:min(int64(len(p)), b.stop-b.n)], b.buf[b.pos:b.end])
	b.pos += k
	b.n += int64(k)
	return k, nil
}

func (b *byteReader) fill() bool {
	for tries := 0; b.err == nil; tries++ {
		if tries == 100 {
			b.err = io.ErrNoProgress
			break
		}
		k, err := b.r.Read(b.buf)
		b.pos, b.end, b.err = 0, k, err
		if k > 0 {
			return true
		}
	}
	return false
}

// limitedReader fails once more than remaining bytes are available, unlike
// io.LimitReader, which would end the document silently.
type limitedReader struct {
	r         io.Reader
	remaining int64
	read      int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.remaining < 0 {
		return 0, errBodyTooLarge
	}
	// One byte beyond the limit tells a document of exactly the limit from a
	// longer one.
	if int64(len(p)) > l.remaining+1 {
		p = p[:l.remaining+1]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	l.remaining -= int64(n)
	if l.remaining < 0 {
		l.read--
		return n - 1, errBodyTooLarge
	}
	return n, err
}
