// Package metrics is in charge of the gateway's operational view: the
// Prometheus metrics (queue depth per destination, deliveries, refusals
// per rule, quarantines per check, overdue deadlines, seal and open
// latency) and the admin HTTP listener that serves them with /healthz and
// /readyz.
//
// Each gateway has its own Metrics with its own registry, not the global
// one, so that tests and several gateways in one process do not collide.
// The gateway calls the small methods below where things happen (m.Refused
// where the policy refuses, m.ObserveSeal around envelope.Seal); a nil
// *Metrics is valid and does nothing, so code under test may leave it out.
//
// Label values are identifiers from the configuration (agency ids, rule
// ids, check names, deadline kinds), never package ids, addresses,
// subjects or content: each distinct value is a time series kept forever.
package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Outcome is the result of a delivery attempt.
type Outcome string

// Delivery outcomes.
const (
	Sent      Outcome = "sent"      // the partner gateway accepted it (250)
	Deferred  Outcome = "deferred"  // a temporary failure: it will be retried
	Failed    Outcome = "failed"    // given up: the sender is told
	Delivered Outcome = "delivered" // an inbound package put in a local mailbox
)

// Metrics is one gateway's metrics.
type Metrics struct {
	reg         *prometheus.Registry
	deliveries  *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	quarantined *prometheus.CounterVec
	alerts      *prometheus.CounterVec
	auditFailed prometheus.Counter
	keyExpiry   *prometheus.GaugeVec
	seal, open  prometheus.Histogram
	keysUp      prometheus.Gauge
	admission   *prometheus.CounterVec
	authFailed  *prometheus.CounterVec
	strangers   *prometheus.CounterVec
	log         *slog.Logger
}

// ScrapeTimeout bounds each function the collectors call at a scrape.
const ScrapeTimeout = 3 * time.Second

// latencyBuckets span a small package sealed in memory (a millisecond) to
// a large one signed through a remote Vault (seconds).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New makes the metrics and their registry, with the Go runtime and
// process collectors. log (nil: slog.Default) receives the errors of the
// functions given to QueueDepthFunc and OverdueFunc.
func New(log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conduit_deliveries_total",
			Help: "Delivery attempts by destination agency and outcome (sent, deferred, failed; delivered for inbound packages put in a local mailbox).",
		}, []string{"destination", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conduit_refusals_total",
			Help: "Packages refused, by the policy rule or check that refused them.",
		}, []string{"rule"}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conduit_quarantined_total",
			Help: "Messages put in quarantine, by the check they failed.",
		}, []string{"check"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conduit_deadline_alerts_total",
			Help: "Overdue alerts raised, by deadline kind (acknowledge, triage).",
		}, []string{"kind"}),
		auditFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conduit_audit_append_failures_total",
			Help: "Audit events that could not be written (an administrator alert each).",
		}),
		keyExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "conduit_key_expiry_seconds",
			Help: "Seconds until a key expires (negative once expired), by agency: this gateway's own and each partner's that has an expiry.",
		}, []string{"agency"}),
		seal: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "conduit_seal_duration_seconds",
			Help:    "Time to sign and encrypt one envelope.",
			Buckets: latencyBuckets,
		}),
		open: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "conduit_open_duration_seconds",
			Help:    "Time to decrypt and verify one envelope.",
			Buckets: latencyBuckets,
		}),
		keysUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "conduit_key_backend_up",
			Help: "1 when the key backend (file or Vault) answers and holds the agency key; 0 while it does not: nothing is sealed or opened then.",
		}),
	}
	m.admission = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conduit_connections_refused_total",
		Help: "Connections turned away before any SMTP work, by listener and reason (per-address: the address's share was full; full: every slot held by proven clients; evicted: the oldest unproven connection, dropped for a newcomer).",
	}, []string{"listener", "reason"})
	m.authFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conduit_auth_failures_total",
		Help: "Failed submission logins, by outcome (failed: wrong name or password; locked: refused while locked out; lockout: a lockout started).",
	}, []string{"outcome"})
	m.strangers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conduit_inbound_refused_total",
		Help: "Inbound messages refused without being stored, by reason (not-envelope: from a client with no partner certificate, not an envelope for this gateway; quota, rate: the quarantine's limits).",
	}, []string{"reason"})
	m.reg.MustRegister(m.deliveries, m.refusals, m.quarantined, m.alerts, m.auditFailed, m.keyExpiry, m.seal, m.open, m.keysUp,
		m.admission, m.authFailed, m.strangers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry the admin listener serves; a gateway part may
// register metrics of its own in it.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Delivery counts one delivery attempt to destination (an agency id).
func (m *Metrics) Delivery(destination string, o Outcome) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(destination, string(o)).Inc()
}

// Refused counts a package refused by rule (a policy rule id, or the
// intake check that refused it).
func (m *Metrics) Refused(rule string) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(rule).Inc()
}

// Quarantined counts a message quarantined by check (e.g. "signature",
// "label-mismatch", "replay").
func (m *Metrics) Quarantined(check string) {
	if m == nil {
		return
	}
	m.quarantined.WithLabelValues(check).Inc()
}

// ConnectionRefused counts a connection turned away by admission control.
func (m *Metrics) ConnectionRefused(listener, reason string) {
	if m == nil {
		return
	}
	m.admission.WithLabelValues(listener, reason).Inc()
}

// AuthFailure counts a failed login by outcome (failed, locked, lockout).
func (m *Metrics) AuthFailure(outcome string) {
	if m == nil {
		return
	}
	m.authFailed.WithLabelValues(outcome).Inc()
}

// InboundRefused counts an inbound message refused without being stored.
func (m *Metrics) InboundRefused(reason string) {
	if m == nil {
		return
	}
	m.strangers.WithLabelValues(reason).Inc()
}

// OverdueAlert counts an overdue alert raised for a deadline of kind.
func (m *Metrics) OverdueAlert(kind string) {
	if m == nil {
		return
	}
	m.alerts.WithLabelValues(kind).Inc()
}

// KeyExpiry records how long the key of agency has until it expires.
func (m *Metrics) KeyExpiry(agency string, left time.Duration) {
	if m == nil {
		return
	}
	m.keyExpiry.WithLabelValues(agency).Set(left.Seconds())
}

// AuditFailed counts an audit event that could not be appended.
func (m *Metrics) AuditFailed() {
	if m == nil {
		return
	}
	m.auditFailed.Inc()
}

// ObserveSeal records how long sealing one envelope took.
func (m *Metrics) ObserveSeal(d time.Duration) {
	if m == nil {
		return
	}
	m.seal.Observe(d.Seconds())
}

// ObserveOpen records how long opening one envelope took.
func (m *Metrics) ObserveOpen(d time.Duration) {
	if m == nil {
		return
	}
	m.open.Observe(d.Seconds())
}

// QueueDepthFunc makes conduit_queue_depth{destination} read fn at each
// scrape (store.Store.Depth fits: items waiting per destination agency).
// Call it once.
func (m *Metrics) QueueDepthFunc(fn func(context.Context) (map[string]int, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&funcGauges{
		desc: prometheus.NewDesc("conduit_queue_depth", "Items waiting in the outbound queue, by destination agency.", []string{"destination"}, nil),
		fn:   fn, log: m.log, what: "queue depth",
	})
}

// OverdueFunc makes conduit_deadlines_overdue{kind} read fn at each
// scrape: the open deadlines past due, by kind (acknowledge, triage).
// Call it once.
func (m *Metrics) OverdueFunc(fn func(context.Context) (map[string]int, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&funcGauges{
		desc: prometheus.NewDesc("conduit_deadlines_overdue", "Open deadlines past due, by kind.", []string{"kind"}, nil),
		fn:   fn, log: m.log, what: "overdue deadlines",
	})
}

// funcGauges is a gauge vector whose values come from a function called
// at each scrape, so they are never stale.
type funcGauges struct {
	desc *prometheus.Desc
	fn   func(context.Context) (map[string]int, error)
	log  *slog.Logger
	what string
}

func (f *funcGauges) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

func (f *funcGauges) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	vals, err := f.fn(ctx)
	if err != nil {
		// The scrape goes on without these series; the error shows in
		// the log and in the scrape's response (promhttp reports it).
		f.log.Warn("metrics: reading failed", "metric", f.what, "err", err)
		ch <- prometheus.NewInvalidMetric(f.desc, err)
		return
	}
	for k, v := range vals {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, float64(v), k)
	}
}
