package rapidprotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
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

// groupRefJSON is a group as listed on a contact.
type groupRefJSON struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
}

func (c *contact) groupRefs() []groupRefJSON {
	refs := make([]groupRefJSON, 0, len(c.groups))
	for _, g := range c.groups {
		refs = append(refs, groupRefJSON{UUID: g.uuid, Name: g.name})
	}
	return refs
}

// API v2 limits on a contact write.
const (
	maxNameRunes   = 64
	maxListItems   = 100
	maxURNLen      = 255
	maxFieldValue  = 640
	timestampStyle = "2006-01-02T15:04:05.000000Z"
)

// contactJSON is the contact representation of API v2 (ContactReadSerializer).
type contactJSON struct {
	UUID string  `json:"uuid"`
	Name *string `json:"name"`
	// Status is raw so it can be null (deleted) or left out (OmitStatus).
	Status     json.RawMessage    `json:"status,omitempty"`
	Language   *string            `json:"language"`
	URNs       []string           `json:"urns"`
	Groups     []groupRefJSON     `json:"groups"`
	Notes      []any              `json:"notes"`
	Fields     map[string]*string `json:"fields"`
	Flow       any                `json:"flow"`
	CreatedOn  string             `json:"created_on"`
	ModifiedOn string             `json:"modified_on"`
	LastSeenOn *string            `json:"last_seen_on"`
	Blocked    *bool              `json:"blocked"` // deprecated; null when deleted
	Stopped    *bool              `json:"stopped"` // deprecated; null when deleted
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
		Status:     json.RawMessage(`null`),
		Language:   nullable(c.language),
		URNs:       append([]string{}, c.urns...),
		Groups:     c.groupRefs(),
		Notes:      []any{},
		Fields:     map[string]*string{},
		CreatedOn:  c.created.UTC().Format(timestampStyle),
		ModifiedOn: c.modified.UTC().Format(timestampStyle),
	}
	if !c.deleted {
		// A deleted contact has status, blocked and stopped all null.
		out.Status, _ = json.Marshal(c.status)
		blocked, stopped := c.status == "blocked", c.status == "stopped"
		out.Blocked, out.Stopped = &blocked, &stopped
		out.Fields = s.fieldValues(c)
	}
	if s.opts.OmitStatus {
		out.Status = nil
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

	// Unlike a POST, a listing takes uuid and urn together (both filter).
	if msg := uuidParamProblem(q, "uuid"); msg != "" {
		writeDetail(w, http.StatusBadRequest, msg)
		return
	}
	if uuid, _ := parseUUID(q.Get("uuid")); uuid != "" {
		prev := match
		match = func(c *contact) bool { return prev(c) && c.uuid == uuid }
	}
	if raw := q.Get("urn"); raw != "" {
		// A phone that does not parse is not an error: it matches nothing.
		urn, ok := lookupURN(raw, s.opts.Country)
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
		t, ok := parseISO8601(raw)
		if !ok {
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
	writePageOf(w, r, s.opts.PageSize, found, key, desc, s.contactJSON)
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

// charField runs DRF's CharField checks on a JSON value: strings and numbers
// (stringified) are taken, trimmed; null is reported as null; "" or blank
// after trimming and other types are errors. msg is "" when valid.
func charField(raw json.RawMessage, allowBlank bool) (value string, null bool, msg string) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return "", false, "Not a valid string."
	}
	switch t := v.(type) {
	case nil:
		return "", true, ""
	case string:
		value = t
	case json.Number:
		value = pythonNumber(t)
	default:
		return "", false, "Not a valid string."
	}
	value = strings.TrimSpace(value)
	if value == "" && !allowBlank {
		return "", false, "This field may not be blank."
	}
	if strings.ContainsRune(value, 0) {
		return "", false, "Null characters are not allowed."
	}
	return value, false, ""
}

// pythonNumber is str() of the number Python's json module decodes: ints
// as written, floats in repr form ("1.5", "1000.0", "1e+16").
func pythonNumber(n json.Number) string {
	text := n.String()
	if !strings.ContainsAny(text, ".eE") {
		return text
	}
	f, err := n.Float64()
	if err != nil {
		return text
	}
	if a := math.Abs(f); a != 0 && (a < 1e-4 || a >= 1e16) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	out := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(out, ".") {
		out += ".0"
	}
	return out
}

// Three-letter codes pycountry does not know as ISO 639-3 alpha_3 although
// they look like languages: the ISO 639-2/B forms.
var bibliographicCodes = []string{
	"alb", "arm", "baq", "bur", "chi", "cze", "dut", "fre", "geo", "ger",
	"gre", "ice", "mac", "mao", "may", "per", "rum", "slo", "tib", "wel",
}

var languagePattern = regexp.MustCompile(`^[a-z]{3}$`)

// parseContactWrite validates a body as ContactWriteSerializer does:
// every field's errors at once, each field stopping at its first problem.
// URN ownership is checked by the caller (create and update differ).
func (s *Server) parseContactWrite(obj map[string]json.RawMessage) (contactWrite, fieldErrors) {
	var cw contactWrite
	errs := fieldErrors{}

	if raw, ok := obj["name"]; ok {
		v, null, msg := charField(raw, false)
		switch {
		case msg != "":
			errs.add("name", msg)
		case null:
			cw.nameSet = true
		case utf8.RuneCountInString(v) > maxNameRunes:
			errs.add("name", fmt.Sprintf("Ensure this field has no more than %d characters.", maxNameRunes))
		default:
			cw.nameSet, cw.name = true, v
		}
	}

	if raw, ok := obj["language"]; ok {
		v, null, msg := charField(raw, false)
		n := utf8.RuneCountInString(v)
		switch {
		case msg != "":
			errs.add("language", msg)
		case null:
			cw.languageSet = true
		case n < 3:
			errs.add("language", "Ensure this field has at least 3 characters.")
		case n > 3:
			errs.add("language", "Ensure this field has no more than 3 characters.")
		case !languagePattern.MatchString(v) || slices.Contains(bibliographicCodes, v):
			errs.add("language", "Not a valid ISO639-3 language code.")
		default:
			cw.languageSet, cw.language = true, v
		}
	}

	if raw, ok := obj["urns"]; ok {
		var list []json.RawMessage
		switch {
		case json.Unmarshal(raw, &list) != nil || list == nil:
			errs.add("urns", fmt.Sprintf("Expected a list of items but got type \"%s\".", pythonType(raw)))
		default:
			cw.urnsSet, cw.urns = true, []string{}
			for i, item := range list {
				v, null, msg := charField(item, false)
				if null {
					msg = "This field may not be null."
				}
				if msg == "" {
					urn, valid := s.normalizeURN(urnText(item))
					switch {
					case !valid:
						msg = fmt.Sprintf("Invalid URN: %s. Ensure phone numbers contain country codes.", urnText(item))
					case len(urn) > maxURNLen:
						msg = fmt.Sprintf("Ensure this field has no more than %d characters.", maxURNLen)
					default:
						v = urn
					}
				}
				if msg != "" {
					errs.addAt("urns", fmt.Sprint(i), msg)
					continue
				}
				cw.urns = append(cw.urns, v)
			}
			// The list's own length check runs after its items'.
			if _, failed := errs["urns"]; !failed && len(list) > maxListItems {
				errs.add("urns", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
			}
		}
	}

	if raw, ok := obj["groups"]; ok {
		var list []json.RawMessage
		switch {
		case json.Unmarshal(raw, &list) != nil || list == nil:
			errs.add("groups", fmt.Sprintf("Expected a list of items but got type \"%s\".", pythonType(raw)))
		case len(list) > maxListItems:
			errs.add("groups", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
		default:
			cw.groupsSet, cw.groups = true, []*group{}
			for _, item := range list {
				// Only the first bad item is reported (a related field list).
				ref, ok := refValue(item)
				if !ok {
					errs.add("groups", "Must be a string or integer") // e.g. {uuid, name} objects
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
			errs.add("fields", fmt.Sprintf("Expected a dictionary of items but got type \"%s\".", pythonType(raw)))
		default:
			// Each value first (errors keyed by field key), then the
			// length, then the keys, where only the first unknown one
			// in the order sent is reported.
			cw.fields = map[string]*string{}
			keys := objectKeys(raw)
			for _, k := range keys {
				v, null, msg := charField(values[k], true)
				switch {
				case msg != "":
					errs.addAt("fields", k, msg)
				case null || v == "":
					cw.fields[k] = nil
				default:
					if r := []rune(v); len(r) > maxFieldValue {
						v = string(r[:maxFieldValue]) // the engine cuts silently
					}
					cw.fields[k] = &v
				}
			}
			if _, failed := errs["fields"]; failed {
				break
			}
			if len(values) > maxListItems {
				errs.add("fields", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
				break
			}
			for _, k := range keys {
				if s.fieldByKey(k) == nil {
					errs.add("fields", "Invalid contact field key: "+k)
					break
				}
			}
		}
	}
	return cw, errs
}

// urnText is a URN item as str() shows it (URNField takes str(data)).
func urnText(raw json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&v)
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return pythonNumber(t)
	}
	return string(raw)
}

// refValue reads an object reference: a string, or an integer as text.
func refValue(raw json.RawMessage) (string, bool) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return "", false
	}
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		if !strings.ContainsAny(t.String(), ".eE") {
			return t.String(), true
		}
	}
	return "", false
}

// pythonType names a JSON value's type as Python's type(x).__name__ does.
func pythonType(raw json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&v)
	switch t := v.(type) {
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	case string:
		return "str"
	case json.Number:
		if strings.ContainsAny(t.String(), ".eE") {
			return "float"
		}
		return "int"
	case bool:
		return "bool"
	}
	return "NoneType"
}

// writeContact is POST contacts.json: create, update by ?uuid= or upsert by
// ?urn=. The URL is checked first (as get_lookup_values does, uuid before
// urn), then the object is found, then the body is read.
func (s *Server) writeContact(w http.ResponseWriter, r *http.Request, body []byte) {
	sel, ok := s.selectContact(w, r.URL.Query())
	if !ok {
		return
	}
	hasUUID, hasURN := sel.hasUUID, sel.hasURN

	var target *contact
	switch {
	case hasUUID:
		// The column is text: the value must match exactly as stored.
		if target = s.byUUID[sel.uuid]; target == nil {
			notFound(w, "Contact")
			return
		}
	case hasURN:
		target = s.byURN[sel.urn] // none: the upsert creates
	}

	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	if hasURN {
		if _, has := obj["urns"]; has {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"urns": []string{"Field not allowed when using URN in URL"}})
			return
		}
	}
	cw, errs := s.parseContactWrite(obj)
	if cw.groupsSet && len(cw.groups) > 0 && target != nil && target.status != "active" {
		if _, failed := errs["groups"]; !failed {
			errs.add("groups", "Non-active contacts can't be added to groups")
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	// Serializer.validate(), reached only when every field is valid.
	if target != nil && target.deleted {
		writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{"Deleted contacts can't be modified."}})
		return
	}
	if hasURN && target == nil {
		// The URL's URN, already normalised, is validated again without
		// the workspace country.
		urn, valid := s.normalizeURNIn(sel.urn, "")
		if !valid {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{
				fmt.Sprintf("Invalid URN: %s. Ensure phone numbers contain country codes.", sel.urn),
			}})
			return
		}
		cw.urnsSet, cw.urns = true, []string{urn}
	}

	if target == nil {
		// mailroom reports only the first taken URN; two equal URNs in
		// one body collide on insert and are reported at index 0.
		for i, urn := range cw.urns {
			if s.byURN[urn] != nil {
				writeJSON(w, http.StatusBadRequest, fieldErrors{"urns": map[string][]string{fmt.Sprint(i): {"URN is in use by another contact."}}})
				return
			}
		}
		if len(dedupe(cw.urns)) != len(cw.urns) {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"urns": map[string][]string{"0": {"URN is in use by another contact."}}})
			return
		}
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
	sel, ok := s.selectContact(w, r.URL.Query())
	if !ok {
		return
	}
	var c *contact
	switch {
	case sel.hasUUID:
		c = s.byUUID[sel.uuid]
	case sel.hasURN:
		c = s.byURN[sel.urn]
	default:
		writeDetail(w, http.StatusBadRequest, "URL must contain one of the following parameters: urn, uuid")
		return
	}
	if c == nil || c.deleted {
		notFound(w, "Contact")
		return
	}
	s.softDelete(c)
	w.WriteHeader(http.StatusNoContent)
}

// contactSelector is the ?uuid= or ?urn= of a POST or DELETE.
type contactSelector struct {
	hasUUID, hasURN bool
	uuid, urn       string // urn as the identity it is stored under
}

// selectContact reads and checks the selector, answering the 400 the real
// server gives for a bad UUID, a bad URN or both parameters at once.
func (s *Server) selectContact(w http.ResponseWriter, q url.Values) (contactSelector, bool) {
	_, hasUUID := q["uuid"]
	_, hasURN := q["urn"]
	sel := contactSelector{hasUUID: hasUUID, hasURN: hasURN, uuid: q.Get("uuid")}
	if msg := uuidParamProblem(q, "uuid"); msg != "" {
		writeDetail(w, http.StatusBadRequest, msg)
		return sel, false
	}
	if hasURN {
		var ok bool
		if sel.urn, ok = lookupURN(q.Get("urn"), s.opts.Country); !ok {
			writeDetail(w, http.StatusBadRequest, "Invalid URN: "+q.Get("urn"))
			return sel, false
		}
	}
	if hasUUID && hasURN {
		writeDetail(w, http.StatusBadRequest, "URL can only contain one of the following parameters: urn, uuid")
		return sel, false
	}
	return sel, true
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
	for _, ref := range in.Groups { // rapidpro.GroupRef: a Go-facing seed, not wire JSON
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
