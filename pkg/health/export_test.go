package health

import "time"

// WithNow lets tests freeze the clock the jitter arithmetic reads.
func WithNow(now func() time.Time) Option {
	return func(m *Manager) { m.now = now }
}

// Loops is how many probe loops are alive.
func (m *Manager) Loops() int64 { return m.loops.Load() }

// LoopDone returns a channel closed when t's current loop has returned, or
// nil if t has no loop.
func (m *Manager) LoopDone(t Target) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[t.Group]; g != nil {
		if p := g.targets[t]; p != nil {
			return p.done
		}
	}
	return nil
}
