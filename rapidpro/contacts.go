package rapidpro

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
)

// Contacts calls fn for every contact matching q, page by page, following
// `next` until it is null. An error from fn stops the listing and is
// returned as is.
func (c *Client) Contacts(ctx context.Context, q ContactQuery, fn func(Contact) error) error {
	query := url.Values{}
	set := func(k, v string) {
		if v != "" {
			query.Set(k, v)
		}
	}
	set("uuid", q.UUID)
	set("urn", q.URN)
	set("group", q.Group)
	if !q.After.IsZero() {
		query.Set("after", q.After.UTC().Format(apiTime))
	}
	if !q.Before.IsZero() {
		query.Set("before", q.Before.UTC().Format(apiTime))
	}
	if q.Reverse {
		query.Set("reverse", "true")
	}
	return list(ctx, c, "contacts.json", query, fn)
}

// CreateContact creates a contact. It is never blindly repeated: after a
// 5xx or a lost answer the contact may exist, so the client looks it up by
// its first URN and returns it if it is there; otherwise the original error
// is returned and the caller may try again. A 429 is retried (nothing was
// committed). A contact without URNs cannot be reconciled.
func (c *Client) CreateContact(ctx context.Context, w ContactWrite) (Contact, error) {
	var ct Contact
	err := c.do(ctx, request{method: http.MethodPost, endpoint: "contacts.json", body: w, mode: retryThrottledOnly}, &ct)
	if err == nil {
		return ct, nil
	}
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.unsent || len(w.URNs) == 0 ||
		(apiErr.Kind != KindServer && apiErr.Kind != KindTransport) {
		return Contact{}, err
	}
	if found, ok := c.reconcileCreate(ctx, w.URNs[0]); ok {
		c.log.Warn("rapidpro create failed but the contact exists; using it",
			slog.String("error_kind", apiErr.Kind.String()), slog.Int("status", apiErr.Status), slog.String("uuid", found.UUID))
		return found, nil
	}
	return Contact{}, err
}

// reconcileCreate looks up the contact a failed create may have committed.
// It runs even when ctx is done (a timeout is the usual way a create loses
// its answer), bounded by its own timeout.
func (c *Client) reconcileCreate(ctx context.Context, urn string) (Contact, bool) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
		defer cancel()
	}
	var found Contact
	var ok bool
	err := c.Contacts(ctx, ContactQuery{URN: urn}, func(ct Contact) error {
		found, ok = ct, true
		return nil
	})
	if err != nil {
		c.log.Warn("rapidpro lookup after a failed create failed", slog.String("error", err.Error()))
		return Contact{}, false
	}
	return found, ok
}

// UpdateContact updates the contact with uuid, sending only the set parts of
// w. Sent urns and groups replace the contact's; fields are merged. A URN
// held by another contact is dropped silently by the server, so compare the
// returned URNs with w.URNs.
func (c *Client) UpdateContact(ctx context.Context, uuid string, w ContactWrite) (Contact, error) {
	if uuid == "" {
		return Contact{}, errors.New("rapidpro: update contact: empty uuid")
	}
	var ct Contact
	err := c.do(ctx, request{
		method: http.MethodPost, endpoint: "contacts.json",
		query: url.Values{"uuid": {uuid}}, body: w, mode: retryIdempotent,
	}, &ct)
	return ct, err
}

// UpsertContact updates the contact owning urn, or creates one with it. The
// URN goes in the query, so w.URNs must be nil.
func (c *Client) UpsertContact(ctx context.Context, urn string, w ContactWrite) (Contact, error) {
	if urn == "" {
		return Contact{}, errors.New("rapidpro: upsert contact: empty urn")
	}
	if w.URNs != nil {
		return Contact{}, errors.New("rapidpro: upsert contact: urns must not be sent with ?urn=")
	}
	var ct Contact
	err := c.do(ctx, request{
		method: http.MethodPost, endpoint: "contacts.json",
		query: url.Values{"urn": {urn}}, body: w, mode: retryIdempotent,
	}, &ct)
	return ct, err
}

// MaxActionContacts is the most contacts one contact_actions call takes.
const MaxActionContacts = 100

// ContactAction applies action (add, remove, block, unblock, interrupt,
// archive_messages, delete) to 1..100 contacts given by UUID or URN; group
// is required for add and remove and must be "" otherwise. The server
// applies all or nothing.
func (c *Client) ContactAction(ctx context.Context, action string, contacts []string, group string) error {
	if action == "" {
		return errors.New("rapidpro: contact action: empty action")
	}
	if n := len(contacts); n == 0 || n > MaxActionContacts {
		return fmt.Errorf("rapidpro: contact action %s: %d contacts, want 1..%d", action, n, MaxActionContacts)
	}
	body := map[string]any{"action": action, "contacts": contacts}
	if group != "" {
		body["group"] = group
	}
	return c.do(ctx, request{method: http.MethodPost, endpoint: "contact_actions.json", body: body, mode: retryIdempotent}, nil)
}

// Workspace reads the workspace the token belongs to.
func (c *Client) Workspace(ctx context.Context) (Workspace, error) {
	var ws Workspace
	err := c.do(ctx, request{method: http.MethodGet, endpoint: "workspace.json", mode: retryIdempotent}, &ws)
	return ws, err
}
