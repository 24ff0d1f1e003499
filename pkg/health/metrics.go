package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per Manager rather than package globals so tests and a second
// Manager can each use their own registry.
type metrics struct {
	checks    *prometheus.CounterVec
	unhealthy prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs",
			Name:      "health_checks_total",
			Help:      "Health check probes of real servers by result (success or failure).",
		}, []string{"result"}),
		unhealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs",
			Name:      "health_check_unhealthy_targets",
			Help:      "Real servers currently marked unhealthy by health checks, and so at weight 0.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	// Both series exist from the start, so a rate() over a fresh agent is 0
	// rather than absent.
	m.checks.WithLabelValues("success")
	m.checks.WithLabelValues("failure")
	for _, c := range []prometheus.Collector{m.checks, m.unhealthy} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register health check metrics: %w", err)
		}
	}
	return nil
}

func (m *metrics) observe(ok bool) {
	if ok {
		m.checks.WithLabelValues("success").Inc()
	} else {
		m.checks.WithLabelValues("failure").Inc()
	}
}
