package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolStats is a database connection pool's state (PostgreSQL).
type PoolStats struct {
	Total, Idle, InUse, Max int
	// Acquires counts connections taken from the pool; Waited, those
	// that had to wait for one (the pool was empty), and WaitTime their
	// total wait.
	Acquires, Waited int64
	WaitTime         time.Duration
}

// PoolStatsFunc exposes the store's connection pool, read at each scrape:
// conduit_db_connections{state} (idle, in_use), conduit_db_connections_max,
// conduit_db_acquires_total, conduit_db_acquire_waits_total and
// conduit_db_acquire_wait_seconds_total. A pool that waits often is too
// small for the gateway's concurrency, or the database is slow. Call it
// once.
func (m *Metrics) PoolStatsFunc(fn func() PoolStats) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&poolCollector{fn: fn,
		conns:    prometheus.NewDesc("conduit_db_connections", "Database connections of this gateway, by state (idle, in_use).", []string{"state"}, nil),
		max:      prometheus.NewDesc("conduit_db_connections_max", "The most database connections this gateway opens.", nil, nil),
		acquires: prometheus.NewDesc("conduit_db_acquires_total", "Connections taken from the pool.", nil, nil),
		waits:    prometheus.NewDesc("conduit_db_acquire_waits_total", "Connections taken from the pool that had to wait for one.", nil, nil),
		waitSecs: prometheus.NewDesc("conduit_db_acquire_wait_seconds_total", "Time spent waiting for a pool connection.", nil, nil),
	})
}

type poolCollector struct {
	fn                                    func() PoolStats
	conns, max, acquires, waits, waitSecs *prometheus.Desc
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.conns
	ch <- p.max
	ch <- p.acquires
	ch <- p.waits
	ch <- p.waitSecs
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.fn()
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.InUse), "in_use")
	ch <- prometheus.MustNewConstMetric(p.max, prometheus.GaugeValue, float64(s.Max))
	ch <- prometheus.MustNewConstMetric(p.acquires, prometheus.CounterValue, float64(s.Acquires))
	ch <- prometheus.MustNewConstMetric(p.waits, prometheus.CounterValue, float64(s.Waited))
	ch <- prometheus.MustNewConstMetric(p.waitSecs, prometheus.CounterValue, s.WaitTime.Seconds())
}
