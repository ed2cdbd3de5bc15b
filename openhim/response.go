package openhim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Response is the application/json+openhim body a mediator returns to core's
// router, and the body of PUT /transactions/:id (docs/protocols.md, Mediator
// response and Asynchronous completion).
type Response struct {
	MediatorURN    string            `json:"x-mediator-urn"`
	Status         string            `json:"status,omitempty"`
	Response       HTTPResponse      `json:"response"`
	Orchestrations []Orchestration   `json:"orchestrations,omitempty"`
	Properties     map[string]string `json:"properties,omitempty"`
	Error          *ErrorInfo        `json:"error,omitempty"` // marks the transaction for auto-retry: internal faults only
}

// HTTPResponse is what core hands to the caller, or records for an
// orchestration. A zero Status or Timestamp is left out of the JSON, which
// core then rejects; Validate reports it first.
type HTTPResponse struct {
	Status    int
	Headers   map[string]string
	Body      string
	Timestamp time.Time
}

// Request records a call the mediator made, in an orchestration.
type Request struct {
	Host        string
	Port        string
	Path        string
	Headers     map[string]string
	Querystring string
	Body        string
	Method      string
	Timestamp   time.Time
}

// Orchestration is one step of the mediator's work shown in the console.
type Orchestration struct {
	Name     string        `json:"name"`
	Group    string        `json:"group,omitempty"`
	Request  *Request      `json:"request,omitempty"`
	Response *HTTPResponse `json:"response,omitempty"`
	Error    *ErrorInfo    `json:"error,omitempty"`
}

// ErrorInfo is core's error record.
type ErrorInfo struct {
	Message string `json:"message"`
	Stack   string `json:"stack,omitempty"`
}

// timestampLayout is RFC 3339 in UTC with milliseconds, as JavaScript's
// Date.toISOString writes it.
const timestampLayout = "2006-01-02T15:04:05.000Z"

// timestamp carries a time through JSON as core reads a Date: written as
// toISOString, read from an ISO string or epoch milliseconds.
type timestamp struct{ time.Time }

func newTimestamp(t time.Time) *timestamp {
	if t.IsZero() {
		return nil
	}
	return &timestamp{t}
}

func (t *timestamp) time() time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func (t timestamp) MarshalJSON() ([]byte, error) {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("timestamp %v is outside years 0000–9999", t.Time)
	}
	return []byte(`"` + t.UTC().Format(timestampLayout) + `"`), nil
}

// Epoch-millisecond bounds of years 0000–9999, the range RFC 3339 can write.
const (
	minTimestampMS = -62167219200000
	maxTimestampMS = 253402300799999
)

func (t *timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		parsed, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return fmt.Errorf("timestamp %q is not RFC 3339", s)
		}
		t.Time = parsed
		return nil
	}
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil || ms < minTimestampMS || ms > maxTimestampMS {
		return fmt.Errorf("timestamp %s is neither an ISO string nor epoch milliseconds", b)
	}
	t.Time = time.UnixMilli(int64(ms)).UTC()
	return nil
}

type wireHTTPResponse struct {
	Status    json.Number       `json:"status,omitempty"` // core also takes a numeric string
	Headers   map[string]string `json:"headers,omitempty"`
	Body      string            `json:"body"`
	Timestamp *timestamp        `json:"timestamp,omitempty"`
}

func (r HTTPResponse) MarshalJSON() ([]byte, error) {
	w := wireHTTPResponse{Headers: r.Headers, Body: r.Body, Timestamp: newTimestamp(r.Timestamp)}
	if r.Status != 0 {
		w.Status = json.Number(strconv.Itoa(r.Status))
	}
	return json.Marshal(w)
}

func (r *HTTPResponse) UnmarshalJSON(b []byte) error {
	var w wireHTTPResponse
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	status := 0
	if w.Status != "" {
		f, err := w.Status.Float64()
		if err != nil || f != math.Trunc(f) || f < 0 || f > 999 {
			return fmt.Errorf("response status %s is not an HTTP status", w.Status)
		}
		status = int(f)
	}
	*r = HTTPResponse{Status: status, Headers: w.Headers, Body: w.Body, Timestamp: w.Timestamp.time()}
	return nil
}

type wireRequest struct {
	Host        string            `json:"host,omitempty"`
	Port        string            `json:"port,omitempty"`
	Path        string            `json:"path,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Querystring string            `json:"querystring,omitempty"`
	Body        string            `json:"body,omitempty"`
	Method      string            `json:"method,omitempty"`
	Timestamp   *timestamp        `json:"timestamp,omitempty"`
}

func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireRequest{
		Host: r.Host, Port: r.Port, Path: r.Path, Headers: r.Headers, Querystring: r.Querystring,
		Body: r.Body, Method: r.Method, Timestamp: newTimestamp(r.Timestamp),
	})
}

func (r *Request) UnmarshalJSON(b []byte) error {
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Request{
		Host: w.Host, Port: w.Port, Path: w.Path, Headers: w.Headers, Querystring: w.Querystring,
		Body: w.Body, Method: w.Method, Timestamp: w.Timestamp.time(),
	}
	return nil
}

var knownStatuses = []string{
	StatusProcessing, StatusPendingAsync, StatusSuccessful, StatusCompleted, StatusCompletedWithErrors, StatusFailed,
}

// Validate checks what core needs to store the response: a response with
// status and timestamp, a name on every orchestration, and a timestamp on
// every orchestration request and response. One violation makes core discard
// the whole response and its orchestrations, leaving only a log line. It also
// rejects a status outside the known set, since core stores a misspelt status
// silently.
func (r Response) Validate() error {
	var errs []error
	if r.Status != "" && !slices.Contains(knownStatuses, r.Status) {
		errs = append(errs, fmt.Errorf("status %q is not an OpenHIM transaction status", r.Status))
	}
	if r.Response.Status == 0 {
		errs = append(errs, errors.New("response.status is required"))
	}
	if r.Response.Timestamp.IsZero() {
		errs = append(errs, errors.New("response.timestamp is required"))
	}
	for i, o := range r.Orchestrations {
		if o.Name == "" {
			errs = append(errs, fmt.Errorf("orchestrations[%d]: name is required", i))
		}
		if o.Request != nil && o.Request.Timestamp.IsZero() {
			errs = append(errs, fmt.Errorf("orchestrations[%d] %q: request.timestamp is required", i, o.Name))
		}
		if o.Response != nil && o.Response.Timestamp.IsZero() {
			errs = append(errs, fmt.Errorf("orchestrations[%d] %q: response.timestamp is required", i, o.Name))
		}
	}
	return errors.Join(errs...)
}
