package openhim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults for a Heartbeater. Core's docs ask for a beat at least every 30 s
// and suggest 10 s.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultConfigEvery       = 30
)

// Heartbeater keeps the mediator registered and alive in core and delivers
// console config (docs/protocols.md, Heartbeat). Set the exported fields,
// then call Run once.
type Heartbeater struct {
	Client   *Client
	Mediator Mediator
	// Interval between beats; 0 means DefaultHeartbeatInterval.
	Interval time.Duration
	// ConfigEvery asks for config on every n-th beat, besides the first, as
	// insurance: core pushes a console change on exactly one beat, and a lost
	// reply loses it. 0 means DefaultConfigEvery.
	ConfigEvery int
	// OnConfig receives each config object core returns.
	OnConfig func(json.RawMessage)
	// OnError receives every failed registration or heartbeat.
	OnError func(error)
	// OnRegistered is called after each successful registration.
	OnRegistered func()
	// Logger gets failures and state changes, never credentials; nil means
	// slog.Default().
	Logger *slog.Logger
	// Tick, if set, replaces the Interval ticker: each receive starts a beat.
	Tick <-chan time.Time
	// Backoff gives the wait before registration retry number attempt
	// (1-based); nil means ExponentialBackoff(time.Second, time.Minute).
	Backoff func(attempt int) time.Duration
	// AuthBackoff replaces Backoff after core refused the credentials or the
	// user's rights (401, 403; see IsRefused), which only a person can fix:
	// the wait before retry number attempt of a registration, and the pause
	// after refused heartbeat number attempt in a row, on top of the
	// interval. nil means DefaultAuthBackoff.
	AuthBackoff func(attempt int) time.Duration
}

// DefaultAuthBackoff waits a minute, then doubles up to 15 minutes: a
// refused service retries a few times an hour rather than storming core's
// log (and its failed-login audit) every few seconds.
var DefaultAuthBackoff = ExponentialBackoff(time.Minute, 15*time.Minute)

// ExponentialBackoff doubles from base up to limit, with jitter over the
// upper half so that many mediators restarting together do not retry in step.
func ExponentialBackoff(base, limit time.Duration) func(attempt int) time.Duration {
	return func(attempt int) time.Duration {
		d := min(base, limit)
		for i := 1; i < attempt && d < limit; i++ {
			d = min(d, limit/2) * 2 // the min avoids overflow
		}
		half := d / 2
		if half <= 0 {
			return d
		}
		return half + rand.N(d-half+1)
	}
}

// Run registers the mediator, retrying with backoff while core is down, then
// beats until ctx ends: the first beat at once, with config requested. When
// core no longer knows the urn it registers again and carries on. It returns
// the registration's validation error at once, since retrying cannot fix it,
// and otherwise ctx.Err().
func (h *Heartbeater) Run(ctx context.Context) error {
	if err := h.Mediator.Validate(); err != nil {
		return err
	}
	interval, configEvery := h.Interval, h.ConfigEvery
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	if configEvery <= 0 {
		configEvery = DefaultConfigEvery
	}
	tick := h.Tick
	if tick == nil {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	log := h.logger()
	start := time.Now()

	if err := h.register(ctx); err != nil {
		return err
	}
	needConfig := true
	refusals := 0 // heartbeats refused in a row
	for beat := 0; ; beat++ {
		if beat%configEvery == 0 {
			needConfig = true
		}
		cfg, err := h.Client.Heartbeat(ctx, h.Mediator.URN, time.Since(start), needConfig)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnknownMediator):
			h.fail(err)
			log.Warn("openhim core no longer knows the mediator; registering again", "urn", h.Mediator.URN)
			if err := h.register(ctx); err != nil {
				return err
			}
			// Core now holds the registered defaults; fetch the config again.
			needConfig = true
		case IsRefused(err):
			h.fail(err)
			refusals++
			wait := h.authBackoff()(refusals)
			log.Error("openhim heartbeat refused; pausing heartbeats", "urn", h.Mediator.URN, "refusals", refusals, "pause", wait, "error", err)
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		case err != nil:
			h.fail(err)
			log.Warn("openhim heartbeat failed", "urn", h.Mediator.URN, "error", err)
		default:
			needConfig = false
			refusals = 0
			if cfg != nil {
				log.Info("openhim config received", "urn", h.Mediator.URN, "bytes", len(cfg))
				if h.OnConfig != nil {
					h.OnConfig(cfg)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		}
	}
}

// register retries until core accepts the registration or ctx ends.
func (h *Heartbeater) register(ctx context.Context) error {
	backoff := h.Backoff
	if backoff == nil {
		backoff = ExponentialBackoff(time.Second, time.Minute)
	}
	log := h.logger()
	refusals := 0
	for attempt := 1; ; attempt++ {
		err := h.Client.Register(ctx, h.Mediator)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			log.Info("openhim mediator registered", "urn", h.Mediator.URN, "version", h.Mediator.Version, "attempts", attempt)
			if h.OnRegistered != nil {
				h.OnRegistered()
			}
			return nil
		}
		h.fail(err)
		if IsRefused(err) {
			refusals++
			wait := h.authBackoff()(refusals)
			log.Error("openhim registration refused; retrying", "urn", h.Mediator.URN, "attempt", attempt, "retry_in", wait, "error", err)
			if err := sleep(ctx, wait); err != nil {
				return err
			}
			continue
		}
		wait := backoff(attempt)
		log.Warn("openhim registration failed; retrying", "urn", h.Mediator.URN, "attempt", attempt, "retry_in", wait, "error", err)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (h *Heartbeater) fail(err error) {
	if h.OnError != nil {
		h.OnError(err)
	}
}

func (h *Heartbeater) authBackoff() func(attempt int) time.Duration {
	if h.AuthBackoff != nil {
		return h.AuthBackoff
	}
	return DefaultAuthBackoff
}

func (h *Heartbeater) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
