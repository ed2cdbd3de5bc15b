package rapidpro

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Contact is a contact as RapidPro API v2 returns it.
type Contact struct {
	UUID       string             `json:"uuid"`
	Name       string             `json:"name"`     // null decodes as ""
	Language   string             `json:"language"` // null decodes as ""
	URNs       []string           `json:"urns"`
	Groups     []GroupRef         `json:"groups"`
	Fields     map[string]*string `json:"fields"` // every workspace key, nil = unset
	Status     string             `json:"status"` // active|blocked|stopped|archived
	CreatedOn  time.Time          `json:"created_on"`
	ModifiedOn time.Time          `json:"modified_on"`
}

// UnmarshalJSON accepts non-string field values (a number field serialised
// as a JSON number) as their JSON text, so one odd value cannot fail a whole
// page of contacts. Older servers send no status, only the deprecated
// blocked and stopped booleans; Status is derived from them then. A deleted
// contact has all three null and keeps Status "".
func (c *Contact) UnmarshalJSON(data []byte) error {
	type plain Contact
	var raw struct {
		plain
		Fields  map[string]json.RawMessage `json:"fields"`
		Status  *string                    `json:"status"`
		Blocked *bool                      `json:"blocked"`
		Stopped *bool                      `json:"stopped"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*c = Contact(raw.plain)
	switch {
	case raw.Status != nil:
		c.Status = *raw.Status
	case raw.Blocked != nil && *raw.Blocked:
		c.Status = "blocked"
	case raw.Stopped != nil && *raw.Stopped:
		c.Status = "stopped"
	case raw.Blocked != nil || raw.Stopped != nil:
		c.Status = "active"
	default:
		c.Status = ""
	}
	c.Fields = nil
	if raw.Fields != nil {
		c.Fields = make(map[string]*string, len(raw.Fields))
		for k, v := range raw.Fields {
			c.Fields[k] = fieldValue(v)
		}
	}
	return nil
}

func fieldValue(v json.RawMessage) *string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		s = string(v)
	}
	return &s
}

// GroupRef is a group as listed on a contact.
type GroupRef struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
}

// Group is a contact group from groups.json.
type Group struct {
	UUID   string `json:"uuid"`
	Name   string `json:"name"`
	Query  string `json:"query"` // "" for a manual group
	Status string `json:"status"`
	System bool   `json:"system"`
	Count  int    `json:"count"`
}

// Field is a contact field from fields.json.
type Field struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	Type string `json:"type"` // text, number, datetime, state, district, ward
}

// Workspace is the workspace (org) the token belongs to.
type Workspace struct {
	UUID      string   `json:"uuid"`
	Name      string   `json:"name"`
	Country   string   `json:"country"` // ISO 3166-1 alpha-2, may be ""
	Languages []string `json:"languages"`
	Timezone  string   `json:"timezone"`
	DateStyle string   `json:"date_style"`
}

// ContactWrite is a POST body; zero-valued parts are omitted so an update
// sends only changed keys (an update REPLACES urns and groups when sent, and
// merges fields).
type ContactWrite struct {
	Name     string             // omitted when ""
	Language string             // omitted when ""
	URNs     []string           // omitted when nil; empty non-nil clears
	Groups   []string           // omitted when nil; group UUIDs or names
	Fields   map[string]*string // omitted when nil/empty; a nil value is sent as null (clears)
}

// MarshalJSON writes only the set parts; nil and empty slices differ, which
// encoding/json's omitempty cannot express.
func (w ContactWrite) MarshalJSON() ([]byte, error) {
	body := map[string]any{}
	if w.Name != "" {
		body["name"] = w.Name
	}
	if w.Language != "" {
		body["language"] = w.Language
	}
	if w.URNs != nil {
		body["urns"] = w.URNs
	}
	if w.Groups != nil {
		body["groups"] = w.Groups
	}
	if len(w.Fields) > 0 {
		body["fields"] = w.Fields
	}
	return json.Marshal(body)
}

// ContactQuery filters a contact listing; zero values are not sent.
type ContactQuery struct {
	UUID    string
	URN     string
	Group   string    // exact, case-sensitive name, or UUID
	After   time.Time // inclusive bound on modified_on
	Before  time.Time // inclusive bound on modified_on
	Reverse bool      // oldest first
}

// FieldKey is the key RapidPro generates for a field name: lower-cased, each
// run of characters outside [a-z0-9] turned into one "_", trimmed. Two names
// with the same key cannot coexist (the server answers 500), so compare keys
// before creating a field.
func FieldKey(name string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}), "_")
}

// apiTime is the timestamp format RapidPro writes and reads.
const apiTime = "2006-01-02T15:04:05.000000Z07:00"
