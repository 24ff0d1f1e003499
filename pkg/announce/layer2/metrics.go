package layer2

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per Responder, registered on the Registerer New is given.
type metrics struct {
	answers    *prometheus.CounterVec
	gratuitous *prometheus.CounterVec
	addresses  prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs", Subsystem: "layer2", Name: "answers_total",
			Help: "ARP requests (ipv4) and neighbor solicitations (ipv6) answered for an announced address.",
		}, []string{"family"}),
		gratuitous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs", Subsystem: "layer2", Name: "gratuitous_total",
			Help: "Unsolicited announcements sent: gratuitous ARP (ipv4), unsolicited neighbor advertisements (ipv6).",
		}, []string{"family"}),
		addresses: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Subsystem: "layer2", Name: "announced_addresses",
			Help: "Addresses this node answers ARP or NDP for.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	// Every series exists from the start, so a rate() is 0, not absent.
	for _, f := range []string{"ipv4", "ipv6"} {
		m.answers.WithLabelValues(f)
		m.gratuitous.WithLabelValues(f)
	}
	cs := []prometheus.Collector{m.answers, m.gratuitous, m.addresses}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register layer2 metrics: %w", err)
		}
	}
	return nil
}
