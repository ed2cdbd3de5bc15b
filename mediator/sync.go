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
	if opts.LookupThreshold <= 0 {
		opts.LookupThreshold = 100
	}
	if opts.Now == nil {
		opts.Now = time.Now
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
	country, group, err := s.setUp(ctx, rp, settings.RapidPro, setup)
	setup.end(s.opts.Now, err, fmt.Sprintf("group %q, country %q", settings.RapidPro.Group, country))
	if err != nil {
		r.abort(setup.Name, err)
		return r
	}

	watermark, err := s.opts.State.Watermark()
	if err != nil {
		r.abort("state", err)
		return r
	}
	if !watermark.IsZero() {
		r.Since = watermark.Add(-s.opts.WatermarkMargin)
	}
	items, err := s.pull(ctx, settings.OpenInfoMan, Mapper{Country: country}, r)
	if err != nil {
		r.abort("OpenInfoMan provider-search", err)
		return r
	}

	reads := r.startPhase("RapidPro reads", http.MethodGet, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	idx, err := s.read(ctx, rp, group, items, settings.InactivePolicy, r.Since.IsZero(), reads)
	if err != nil {
		reads.end(s.opts.Now, err, "")
		r.abort(reads.Name, err)
		return r
	}
	reads.end(s.opts.Now, nil, fmt.Sprintf("%d contacts found", len(idx.byUUID)))

	writes := r.startPhase("RapidPro writes", http.MethodPost, settings.RapidPro.URL, "/api/v2/contacts.json", s.opts.Now)
	w := &writer{rp: rp, group: group, idx: idx, report: r, phase: writes, logger: s.opts.Logger, links: map[string]string{}}
	w.run(ctx, items, settings.InactivePolicy)
	err = s.opts.State.LinkContacts(w.links)
	writes.end(s.opts.Now, err, r.writeSummary())
	if err != nil {
		r.abort("state", err)
		return r
	}

	if r.Transient == 0 && r.Deferred == 0 {
		if err := s.opts.State.SetWatermark(r.Started); err != nil {
			r.abort("state", err)
			return r
		}
		r.Watermark = r.Started
	}
	r.settle()
	return r
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

// setUp reads the workspace and makes sure the managed group and the fields
// this service writes exist: RapidPro never creates them on the fly.
func (s *Syncer) setUp(ctx context.Context, rp *rapidpro.Client, settings RapidProSettings, ph *Phase) (i18n.Country, rapidpro.Group, error) {
	country := i18n.Country(settings.Country)
	if country == "" {
		ph.Requests++
		ws, err := rp.Workspace(ctx)
		if err != nil {
			return "", rapidpro.Group{}, fmt.Errorf("workspace: %w", err)
		}
		country = i18n.Country(strings.ToUpper(ws.Country))
	}
	ph.Requests++
	group, err := rp.EnsureGroup(ctx, settings.Group)
	if err != nil {
		return "", rapidpro.Group{}, fmt.Errorf("group %q: %w", settings.Group, err)
	}
	ph.Requests++
	fields, err := rp.Fields(ctx)
	if err != nil {
		return "", rapidpro.Group{}, fmt.Errorf("fields: %w", err)
	}
	for _, name := range []string{FieldGlobalID} {
		if slices.ContainsFunc(fields, func(f rapidpro.Field) bool { return f.Key == rapidpro.FieldKey(name) }) {
			continue
		}
		ph.Requests++
		if _, err := rp.CreateField(ctx, name, "text"); err != nil {
			return "", rapidpro.Group{}, fmt.Errorf("field %q: %w", name, err)
		}
	}
	return country, group, nil
}

// item is one provider's way through a run.
type item struct {
	Mapping
	failed string // reason, when the provider was rejected before any write
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
	ph.end(s.opts.Now, err, fmt.Sprintf("%d providers in %d pages (%s)", stats.Providers, stats.Pages, since))
	if err != nil {
		return nil, err
	}
	r.Providers = len(items)
	rejectDuplicateKeys(items)
	return items, nil
}

// rejectDuplicateKeys rejects every provider whose key another provider with
// a different entity id also has: which of them owns the contact is for the
// registry to settle, never for a silent pick here.
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
		if len(ids[it.Key]) > 1 {
			it.failed = ReasonDuplicateGlobalID
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

// read finds the contacts the run's providers may already have: by globalid
// through the managed group or the stored link, then by phone.
func (s *Syncer) read(ctx context.Context, rp *rapidpro.Client, group rapidpro.Group, items []*item, inactivePolicy string, fullPull bool, ph *Phase) (*index, error) {
	idx := newIndex()
	var todo []*item
	for _, it := range items {
		leftAlone := it.Status == csd.StatusInactive && inactivePolicy == InactiveIgnore
		if it.failed == "" && it.Skipped == "" && !leftAlone {
			todo = append(todo, it)
		}
	}
	if len(todo) == 0 {
		return idx, nil
	}
	collect := func(c rapidpro.Contact) error { idx.add(&c); return nil }
	if len(todo) > s.opts.LookupThreshold {
		// RapidPro cannot filter contacts by field, so a contact with a
		// provider's globalid outside the group (an earlier tool's, or one
		// taken out of it) is found only by reading it. A full pull has no
		// links to go by, so it reads the whole workspace once; later runs
		// read the group.
		query, what := rapidpro.ContactQuery{Group: group.UUID}, fmt.Sprintf("group %q", group.Name)
		if fullPull {
			query, what = rapidpro.ContactQuery{}, "workspace"
		}
		ph.Requests++
		if err := rp.Contacts(ctx, query, collect); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	keys := make([]string, 0, len(todo))
	for _, it := range todo {
		keys = append(keys, it.Key)
	}
	links, err := s.opts.State.ContactUUIDs(keys)
	if err != nil {
		return nil, err
	}
	for _, it := range todo {
		if idx.byKey[it.Key] != nil {
			continue
		}
		if uuid := links[it.Key]; uuid != "" {
			ph.Requests++
			if err := rp.Contacts(ctx, rapidpro.ContactQuery{UUID: uuid}, collect); err != nil {
				return nil, fmt.Errorf("contact %s: %w", uuid, err)
			}
			if idx.byKey[it.Key] != nil {
				continue
			}
		}
		for _, urn := range it.Contact.URNs {
			if idx.byURN[urn] != nil {
				continue
			}
			ph.Requests++
			if err := rp.Contacts(ctx, rapidpro.ContactQuery{URN: urn}, collect); err != nil {
				return nil, fmt.Errorf("contact %s: %w", urn, err)
			}
		}
	}
	return idx, nil
}
