package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// state is one target's health and the run of results that disagree with
// it. Only disagreeing results count, so a single success resets the way to
// unhealthy and a single failure resets the way back.
type state struct {
	healthy bool
	streak  int
}

// next is the whole rise/fall rule, kept pure so it is tested without
// goroutines. It reports whether the health flipped.
func (s state) next(ok bool, rise, fall int) (state, bool) {
	if ok == s.healthy {
		return state{healthy: s.healthy}, false
	}
	s.streak++
	need := fall
	if ok {
		need = rise
	}
	if s.streak >= need {
		return state{healthy: ok}, true
	}
	return s, false
}

// Manager runs one probe loop per target and keeps each target's health.
// Targets start healthy: an agent restart, or a VirtualService gaining a
// health check, must never pull traffic before a probe has failed.
type Manager struct {
	prober   Prober
	onChange func(group string)
	metrics  *metrics
	reg      prometheus.Registerer

	// Seams for tests: jitter source, clock and wait.
	rand  func() float64
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool

	loops atomic.Int64 // probe loops alive, for tests and debugging
	wg    sync.WaitGroup

	mu        sync.Mutex
	runCtx    context.Context // nil until Run
	stopped   bool            // Run is waiting for the loops; start no more
	log       logr.Logger
	groups    map[string]*groupState
	unhealthy int
}

// groupState is one VirtualService's check and its targets.
type groupState struct {
	cfg     Config
	targets map[Target]*probe
}

// probe is one target's state and its current loop, if running.
type probe struct {
	state
	cancel context.CancelFunc
	done   chan struct{} // closed when the current loop has returned
}

// Option configures a Manager.
type Option func(*Manager)

// WithRegisterer registers the Manager's metrics on reg, normally
// controller-runtime's metrics.Registry. Without it the metrics are kept but
// not exported.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(m *Manager) { m.reg = reg }
}

// WithSleep replaces the wait between probes of a target; sleep returns
// false to end the loop and must honor ctx. Tests pass one that returns at
// once so loops run back to back, paced only by a scripted Prober (with a
// Config.Timeout long enough that a waiting fake never times out).
func WithSleep(sleep func(ctx context.Context, d time.Duration) bool) Option {
	return func(m *Manager) { m.sleep = sleep }
}

// WithRand replaces the jitter source, which must return values in [0, 1)
// and be safe for concurrent use.
func WithRand(rand func() float64) Option {
	return func(m *Manager) { m.rand = rand }
}

// NewManager returns a Manager probing with prober. onChange(group) is
// called whenever a target of group flips between healthy and unhealthy,
// from the target's own goroutine and never under the Manager's lock, so it
// may call back into the Manager; it should only queue work (a reconcile
// request), since probing of that target waits for it.
func NewManager(prober Prober, onChange func(group string), opts ...Option) (*Manager, error) {
	if onChange == nil {
		onChange = func(string) {}
	}
	m := &Manager{
		prober:   prober,
		onChange: onChange,
		metrics:  newMetrics(),
		rand:     rand.Float64,
		now:      time.Now,
		sleep:    sleepCtx,
		log:      logr.Discard(),
		groups:   map[string]*groupState{},
	}
	for _, o := range opts {
		o(m)
	}
	if m.reg != nil {
		if err := m.metrics.register(m.reg); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run probes until ctx is done, then waits for every probe loop to return:
// when Run returns, no goroutine of the Manager is left. Targets set before
// Run start probing when Run starts. A Manager runs once.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.runCtx != nil {
		m.mu.Unlock()
		return errors.New("health: Manager.Run called twice")
	}
	m.runCtx = ctx
	m.log = logf.FromContext(ctx).WithName("health")
	for _, g := range m.groups {
		for t, p := range g.targets {
			m.start(t, p, g.cfg)
		}
	}
	m.mu.Unlock()

	<-ctx.Done()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// SetTargets makes targets the whole set probed for group with c: new
// targets start probing (healthy), removed ones stop and are forgotten, and
// a changed c restarts every loop of the group. A restart keeps each
// target's health, so a config edit alone never flips a target. A zero c
// (ConfigFrom(nil)) or no targets removes the group. The Group field of each
// target is set to group. SetTargets never waits for a probe in flight: a
// result that arrives after its target was removed or reconfigured is
// dropped.
func (m *Manager) SetTargets(group string, c Config, targets []Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if c.IsZero() || len(targets) == 0 {
		if g != nil {
			for _, p := range g.targets {
				m.drop(p)
			}
			delete(m.groups, group)
		}
		return
	}
	c = c.withDefaults()
	if g == nil {
		g = &groupState{targets: map[Target]*probe{}}
		m.groups[group] = g
	}
	restart := g.cfg != c
	g.cfg = c

	want := make(map[Target]bool, len(targets))
	for _, t := range targets {
		t.Group = group
		want[t] = true
	}
	for t, p := range g.targets {
		switch {
		case !want[t]:
			m.drop(p)
			delete(g.targets, t)
		case restart:
			p.stop()
			p.streak = 0 // the old streak was measured with the old check
			m.start(t, p, c)
		}
	}
	for t := range want {
		if _, ok := g.targets[t]; !ok {
			p := &probe{state: state{healthy: true}}
			g.targets[t] = p
			m.start(t, p, c)
		}
	}
}

// Healthy reports whether t may carry traffic. A target the Manager does not
// probe is healthy: no health check means no reason to drain it.
func (m *Manager) Healthy(t Target) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[t.Group]; g != nil {
		if p := g.targets[t]; p != nil {
			return p.healthy
		}
	}
	return true
}

// Snapshot returns the health of every target of group, for status counts
// and for building all the weights of one reconcile under one consistent
// view. It is nil for a group without targets.
func (m *Manager) Snapshot(group string) map[Target]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return nil
	}
	out := make(map[Target]bool, len(g.targets))
	for t, p := range g.targets {
		out[t] = p.healthy
	}
	return out
}

// start launches the loop of t under m.mu, unless Run has not started (Run
// will) or is shutting down (Wait may already be counting).
func (m *Manager) start(t Target, p *probe, c Config) {
	if m.runCtx == nil || m.stopped {
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	p.cancel, p.done = cancel, make(chan struct{})
	m.wg.Add(1)
	m.loops.Add(1)
	go m.loop(ctx, t, p, c, p.done)
}

// stop cancels p's loop without waiting for it; its late result is dropped
// because record checks the loop's context under m.mu.
func (p *probe) stop() {
	if p.cancel != nil {
		p.cancel()
		p.cancel = nil
	}
}

// drop forgets p, under m.mu.
func (m *Manager) drop(p *probe) {
	p.stop()
	if !p.healthy {
		m.unhealthy--
		m.metrics.unhealthy.Set(float64(m.unhealthy))
	}
}

func (m *Manager) loop(ctx context.Context, t Target, p *probe, c Config, done chan struct{}) {
	defer m.wg.Done()
	defer close(done)
	defer m.loops.Add(-1)
	// The first probe lands anywhere in the first interval, so targets added
	// together (agent start, a large EndpointSlice) do not probe in lockstep.
	delay := time.Duration(m.rand() * float64(c.Interval))
	for m.sleep(ctx, delay) {
		start := m.now()
		pctx, cancel := context.WithTimeout(ctx, c.Timeout)
		err := m.prober.Probe(pctx, t, c)
		cancel()
		m.record(ctx, t, p, c, err)
		// ±10% keeps targets that drifted into step from staying in step;
		// measuring from the probe start keeps the mean period at Interval
		// however long the probe took.
		delay = time.Duration(float64(c.Interval)*(0.9+0.2*m.rand())) - m.now().Sub(start)
	}
}

func (m *Manager) record(ctx context.Context, t Target, p *probe, c Config, err error) {
	m.mu.Lock()
	// Canceled under m.mu by SetTargets: the result belongs to a target or
	// config that no longer exists.
	if ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	m.metrics.observe(err == nil)
	var flipped bool
	p.state, flipped = p.state.next(err == nil, c.Rise, c.Fall)
	if flipped {
		if p.healthy {
			m.unhealthy--
		} else {
			m.unhealthy++
		}
		m.metrics.unhealthy.Set(float64(m.unhealthy))
	}
	log := m.log
	m.mu.Unlock()

	if !flipped {
		return
	}
	if err != nil {
		log.Info("Real server unhealthy", "virtualservice", t.Group, "target", t.AddrPort(), "error", err.Error())
	} else {
		log.Info("Real server healthy again", "virtualservice", t.Group, "target", t.AddrPort())
	}
	m.onChange(t.Group)
}

// sleepCtx waits d, or less if ctx ends first; it reports whether to go on.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
