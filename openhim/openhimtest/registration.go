package openhimtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/internal/semver"
)

// validationError is a failure core reports as 400; other failures of
// addMediator are 500.
type validationError struct{ msg string }

func (e validationError) Error() string { return e.msg }

// handleRegister is core's addMediator: the checks of docs/protocols.md,
// Registration, in core's order, then create, no-op, or merge on a higher
// version. It works on the decoded JSON, not on openhim.Mediator, so that it
// checks what the client actually sent.
func (c *Core) handleRegister(w http.ResponseWriter, r *http.Request) {
	doc, ok := jsonBody(r)
	if !ok {
		http.Error(w, errInvalidJSON, http.StatusBadRequest)
		return
	}
	if err := c.register(doc); err != nil {
		status := http.StatusInternalServerError
		if errors.As(err, new(validationError)) {
			status = http.StatusBadRequest
		}
		http.Error(w, "Could not add Mediator via the API: "+err.Error(), status)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func invalid(format string, args ...any) error {
	return validationError{fmt.Sprintf(format, args...)}
}

func (c *Core) register(doc map[string]any) error {
	urn, _ := doc["urn"].(string)
	if urn == "" {
		return invalid("URN is required")
	}
	version, _ := doc["version"].(string)
	if !semver.Valid(version) {
		return invalid("Version is required. Must be in SemVer form x.y.z")
	}
	defs, err := decodeConfigDefs(doc)
	if err != nil {
		return err
	}
	if err := checkConfigDefs(defs); err != nil {
		return err
	}
	if cfg, present := doc["config"]; present && cfg != nil {
		obj, isObject := cfg.(map[string]any)
		if !isObject {
			return invalid("config must be an object")
		}
		if err := openhim.ValidateConfig(defs, obj); err != nil {
			return invalid("%s", err)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if existing, ok := c.mediators[urn]; ok {
		existing.registrations++
		storedVersion, _ := existing.doc["version"].(string)
		if semver.Compare(version, storedVersion) > 0 {
			mergeRegistration(existing.doc, doc)
		}
		return nil
	}
	endpoints, _ := doc["endpoints"].([]any)
	if len(endpoints) == 0 {
		return invalid("At least 1 endpoint is required")
	}
	if err := checkSchema(doc); err != nil {
		return err
	}
	c.mediators[urn] = &mediator{doc: deepCopy(doc), registrations: 1}
	return nil
}

// mergeRegistration applies a higher version the way core's $set does: the
// fields sent replace the stored ones, except that config keeps every stored
// non-null value of a param still present. _configModifiedTS is untouched,
// so no heartbeat pushes the merged config.
func mergeRegistration(stored, update map[string]any) {
	update = deepCopy(update)
	newCfg, _ := update["config"].(map[string]any)
	oldCfg, _ := stored["config"].(map[string]any)
	for param := range newCfg {
		if v, ok := oldCfg[param]; ok && v != nil {
			newCfg[param] = v
		}
	}
	for k, v := range update {
		stored[k] = v
	}
}

func decodeConfigDefs(doc map[string]any) ([]openhim.ConfigDef, error) {
	raw, present := doc["configDefs"]
	if !present || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var defs []openhim.ConfigDef
	if err := json.Unmarshal(b, &defs); err != nil {
		return nil, invalid("configDefs: %s", err)
	}
	return defs, nil
}

// configDefs reads the definitions of a stored (already validated) document.
func configDefs(doc map[string]any) []openhim.ConfigDef {
	defs, _ := decodeConfigDefs(doc)
	return defs
}

// checkConfigDefs is core's validateConfigDef over every definition.
func checkConfigDefs(defs []openhim.ConfigDef) error {
	for _, def := range defs {
		switch def.Type {
		case "struct":
			if def.Template == nil {
				return invalid("Must specify a template for struct param '%s'", def.Param)
			}
			for _, item := range def.Template {
				if item.Param == "" {
					return invalid("Must specify field 'param' in template definition for param '%s'", def.Param)
				}
				if item.Type == "" {
					return invalid("Must specify field 'type' in template definition for param '%s'", def.Param)
				}
				if item.Type == "struct" {
					return invalid("May not recursively specify 'struct' in template definitions (param '%s')", def.Param)
				}
			}
		case "option":
			if len(def.Values) == 0 {
				return invalid("Must specify a values array for option param '%s'", def.Param)
			}
		}
	}
	return nil
}

// checkSchema is the part of core's Mongoose schema a new mediator can fail:
// required names and urlPatterns, and the route and channel enums.
func checkSchema(doc map[string]any) error {
	required := func(obj map[string]any, at, field string) error {
		if s, _ := obj[field].(string); s == "" {
			return invalid("Mediator validation failed: %s%s: Path `%s` is required.", at, field, field)
		}
		return nil
	}
	enum := func(obj map[string]any, at, field string, allowed ...string) error {
		if v, present := obj[field]; present && !slices.Contains(allowed, fmt.Sprint(v)) {
			return invalid("Mediator validation failed: %s%s: `%v` is not a valid enum value for path `%s`.", at, field, v, field)
		}
		return nil
	}
	checkRoute := func(route any, at string) error {
		obj, _ := route.(map[string]any)
		if err := required(obj, at, "name"); err != nil {
			return err
		}
		if err := enum(obj, at, "type", "http", "kafka"); err != nil {
			return err
		}
		if err := enum(obj, at, "status", "enabled", "disabled"); err != nil {
			return err
		}
		if port, present := obj["port"]; present {
			if n, isNumber := port.(float64); !isNumber || n < 0 || n > 65536 {
				return invalid("Mediator validation failed: %sport: Path `port` (%v) is outside 0..65536.", at, port)
			}
		}
		return nil
	}

	if err := required(doc, "", "name"); err != nil {
		return err
	}
	endpoints, _ := doc["endpoints"].([]any)
	for i, e := range endpoints {
		if err := checkRoute(e, fmt.Sprintf("endpoints.%d.", i)); err != nil {
			return err
		}
	}
	channels, _ := doc["defaultChannelConfig"].([]any)
	for i, ch := range channels {
		at := fmt.Sprintf("defaultChannelConfig.%d.", i)
		obj, _ := ch.(map[string]any)
		for _, field := range []string{"name", "urlPattern"} {
			if err := required(obj, at, field); err != nil {
				return err
			}
		}
		if err := enum(obj, at, "type", "http", "tcp", "tls", "polling"); err != nil {
			return err
		}
		if err := enum(obj, at, "authType", "private", "public"); err != nil {
			return err
		}
		routes, _ := obj["routes"].([]any)
		for j, route := range routes {
			if err := checkRoute(route, fmt.Sprintf("%sroutes.%d.", at, j)); err != nil {
				return err
			}
		}
	}
	return nil
}
