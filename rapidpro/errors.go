package rapidpro

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrorKind classifies a failed call so callers can decide what to do (record
// a reject, defer, abort) without reading messages. Its String is a stable
// snake_case name usable as a metric label or a reject reason.
type ErrorKind int

// The kinds of failure a call can end with.
const (
	KindUnknown      ErrorKind = iota
	KindURNInUse               // 400: a URN belongs to another contact (create)
	KindInvalidURN             // 400: a URN failed the server's normalisation
	KindUnknownField           // 400: a fields key the workspace does not have
	KindValidation             // any other 400
	KindThrottled              // 429, or a Retry-After longer than the client may sleep
	KindServer                 // 5xx
	KindNotFound               // 404
	KindForbidden              // 401/403: bad token, role, HTTPS, system object
	KindLimit                  // 409: workspace object limit
	KindTransport              // no answer: connection error, timeout, cancellation
)

var kindNames = [...]string{
	KindUnknown:      "unknown",
	KindURNInUse:     "urn_in_use",
	KindInvalidURN:   "invalid_urn",
	KindUnknownField: "unknown_field",
	KindValidation:   "validation",
	KindThrottled:    "throttled",
	KindServer:       "server",
	KindNotFound:     "not_found",
	KindForbidden:    "forbidden",
	KindLimit:        "limit",
	KindTransport:    "transport",
}

func (k ErrorKind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// Error is a failed RapidPro call. It never holds the token, and Endpoint is
// the bare endpoint name so query values (phone numbers) stay out of it.
type Error struct {
	Method   string // "GET", "POST"
	Endpoint string // "contacts.json"
	Status   int    // 0 when no answer was received (transport error, or throttled before sending)
	Kind     ErrorKind
	// Fields holds the messages of the body, keyed by the body's top-level key
	// ("urns", "fields", "name", "detail", "non_field_errors"…); both the list
	// shape and the index/key map shape are flattened into one list. A
	// non-JSON, non-HTML body is kept (shortened) under "detail".
	Fields     map[string][]string
	RetryAfter time.Duration // from Retry-After on 429/503, or the remaining scope pause
	Err        error         // underlying transport or context error

	// unsent marks errors raised before any request left the client, so a
	// failed create need not be reconciled.
	unsent bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rapidpro: %s %s: ", e.Method, e.Endpoint)
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d ", e.Status)
	}
	b.WriteString(e.Kind.String())
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", k, strings.Join(e.Fields[k], " "))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf is the Kind of the *Error in err's chain, KindUnknown if none.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

// maxDetailRunes bounds how much of a plain-text error body is kept.
const maxDetailRunes = 200

// parseError builds the error for a non-2xx answer. The body comes from
// outside and may be JSON of either error shape, plain text, HTML or empty.
func parseError(method, endpoint string, status int, header http.Header, body []byte) *Error {
	e := &Error{Method: method, Endpoint: endpoint, Status: status, Fields: parseErrorBody(body)}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		e.RetryAfter, _ = parseRetryAfter(header.Get("Retry-After"), time.Now())
	}
	e.Kind = classify(status, e.Fields, e.RetryAfter)
	return e
}

func parseErrorBody(body []byte) map[string][]string {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		var obj map[string]any
		if dec.Decode(&obj) == nil && !dec.More() {
			fields := make(map[string][]string, len(obj))
			for k, v := range obj {
				if msgs := messages(v, nil); len(msgs) > 0 {
					fields[k] = msgs
				}
			}
			return fields
		}
	}
	if trimmed[0] == '<' || !utf8.Valid(trimmed) {
		return nil // an HTML error page or binary: nothing worth keeping
	}
	text := strings.Join(strings.Fields(string(trimmed)), " ")
	if r := []rune(text); len(r) > maxDetailRunes {
		text = string(r[:maxDetailRunes]) + "…"
	}
	return map[string][]string{"detail": {text}}
}

// messages flattens one decoded error value onto out: a string, a list of
// values, or a map from index or field key to values (sorted by key,
// numerically when the keys are indexes, so "urns" messages follow the
// request's order).
func messages(v any, out []string) []string {
	switch t := v.(type) {
	case nil:
	case string:
		out = append(out, t)
	case []any:
		for _, item := range t {
			out = messages(item, out)
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			a, errA := strconv.Atoi(keys[i])
			b, errB := strconv.Atoi(keys[j])
			if errA == nil && errB == nil {
				return a < b
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			out = messages(t[k], out)
		}
	default: // json.Number, bool
		out = append(out, fmt.Sprint(t))
	}
	return out
}

func classify(status int, fields map[string][]string, retryAfter time.Duration) ErrorKind {
	switch {
	case status == http.StatusBadRequest:
		return classifyValidation(fields)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return KindForbidden
	case status == http.StatusNotFound:
		return KindNotFound
	case status == http.StatusConflict:
		return KindLimit
	case status == http.StatusTooManyRequests:
		return KindThrottled
	case status == http.StatusServiceUnavailable && retryAfter > 0:
		return KindThrottled
	case status >= 500 && status <= 599:
		return KindServer
	}
	return KindUnknown
}

// classifyValidation tells the 400s a caller must act on apart. The key and
// shape say which part of the request failed; for "urns" only the message can
// tell "taken" from "invalid", so both the current and the older wordings are
// matched loosely.
func classifyValidation(fields map[string][]string) ErrorKind {
	var invalidURN, unknownField bool
	for _, msg := range fields["urns"] {
		m := strings.ToLower(msg)
		switch {
		case strings.Contains(m, "in use") || strings.Contains(m, "belongs to another"):
			return KindURNInUse
		case strings.Contains(m, "not valid") || strings.Contains(m, "invalid urn"):
			invalidURN = true
		}
	}
	// A ?urn= that does not parse answers {"detail": "Invalid URN: …"}; an
	// upsert whose ?urn= parses but fails validation (tel:123) answers under
	// non_field_errors (docs/protocols.md, Corrections).
	for _, key := range []string{"detail", "non_field_errors"} {
		for _, msg := range fields[key] {
			if strings.HasPrefix(strings.ToLower(msg), "invalid urn") {
				invalidURN = true
			}
		}
	}
	for _, msg := range fields["fields"] {
		if strings.Contains(strings.ToLower(msg), "invalid contact field key") {
			unknownField = true
		}
	}
	switch {
	case invalidURN:
		return KindInvalidURN
	case unknownField:
		return KindUnknownField
	}
	return KindValidation
}

// parseRetryAfter reads a Retry-After value in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 || secs > int64(24*time.Hour/time.Second) {
			return 0, false // nonsense; fall back to exponential backoff
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
