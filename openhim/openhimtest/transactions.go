package openhimtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

// Transaction is what core records for one polling run.
type Transaction struct {
	ID        string
	ChannelID string
	LastRunAt string // the X-OpenHIM-LastRunAt header sent
	// Status is the transaction status: the mediator's, else derived from
	// the HTTP status as core derives it.
	Status      string
	HTTPStatus  int    // status of the route's reply
	ContentType string // of the route's reply
	RawBody     string // the route's reply body
	// Response is the parsed json+openhim envelope, replaced by each
	// accepted PUT /transactions/:id.
	Response openhim.Response
	// ValidationError is why core could not store the mediator's response
	// ("Could not save response metadata"), or why the envelope was not JSON.
	ValidationError error
	Updates         int // accepted PUT /transactions/:id
}

// Transactions lists the recorded transactions, oldest first.
func (c *Core) Transactions() []Transaction {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Transaction, len(c.transactions))
	for i, t := range c.transactions {
		out[i] = *t
	}
	return out
}

// maxReplyBody is core's default api.maxBodiesSizeMB.
const maxReplyBody = 15 << 20

// jsDateLayout is JavaScript's Date.prototype.toString in UTC.
const jsDateLayout = "Mon Jan 02 2006 15:04:05 GMT-0700 (Coordinated Universal Time)"

// Poll sends the request a polling channel sends to its route (§1.7): GET
// routeURL with no body, channel-id, X-OpenHIM-LastRunAt (a JavaScript date
// string for now), X-OpenHIM-TransactionID and, when username is set, Basic
// auth. The reply is recorded as core would record it. A transport failure
// is recorded as a Failed transaction and also returned.
func (c *Core) Poll(ctx context.Context, routeURL, username, password string) (Transaction, error) {
	c.mu.Lock()
	channelID, ok := c.channelIDs[routeURL]
	if !ok {
		channelID = newID()
		c.channelIDs[routeURL] = channelID
	}
	c.mu.Unlock()
	tx := &Transaction{ID: newID(), ChannelID: channelID, LastRunAt: c.now().UTC().Format(jsDateLayout), Status: openhim.StatusProcessing}

	err := c.callRoute(ctx, routeURL, username, password, tx)
	if err != nil {
		tx.Status = openhim.StatusFailed
	}
	c.mu.Lock()
	c.transactions = append(c.transactions, tx)
	recorded := *tx
	c.mu.Unlock()
	return recorded, err
}

func (c *Core) callRoute(ctx context.Context, routeURL, username, password string, tx *Transaction) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, routeURL, nil)
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: %w", routeURL, err)
	}
	req.Header.Set("Accept", "application/json, text/plain, */*")
	req.Header.Set("channel-id", tx.ChannelID)
	req.Header.Set("X-OpenHIM-LastRunAt", tx.LastRunAt)
	req.Header.Set("X-OpenHIM-TransactionID", tx.ID)
	if username != "" {
		req.SetBasicAuth(username, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: %w", routeURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody))
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: reading reply: %w", routeURL, err)
	}
	tx.HTTPStatus = resp.StatusCode
	tx.ContentType = resp.Header.Get("Content-Type")
	tx.RawBody = string(body)
	tx.Status = derivedStatus(resp.StatusCode)
	if !strings.Contains(tx.ContentType, openhim.ContentType) {
		return nil
	}
	// Core ignores the outer status of a json+openhim reply.
	var envelope any
	if err := json.Unmarshal(body, &envelope); err != nil {
		tx.Status = openhim.StatusFailed // core answers 500 and sets the transaction error
		tx.ValidationError = fmt.Errorf("mediator response is not JSON: %w", err)
		return nil
	}
	applyEnvelope(tx, envelope, body)
	return nil
}

// applyEnvelope records a json+openhim body as core's messageStore does.
func applyEnvelope(tx *Transaction, envelope any, body []byte) {
	if err := checkMediatorResponse(envelope); err != nil {
		tx.ValidationError = fmt.Errorf("Could not save response metadata for transaction %s: %w", tx.ID, err)
	}
	obj, _ := envelope.(map[string]any)
	resp, _ := obj["response"].(map[string]any)
	if status, ok := numericStatus(resp["status"]); ok {
		tx.Status = derivedStatus(status)
	}
	if status, ok := obj["status"].(string); ok && status != "" {
		tx.Status = status
	}
	var parsed openhim.Response
	if err := json.Unmarshal(body, &parsed); err != nil && tx.ValidationError == nil {
		tx.ValidationError = fmt.Errorf("mediator response does not decode: %w", err)
	}
	tx.Response = parsed
}

// derivedStatus is core's status for a primary route reply without a
// mediator status.
func derivedStatus(httpStatus int) string {
	switch {
	case httpStatus >= 500:
		return openhim.StatusFailed
	case httpStatus >= 400:
		return openhim.StatusCompleted
	default:
		return openhim.StatusSuccessful
	}
}

func numericStatus(v any) (int, bool) {
	switch s := v.(type) {
	case float64:
		return int(s), true
	case string:
		n, err := strconv.Atoi(s)
		return n, err == nil
	}
	return 0, false
}

// checkMediatorResponse is what core's transaction schema and body handling
// demand of a json+openhim envelope (§1.6), on the decoded JSON.
func checkMediatorResponse(envelope any) error {
	obj, ok := envelope.(map[string]any)
	if !ok {
		return errors.New("envelope is not an object")
	}
	resp, ok := obj["response"].(map[string]any)
	if !ok {
		return errors.New("response is required")
	}
	if _, ok := numericStatus(resp["status"]); !ok {
		return errors.New("response.status is required")
	}
	if err := checkRecord("response", resp); err != nil {
		return err
	}
	if v, present := obj["status"]; present {
		if _, isString := v.(string); !isString {
			return errors.New("status must be a string")
		}
	}
	if v, present := obj["properties"]; present {
		if _, isObject := v.(map[string]any); !isObject {
			return errors.New("properties must be an object")
		}
	}
	orchestrations, present := obj["orchestrations"]
	if !present {
		return nil
	}
	list, ok := orchestrations.([]any)
	if !ok {
		return errors.New("orchestrations must be an array")
	}
	for i, o := range list {
		orch, _ := o.(map[string]any)
		if name, _ := orch["name"].(string); name == "" {
			return fmt.Errorf("orchestrations.%d.name: Path `name` is required.", i)
		}
		for _, part := range []string{"request", "response"} {
			v, present := orch[part]
			if !present || v == nil {
				continue
			}
			record, isObject := v.(map[string]any)
			if !isObject {
				return fmt.Errorf("orchestrations.%d.%s must be an object", i, part)
			}
			if err := checkRecord(fmt.Sprintf("orchestrations.%d.%s", i, part), record); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRecord checks a request or response record: a timestamp core can read
// as a Date, and a string body, since core sizes bodies with a byte-length
// call that throws on anything else.
func checkRecord(at string, record map[string]any) error {
	switch ts := record["timestamp"].(type) {
	case string:
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			return fmt.Errorf("%s.timestamp: Cast to Date failed for value %q", at, ts)
		}
	case float64:
	default:
		return fmt.Errorf("%s.timestamp: Path `timestamp` is required.", at)
	}
	if body, present := record["body"]; present && body != nil {
		if _, isString := body.(string); !isString {
			return fmt.Errorf("%s.body must be a string", at)
		}
	}
	return nil
}

// handleUpdateTransaction is PUT /transactions/:id, as a mediator completing
// asynchronously uses it. Unlike core, which drops an invalid update with a
// log line, the fake answers 400 so that tests see the problem.
func (c *Core) handleUpdateTransaction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	raw, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.transactions, func(t *Transaction) bool { return t.ID == id })
	if i < 0 {
		http.Error(w, fmt.Sprintf("Could not find transaction with id %s", id), http.StatusNotFound)
		return
	}
	var update any
	if !isJSONType(r) || json.Unmarshal(raw, &update) != nil {
		http.Error(w, errInvalidJSON, http.StatusBadRequest)
		return
	}
	if err := checkMediatorResponse(update); err != nil {
		http.Error(w, fmt.Sprintf("Could not update transaction via the API: %v", err), http.StatusBadRequest)
		return
	}
	tx := c.transactions[i]
	tx.ValidationError = nil
	applyEnvelope(tx, update, raw)
	tx.Updates++
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "Transaction with ID: %s successfully updated", id)
}
