package rapidpro

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// errStop ends a listing early once the wanted item is found.
var errStop = errors.New("stop")

// Fields lists the workspace's contact fields.
func (c *Client) Fields(ctx context.Context) ([]Field, error) {
	var fields []Field
	err := list(ctx, c, "fields.json", nil, func(f Field) error {
		fields = append(fields, f)
		return nil
	})
	return fields, err
}

// CreateField creates a contact field; the server derives its key from name
// (see FieldKey). It is not repeated after a 5xx or a lost answer: list the
// fields again before retrying.
func (c *Client) CreateField(ctx context.Context, name, typ string) (Field, error) {
	var f Field
	err := c.do(ctx, request{
		method: http.MethodPost, endpoint: "fields.json",
		body: map[string]string{"name": name, "type": typ}, mode: retryThrottledOnly,
	}, &f)
	return f, err
}

// GroupByName finds a group by name, ignoring case as the server does.
func (c *Client) GroupByName(ctx context.Context, name string) (Group, bool, error) {
	var found Group
	var ok bool
	err := list(ctx, c, "groups.json", url.Values{"name": {name}}, func(g Group) error {
		if strings.EqualFold(g.Name, name) {
			found, ok = g, true
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return Group{}, false, err
	}
	return found, ok, nil
}

// CreateGroup creates a manual group. Like CreateField it is not repeated
// after a 5xx or a lost answer; EnsureGroup handles that.
func (c *Client) CreateGroup(ctx context.Context, name string) (Group, error) {
	var g Group
	err := c.do(ctx, request{
		method: http.MethodPost, endpoint: "groups.json",
		body: map[string]string{"name": name}, mode: retryThrottledOnly,
	}, &g)
	return g, err
}

// EnsureGroup returns the group called name, creating it if absent. When the
// create fails in a way that may mean the group exists after all (a
// uniqueness 400 from a concurrent create, a 5xx, a lost answer), it looks
// again before giving up.
func (c *Client) EnsureGroup(ctx context.Context, name string) (Group, error) {
	if g, ok, err := c.GroupByName(ctx, name); err != nil || ok {
		return g, err
	}
	g, createErr := c.CreateGroup(ctx, name)
	if createErr == nil {
		return g, nil
	}
	switch KindOf(createErr) {
	case KindValidation, KindServer, KindTransport:
	default:
		return Group{}, createErr
	}
	g, ok, err := c.GroupByName(ctx, name)
	if err != nil || !ok {
		return Group{}, createErr
	}
	c.log.Info("rapidpro group create failed but the group exists; using it", slog.String("group", g.Name))
	return g, nil
}
