package mediator

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	lastSuccess       prometheus.Gauge
	inProgress        prometheus.Gauge
	upstreamRequests  *prometheus.CounterVec
	HeartbeatFailures prometheus.Counter
	retireHeld        prometheus.Gauge
	lastReconcile     prometheus.Gauge
	writeBacks        *prometheus.CounterVec
}

// NewMetrics registers the service's series on reg, or on a new registry
// with the Go runtime and process collectors when reg is nil.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := promauto.With(reg)
	return &Metrics{
		Registry: reg,
		runs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_sync_runs_total", Help: "Sync runs by outcome (the OpenHIM status).",
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
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_last_success_timestamp_seconds", Help: "When the last run that recorded a watermark started.",
		}),
		inProgress: f.NewGauge(prometheus.GaugeOpts{
			Name: "mhero_sync_in_progress", Help: "1 while a sync run is going on.",
		}),
		upstreamRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mhero_upstream_requests_total", Help: "HTTP requests to OpenInfoMan, RapidPro and OpenHIM, every retry included, by status code.",
		}, []string{"system", "code", "method"}),
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
}

// InstrumentTransport counts every request sent through next to system. It
// goes below the retry layer, so each attempt is counted.
func (m *Metrics) InstrumentTransport(system string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return promhttp.InstrumentRoundTripperCounter(m.upstreamRequests.MustCurryWith(prometheus.Labels{"system": system}), next)
}

func (m *Metrics) observe(r *Report) {
	m.runs.WithLabelValues(r.Status).Inc()
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
	if !r.Watermark.IsZero() {
		m.lastSuccess.Set(float64(r.Started.Unix()))
	}
	if r.Err == nil {
		m.retireHeld.Set(float64(r.RetireHeld))
	}
	if r.Reconciled {
		m.lastReconcile.Set(float64(r.Started.Unix()))
	}
	m.writeBacks.WithLabelValues("written").Add(float64(r.WrittenBack))
	m.writeBacks.WithLabelValues("failed").Add(float64(r.WriteBackFailed))
}
