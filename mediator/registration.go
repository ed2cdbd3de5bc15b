package mediator

import (
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

// Registration describes how this service registers with OpenHIM.
type Registration struct {
	URN, Version string
	// Host and Port are where OpenHIM calls the service; the port is the one
	// the service listens on, from the same setting, so they cannot disagree.
	Host string
	Port int
	// Username and Password go on the channel route, so that OpenHIM's calls
	// carry the credentials /sync checks.
	Username, Password string
	PollingSchedule    string
	// ChannelTimeout is how long OpenHIM waits for a run (at most an hour).
	ChannelTimeout time.Duration
	// Settings become the registration's config, the console's defaults:
	// without their secrets unless ConfigSecrets is set (see
	// Settings.WithoutSecrets).
	Settings      Settings
	ConfigSecrets bool
}

// Mediator is the registration document. The version must be raised for a
// change here to reach a core that already knows the service.
func (r Registration) Mediator() openhim.Mediator {
	route := openhim.Route{
		Name: "mHero sync", Type: "http", Host: r.Host, Port: r.Port, Path: "/sync",
		Primary: true, Status: "enabled", Username: r.Username, Password: r.Password,
	}
	timeout := min(max(int(r.ChannelTimeout.Milliseconds()), 1), 3600000)
	return openhim.Mediator{
		URN:         r.URN,
		Version:     r.Version,
		Name:        "mHero sync",
		Description: "Keeps RapidPro contacts in step with the health worker registry in OpenInfoMan",
		Endpoints:   []openhim.Route{route},
		DefaultChannelConfig: []openhim.Channel{{
			Name: "mHero - provider sync", URLPattern: "^/mhero-sync$", Type: "polling",
			PollingSchedule: r.PollingSchedule, Status: "enabled", AuthType: "private", Allow: []string{"mhero-admin"},
			Timeout: timeout, Routes: []openhim.Route{route},
		}},
		ConfigDefs: []openhim.ConfigDef{
			{Param: "openinfoman", DisplayName: "OpenInfoMan", Description: "Where the health worker registry is read", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "url", DisplayName: "URL", Type: "string"},
				{Param: "username", DisplayName: "Username", Type: "string"},
				{Param: "password", DisplayName: "Password", Type: "password"},
				{Param: "document", DisplayName: "Provider document", Type: "string"},
				{Param: "pageSize", DisplayName: "Providers per page", Type: "number"},
			}},
			{Param: "rapidpro", DisplayName: "RapidPro", Description: "The workspace health workers are texted from", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "url", DisplayName: "URL", Type: "string"},
				{Param: "token", DisplayName: "API token", Type: "password"},
				{Param: "group", DisplayName: "Group this service manages", Type: "string"},
				{Param: "country", DisplayName: "Country for local phone numbers (empty: the workspace's)", Type: "string"},
			}},
			{Param: "inactivePolicy", DisplayName: "Inactive health workers", Description: "What happens to the contact of a worker whose record is no longer active",
				Type: "option", Values: inactivePolicies},
			{Param: "targeting", DisplayName: "Targeting", Description: "Where facilities and organizations are read, and how cadre and district are chosen", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "facilitiesDocument", DisplayName: "Facility document (empty: the provider document)", Type: "string"},
				{Param: "organizationsDocument", DisplayName: "Organization document (empty: the provider document)", Type: "string"},
				{Param: "cadreScheme", DisplayName: "Coding scheme of the cadre (empty: the first codedType)", Type: "string"},
				{Param: "districtLevel", DisplayName: "Organization level of the district (1 is the root)", Type: "number"},
				{Param: "districtCode", DisplayName: "Organization type code of a district (overrides the level)", Type: "string"},
			}},
			{Param: "reconcile", DisplayName: "Full reconciliation", Description: "Finds the workers who left the registry", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "everyHours", DisplayName: "Every (hours)", Type: "number"},
				{Param: "maxRetireShare", DisplayName: "Most contacts one run may retire (share, e.g. 0.1)", Type: "number"},
			}},
			{Param: "writeBack", DisplayName: "Write-back", Description: "Writes each contact's RapidPro UUID to its provider in OpenInfoMan", Type: "struct", Template: []openhim.ConfigDef{
				{Param: "enabled", DisplayName: "Enabled", Type: "bool"},
				{Param: "code", DisplayName: "otherID code", Type: "string"},
				{Param: "authority", DisplayName: "otherID assigning authority (empty: the RapidPro URL)", Type: "string"},
			}},
		},
		Config: r.consoleConfig(),
	}
}

// consoleConfig is the config registered: the settings, without their
// secrets unless the operator opted in.
func (r Registration) consoleConfig() map[string]any {
	if r.ConfigSecrets {
		return r.Settings.ConsoleConfig()
	}
	return r.Settings.WithoutSecrets().ConsoleConfig()
}
