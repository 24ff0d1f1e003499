package syncer

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// Drain deletes the draining real servers whose connections have ended or
// whose drain timeout has passed. It reads the connection counters with one
// listing per virtual server that has draining real servers (and visits no
// other), and returns the VirtualServices whose draining set changed.
func (s *Syncer) Drain(ctx context.Context) ([]types.NamespacedName, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.heldBy("a drain pass", s.clock.Now())
	now := s.clock.Now()
	changed := map[types.NamespacedName]bool{}
	var errs []error
	var gone []conntrack.Target
	for k, svc := range s.drainSet {
		svc.writes++ // it may delete real servers
		rs, err := s.k.IPVS.ListRealServers(ctx, k)
		s.metrics.op("real_server", "list", err)
		if err != nil && !errors.Is(err, ipvs.ErrNotFound) {
			errs = append(errs, fmt.Errorf("drain %s: %w", k, err))
			continue
		}
		// Not found: the virtual server is gone from the kernel (Verify
		// restores it), and its draining real servers with it.
		conns := make(map[ipvs.RealKey]int, len(rs))
		for _, r := range rs {
			conns[r.Key()] = r.ActiveConns + r.InactiveConns
		}
		for rk, deadline := range svc.draining {
			n, present := conns[rk]
			if present && n > 0 && now.Before(deadline) {
				continue
			}
			if present {
				err := s.k.IPVS.DeleteRealServer(ctx, k, rk)
				s.metrics.op("real_server", "delete", err)
				if err != nil {
					errs = append(errs, fmt.Errorf("delete drained real server %s of %s: %w", rk, k, err))
					continue
				}
			}
			delete(svc.draining, rk)
			delete(svc.reals, rk)
			changed[svc.owner] = true
			if svc.flushTCP || k.Protocol == ipvs.UDP {
				gone = append(gone, target(k, rk))
			}
		}
		s.recount(k, svc, true) // leaves drainSet once it is empty
	}
	s.flush(gone)
	s.metrics.setDraining(s.drainingLocked())
	s.metrics.setProgrammed(len(s.services), s.realCount())
	out := make([]types.NamespacedName, 0, len(changed))
	for n := range changed {
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// Draining returns how many real servers of a VirtualService are draining.
func (s *Syncer) Draining(name types.NamespacedName) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainingOf(name)
}

func (s *Syncer) drainingOf(name types.NamespacedName) int {
	g := s.groups[name]
	if g == nil {
		return 0
	}
	n := 0
	for _, k := range g.keys {
		if svc := s.services[k]; svc != nil {
			n += len(svc.draining)
		}
	}
	return n
}

func (s *Syncer) drainingLocked() int { return s.nDraining }
