package rapidprotest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/openhie/mhero-mediator/rapidpro"
)

type group struct {
	seq  int64
	uuid string
	name string
}

type field struct {
	seq  int64
	key  string
	name string
	typ  string
}

// groupByRef finds a group by UUID or by name ignoring case, as contact
// writes and contact actions do.
func (s *Server) groupByRef(ref string) *group {
	for _, g := range s.groups {
		if strings.EqualFold(g.uuid, ref) || strings.EqualFold(g.name, ref) {
			return g
		}
	}
	return nil
}

func (s *Server) fieldByKey(key string) *field {
	for _, f := range s.fields {
		if f.key == key {
			return f
		}
	}
	return nil
}

// ---- fields.json

// Field names and keys as ContactField.is_valid_name / is_valid_key define
// them.
var (
	fieldNamePattern = regexp.MustCompile(`^[A-Za-z0-9\- ]+$`)
	fieldKeyPattern  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	reservedKeys     = []string{"has", "is", "fields", "urns", "created_on", "last_seen_on"}
	fieldTypes       = map[string]string{"text": "text", "number": "number", "datetime": "datetime", "state": "state", "district": "district", "ward": "ward"}
	legacyFieldTypes = map[string]string{"text": "text", "numeric": "number", "datetime": "datetime", "state": "state", "district": "district", "ward": "ward"}
)

const maxFieldNameLen = 36

type fieldJSON struct {
	Key         string         `json:"key"`
	Name        string         `json:"name"`
	Type        string         `json:"type"`
	Featured    bool           `json:"featured"`
	Priority    int            `json:"priority"`
	Usages      map[string]int `json:"usages"`
	AgentAccess string         `json:"agent_access"`
	Label       string         `json:"label"`      // deprecated
	ValueType   string         `json:"value_type"` // deprecated
}

func toFieldJSON(f *field) fieldJSON {
	valueType := f.typ
	if valueType == "number" {
		valueType = "numeric"
	}
	return fieldJSON{
		Key: f.key, Name: f.name, Type: f.typ, AgentAccess: "view",
		Usages: map[string]int{"flows": 0, "groups": 0, "campaign_events": 0},
		Label:  f.name, ValueType: valueType,
	}
}

func (s *Server) listFields(w http.ResponseWriter, r *http.Request, _ []byte) {
	key := r.URL.Query().Get("key")
	items := []fieldJSON{}
	seqs := map[string]int64{}
	for _, f := range s.fields {
		if key == "" || f.key == key {
			items = append(items, toFieldJSON(f))
			seqs[f.key] = f.seq
		}
	}
	slices.Reverse(items) // newest first: ordered by -created_on, -id
	writePage(w, r, s.opts.PageSize, items, func(f fieldJSON) cursorKey { return cursorKey{seq: seqs[f.Key]} }, true)
}

// writeField is POST fields.json: create, or update with ?key= (which needs
// both name and type). As ContactFieldWriteSerializer: name and the legacy
// label are each checked (trimmed, unique ignoring case, then the name and
// key rules) and reported under the key sent; type and the legacy
// value_type are choices of their own; a missing name or type is reported
// only once every field sent is valid.
func (s *Server) writeField(w http.ResponseWriter, r *http.Request, body []byte) {
	var existing *field
	if key, present := r.URL.Query()["key"]; present {
		if existing = s.fieldByKey(key[0]); existing == nil {
			notFound(w, "ContactField")
			return
		}
	}
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}

	errs := fieldErrors{}
	names := map[string]string{}
	for _, k := range []string{"name", "label"} {
		raw, present := obj[k]
		if !present {
			continue
		}
		v, null, msg := charField(raw, false)
		if null {
			msg = "This field may not be null."
		}
		if msg != "" {
			errs.add(k, msg)
			continue
		}
		var problems []string
		for _, f := range s.fields {
			if f != existing && strings.EqualFold(f.name, v) {
				problems = append(problems, "This field must be unique.")
				break
			}
		}
		if utf8.RuneCountInString(v) > maxFieldNameLen {
			problems = append(problems, fmt.Sprintf("Ensure this field has no more than %d characters.", maxFieldNameLen))
		}
		if len(problems) > 0 {
			errs[k] = problems
			continue
		}
		if !fieldNamePattern.MatchString(v) {
			errs.add(k, "Can only contain letters, numbers and hypens.")
			continue
		}
		if key := makeFieldKey(v); !validFieldKey(key) {
			errs.add(k, fmt.Sprintf("Generated key \"%s\" is invalid or a reserved name.", key))
			continue
		}
		names[k] = v
	}
	types := map[string]string{}
	for k, choices := range map[string]map[string]string{"type": fieldTypes, "value_type": legacyFieldTypes} {
		raw, present := obj[k]
		if !present {
			continue
		}
		null := string(raw) == "null"
		switch t, valid := choices[urnText(raw)]; {
		case null:
			errs.add(k, "This field may not be null.")
		case !valid:
			errs.add(k, fmt.Sprintf("\"%s\" is not a valid choice.", urnText(raw)))
		default:
			types[k] = t
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	name := cmp.Or(names["name"], names["label"])
	typ := cmp.Or(types["type"], types["value_type"])
	switch {
	case name == "":
		writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{"Field 'name' is required."}})
		return
	case typ == "":
		writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{"Field 'type' is required."}})
		return
	}

	if existing != nil {
		existing.name, existing.typ = name, typ
		writeJSON(w, http.StatusOK, toFieldJSON(existing))
		return
	}
	if len(s.fields) >= maxFields {
		writeDetail(w, http.StatusConflict, "Cannot create object because workspace has reached limit.")
		return
	}
	key := makeFieldKey(name)
	if s.fieldByKey(key) != nil {
		// The serializer checks names, not keys; the model's assertion
		// then fails and RapidPro answers a plain 500.
		serverError(w)
		return
	}
	f := &field{seq: s.nextSeq(), key: key, name: name, typ: typ}
	s.fields = append(s.fields, f)
	writeJSON(w, http.StatusCreated, toFieldJSON(f))
}

var keySeparators = regexp.MustCompile(`[^a-z0-9]+`)

// makeFieldKey is ContactField.make_key: lower-case, runs of other
// characters become one space, trim, then runs become "_". The emulator
// keeps its own copy so a mistake in the client's FieldKey shows.
func makeFieldKey(name string) string {
	key := keySeparators.ReplaceAllString(strings.ToLower(name), " ")
	return keySeparators.ReplaceAllString(strings.TrimSpace(key), "_")
}

func validFieldKey(key string) bool {
	return fieldKeyPattern.MatchString(key) && len(key) <= maxFieldNameLen && !slices.Contains(reservedKeys, key)
}

// firstString returns the first of keys present in obj as a string.
func firstString(obj map[string]json.RawMessage, keys ...string) (string, bool) {
	for _, k := range keys {
		if raw, ok := obj[k]; ok {
			v, null, isString := stringValue(raw)
			return v, isString && !null
		}
	}
	return "", false
}

// AddField seeds a field (type "" = text) and returns it; a field whose key
// exists is returned as it is.
func (s *Server) AddField(name, typ string) rapidpro.Field {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := makeFieldKey(name)
	f := s.fieldByKey(key)
	if f == nil {
		if typ == "" {
			typ = "text"
		}
		f = &field{seq: s.nextSeq(), key: key, name: name, typ: typ}
		s.fields = append(s.fields, f)
	}
	return rapidpro.Field{Key: f.key, Name: f.name, Type: f.typ}
}

// ---- groups.json

const maxGroupNameLen = 64

// groupJSON is a group as groups.json sends it (ContactGroupReadSerializer).
type groupJSON struct {
	UUID   string  `json:"uuid"`
	Name   string  `json:"name"`
	Query  *string `json:"query"` // null for a manual group
	Status string  `json:"status"`
	System bool    `json:"system"`
	Count  int     `json:"count"`
}

func (s *Server) groupJSON(g *group) groupJSON {
	count := 0
	for _, c := range s.contacts {
		if !c.deleted && slices.Contains(c.groups, g) {
			count++
		}
	}
	return groupJSON{UUID: g.uuid, Name: g.name, Status: "ready", Count: count}
}

func exportGroup(g groupJSON) rapidpro.Group {
	return rapidpro.Group{UUID: g.UUID, Name: g.Name, Status: g.Status, System: g.System, Count: g.Count}
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	name, uuid := q.Get("name"), q.Get("uuid")
	if name != "" && uuid != "" {
		writeDetail(w, http.StatusBadRequest, "You may only specify one of the uuid, name parameters")
		return
	}
	if msg := uuidParamProblem(q, "uuid"); msg != "" {
		writeDetail(w, http.StatusBadRequest, msg)
		return
	}
	uuid, _ = parseUUID(uuid)
	items := []groupJSON{}
	seqs := map[string]int64{}
	for _, g := range slices.Backward(s.groups) { // newest first: -created_on, -id
		if (name == "" || strings.EqualFold(g.name, name)) && (uuid == "" || g.uuid == uuid) {
			items = append(items, s.groupJSON(g))
			seqs[g.uuid] = g.seq
		}
	}
	writePage(w, r, s.opts.PageSize, items, func(g groupJSON) cursorKey { return cursorKey{seq: seqs[g.UUID]} }, true)
}

// writeGroup is POST groups.json: create, or rename with ?uuid=.
func (s *Server) writeGroup(w http.ResponseWriter, r *http.Request, body []byte) {
	q := r.URL.Query()
	var existing *group
	if _, present := q["uuid"]; present {
		if msg := uuidParamProblem(q, "uuid"); msg != "" {
			writeDetail(w, http.StatusBadRequest, msg)
			return
		}
		for _, g := range s.groups {
			if g.uuid == q.Get("uuid") {
				existing = g
			}
		}
		if existing == nil {
			notFound(w, "ContactGroup")
			return
		}
	}
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	name, problems := s.groupNameProblems(obj, existing)
	if len(problems) > 0 {
		writeJSON(w, http.StatusBadRequest, fieldErrors{"name": problems})
		return
	}
	if existing != nil {
		existing.name = name
		writeJSON(w, http.StatusOK, s.groupJSON(existing))
		return
	}
	if len(s.groups) >= maxGroups {
		writeDetail(w, http.StatusConflict, "Cannot create object because workspace has reached limit.")
		return
	}
	g := &group{seq: s.nextSeq(), uuid: newUUID(), name: name}
	s.groups = append(s.groups, g)
	writeJSON(w, http.StatusCreated, s.groupJSON(g))
}

// groupNameProblems checks name as ContactGroupWriteSerializer does: a
// trimmed CharField, then every validator's message (NameValidator,
// uniqueness ignoring case, length, NUL), all reported together.
func (s *Server) groupNameProblems(obj map[string]json.RawMessage, existing *group) (string, []string) {
	raw, present := obj["name"]
	if !present {
		return "", []string{"This field is required."}
	}
	name, null, msg := charField(raw, false)
	switch {
	case null:
		return "", []string{"This field may not be null."}
	case msg == "Null characters are not allowed.":
		name, _, _ = stringValue(raw)
		name = strings.TrimSpace(name)
	case msg != "":
		return "", []string{msg}
	}
	var problems []string
	tooLong := utf8.RuneCountInString(name) > maxGroupNameLen
	switch {
	case tooLong:
		problems = append(problems, fmt.Sprintf("Cannot be longer than %d characters.", maxGroupNameLen))
	case strings.Contains(name, `"`):
		problems = append(problems, `Cannot contain the character: "`)
	case strings.Contains(name, `\`):
		problems = append(problems, `Cannot contain the character: \`)
	case strings.ContainsRune(name, 0):
		problems = append(problems, "Cannot contain null characters.")
	}
	for _, g := range s.groups {
		if g != existing && strings.EqualFold(g.name, name) {
			problems = append(problems, "This field must be unique.")
			break
		}
	}
	if tooLong {
		problems = append(problems, fmt.Sprintf("Ensure this field has no more than %d characters.", maxGroupNameLen))
	}
	if strings.ContainsRune(name, 0) {
		problems = append(problems, "Null characters are not allowed.")
	}
	return name, problems
}

// AddGroup seeds a manual group and returns it; a group whose name exists
// (ignoring case) is returned as it is.
func (s *Server) AddGroup(name string) rapidpro.Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		if strings.EqualFold(g.name, name) {
			return exportGroup(s.groupJSON(g))
		}
	}
	g := &group{seq: s.nextSeq(), uuid: newUUID(), name: name}
	s.groups = append(s.groups, g)
	return exportGroup(s.groupJSON(g))
}

// ---- contact_actions.json

var groupActions = []string{"add", "remove"}
var otherActions = []string{"block", "unblock", "interrupt", "archive_messages", "archive", "delete"}

// contactAction applies a bulk action all or nothing, answering 204. As
// ContactBulkActionSerializer: field errors first (contacts stop at the first
// unknown one), then the group/action and non-active checks.
func (s *Server) contactAction(w http.ResponseWriter, _ *http.Request, body []byte) {
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	errs := fieldErrors{}

	var targets []*contact
	var list []json.RawMessage
	raw, present := obj["contacts"]
	switch {
	case !present:
		errs.add("contacts", "This field is required.")
	case json.Unmarshal(raw, &list) != nil || list == nil:
		errs.add("contacts", fmt.Sprintf("Expected a list of items but got type \"%s\".", pythonType(raw)))
	case len(list) > maxListItems:
		errs.add("contacts", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
	default:
		for _, item := range list {
			ref, ok := refValue(item)
			if !ok {
				errs.add("contacts", "Must be a string or integer")
				break
			}
			c := s.contactByRef(ref)
			if c == nil {
				errs.add("contacts", "No such object: "+ref)
				break
			}
			targets = append(targets, c)
		}
		if len(errs) == 0 && len(list) == 0 {
			errs.add("contacts", "Contacts can't be empty.")
		}
	}

	action := ""
	if raw, present := obj["action"]; !present {
		errs.add("action", "This field is required.")
	} else if action = urnText(raw); !slices.Contains(groupActions, action) && !slices.Contains(otherActions, action) {
		errs.add("action", fmt.Sprintf("\"%s\" is not a valid choice.", action))
	}
	var g *group
	if raw, present := obj["group"]; present && string(raw) != "null" {
		ref, ok := refValue(raw)
		switch {
		case !ok:
			errs.add("group", "Must be a string or integer")
		default:
			if g = s.groupByRef(ref); g == nil {
				errs.add("group", "No such object: "+ref)
			}
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	isGroupAction := slices.Contains(groupActions, action)
	var problem string
	switch {
	case isGroupAction && g == nil:
		problem = fmt.Sprintf("For action \"%s\" you should also specify a group", action)
	case !isGroupAction && g != nil:
		problem = fmt.Sprintf("For action \"%s\" you should not specify a group", action)
	case action == "add":
		var inactive []string
		for _, c := range targets {
			if c.status != "active" && !slices.Contains(inactive, c.uuid) {
				inactive = append(inactive, c.uuid)
			}
		}
		if len(inactive) > 0 {
			problem = "Non-active contacts cannot be added to groups: " + strings.Join(inactive, ", ")
		}
	}
	if problem != "" {
		writeJSON(w, http.StatusBadRequest, fieldErrors{"non_field_errors": []string{problem}})
		return
	}

	for _, c := range targets {
		changed := false
		switch action {
		case "add":
			if !slices.Contains(c.groups, g) {
				c.groups, changed = append(c.groups, g), true
			}
		case "remove":
			if i := slices.Index(c.groups, g); i >= 0 {
				c.groups, changed = slices.Delete(slices.Clone(c.groups), i, i+1), true
			}
		case "block":
			// Blocking drops the contact from every group.
			changed = c.status != "blocked" || len(c.groups) > 0
			c.status, c.groups = "blocked", nil
		case "unblock":
			// Also clears "stopped" (the opt-out).
			changed = c.status != "active"
			c.status = "active"
		case "delete":
			s.softDelete(c)
		}
		if changed {
			c.modified = s.now()
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// contactByRef finds a live contact by UUID (exactly as stored: the column
// is text) or by URN, normalised as fields.ContactField does: without the
// workspace country, so a local number matches nothing.
func (s *Server) contactByRef(ref string) *contact {
	c := s.byUUID[ref]
	if c == nil {
		if urn, ok := lookupURN(ref, ""); ok {
			c = s.byURN[urn]
		}
	}
	if c == nil || c.deleted {
		return nil
	}
	return c
}

// ---- workspace.json

func (s *Server) workspace(w http.ResponseWriter, _ *http.Request, _ []byte) {
	writeJSON(w, http.StatusOK, map[string]any{
		"uuid":       s.workspaceUUID,
		"name":       "Test Workspace",
		"country":    s.opts.Country,
		"languages":  []string{},
		"timezone":   "UTC",
		"date_style": "day_first",
		"anon":       false,
	})
}
