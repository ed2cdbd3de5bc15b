package mediator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nyaruka/gocommon/i18n"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// phoneCacheSize bounds the numbers a run remembers normalised: enough for
// the phones that many workers share (a clinic's, a district office's),
// a few hundred kilobytes whatever the registry's size.
const phoneCacheSize = 4096

// ErrRunInProgress answers a trigger that arrives while a run is going on.
var ErrRunInProgress = errors.New("a sync run is already in progress")

// ErrShutdown is the cause of a run's context when the service's shutdown
// cut it: the run is reported as cut, not as failed.
var ErrShutdown = errors.New("the service shut down")

// Options are the Syncer's fixed wiring, set once at start.
type Options struct {
	State   *State
	Metrics *Metrics
	Logger  *slog.Logger
	// HTTP clients for each upstream; the caller instruments their transports.
	OpenInfoManHTTP *http.Client
	RapidProHTTP    *http.Client
	// RapidProRatePerHour is the client-side budget per RapidPro rate scope.
	RapidProRatePerHour int
	// RapidProRetryAfterCap is the longest Retry-After waited on inside a run;
	// a longer one defers the rest of the run to the next.
	RapidProRetryAfterCap time.Duration
	// LookupThreshold: a run with more providers to match than this reads the
	// whole managed group once; a smaller one looks contacts up one by one,
	// which costs fewer requests from the shared hourly budget.
	LookupThreshold int
	// BootstrapMaxAge is how long the cached workspace, group and fields
	// are trusted before a run with writes to do reads them again.
	BootstrapMaxAge time.Duration
	// MaxConsecutiveFailures transient RapidPro failures in a row (5xx, no
	// answer) stop the run and leave the rest pending: RapidPro is down.
	MaxConsecutiveFailures int
	// CadreNames maps cadre codes to display names, for registries whose
	// provider codedTypes carry codes only (an SVS value set).
	CadreNames map[string]string
	// ChunkSize bounds the changed providers a run holds mapped at once:
	// the active ones a pull maps beyond it wait in a spill file beside the
	// state, and are written in chunks of that size after the first, so a
	// national first sync holds a chunk, not the registry. Zero means 5,000.
	ChunkSize int
	// MaxPending bounds the work left pending by earlier runs that a run
	// takes on (the first in key order); the rest waits in the state. A
	// national first sync at RapidPro's default rate leaves most of the
	// registry pending for a day of runs, each able to write a few
	// thousand. Zero means 10,000.
	MaxPending int
	// WriteConcurrency is how many writes may wait on RapidPro at once
	// (within its rate budget): a self-hosted RapidPro with no limit or a
	// raised one is synced that many times as fast when latency dominates.
	// Writes for the same provider, phone or contact stay in order. Zero
	// or one writes one at a time. A run that stops (MaxConsecutiveFailures,
	// a 403, its deadline) lets the writes already in flight finish: up to
	// WriteConcurrency-1 more requests than one at a time would send.
	WriteConcurrency int
	// WatermarkMargin is taken off the last run's start when asking for
	// changed providers, against clock skew between this host and the registry.
	WatermarkMargin time.Duration
	Now             func() time.Time
}

// Syncer runs sync runs, one at a time.
type Syncer struct {
	opts     Options
	settings atomic.Pointer[Settings]
	running  sync.Mutex

	// The RapidPro client is kept across runs so its rate limiter remembers
	// what earlier runs spent; it is rebuilt when its settings change.
	rpMu       sync.Mutex
	rpSettings RapidProSettings
	rpClient   *rapidpro.Client

	// For the operator's view: the last runs and the one going on.
	history  history
	progress atomic.Pointer[progressMeter]
}

// NewSyncer checks the settings and returns a Syncer ready to run.
func NewSyncer(settings Settings, opts Options) (*Syncer, error) {
	if opts.State == nil {
		return nil, errors.New("mediator: a state store is required")
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LookupThreshold < 0 {
		opts.LookupThreshold = 100
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BootstrapMaxAge <= 0 {
		opts.BootstrapMaxAge = 6 * time.Hour
	}
	if opts.MaxConsecutiveFailures <= 0 {
		opts.MaxConsecutiveFailures = 5
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 10_000
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 5_000
	}
	s := &Syncer{opts: opts}
	if err := s.SetSettings(settings); err != nil {
		return nil, err
	}
	// A restart is not a stale sync: the gauge starts from the state.
	if wm, err := opts.State.Watermark(); err == nil {
		opts.Metrics.SeedLastSuccess(wm)
	}
	return s, nil
}

// Settings returns the settings the next run will use.
func (s *Syncer) Settings() Settings { return *s.settings.Load() }

// SetSettings replaces the settings for the next run; a run under way keeps
// the ones it started with.
func (s *Syncer) SetSettings(next Settings) error {
	if err := next.Validate(); err != nil {
		return err
	}
	s.settings.Store(&next)
	return nil
}

// ApplyConsoleConfig lays a config object from the OpenHIM console over the
// current settings and keeps it in the state, so that it applies from the
// start after a restart. It returns the names of the settings it changed
// (never their values: some are secrets).
func (s *Syncer) ApplyConsoleConfig(raw []byte) ([]string, error) {
	current := s.Settings()
	next, err := current.WithConsoleConfig(raw)
	if err != nil {
		return nil, err
	}
	s.settings.Store(&next)
	changed := current.changedKeys(next)
	if stored, err := s.opts.State.ConsoleConfig(); err != nil || !bytes.Equal(stored, raw) {
		if err := errors.Join(err, s.opts.State.SetConsoleConfig(raw)); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// ApplyStoredConsoleConfig applies the console config the state kept from
// an earlier run of the service, if any, and tells whether there was one.
func (s *Syncer) ApplyStoredConsoleConfig() (bool, error) {
	raw, err := s.opts.State.ConsoleConfig()
	if err != nil || raw == nil {
		return false, err
	}
	_, err = s.ApplyConsoleConfig(raw)
	return err == nil, err
}

// RunOptions say what kind of run a trigger asks for.
type RunOptions struct {
	// Full makes the run a full reconciliation whatever the schedule: the
	// whole registry is compared with the managed group, so the workers who
	// left it are retired.
	Full bool
	// DryRun reads everything a sync would read and reports what it would
	// do, per provider, writing nothing to RapidPro, OpenInfoMan or the
	// state.
	DryRun bool
	// ConfirmRetire lets a run retire more contacts than the circuit
	// breaker allows: an operator's confirmation that the registry is
	// right. It makes the run a full reconciliation.
	ConfirmRetire bool
}

// Run performs one sync run and reports it. The only error is
// ErrRunInProgress; everything that goes wrong inside a run is in the report.
func (s *Syncer) Run(ctx context.Context) (*Report, error) { return s.RunWith(ctx, RunOptions{}) }

// RunWith performs one run of the kind o asks for.
func (s *Syncer) RunWith(ctx context.Context, o RunOptions) (*Report, error) {
	if !s.running.TryLock() {
		return nil, ErrRunInProgress
	}
	defer s.running.Unlock()
	// A confirmation is given for what the whole registry shows, so the run
	// compares all of it with the group.
	o.Full = o.Full || o.ConfirmRetire
	meter := &progressMeter{started: s.opts.Now().UTC()}
	if dl, ok := ctx.Deadline(); ok {
		meter.deadline = dl
	}
	s.progress.Store(meter)
	defer s.progress.Store(nil)
	ctx = withMeter(ctx, meter)
	if o.DryRun {
		r := s.run(ctx, o)
		s.opts.Logger.Info("sync plan made", r.logAttrs()...)
		return r, nil
	}
	s.opts.Metrics.inProgress.Set(1)
	defer s.opts.Metrics.inProgress.Set(0)

	r := s.run(ctx, o)
	if errors.Is(context.Cause(ctx), ErrShutdown) {
		r.Cut = true
		r.StoppedBy = "the service shut down during the run; what it did not do is pending for the next run"
	}
	s.history.add(r)
	s.opts.Metrics.observe(r)
	s.opts.Logger.Info("sync run finished", r.logAttrs()...)
	return r, nil
}

func (s *Syncer) run(ctx context.Context, o RunOptions) *Report {
	settings := s.Settings()
	r := newReport(s.opts.Now().UTC())
	r.DryRun = o.DryRun
	r.meter = meterOf(ctx)
	defer func() { r.Finished = s.opts.Now().UTC() }()

	rp, err := s.rapidProClient(settings.RapidPro)
	if err != nil {
		r.abort("RapidPro setup", err)
		return r
	}
	setup := r.startPhase("RapidPro setup", http.MethodGet, settings.RapidPro.URL, "/api/v2/workspace.json", s.opts.Now)
	boot, err := s.setUp(ctx, rp, settings, setup, false, o.DryRun)
	if err != nil {
		setup.end(s.opts.Now, err, "")
		r.abort(setup.Name, err)
		return r
	}
	setup.end(s.opts.Now, nil, boot.summary())
	r.FieldProblems, r.Planned = boot.FieldProblems, boot.Planned

	fresh, err := s.checkTarget(settings, boot, r, o.DryRun)
	if err != nil {
		r.abort("state", err)
		return r
	}
	targeting := &Targeting{Settings: settings.Targeting, CadreNames: s.opts.CadreNames, off: boot.offFields()}
	mappingFP, remap, err := s.checkMapping(settings, boot, targeting, o.DryRun || fresh)
	if err != nil {
		r.abort("state", err)
		return r
	}
	marks, dirMarks, err := s.loadMarks(fresh, remap && o.DryRun)
	if err != nil {
		r.abort("state", err)
		return r
	}
	full := o.Full || s.opts.Now().Sub(dirMarks.reconciled) >= settings.Reconcile.every()
	r.Full = full
	targeting.Directory, err = s.pullDirectories(ctx, settings, dirMarks, r, !fresh && !(remap && o.DryRun), o.DryRun || fresh)
	if err != nil {
		r.abort("OpenInfoMan directories", err)
		return r
	}
	// A changed place changes what providers resolve to, although their
	// own records did not change: they are all mapped again.
	remapAll := full || remap || dirMarks.reresolve || r.DirectoryChanged
	if !marks.watermark.IsZero() && !remapAll {
		r.Since = marks.watermark.Add(-s.opts.WatermarkMargin)
	}
	var pending []Mapping
	pendingKeys := map[string]bool{}
	if !fresh {
		if pendingKeys, err = s.opts.State.PendingKeys(); err == nil {
			pending, err = s.opts.State.PendingFirst(s.opts.MaxPending)
		}
		if err != nil {
			r.abort("state", err)
			return r
		}
	}
	mapper := Mapper{Country: i18n.Country(boot.Country), Targeting: targeting, phones: newPhoneCache(phoneCacheSize)}
	in, err := s.intake(settings, mapper, mappingFP, pendingKeys, fresh, o.DryRun)
	if err != nil {
		r.abort("state", err)
		return r
	}
	defer func() { in.spill.close() }() // made by the pull, if it spills
	pulled, err := s.pull(ctx, settings, in, r)
	if err != nil {
		phase := "OpenInfoMan provider-search"
		if isStateError(err) {
			phase = "state"
		}
		r.abort(phase, err)
		return r
	}
	r.Targeting = targeting.Counts
	items, err := s.plan(pulled, pending, in, settings.InactivePolicy, full, fresh, r)
	if err != nil {
		r.abort("state", err)
		return r
	}
	// Leavers are found only against a complete picture of the registry.
	reconcile := full && r.PullIncomplete == ""

	work := needsRapidPro(items)
	reads := r.startPhase("RapidPro reads", http.MethodGet, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	idx := newIndex()
	var readErr error // one that stops the run: every provider with work is left pending
	scanning := false // this run reads the whole workspace
	if len(work) > 0 || reconcile {
		if s.opts.Now().Sub(boot.At) > s.opts.BootstrapMaxAge && !o.DryRun {
			// Only a run with work to do refreshes the cache, so an idle
			// run costs RapidPro nothing.
			boot, err = s.setUp(ctx, rp, settings, setup, true, false)
			if err != nil {
				reads.end(s.opts.Now, err, "")
				r.abort(setup.Name, err)
				return r
			}
		}
		before := rp.Sent()
		scanning = marks.scanned.IsZero()
		err = s.read(ctx, rp, boot, idx, work, readMode{scan: scanning, crashed: !marks.writing.IsZero(), group: reconcile, settled: in.settled})
		reads.Requests = int(rp.Sent() - before)
		if err != nil && !stopsRun(err) {
			reads.end(s.opts.Now, err, "")
			r.abort(reads.Name, err)
			return r
		}
		readErr = err
	}
	reads.end(s.opts.Now, readErr, fmt.Sprintf("%d providers to write, %d contacts found", len(work), len(idx.byUUID)+idx.unheld))
	if items, err = s.unsettle(items, idx, in.settled); err != nil {
		r.abort("state", err)
		return r
	}
	if reconcile && readErr == nil {
		items, err = s.addLeavers(items, idx, boot, settings.InactivePolicy, fresh, in)
		if err != nil {
			r.abort("state", err)
			return r
		}
	}
	if readErr == nil {
		if err := s.breaker(items, idx, boot, settings.InactivePolicy, targeting.keys(), settings.Reconcile, o.ConfirmRetire, reconcile, r); err != nil {
			r.abort("state", err)
			return r
		}
	}

	writes := r.startPhase("RapidPro writes", http.MethodPost, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	w := &writer{
		rp: rp, groupUUID: boot.GroupUUID, idx: idx, report: r, phase: writes, logger: s.opts.Logger,
		state: s.opts.State, progress: newProgress(), policy: settings.InactivePolicy,
		maxConsecutive: s.opts.MaxConsecutiveFailures, targetKeys: targeting.keys(),
		concurrency: s.opts.WriteConcurrency,
	}
	if w.rejected, err = s.opts.State.RejectedKeys(); err != nil {
		r.abort("state", err)
		return r
	}
	if o.DryRun {
		// A plan answers its writes itself, in the order a sync makes them.
		w.concurrency = 1
		w.rp, w.state = &dryRun{Client: rp, idx: idx, complete: scanning && readErr == nil}, nil
	}
	if readErr != nil {
		w.stop(readErr)
	}
	if !o.DryRun {
		if err := s.opts.State.SetWriting(r.Started); err != nil {
			r.abort("state", err)
			return r
		}
	}
	before, readBefore := rp.Sent(), reads.Requests
	r.meter.toWrite.Store(int64(len(items) + in.spill.len() - len(in.reload))) // read back: among the items
	if in.spill != nil {
		w.comesLater = in.comesLater
	}
	err = w.run(ctx, items)
	r.planLines(items)
	var confirmed []confirmed
	if settings.WriteBack.Enabled {
		confirmed = confirmedOf(items)
	}
	if err == nil && in.spill != nil {
		// The index forgets each chunk's contacts once it is written (a
		// later chunk's write that meets one finds it again by its phone).
		idx.forget(items)
		items = nil
		var chunks int
		chunks, err = s.writeSpilled(ctx, rp, boot, in, w, reads, readMode{crashed: !marks.writing.IsZero(), settled: in.settled}, full, settings.WriteBack.Enabled, &confirmed)
		if chunks > 0 {
			reads.Summary += fmt.Sprintf("; then %d more chunks of providers, each read as it was written", chunks)
		}
	}
	writes.Requests = int(rp.Sent()-before) - (reads.Requests - readBefore)
	if w.bootstrapStale && !o.DryRun {
		// A group or field went missing: the next run sets them up again.
		err = errors.Join(err, s.opts.State.setBootstrap(nil))
	}
	writes.end(s.opts.Now, err, r.writeSummary())
	if err != nil {
		r.abort("state", err)
		return r
	}
	in.settled.count(r)
	if o.DryRun {
		// What stands in the state counts as for a sync, so that the plan's
		// status is the one the sync would report.
		if !fresh {
			if r.Pending, r.Rejected, err = s.opts.State.Outstanding(); err != nil {
				r.abort("state", err)
				return r
			}
		}
		r.settle()
		return r
	}
	if settings.WriteBack.Enabled {
		if err := s.writeBack(ctx, settings, confirmed, r); err != nil {
			r.abort("state", err)
			return r
		}
	}

	// Everything pulled is now done, rejected or stored as pending, so the
	// next run may start from here; pending work is retried from the state.
	r.Reconciled = reconcile && readErr == nil
	if err := s.finish(r, scanning && readErr == nil, r.Reconciled); err != nil {
		r.abort("state", err)
		return r
	}
	r.settle()
	return r
}

// finish records the watermark (and a completed workspace scan and
// reconciliation) and counts the work left pending.
func (s *Syncer) finish(r *Report, scannedNow, reconciledNow bool) error {
	if scannedNow {
		if err := s.opts.State.SetScanned(r.Started); err != nil {
			return err
		}
	}
	if r.PullIncomplete == "" {
		if err := s.opts.State.SetWatermark(r.Started); err != nil {
			return err
		}
		r.Watermark = r.Started
		if r.Since.IsZero() {
			// Every provider was mapped against the current directories.
			if err := s.opts.State.Reconciled(r.Started, reconciledNow); err != nil {
				return err
			}
		}
	}
	if err := s.opts.State.SetWriting(time.Time{}); err != nil {
		return err
	}
	var err error
	r.Pending, r.Rejected, err = s.opts.State.Outstanding()
	return err
}

func (s *Syncer) rapidProClient(settings RapidProSettings) (*rapidpro.Client, error) {
	s.rpMu.Lock()
	defer s.rpMu.Unlock()
	if s.rpClient != nil && s.rpSettings == settings {
		return s.rpClient, nil
	}
	c, err := rapidpro.New(rapidpro.Config{
		BaseURL:       settings.URL,
		Token:         settings.Token,
		HTTPClient:    s.opts.RapidProHTTP,
		RetryAfterCap: s.opts.RapidProRetryAfterCap,
		RatePerHour:   s.opts.RapidProRatePerHour,
		Now:           s.opts.Now,
		Logger:        s.opts.Logger,
		OnWait:        s.opts.Metrics.ObserveThrottleWait,
		OnRetryAfter:  s.opts.Metrics.ObserveRetryAfter,
	})
	if err != nil {
		return nil, err
	}
	s.rpClient, s.rpSettings = c, settings
	return c, nil
}

// checkTarget starts the state over when the run's target is not the one
// the state was built for: links and digests of another workspace, group or
// policy would skip work the new target needs, and the watermark would hide
// every worker who did not change since. A dry run changes nothing and
// plans as if the state were empty (fresh).
func (s *Syncer) checkTarget(settings Settings, boot bootstrap, r *Report, dry bool) (fresh bool, err error) {
	fp := digestOf("target", settings.RapidPro.URL, boot.WorkspaceUUID, boot.GroupUUID,
		settings.OpenInfoMan.URL, settings.OpenInfoMan.Document, settings.InactivePolicy)
	stored, err := s.opts.State.Fingerprint()
	if err != nil || stored == fp {
		return false, err
	}
	if stored != "" {
		r.Retargeted = true
		s.opts.Logger.Warn("the sync target changed (RapidPro workspace or group, OpenInfoMan document, or inactive policy): pulling every provider again")
	}
	if dry {
		return true, nil
	}
	return false, s.opts.State.Retarget(fp)
}

// intake sets up how the run takes in pulled providers. A plan maps every
// provider, since it lists each one.
func (s *Syncer) intake(settings Settings, mapper Mapper, mappingFP string, pending map[string]bool, fresh, dry bool) (*intake, error) {
	in := newIntake()
	in.state, in.mapper, in.pending = s.opts.State, mapper, pending
	in.context = rawContext(mappingFP, settings.InactivePolicy, mapper.Targeting.Directory)
	if fresh {
		in.state = nil
	}
	if !dry {
		in.settled = newSettledSet(settings.InactivePolicy)
		in.spillDir, in.maxHeld = s.opts.State.dir(), s.opts.ChunkSize
	}
	if settings.WriteBack.Enabled {
		want := settings.otherID("")
		in.writeBack = &want
		if !fresh {
			var err error
			if in.writeBacks, err = s.opts.State.writeBacks(); err != nil {
				return nil, err
			}
		}
	}
	return in, nil
}

// pull reads the changed providers and maps them, in registry order,
// leaving out those whose records are unchanged (see intake).
func (s *Syncer) pull(ctx context.Context, settings Settings, in *intake, r *Report) ([]*item, error) {
	oim := settings.OpenInfoMan
	ph := r.startPhase("OpenInfoMan provider-search", http.MethodPost, oim.URL,
		"/CSD/csr/"+oim.Document+"/careServicesRequest/"+csd.ProviderSearch, s.opts.Now)
	var items []*item
	pulled := 0
	stats, err := s.oimClient(oim, oim.Document).Providers(ctx, csd.ProviderQuery{UpdatedSince: r.Since}, func(p *csd.Provider) error {
		r.meter.providers.Add(1)
		pulled++
		it, err := in.take(p)
		if it != nil {
			r.Mapped++
			items = append(items, it)
		}
		return err
	})
	ph.Requests = stats.Requests
	since := "full pull"
	if !r.Since.IsZero() {
		since = "updated since " + r.Since.Format(time.RFC3339)
	}
	summary := fmt.Sprintf("%d providers in %d pages (%s)", stats.Providers, stats.Pages, since)
	if stats.Stop != csd.StopShortPage {
		summary += "; stopped: " + string(stats.Stop)
	}
	ph.end(s.opts.Now, err, summary)
	if err != nil {
		return nil, err
	}
	if !stats.Complete() {
		// OpenInfoMan ignored start: providers past the first page may be
		// missing, so this run must not move the watermark past them.
		r.PullIncomplete = "OpenInfoMan " + string(stats.Stop) + ": providers past the first page may be missing; the watermark was kept"
	}
	r.Providers = pulled
	r.Mapped += in.spill.len()
	back, err := in.reloaded()
	if err != nil {
		return nil, stateError{err}
	}
	return withReloaded(items, back), nil
}

// withReloaded puts each provider read back from the spill file before the
// copies of it pulled after it.
func withReloaded(pulled, back []*item) []*item {
	if len(back) == 0 {
		return pulled
	}
	byKey := map[string][]*item{}
	for _, it := range back {
		byKey[it.Key] = append(byKey[it.Key], it)
	}
	out := make([]*item, 0, len(pulled)+len(back))
	for _, it := range pulled {
		out = append(out, byKey[it.Key]...)
		delete(byKey, it.Key)
		out = append(out, it)
	}
	for _, it := range back { // none: each was pulled again after it was spilled
		if byKey[it.Key] != nil {
			out = append(out, it)
		}
	}
	return out
}

// writeSpilled decides, reads and writes the spilled providers chunk by
// chunk after the first chunk, with the run's index and writer, and tells
// how many chunks there were. Once the writer has stopped, each chunk is
// read back only to be left pending. A read that fails stops the writes,
// as a failed write would: the earlier chunks' outcomes are recorded, and
// the rest is left pending.
func (s *Syncer) writeSpilled(ctx context.Context, rp *rapidpro.Client, boot bootstrap, in *intake, w *writer, reads *Phase, mode readMode, full, writeBack bool, confirmed *[]confirmed) (int, error) {
	for n := 0; ; n++ {
		chunk, err := in.nextChunk()
		if err != nil || len(chunk)+len(w.carriedOver) == 0 {
			return n, err
		}
		items, err := s.plan(chunk, nil, in, w.policy, full, false, w.report)
		if err != nil {
			return n, err
		}
		// A conflict carried from an earlier chunk goes last in the chunk
		// that writes the contact holding its phone, after that write.
		carried := w.carriedOver
		w.carriedOver = nil
		for _, it := range carried {
			if !w.carryOver(it) {
				items = append(items, it)
			}
		}
		if work := needsRapidPro(items); len(work) > 0 && w.stopped == nil && ctx.Err() == nil {
			before := rp.Sent()
			err := s.read(ctx, rp, boot, w.idx, work, mode)
			reads.Requests += int(rp.Sent() - before)
			if err != nil {
				w.stop(err)
			}
			if items, err = s.unsettle(items, w.idx, in.settled); err != nil {
				return n, err
			}
		}
		w.claimed = nil // contacts claimed by earlier chunks are settled
		if err := w.run(ctx, items); err != nil {
			return n, err
		}
		w.report.planLines(items)
		if writeBack {
			*confirmed = append(*confirmed, confirmedOf(items)...)
		}
		w.idx.forget(items)
	}
}

// plan puts the work a cut run left pending first (superseded by a newer
// pull of the same provider), rejects duplicate keys, and works out for each
// provider the contact it should have, so that a provider whose contact
// already is that costs no request. A full run tries standing rejects
// again; fresh plans as if the state were empty.
func (s *Syncer) plan(pulled []*item, pending []Mapping, in *intake, policy string, full, fresh bool, r *Report) ([]*item, error) {
	// A pending provider pulled again is done in its newer form (every
	// pulled item with its key, so that duplicates still meet); the others
	// go first. A pulled provider left pending by an earlier run, loaded in
	// this one or not, clears its pending entry once settled: else a later
	// run would write its older form back.
	items := make([]*item, 0, len(pending)+len(pulled))
	slices.SortFunc(pending, func(a, b Mapping) int { return strings.Compare(a.Key, b.Key) })
	for _, m := range pending {
		if !in.wasMapped(m.Key) {
			items = append(items, &item{Mapping: m, wasPending: true})
		}
	}
	for _, it := range pulled {
		it.wasPending = in.pending[it.Key]
		items = append(items, it)
	}
	r.Retried += len(pending)

	// A pulled item came with its record.
	if err := s.records(items[:len(items)-len(pulled)], fresh); err != nil {
		return nil, err
	}
	rejectDuplicateKeys(items)
	for _, it := range items {
		it.retryRejected = full
		it.decide(policy)
	}
	return items, nil
}

// records gives each item what the state knows of its provider.
func (s *Syncer) records(items []*item, fresh bool) error {
	if fresh {
		return nil
	}
	keys := make([]string, 0, len(items))
	for _, it := range items {
		if it.Key != "" {
			keys = append(keys, it.Key)
		}
	}
	recs, err := s.opts.State.Records(keys)
	if err != nil {
		return err
	}
	for _, it := range items {
		it.rec = recs[it.Key]
	}
	return nil
}

// needsRapidPro lists the items whose contact may differ from what they
// should have.
func needsRapidPro(items []*item) []*item {
	var work []*item
	for _, it := range items {
		if it.action != actionNone {
			work = append(work, it)
		}
	}
	return work
}

// rejectDuplicateKeys rejects every provider whose key another provider with
// a different entity id also has: which of them owns the contact is for the
// registry to settle, never for a silent pick here. A key the state already
// holds for one entity id stays with it, whichever delta brings the other.
func rejectDuplicateKeys(items []*item) {
	ids := map[string]map[string]bool{}
	for _, it := range items {
		if it.Key == "" {
			continue
		}
		if ids[it.Key] == nil {
			ids[it.Key] = map[string]bool{}
		}
		ids[it.Key][strings.TrimSpace(it.EntityID)] = true
	}
	for _, it := range items {
		id := strings.TrimSpace(it.EntityID)
		switch owner := it.rec.EntityID; {
		case it.Key == "" || it.Left: // a leaver's id is its contact's lower-cased globalid
		case owner != "" && owner != id:
			it.failed = ReasonDuplicateGlobalID
			it.failedDetail = fmt.Sprintf("the key %s already belongs to the registry's %s", it.Key, owner)
		case owner == "" && len(ids[it.Key]) > 1:
			it.failed = ReasonDuplicateGlobalID
			it.failedDetail = "another provider has the same globalid " + it.Key
		}
	}
}
