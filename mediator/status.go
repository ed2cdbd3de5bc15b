package mediator

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

// maxHistory is how many finished runs the operator's view keeps.
const maxHistory = 20

// RunSummary is a finished run as the operator's view shows it.
type RunSummary struct {
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Status    string            `json:"status"`
	Full      bool              `json:"full,omitempty"`
	DryRun    bool              `json:"dry_run,omitempty"`
	Counts    map[string]string `json:"counts"`
	StoppedBy string            `json:"stopped_by,omitempty"`
	Breaker   string            `json:"breaker,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// RunProgress is the run going on, as far as it has got.
type RunProgress struct {
	Started     time.Time `json:"started"`
	Phase       string    `json:"phase"`
	Providers   int64     `json:"providers_read"`
	ToWrite     int64     `json:"providers_to_process"`
	Processed   int64     `json:"providers_processed"`
	Remaining   int64     `json:"providers_remaining"`
	RunTimeLeft string    `json:"run_time_left,omitempty"` // until the run's deadline
}

// progress is the live counterpart of RunProgress, updated by the run.
type progressMeter struct {
	started   time.Time
	deadline  time.Time
	phase     atomic.Value // string
	providers atomic.Int64
	toWrite   atomic.Int64
	processed atomic.Int64
}

func (p *progressMeter) snapshot(now time.Time) RunProgress {
	phase, _ := p.phase.Load().(string)
	rp := RunProgress{Started: p.started, Phase: phase, Providers: p.providers.Load(), ToWrite: p.toWrite.Load(), Processed: p.processed.Load()}
	rp.Remaining = max(rp.ToWrite-rp.Processed, 0)
	if !p.deadline.IsZero() {
		rp.RunTimeLeft = p.deadline.Sub(now).Round(time.Second).String()
	}
	return rp
}

// StateSummary is where the state stands.
type StateSummary struct {
	Watermark          time.Time            `json:"watermark"`
	Scanned            time.Time            `json:"workspace_scanned"`
	Reconciled         time.Time            `json:"last_reconciliation"`
	Directories        map[string]time.Time `json:"directory_watermarks"`
	Remap              bool                 `json:"remap_pending"`
	Pending            int                  `json:"pending_providers"`
	Rejected           int                  `json:"rejected_providers"`
	Providers          int                  `json:"providers_known"`
	TargetFingerprint  string               `json:"target_fingerprint"`
	MappingFingerprint string               `json:"mapping_fingerprint"`
	ConsoleConfigKept  bool                 `json:"console_config_kept"`
	Writing            time.Time            `json:"unfinished_run_started,omitzero"`
}

// Summary reports where the state stands, for an operator.
func (s *State) Summary() (StateSummary, error) {
	var out StateSummary
	marks, err := s.marks()
	if err != nil {
		return out, err
	}
	dir, err := s.directoryMarks()
	if err != nil {
		return out, err
	}
	out.Watermark, out.Scanned, out.Writing = marks.watermark, marks.scanned, marks.writing
	out.Reconciled, out.Remap, out.MappingFingerprint = dir.reconciled, dir.reresolve, dir.mapping
	out.Directories = map[string]time.Time{}
	for _, kind := range []csd.EntityKind{csd.KindFacility, csd.KindOrganization} {
		out.Directories[string(kind)] = dir.since[kind]
	}
	if out.Pending, out.Rejected, err = s.Outstanding(); err != nil {
		return out, err
	}
	if out.TargetFingerprint, err = s.Fingerprint(); err != nil {
		return out, err
	}
	cfg, err := s.ConsoleConfig()
	out.ConsoleConfigKept = cfg != nil
	if err != nil {
		return out, err
	}
	out.Providers, err = s.count(bucketProviders)
	return out, err
}

// ResetWatermark makes the next run pull every provider and reconcile,
// keeping every link and digest: the operator's way to force a full pull.
func (s *State) ResetWatermark() error {
	return errors.Join(s.SetWatermark(time.Time{}), s.putTime(keyReconciled, time.Time{}))
}

// Status is the operator's view: the last runs, the run going on, and the
// state.
type Status struct {
	Runs    []RunSummary `json:"runs"` // newest first
	Current *RunProgress `json:"current_run"`
	State   StateSummary `json:"state"`
}

// history keeps the last runs for the operator's view.
type history struct {
	mu   sync.Mutex
	runs []RunSummary
}

func (h *history) add(r *Report) {
	sum := RunSummary{Started: r.Started, Finished: r.Finished, Status: r.Status, Full: r.Full, DryRun: r.DryRun,
		Counts: r.Counts(), StoppedBy: r.StoppedBy, Breaker: r.Breaker}
	if r.Err != nil {
		sum.Error = r.Err.Error()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs = append([]RunSummary{sum}, h.runs...)
	if len(h.runs) > maxHistory {
		h.runs = h.runs[:maxHistory]
	}
}

func (h *history) list() []RunSummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.runs)
}

// Status reports the last runs, the run going on and where the state
// stands. It never shows a setting's value.
func (s *Syncer) Status() (Status, error) {
	st := Status{Runs: s.history.list()}
	if p := s.progress.Load(); p != nil {
		rp := p.snapshot(s.opts.Now())
		st.Current = &rp
	}
	var err error
	st.State, err = s.opts.State.Summary()
	return st, err
}

type meterKey struct{}

func withMeter(ctx context.Context, m *progressMeter) context.Context {
	return context.WithValue(ctx, meterKey{}, m)
}

// meterOf is the run's progress meter; a throwaway one outside a run.
func meterOf(ctx context.Context) *progressMeter {
	if m, ok := ctx.Value(meterKey{}).(*progressMeter); ok {
		return m
	}
	return &progressMeter{}
}
