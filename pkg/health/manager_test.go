package health_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelvs/kubelvs/pkg/health"
	"github.com/kubelvs/kubelvs/pkg/health/healthtest"
)

// cfg probes back to back (the test sleep returns at once) with a timeout no
// test waits out, so only the scripts decide health.
var cfg = health.Config{Protocol: health.ProtocolTCP, Interval: time.Hour, Timeout: time.Hour, Rise: 2, Fall: 3}

type harness struct {
	m      *health.Manager
	fake   *healthtest.Prober
	reg    *prometheus.Registry
	mu     sync.Mutex
	flips  map[string]int
	cancel context.CancelFunc
	ran    chan error
}

// newHarness returns a running Manager; cleanup stops it and checks that no
// loop outlives Run.
func newHarness(t *testing.T, opts ...health.Option) *harness {
	t.Helper()
	h := &harness{fake: healthtest.NewProber(), reg: prometheus.NewRegistry(), flips: map[string]int{}, ran: make(chan error, 1)}
	opts = append([]health.Option{
		health.WithRegisterer(h.reg),
		health.WithSleep(func(ctx context.Context, _ time.Duration) bool { return ctx.Err() == nil }),
	}, opts...)
	m, err := health.NewManager(h.fake, func(g string) {
		h.mu.Lock()
		h.flips[g]++
		h.mu.Unlock()
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.ran <- h.m.Run(ctx) }()
	t.Cleanup(func() {
		h.cancel()
		if err := <-h.ran; err != nil {
			t.Errorf("Run: %v", err)
		}
		if n := h.m.Loops(); n != 0 {
			t.Errorf("%d probe loops alive after Run returned", n)
		}
	})
}

func (h *harness) flipsOf(g string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.flips[g]
}

// metric reads one sample from the registry.
func (h *harness) metric(t *testing.T, name, result string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if len(s.GetLabel()) > 0 && s.GetLabel()[0].GetValue() != result {
				continue
			}
			if s.GetCounter() != nil {
				return s.GetCounter().GetValue()
			}
			return s.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{result=%q} not registered", name, result)
	return 0
}

// wait blocks on ch, failing rather than hanging if the Manager is broken.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("gave up waiting for %s", what)
	}
}

func target(g, addr string) health.Target {
	ap := netip.MustParseAddrPort(addr)
	return health.Target{Group: g, Address: ap.Addr(), Port: ap.Port()}
}

// expect replays a script through the pure rule's definition: health
// starts true, flips after fall failures or rise successes in a row.
func expect(script []error, rise, fall int) (healthy bool, flips, ok, failed int) {
	healthy = true
	streak := 0
	for _, err := range script {
		if err == nil {
			ok++
		} else {
			failed++
		}
		if (err == nil) == healthy {
			streak = 0
			continue
		}
		streak++
		if (healthy && streak == fall) || (!healthy && streak == rise) {
			healthy, streak = !healthy, 0
			flips++
		}
	}
	return healthy, flips, ok, failed
}

func TestManagerRiseFall(t *testing.T) {
	t.Parallel()
	down := healthtest.ErrDown
	tests := []struct {
		name   string
		script []error
	}{
		{"never probed", nil},
		{"two failures", []error{down, down}},
		{"falls", []error{down, down, down}},
		{"success resets", []error{down, down, nil, down, down}},
		{"falls and rises", []error{down, down, down, nil, nil}},
		{"rise interrupted", []error{down, down, down, nil, down, nil}},
		{"flaps twice", []error{down, down, down, nil, nil, down, down, down}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			tg := target("ns/web", "10.0.0.1:80")
			other := target("ns/web", "10.0.0.2:80")
			h.fake.Script(tg, tt.script...)
			h.fake.Script(other, nil, nil, nil, nil)
			h.m.SetTargets("ns/web", cfg, []health.Target{tg, other})
			h.start(t)
			wait(t, h.fake.Idle(tg), "script of "+tg.String())
			wait(t, h.fake.Idle(other), "script of "+other.String())

			healthy, flips, ok, failed := expect(tt.script, cfg.Rise, cfg.Fall)
			ok += 4 // other's successes
			if got := h.m.Healthy(tg); got != healthy {
				t.Errorf("Healthy = %v, want %v", got, healthy)
			}
			snap := h.m.Snapshot("ns/web")
			if len(snap) != 2 || snap[tg] != healthy || !snap[other] {
				t.Errorf("Snapshot = %v, want %v:%v and %v:true", snap, tg, healthy, other)
			}
			if got := h.flipsOf("ns/web"); got != flips {
				t.Errorf("onChange called %d times, want %d", got, flips)
			}
			if got := h.metric(t, "kubelvs_health_checks_total", "success"); got != float64(ok) {
				t.Errorf("successes = %v, want %d", got, ok)
			}
			if got := h.metric(t, "kubelvs_health_checks_total", "failure"); got != float64(failed) {
				t.Errorf("failures = %v, want %d", got, failed)
			}
			wantGauge := 0.0
			if !healthy {
				wantGauge = 1
			}
			if got := h.metric(t, "kubelvs_health_check_unhealthy_targets", ""); got != wantGauge {
				t.Errorf("unhealthy gauge = %v, want %v", got, wantGauge)
			}
		})
	}
}

func TestManagerSetTargets(t *testing.T) {
	t.Parallel()
	down := healthtest.ErrDown
	h := newHarness(t)
	a, b := target("ns/web", "10.0.0.1:80"), target("ns/web", "[fd00::2]:80")
	if !h.m.Healthy(a) {
		t.Error("unknown target must be healthy")
	}

	// Set before Run: healthy, not probed until Run.
	h.m.SetTargets("ns/web", cfg, []health.Target{a, b})
	if h.m.Loops() != 0 || !h.m.Healthy(a) || !h.m.Healthy(b) {
		t.Fatalf("before Run: %d loops, healthy %v %v; want 0 loops, both healthy", h.m.Loops(), h.m.Healthy(a), h.m.Healthy(b))
	}
	bScript := []error{down, down, down}
	h.fake.Script(b, bScript...)
	h.start(t)
	wait(t, h.fake.Idle(a), "a probing")
	wait(t, h.fake.Idle(b), "b falling")
	if h.m.Healthy(b) || h.m.Loops() != 2 || h.flipsOf("ns/web") != 1 {
		t.Fatalf("b healthy %v, %d loops, %d flips; want unhealthy, 2, 1", h.m.Healthy(b), h.m.Loops(), h.flipsOf("ns/web"))
	}

	// Same config and targets again: nothing restarts.
	doneA := h.m.LoopDone(a)
	h.m.SetTargets("ns/web", cfg, []health.Target{b, a})
	select {
	case <-doneA:
		t.Fatal("identical SetTargets restarted a's loop")
	default:
	}

	// Remove b: its loop ends, it is forgotten (healthy), and removal is
	// not a flip.
	doneB := h.m.LoopDone(b)
	h.m.SetTargets("ns/web", cfg, []health.Target{a})
	wait(t, doneB, "b's loop to end")
	if h.m.Loops() != 1 || !h.m.Healthy(b) || h.flipsOf("ns/web") != 1 {
		t.Errorf("after removing b: %d loops, b healthy %v, %d flips; want 1, true, 1", h.m.Loops(), h.m.Healthy(b), h.flipsOf("ns/web"))
	}
	if got := h.metric(t, "kubelvs_health_check_unhealthy_targets", ""); got != 0 {
		t.Errorf("unhealthy gauge = %v after removing the unhealthy target", got)
	}
	// The probe canceled by the removal is not a result.
	if got := h.metric(t, "kubelvs_health_checks_total", "failure"); got != float64(len(bScript)) {
		t.Errorf("failures = %v after removal, want the %d scripted", got, len(bScript))
	}

	// Make a unhealthy, then change the config: a's loop restarts with the
	// new config and keeps its health.
	h.fake.Script(a, bScript...)
	wait(t, h.fake.Idle(a), "a falling")
	doneA = h.m.LoopDone(a)
	cfg2 := cfg
	cfg2.Protocol, cfg2.Path = health.ProtocolHTTP, "/healthz"
	h.m.SetTargets("ns/web", cfg2, []health.Target{a})
	wait(t, doneA, "a's old loop to end")
	h.fake.Script(a, nil) // one success: less than Rise
	wait(t, h.fake.Idle(a), "a's new loop")
	if _, last := h.fake.Calls(a); last != cfg2 {
		t.Errorf("a probed with %v after the change, want %v", last, cfg2)
	}
	if got := h.metric(t, "kubelvs_health_checks_total", "failure"); got != float64(2*len(bScript)) {
		t.Errorf("failures = %v after restart, want the %d scripted", got, 2*len(bScript))
	}
	if h.m.Healthy(a) || h.m.Loops() != 1 || h.flipsOf("ns/web") != 2 {
		t.Errorf("after config change: a healthy %v, %d loops, %d flips; want false, 1, 2", h.m.Healthy(a), h.m.Loops(), h.flipsOf("ns/web"))
	}

	// A second group is independent; then the zero Config stops the first.
	c := target("ns/db", "10.0.0.3:5432")
	h.m.SetTargets("ns/db", cfg, []health.Target{c})
	doneA = h.m.LoopDone(a)
	h.m.SetTargets("ns/web", health.ConfigFrom(nil), []health.Target{a})
	wait(t, doneA, "a's loop to end")
	if h.m.Snapshot("ns/web") != nil || !h.m.Healthy(a) || h.m.Loops() != 1 {
		t.Errorf("after zero Config: snapshot %v, a healthy %v, %d loops; want nil, true, 1", h.m.Snapshot("ns/web"), h.m.Healthy(a), h.m.Loops())
	}
	doneC := h.m.LoopDone(c)
	h.m.SetTargets("ns/db", cfg, nil)
	wait(t, doneC, "c's loop to end")
	if h.m.Loops() != 0 || h.flipsOf("ns/db") != 0 {
		t.Errorf("after empty targets: %d loops, %d db flips; want 0, 0", h.m.Loops(), h.flipsOf("ns/db"))
	}
}

func TestManagerRunOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.m.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := h.m.Run(context.Background()); err == nil {
		t.Error("second Run succeeded, want an error")
	}
	// Stopped: SetTargets records but starts nothing.
	h.m.SetTargets("ns/web", cfg, []health.Target{target("ns/web", "10.0.0.1:80")})
	if n := h.m.Loops(); n != 0 {
		t.Errorf("%d loops started after Run returned", n)
	}
}

func TestManagerRegistersOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := health.NewManager(healthtest.NewProber(), nil, health.WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	_, err := health.NewManager(healthtest.NewProber(), nil, health.WithRegisterer(reg))
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second registration: %v, want AlreadyRegisteredError", err)
	}
}

func TestManagerJitter(t *testing.T) {
	t.Parallel()
	rands := []float64{0.25, 0, 0.5, 0.999}
	var mu sync.Mutex
	var delays []time.Duration
	next := 0
	frozen := time.Unix(1700000000, 0)
	h := newHarness(t,
		health.WithRand(func() float64 {
			mu.Lock()
			defer mu.Unlock()
			r := rands[next%len(rands)]
			next++
			return r
		}),
		health.WithSleep(func(ctx context.Context, d time.Duration) bool {
			mu.Lock()
			delays = append(delays, d)
			mu.Unlock()
			return ctx.Err() == nil
		}),
		health.WithNow(func() time.Time { return frozen }),
	)
	tg := target("ns/web", "10.0.0.1:80")
	h.fake.Script(tg, nil, nil, nil)
	h.m.SetTargets("ns/web", cfg, []health.Target{tg})
	h.start(t)
	wait(t, h.fake.Idle(tg), "script")

	mu.Lock()
	defer mu.Unlock()
	if len(delays) != 4 {
		t.Fatalf("%d sleeps for 3 probes, want 4 (first offset + one after each probe)", len(delays))
	}
	if want := time.Duration(rands[0] * float64(cfg.Interval)); delays[0] != want {
		t.Errorf("first delay %v, want %v", delays[0], want)
	}
	for i, d := range delays[1:] {
		want := time.Duration(float64(cfg.Interval) * (0.9 + 0.2*rands[i+1]))
		if d != want || d < cfg.Interval*9/10 || d > cfg.Interval*11/10 {
			t.Errorf("delay %d = %v, want %v within ±10%% of %v", i+1, d, want, cfg.Interval)
		}
	}
}
