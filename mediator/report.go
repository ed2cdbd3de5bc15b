package mediator

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

// maxRejects bounds the rejects a report lists; the counts cover all of them.
const maxRejects = 20

// maxPlanLines bounds the plan lines of a dry run's OpenHIM response.
const maxPlanLines = 1000

// Report is what one run did, counted by outcome.
type Report struct {
	Started, Finished time.Time
	Status            string    // an OpenHIM transaction status
	Since             time.Time // the lower bound asked of the registry; zero for a full pull
	Watermark         time.Time // recorded for the next run; zero when the run must be repeated

	Providers    int
	Mapped       int // providers mapped; the others' records were unchanged since their contact was confirmed
	Created      int
	Updated      int
	Unchanged    int
	Inactive     int
	GroupAdded   int
	GroupRemoved int
	Blocked      int
	Skipped      map[string]int // by reason: no phone, invalid phone, no id
	Failed       map[string]int // by reason: rejected by RapidPro, conflicts, duplicates
	Deferred     int            // not tried: left for the next run because the run stopped
	URNConflicts int            // phones kept off a contact because another contact has them
	Retried      int            // providers an earlier run left pending, tried first
	Pending      int            // providers left for the next run (deferred or failed transiently)
	Rejected     int            // providers whose last reject still stands, this run's or an earlier one's
	// StoppedBy says why the run stopped writing before the end, if it did.
	StoppedBy string
	// PullIncomplete says why the pull may have missed providers; the
	// watermark stays where it was.
	PullIncomplete string
	// Retargeted is set when the target changed and the state started over.
	Retargeted bool

	// DryRun marks a plan: nothing was written anywhere.
	DryRun bool
	// Full marks a full reconciliation: the whole registry was pulled and,
	// when the pull was complete, compared with the managed group.
	Full bool
	// Reconciled is set when the whole registry was compared with the group.
	Reconciled bool
	// Cut is set when the service's shutdown cut the run: a deploy, not a
	// failure of the run.
	Cut bool
	// DirectoryChanged is set when a facility or organization changed, so
	// that every provider was mapped again.
	DirectoryChanged bool
	// Targeting counts references and hierarchies that did not resolve.
	Targeting map[string]int
	// FieldProblems lists targeting fields RapidPro holds with another type.
	FieldProblems []string
	// Planned lists, in a dry run, what a sync would create before its
	// first write (the group, fields).
	Planned   []string
	Unblocked int // contacts this service had blocked, unblocked as their worker returned
	// RetireHeld counts the retirements the circuit breaker held back, and
	// Breaker says why.
	RetireHeld      int
	Breaker         string
	WrittenBack     int // contact UUIDs written to OpenInfoMan
	WriteBackFailed int // write-backs that failed, retried next run
	// Actions counts the providers by outcome (create, update, unchanged,
	// leave_group…); Plan lists them one by one in a dry run.
	Actions map[string]int
	Plan    []PlanLine

	Rejects []Reject
	Phases  []*Phase
	Err     error // why the run failed, when it did

	meter *progressMeter // the operator's live view of the run, if any
}

// PlanLine is what a run does, or a dry run would do, for one provider.
type PlanLine struct {
	EntityID string `json:"entity_id"`
	Action   string `json:"action"`
	Detail   string `json:"detail,omitempty"`
}

// planLines counts the outcomes and, in a dry run, lists them.
func (r *Report) planLines(items []*item) {
	for _, it := range items {
		if it.outcome == "" {
			continue
		}
		r.Actions[it.outcome]++
		if r.DryRun {
			r.Plan = append(r.Plan, PlanLine{EntityID: strings.TrimSpace(it.EntityID), Action: it.outcome, Detail: it.outcomeDetail})
		}
	}
}

// Reject is one provider the run could not sync.
type Reject struct {
	EntityID, Reason, Detail string
}

// Phase is one stage of a run against one upstream, reported to OpenHIM as an
// orchestration.
type Phase struct {
	Name              string
	Method            string
	BaseURL, Path     string
	Started, Finished time.Time
	Requests          int
	Summary           string
	Err               error
}

func newReport(started time.Time) *Report {
	return &Report{Started: started, Skipped: map[string]int{}, Failed: map[string]int{}, Actions: map[string]int{}, meter: &progressMeter{}}
}

func (r *Report) startPhase(name, method, baseURL, path string, now func() time.Time) *Phase {
	ph := &Phase{Name: name, Method: method, BaseURL: baseURL, Path: path, Started: now().UTC()}
	r.Phases = append(r.Phases, ph)
	r.meter.phase.Store(name)
	return ph
}

func (ph *Phase) end(now func() time.Time, err error, summary string) {
	ph.Finished, ph.Err, ph.Summary = now().UTC(), err, summary
}

func (r *Report) abort(phase string, err error) {
	r.Err = fmt.Errorf("%s: %w", phase, err)
	r.Status = openhim.StatusFailed
}

// settle sets the status of a run that got to the end.
func (r *Report) settle() {
	r.Status = openhim.StatusSuccessful
	// A field problem is the operator's set-up, reported by every run
	// but not a failure of this one: it would hide those that are.
	if r.Deferred > 0 || r.Pending > 0 || r.Rejected > 0 || sum(r.Failed) > 0 || r.PullIncomplete != "" ||
		r.RetireHeld > 0 || r.WriteBackFailed > 0 {
		r.Status = openhim.StatusCompletedWithErrors
	}
}

func (r *Report) addReject(rj Reject) {
	if len(r.Rejects) < maxRejects {
		r.Rejects = append(r.Rejects, rj)
	}
}

func (r *Report) writeSummary() string {
	return fmt.Sprintf("%d created, %d updated, %d unchanged, %d added to group, %d removed from group, %d blocked, %d failed, %d deferred",
		r.Created, r.Updated, r.Unchanged, r.GroupAdded, r.GroupRemoved, r.Blocked, sum(r.Failed), r.Deferred)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Counts is the report's numbers as flat string pairs, the form OpenHIM
// properties and the response body take.
func (r *Report) Counts() map[string]string {
	c := map[string]string{
		"providers":     strconv.Itoa(r.Providers),
		"mapped":        strconv.Itoa(r.Mapped),
		"created":       strconv.Itoa(r.Created),
		"updated":       strconv.Itoa(r.Updated),
		"unchanged":     strconv.Itoa(r.Unchanged),
		"inactive":      strconv.Itoa(r.Inactive),
		"group_added":   strconv.Itoa(r.GroupAdded),
		"group_removed": strconv.Itoa(r.GroupRemoved),
		"blocked":       strconv.Itoa(r.Blocked),
		"skipped":       strconv.Itoa(sum(r.Skipped)),
		"failed":        strconv.Itoa(sum(r.Failed)),
		"deferred":      strconv.Itoa(r.Deferred),
		"retried":       strconv.Itoa(r.Retried),
		"pending":       strconv.Itoa(r.Pending),
		"rejected":      strconv.Itoa(r.Rejected),
		"urn_conflicts": strconv.Itoa(r.URNConflicts),
		"unblocked":     strconv.Itoa(r.Unblocked),
		"retire_held":   strconv.Itoa(r.RetireHeld),
	}
	if r.WrittenBack+r.WriteBackFailed > 0 {
		c["written_back"], c["write_back_failed"] = strconv.Itoa(r.WrittenBack), strconv.Itoa(r.WriteBackFailed)
	}
	for k, v := range r.Targeting {
		c["targeting_"+k] = strconv.Itoa(v)
	}
	for k, v := range r.Actions {
		c["action_"+k] = strconv.Itoa(v)
	}
	for k, v := range r.Skipped {
		c["skipped_"+k] = strconv.Itoa(v)
	}
	for k, v := range r.Failed {
		c["failed_"+k] = strconv.Itoa(v)
	}
	return c
}

// OpenHIM renders the report as the mediator response OpenHIM records: the
// counts in the body and properties, and one orchestration per phase. No
// header, token or password is ever copied into it.
func (r *Report) OpenHIM(mediatorURN string) openhim.Response {
	props := r.Counts()
	props["started"] = r.Started.Format(time.RFC3339)
	if !r.Since.IsZero() {
		props["since"] = r.Since.Format(time.RFC3339)
	} else {
		props["since"] = "full pull"
	}
	if !r.Watermark.IsZero() {
		props["watermark"] = r.Watermark.Format(time.RFC3339)
	} else {
		props["watermark"] = "not advanced: the next run repeats these changes"
	}
	for i, rj := range r.Rejects {
		props[fmt.Sprintf("reject_%02d", i+1)] = fmt.Sprintf("%s: %s: %s", rj.EntityID, rj.Reason, rj.Detail)
	}
	body := map[string]any{"status": r.Status, "counts": r.Counts()}
	if r.StoppedBy != "" {
		props["stopped_by"] = r.StoppedBy
	}
	if r.PullIncomplete != "" {
		props["pull_incomplete"] = r.PullIncomplete
	}
	if r.Retargeted {
		props["retargeted"] = "the sync target changed: every provider was pulled again"
	}
	if r.Full {
		props["full"] = "a full reconciliation: the whole registry was compared with the group"
	}
	if r.DirectoryChanged {
		props["directory_changed"] = "a facility or organization changed: every provider was mapped again"
	}
	if r.Breaker != "" {
		props["breaker"] = r.Breaker
	}
	for i, p := range r.FieldProblems {
		props[fmt.Sprintf("field_problem_%02d", i+1)] = p
	}
	if r.DryRun {
		props["dry_run"] = "a plan: nothing was written"
		// The counts cover every provider; OpenHIM stores the body, so the
		// lines are bounded.
		body["plan"] = append([]PlanLine{}, r.Plan[:min(len(r.Plan), maxPlanLines)]...) // [] when empty, never null
		if n := len(r.Plan) - maxPlanLines; n > 0 {
			body["plan_truncated"] = fmt.Sprintf("%d more providers not listed; the action_ counts cover them", n)
		}
	}
	if r.Err != nil {
		body["error"] = r.Err.Error()
		props["error"] = r.Err.Error()
	}
	bodyJSON, _ := json.Marshal(body)
	status := 200
	if r.Status == openhim.StatusFailed {
		status = 500 // what the polling job records as the outcome
	}

	resp := openhim.Response{
		MediatorURN: mediatorURN,
		Status:      r.Status,
		Response: openhim.HTTPResponse{
			Status:    status,
			Headers:   map[string]string{"content-type": "application/json"},
			Body:      string(bodyJSON),
			Timestamp: r.Finished,
		},
		Properties: props,
	}
	for _, ph := range r.Phases {
		resp.Orchestrations = append(resp.Orchestrations, ph.orchestration())
	}
	return resp
}

func (ph *Phase) orchestration() openhim.Orchestration {
	req := &openhim.Request{Method: ph.Method, Path: ph.Path, Timestamp: ph.Started}
	if u, err := url.Parse(ph.BaseURL); err == nil {
		req.Host, req.Port = u.Hostname(), u.Port()
		if p := u.Path; p != "" && p != "/" {
			req.Path = p + ph.Path
		}
	}
	status, body := 200, fmt.Sprintf("%s; %d requests", ph.Summary, ph.Requests)
	o := openhim.Orchestration{Name: ph.Name, Request: req}
	if ph.Err != nil {
		status, body = 500, ph.Err.Error()
		o.Error = &openhim.ErrorInfo{Message: ph.Err.Error()}
	}
	o.Response = &openhim.HTTPResponse{Status: status, Body: body, Timestamp: ph.Finished}
	return o
}

func (r *Report) logAttrs() []any {
	attrs := []any{"status", r.Status, "duration", r.Finished.Sub(r.Started).String()}
	counts := r.Counts()
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		attrs = append(attrs, slog.String(k, counts[k]))
	}
	if r.Err != nil {
		attrs = append(attrs, "err", r.Err)
	}
	return attrs
}
