package openhim

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/openhie/mhero-mediator/openhim/internal/semver"
)

// Mediator is the registration document for POST /mediators
// (docs/protocols.md, Registration).
type Mediator struct {
	URN                  string         `json:"urn"`
	Version              string         `json:"version"`
	Name                 string         `json:"name"`
	Description          string         `json:"description,omitempty"`
	Endpoints            []Route        `json:"endpoints"`
	DefaultChannelConfig []Channel      `json:"defaultChannelConfig,omitempty"`
	ConfigDefs           []ConfigDef    `json:"configDefs,omitempty"`
	Config               map[string]any `json:"config,omitempty"`
}

// Route is core's RouteDef, used for mediator endpoints and channel routes.
// Username and Password are what core sends to the mediator as Basic auth.
type Route struct {
	Name     string `json:"name"`
	Type     string `json:"type,omitempty"` // http (default) or kafka
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	Path     string `json:"path,omitempty"`
	Primary  bool   `json:"primary"`
	Secured  bool   `json:"secured,omitempty"`
	Status   string `json:"status,omitempty"` // enabled (default) or disabled
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// Channel is a default channel offered in the console. It has no methods
// field on purpose: core's /channels rejects methods on a polling channel.
type Channel struct {
	Name            string   `json:"name"`
	URLPattern      string   `json:"urlPattern"`
	Type            string   `json:"type,omitempty"` // http, tcp, tls or polling
	PollingSchedule string   `json:"pollingSchedule,omitempty"`
	Status          string   `json:"status,omitempty"`
	AuthType        string   `json:"authType,omitempty"` // private or public
	Allow           []string `json:"allow,omitempty"`
	Timeout         int      `json:"timeout,omitempty"` // ms
	Routes          []Route  `json:"routes,omitempty"`
}

// ConfigDef describes one console-editable config parameter
// (docs/protocols.md, Mediator config).
type ConfigDef struct {
	Param       string      `json:"param"`
	DisplayName string      `json:"displayName,omitempty"`
	Description string      `json:"description,omitempty"`
	Type        string      `json:"type"`
	Values      []string    `json:"values,omitempty"`
	Template    []ConfigDef `json:"template,omitempty"`
	Array       bool        `json:"array,omitempty"`
}

// Limits of core's channel and route schemas.
const (
	maxChannelTimeoutMS = 3600000
	maxPort             = 65536
)

// Validate runs the checks core runs on a registration (docs/protocols.md,
// Registration; messages as core words them), plus those core's /channels
// runs when a default channel is installed: a polling channel needs a
// schedule, timeout 1..3600000 ms, and each channel exactly one enabled
// primary route. All problems found are joined.
func (m Mediator) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.URN == "" {
		add("URN is required")
	}
	if !semver.Valid(m.Version) {
		add("Version is required. Must be in SemVer form x.y.z")
	}
	if err := validateConfigDefs(m.ConfigDefs); err != nil {
		errs = append(errs, err)
	} else if m.Config != nil {
		if err := ValidateConfig(m.ConfigDefs, m.Config); err != nil {
			errs = append(errs, err)
		}
	}
	if len(m.Endpoints) == 0 {
		add("At least 1 endpoint is required")
	}
	if m.Name == "" {
		add("name: Path `name` is required.")
	}
	for i, r := range m.Endpoints {
		errs = append(errs, validateRoute(fmt.Sprintf("endpoints.%d", i), r)...)
	}
	for i, ch := range m.DefaultChannelConfig {
		errs = append(errs, validateChannel(fmt.Sprintf("defaultChannelConfig.%d", i), ch)...)
	}
	return errors.Join(errs...)
}

func validateRoute(at string, r Route) []error {
	var errs []error
	if r.Name == "" {
		errs = append(errs, fmt.Errorf("%s.name: Path `name` is required.", at))
	}
	if r.Type != "" && r.Type != "http" && r.Type != "kafka" {
		errs = append(errs, fmt.Errorf("%s.type: `%s` is not a valid enum value", at, r.Type))
	}
	if r.Status != "" && r.Status != "enabled" && r.Status != "disabled" {
		errs = append(errs, fmt.Errorf("%s.status: `%s` is not a valid enum value", at, r.Status))
	}
	if r.Port < 0 || r.Port > maxPort {
		errs = append(errs, fmt.Errorf("%s.port: %d is outside 0..%d", at, r.Port, maxPort))
	}
	return errs
}

func validateChannel(at string, ch Channel) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if ch.Name == "" {
		add("%s.name: Path `name` is required.", at)
	}
	if ch.URLPattern == "" {
		add("%s.urlPattern: Path `urlPattern` is required.", at)
	}
	if ch.Type != "" && !slices.Contains([]string{"http", "tcp", "tls", "polling"}, ch.Type) {
		add("%s.type: `%s` is not a valid enum value", at, ch.Type)
	}
	if ch.AuthType != "" && ch.AuthType != "private" && ch.AuthType != "public" {
		add("%s.authType: `%s` is not a valid enum value", at, ch.AuthType)
	}
	if ch.Type == "polling" && ch.PollingSchedule == "" {
		add("%s: a polling channel needs pollingSchedule", at)
	}
	if ch.Timeout < 0 || ch.Timeout > maxChannelTimeoutMS {
		add("%s.timeout: %d ms is outside 1..%d", at, ch.Timeout, maxChannelTimeoutMS)
	}
	primaries := 0
	for i, r := range ch.Routes {
		errs = append(errs, validateRoute(fmt.Sprintf("%s.routes.%d", at, i), r)...)
		if r.Primary && r.Status != "disabled" {
			primaries++
		}
	}
	if primaries != 1 {
		add("%s: exactly one enabled primary route is required, found %d", at, primaries)
	}
	return errs
}

// validateConfigDefs checks definitions in core's order, stopping at the
// first problem as core does.
func validateConfigDefs(defs []ConfigDef) error {
	for _, def := range defs {
		switch def.Type {
		case "struct":
			if len(def.Template) == 0 {
				return fmt.Errorf("Must specify a template for struct param '%s'", def.Param)
			}
			for _, item := range def.Template {
				switch {
				case item.Param == "":
					return fmt.Errorf("Must specify field 'param' in template definition for param '%s'", def.Param)
				case item.Type == "":
					return fmt.Errorf("Must specify field 'type' in template definition for param '%s'", def.Param)
				case item.Type == "struct":
					return fmt.Errorf("May not recursively specify 'struct' in template definitions (param '%s')", def.Param)
				}
			}
		case "option":
			if len(def.Values) == 0 {
				return fmt.Errorf("Must specify a values array for option param '%s'", def.Param)
			}
		}
	}
	return nil
}

// ValidateConfig checks a config object against its definitions the way core
// does on registration and on the console's PUT /mediators/:urn/config: every
// key needs a definition and a value of the right JSON type
// (docs/protocols.md, Mediator config). Missing
// keys are fine; struct members are not type-checked, as in core. Use it also
// on config received in a heartbeat before swapping it in.
func ValidateConfig(defs []ConfigDef, config map[string]any) error {
	// Checking the JSON form covers whatever Go types the caller used.
	raw, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("config is not JSON: %w", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return fmt.Errorf("config is not a JSON object: %w", err)
	}
	params := make([]string, 0, len(generic))
	for p := range generic {
		params = append(params, p)
	}
	sort.Strings(params)
	for _, param := range params {
		found := false
		for _, def := range defs {
			if def.Param != param {
				continue
			}
			found = true
			if err := validateConfigValue(param, def, generic[param]); err != nil {
				return err
			}
		}
		if !found {
			return fmt.Errorf("No config definition found for parameter %s", param)
		}
	}
	return nil
}

func validateConfigValue(param string, def ConfigDef, value any) error {
	if !def.Array {
		return validateConfigField(param, def, value)
	}
	items, ok := value.([]any)
	if !ok {
		return fmt.Errorf("Expected config param %s to be an array of type %s", param, def.Type)
	}
	for i, item := range items {
		if err := validateConfigField(fmt.Sprintf("%s[%d]", param, i), def, item); err != nil {
			return err
		}
	}
	return nil
}

func validateConfigField(param string, def ConfigDef, value any) error {
	switch def.Type {
	case "string":
		if _, ok := value.(string); !ok {
			return fmt.Errorf("Expected config param %s to be a string.", param)
		}
	case "bigstring":
		if _, ok := value.(string); !ok {
			return fmt.Errorf("Expected config param %s to be a large string.", param)
		}
	case "password":
		if _, ok := value.(string); !ok {
			return fmt.Errorf("Expected config param %s to be a string representing a password.", param)
		}
	case "number":
		if _, ok := value.(float64); !ok {
			return fmt.Errorf("Expected config param %s to be a number.", param)
		}
	case "bool":
		if _, ok := value.(bool); !ok {
			return fmt.Errorf("Expected config param %s to be a boolean.", param)
		}
	case "option":
		s, ok := value.(string)
		if !ok || !slices.Contains(def.Values, s) {
			return fmt.Errorf("Expected config param %s to be one of %s", param, strings.Join(def.Values, ","))
		}
	case "map":
		obj, ok := value.(map[string]any)
		if !ok {
			return fmt.Errorf("Expected config param %s to be an object.", param)
		}
		for _, v := range obj {
			if _, ok := v.(string); !ok {
				return fmt.Errorf("Expected config param %s to only contain string values.", param)
			}
		}
	case "struct":
		obj, ok := value.(map[string]any)
		if !ok {
			return fmt.Errorf("Expected config param %s to be an object.", param)
		}
		fields := make([]string, 0, len(obj))
		for f := range obj {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		for _, f := range fields {
			if !slices.ContainsFunc(def.Template, func(t ConfigDef) bool { return t.Param == f }) {
				return fmt.Errorf("Field %s is not defined in template definition for config param %s.", f, param)
			}
		}
	}
	// Core accepts any value for a type it does not know.
	return nil
}
