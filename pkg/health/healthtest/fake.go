// Package healthtest provides a scripted health.Prober, so tests drive the
// rise/fall state of each target one probe at a time, with no clock.
package healthtest

import (
	"context"
	"errors"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/health"
)

// ErrDown is a convenient failing result for scripts.
var ErrDown = errors.New("healthtest: down")

// Prober answers each target's probes from its script, in order. When a
// target's script is used up, Probe blocks until more is scripted or the
// probe's context ends, and Idle(t) is closed. Because a Manager probes one
// target sequentially, a closed Idle(t) means every scripted result of t has
// been applied (state updated, onChange called). A waiting probe still ends
// at its Config.Timeout and then counts as a failure, so give test Configs a
// Timeout no test reaches, and health.WithSleep a sleep that returns at once.
type Prober struct {
	mu      sync.Mutex
	targets map[health.Target]*script
}

type script struct {
	results []error
	next    int
	calls   int           // Probe calls, including ones still waiting
	last    health.Config // Config of the latest call
	idle    chan struct{} // closed while the script is used up and a Probe waits
	isIdle  bool
	wake    chan struct{} // closed when results are appended
}

var _ health.Prober = (*Prober)(nil)

// NewProber returns a Prober with no scripts: every probe waits.
func NewProber() *Prober {
	return &Prober{targets: map[health.Target]*script{}}
}

func (f *Prober) get(t health.Target) *script {
	s := f.targets[t]
	if s == nil {
		s = &script{idle: make(chan struct{}), wake: make(chan struct{})}
		f.targets[t] = s
	}
	return s
}

// Script appends results (nil is a success) to t's script.
func (f *Prober) Script(t health.Target, results ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.get(t)
	s.results = append(s.results, results...)
	if len(results) > 0 {
		if s.isIdle {
			s.idle, s.isIdle = make(chan struct{}), false
		}
		close(s.wake)
		s.wake = make(chan struct{})
	}
}

// Idle returns a channel closed once t has used its whole script and its
// next Probe is waiting.
func (f *Prober) Idle(t health.Target) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.get(t).idle
}

// Calls returns how many times t was probed and the Config of the latest
// probe.
func (f *Prober) Calls(t health.Target) (int, health.Config) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.get(t)
	return s.calls, s.last
}

// Probe implements health.Prober.
func (f *Prober) Probe(ctx context.Context, t health.Target, c health.Config) error {
	f.mu.Lock()
	s := f.get(t)
	s.calls++
	s.last = c
	for {
		// Checked under f.mu so a canceled probe never consumes a result
		// meant for the loop that replaced it.
		if err := ctx.Err(); err != nil {
			f.mu.Unlock()
			return err
		}
		if s.next < len(s.results) {
			r := s.results[s.next]
			s.next++
			f.mu.Unlock()
			return r
		}
		if !s.isIdle {
			close(s.idle)
			s.isIdle = true
		}
		wake := s.wake
		f.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-wake:
		}
		f.mu.Lock()
	}
}
