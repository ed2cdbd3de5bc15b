package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/mediator"
)

// Between two scenarios the service's clock moves on by scenarioGap, and
// records a scenario moves are dated recordAge before its start: after the
// last run's watermark less the service's margin, and before the next's.
const (
	scenarioGap     = 20 * time.Minute
	recordAge       = 10 * time.Minute
	watermarkMargin = 5 * time.Minute // the service's default
	// budgetLimit is the emulator's limit per rate scope and window: the
	// real RapidPro's hourly 3600, in a window shrunk to the scaled rate.
	budgetLimit = 3600
	runTimeout  = time.Hour
)

type bench struct {
	cfg    *config
	out    io.Writer
	fakes  *fakes
	logger *slog.Logger
	clock  clock

	// The service the first … full scenarios share, synced by first.
	main *service
	// recordsAt is the first … full registry's Start; touchedAt its
	// record date once touched (zero before); revision the last edit of
	// its first providers.
	recordsAt, touchedAt time.Time
	revision             int
}

// service is the mediator as serve builds it, on a state of its own.
type service struct {
	dir    string
	state  *mediator.State
	syncer *mediator.Syncer
}

type serviceOptions struct {
	oimURL, rapidProURL string
	ratePerHour         int
	latency             time.Duration
	concurrency         int
}

// newService wires the service as cmd/mhero-mediator does: instrumented
// clients that follow no redirect, the settings' defaults, the generated
// hierarchy's district level.
func (b *bench) newService(o serviceOptions) (*service, error) {
	dir, err := os.MkdirTemp("", "mhero-bench-")
	if err != nil {
		return nil, err
	}
	state, err := mediator.OpenState(filepath.Join(dir, "state.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	metrics := mediator.NewMetrics(nil)
	client := func(system string, total time.Duration) *http.Client {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64 // as the service's own clients: each write in flight keeps its connection
		var rt http.RoundTripper = t
		if o.latency > 0 {
			rt = delayed{next: rt, delay: o.latency}
		}
		return &http.Client{
			Transport:     metrics.InstrumentTransport(system, rt),
			Timeout:       total,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	settings := mediator.Settings{
		OpenInfoMan:    mediator.OpenInfoManSettings{URL: o.oimURL, Document: benchDoc, PageSize: 500},
		RapidPro:       mediator.RapidProSettings{URL: o.rapidProURL, Token: benchToken, Group: "mHero", Country: benchCountry},
		InactivePolicy: mediator.InactiveRemoveFromGroup,
	}
	syncer, err := mediator.NewSyncer(settings, mediator.Options{
		State:                 state,
		Metrics:               metrics,
		Logger:                b.logger,
		OpenInfoManHTTP:       client("openinfoman", 5*time.Minute),
		RapidProHTTP:          client("rapidpro", 90*time.Second),
		RapidProRatePerHour:   o.ratePerHour,
		RapidProRetryAfterCap: time.Minute,
		LookupThreshold:       100,
		WatermarkMargin:       watermarkMargin,
		WriteConcurrency:      o.concurrency,
		ChunkSize:             b.cfg.chunkSize,
		Now:                   b.clock.Now,
	})
	if err != nil {
		state.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	return &service{dir: dir, state: state, syncer: syncer}, nil
}

func (s *service) close() {
	s.state.Close()
	os.RemoveAll(s.dir)
}

func (b *bench) closeMain() {
	if b.main != nil {
		b.main.close()
		b.main = nil
	}
}

// registry serves n generated providers, reachable, under the hierarchy.
func (b *bench) registry(n int, o csdtest.GenerateOptions) (string, error) {
	o.Seed, o.Step, o.Hierarchy, o.Reachable = b.cfg.seed, time.Second, true, true
	a, err := b.fakes.call(command{Op: "registry", N: n, Generate: o})
	return a.OIMURL, err
}

// recordsStart dates n providers a second apart, the last a day before now.
func (b *bench) recordsStart(n int) time.Time {
	return b.clock.Now().Add(-24*time.Hour - time.Duration(n)*time.Second).Truncate(time.Second)
}

func (b *bench) workspace(rateLimit int, window time.Duration) (string, error) {
	a, err := b.fakes.call(command{Op: "workspace", RateLimit: rateLimit, RateWindow: window})
	return a.RapidProURL, err
}

// syncUntilDone runs until a run leaves nothing pending, at most max runs.
func (b *bench) syncUntilDone(ctx context.Context, s *service, o mediator.RunOptions, max int) ([]*mediator.Report, error) {
	var reports []*mediator.Report
	for i := range max {
		if i > 0 {
			b.clock.Advance(time.Minute)
		}
		r, err := b.syncOnce(ctx, s, o)
		if r != nil {
			reports = append(reports, r)
		}
		if err != nil || r.Pending == 0 && r.StoppedBy == "" {
			return reports, err
		}
		b.logger.Warn("run left work pending", "run", i+1, "pending", r.Pending, "stopped_by", r.StoppedBy)
	}
	return reports, nil
}

func (b *bench) syncOnce(ctx context.Context, s *service, o mediator.RunOptions) (*mediator.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	r, err := s.syncer.RunWith(ctx, o)
	if err != nil {
		return nil, err
	}
	if r.Err != nil {
		return r, fmt.Errorf("the run failed: %w", r.Err)
	}
	if r.Status != "Successful" {
		b.logger.Warn("run not successful", "status", r.Status, "failed", r.Failed, "skipped", r.Skipped, "stopped_by", r.StoppedBy)
	}
	return r, nil
}

// measured is what one measured stretch of a scenario cost.
type measured struct {
	wall, cpu time.Duration
	peakRSS   int64
	fileRSS   int64 // at the end: mostly the state file's mapped pages
	stats     stats
	reports   []*mediator.Report
}

// measure runs fn alone on a heap brought back to what is live, and takes
// its wall time, CPU, peak RSS and the requests the fakes received; fn's
// samples in a CPU profile are labelled with the scenario (go tool pprof
// -tagfocus scenario=full).
func (b *bench) measure(scenario string, fn func() ([]*mediator.Report, error)) (measured, error) {
	if _, err := b.fakes.call(command{Op: "stats"}); err != nil {
		return measured{}, err
	}
	if !resetPeakRSS() {
		b.logger.Warn("cannot reset the peak RSS (/proc/self/clear_refs): peaks are the process's so far")
	}
	cpu0, t0 := cpuTime(), time.Now()
	var reports []*mediator.Report
	var err error
	pprof.Do(context.Background(), pprof.Labels("scenario", scenario), func(context.Context) { reports, err = fn() })
	m := measured{wall: time.Since(t0), cpu: cpuTime() - cpu0, reports: reports}
	if err != nil {
		return m, err
	}
	if m.peakRSS, m.fileRSS, err = rss(); err != nil {
		return m, err
	}
	a, err := b.fakes.call(command{Op: "stats"})
	m.stats = a.Stats
	return m, err
}

func (b *bench) figure(scenario, name string, value float64, unit string) {
	fmt.Fprintf(b.out, "%s %s %s %s\n", scenario, name, strconv.FormatFloat(value, 'f', -1, 64), unit)
}

// round keeps d decimals, so that the figures read as measured, not as
// float noise.
func round(v float64, d int) float64 {
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'f', d, 64), 64)
	return v
}

// report prints the figures every scenario has, each name with suffix.
func (b *bench) report(scenario, suffix string, m measured) {
	fig := func(name string, v float64, unit string) { b.figure(scenario, name+suffix, v, unit) }
	fig("wall", round(m.wall.Seconds(), 3), "s")
	fig("cpu", round(m.cpu.Seconds(), 3), "s")
	fig("peak_rss", round(float64(m.peakRSS)/(1<<20), 1), "MiB")
	fig("rss_file_end", round(float64(m.fileRSS)/(1<<20), 1), "MiB")
	var providers, mapped, created, updated, unchanged, failed int
	for _, r := range m.reports {
		providers += r.Providers
		mapped += r.Mapped
		created += r.Created
		updated += r.Updated
		unchanged += r.Unchanged
		failed += sum(r.Failed)
	}
	fig("runs", float64(len(m.reports)), "runs")
	fig("providers", float64(providers), "providers")
	fig("providers_per_second", round(float64(providers)/m.wall.Seconds(), 0), "providers/s")
	fig("mapped", float64(mapped), "providers")
	fig("created", float64(created), "contacts")
	fig("updated", float64(updated), "contacts")
	fig("unchanged", float64(unchanged), "providers")
	fig("failed", float64(failed), "providers")
	if n := len(m.reports); n > 0 {
		fig("pending", float64(m.reports[n-1].Pending), "providers")
	}
	total := 0
	for _, k := range requestKinds {
		fig("requests_rapidpro_"+k, float64(m.stats.RapidPro[k]), "requests")
		total += m.stats.RapidPro[k]
	}
	fig("requests_rapidpro", float64(total), "requests")
	fig("requests_openinfoman", float64(m.stats.OpenInfoMan), "requests")
	fig("responses_429", float64(m.stats.Throttled), "count")
	fig("contacts", float64(m.stats.Contacts), "contacts")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (b *bench) scenario(ctx context.Context, name string) error {
	switch name {
	case "first":
		return b.first(ctx, true)
	case "idle":
		return b.next(ctx, name, nil, mediator.RunOptions{})
	case "touched":
		return b.next(ctx, name, func(o *csdtest.GenerateOptions) {
			b.touchedAt = b.clock.Now().Add(-recordAge)
			o.Updated = b.touchedAt
		}, mediator.RunOptions{})
	case "delta_1":
		return b.next(ctx, name, b.change(1), mediator.RunOptions{})
	case "delta_100":
		return b.next(ctx, name, b.change(100), mediator.RunOptions{})
	case "full":
		return b.next(ctx, name, nil, mediator.RunOptions{Full: true})
	case "budget":
		return b.budget(ctx)
	case "latency":
		return b.latencyScenario(ctx)
	}
	return fmt.Errorf("unknown scenario %q", name)
}

// first syncs -n providers into an empty workspace from a fresh state; the
// main service stays for the scenarios after it.
func (b *bench) first(ctx context.Context, print bool) error {
	b.closeMain()
	b.recordsAt, b.touchedAt, b.revision = b.recordsStart(b.cfg.n), time.Time{}, 0
	oimURL, err := b.registry(b.cfg.n, csdtest.GenerateOptions{Start: b.recordsAt})
	if err != nil {
		return err
	}
	rpURL, err := b.workspace(0, 0)
	if err != nil {
		return err
	}
	if b.main, err = b.newService(serviceOptions{oimURL: oimURL, rapidProURL: rpURL, concurrency: b.cfg.concurrency}); err != nil {
		return err
	}
	m, err := b.measure("first", func() ([]*mediator.Report, error) {
		return b.syncUntilDone(ctx, b.main, mediator.RunOptions{}, b.cfg.maxRuns)
	})
	if err != nil {
		return err
	}
	if print {
		b.report("first", "", m)
	}
	if m.stats.Contacts != b.cfg.n {
		b.logger.Warn("the first sync did not make a contact of every provider", "providers", b.cfg.n, "contacts", m.stats.Contacts)
	}
	return nil
}

// change edits the first k providers of the main registry, dated after
// the last run.
func (b *bench) change(k int) func(*csdtest.GenerateOptions) {
	return func(o *csdtest.GenerateOptions) {
		b.revision++
		o.Changed, o.Revision, o.ChangedAt = k, b.revision, b.clock.Now().Add(-recordAge)
	}
}

// next measures one run of the main service after the first sync (made
// unmeasured when the first scenario was not picked), on the registry as
// edit leaves it.
func (b *bench) next(ctx context.Context, name string, edit func(*csdtest.GenerateOptions), o mediator.RunOptions) error {
	if b.main == nil {
		if err := b.first(ctx, false); err != nil {
			return err
		}
	}
	b.clock.Advance(scenarioGap)
	g := csdtest.GenerateOptions{Start: b.recordsAt, Updated: b.touchedAt}
	if edit != nil {
		edit(&g)
		if _, err := b.registry(b.cfg.n, g); err != nil {
			return err
		}
	}
	m, err := b.measure(name, func() ([]*mediator.Report, error) {
		r, err := b.syncOnce(ctx, b.main, o)
		if r == nil {
			return nil, err
		}
		return []*mediator.Report{r}, err
	})
	if err != nil {
		return err
	}
	b.report(name, "", m)
	if g.Changed > 0 {
		b.figure(name, "changed", float64(g.Changed), "providers")
	}
	return nil
}

// budget creates -budget-n contacts against an emulator that throttles
// each rate scope to -rate requests/s over a sliding window, the service
// told the same rate. Budget use is the busier scope's accepted requests
// (a throttled one spends nothing) over what the rate allows in the run's
// wall time: RapidPro counts each scope on its own, and the busier one
// bounds the run.
func (b *bench) budget(ctx context.Context) error {
	b.closeMain()
	n := b.cfg.budgetN
	oimURL, err := b.registry(n, csdtest.GenerateOptions{Start: b.recordsStart(n)})
	if err != nil {
		return err
	}
	window := time.Duration(float64(time.Hour) / b.cfg.rate)
	rpURL, err := b.workspace(budgetLimit, window)
	if err != nil {
		return err
	}
	s, err := b.newService(serviceOptions{oimURL: oimURL, rapidProURL: rpURL,
		ratePerHour: int(3600 * b.cfg.rate), concurrency: b.cfg.concurrency})
	if err != nil {
		return err
	}
	defer s.close()
	m, err := b.measure("budget", func() ([]*mediator.Report, error) {
		r, err := b.syncOnce(ctx, s, mediator.RunOptions{})
		if r == nil {
			return nil, err
		}
		return []*mediator.Report{r}, err
	})
	if err != nil {
		return err
	}
	b.report("budget", "", m)
	contacts, other := m.stats.Accepted[scopeContacts], m.stats.Accepted[scopeOther]
	b.figure("budget", "rate", b.cfg.rate, "requests/s")
	b.figure("budget", "accepted_scope_contacts", float64(contacts), "requests")
	b.figure("budget", "accepted_scope_v2", float64(other), "requests")
	b.figure("budget", "budget_use", round(100*float64(max(contacts, other))/(b.cfg.rate*m.wall.Seconds()), 1), "%")
	return nil
}

// latencyScenario creates -latency-n contacts with -latency added to every
// request, once writing one at a time and once -concurrency at once.
func (b *bench) latencyScenario(ctx context.Context) error {
	b.closeMain()
	n := b.cfg.latencyN
	b.figure("latency", "added_delay", round(float64(b.cfg.latency)/float64(time.Millisecond), 3), "ms")
	walls := map[int]time.Duration{}
	for _, c := range []int{1, b.cfg.concurrency} {
		if _, done := walls[c]; done {
			continue
		}
		oimURL, err := b.registry(n, csdtest.GenerateOptions{Start: b.recordsStart(n)})
		if err != nil {
			return err
		}
		rpURL, err := b.workspace(0, 0)
		if err != nil {
			return err
		}
		s, err := b.newService(serviceOptions{oimURL: oimURL, rapidProURL: rpURL, latency: b.cfg.latency, concurrency: c})
		if err != nil {
			return err
		}
		m, err := b.measure("latency", func() ([]*mediator.Report, error) {
			return b.syncUntilDone(ctx, s, mediator.RunOptions{}, b.cfg.maxRuns)
		})
		s.close()
		if err != nil {
			return err
		}
		b.report("latency", "_concurrency_"+strconv.Itoa(c), m)
		walls[c] = m.wall
	}
	b.figure("latency", "speedup", round(walls[1].Seconds()/walls[b.cfg.concurrency].Seconds(), 2), "x")
	return nil
}
