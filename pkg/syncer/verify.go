package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/trace"
	"slices"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// DefaultVerifyBatch is how many virtual servers' real servers one Verify
// lists, unless SetVerifyBatch says otherwise: at 10,000 virtual servers
// and a 15 s resync, listing all of them each time took a third of the
// agent's CPU; in shares of 1,000, each is checked every 10 resyncs.
const DefaultVerifyBatch = 1000

// SetVerifyBatch sets how many virtual servers' real servers one Verify
// lists; 0 or less: all of them every time.
func (s *Syncer) SetVerifyBatch(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verifyBatch = n
}

// Verify compares the kernel with what the syncer programmed and repairs
// drift: a virtual or real server deleted or changed by hand comes back.
// It costs one dump of the virtual servers, which it compares with all of
// them, plus one listing of real servers for each of a share of them (the
// verify batch, in key order from where the last Verify stopped, so that
// every one is checked over a few resyncs); a virtual server missing from
// the dump has its real servers restored at once. It runs on the slow
// periodic resync only, and it takes the syncer's lock one virtual server
// at a time and reads and compares the VIPs and ipsets without it
// (verifyShared): changes keep flowing while it walks thousands of them.
// It returns the number of repairs.
func (s *Syncer) Verify(ctx context.Context) (int, error) {
	defer trace.StartRegion(ctx, "kubelvs: Verify").End()
	all, err := s.k.IPVS.ListVirtualServers(ctx)
	if err != nil {
		return 0, fmt.Errorf("verify: %w", err)
	}
	inKernel := make(map[ipvs.Key]ipvs.VirtualServer, len(all))
	for _, v := range all {
		inKernel[v.Key()] = v
	}
	s.mu.Lock()
	keys := make([]ipvs.Key, 0, len(s.services))
	for k := range s.services {
		keys = append(keys, k)
	}
	batch, from := s.verifyBatch, s.verifyNext
	s.mu.Unlock()

	// The virtual servers are all compared with the dump; the real
	// servers of a share of them only (a netlink request each), taken in
	// key order from where the last Verify stopped. While the syncer stays
	// busy (GiveWay runs out: syncs follow one another, as during a burst
	// of creates), the rest of the share is left to the next Verify, which
	// starts there: the listings were a third of the agent's CPU during a
	// burst, taken from the syncs it waits for. A virtual server missing
	// from the dump still has its real servers restored at once.
	slices.SortFunc(keys, ipvs.Key.Compare)
	n := len(keys)
	start, _ := slices.BinarySearchFunc(keys, from, ipvs.Key.Compare)
	share := n
	if batch > 0 && batch < n {
		share = batch
	}
	var next ipvs.Key
	if n > 0 {
		next = keys[(start+share)%n]
	}
	deferring := false
	repairs := 0
	var errs []error
	for i := 0; i < n; {
		busy := s.GiveWay(ctx)
		if i < share && !deferring {
			if !busy {
				c, err := s.verifyOne(ctx, keys[(start+i)%n], inKernel)
				repairs += c
				errs = append(errs, err)
				i++
				continue
			}
			deferring, next = true, keys[(start+i)%n]
		}
		// The attributes of the rest (those beyond the share, and all
		// that are left once deferring), a chunk under one hold of the
		// lock: one GiveWay per chunk, not per virtual server, or a
		// pass over 10,000 of them during a burst waited 20 ms for each.
		end := min(i+verifyChunk, n)
		chunk := make([]ipvs.Key, 0, end-i)
		for j := i; j < end; j++ {
			chunk = append(chunk, keys[(start+j)%n])
		}
		c, err := s.verifyAttrs(ctx, chunk, inKernel)
		repairs += c
		errs = append(errs, err)
		i = end
	}
	if n > 0 {
		s.mu.Lock()
		s.verifyNext = next
		s.mu.Unlock()
	}
	// Without the lock: these exec iptables and read kubelvs0 and the
	// ipsets into their writers' records (thousands of entries), and
	// touch nothing of the syncer's.
	if err := s.k.VIPs.EnsureDevice(ctx); err != nil {
		errs = append(errs, fmt.Errorf("verify kubelvs0: %w", err))
	}
	// Someone may have flushed the tables: rewrite our chains.
	if _, err := s.k.Netfilter.SyncRules(ctx, true); err != nil {
		errs = append(errs, fmt.Errorf("verify netfilter rules: %w", err))
	}
	errs = append(errs, s.verifyShared(ctx))
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.heldBy("Verify's ownership records", s.clock.Now())
	if s.k.ReleaseStale != nil {
		// Records of virtual servers that a failed add or delete left
		// behind; the ones the syncer programs stay.
		// A create in progress holds the records of what it adds.
		n, err := s.k.ReleaseStale(ctx, func(k ipvs.Key) bool {
			_, adding := s.reserved[k]
			return s.services[k] != nil || adding
		})
		repairs += n
		errs = append(errs, err)
	}
	return repairs, errors.Join(errs...)
}

// verifyChunk is how many virtual servers' attributes Verify compares
// under one hold of the syncer's lock: a few hundred map lookups and
// comparisons, well under a millisecond.
const verifyChunk = 256

// verifyAttrs repairs the attributes of programmed virtual servers that
// the dump holds, under one hold of the lock; one missing from the dump
// is restored with its real servers (verifyOne) after it.
func (s *Syncer) verifyAttrs(ctx context.Context, keys []ipvs.Key, inKernel map[ipvs.Key]ipvs.VirtualServer) (int, error) {
	var missing []ipvs.Key
	repairs := 0
	var errs []error
	func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		defer s.heldBy("Verify", s.clock.Now())
		for _, k := range keys {
			svc := s.services[k]
			if svc == nil {
				continue // deleted since the dump
			}
			kv, ok := inKernel[k]
			if !ok {
				missing = append(missing, k)
				continue
			}
			if kv.Equal(svc.vs) {
				continue
			}
			// A sync since the dump may have changed it; then this
			// writes what it wrote.
			repairs++
			svc.writes++
			err := s.k.IPVS.UpdateVirtualServer(ctx, svc.vs)
			s.metrics.op("virtual_server", "update", err)
			if err != nil {
				errs = append(errs, fmt.Errorf("restore virtual server %s: %w", k, err))
			}
		}
	}()
	for _, k := range missing {
		c, err := s.verifyOne(ctx, k, inKernel)
		repairs += c
		errs = append(errs, err)
	}
	return repairs, errors.Join(errs...)
}

// errStale marks a listing taken before a sync that may have changed it.
var errStale = errors.New("listing taken before a sync")

// verifyOne repairs one programmed virtual server and its real servers.
func (s *Syncer) verifyOne(ctx context.Context, k ipvs.Key, inKernel map[ipvs.Key]ipvs.VirtualServer) (int, error) {
	// The real servers are listed without the lock (a netlink dump, the
	// costly part), and the listing is used only if nothing wrote them
	// meanwhile (the service's write count; a sync of another
	// VirtualService does not count, so a burst of changes does not make
	// every listing be taken again); otherwise it is taken again under
	// the lock.
	s.mu.Lock()
	before := s.services[k]
	known := before != nil
	var writes uint64
	if known {
		writes = before.writes
	}
	s.mu.Unlock()
	kv, ok := inKernel[k]
	if !known {
		return 0, nil // deleted since the dump
	}
	var listed []ipvs.RealServer
	var listErr error
	if ok {
		listed, listErr = s.k.IPVS.ListRealServers(ctx, k)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.heldBy("Verify", s.clock.Now())
	svc := s.services[k]
	if svc == nil {
		return 0, nil // deleted meanwhile
	}
	if !ok || svc != before || svc.writes != writes {
		listed, listErr = nil, errStale
	}
	svc.writes++ // a repair below is a write too
	if !ok {
		// Added since the dump? Ask before re-adding, and re-add only on
		// a clear answer that it is not there.
		cur, err := s.k.IPVS.GetVirtualServer(ctx, k)
		switch {
		case err == nil:
			kv, ok = cur, true
		case !errors.Is(err, ipvs.ErrNotFound):
			return 0, fmt.Errorf("verify %s: %w", k, err)
		}
	}
	repairs := 0
	var errs []error
	switch {
	case !ok:
		repairs++
		err := s.k.IPVS.AddVirtualServer(ctx, svc.vs)
		s.metrics.op("virtual_server", "add", err)
		if err != nil {
			return repairs, fmt.Errorf("restore virtual server %s: %w", k, err)
		}
	case !kv.Equal(svc.vs):
		repairs++
		err := s.k.IPVS.UpdateVirtualServer(ctx, svc.vs)
		s.metrics.op("virtual_server", "update", err)
		if err != nil {
			return repairs, fmt.Errorf("restore virtual server %s: %w", k, err)
		}
	}
	var have map[ipvs.RealKey]ipvs.RealServer
	if ok {
		rs, err := listed, listErr
		if errors.Is(err, errStale) {
			rs, err = s.k.IPVS.ListRealServers(ctx, k)
		}
		if err != nil {
			return repairs, fmt.Errorf("verify %s: %w", k, err)
		}
		have = make(map[ipvs.RealKey]ipvs.RealServer, len(rs))
		for _, r := range rs {
			have[r.Key()] = r
		}
	}
	for rk, r := range svc.reals {
		want := r.server(rk)
		got, present := have[rk]
		if present && got.Equal(want) {
			continue
		}
		repairs++
		var err error
		if present {
			err = s.k.IPVS.UpdateRealServer(ctx, k, want)
			s.metrics.op("real_server", "update", err)
		} else {
			if _, draining := svc.draining[rk]; draining {
				// Gone while draining: nothing left to drain.
				delete(svc.draining, rk)
				delete(svc.reals, rk)
				continue
			}
			err = s.k.IPVS.AddRealServer(ctx, k, want)
			s.metrics.op("real_server", "add", err)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("restore real server %s of %s: %w", rk, k, err))
		}
	}
	for rk := range have {
		if _, ok := svc.reals[rk]; !ok {
			repairs++
			err := s.k.IPVS.DeleteRealServer(ctx, k, rk)
			s.metrics.op("real_server", "delete", err)
			if err != nil {
				errs = append(errs, fmt.Errorf("remove stray real server %s of %s: %w", rk, k, err))
			}
		}
	}
	s.recount(k, svc, true)
	return repairs, errors.Join(errs...)
}

// verifyShared compares the VIPs on kubelvs0 and the ipset members with
// what the syncer last wrote, and repairs them, without the syncer's lock
// for the comparison:
//
//   - the VIPs are listed and compared with a copy of what was last
//     written, taken under the lock with a generation (sharedGen); the
//     lock is taken again only on a difference, to rewrite them if nothing
//     wrote them meanwhile (else the listing is taken again, three times
//     at most), so a change made meanwhile is never undone;
//   - the members are compared by their writer, against what it read from
//     the kernel in the forced SyncRules just before: SyncMembers with a
//     copy of what the syncer last wrote, taken under the lock, under
//     sharedMu, which keeps the syncer's own member writes out meanwhile
//     (so the copy stays what the ipsets should hold) but not the
//     syncer's lock: a change of real servers never waits for it, and one
//     that writes members waits for that one diff, not for Verify.
//
// Before the first full sync, or after a failed write (the syncer does not
// know what the kernel holds), the writers compare both under the lock,
// with what the groups want.
func (s *Syncer) verifyShared(ctx context.Context) error {
	s.mu.Lock()
	if !s.sharedChecked || s.sharedDirty {
		defer s.mu.Unlock()
		defer s.heldBy("Verify's shared state", s.clock.Now())
		return s.syncShared(ctx, true)
	}
	s.mu.Unlock()
	var errs []error
	vipsOK := false
	for range 3 {
		s.mu.Lock()
		gen, vips := s.sharedGen, s.sh.vips.held()
		s.mu.Unlock()
		have, err := s.k.VIPs.ListAddresses(ctx)
		if err == nil && slices.Equal(distinct(have, netip.Addr.Compare), distinct(vips, netip.Addr.Compare)) {
			vipsOK = true
			break
		}
		s.mu.Lock()
		if s.sharedGen != gen {
			s.mu.Unlock()
			continue // written meanwhile: what was read may be the change
		}
		// Drift, or kubelvs0 could not be read: rewrite what was
		// written (its writer compares with kubelvs0 as EnsureDevice
		// read it).
		errs = append(errs, s.writeVIPs(ctx))
		s.mu.Unlock()
		vipsOK = true
		break
	}
	if !vipsOK {
		s.mu.Lock()
		errs = append(errs, s.writeVIPs(ctx))
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	m := s.sh.heldMembers()
	s.mu.Unlock()
	err := s.k.Netfilter.SyncMembers(ctx, sortMembers(m))
	s.membersUnknown = err != nil
	s.metrics.op("ipset", "sync", err)
	if err != nil {
		errs = append(errs, fmt.Errorf("ipset members: %w", err))
	}
	return errors.Join(errs...)
}

// writeVIPs rewrites the VIPs as last written; s.mu is held.
func (s *Syncer) writeVIPs(ctx context.Context) error {
	vips := s.sh.vips.held()
	slices.SortFunc(vips, netip.Addr.Compare)
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	s.sharedGen++
	err := s.k.VIPs.SyncAddresses(ctx, vips)
	s.vipsUnknown = err != nil
	s.metrics.op("vip", "sync", err)
	if err != nil {
		return fmt.Errorf("VIPs: %w", err)
	}
	return nil
}
