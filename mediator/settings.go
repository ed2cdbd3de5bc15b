package mediator

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Inactive policies: what happens to the contact of a health worker whose
// registry record is no longer active. Deleting is never offered: it loses
// the message history and frees the phone number.
const (
	InactiveIgnore          = "ignore"
	InactiveRemoveFromGroup = "remove-from-group"
	InactiveBlock           = "block"
)

var inactivePolicies = []string{InactiveIgnore, InactiveRemoveFromGroup, InactiveBlock}

// Settings are what an operator may change while the service runs, from
// flags at start and from the OpenHIM console afterwards.
type Settings struct {
	OpenInfoMan    OpenInfoManSettings `json:"openinfoman"`
	RapidPro       RapidProSettings    `json:"rapidpro"`
	InactivePolicy string              `json:"inactivePolicy"`
}

// OpenInfoManSettings locate the provider directory.
type OpenInfoManSettings struct {
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
	Document string `json:"document"`
	PageSize int    `json:"pageSize"`
}

// RapidProSettings locate the workspace and the group this service manages.
type RapidProSettings struct {
	URL     string `json:"url"`
	Token   string `json:"token"`
	Group   string `json:"group"`
	Country string `json:"country"` // empty: the workspace's country
}

// Validate checks settings before a run uses them; messages never carry the
// secrets.
func (s Settings) Validate() error {
	var problems []string
	for _, u := range []struct{ name, value string }{{"openinfoman url", s.OpenInfoMan.URL}, {"rapidpro url", s.RapidPro.URL}} {
		if parsed, err := url.Parse(u.value); err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			problems = append(problems, fmt.Sprintf("%s %q is not an http(s) URL", u.name, u.value))
		}
	}
	if strings.TrimSpace(s.OpenInfoMan.Document) == "" {
		problems = append(problems, "openinfoman document is empty")
	}
	if s.OpenInfoMan.PageSize < 1 {
		problems = append(problems, fmt.Sprintf("openinfoman page size %d is below 1", s.OpenInfoMan.PageSize))
	}
	if s.RapidPro.Token == "" {
		problems = append(problems, "rapidpro token is empty")
	}
	if g := s.RapidPro.Group; strings.TrimSpace(g) != g || g == "" || len([]rune(g)) > 64 || strings.ContainsAny(g, "\"\\\x00") {
		problems = append(problems, fmt.Sprintf("rapidpro group %q is not a valid RapidPro group name", g))
	}
	if c := s.RapidPro.Country; c != "" && (len(c) != 2 || strings.ToUpper(c) != c) {
		problems = append(problems, fmt.Sprintf("rapidpro country %q is not an ISO 3166-1 alpha-2 code", c))
	}
	if !slices.Contains(inactivePolicies, s.InactivePolicy) {
		problems = append(problems, fmt.Sprintf("inactive policy %q is not one of %s", s.InactivePolicy, strings.Join(inactivePolicies, ", ")))
	}
	if len(problems) > 0 {
		return fmt.Errorf("settings: %s", strings.Join(problems, "; "))
	}
	return nil
}

// WithConsoleConfig returns s with the values of an OpenHIM mediator config
// object laid over it. Keys the console did not send keep their value, and so
// do empty passwords and tokens: the console shows them masked, and an
// operator who never typed one means "unchanged", not "none".
func (s Settings) WithConsoleConfig(raw json.RawMessage) (Settings, error) {
	next := s
	if err := json.Unmarshal(raw, &next); err != nil {
		return s, fmt.Errorf("console config: %w", err)
	}
	if next.OpenInfoMan.Password == "" {
		next.OpenInfoMan.Password = s.OpenInfoMan.Password
	}
	if next.RapidPro.Token == "" {
		next.RapidPro.Token = s.RapidPro.Token
	}
	next.RapidPro.Country = strings.ToUpper(strings.TrimSpace(next.RapidPro.Country))
	if err := next.Validate(); err != nil {
		return s, fmt.Errorf("console config: %w", err)
	}
	return next, nil
}

// ConsoleConfig is the settings as an OpenHIM config object, the shape the
// registration's configDefs describe.
func (s Settings) ConsoleConfig() map[string]any {
	return map[string]any{
		"openinfoman": map[string]any{
			"url": s.OpenInfoMan.URL, "username": s.OpenInfoMan.Username, "password": s.OpenInfoMan.Password,
			"document": s.OpenInfoMan.Document, "pageSize": s.OpenInfoMan.PageSize,
		},
		"rapidpro": map[string]any{
			"url": s.RapidPro.URL, "token": s.RapidPro.Token, "group": s.RapidPro.Group, "country": s.RapidPro.Country,
		},
		"inactivePolicy": s.InactivePolicy,
	}
}
