package openhimtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	URN       string // the mediator whose registered default channel was polled
	ChannelID string
	RouteURL  string // the URL the channel called, built from the registered route
	LastRunAt string // the X-OpenHIM-LastRunAt header sent
	// Status is the transaction status: the mediator's, else derived from
	// the HTTP status as core derives it; Processing when core could not
	// store a response that set a status (see StoreError).
	Status      string
	HTTPStatus  int    // status of the route's reply
	ContentType string // of the route's reply
	RawBody     string // the route's reply body, kept for diagnosis even when core stored nothing
	// Response is the parsed json+openhim envelope, replaced by each
	// accepted PUT /transactions/:id. It is empty when StoreError is set.
	Response openhim.Response
	// ValidationError is why core could not store the mediator's response
	// ("Could not save response metadata"), or why the envelope was not JSON.
	ValidationError error
	// StoreError is why MongoDB refused the response update: a key holding
	// '.' or starting with '$'. Core then keeps no response, properties or
	// orchestrations, and logs a line nobody reads.
	StoreError error
	Updates    int // accepted PUT /transactions/:id
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

// pollTarget is where and how a registered polling channel calls its route.
type pollTarget struct {
	channel            string // channel name, for the channel id
	url                string
	username, password string
}

// Poll runs the polling channel that mediator urn registered as its default
// (docs/protocols.md, Polling channels), as core runs it once the channel
// is installed: GET on the
// channel's primary route as registered (secured, host, port, path, else
// /trigger), with no body, channel-id, X-OpenHIM-LastRunAt (a JavaScript
// date string for now), X-OpenHIM-TransactionID and, when the route has
// both username and password, Basic auth. Taking the route from the
// registration, not from the caller, is what lets a test catch a mediator
// that registers one port and listens on another. The reply is recorded as
// core would record it. A urn without a usable polling channel is an error
// and records nothing; a transport failure is recorded as a Failed
// transaction and also returned.
func (c *Core) Poll(ctx context.Context, urn string) (Transaction, error) {
	c.mu.Lock()
	target, err := c.pollTarget(urn)
	if err != nil {
		c.mu.Unlock()
		return Transaction{}, err
	}
	key := urn + "\x00" + target.channel
	channelID, ok := c.channelIDs[key]
	if !ok {
		channelID = newID()
		c.channelIDs[key] = channelID
	}
	c.mu.Unlock()
	tx := &Transaction{
		ID: newID(), URN: urn, ChannelID: channelID, RouteURL: target.url,
		LastRunAt: c.now().UTC().Format(jsDateLayout), Status: openhim.StatusProcessing,
	}

	err = c.callRoute(ctx, target, tx)
	if err != nil {
		tx.Status = openhim.StatusFailed
	}
	c.mu.Lock()
	c.transactions = append(c.transactions, tx)
	recorded := *tx
	c.mu.Unlock()
	return recorded, err
}

// pollTarget reads the route of urn's registered polling channel. Only the
// primary route is called: its reply is the one core records. Callers hold
// c.mu.
func (c *Core) pollTarget(urn string) (pollTarget, error) {
	fail := func(format string, args ...any) (pollTarget, error) {
		return pollTarget{}, fmt.Errorf("openhimtest: poll %s: "+format, append([]any{urn}, args...)...)
	}
	m, ok := c.mediators[urn]
	if !ok {
		return fail("no mediator registered with this urn")
	}
	channels, _ := m.doc["defaultChannelConfig"].([]any)
	var channel map[string]any
	for _, ch := range channels {
		obj, _ := ch.(map[string]any)
		if obj["type"] == "polling" {
			channel = obj
			break
		}
	}
	if channel == nil {
		return fail("the registration has no polling default channel")
	}
	name, _ := channel["name"].(string)
	if channel["status"] == "disabled" {
		// Core schedules only enabled polling channels.
		return fail("default channel %q is disabled", name)
	}
	routes, _ := channel["routes"].([]any)
	var route map[string]any
	for _, r := range routes {
		obj, _ := r.(map[string]any)
		if obj["primary"] == true && obj["status"] != "disabled" {
			if route != nil {
				return fail("default channel %q has more than one enabled primary route", name)
			}
			route = obj
		}
	}
	if route == nil {
		return fail("default channel %q has no enabled primary route", name)
	}
	if t, _ := route["type"].(string); t != "" && t != "http" {
		return fail("route %q is of type %s; the fake calls only http routes", route["name"], t)
	}
	host, _ := route["host"].(string)
	port, _ := route["port"].(float64)
	if host == "" || port <= 0 || port != float64(int(port)) {
		return fail("route %q has no usable host and port (%q, %v)", route["name"], host, route["port"])
	}
	path, _ := route["path"].(string)
	if path == "" {
		if pt, _ := route["pathTransform"].(string); pt != "" {
			return fail("route %q uses pathTransform, which the fake does not apply", route["name"])
		}
		path = "/trigger" // core forwards the trigger's own path
	}
	scheme := "http"
	if route["secured"] == true {
		scheme = "https"
	}
	t := pollTarget{channel: name, url: scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(port))) + path}
	// Core sets Basic auth only when the route has both.
	username, _ := route["username"].(string)
	password, _ := route["password"].(string)
	if username != "" && password != "" {
		t.username, t.password = username, password
	}
	return t, nil
}

func (c *Core) callRoute(ctx context.Context, target pollTarget, tx *Transaction) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.url, nil)
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: %w", target.url, err)
	}
	req.Header.Set("Accept", "application/json, text/plain, */*")
	req.Header.Set("channel-id", tx.ChannelID)
	req.Header.Set("X-OpenHIM-LastRunAt", tx.LastRunAt)
	req.Header.Set("X-OpenHIM-TransactionID", tx.ID)
	if target.username != "" {
		req.SetBasicAuth(target.username, target.password)
	}
	resp, err := c.routeClient.Do(req)
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: %w", target.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody))
	if err != nil {
		return fmt.Errorf("openhimtest: poll %s: reading reply: %w", target.url, err)
	}
	tx.HTTPStatus = resp.StatusCode
	tx.ContentType = resp.Header.Get("Content-Type")
	tx.RawBody = string(body)
	tx.Status = derivedStatus(resp.StatusCode)
	var envelope map[string]any
	if strings.Contains(tx.ContentType, openhim.ContentType) {
		// Core ignores the outer status of a json+openhim reply.
		var parsed any
		if err := json.Unmarshal(body, &parsed); err != nil {
			tx.Status = openhim.StatusFailed // core answers 500 and sets the transaction error
			tx.ValidationError = fmt.Errorf("mediator response is not JSON: %w", err)
			return nil
		}
		applyEnvelope(tx, parsed, body)
		envelope, _ = parsed.(map[string]any)
		if checkMediatorResponse(parsed) != nil {
			return nil // Mongoose refuses the update before MongoDB sees a key
		}
	}
	if err := checkStoredKeys(envelope, resp.Header, true); err != nil {
		refuseStore(tx, envelope, resp.StatusCode, err)
	}
	return nil
}

// refuseStore records what core 4.0.5 keeps when MongoDB refuses the
// response update: nothing of the response. The status is set in that same
// update when the mediator gave one, so it stays Processing; without one,
// core's setFinalStatus writes the derived status separately. (Core v8.5.0
// writes the mediator's status separately too; the response is lost either
// way.)
func refuseStore(tx *Transaction, envelope map[string]any, httpStatus int, err error) {
	tx.StoreError = fmt.Errorf("Could not save response metadata for transaction %s: %w", tx.ID, err)
	tx.Response = openhim.Response{}
	tx.ValidationError = nil // nothing was stored, so nothing failed to decode
	if _, set := envelope["status"]; set {
		tx.Status = openhim.StatusProcessing
	} else if resp, _ := envelope["response"].(map[string]any); resp != nil {
		if status, ok := numericStatus(resp["status"]); ok {
			httpStatus = status
		}
		tx.Status = derivedStatus(httpStatus)
	}
}

// checkStoredKeys finds the first key MongoDB would refuse in what core
// stores of a reply: properties, the response headers, and each
// orchestration's request and response headers, at any depth, plus the
// HTTP reply's own headers, which core keeps raw in the orchestration it
// records for the primary route (nil for a PUT). escapeHeaders applies the
// escaping core's router gives the response headers of a reply: the first
// '.' and the first '$' of each name become full-width characters.
func checkStoredKeys(envelope map[string]any, httpHeaders http.Header, escapeHeaders bool) error {
	if err := checkKeys("properties", envelope["properties"]); err != nil {
		return err
	}
	if resp, _ := envelope["response"].(map[string]any); resp != nil {
		headers := resp["headers"]
		if obj, _ := headers.(map[string]any); obj != nil && escapeHeaders {
			headers = escapeKeys(obj)
		}
		if err := checkKeys("response.headers", headers); err != nil {
			return err
		}
	}
	list, _ := envelope["orchestrations"].([]any)
	for i, o := range list {
		orch, _ := o.(map[string]any)
		for _, part := range []string{"request", "response"} {
			record, _ := orch[part].(map[string]any)
			if err := checkKeys(fmt.Sprintf("orchestrations.%d.%s.headers", i, part), record["headers"]); err != nil {
				return err
			}
		}
	}
	for name := range httpHeaders {
		if err := checkKey(fmt.Sprintf("orchestrations.%d.response.headers", len(list)), strings.ToLower(name)); err != nil {
			return err
		}
	}
	return nil
}

// checkKeys walks v and checks every object key, in the order of the
// sorted keys so that the error names the same key every time.
func checkKeys(at string, v any) error {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := checkKey(at, k); err != nil {
				return err
			}
			if err := checkKeys(at+"."+k, t[k]); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range t {
			if err := checkKeys(fmt.Sprintf("%s.%d", at, i), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkKey is the BSON serializer's key check, in its words.
func checkKey(at, key string) error {
	switch {
	case strings.HasPrefix(key, "$"):
		return fmt.Errorf("%s: invalid key %q (key must not start with '$')", at, key)
	case strings.Contains(key, "."):
		return fmt.Errorf("%s: invalid key %q (key must not contain '.' sign)", at, key)
	}
	return nil
}

// escapeKeys is core's copyMapWithEscapedReservedCharacters: only the first
// '.' and the first '$' are replaced, so "a.b.c" still fails.
func escapeKeys(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		k = strings.Replace(strings.Replace(k, ".", "\uff0e", 1), "$", "\uff04", 1)
		out[k] = v
	}
	return out
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
// demand of a json+openhim envelope (docs/protocols.md, Mediator response),
// on the decoded JSON.
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
	// Core writes the update as sent, without escaping headers; MongoDB's
	// refusal surfaces as core's 500 and the transaction is left as it was.
	obj, _ := update.(map[string]any)
	if err := checkStoredKeys(obj, nil, false); err != nil {
		tx.StoreError = fmt.Errorf("Could not update transaction %s via the API: %w", id, err)
		http.Error(w, fmt.Sprintf("Could not update transaction via the API: %v", err), http.StatusInternalServerError)
		return
	}
	tx.ValidationError = nil
	tx.StoreError = nil
	applyEnvelope(tx, update, raw)
	tx.Updates++
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "Transaction with ID: %s successfully updated", id)
}
