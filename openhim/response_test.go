package openhim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

var runStart = time.Date(2024, 5, 1, 6, 20, 0, 15_000_000, time.UTC)

// syncResponse is a mediator response of a sync run (docs/protocols.md,
// Mediator response).
func syncResponse() openhim.Response {
	return openhim.Response{
		MediatorURN: testURN,
		Status:      openhim.StatusCompletedWithErrors,
		Response: openhim.HTTPResponse{
			Status: 200, Headers: map[string]string{"content-type": "application/json"},
			Body:      `{"providers":812,"created":40}`,
			Timestamp: time.Date(2024, 5, 1, 6, 31, 10, 402_000_000, time.UTC),
		},
		Orchestrations: []openhim.Orchestration{{
			Name:     "OpenInfoMan provider-search (2 pages)",
			Request:  &openhim.Request{Method: "POST", Host: "openinfoman", Port: "8984", Path: "/CSD/csr/Providers/careServicesRequest", Timestamp: runStart},
			Response: &openhim.HTTPResponse{Status: 200, Body: "812 providers", Timestamp: runStart.Add(4 * time.Second)},
		}},
		Properties: map[string]string{"watermark": "2024-05-01T06:20:00Z"},
	}
}

func TestResponseJSON(t *testing.T) {
	raw, err := json.Marshal(syncResponse())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"x-mediator-urn":"urn:mediator:mhero-sync-go"`,
		`"status":"Completed with error(s)"`,
		`"response":{"status":200,"headers":{"content-type":"application/json"},"body":"{\"providers\":812,\"created\":40}","timestamp":"2024-05-01T06:31:10.402Z"}`,
		`"request":{"host":"openinfoman","port":"8984","path":"/CSD/csr/Providers/careServicesRequest","method":"POST","timestamp":"2024-05-01T06:20:00.015Z"}`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("JSON lacks %s:\n%s", want, raw)
		}
	}
	var back openhim.Response
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(back)
	if string(again) != string(raw) {
		t.Errorf("round trip changed the JSON:\n%s\n%s", raw, again)
	}

	// Core also writes numeric-string statuses and epoch-millisecond dates.
	var fromCore openhim.HTTPResponse
	if err := json.Unmarshal([]byte(`{"status":"202","body":"","timestamp":1714544400000}`), &fromCore); err != nil {
		t.Fatal(err)
	}
	if fromCore.Status != 202 || !fromCore.Timestamp.Equal(time.Date(2024, 5, 1, 6, 20, 0, 0, time.UTC)) {
		t.Errorf("decoded %+v", fromCore)
	}
}

func TestResponseValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(r *openhim.Response)
		msg    string // "" = valid
	}{
		{"valid", func(*openhim.Response) {}, ""},
		{"no status is fine", func(r *openhim.Response) { r.Status = "" }, ""},
		{"misspelt status", func(r *openhim.Response) { r.Status = "Completed with errors" }, "not an OpenHIM transaction status"},
		{"no response status", func(r *openhim.Response) { r.Response.Status = 0 }, "response.status is required"},
		{"no response timestamp", func(r *openhim.Response) { r.Response.Timestamp = time.Time{} }, "response.timestamp is required"},
		{"orchestration without name", func(r *openhim.Response) { r.Orchestrations[0].Name = "" }, "orchestrations[0]: name is required"},
		{"orchestration request without timestamp", func(r *openhim.Response) { r.Orchestrations[0].Request.Timestamp = time.Time{} },
			"request.timestamp is required"},
		{"orchestration response without timestamp", func(r *openhim.Response) { r.Orchestrations[0].Response.Timestamp = time.Time{} },
			"response.timestamp is required"},
		{"orchestration without request", func(r *openhim.Response) { r.Orchestrations[0].Request = nil }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := syncResponse()
			tc.mutate(&r)
			err := r.Validate()
			if tc.msg == "" && err != nil || tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg)) {
				t.Errorf("Validate() = %v, want %q", err, tc.msg)
			}
		})
	}
}

func TestPollRecordsLikeCore(t *testing.T) {
	validBody, err := json.Marshal(syncResponse())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, contentType, body string
		httpStatus              int
		wantStatus              string
		wantInvalid             string // "" = valid
	}{
		{"valid envelope", openhim.ContentType, string(validBody), 200, openhim.StatusCompletedWithErrors, ""},
		{"outer status ignored", openhim.ContentType + "; charset=utf-8", string(validBody), 500, openhim.StatusCompletedWithErrors, ""},
		{"status derived from response", openhim.ContentType,
			`{"response":{"status":"404","body":"","timestamp":"2024-05-01T06:31:10.402Z"}}`, 200, openhim.StatusCompleted, ""},
		{"orchestration without name", openhim.ContentType,
			strings.Replace(string(validBody), `"name":"OpenInfoMan provider-search (2 pages)",`, "", 1), 200, openhim.StatusCompletedWithErrors,
			"orchestrations.0.name: Path `name` is required."},
		{"request without timestamp", openhim.ContentType,
			strings.Replace(string(validBody), `"method":"POST","timestamp":"2024-05-01T06:20:00.015Z"`, `"method":"POST"`, 1), 200,
			openhim.StatusCompletedWithErrors, "orchestrations.0.request.timestamp: Path `timestamp` is required."},
		{"body not a string", openhim.ContentType,
			`{"response":{"status":200,"body":{"created":1},"timestamp":"2024-05-01T06:31:10.402Z"}}`, 200, openhim.StatusSuccessful,
			"response.body must be a string"},
		{"no response", openhim.ContentType, `{"status":"Successful"}`, 200, openhim.StatusSuccessful, "response is required"},
		{"not JSON", openhim.ContentType, `{"status":`, 200, openhim.StatusFailed, "not JSON"},
		{"plain JSON reply", "application/json", `{"ok":true}`, 502, openhim.StatusFailed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *http.Request
			mediator := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.httpStatus)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer mediator.Close()
			core := newCore(t, openhimtest.Options{})
			registerAt(t, core, mediator.URL) // route /sync with Basic openhim:change-me

			tx, err := core.Poll(context.Background(), testURN)
			if err != nil {
				t.Fatal(err)
			}
			if tx.Status != tc.wantStatus {
				t.Errorf("status %q, want %q", tx.Status, tc.wantStatus)
			}
			switch {
			case tc.wantInvalid == "" && tx.ValidationError != nil:
				t.Errorf("unexpected validation error: %v", tx.ValidationError)
			case tc.wantInvalid != "" && (tx.ValidationError == nil || !strings.Contains(tx.ValidationError.Error(), tc.wantInvalid)):
				t.Errorf("validation error %v, want %q", tx.ValidationError, tc.wantInvalid)
			}
			if txs := core.Transactions(); len(txs) != 1 || txs[0].ID != tx.ID || txs[0].RawBody != tc.body {
				t.Errorf("recorded %+v", txs)
			}

			// What the route received is a polling channel's request.
			user, pass, _ := got.BasicAuth()
			if got.Method != http.MethodGet || got.URL.Path != "/sync" || got.ContentLength > 0 ||
				got.Header.Get("Channel-Id") != tx.ChannelID || got.Header.Get("X-Openhim-Transactionid") != tx.ID ||
				user != "openhim" || pass != "change-me" {
				t.Errorf("route got %s %s %v", got.Method, got.URL, got.Header)
			}
			if at, err := openhim.ParseLastRunAt(got.Header.Get("X-OpenHIM-LastRunAt")); err != nil || time.Since(at) > time.Minute {
				t.Errorf("last-run-at %q: %v", got.Header.Get("X-OpenHIM-LastRunAt"), err)
			}
		})
	}
}

func TestAsynchronousCompletion(t *testing.T) {
	mediator := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", openhim.ContentType)
		_ = json.NewEncoder(w).Encode(openhim.Response{
			MediatorURN: testURN, Status: openhim.StatusProcessing,
			Response: openhim.HTTPResponse{Status: http.StatusAccepted, Body: "sync started", Timestamp: time.Now()},
		})
	}))
	defer mediator.Close()
	core := newCore(t, openhimtest.Options{})
	client := newClient(core, openhim.NewBasicAuth(rootEmail, rootPassword))
	ctx := context.Background()

	registerAt(t, core, mediator.URL)
	tx, err := core.Poll(ctx, testURN)
	if err != nil || tx.Status != openhim.StatusProcessing {
		t.Fatalf("Poll = %+v, %v", tx, err)
	}
	incomplete := syncResponse()
	incomplete.Orchestrations[0].Name = ""
	if err := client.PutTransaction(ctx, tx.ID, incomplete); err == nil {
		t.Error("PutTransaction sent a response core would discard")
	}
	if err := client.PutTransaction(ctx, tx.ID, syncResponse()); err != nil {
		t.Fatalf("PutTransaction: %v", err)
	}
	if err := client.PutTransaction(ctx, "0123456789abcdef01234567", syncResponse()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("PutTransaction of an unknown id = %v, want 404", err)
	}
	done := core.Transactions()[0]
	if done.Status != openhim.StatusCompletedWithErrors || done.Updates != 1 || len(done.Response.Orchestrations) != 1 {
		t.Errorf("transaction after update: %+v", done)
	}
}
