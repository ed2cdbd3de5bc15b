package mediator

import (
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

// ErrRunInProgress answers a trigger that arrives while a run is going on.
var ErrRunInProgress = errors.New("a sync run is already in progress")

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
	s := &Syncer{opts: opts}
	if err := s.SetSettings(settings); err != nil {
		return nil, err
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
// current settings.
func (s *Syncer) ApplyConsoleConfig(raw []byte) error {
	next, err := s.Settings().WithConsoleConfig(raw)
	if err != nil {
		return err
	}
	s.settings.Store(&next)
	return nil
}

// Run performs one sync run and reports it. The only error is
// ErrRunInProgress; everything that goes wrong inside a run is in the report.
func (s *Syncer) Run(ctx context.Context) (*Report, error) {
	if !s.running.TryLock() {
		return nil, ErrRunInProgress
	}
	defer s.running.Unlock()
	s.opts.Metrics.inProgress.Set(1)
	defer s.opts.Metrics.inProgress.Set(0)

	r := s.run(ctx)
	s.opts.Metrics.observe(r)
	s.opts.Logger.Info("sync run finished", r.logAttrs()...)
	return r, nil
}

func (s *Syncer) run(ctx context.Context) *Report {
	settings := s.Settings()
	r := newReport(s.opts.Now().UTC())
	defer func() { r.Finished = s.opts.Now().UTC() }()

	rp, err := s.rapidProClient(settings.RapidPro)
	if err != nil {
		r.abort("RapidPro setup", err)
		return r
	}
	setup := r.startPhase("RapidPro setup", http.MethodGet, settings.RapidPro.URL, "/api/v2/workspace.json", s.opts.Now)
	boot, err := s.setUp(ctx, rp, settings.RapidPro, setup, false)
	if err != nil {
		setup.end(s.opts.Now, err, "")
		r.abort(setup.Name, err)
		return r
	}
	setup.end(s.opts.Now, nil, boot.summary())

	if err := s.checkTarget(settings, boot, r); err != nil {
		r.abort("state", err)
		return r
	}
	marks, err := s.opts.State.marks()
	if err != nil {
		r.abort("state", err)
		return r
	}
	if !marks.watermark.IsZero() {
		r.Since = marks.watermark.Add(-s.opts.WatermarkMargin)
	}
	pulled, err := s.pull(ctx, settings.OpenInfoMan, Mapper{Country: i18n.Country(boot.Country)}, r)
	if err != nil {
		r.abort("OpenInfoMan provider-search", err)
		return r
	}
	items, err := s.plan(pulled, settings.InactivePolicy, r)
	if err != nil {
		r.abort("state", err)
		return r
	}

	work := needsRapidPro(items)
	reads := r.startPhase("RapidPro reads", http.MethodGet, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	idx := newIndex()
	var readErr error // one that stops the run: every provider with work is left pending
	scanning := false // this run reads the whole workspace
	if len(work) > 0 {
		if s.opts.Now().Sub(boot.At) > s.opts.BootstrapMaxAge {
			// Only a run with work to do refreshes the cache, so an idle
			// run costs RapidPro nothing.
			boot, err = s.setUp(ctx, rp, settings.RapidPro, setup, true)
			if err != nil {
				reads.end(s.opts.Now, err, "")
				r.abort(setup.Name, err)
				return r
			}
		}
		before := rp.Sent()
		scanning = marks.scanned.IsZero()
		idx, err = s.read(ctx, rp, boot, work, scanning, !marks.writing.IsZero())
		reads.Requests = int(rp.Sent() - before)
		if err != nil && !stopsRun(err) {
			reads.end(s.opts.Now, err, "")
			r.abort(reads.Name, err)
			return r
		}
		readErr = err
	}
	reads.end(s.opts.Now, readErr, fmt.Sprintf("%d providers to write, %d contacts found", len(work), len(idx.byUUID)))

	writes := r.startPhase("RapidPro writes", http.MethodPost, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	w := &writer{
		rp: rp, groupUUID: boot.GroupUUID, idx: idx, report: r, phase: writes, logger: s.opts.Logger,
		state: s.opts.State, progress: newProgress(), policy: settings.InactivePolicy,
		maxConsecutive: s.opts.MaxConsecutiveFailures,
	}
	if readErr != nil {
		w.stop(readErr)
	}
	if err := s.opts.State.SetWriting(r.Started); err != nil {
		r.abort("state", err)
		return r
	}
	before := rp.Sent()
	err = w.run(ctx, items)
	writes.Requests = int(rp.Sent() - before)
	if w.bootstrapStale {
		// A group or field went missing: the next run sets them up again.
		err = errors.Join(err, s.opts.State.setBootstrap(nil))
	}
	writes.end(s.opts.Now, err, r.writeSummary())
	if err != nil {
		r.abort("state", err)
		return r
	}

	// Everything pulled is now done, rejected or stored as pending, so the
	// next run may start from here; pending work is retried from the state.
	if err := s.finish(r, scanning && readErr == nil); err != nil {
		r.abort("state", err)
		return r
	}
	r.settle()
	return r
}

// finish records the watermark (and a completed workspace scan) and counts
// the work left pending.
func (s *Syncer) finish(r *Report, scannedNow bool) error {
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
	})
	if err != nil {
		return nil, err
	}
	s.rpClient, s.rpSettings = c, settings
	return c, nil
}

// bootstrapKey identifies the settings a bootstrap was made for. The token
// is in it because another token may mean another workspace; only a digest
// of it reaches the state file.
func bootstrapKey(settings RapidProSettings) string {
	return digestOf("bootstrap", settings.URL, settings.Token, settings.Group, settings.Country)
}

func (b bootstrap) summary() string {
	return fmt.Sprintf("workspace %s, group %q, country %q, set up %s", b.WorkspaceUUID, b.GroupName, b.Country, b.At.Format(time.RFC3339))
}

// setUp returns the workspace, the managed group and its country, from the
// state's cache when it was made for these settings, else by reading the
// workspace and making sure the group and the fields this service writes
// exist (RapidPro never creates them on the fly). refresh skips the cache.
func (s *Syncer) setUp(ctx context.Context, rp *rapidpro.Client, settings RapidProSettings, ph *Phase, refresh bool) (bootstrap, error) {
	key := bootstrapKey(settings)
	cached, found, err := s.opts.State.bootstrap()
	if err != nil {
		return bootstrap{}, err
	}
	if found && cached.Key == key && !refresh {
		return cached, nil
	}
	before := rp.Sent()
	defer func() { ph.Requests += int(rp.Sent() - before) }()
	ws, err := rp.Workspace(ctx)
	if err != nil {
		return bootstrap{}, fmt.Errorf("workspace: %w", err)
	}
	b := bootstrap{Key: key, WorkspaceUUID: ws.UUID, Country: settings.Country, At: s.opts.Now().UTC()}
	if b.Country == "" {
		b.Country = strings.ToUpper(ws.Country)
	}
	group, err := rp.EnsureGroup(ctx, settings.Group)
	if err != nil {
		return bootstrap{}, fmt.Errorf("group %q: %w", settings.Group, err)
	}
	b.GroupUUID, b.GroupName, b.GroupCount = group.UUID, group.Name, group.Count
	fields, err := rp.Fields(ctx)
	if err != nil {
		return bootstrap{}, fmt.Errorf("fields: %w", err)
	}
	for _, name := range []string{FieldGlobalID} {
		if slices.ContainsFunc(fields, func(f rapidpro.Field) bool { return f.Key == rapidpro.FieldKey(name) }) {
			continue
		}
		if _, err := rp.CreateField(ctx, name, "text"); err != nil {
			return bootstrap{}, fmt.Errorf("field %q: %w", name, err)
		}
	}
	if err := s.opts.State.setBootstrap(&b); err != nil {
		return bootstrap{}, err
	}
	return b, nil
}

// checkTarget starts the state over when the run's target is not the one
// the state was built for: links and digests of another workspace, group or
// policy would skip work the new target needs, and the watermark would hide
// every worker who did not change since.
func (s *Syncer) checkTarget(settings Settings, boot bootstrap, r *Report) error {
	fp := digestOf("target", settings.RapidPro.URL, boot.WorkspaceUUID, boot.GroupUUID,
		settings.OpenInfoMan.URL, settings.OpenInfoMan.Document, settings.InactivePolicy)
	stored, err := s.opts.State.Fingerprint()
	if err != nil || stored == fp {
		return err
	}
	if stored != "" {
		r.Retargeted = true
		s.opts.Logger.Warn("the sync target changed (RapidPro workspace or group, OpenInfoMan document, or inactive policy): pulling every provider again")
	}
	return s.opts.State.Retarget(fp)
}

// pull reads the changed providers and maps them, in registry order.
func (s *Syncer) pull(ctx context.Context, settings OpenInfoManSettings, mapper Mapper, r *Report) ([]*item, error) {
	client := csd.Client{
		BaseURL:    settings.URL,
		Document:   settings.Document,
		Username:   settings.Username,
		Password:   settings.Password,
		PageSize:   settings.PageSize,
		HTTPClient: s.opts.OpenInfoManHTTP,
	}
	ph := r.startPhase("OpenInfoMan provider-search", http.MethodPost, settings.URL,
		"/CSD/csr/"+settings.Document+"/careServicesRequest/"+csd.ProviderSearch, s.opts.Now)
	var items []*item
	stats, err := client.Providers(ctx, csd.ProviderQuery{UpdatedSince: r.Since}, func(p *csd.Provider) error {
		items = append(items, &item{Mapping: mapper.Map(p)})
		return nil
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
	r.Providers = len(items)
	return items, nil
}

// plan puts the work a cut run left pending first (superseded by a newer
// pull of the same provider), rejects duplicate keys, and works out for each
// provider the contact it should have, so that a provider whose contact
// already is that costs no request.
func (s *Syncer) plan(pulled []*item, policy string, r *Report) ([]*item, error) {
	pending, err := s.opts.State.Pending()
	if err != nil {
		return nil, err
	}
	// A pending provider pulled again is done in its newer form (every
	// pulled item with its key, so that duplicates still meet); the others
	// go first.
	pulledKeys := map[string]bool{}
	for _, it := range pulled {
		if it.Key != "" {
			pulledKeys[it.Key] = true
		}
	}
	items := make([]*item, 0, len(pending)+len(pulled))
	wasPending := map[string]bool{}
	slices.SortFunc(pending, func(a, b Mapping) int { return strings.Compare(a.Key, b.Key) })
	for _, m := range pending {
		wasPending[m.Key] = true
		if !pulledKeys[m.Key] {
			items = append(items, &item{Mapping: m, wasPending: true})
		}
	}
	for _, it := range pulled {
		it.wasPending = wasPending[it.Key]
		items = append(items, it)
	}
	r.Retried = len(pending)

	keys := make([]string, 0, len(items))
	for _, it := range items {
		if it.Key != "" {
			keys = append(keys, it.Key)
		}
	}
	recs, err := s.opts.State.Records(keys)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		it.rec = recs[it.Key]
	}
	rejectDuplicateKeys(items)
	for _, it := range items {
		it.decide(policy)
	}
	return items, nil
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
		case it.Key == "":
		case owner != "" && owner != id:
			it.failed = ReasonDuplicateGlobalID
			it.failedDetail = fmt.Sprintf("the key %s already belongs to the registry's %s", it.Key, owner)
		case owner == "" && len(ids[it.Key]) > 1:
			it.failed = ReasonDuplicateGlobalID
			it.failedDetail = "another provider has the same globalid " + it.Key
		}
	}
}

// index holds what a run knows of RapidPro's contacts, one entry per
// contact however often it was fetched.
type index struct {
	byUUID map[string]*rapidpro.Contact
	byKey  map[string]*rapidpro.Contact
	byURN  map[string]*rapidpro.Contact
	// duplicates lists, by globalid, the contacts that share one: left by
	// earlier tools, they are for a person to merge, never for a silent pick.
	duplicates map[string][]string
}

func newIndex() *index {
	return &index{
		byUUID: map[string]*rapidpro.Contact{}, byKey: map[string]*rapidpro.Contact{},
		byURN: map[string]*rapidpro.Contact{}, duplicates: map[string][]string{},
	}
}

// add records c, replacing what was known of the same contact.
func (ix *index) add(c *rapidpro.Contact) {
	if old := ix.byUUID[c.UUID]; old != nil {
		ix.remove(old)
	}
	ix.byUUID[c.UUID] = c
	if k := globalID(c); k != "" {
		if other := ix.byKey[k]; other != nil {
			if !slices.Contains(ix.duplicates[k], other.UUID) {
				ix.duplicates[k] = append(ix.duplicates[k], other.UUID)
			}
			ix.duplicates[k] = append(ix.duplicates[k], c.UUID)
		}
		ix.byKey[k] = c
	}
	for _, u := range c.URNs {
		ix.byURN[u] = c
	}
}

func (ix *index) remove(c *rapidpro.Contact) {
	delete(ix.byUUID, c.UUID)
	for _, u := range c.URNs {
		if ix.byURN[u] == c {
			delete(ix.byURN, u)
		}
	}
	if k := globalID(c); k != "" && ix.byKey[k] == c {
		delete(ix.byKey, k)
	}
}

func globalID(c *rapidpro.Contact) string {
	if v := c.Fields[FieldGlobalID]; v != nil {
		return csd.NormalizeID(*v)
	}
	return ""
}

// read finds the contacts the run's work may touch. The first run for a
// target reads the whole workspace once: RapidPro cannot filter contacts by
// field, and a contact with a provider's globalid or phone outside the group
// (an earlier tool's, or entered by hand) is found only by reading it. Later
// runs read only what their linked providers need: each contact by its UUID,
// or the group when more than the lookup threshold need reading, and each
// new phone, which RapidPro would otherwise drop on update and still answer
// 200. A provider without a link after the scan has no contact; its create
// reports a phone taken since.
//
// After a crash, the outcomes of the last writes may be unrecorded: their
// providers have no link although their contacts exist (created into the
// group), so the group is read once to find them.
func (s *Syncer) read(ctx context.Context, rp *rapidpro.Client, boot bootstrap, work []*item, scan, crashed bool) (*index, error) {
	idx := newIndex()
	collect := func(c rapidpro.Contact) error { idx.add(&c); return nil }
	if scan {
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{}, collect); err != nil {
			return idx, fmt.Errorf("workspace: %w", err)
		}
		return idx, nil
	}
	var linked []*item
	for _, it := range work {
		if it.action == actionSync && it.rec.UUID != "" {
			linked = append(linked, it)
		}
	}
	unlinked := slices.ContainsFunc(work, func(it *item) bool { return it.rec.UUID == "" })
	// The group costs a request per 250 members: worth it only when that is
	// fewer than one lookup per contact.
	if (crashed && unlinked) || (len(linked) > s.opts.LookupThreshold && (boot.GroupCount+249)/250 < len(linked)) {
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{Group: boot.GroupUUID}, collect); err != nil {
			return idx, fmt.Errorf("group %q: %w", boot.GroupName, err)
		}
	}
	for _, it := range linked {
		if idx.byUUID[it.rec.UUID] != nil {
			continue
		}
		if err := rp.Contacts(ctx, rapidpro.ContactQuery{UUID: it.rec.UUID}, collect); err != nil {
			if stopsRun(err) {
				return idx, fmt.Errorf("contact %s: %w", it.rec.UUID, err)
			}
			it.readErr = err // this provider waits for the next run; the others go on
		}
	}
	looked := map[string]bool{}
	for _, it := range linked {
		c := idx.byUUID[it.rec.UUID]
		if c == nil || it.readErr != nil {
			continue // deleted in RapidPro: created anew, and a create reports taken phones itself
		}
		for _, u := range it.Contact.URNs {
			if slices.Contains(c.URNs, u) || idx.byURN[u] != nil || looked[u] {
				continue
			}
			looked[u] = true
			if err := rp.Contacts(ctx, rapidpro.ContactQuery{URN: u}, collect); err != nil {
				if stopsRun(err) {
					return idx, fmt.Errorf("phone lookup: %w", err)
				}
				it.readErr = err
			}
		}
	}
	return idx, nil
}
