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
}

// DefaultLimits: 512 MiB is nearly five times a whole 100,000-provider
// registry export (~110 MB as csdtest generates it), so even an unpaged
// getDirectory dump fits while an endless stream is still cut off. CSD itself
// nests at most about 10 levels (facility/organizations/organization/service/
// operatingHours/...), so 64 leaves ample room for extensions.
var DefaultLimits = Limits{MaxBytes: 512 << 20, MaxDepth: 64}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	return l
}

// DocumentStats describes one decoded document.
type DocumentStats struct {
	// Root is the local name of the root element, "CSD" or "provider" when
	// accepted, set also when it is rejected.
	Root string
	// Providers counts the providers handed to the callback.
	Providers int
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
	Limit string // "body size" or "nesting depth"
	Max   int64  // the limit's value, in bytes or levels
	Line  int    // where reading stopped
}

func (e *LimitError) Error() string {
	unit := "bytes"
	if e.Limit == limitDepth {
		unit = "levels"
	}
	return fmt.Sprintf("csd: line %d: %s limit exceeded (more than %d %s)", e.Line, e.Limit, e.Max, unit)
}

// rootsOfProviders names the root elements DecodeProviders accepts.
const rootsOfProviders = "CSD or provider"

const (
	limitBody  = "body size"
	limitDepth = "nesting depth"
)

// DecodeProviders reads a CSD document, or a bare provider element, and calls
// fn once per provider of the providerDirectory, in document order. Only one
// provider is held in memory at a time. Unusable content is explained in
// Provider.Problems rather than failing the document; malformed XML, a root
// other than CSD or provider, and exceeded limits are errors. An error from fn
// stops decoding and is returned wrapped.
func DecodeProviders(r io.Reader, lim Limits, fn func(*Provider) error) (stats DocumentStats, err error) {
	rd := newReader(r, lim)
	defer func() { stats.Bytes = rd.in.read }()

	root, err := rd.root(rootsOfProviders)
	if err != nil {
		return stats, err
	}
	stats.Root = root.Name.Local
	deliver := func(se xml.StartElement) error {
		line := rd.line
		p, err := rd.provider(se, line)
		if err != nil {
			return err
		}
		stats.Providers++
		if err := fn(p); err != nil {
			return fmt.Errorf("csd: provider %q at line %d: %w", p.EntityID, line, err)
		}
		return nil
	}
	switch {
	case isCSD(root.Name, "provider"):
		err = deliver(root)
	case isCSD(root.Name, "CSD"):
		err = rd.children(func(dir xml.StartElement) error {
			if !isCSD(dir.Name, "providerDirectory") {
				return rd.skip()
			}
			return rd.children(func(c xml.StartElement) error {
				if isCSD(c.Name, "provider") {
					return deliver(c)
				}
				return rd.skip()
			})
		})
	default:
		return stats, rd.unexpected(root, rootsOfProviders)
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
	xd    *xml.Decoder
	in    *limitedReader
	lim   Limits
	depth int
	line  int // line where the token last returned by next starts
}

func newReader(r io.Reader, lim Limits) *reader {
	lim = lim.withDefaults()
	in := &limitedReader{r: r, remaining: lim.MaxBytes}
	xd := xml.NewDecoder(in)
	xd.CharsetReader = charsetReader
	return &reader{xd: xd, in: in, lim: lim}
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

// next returns the next token. Positions are taken before the token is read:
// text between tags comes back as its own token, so this is where the
// returned token starts.
func (r *reader) next() (xml.Token, error) {
	r.line, _ = r.xd.InputPos()
	tok, err := r.xd.Token()
	if err != nil {
		return nil, r.wrap(err)
	}
	switch tok.(type) {
	case xml.StartElement:
		r.depth++
		if r.depth > r.lim.MaxDepth {
			return nil, &LimitError{Limit: limitDepth, Max: int64(r.lim.MaxDepth), Line: r.line}
		}
	case xml.EndElement:
		r.depth--
	}
	return tok, nil
}

func (r *reader) wrap(err error) error {
	line, _ := r.xd.InputPos()
	var se *xml.SyntaxError
	switch {
	case err == io.EOF:
		return err
	case errors.Is(err, errBodyTooLarge):
		return &LimitError{Limit: limitBody, Max: r.lim.MaxBytes, Line: line}
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
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if text := bytes.TrimSpace(bytes.TrimPrefix(t, []byte("\ufeff"))); len(text) > 0 {
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
		switch t := tok.(type) {
		case xml.StartElement:
			return &SyntaxError{Line: r.line, Msg: fmt.Sprintf("unexpected element %s after the root element", describe(t.Name))}
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
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
		switch t := tok.(type) {
		case xml.StartElement:
			if err := fn(t); err != nil {
				return err
			}
		case xml.EndElement:
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
	var s string
	for {
		tok, err := r.next()
		if err == io.EOF {
			return "", &SyntaxError{Line: r.line, Msg: "unexpected end of input"}
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			s += string(t)
		case xml.StartElement:
			if err := r.skip(); err != nil {
				return "", err
			}
		case xml.EndElement:
			return strings.TrimSpace(s), nil
		}
	}
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

var errBodyTooLarge = errors.New("body size limit exceeded")

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
