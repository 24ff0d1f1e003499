// Package fault injects errors into the fakes of the kernel packages, so that
// callers can be tested against chosen failures ("the 3rd AddRealServer
// fails") and against random ones (Cilium's FaultyLBMaps).
package fault

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
)

// ErrInjected is the error returned for random failures and wrapped by every
// injected error, so tests can tell injected failures from real ones.
var ErrInjected = errors.New("injected fault")

// Injector decides whether an operation fails. The zero value never fails.
// It is safe for concurrent use.
type Injector struct {
	mu     sync.Mutex
	queued map[string][]error
	always map[string]error
	rate   float64
	rnd    *rand.Rand
	n      int // errors returned
}

// Injected returns how many errors Check has returned.
func (f *Injector) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// FailNext makes the next call of op fail with err (ErrInjected if nil).
// Calls queue: FailNext twice fails the next two calls.
func (f *Injector) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queued == nil {
		f.queued = map[string][]error{}
	}
	f.queued[op] = append(f.queued[op], wrap(op, err))
}

// FailAlways makes every call of op fail with err until Reset.
func (f *Injector) FailAlways(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.always == nil {
		f.always = map[string]error{}
	}
	f.always[op] = wrap(op, err)
}

// FailRandomly makes every call of the fake (reads too) fail with probability rate, drawn
// from a generator seeded with seed so failures are reproducible.
func (f *Injector) FailRandomly(rate float64, seed int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = rate
	f.rnd = rand.New(rand.NewSource(seed))
}

// Reset removes every configured fault.
func (f *Injector) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued, f.always, f.rate, f.rnd = nil, nil, 0, nil
}

// Check returns the error op must fail with, or nil.
func (f *Injector) Check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.queued[op]; len(q) > 0 {
		f.queued[op] = q[1:]
		f.n++
		return q[0]
	}
	if err := f.always[op]; err != nil {
		f.n++
		return err
	}
	if f.rnd != nil && f.rnd.Float64() < f.rate {
		f.n++
		return wrap(op, nil)
	}
	return nil
}

func wrap(op string, err error) error {
	if err == nil {
		return fmt.Errorf("%s: %w", op, ErrInjected)
	}
	return fmt.Errorf("%s: %w: %w", op, ErrInjected, err)
}
