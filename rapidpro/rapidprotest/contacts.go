package rapidprotest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/openhie/mhero-mediator/rapidpro"
)

type contact struct {
	seq      int64
	uuid     string
	name     string // "" = null
	language string // "" = null
	urns     []string
	groups   []*group          // manual memberships, in the order joined
	fields   map[string]string // key → non-empty value
	status   string
	deleted  bool
	created  time.Time
	modified time.Time
}

func (c *contact) groupRefs() []rapidpro.GroupRef {
	refs := make([]rapidpro.GroupRef, 0, len(c.groups))
	for _, g := range c.groups {
		refs = append(refs, rapidpro.GroupRef{UUID: g.uuid, Name: g.name})
	}
	return refs
}

// API v2 limits on a contact write.
const (
	maxNameRunes   = 64
	maxListItems   = 100
	maxFieldValue  = 640
	timestampStyle = "2006-01-02T15:04:05.000000Z"
)

// contactJSON is the contact representation of API v2.
type contactJSON struct {
	UUID       string              `json:"uuid"`
	Name       *string             `json:"name"`
	Status     string              `json:"status"`
	Language   *string             `json:"language"`
	URNs       []string            `json:"urns"`
	Groups     []rapidpro.GroupRef `json:"groups"`
	Notes      []any               `json:"notes"`
	Fields     map[string]*string  `json:"fields"`
	Flow       any                 `json:"flow"`
	CreatedOn  string              `json:"created_on"`
	ModifiedOn string              `json:"modified_on"`
	LastSeenOn *string             `json:"last_seen_on"`
	Blocked    bool                `json:"blocked"`
	Stopped    bool                `json:"stopped"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Server) contactJSON(c *contact) contactJSON {
	out := contactJSON{
		UUID:       c.uuid,
		Name:       nullable(c.name),
		Status:     c.status,
		Language:   nullable(c.language),
		URNs:       append([]string{}, c.urns...),
		Groups:     c.groupRefs(),
		Notes:      []any{},
		Fields:     s.fieldValues(c),
		CreatedOn:  c.created.UTC().Format(timestampStyle),
		ModifiedOn: c.modified.UTC().Format(timestampStyle),
		Blocked:    c.status == "blocked",
		Stopped:    c.status == "stopped",
	}
	if c.deleted {
		out.Status, out.Fields = "", map[string]*string{}
	}
	return out
}

// fieldValues lists every workspace field key, null when unset.
func (s *Server) fieldValues(c *contact) map[string]*string {
	values := make(map[string]*string, len(s.fields))
	for _, f := range s.fields {
		values[f.key] = nil
		if v, ok := c.fields[f.key]; ok {
			values[f.key] = &v
		}
	}
	return values
}

func (s *Server) listContacts(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	wantDeleted := q.Get("deleted") == "true"
	match := func(c *contact) bool { return c.deleted == wantDeleted }

	if uuid := q.Get("uuid"); uuid != "" {
		prev := match
		match = func(c *contact) bool { return prev(c) && strings.EqualFold(c.uuid, uuid) }
	}
	if raw := q.Get("urn"); raw != "" {
		urn, ok := s.normalizeURN(raw)
		if !ok {
			writeDetail(w, http.StatusBadRequest, "Invalid URN: "+raw)
			return
		}
		prev := match
		match = func(c *contact) bool { return prev(c) && slices.Contains(c.urns, urn) }
	}
	if ref := q.Get("group"); ref != "" {
		// Here, unlike in writes, the name must match exactly.
		var g *group
		for _, cand := range s.groups {
			if cand.uuid == ref || cand.name == ref {
				g = cand
				break
			}
		}
		prev := match
		match = func(c *contact) bool { return g != nil && prev(c) && slices.Contains(c.groups, g) }
	}
	for _, bound := range []string{"after", "before"} {
		raw := q.Get(bound)
		if raw == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			match = func(*contact) bool { return false } // RapidPro silently returns nothing
			continue
		}
		prev, isAfter := match, bound == "after"
		match = func(c *contact) bool {
			if isAfter {
				return prev(c) && !c.modified.Before(t)
			}
			return prev(c) && !c.modified.After(t)
		}
	}

	var found []*contact
	for _, c := range s.contacts {
		if match(c) {
			found = append(found, c)
		}
	}
	key := func(c *contact) cursorKey { return cursorKey{c.modified.UnixNano(), c.seq} }
	desc := q.Get("reverse") != "true"
	sort.SliceStable(found, func(i, j int) bool {
		if desc {
			return key(found[j]).less(key(found[i]))
		}
		return key(found[i]).less(key(found[j]))
	})
	items := make([]contactJSON, len(found))
	keys := make(map[string]cursorKey, len(found))
	for i, c := range found {
		items[i] = s.contactJSON(c)
		keys[c.uuid] = key(c)
	}
	writePage(w, r, s.opts.PageSize, items, func(c contactJSON) cursorKey { return keys[c.UUID] }, desc)
}

// contactWrite is a validated contact POST body.
type contactWrite struct {
	nameSet, languageSet bool
	name, language       string // "" with the flag set = clear (null)
	urns                 []string
	urnsSet              bool
	groups               []*group
	groupsSet            bool
	fields               map[string]*string // nil value = clear
}

var languagePattern = regexp.MustCompile(`^[a-z]{3}$`)

// parseContactWrite validates a body, collecting every field's errors as
// DRF does. URN ownership is checked by the caller (create and update
// differ).
func (s *Server) parseContactWrite(obj map[string]json.RawMessage) (contactWrite, fieldErrors) {
	var cw contactWrite
	errs := fieldErrors{}

	if raw, ok := obj["name"]; ok {
		v, null, isString := stringValue(raw)
		switch {
		case !isString:
			errs.add("name", "Not a valid string.")
		case null:
			cw.nameSet = true
		case strings.TrimSpace(v) == "":
			errs.add("name", "This field may not be blank.")
		case utf8.RuneCountInString(v) > maxNameRunes:
			errs.add("name", fmt.Sprintf("Ensure this field has no more than %d characters.", maxNameRunes))
		default:
			cw.nameSet, cw.name = true, v
		}
	}

	if raw, ok := obj["language"]; ok {
		v, null, isString := stringValue(raw)
		switch {
		case !isString:
			errs.add("language", "Not a valid string.")
		case null:
			cw.languageSet = true
		case !languagePattern.MatchString(v):
			errs.add("language", "Not a valid ISO639-3 language code.")
		default:
			cw.languageSet, cw.language = true, v
		}
	}

	if raw, ok := obj["urns"]; ok {
		var list []json.RawMessage
		switch {
		case json.Unmarshal(raw, &list) != nil || list == nil:
			errs.add("urns", "Expected a list of items.")
		case len(list) > maxListItems:
			errs.add("urns", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
		default:
			cw.urnsSet, cw.urns = true, []string{}
			for i, item := range list {
				v, null, isString := stringValue(item)
				urn, valid := s.normalizeURN(v)
				if !isString || null || !valid {
					errs.addAt("urns", fmt.Sprint(i), "URN is not valid.")
					continue
				}
				cw.urns = append(cw.urns, urn)
			}
		}
	}

	if raw, ok := obj["groups"]; ok {
		var list []json.RawMessage
		switch {
		case json.Unmarshal(raw, &list) != nil || list == nil:
			errs.add("groups", "Expected a list of items.")
		case len(list) > maxListItems:
			errs.add("groups", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
		default:
			cw.groupsSet, cw.groups = true, []*group{}
			for _, item := range list {
				ref, _, isString := stringValue(item)
				if !isString {
					errs.add("groups", "Not a valid string.") // e.g. {uuid, name} objects
					break
				}
				g := s.groupByRef(ref)
				if g == nil {
					errs.add("groups", "No such object: "+ref)
					break
				}
				if !slices.Contains(cw.groups, g) {
					cw.groups = append(cw.groups, g)
				}
			}
		}
	}

	if raw, ok := obj["fields"]; ok {
		var values map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &values) != nil || values == nil:
			errs.add("fields", "Expected a dictionary of items.")
		case len(values) > maxListItems:
			errs.add("fields", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
		default:
			cw.fields = map[string]*string{}
			keys := make([]string, 0, len(values))
			for k := range values {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if s.fieldByKey(k) == nil {
					errs.add("fields", "Invalid contact field key: "+k)
					continue
				}
				v, msg := fieldValue(values[k])
				if msg != "" {
					errs.addAt("fields", k, msg)
					continue
				}
				cw.fields[k] = v
			}
		}
	}
	return cw, errs
}

// fieldValue reads a field value: strings, numbers (stringified) and null;
// "" clears like null. Values are cut at the engine's limit.
func fieldValue(raw json.RawMessage) (*string, string) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, "Not a valid string."
	}
	var s string
	switch t := v.(type) {
	case nil:
		return nil, ""
	case string:
		s = t
	case json.Number:
		s = t.String()
	default:
		return nil, "Not a valid string."
	}
	if strings.ContainsRune(s, 0) {
		return nil, "Null characters are not allowed."
	}
	if s == "" {
		return nil, ""
	}
	if r := []rune(s); len(r) > maxFieldValue {
		s = string(r[:maxFieldValue])
	}
	return &s, ""
}

// writeContact is POST contacts.json: create, update by ?uuid= or upsert by
// ?urn=.
func (s *Server) writeContact(w http.ResponseWriter, r *http.Request, body []byte) {
	q := r.URL.Query()
	uuid, rawURN := q.Get("uuid"), q.Get("urn")
	if uuid != "" && rawURN != "" {
		writeDetail(w, http.StatusBadRequest, "URL can only contain one of the following parameters: urn, uuid")
		return
	}
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}

	var target *contact
	switch {
	case uuid != "":
		if !uuidPattern.MatchString(uuid) {
			writeDetail(w, http.StatusBadRequest, fmt.Sprintf("Param 'uuid': %s is not a valid UUID.", uuid))
			return
		}
		if target = s.byUUID[strings.ToLower(uuid)]; target == nil {
			writeDetail(w, http.StatusNotFound, "Not found.")
			return
		}
	case rawURN != "":
		if _, has := obj["urns"]; has {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"urns": []string{"Field not allowed when using URN in URL"}})
			return
		}
		urn, valid := s.normalizeURN(rawURN)
		if !valid {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"urns": map[string][]string{"0": {"URN is not valid."}}})
			return
		}
		if target = s.byURN[urn]; target == nil {
			obj["urns"], _ = json.Marshal([]string{urn})
		}
	}

	cw, errs := s.parseContactWrite(obj)
	if target == nil {
		for i, urn := range cw.urns {
			if s.byURN[urn] != nil {
				errs.addAt("urns", fmt.Sprint(i), "URN is in use by another contact.")
			}
		}
	} else {
		if target.deleted {
			errs.add("non_field_errors", "Deleted contacts can't be modified.")
		}
		if cw.groupsSet && len(cw.groups) > 0 && target.status != "active" {
			errs.add("groups", "Non-active contacts can't be added to groups")
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}

	if target == nil {
		c := s.createContact(cw)
		writeJSON(w, http.StatusCreated, s.contactJSON(c))
		return
	}
	s.updateContact(target, cw)
	writeJSON(w, http.StatusOK, s.contactJSON(target))
}

func (s *Server) createContact(cw contactWrite) *contact {
	now := s.now()
	c := &contact{
		seq: s.nextSeq(), uuid: newUUID(), name: cw.name, language: cw.language,
		fields: map[string]string{}, status: "active", created: now, modified: now,
	}
	s.setURNs(c, cw.urns)
	c.groups = cw.groups
	for k, v := range cw.fields {
		if v != nil {
			c.fields[k] = *v
		}
	}
	s.contacts = append(s.contacts, c)
	s.byUUID[c.uuid] = c
	return c
}

// updateContact applies an update: name and language set, urns and groups
// replaced, fields merged; modified_on moves only when something changed.
func (s *Server) updateContact(c *contact, cw contactWrite) {
	changed := false
	if cw.nameSet && c.name != cw.name {
		c.name, changed = cw.name, true
	}
	if cw.languageSet && c.language != cw.language {
		c.language, changed = cw.language, true
	}
	if cw.urnsSet {
		var kept []string
		for _, urn := range cw.urns {
			// Since June 2024 the engine skips a URN another contact holds
			// and the API still answers 200.
			if owner := s.byURN[urn]; owner != nil && owner != c {
				continue
			}
			kept = append(kept, urn)
		}
		if !slices.Equal(dedupe(kept), c.urns) {
			s.setURNs(c, kept)
			changed = true
		}
	}
	if cw.groupsSet && !slices.Equal(cw.groups, c.groups) {
		c.groups, changed = cw.groups, true
	}
	for k, v := range cw.fields {
		old, had := c.fields[k]
		switch {
		case v == nil && had:
			delete(c.fields, k)
			changed = true
		case v != nil && (!had || old != *v):
			c.fields[k] = *v
			changed = true
		}
	}
	if changed {
		c.modified = s.now()
	}
}

// setURNs replaces c's URNs, keeping the URN index in step.
func (s *Server) setURNs(c *contact, list []string) {
	for _, urn := range c.urns {
		delete(s.byURN, urn)
	}
	c.urns = dedupe(list)
	for _, urn := range c.urns {
		s.byURN[urn] = c
	}
}

func dedupe(list []string) []string {
	out := []string{}
	for _, v := range list {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// deleteContact is DELETE contacts.json?uuid= or ?urn=: a soft delete that
// frees the URNs.
func (s *Server) deleteContact(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	var c *contact
	switch {
	case q.Get("uuid") != "":
		c = s.byUUID[strings.ToLower(q.Get("uuid"))]
	case q.Get("urn") != "":
		if urn, ok := s.normalizeURN(q.Get("urn")); ok {
			c = s.byURN[urn]
		}
	default:
		writeDetail(w, http.StatusBadRequest, "URL must contain one of the following parameters: urn, uuid")
		return
	}
	if c == nil || c.deleted {
		writeDetail(w, http.StatusNotFound, "Not found.")
		return
	}
	s.softDelete(c)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) softDelete(c *contact) {
	s.setURNs(c, nil)
	c.deleted, c.name, c.language = true, "", ""
	c.groups, c.fields = nil, map[string]string{}
	c.modified = s.now()
}

// Contacts returns a snapshot of the live (not deleted) contacts, in creation
// order.
func (s *Server) Contacts() []rapidpro.Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []rapidpro.Contact
	for _, c := range s.contacts {
		if !c.deleted {
			out = append(out, s.exportContact(c))
		}
	}
	return out
}

// AddContact seeds a contact as if it had been created through the API. A
// missing UUID, status or timestamp is filled in (ModifiedOn defaults to
// CreatedOn). It panics on what the API would refuse: a taken UUID, an
// invalid or taken URN, an unknown group (by UUID, or name ignoring case)
// or field key — a seeding mistake is a bug in the test.
func (s *Server) AddContact(in rapidpro.Contact) rapidpro.Contact {
	s.mu.Lock()
	defer s.mu.Unlock()

	c := &contact{
		seq: s.nextSeq(), uuid: strings.ToLower(in.UUID), name: in.Name, language: in.Language,
		fields: map[string]string{}, status: in.Status, created: in.CreatedOn.UTC(), modified: in.ModifiedOn.UTC(),
	}
	if c.uuid == "" {
		c.uuid = newUUID()
	}
	if s.byUUID[c.uuid] != nil {
		panic(fmt.Sprintf("rapidprotest: AddContact: uuid %s is taken", c.uuid))
	}
	if c.status == "" {
		c.status = "active"
	}
	if c.created.IsZero() {
		c.created = s.now()
	}
	if c.modified.IsZero() {
		c.modified = c.created
	}
	var list []string
	for _, raw := range in.URNs {
		urn, ok := s.normalizeURN(raw)
		if !ok {
			panic(fmt.Sprintf("rapidprotest: AddContact: invalid URN %q", raw))
		}
		if s.byURN[urn] != nil {
			panic(fmt.Sprintf("rapidprotest: AddContact: URN %s is taken", urn))
		}
		list = append(list, urn)
	}
	for _, ref := range in.Groups {
		g := s.groupByRef(ref.UUID)
		if g == nil {
			g = s.groupByRef(ref.Name)
		}
		if g == nil {
			panic(fmt.Sprintf("rapidprotest: AddContact: no group %q/%q", ref.UUID, ref.Name))
		}
		if !slices.Contains(c.groups, g) {
			c.groups = append(c.groups, g)
		}
	}
	for k, v := range in.Fields {
		if s.fieldByKey(k) == nil {
			panic(fmt.Sprintf("rapidprotest: AddContact: no field with key %q", k))
		}
		if v != nil && *v != "" {
			c.fields[k] = *v
		}
	}
	s.setURNs(c, list)
	s.contacts = append(s.contacts, c)
	s.byUUID[c.uuid] = c
	return s.exportContact(c)
}
