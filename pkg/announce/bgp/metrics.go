package bgp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per Speaker, labeled by peer (the BGPPeer's name, or its
// address when it has none): one series per configured peer, deleted when
// the peer is.
type metrics struct {
	up          *prometheus.GaugeVec
	announced   *prometheus.GaugeVec
	transitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubelvs",
			Name:      "bgp_session_up",
			Help:      "1 when the BGP session with the peer is Established, 0 otherwise.",
		}, []string{"peer"}),
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubelvs",
			Name:      "bgp_announced_routes",
			Help:      "Host routes advertised to the peer (0 while the session is not Established).",
		}, []string{"peer"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs",
			Name:      "bgp_session_transitions_total",
			Help:      "Changes of the BGP session's state (Idle, Connect, Active, OpenSent, OpenConfirm, Established).",
		}, []string{"peer"}),
	}
	for _, c := range []prometheus.Collector{m.up, m.announced, m.transitions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register BGP metrics: %w", err)
		}
	}
	return m, nil
}

// add creates a peer's series, so that a new peer shows 0 rather than
// nothing.
func (m *metrics) add(peer string) {
	if m == nil {
		return
	}
	m.up.WithLabelValues(peer).Set(0)
	m.announced.WithLabelValues(peer).Set(0)
	m.transitions.WithLabelValues(peer)
}

func (m *metrics) remove(peer string) {
	if m == nil {
		return
	}
	m.up.DeleteLabelValues(peer)
	m.announced.DeleteLabelValues(peer)
	m.transitions.DeleteLabelValues(peer)
}

func (m *metrics) state(peer, state string, changed bool) {
	if m == nil {
		return
	}
	v := 0.0
	if state == "Established" {
		v = 1
	}
	m.up.WithLabelValues(peer).Set(v)
	if changed {
		m.transitions.WithLabelValues(peer).Inc()
	}
}

func (m *metrics) setAnnounced(peer string, n int) {
	if m == nil {
		return
	}
	m.announced.WithLabelValues(peer).Set(float64(n))
}
