package mediator

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/csd"
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
	Targeting      TargetingSettings   `json:"targeting"`
	Reconcile      ReconcileSettings   `json:"reconcile"`
	WriteBack      WriteBackSettings   `json:"writeBack"`
}

// ReconcileSettings govern the full reconciliation, which compares the whole
// registry with the managed group to find the workers who left.
type ReconcileSettings struct {
	// EveryHours is how often a run is a full reconciliation; 0 means
	// DefaultReconcileHours.
	EveryHours int `json:"everyHours"`
	// MaxRetireShare is the circuit breaker: a reconciliation that would
	// retire more than this share of the managed contacts retires none
	// until an operator confirms; 0 means DefaultMaxRetireShare.
	MaxRetireShare float64 `json:"maxRetireShare"`
}

// Reconciliation defaults: daily, and at most one contact in ten.
const (
	DefaultReconcileHours = 24
	DefaultMaxRetireShare = 0.10
)

func (r ReconcileSettings) every() time.Duration {
	if r.EveryHours <= 0 {
		return DefaultReconcileHours * time.Hour
	}
	return time.Duration(r.EveryHours) * time.Hour
}

func (r ReconcileSettings) maxShare() float64 {
	if r.MaxRetireShare <= 0 {
		return DefaultMaxRetireShare
	}
	return r.MaxRetireShare
}

// WriteBackSettings: writing each contact's RapidPro UUID back to its
// provider in OpenInfoMan as an otherID. Off by default: it needs the
// openinfoman-hwr updating functions and write access to the registry.
type WriteBackSettings struct {
	Enabled   bool   `json:"enabled"`
	Code      string `json:"code"`      // the otherID@code; empty means DefaultWriteBackCode
	Authority string `json:"authority"` // the otherID@assigningAuthorityName; empty means the RapidPro URL
}

// DefaultWriteBackCode is the otherID code the first mHero mediator used.
const DefaultWriteBackCode = "rapidpro_contact_id"

// otherID is the identifier written back for a contact of this workspace.
func (s Settings) otherID(uuid string) csd.OtherID {
	// Written and compared trimmed, and the authority without a trailing
	// slash, so that the carried otherID is recognised however they were
	// typed.
	id := csd.OtherID{Code: strings.TrimSpace(s.WriteBack.Code), AssigningAuthorityName: strings.TrimSpace(s.WriteBack.Authority), Value: uuid}
	if id.Code == "" {
		id.Code = DefaultWriteBackCode
	}
	if id.AssigningAuthorityName == "" {
		id.AssigningAuthorityName = s.RapidPro.URL
	}
	id.AssigningAuthorityName = strings.TrimRight(strings.TrimSpace(id.AssigningAuthorityName), "/")
	return id
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
	problems = append(problems, s.Targeting.validate()...)
	if r := s.Reconcile.MaxRetireShare; r < 0 || r > 1 {
		problems = append(problems, fmt.Sprintf("reconcile maxRetireShare %g is not between 0 and 1", r))
	}
	if s.Reconcile.EveryHours < 0 {
		problems = append(problems, fmt.Sprintf("reconcile everyHours %d is negative", s.Reconcile.EveryHours))
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
	// Unmarshalling into the same map would change s even when refused.
	next.Targeting.Fields = maps.Clone(s.Targeting.Fields)
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

// WithoutSecrets returns s with its secrets, the OpenInfoMan password and
// the RapidPro token, empty: what the registration sends core unless the
// operator opts in, since core stores its config and older cores list it in
// clear. An empty secret from the console keeps the flag's (see
// WithConsoleConfig), so the service still uses its own.
func (s Settings) WithoutSecrets() Settings {
	s.OpenInfoMan.Password = ""
	s.RapidPro.Token = ""
	return s
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
		"targeting": map[string]any{
			"facilitiesDocument": s.Targeting.FacilitiesDocument, "organizationsDocument": s.Targeting.OrganizationsDocument,
			"cadreScheme": s.Targeting.CadreScheme, "districtLevel": s.Targeting.DistrictLevel, "districtCode": s.Targeting.DistrictCode,
		},
		"reconcile": map[string]any{"everyHours": s.Reconcile.EveryHours, "maxRetireShare": s.Reconcile.MaxRetireShare},
		"writeBack": map[string]any{"enabled": s.WriteBack.Enabled, "code": s.WriteBack.Code, "authority": s.WriteBack.Authority},
	}
}

// changedKeys names, as dotted paths of the console config ("rapidpro.group"),
// the settings that differ between s and next.
func (s Settings) changedKeys(next Settings) []string {
	var a, b map[string]any
	for _, v := range []struct {
		from Settings
		into *map[string]any
	}{{s, &a}, {next, &b}} {
		data, _ := json.Marshal(v.from) // plain data: cannot fail
		_ = json.Unmarshal(data, v.into)
	}
	var changed []string
	var walk func(prefix string, a, b map[string]any)
	walk = func(prefix string, a, b map[string]any) {
		keys := map[string]bool{}
		for k := range a {
			keys[k] = true
		}
		for k := range b {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			am, aok := a[k].(map[string]any)
			bm, bok := b[k].(map[string]any)
			switch {
			case aok && bok:
				walk(prefix+k+".", am, bm)
			case !reflect.DeepEqual(a[k], b[k]):
				changed = append(changed, prefix+k)
			}
		}
	}
	walk("", a, b)
	return changed
}
