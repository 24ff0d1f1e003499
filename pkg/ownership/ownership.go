// Package ownership records which IPVS virtual servers kubelvs created (in
// the KUBELVS-VIRTUAL-SERVERS ipsets, so the record survives restarts) and
// guards an ipvs.Interface so that nothing else's virtual servers are ever
// changed or deleted: the rule "only touch what we own" in one place, on
// top of the kernel interfaces, free of netlink.
package ownership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// The ipsets that record which virtual servers kubelvs created, one per
// address family (an ipset holds one family).
const (
	SetV4 = "KUBELVS-VIRTUAL-SERVERS"
	SetV6 = "KUBELVS-VIRTUAL-SERVERS-V6"
)

// Records is the record of which virtual servers kubelvs created. Guard consults it
// before any change and updates it on add and delete.
type Records interface {
	// Owns reports whether kubelvs created the virtual server.
	Owns(k ipvs.Key) bool
	// Claim records the virtual server as kubelvs's.
	Claim(ctx context.Context, k ipvs.Key) error
	// Release forgets the virtual server.
	Release(ctx context.Context, k ipvs.Key) error
	// Owned lists what is recorded.
	Owned() []ipvs.Key
}

// SetRecords keeps the ownership record in the KUBELVS-VIRTUAL-SERVERS
// ipsets (hash:ip,port: "VIP,proto:port"), so it survives agent restarts and
// can be read by operators with `ipset list`. Membership is cached in memory:
// only kubelvs writes these sets.
type SetRecords struct {
	sets ipset.Interface

	mu    sync.RWMutex
	owned map[ipvs.Key]struct{}
}

var _ Records = (*SetRecords)(nil)

// Sets returns the descriptions of the two ownership ipsets.
func Sets() []ipset.Set {
	return []ipset.Set{
		{Name: SetV4, Type: ipset.HashIPPort, Family: ipset.IPv4},
		{Name: SetV6, Type: ipset.HashIPPort, Family: ipset.IPv6},
	}
}

// NewSetRecords ensures the ownership ipsets exist and loads them.
func NewSetRecords(ctx context.Context, sets ipset.Interface) (*SetRecords, error) {
	o := &SetRecords{sets: sets, owned: map[ipvs.Key]struct{}{}}
	for _, s := range Sets() {
		if err := sets.EnsureSet(ctx, s); err != nil {
			return nil, fmt.Errorf("ownership record: %w", err)
		}
		es, err := sets.ListEntries(ctx, s.Name)
		if err != nil {
			return nil, fmt.Errorf("ownership record: %w", err)
		}
		for _, e := range es {
			o.owned[ipvs.Key{Address: e.IP, Protocol: ipvs.Protocol(e.Protocol), Port: e.Port}] = struct{}{}
		}
	}
	return o, nil
}

func ownershipEntry(k ipvs.Key) (string, ipset.Entry) {
	name := SetV4
	if k.Address.Is6() {
		name = SetV6
	}
	return name, ipset.Entry{IP: k.Address, Protocol: uint8(k.Protocol), Port: k.Port}
}

// Owns reports whether k is recorded.
func (o *SetRecords) Owns(k ipvs.Key) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	_, ok := o.owned[k]
	return ok
}

// Owned returns every recorded key, sorted.
func (o *SetRecords) Owned() []ipvs.Key {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]ipvs.Key, 0, len(o.owned))
	for k := range o.owned {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// Claim records k in the ipset, then in memory.
func (o *SetRecords) Claim(ctx context.Context, k ipvs.Key) error {
	name, e := ownershipEntry(k)
	if err := o.sets.AddEntry(ctx, name, e); err != nil {
		return fmt.Errorf("claim %s: %w", k, err)
	}
	o.mu.Lock()
	o.owned[k] = struct{}{}
	o.mu.Unlock()
	return nil
}

// Release removes k from the ipset and from memory.
func (o *SetRecords) Release(ctx context.Context, k ipvs.Key) error {
	name, e := ownershipEntry(k)
	if err := o.sets.DelEntry(ctx, name, e); err != nil {
		return fmt.Errorf("release %s: %w", k, err)
	}
	o.mu.Lock()
	delete(o.owned, k)
	o.mu.Unlock()
	return nil
}

// Guard is an Interface that refuses to change or delete virtual servers
// (and their real servers) that are not recorded in its Records, and keeps
// the record up to date as it adds and deletes. Reads pass through.
//
// Adding a virtual server kubelvs does not own yet claims its key first,
// then asks the kernel to create it: the kernel's add is atomic and fails
// with EEXIST on a key another program holds, and the guard then releases
// the claim and refuses. That alone keeps foreign virtual servers safe while
// kubelvs runs; what a crash between the claim and its release would leave
// behind (a foreign key recorded as kubelvs's, which a restarted kubelvs
// would then change or delete) is what the existence check before the
// claim avoids: a key the kernel is known to hold is refused without being
// claimed. The guard knows that from the last listing of every virtual
// server (ListVirtualServers, which the syncer calls when it adopts and
// verifies), kept up to date with its own adds and deletes and trusted for
// ListingTTL, and otherwise asks the kernel for the one key: a cold sync of
// thousands of virtual servers then skips a round trip per virtual server,
// and only a key a foreign program created in the last ListingTTL is claimed
// and released (once: the refusal teaches the guard it is there).
type Guard struct {
	inner ipvs.Interface
	own   Records

	// ListingTTL is how long a listing of the virtual servers is trusted
	// for the existence check of a fresh add (DefaultListingTTL; 0 turns
	// the listing off and asks the kernel for each key). Set it before use.
	ListingTTL time.Duration
	now        func() time.Time

	mu sync.Mutex
	// listed holds the keys of the last listing, as this guard's adds and
	// deletes changed them since; nil when there is none.
	listed   map[ipvs.Key]struct{}
	listedAt time.Time
	// spared counts the existence checks the current listing answered.
	spared int
}

// DefaultListingTTL is how long a Guard trusts a listing of the virtual
// servers to tell that a key is free (see Guard).
const DefaultListingTTL = 10 * time.Second

// relistAfter is how many existence checks an expired listing must have
// answered for a fresh add to take a new listing rather than ask for its
// own key: a burst of adds (a cold sync) keeps going on listings, an
// occasional add costs one small request instead of a dump of the table.
const relistAfter = 64

var (
	_ ipvs.Interface         = (*Guard)(nil)
	_ ipvs.RealServerBatcher = (*Guard)(nil)
)

// NewGuard wraps inner.
func NewGuard(inner ipvs.Interface, own Records) *Guard {
	return &Guard{inner: inner, own: own, ListingTTL: DefaultListingTTL, now: time.Now}
}

// Owns reports whether the virtual server is kubelvs's; use it as the keep
// function of List to see only owned services.
func (g *Guard) Owns(k ipvs.Key) bool { return g.own.Owns(k) }

// exists reports whether the kernel holds k.
func (g *Guard) exists(ctx context.Context, k ipvs.Key) (bool, error) {
	_, err := g.inner.GetVirtualServer(ctx, k)
	if errors.Is(err, ipvs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// free reports whether the kernel holds no virtual server k: without a
// request when a recent listing says so, else by asking the kernel (a key a
// listing shows may have gone since: a listing only ever spares a check).
func (g *Guard) free(ctx context.Context, k ipvs.Key) (bool, error) {
	if g.listedFree(ctx, k) {
		return true, nil
	}
	ok, err := g.exists(ctx, k)
	return !ok && err == nil, err
}

// listedFree reports whether a listing at most ListingTTL old lacks k. When
// the listing has just expired in the middle of a burst of adds (it answered
// relistAfter checks), it takes a new one.
func (g *Guard) listedFree(ctx context.Context, k ipvs.Key) bool {
	if g.ListingTTL <= 0 {
		return false
	}
	g.mu.Lock()
	age := g.now().Sub(g.listedAt)
	usable := g.listed != nil && age <= g.ListingTTL
	relist := g.listed != nil && !usable && age <= 2*g.ListingTTL && g.spared >= relistAfter
	g.mu.Unlock()
	if relist {
		// ListVirtualServers records the new listing; on error the
		// kernel is asked for k alone.
		_, err := g.ListVirtualServers(ctx)
		usable = err == nil
	}
	if !usable {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_, present := g.listed[k]
	if !present {
		g.spared++
	}
	return !present
}

// noteListed records that the kernel holds (present) or lacks k, in the
// listing if there is one.
func (g *Guard) noteListed(k ipvs.Key, present bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.listed == nil {
		return
	}
	if present {
		g.listed[k] = struct{}{}
	} else {
		delete(g.listed, k)
	}
}

// requireOwned returns nil if k is owned; otherwise ErrNotOwned if it exists,
// or ErrNotFound if it does not.
func (g *Guard) requireOwned(ctx context.Context, k ipvs.Key) error {
	if g.own.Owns(k) {
		return nil
	}
	ok, err := g.exists(ctx, k)
	switch {
	case err != nil:
		return err
	case ok:
		return fmt.Errorf("%s: %w", k, ipvs.ErrNotOwned)
	default:
		return fmt.Errorf("virtual server %s: %w", k, ipvs.ErrNotFound)
	}
}

// ReleaseStale releases the ownership records of virtual servers that are
// not in the kernel (asked one by one, never guessed from a listing) and
// that keep does not claim. Such a record is left when a failed add or a
// delete could not release it; kept, it would let kubelvs take a virtual
// server that another program creates later at that address. It returns
// how many it released.
func (g *Guard) ReleaseStale(ctx context.Context, keep func(ipvs.Key) bool) (int, error) {
	n := 0
	var errs []error
	for _, k := range g.own.Owned() {
		if keep(k) {
			continue
		}
		_, err := g.inner.GetVirtualServer(ctx, k)
		switch {
		case err == nil:
			continue // there: ours, adopted at the next start
		case !errors.Is(err, ipvs.ErrNotFound):
			errs = append(errs, err)
			continue
		}
		if err := g.own.Release(ctx, k); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// ListVirtualServers lists all virtual servers, owned or not, and keeps
// the listing for the existence checks of fresh adds.
func (g *Guard) ListVirtualServers(ctx context.Context) ([]ipvs.VirtualServer, error) {
	if g.ListingTTL <= 0 {
		return g.inner.ListVirtualServers(ctx)
	}
	// Taken before the dump: the listing may be older than it says, never
	// younger.
	at := g.now()
	vss, err := g.inner.ListVirtualServers(ctx)
	if err != nil {
		return nil, err
	}
	listed := make(map[ipvs.Key]struct{}, len(vss))
	for _, vs := range vss {
		listed[vs.Key()] = struct{}{}
	}
	g.mu.Lock()
	g.listed, g.listedAt, g.spared = listed, at, 0
	g.mu.Unlock()
	return vss, nil
}

// GetVirtualServer reads one virtual server, owned or not.
func (g *Guard) GetVirtualServer(ctx context.Context, k ipvs.Key) (ipvs.VirtualServer, error) {
	return g.inner.GetVirtualServer(ctx, k)
}

// ListRealServers reads the real servers of a virtual server, owned or not.
func (g *Guard) ListRealServers(ctx context.Context, k ipvs.Key) ([]ipvs.RealServer, error) {
	return g.inner.ListRealServers(ctx, k)
}

// Close closes the inner Interface.
func (g *Guard) Close() error { return g.inner.Close() }

// AddVirtualServer claims the key first (a crash then leaves a record
// without a kernel object, which a later delete clears, never a kernel object
// without a record) and refuses a key another program already uses: known
// to be there before the claim (see Guard), or found there by the kernel's
// add.
func (g *Guard) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	k := vs.Key()
	fresh := !g.own.Owns(k)
	if fresh {
		ok, err := g.free(ctx, k)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("add %s: %w", k, ipvs.ErrNotOwned)
		}
		if err := g.own.Claim(ctx, k); err != nil {
			return err
		}
	}
	err := g.inner.AddVirtualServer(ctx, vs)
	if err == nil || errors.Is(err, ipvs.ErrExists) {
		g.noteListed(k, true)
	}
	if err != nil && fresh {
		// Another program created it after our check, or the add failed
		// (a canceled ctx included): either way it is not ours, and the
		// record goes even if ctx is done.
		if rerr := g.own.Release(context.WithoutCancel(ctx), k); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if errors.Is(err, ipvs.ErrExists) {
			err = fmt.Errorf("add %s: %w", k, ipvs.ErrNotOwned)
		}
	}
	return err
}

// UpdateVirtualServer updates an owned virtual server.
func (g *Guard) UpdateVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	if err := g.requireOwned(ctx, vs.Key()); err != nil {
		return err
	}
	return g.inner.UpdateVirtualServer(ctx, vs)
}

// DeleteVirtualServer deletes an owned virtual server and forgets it. A key
// that is neither owned nor present is already gone: success.
func (g *Guard) DeleteVirtualServer(ctx context.Context, k ipvs.Key) error {
	if err := g.requireOwned(ctx, k); err != nil {
		if errors.Is(err, ipvs.ErrNotFound) {
			return nil
		}
		return err
	}
	if err := g.inner.DeleteVirtualServer(ctx, k); err != nil {
		return err
	}
	g.noteListed(k, false)
	return g.own.Release(ctx, k)
}

// AddRealServer adds a real server to an owned virtual server.
func (g *Guard) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := g.requireOwned(ctx, k); err != nil {
		return err
	}
	return g.inner.AddRealServer(ctx, k, rs)
}

// AddRealServers adds real servers to an owned virtual server, batched when
// the inner Interface can.
func (g *Guard) AddRealServers(ctx context.Context, k ipvs.Key, rss []ipvs.RealServer) []error {
	if err := g.requireOwned(ctx, k); err != nil {
		errs := make([]error, len(rss))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	return ipvs.AddRealServers(ctx, g.inner, k, rss)
}

// UpdateRealServer updates a real server of an owned virtual server.
func (g *Guard) UpdateRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := g.requireOwned(ctx, k); err != nil {
		return err
	}
	return g.inner.UpdateRealServer(ctx, k, rs)
}

// DeleteRealServer removes a real server of an owned virtual server.
func (g *Guard) DeleteRealServer(ctx context.Context, k ipvs.Key, rk ipvs.RealKey) error {
	if err := g.requireOwned(ctx, k); err != nil {
		if errors.Is(err, ipvs.ErrNotFound) {
			return nil
		}
		return err
	}
	return g.inner.DeleteRealServer(ctx, k, rk)
}

func sortKeys(ks []ipvs.Key) { slices.SortFunc(ks, ipvs.Key.Compare) }
