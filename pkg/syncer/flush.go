package syncer

import (
	"context"
	"time"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// flush queues conntrack targets for the background flusher; it never
// blocks the sync path.
func (s *Syncer) flush(ts []conntrack.Target) {
	if len(ts) == 0 || s.k.Conntrack == nil {
		return
	}
	s.flushMu.Lock()
	s.pending = append(s.pending, ts...)
	s.flushMu.Unlock()
	select {
	case s.flushWake <- struct{}{}:
	default:
	}
}

// RunFlusher deletes queued conntrack flows until ctx ends. Targets queued
// while a pass runs are batched into the next one: one dump per pass,
// whatever the number of targets.
func (s *Syncer) RunFlusher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.flushWake:
		}
		s.FlushNow()
	}
}

// FlushNow deletes the queued flows at once and returns how many it deleted.
func (s *Syncer) FlushNow() int {
	s.flushMu.Lock()
	ts := s.pending
	s.pending = nil
	s.flushMu.Unlock()
	if len(ts) == 0 || s.k.Conntrack == nil {
		return 0
	}
	start := time.Now()
	n, err := s.k.Conntrack.DeleteFlows(ts)
	s.metrics.flushed(n, time.Since(start), err)
	if err != nil {
		// Keep them for the next pass: a missed flush is a black hole.
		s.flushMu.Lock()
		s.pending = append(ts, s.pending...)
		s.flushMu.Unlock()
	}
	return n
}
