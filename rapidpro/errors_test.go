package rapidpro

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Bodies as RapidPro writes them (docs/protocols.md, Error bodies and
// Corrections).
func TestParseError(t *testing.T) {
	retryAfter := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		kind       ErrorKind
		fields     map[string][]string
		retryAfter time.Duration
	}{
		{"urn in use, current", 400, nil, `{"urns": {"0": ["URN is in use by another contact."]}}`,
			KindURNInUse, map[string][]string{"urns": {"URN is in use by another contact."}}, 0},
		{"urn in use, before June 2024", 400, nil, `{"urns": ["URN belongs to another contact: tel:+231777123456"]}`,
			KindURNInUse, map[string][]string{"urns": {"URN belongs to another contact: tel:+231777123456"}}, 0},
		{"urn in use at a later index", 400, nil, `{"urns": {"10": ["URN is not valid."], "2": ["URN is in use by another contact."]}}`,
			KindURNInUse, map[string][]string{"urns": {"URN is in use by another contact.", "URN is not valid."}}, 0},
		{"invalid urn", 400, nil, `{"urns": {"0": ["URN is not valid."]}}`,
			KindInvalidURN, map[string][]string{"urns": {"URN is not valid."}}, 0},
		{"invalid urn, long form", 400, nil, `{"urns": {"0": ["Invalid URN: 1234556789. Ensure phone numbers contain country codes."]}}`,
			KindInvalidURN, map[string][]string{"urns": {"Invalid URN: 1234556789. Ensure phone numbers contain country codes."}}, 0},
		{"invalid urn in a query", 400, nil, `{"detail": "Invalid URN: 12"}`,
			KindInvalidURN, map[string][]string{"detail": {"Invalid URN: 12"}}, 0},
		{"invalid urn in an upsert's query", 400, nil, `{"non_field_errors": ["Invalid URN: tel:123. Ensure phone numbers contain country codes."]}`,
			KindInvalidURN, map[string][]string{"non_field_errors": {"Invalid URN: tel:123. Ensure phone numbers contain country codes."}}, 0},
		{"unknown field", 400, nil, `{"fields": ["Invalid contact field key: xyz"]}`,
			KindUnknownField, map[string][]string{"fields": {"Invalid contact field key: xyz"}}, 0},
		{"null character in a field", 400, nil, `{"fields": {"facility": ["Null characters are not allowed."]}}`,
			KindValidation, map[string][]string{"fields": {"Null characters are not allowed."}}, 0},
		{"several fields fail", 400, nil, `{"language": ["Not a valid ISO639-3 language code."], "groups": ["No such object: X"]}`,
			KindValidation, map[string][]string{"language": {"Not a valid ISO639-3 language code."}, "groups": {"No such object: X"}}, 0},
		{"too many urns", 400, nil, `{"urns": ["Ensure this field has no more than 100 elements."]}`,
			KindValidation, map[string][]string{"urns": {"Ensure this field has no more than 100 elements."}}, 0},
		{"urns with upsert", 400, nil, `{"urns": ["Field not allowed when using URN in URL"]}`,
			KindValidation, map[string][]string{"urns": {"Field not allowed when using URN in URL"}}, 0},
		{"deleted contact", 400, nil, `{"non_field_errors": ["Deleted contacts can't be modified."]}`,
			KindValidation, map[string][]string{"non_field_errors": {"Deleted contacts can't be modified."}}, 0},
		{"bad token", 403, nil, `{"detail": "Invalid token"}`,
			KindForbidden, map[string][]string{"detail": {"Invalid token"}}, 0},
		{"not found", 404, nil, `{"detail": "Not found."}`,
			KindNotFound, map[string][]string{"detail": {"Not found."}}, 0},
		{"workspace limit", 409, nil, `{"detail": "Cannot create object because workspace has reached limit."}`,
			KindLimit, map[string][]string{"detail": {"Cannot create object because workspace has reached limit."}}, 0},
		{"throttled", 429, retryAfter("812"), `{"detail": "Request was throttled. Expected available in 812 seconds."}`,
			KindThrottled, map[string][]string{"detail": {"Request was throttled. Expected available in 812 seconds."}}, 812 * time.Second},
		{"throttled without Retry-After", 429, nil, `{"detail": "Request was throttled."}`,
			KindThrottled, map[string][]string{"detail": {"Request was throttled."}}, 0},
		{"plain-text 500", 500, nil, "Server Error. Site administrators have been notified.",
			KindServer, map[string][]string{"detail": {"Server Error. Site administrators have been notified."}}, 0},
		{"HTML 502", 502, nil, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body></body></html>",
			KindServer, nil, 0},
		{"empty 503", 503, nil, "", KindServer, nil, 0},
		{"503 with Retry-After", 503, retryAfter("120"), "", KindThrottled, nil, 120 * time.Second},
		{"empty 504", 504, nil, "   \n", KindServer, nil, 0},
		{"JSON that is not an object", 400, nil, `["oops"]`, KindValidation, map[string][]string{"detail": {`["oops"]`}}, 0},
		{"truncated JSON", 400, nil, `{"urns": {"0": [`, KindValidation, map[string][]string{"detail": {`{"urns": {"0": [`}}, 0},
		{"odd values", 400, nil, `{"a": 1, "b": null, "c": [true, {"x": "y"}]}`,
			KindValidation, map[string][]string{"a": {"1"}, "c": {"true", "y"}}, 0},
		{"unexpected status", 418, nil, `{"detail": "teapot"}`, KindUnknown, map[string][]string{"detail": {"teapot"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header
			if header == nil {
				header = http.Header{}
			}
			e := parseError("POST", "contacts.json", tt.status, header, []byte(tt.body))
			if e.Kind != tt.kind {
				t.Errorf("kind = %v, want %v", e.Kind, tt.kind)
			}
			if len(e.Fields) != 0 || len(tt.fields) != 0 {
				if !reflect.DeepEqual(e.Fields, tt.fields) {
					t.Errorf("fields = %q, want %q", e.Fields, tt.fields)
				}
			}
			if e.RetryAfter != tt.retryAfter {
				t.Errorf("retry after = %v, want %v", e.RetryAfter, tt.retryAfter)
			}
			if msg := e.Error(); !strings.HasPrefix(msg, "rapidpro: POST contacts.json: ") || !strings.Contains(msg, tt.kind.String()) {
				t.Errorf("message %q lacks context or kind", msg)
			}
		})
	}
}

func TestParseErrorKeepsPlainTextShort(t *testing.T) {
	e := parseError("GET", "contacts.json", 500, http.Header{}, []byte(strings.Repeat("x ", 1000)))
	if got := len([]rune(e.Fields["detail"][0])); got > maxDetailRunes+1 {
		t.Errorf("detail has %d runes, want at most %d", got, maxDetailRunes+1)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"812", 812 * time.Second, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"99999999999", 0, false},
		{"Wed, 01 Jan 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Wed, 01 Jan 2025 11:00:00 GMT", 0, true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKindStrings(t *testing.T) {
	seen := map[string]bool{}
	for k := KindUnknown; k <= KindTransport; k++ {
		s := k.String()
		if s == "" || strings.ToLower(s) != s || strings.ContainsAny(s, " -") || seen[s] {
			t.Errorf("kind %d has name %q: want unique snake_case", k, s)
		}
		seen[s] = true
	}
	if ErrorKind(99).String() != "unknown" {
		t.Error("out-of-range kind should be unknown")
	}
}

func FuzzParseError(f *testing.F) {
	for _, seed := range []string{
		`{"urns": {"0": ["URN is in use by another contact."]}}`,
		`{"urns": ["URN belongs to another contact: tel:+231"]}`,
		`{"fields": ["Invalid contact field key: xyz"]}`,
		`{"fields": {"facility": ["Null characters are not allowed."]}}`,
		`{"detail": "Request was throttled. Expected available in 812 seconds."}`,
		"Server Error. Site administrators have been notified.",
		"<html><body>502</body></html>",
		"",
		`{"a": {"b": {"c": [1, 2, {"d": null}]}}}`,
	} {
		for _, status := range []int{400, 429, 500, 503} {
			f.Add(status, "812", []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		e := parseError("POST", "contacts.json", status, http.Header{"Retry-After": {retryAfter}}, body)
		if e.Kind < KindUnknown || e.Kind > KindTransport {
			t.Fatalf("kind %d out of range", e.Kind)
		}
		if e.RetryAfter < 0 {
			t.Fatalf("negative retry after %v", e.RetryAfter)
		}
		if !strings.HasPrefix(e.Error(), "rapidpro: POST contacts.json: ") {
			t.Fatalf("message %q lacks context", e.Error())
		}
		for k, msgs := range e.Fields {
			if len(msgs) == 0 {
				t.Fatalf("field %q kept with no messages", k)
			}
		}
	})
}
