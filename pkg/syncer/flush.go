package syncer

import (
	"context"
	"time"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// Flush retry: a failed pass is retried after FlushRetryMin, doubling up
// to FlushRetryMax, until one succeeds; new targets do not reset it.
var (
	FlushRetryMin = 250 * time.Millisecond
	FlushRetryMax = 30 * time.Second
)

// MaxFlushPending bounds the distinct targets waiting for a flush while
// conntrack keeps failing; beyond it the oldest are given up (counted in
// kubelvs_conntrack_flush_given_up_total) rather than grow without bound.
const MaxFlushPending = 65536

// flush queues conntrack targets for the background flusher; it never
// blocks the sync path. A target already queued is queued once.
func (s *Syncer) flush(ts []conntrack.Target) {
	if len(ts) == 0 || s.k.Conntrack == nil {
		return
	}
	s.flushMu.Lock()
	s.queueFlush(ts)
	s.flushMu.Unlock()
	select {
	case s.flushWake <- struct{}{}:
	default:
	}
}

// queueFlush appends the targets not yet pending; flushMu is held.
func (s *Syncer) queueFlush(ts []conntrack.Target) {
	if s.pendingSet == nil {
		s.pendingSet = map[conntrack.Target]bool{}
	}
	for _, t := range ts {
		if !s.pendingSet[t] {
			s.pendingSet[t] = true
			s.pending = append(s.pending, t)
		}
	}
	if over := len(s.pending) - MaxFlushPending; over > 0 {
		for _, t := range s.pending[:over] {
			delete(s.pendingSet, t)
		}
		s.pending = append([]conntrack.Target(nil), s.pending[over:]...)
		s.metrics.flushGivenUp(over)
	}
	s.metrics.setFlushPending(len(s.pending))
}

// RunFlusher deletes queued conntrack flows until ctx ends. Targets queued
// while a pass runs are batched into the next one: one dump per pass,
// whatever the number of targets. A failed pass is retried with backoff
// until it succeeds: stale flows of a removed real server are a black hole.
func (s *Syncer) RunFlusher(ctx context.Context) {
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.flushWake:
			if backoff > 0 {
				continue // the retry timer is running; it takes these too
			}
		case <-retry:
		}
		if _, err := s.flushPass(ctx); err != nil {
			backoff = min(max(2*backoff, FlushRetryMin), FlushRetryMax)
			retry = time.After(backoff)
			continue
		}
		backoff, retry = 0, nil
	}
}

// FlushNow deletes the queued flows at once and returns how many it deleted.
func (s *Syncer) FlushNow(ctx context.Context) int {
	n, _ := s.flushPass(ctx)
	return n
}

// flushPass runs one pass; a failed one keeps its targets queued.
func (s *Syncer) flushPass(ctx context.Context) (int, error) {
	s.flushMu.Lock()
	ts := s.pending
	s.pending, s.pendingSet = nil, nil
	s.flushMu.Unlock()
	if len(ts) == 0 || s.k.Conntrack == nil {
		return 0, nil
	}
	start := time.Now()
	n, err := s.k.Conntrack.DeleteFlows(ctx, ts)
	s.metrics.flushed(n, time.Since(start), err)
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if err != nil {
		// Keep them, ahead of what was queued since: a missed flush is a
		// black hole.
		queued := s.pending
		s.pending, s.pendingSet = nil, nil
		s.queueFlush(ts)
		s.queueFlush(queued)
		return n, err
	}
	s.metrics.setFlushPending(len(s.pending))
	return n, nil
}
