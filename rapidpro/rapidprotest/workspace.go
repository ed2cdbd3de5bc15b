package rapidprotest

import (
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
	fieldTypes       = []string{"text", "number", "datetime", "state", "district", "ward"}
	legacyFieldTypes = map[string]string{"numeric": "number"}
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
	writePage(w, r, s.opts.PageSize, items, func(f fieldJSON) cursorKey { return cursorKey{seq: seqs[f.Key]} }, false)
}

// writeField is POST fields.json: create, or update with ?key= (which needs
// both name and type).
func (s *Server) writeField(w http.ResponseWriter, r *http.Request, body []byte) {
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	var existing *field
	if key := r.URL.Query().Get("key"); key != "" {
		if existing = s.fieldByKey(key); existing == nil {
			writeDetail(w, http.StatusNotFound, "Not found.")
			return
		}
	}

	errs := fieldErrors{}
	name, nameOK := firstString(obj, "name", "label")
	typ, typeOK := firstString(obj, "type", "value_type")
	if t, legacy := legacyFieldTypes[typ]; legacy {
		typ = t
	}
	switch {
	case !nameOK || name == "":
		errs.add("name", "This field is required.")
	case utf8.RuneCountInString(name) > maxFieldNameLen:
		errs.add("name", fmt.Sprintf("Ensure this field has no more than %d characters.", maxFieldNameLen))
	case name != strings.TrimSpace(name) || !fieldNamePattern.MatchString(name):
		errs.add("name", "Can only contain letters, numbers and hypens.")
	case !validFieldKey(rapidpro.FieldKey(name)):
		errs.add("name", "Can't be a reserved word.")
	}
	switch {
	case !typeOK || typ == "":
		errs.add("type", "This field is required.")
	case !slices.Contains(fieldTypes, typ):
		errs.add("type", fmt.Sprintf("%q is not a valid choice.", typ))
	}
	if len(errs) == 0 {
		for _, f := range s.fields {
			if f != existing && strings.EqualFold(f.name, name) {
				errs.add("label", "This field must be unique.")
			}
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
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
	key := rapidpro.FieldKey(name)
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
	key := rapidpro.FieldKey(name)
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

func (s *Server) groupJSON(g *group) rapidpro.Group {
	count := 0
	for _, c := range s.contacts {
		if !c.deleted && slices.Contains(c.groups, g) {
			count++
		}
	}
	return rapidpro.Group{UUID: g.uuid, Name: g.name, Status: "ready", Count: count}
}

// groupWire adds the null query the API sends for manual groups.
type groupWire struct {
	rapidpro.Group
	Query *string `json:"query"`
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	name, uuid := q.Get("name"), q.Get("uuid")
	if name != "" && uuid != "" {
		writeDetail(w, http.StatusBadRequest, "URL can only contain one of the following parameters: name, uuid")
		return
	}
	items := []groupWire{}
	seqs := map[string]int64{}
	for _, g := range s.groups {
		if (name == "" || strings.EqualFold(g.name, name)) && (uuid == "" || strings.EqualFold(g.uuid, uuid)) {
			items = append(items, groupWire{Group: s.groupJSON(g)})
			seqs[g.uuid] = g.seq
		}
	}
	writePage(w, r, s.opts.PageSize, items, func(g groupWire) cursorKey { return cursorKey{seq: seqs[g.UUID]} }, false)
}

// writeGroup is POST groups.json: create, or rename with ?uuid=.
func (s *Server) writeGroup(w http.ResponseWriter, r *http.Request, body []byte) {
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	var existing *group
	if uuid := r.URL.Query().Get("uuid"); uuid != "" {
		for _, g := range s.groups {
			if strings.EqualFold(g.uuid, uuid) {
				existing = g
			}
		}
		if existing == nil {
			writeDetail(w, http.StatusNotFound, "Not found.")
			return
		}
	}
	name, nameOK := firstString(obj, "name")
	if msg := groupNameProblem(name, nameOK); msg != "" {
		writeJSON(w, http.StatusBadRequest, fieldErrors{"name": []string{msg}})
		return
	}
	for _, g := range s.groups {
		if g != existing && strings.EqualFold(g.name, name) {
			writeJSON(w, http.StatusBadRequest, fieldErrors{"name": []string{"This field must be unique."}})
			return
		}
	}
	if existing != nil {
		existing.name = name
		writeJSON(w, http.StatusOK, groupWire{Group: s.groupJSON(existing)})
		return
	}
	if len(s.groups) >= maxGroups {
		writeDetail(w, http.StatusConflict, "Cannot create object because workspace has reached limit.")
		return
	}
	g := &group{seq: s.nextSeq(), uuid: newUUID(), name: name}
	s.groups = append(s.groups, g)
	writeJSON(w, http.StatusCreated, groupWire{Group: s.groupJSON(g)})
}

func groupNameProblem(name string, present bool) string {
	switch {
	case !present || strings.TrimSpace(name) == "":
		return "This field is required."
	case utf8.RuneCountInString(name) > maxGroupNameLen:
		return fmt.Sprintf("Ensure this field has no more than %d characters.", maxGroupNameLen)
	case name != strings.TrimSpace(name):
		return "Name can't begin or end with whitespace."
	case strings.ContainsAny(name, "\"\\\x00"):
		return `Name contains illegal characters: " \ or null.`
	}
	return ""
}

// AddGroup seeds a manual group and returns it; a group whose name exists
// (ignoring case) is returned as it is.
func (s *Server) AddGroup(name string) rapidpro.Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		if strings.EqualFold(g.name, name) {
			return s.groupJSON(g)
		}
	}
	g := &group{seq: s.nextSeq(), uuid: newUUID(), name: name}
	s.groups = append(s.groups, g)
	return s.groupJSON(g)
}

// ---- contact_actions.json

var groupActions = []string{"add", "remove"}
var otherActions = []string{"block", "unblock", "interrupt", "archive_messages", "archive", "delete"}

// contactAction applies a bulk action all or nothing, answering 204.
func (s *Server) contactAction(w http.ResponseWriter, _ *http.Request, body []byte) {
	obj, ok := decodeObject(w, body)
	if !ok {
		return
	}
	errs := fieldErrors{}

	var refs []string
	if raw, present := obj["contacts"]; !present || json.Unmarshal(raw, &refs) != nil {
		errs.add("contacts", "This field is required.")
	}
	var targets []*contact
	switch {
	case len(errs) > 0:
	case len(refs) == 0:
		errs.add("contacts", "This list may not be empty.")
	case len(refs) > maxListItems:
		errs.add("contacts", fmt.Sprintf("Ensure this field has no more than %d elements.", maxListItems))
	default:
		for _, ref := range refs {
			c := s.contactByRef(ref)
			if c == nil {
				errs.add("contacts", "No such object: "+ref)
				break
			}
			targets = append(targets, c)
		}
	}

	action, _ := firstString(obj, "action")
	isGroupAction := slices.Contains(groupActions, action)
	if !isGroupAction && !slices.Contains(otherActions, action) {
		errs.add("action", fmt.Sprintf("%q is not a valid choice.", action))
	}
	groupRef, hasGroup := firstString(obj, "group")
	var g *group
	switch {
	case isGroupAction && !hasGroup:
		errs.add("non_field_errors", fmt.Sprintf("For action \"%s\" you should also specify a group", action))
	case !isGroupAction && hasGroup:
		errs.add("non_field_errors", fmt.Sprintf("For action \"%s\" you should not specify a group", action))
	case hasGroup:
		if g = s.groupByRef(groupRef); g == nil {
			errs.add("group", "No such object: "+groupRef)
		}
	}
	if action == "add" && len(errs) == 0 {
		for _, c := range targets {
			if c.status != "active" {
				errs.add("non_field_errors", "Non-active contacts cannot be added to groups: "+c.uuid)
			}
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
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

// contactByRef finds a live contact by UUID or URN.
func (s *Server) contactByRef(ref string) *contact {
	c := s.byUUID[strings.ToLower(ref)]
	if c == nil && strings.Contains(ref, ":") {
		if urn, ok := s.normalizeURN(ref); ok {
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
