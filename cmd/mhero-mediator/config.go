package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/mediator"
)

// version is the version registered with OpenHIM; raise it whenever the
// registration (endpoints, channel, configDefs) changes, or a core that
// already knows the service keeps the old one. A var, so that a build can
// stamp it: go build -ldflags "-X main.version=1.2.0" (SemVer: core refuses
// others).
var version = "1.1.0"

// maxWriteConcurrency bounds --write-concurrency; each upstream client
// keeps that many idle connections.
const maxWriteConcurrency = 64

// config is everything serve, sync and demo are configured with.
type config struct {
	settings mediator.Settings

	rapidProRate          int
	writeConcurrency      int
	rapidProRetryAfterCap time.Duration
	lookupThreshold       int
	stateFile             string
	syncTimeout           time.Duration
	watermarkMargin       time.Duration

	bind                string
	opsAddr             string
	answerBudget        time.Duration
	port                int
	publicHost          string
	syncUsername        string
	syncPassword        string
	shutdownGrace       time.Duration
	openHIMURL          string
	openHIMUsername     string
	openHIMPassword     string
	openHIMAuth         string
	openHIMCAFile       string
	openHIMCertPin      string
	openHIMInsecure     bool
	mediatorURN         string
	pollingSchedule     string
	channelTimeout      time.Duration
	heartbeatInterval   time.Duration
	logLevel, logFormat string
	// cadreNamesFile is an SVS value set naming the cadre codes.
	cadreNamesFile string

	// openHIMConfigSecrets sends the RapidPro token and the OpenInfoMan
	// password in the registration's config.
	openHIMConfigSecrets bool

	// upstreamTimeouts replace defaultUpstreamTimeouts per system; tests
	// shorten them.
	upstreamTimeouts map[string]upstreamTimeouts
}

func (c *config) timeouts(system string) upstreamTimeouts {
	if t, ok := c.upstreamTimeouts[system]; ok {
		return t
	}
	return defaultUpstreamTimeouts[system]
}

func (c *config) register(fs *flag.FlagSet) {
	s := &c.settings
	fs.StringVar(&s.OpenInfoMan.URL, "oim-url", "http://localhost:8984", "OpenInfoMan base URL (without /CSD)")
	fs.StringVar(&s.OpenInfoMan.Document, "oim-document", "Providers", "OpenInfoMan document holding the providers")
	fs.StringVar(&s.OpenInfoMan.Username, "oim-username", "", "OpenInfoMan Basic auth user (empty: no auth)")
	fs.StringVar(&s.OpenInfoMan.Password, "oim-password", "", "OpenInfoMan Basic auth password")
	fs.IntVar(&s.OpenInfoMan.PageSize, "oim-page-size", 500, "providers asked for per provider-search page")
	fs.StringVar(&s.RapidPro.URL, "rapidpro-url", "", "RapidPro base URL, e.g. https://rapidpro.example.org")
	fs.StringVar(&s.RapidPro.Token, "rapidpro-token", "", "RapidPro API token (Administrator or Editor)")
	fs.StringVar(&s.RapidPro.Group, "rapidpro-group", "mHero", "the one RapidPro group this service manages")
	fs.StringVar(&s.RapidPro.Country, "country", "", "ISO 3166-1 alpha-2 country for phone numbers without a country code (empty: the workspace's)")
	fs.StringVar(&s.InactivePolicy, "inactive-policy", mediator.InactiveRemoveFromGroup, "what to do with the contact of an inactive health worker: ignore, remove-from-group or block")
	t := &s.Targeting
	fs.StringVar(&t.FacilitiesDocument, "facilities-document", "", "OpenInfoMan document holding the facility directory (empty: the providers' document)")
	fs.StringVar(&t.OrganizationsDocument, "organizations-document", "", "OpenInfoMan document holding the organization directory (empty: the providers' document)")
	targetingFlags(fs, t, &c.cadreNamesFile)
	s.Reconcile.EveryHours = mediator.DefaultReconcileHours
	fs.Var(hours{&s.Reconcile.EveryHours}, "reconcile-every", "time between full reconciliations, in whole `hours`: 24, 24h or 168h")
	fs.Float64Var(&s.Reconcile.MaxRetireShare, "max-retire-share", mediator.DefaultMaxRetireShare, "largest share of the managed contacts one run retires without --confirm-retire (1: no limit)")
	fs.BoolVar(&s.WriteBack.Enabled, "write-back", false, "write each contact's RapidPro UUID to its provider in OpenInfoMan (needs openinfoman-hwr)")
	fs.StringVar(&s.WriteBack.Code, "write-back-code", mediator.DefaultWriteBackCode, "otherID code of the written-back contact UUID")
	fs.StringVar(&s.WriteBack.Authority, "write-back-authority", "", "otherID assigningAuthorityName of the written-back contact UUID (empty: the RapidPro URL)")
	fs.IntVar(&c.rapidProRate, "rapidpro-rate", 3600, "RapidPro requests per hour per rate scope (0: no client-side limit)")
	fs.IntVar(&c.writeConcurrency, "write-concurrency", 8, "RapidPro writes in flight at once, within --rapidpro-rate (1: one at a time); writes for the same worker, phone or contact stay in order")
	fs.DurationVar(&c.rapidProRetryAfterCap, "rapidpro-retry-after-cap", time.Minute, "longest RapidPro Retry-After waited on in a run; longer defers the rest to the next run")
	fs.IntVar(&c.lookupThreshold, "lookup-threshold", 100, "linked contacts to read above which a run may read the whole group (when that takes fewer requests) instead of one by one")
	fs.StringVar(&c.stateFile, "state-file", "mhero-state.db", "file keeping the watermark and contact links between runs")
	fs.DurationVar(&c.syncTimeout, "sync-timeout", 55*time.Minute, "longest a sync run may take")
	fs.DurationVar(&c.watermarkMargin, "watermark-margin", 5*time.Minute, "overlap between runs, against clock skew with OpenInfoMan")

	fs.StringVar(&c.bind, "bind", "", "address to listen on (empty: all interfaces)")
	fs.DurationVar(&c.answerBudget, "answer-budget", mediator.DefaultAnswerBudget, "longest an OpenHIM trigger waits for its run; a longer run is answered Processing and its transaction completed when it ends")
	fs.StringVar(&c.opsAddr, "ops-addr", "", "host:port serving /metrics and /status apart from /sync (empty: beside /sync)")
	fs.IntVar(&c.port, "port", 8544, "port to listen on, and the port registered with OpenHIM")
	fs.StringVar(&c.publicHost, "public-host", defaultHostname(), "host name OpenHIM calls this service on")
	fs.StringVar(&c.syncUsername, "sync-username", "", "Basic auth user OpenHIM must send to /sync (empty: no auth)")
	fs.StringVar(&c.syncPassword, "sync-password", "", "Basic auth password OpenHIM must send to /sync")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 30*time.Second, "how long a running sync may go on after a shutdown signal")
	fs.StringVar(&c.openHIMURL, "openhim-url", "", "OpenHIM core management API, e.g. https://openhim-core:8080 (empty: do not register)")
	fs.StringVar(&c.openHIMUsername, "openhim-username", "", "OpenHIM user (group admin)")
	fs.StringVar(&c.openHIMPassword, "openhim-password", "", "OpenHIM password")
	fs.StringVar(&c.openHIMAuth, "openhim-auth", "auto", "OpenHIM authentication: auto (basic, or token when core accepts only that), basic (core v7.1+) or token (core up to v7.0)")
	fs.StringVar(&c.openHIMCAFile, "openhim-ca-file", "", "PEM file of the CA that signed OpenHIM's certificate (not for core's default certificate, which has no SANs: pin that one)")
	fs.StringVar(&c.openHIMCertPin, "openhim-cert-pin", "", "SHA-256 (hex, colons allowed) of OpenHIM's certificate, instead of a CA; the one way to trust core's default certificate")
	fs.BoolVar(&c.openHIMConfigSecrets, "openhim-config-secrets", false, "also send the RapidPro token and OpenInfoMan password in the registration's config, where core stores them (off: the console shows them empty)")
	fs.BoolVar(&c.openHIMInsecure, "openhim-insecure", false, "accept any OpenHIM certificate (testing only)")
	fs.StringVar(&c.mediatorURN, "mediator-urn", "urn:mediator:mhero-sync-go", "URN this mediator registers under")
	fs.StringVar(&c.pollingSchedule, "polling-schedule", "*/10 * * * *", "cron schedule of the polling channel registered as default")
	fs.DurationVar(&c.channelTimeout, "channel-timeout", time.Hour, "how long OpenHIM waits for /sync (at most 1h)")
	fs.DurationVar(&c.heartbeatInterval, "heartbeat-interval", 10*time.Second, "time between heartbeats to OpenHIM")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
}

// targetNames are the targeting fields --field-label names, in the order
// map and the README list them.
var targetNames = []string{mediator.TargetCadre, mediator.TargetFacility, mediator.TargetFacilityID, mediator.TargetDistrict, mediator.TargetSpecialty}

// fieldLabels is --field-label: name=Label pairs, repeated or separated by
// commas (a label cannot hold one), into the targeting field specs. Only
// the label is set: RapidPro derives the key from it.
type fieldLabels struct {
	fields *map[string]mediator.FieldSpec
}

func (f fieldLabels) String() string {
	if f.fields == nil {
		return ""
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(*f.fields)) {
		parts = append(parts, name+"="+(*f.fields)[name].Label)
	}
	return strings.Join(parts, ",")
}

func (f fieldLabels) Set(v string) error {
	for pair := range strings.SplitSeq(v, ",") {
		name, label, ok := strings.Cut(pair, "=")
		name, label = strings.TrimSpace(name), strings.TrimSpace(label)
		switch {
		case !ok || label == "":
			return fmt.Errorf("%q is not name=Label", strings.TrimSpace(pair))
		case !slices.Contains(targetNames, name):
			return fmt.Errorf("%q is not a targeting field: %s", name, strings.Join(targetNames, ", "))
		}
		if *f.fields == nil {
			*f.fields = map[string]mediator.FieldSpec{}
		}
		(*f.fields)[name] = mediator.FieldSpec{Label: label}
	}
	return nil
}

// hours is a whole number of hours, given as one ("24") or as a duration
// ("24h", "168h"). A duration that is not whole hours is refused rather
// than rounded: the schedule an operator reads back is the one given.
type hours struct{ h *int }

func (h hours) String() string {
	if h.h == nil {
		return ""
	}
	return strconv.Itoa(*h.h) + "h"
}

func (h hours) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.Atoi(v); err == nil {
		*h.h = n
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is neither hours (24) nor a duration (24h)", v)
	}
	if d%time.Hour != 0 {
		return fmt.Errorf("%s is not a whole number of hours", d)
	}
	*h.h = int(d / time.Hour)
	return nil
}

// targetingFlags are the flags that shape how a provider resolves to its
// targeting fields, for serve, sync, plan and map alike.
func targetingFlags(fs *flag.FlagSet, t *mediator.TargetingSettings, cadreNamesFile *string) {
	fs.StringVar(&t.CadreScheme, "cadre-scheme", "", "coding scheme of the provider codedType that is the cadre (empty: the first codedType)")
	fs.IntVar(&t.DistrictLevel, "district-level", mediator.DefaultDistrictLevel, "organization level whose name is the district (1 is the root, the country)")
	fs.StringVar(&t.DistrictCode, "district-code", "", "organization codedType code that marks a district, instead of --district-level")
	fs.Var(fieldLabels{&t.Fields}, "field-label", "RapidPro label of a targeting field, as `name=Label` (names: "+strings.Join(targetNames, ", ")+"); repeat or separate with commas")
	fs.StringVar(cadreNamesFile, "cadre-names", "", "SVS value set file naming the cadre codes, for registries whose providers carry codes only")
}

// cadreNames reads the --cadre-names value set, if one was given.
func (c *config) cadreNames() (map[string]string, error) {
	return readCadreNames(c.cadreNamesFile)
}

func readCadreNames(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cadre-names: %w", err)
	}
	defer f.Close()
	names, err := csd.DecodeValueSet(f)
	if err != nil {
		return nil, fmt.Errorf("cadre-names %s: %w", path, err)
	}
	return names, nil
}

func defaultHostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

func (c *config) check() error {
	c.settings.RapidPro.Country = strings.ToUpper(strings.TrimSpace(c.settings.RapidPro.Country))
	if err := c.checkNumbers(); err != nil {
		return err
	}
	if err := c.settings.Validate(); err != nil {
		return err
	}
	if c.openHIMURL != "" {
		if c.openHIMUsername == "" || c.openHIMPassword == "" {
			return fmt.Errorf("openhim-username and openhim-password are required with openhim-url")
		}
		if c.openHIMAuth != "auto" && c.openHIMAuth != "basic" && c.openHIMAuth != "token" {
			return fmt.Errorf("openhim-auth %q is not auto, basic or token", c.openHIMAuth)
		}
	}
	return nil
}

// checkNumbers refuses numeric flags out of range, naming each flag and its
// value: several of them would otherwise be taken silently as something else
// (a negative rate as no limit, a zero Retry-After cap as 60s).
func (c *config) checkNumbers() error {
	var problems []string
	need := func(ok bool, name string, value any, rule string) {
		if !ok {
			problems = append(problems, fmt.Sprintf("--%s %v: %s", name, value, rule))
		}
	}
	need(c.settings.OpenInfoMan.PageSize >= 1, "oim-page-size", c.settings.OpenInfoMan.PageSize, "must be at least 1")
	need(c.rapidProRate >= 0, "rapidpro-rate", c.rapidProRate, "must be 0 (no client-side limit) or more")
	need(c.writeConcurrency >= 1 && c.writeConcurrency <= maxWriteConcurrency, "write-concurrency", c.writeConcurrency, fmt.Sprintf("must be 1 to %d", maxWriteConcurrency))
	need(c.rapidProRetryAfterCap > 0, "rapidpro-retry-after-cap", c.rapidProRetryAfterCap, "must be more than 0")
	need(c.lookupThreshold >= 0, "lookup-threshold", c.lookupThreshold, "must be 0 or more")
	need(c.syncTimeout > 0, "sync-timeout", c.syncTimeout, "must be more than 0")
	need(c.watermarkMargin >= 0, "watermark-margin", c.watermarkMargin, "must be 0 or more")
	need(c.port >= 1 && c.port <= 65535, "port", c.port, "is not a TCP port")
	need(c.shutdownGrace >= 0, "shutdown-grace", c.shutdownGrace, "must be 0 or more")
	need(c.channelTimeout > 0 && c.channelTimeout <= time.Hour, "channel-timeout", c.channelTimeout, "must be more than 0 and at most 1h")
	need(c.heartbeatInterval > 0, "heartbeat-interval", c.heartbeatInterval, "must be more than 0")
	need(c.settings.Targeting.DistrictLevel >= 1, "district-level", c.settings.Targeting.DistrictLevel, "must be at least 1 (the root)")
	// A year bounds it well before the hours overflow a time.Duration.
	every := c.settings.Reconcile.EveryHours
	need(every >= 1 && every <= 8760, "reconcile-every", hours{&every}, "must be at least 1h and at most 8760h (a year)")
	share := c.settings.Reconcile.MaxRetireShare
	need(share > 0 && share <= 1, "max-retire-share", share, "must be more than 0 and at most 1")
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func (c *config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("log-level %q: %w", c.logLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format %q is not text or json", c.logFormat)
}
