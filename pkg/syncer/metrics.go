package syncer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the syncer's Prometheus metrics, namespace kubelvs.
type Metrics struct {
	syncDuration   *prometheus.HistogramVec
	kernelOps      *prometheus.CounterVec
	virtualServers prometheus.Gauge
	realServers    prometheus.Gauge
	draining       prometheus.Gauge
	flowsDeleted   prometheus.Counter
	flushDuration  prometheus.Histogram
	flushErrors    prometheus.Counter
	flushPending   prometheus.Gauge
	flushGaveUp    prometheus.Counter
	held           prometheus.Gauge
	gaveWay        prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubelvs", Name: "sync_duration_seconds",
			Help:    "Time to apply desired state to the kernel, by kind (group: one VirtualService; full: all).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind", "result"}),
		kernelOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "kernel_operations_total",
			Help: "Kernel writes and reads by object kind, operation and result.",
		}, []string{"kind", "op", "result"}),
		virtualServers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "programmed_virtual_servers", Help: "IPVS virtual servers programmed by this agent.",
		}),
		realServers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "programmed_real_servers", Help: "IPVS real servers programmed by this agent.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "draining_real_servers", Help: "Real servers at weight 0 waiting for their connections to end.",
		}),
		flowsDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "conntrack_flows_deleted_total", Help: "Conntrack flows deleted because their real server left.",
		}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubelvs", Name: "conntrack_flush_duration_seconds", Help: "Time of one conntrack flush pass.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "conntrack_flush_errors_total", Help: "Failed conntrack flush passes (retried).",
		}),
		flushPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "conntrack_flush_pending",
			Help: "Real servers whose conntrack flows are still to be deleted (a failed flush is retried with backoff).",
		}),
		flushGaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "conntrack_flush_given_up_total",
			Help: "Conntrack flush targets dropped unflushed because more than 65536 were waiting while conntrack kept failing.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "virtualservices_on_hold",
			Help: "VirtualServices whose kernel objects are kept as they are because their spec is refused or an input failed to load.",
		}),
		gaveWay: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "give_way_total",
			Help: "Times background work (the resync's build of every VirtualService, Verify) waited for changes being synced (at most 20 ms each).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.syncDuration, m.kernelOps, m.virtualServers, m.realServers, m.draining,
			m.flowsDeleted, m.flushDuration, m.flushErrors, m.flushPending, m.flushGaveUp, m.held, m.gaveWay)
	}
	return m
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}

func (m *Metrics) op(kind, op string, err error) {
	m.kernelOps.WithLabelValues(kind, op, result(err)).Inc()
}

func (m *Metrics) observeSync(kind string, d time.Duration, err error) {
	m.syncDuration.WithLabelValues(kind, result(err)).Observe(d.Seconds())
}

func (m *Metrics) setProgrammed(vs, rs int) {
	m.virtualServers.Set(float64(vs))
	m.realServers.Set(float64(rs))
}

func (m *Metrics) setDraining(n int) { m.draining.Set(float64(n)) }

func (m *Metrics) flushed(n int, d time.Duration, err error) {
	m.flowsDeleted.Add(float64(n))
	m.flushDuration.Observe(d.Seconds())
	if err != nil {
		m.flushErrors.Inc()
	}
}

func (m *Metrics) setHeld(n int) { m.held.Set(float64(n)) }

func (m *Metrics) setFlushPending(n int) { m.flushPending.Set(float64(n)) }

func (m *Metrics) flushGivenUp(n int) { m.flushGaveUp.Add(float64(n)) }
