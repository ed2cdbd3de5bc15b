package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/mediator"
)

// version is the version registered with OpenHIM; raise it whenever the
// registration (endpoints, channel, configDefs) changes, or a core that
// already knows the service keeps the old one.
const version = "1.0.0"

// config is everything serve, sync and demo are configured with.
type config struct {
	settings mediator.Settings

	rapidProRate          int
	rapidProRetryAfterCap time.Duration
	lookupThreshold       int
	stateFile             string
	syncTimeout           time.Duration
	watermarkMargin       time.Duration

	bind                string
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
	fs.IntVar(&c.rapidProRate, "rapidpro-rate", 3600, "RapidPro requests per hour per rate scope (0: no client-side limit)")
	fs.DurationVar(&c.rapidProRetryAfterCap, "rapidpro-retry-after-cap", time.Minute, "longest RapidPro Retry-After waited on in a run; longer defers the rest to the next run")
	fs.IntVar(&c.lookupThreshold, "lookup-threshold", 100, "changed providers above which a run reads the whole group instead of looking contacts up one by one")
	fs.StringVar(&c.stateFile, "state-file", "mhero-state.db", "file keeping the watermark and contact links between runs")
	fs.DurationVar(&c.syncTimeout, "sync-timeout", 55*time.Minute, "longest a sync run may take")
	fs.DurationVar(&c.watermarkMargin, "watermark-margin", 5*time.Minute, "overlap between runs, against clock skew with OpenInfoMan")

	fs.StringVar(&c.bind, "bind", "", "address to listen on (empty: all interfaces)")
	fs.IntVar(&c.port, "port", 8544, "port to listen on, and the port registered with OpenHIM")
	fs.StringVar(&c.publicHost, "public-host", defaultHostname(), "host name OpenHIM calls this service on")
	fs.StringVar(&c.syncUsername, "sync-username", "", "Basic auth user OpenHIM must send to /sync (empty: no auth)")
	fs.StringVar(&c.syncPassword, "sync-password", "", "Basic auth password OpenHIM must send to /sync")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 30*time.Second, "how long a running sync may go on after a shutdown signal")
	fs.StringVar(&c.openHIMURL, "openhim-url", "", "OpenHIM core management API, e.g. https://openhim-core:8080 (empty: do not register)")
	fs.StringVar(&c.openHIMUsername, "openhim-username", "", "OpenHIM user (group admin)")
	fs.StringVar(&c.openHIMPassword, "openhim-password", "", "OpenHIM password")
	fs.StringVar(&c.openHIMAuth, "openhim-auth", "basic", "OpenHIM authentication: basic (core v7.1+) or token (older cores)")
	fs.StringVar(&c.openHIMCAFile, "openhim-ca-file", "", "PEM file of the CA that signed OpenHIM's certificate")
	fs.StringVar(&c.openHIMCertPin, "openhim-cert-pin", "", "SHA-256 (hex) of OpenHIM's certificate, instead of a CA")
	fs.BoolVar(&c.openHIMInsecure, "openhim-insecure", false, "accept any OpenHIM certificate (testing only)")
	fs.StringVar(&c.mediatorURN, "mediator-urn", "urn:mediator:mhero-sync-go", "URN this mediator registers under")
	fs.StringVar(&c.pollingSchedule, "polling-schedule", "*/10 * * * *", "cron schedule of the polling channel registered as default")
	fs.DurationVar(&c.channelTimeout, "channel-timeout", time.Hour, "how long OpenHIM waits for /sync (at most 1h)")
	fs.DurationVar(&c.heartbeatInterval, "heartbeat-interval", 10*time.Second, "time between heartbeats to OpenHIM")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
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
		if c.openHIMAuth != "basic" && c.openHIMAuth != "token" {
			return fmt.Errorf("openhim-auth %q is not basic or token", c.openHIMAuth)
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
	need(c.rapidProRetryAfterCap > 0, "rapidpro-retry-after-cap", c.rapidProRetryAfterCap, "must be more than 0")
	need(c.lookupThreshold >= 0, "lookup-threshold", c.lookupThreshold, "must be 0 or more")
	need(c.syncTimeout > 0, "sync-timeout", c.syncTimeout, "must be more than 0")
	need(c.watermarkMargin >= 0, "watermark-margin", c.watermarkMargin, "must be 0 or more")
	need(c.port >= 1 && c.port <= 65535, "port", c.port, "is not a TCP port")
	need(c.shutdownGrace >= 0, "shutdown-grace", c.shutdownGrace, "must be 0 or more")
	need(c.channelTimeout > 0 && c.channelTimeout <= time.Hour, "channel-timeout", c.channelTimeout, "must be more than 0 and at most 1h")
	need(c.heartbeatInterval > 0, "heartbeat-interval", c.heartbeatInterval, "must be more than 0")
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
