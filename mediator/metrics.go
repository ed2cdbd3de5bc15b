package mediator

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/openhie/mhero-mediator/openhim"
)

// Metrics are the service's Prometheus series, on a registry of their own so
// tests stay independent.
type Metrics struct {
	Registry *prometheus.Registry

	runs              *prometheus.CounterVec
	duration          prometheus.Histogram
	contactsWritten   *prometheus.CounterVec
	providersSkipped  *prometheus.CounterVec
	providersFailed   *prometheus.CounterVec
	providers         *prometheus.CounterVec
	outstanding       *prometheus.GaugeVec
	urnConflicts      prometheus.Counter
	lastSuccess       prometheus.Gauge
	inProgress        prometheus.Gauge
	upstreamRequests  *prometheus.CounterVec
	upstreamDuration  *prometheus.HistogramVec
	transportErrors   *prometheus.CounterVec
	throttleWait      *prometheus.CounterVec
	retryAfter        *prometheus.HistogramVec
	HeartbeatFailures prometheus.Counter
	retireHeld        prometheus.Gauge
	lastReconcile     prometheus.Gauge
	writeBacks        *prometheus.CounterVec
}

// Label values every series starts with, so that a rate() or an alert has a
// zero to compare with before the first event.
var (
	resultLabels    = []string{"successful", "completed_with_errors", "failed", "cut"}
	writeLabels     = []string{"created", "updated", "group_added", "group_removed", "blocked", "unblocked"}
	skipLabels      = []string{SkipNoID, SkipNoPhone, SkipInvalidPhone}
	failLabels      = []string{ReasonDuplicateGlobalID, ReasonURNConflict, ReasonContactBlocked, ReasonStaleContact, ReasonGroupAdd, ReasonGroupRemove, ReasonBlock, ReasonUnblock}
	providerLabels  = []string{"unchanged", "deferred", "retried", "mapped"}
	systemLabels    = []string{"openinfoman", "rapidpro", "openhim"}
	transportLabels = []string{"timeout", "refused", "dns", "tls", "reset", "other"}
	scopeLabels     = []string{"v2_contacts", "v2"} // RapidPro's rate scopes, snake_case
)

// NewMetrics registers the service's series on reg, or on a new registry
// with the Go runtime and process collectors when reg is nil.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := promauto.With(reg)
	m := &Metrics{
		Registry: reg,
		runs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_runs_total", Help: "Sync runs by outcome: successful, completed_with_errors or failed (the OpenHIM status), or cut by the service's shutdown.",
		}, []string{"result"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "mhero_sync_duration_seconds", Help: "How long sync runs took.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 16), // 0.1 s to about 55 min
		}),
		contactsWritten: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_contacts_written_total", Help: "Contact writes to RapidPro by action.",
		}, []string{"action"}),
		providersSkipped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_providers_skipped_total", Help: "Providers that do not become contacts, by reason.",
		}, []string{"reason"}),
		providersFailed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_providers_failed_total", Help: "Providers that could not be synced, by reason.",
		}, []string{"reason"}),
		providers: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_providers_total", Help: "Providers by what a run did with them: unchanged, deferred to the next run, retried from an earlier one, mapped (the others' records were unchanged since their contact was confirmed).",
		}, []string{"outcome"}),
		outstanding: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mhero_sync_outstanding_providers", Help: "Providers waiting after the last run: pending (for the next run) or rejected (until their record changes).",
		}, []string{"kind"}),
		urnConflicts: f.NewCounter(prometheus.CounterOpts{
			Name: "mhero_sync_urn_conflicts_total", Help: "Phones kept off a contact because another contact holds them.",
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_last_success_timestamp_seconds", Help: "When the last run that recorded a watermark started (from the state at start-up).",
		}),
		inProgress: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_in_progress", Help: "1 while a sync run is going on.",
		}),
		upstreamRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_upstream_requests_total", Help: "HTTP requests to OpenInfoMan, RapidPro and OpenHIM that got an answer, every retry included, by status code.",
		}, []string{"system", "code", "method"}),
		upstreamDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mhero_upstream_request_duration_seconds", Help: "How long answered upstream requests took, by system.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12), // 10 ms to about 10 min
		}, []string{"system"}),
		transportErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_upstream_transport_errors_total", Help: "Upstream requests that got no answer, by system and class (timeout, refused, dns, tls, reset, other).",
		}, []string{"system", "class"}),
		throttleWait: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_rapidpro_throttle_wait_seconds_total", Help: "Time RapidPro calls waited for their rate scope (the client's budget or a 429's pause).",
		}, []string{"scope"}),
		retryAfter: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mhero_rapidpro_retry_after_seconds", Help: "Retry-After values RapidPro answered with a 429.",
			Buckets: []float64{1, 5, 15, 60, 300, 900, 1800, 3600},
		}, []string{"scope"}),
		HeartbeatFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "mhero_openhim_heartbeat_failures_total", Help: "Heartbeats or registrations OpenHIM did not accept.",
		}),
		retireHeld: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_retirements_held", Help: "Retirements the circuit breaker held back in the last run; above 0 needs an operator.",
		}),
		lastReconcile: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_last_reconciliation_timestamp_seconds", Help: "When the last full reconciliation that compared the whole registry with the group started.",
		}),
		writeBacks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_write_backs_total", Help: "Contact UUIDs written back to OpenInfoMan, by outcome.",
		}, []string{"outcome"}),
	}
	for _, v := range []struct {
		vec    *prometheus.CounterVec
		values []string
	}{
		{m.runs, resultLabels}, {m.contactsWritten, writeLabels}, {m.providersSkipped, skipLabels},
		{m.providersFailed, failLabels}, {m.providers, providerLabels}, {m.writeBacks, []string{"written", "failed"}},
	} {
		for _, l := range v.values {
			v.vec.WithLabelValues(l)
		}
	}
	for _, sys := range systemLabels {
		m.upstreamDuration.WithLabelValues(sys)
		for _, class := range transportLabels {
			m.transportErrors.WithLabelValues(sys, class)
		}
	}
	for _, sc := range scopeLabels {
		m.throttleWait.WithLabelValues(sc)
		m.retryAfter.WithLabelValues(sc)
	}
	for _, kind := range []string{"pending", "rejected"} {
		m.outstanding.WithLabelValues(kind)
	}
	return m
}

// InstrumentTransport counts and times every request sent through next to
// system, and classifies those that got no answer. It goes below the retry
// layer, so each attempt is counted.
func (m *Metrics) InstrumentTransport(system string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	labels := prometheus.Labels{"system": system}
	counted := promhttp.InstrumentRoundTripperCounter(m.upstreamRequests.MustCurryWith(labels),
		promhttp.InstrumentRoundTripperDuration(m.upstreamDuration.MustCurryWith(labels), next))
	return promhttp.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := counted.RoundTrip(req)
		if err != nil && req.Context().Err() == nil {
			m.transportErrors.WithLabelValues(system, transportClass(err)).Inc()
		}
		return resp, err
	})
}

// transportClass sorts a failed request by what an operator would check.
func transportClass(err error) string {
	var dnsErr *net.DNSError
	var certErr *x509.CertificateInvalidError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr), strings.Contains(err.Error(), "tls:"):
		return "tls"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), strings.Contains(err.Error(), "EOF"):
		return "reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	}
	return "other"
}

// ObserveThrottleWait and ObserveRetryAfter feed the RapidPro client's rate
// hooks.
func (m *Metrics) ObserveThrottleWait(scope string, waited time.Duration) {
	m.throttleWait.WithLabelValues(scopeLabel(scope)).Add(waited.Seconds())
}

// scopeLabel is a RapidPro rate scope as a label value (v2.contacts is
// v2_contacts).
func scopeLabel(scope string) string { return strings.ReplaceAll(scope, ".", "_") }

// ObserveRetryAfter records a Retry-After RapidPro answered.
func (m *Metrics) ObserveRetryAfter(scope string, after time.Duration) {
	m.retryAfter.WithLabelValues(scopeLabel(scope)).Observe(after.Seconds())
}

// SeedLastSuccess sets the last-success gauge from the state at start, so
// that a staleness alert does not fire on every deploy.
func (m *Metrics) SeedLastSuccess(t time.Time) {
	if !t.IsZero() {
		m.lastSuccess.Set(float64(t.Unix()))
	}
}

// resultLabel is an OpenHIM status as a label value: snake_case.
func resultLabel(status string) string {
	switch status {
	case openhim.StatusSuccessful:
		return "successful"
	case openhim.StatusCompletedWithErrors:
		return "completed_with_errors"
	}
	return "failed"
}

func (m *Metrics) observe(r *Report) {
	result := resultLabel(r.Status)
	if r.Cut {
		result = "cut" // by the service's shutdown: not an alert
	}
	m.runs.WithLabelValues(result).Inc()
	m.duration.Observe(r.Finished.Sub(r.Started).Seconds())
	for action, n := range map[string]int{
		"created": r.Created, "updated": r.Updated, "group_added": r.GroupAdded,
		"group_removed": r.GroupRemoved, "blocked": r.Blocked, "unblocked": r.Unblocked,
	} {
		m.contactsWritten.WithLabelValues(action).Add(float64(n))
	}
	for reason, n := range r.Skipped {
		m.providersSkipped.WithLabelValues(reason).Add(float64(n))
	}
	for reason, n := range r.Failed {
		m.providersFailed.WithLabelValues(reason).Add(float64(n))
	}
	m.providers.WithLabelValues("unchanged").Add(float64(r.Unchanged))
	m.providers.WithLabelValues("deferred").Add(float64(r.Deferred))
	m.providers.WithLabelValues("retried").Add(float64(r.Retried))
	m.providers.WithLabelValues("mapped").Add(float64(r.Mapped))
	m.urnConflicts.Add(float64(r.URNConflicts))
	if r.Err == nil {
		m.outstanding.WithLabelValues("pending").Set(float64(r.Pending))
		m.outstanding.WithLabelValues("rejected").Set(float64(r.Rejected))
		m.retireHeld.Set(float64(r.RetireHeld))
	}
	if !r.Watermark.IsZero() {
		m.lastSuccess.Set(float64(r.Started.Unix()))
	}
	if r.Reconciled {
		m.lastReconcile.Set(float64(r.Started.Unix()))
	}
	m.writeBacks.WithLabelValues("written").Add(float64(r.WrittenBack))
	m.writeBacks.WithLabelValues("failed").Add(float64(r.WriteBackFailed))
}
