package ipvs

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// The ipsets that record which virtual servers kubelvs created, one per
// address family (an ipset holds one family).
const (
	OwnershipSetV4 = "KUBELVS-VIRTUAL-SERVERS"
	OwnershipSetV6 = "KUBELVS-VIRTUAL-SERVERS-V6"
)

// Ownership records which virtual servers kubelvs created. Guard consults it
// before any change and updates it on add and delete.
type Ownership interface {
	// Owns reports whether kubelvs created the virtual server.
	Owns(k Key) bool
	// Claim records the virtual server as kubelvs's.
	Claim(k Key) error
	// Release forgets the virtual server.
	Release(k Key) error
	// Owned lists what is recorded.
	Owned() []Key
}

// SetOwnership keeps the ownership record in the KUBELVS-VIRTUAL-SERVERS
// ipsets (hash:ip,port: "VIP,proto:port"), so it survives agent restarts and
// can be read by operators with `ipset list`. Membership is cached in memory:
// only kubelvs writes these sets.
type SetOwnership struct {
	sets ipset.Interface

	mu    sync.RWMutex
	owned map[Key]struct{}
}

var _ Ownership = (*SetOwnership)(nil)

// OwnershipSets returns the descriptions of the two ownership ipsets.
func OwnershipSets() []ipset.Set {
	return []ipset.Set{
		{Name: OwnershipSetV4, Type: ipset.HashIPPort, Family: ipset.IPv4},
		{Name: OwnershipSetV6, Type: ipset.HashIPPort, Family: ipset.IPv6},
	}
}

// NewSetOwnership ensures the ownership ipsets exist and loads them.
func NewSetOwnership(sets ipset.Interface) (*SetOwnership, error) {
	o := &SetOwnership{sets: sets, owned: map[Key]struct{}{}}
	for _, s := range OwnershipSets() {
		if err := sets.EnsureSet(s); err != nil {
			return nil, fmt.Errorf("ownership record: %w", err)
		}
		es, err := sets.ListEntries(s.Name)
		if err != nil {
			return nil, fmt.Errorf("ownership record: %w", err)
		}
		for _, e := range es {
			o.owned[Key{Address: e.IP, Protocol: Protocol(e.Protocol), Port: e.Port}] = struct{}{}
		}
	}
	return o, nil
}

func ownershipEntry(k Key) (string, ipset.Entry) {
	name := OwnershipSetV4
	if k.Address.Is6() {
		name = OwnershipSetV6
	}
	return name, ipset.Entry{IP: k.Address, Protocol: uint8(k.Protocol), Port: k.Port}
}

// Owns reports whether k is recorded.
func (o *SetOwnership) Owns(k Key) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	_, ok := o.owned[k]
	return ok
}

// Owned returns every recorded key, sorted.
func (o *SetOwnership) Owned() []Key {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]Key, 0, len(o.owned))
	for k := range o.owned {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// Claim records k in the ipset, then in memory.
func (o *SetOwnership) Claim(k Key) error {
	name, e := ownershipEntry(k)
	if err := o.sets.AddEntry(name, e); err != nil {
		return fmt.Errorf("claim %s: %w", k, err)
	}
	o.mu.Lock()
	o.owned[k] = struct{}{}
	o.mu.Unlock()
	return nil
}

// Release removes k from the ipset and from memory.
func (o *SetOwnership) Release(k Key) error {
	name, e := ownershipEntry(k)
	if err := o.sets.DelEntry(name, e); err != nil {
		return fmt.Errorf("release %s: %w", k, err)
	}
	o.mu.Lock()
	delete(o.owned, k)
	o.mu.Unlock()
	return nil
}

// Guard is an Interface that refuses to change or delete virtual servers
// (and their real servers) that are not recorded in its Ownership, and keeps
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
	inner Interface
	own   Ownership

	// ListingTTL is how long a listing of the virtual servers is trusted
	// for the existence check of a fresh add (DefaultListingTTL; 0 turns
	// the listing off and asks the kernel for each key). Set it before use.
	ListingTTL time.Duration
	now        func() time.Time

	mu sync.Mutex
	// listed holds the keys of the last listing, as this guard's adds and
	// deletes changed them since; nil when there is none.
	listed   map[Key]struct{}
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
	_ Interface         = (*Guard)(nil)
	_ RealServerBatcher = (*Guard)(nil)
)

// NewGuard wraps inner.
func NewGuard(inner Interface, own Ownership) *Guard {
	return &Guard{inner: inner, own: own, ListingTTL: DefaultListingTTL, now: time.Now}
}

// Owns reports whether the virtual server is kubelvs's; use it as the keep
// function of List to see only owned services.
func (g *Guard) Owns(k Key) bool { return g.own.Owns(k) }

// exists reports whether the kernel holds k.
func (g *Guard) exists(k Key) (bool, error) {
	_, err := g.inner.GetVirtualServer(k)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// free reports whether the kernel holds no virtual server k: without a
// request when a recent listing says so, else by asking the kernel (a key a
// listing shows may have gone since: a listing only ever spares a check).
func (g *Guard) free(k Key) (bool, error) {
	if g.listedFree(k) {
		return true, nil
	}
	ok, err := g.exists(k)
	return !ok && err == nil, err
}

// listedFree reports whether a listing at most ListingTTL old lacks k. When
// the listing has just expired in the middle of a burst of adds (it answered
// relistAfter checks), it takes a new one.
func (g *Guard) listedFree(k Key) bool {
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
		_, err := g.ListVirtualServers()
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
func (g *Guard) noteListed(k Key, present bool) {
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
func (g *Guard) requireOwned(k Key) error {
	if g.own.Owns(k) {
		return nil
	}
	ok, err := g.exists(k)
	switch {
	case err != nil:
		return err
	case ok:
		return fmt.Errorf("%s: %w", k, ErrNotOwned)
	default:
		return fmt.Errorf("virtual server %s: %w", k, ErrNotFound)
	}
}

// ReleaseStale releases the ownership records of virtual servers that are
// not in the kernel (asked one by one, never guessed from a listing) and
// that keep does not claim. Such a record is left when a failed add or a
// delete could not release it; kept, it would let kubelvs take a virtual
// server that another program creates later at that address. It returns
// how many it released.
func (g *Guard) ReleaseStale(keep func(Key) bool) (int, error) {
	n := 0
	var errs []error
	for _, k := range g.own.Owned() {
		if keep(k) {
			continue
		}
		_, err := g.inner.GetVirtualServer(k)
		switch {
		case err == nil:
			continue // there: ours, adopted at the next start
		case !errors.Is(err, ErrNotFound):
			errs = append(errs, err)
			continue
		}
		if err := g.own.Release(k); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// ListVirtualServers lists all virtual servers, owned or not, and keeps
// the listing for the existence checks of fresh adds.
func (g *Guard) ListVirtualServers() ([]VirtualServer, error) {
	if g.ListingTTL <= 0 {
		return g.inner.ListVirtualServers()
	}
	// Taken before the dump: the listing may be older than it says, never
	// younger.
	at := g.now()
	vss, err := g.inner.ListVirtualServers()
	if err != nil {
		return nil, err
	}
	listed := make(map[Key]struct{}, len(vss))
	for _, vs := range vss {
		listed[vs.Key()] = struct{}{}
	}
	g.mu.Lock()
	g.listed, g.listedAt, g.spared = listed, at, 0
	g.mu.Unlock()
	return vss, nil
}

// GetVirtualServer reads one virtual server, owned or not.
func (g *Guard) GetVirtualServer(k Key) (VirtualServer, error) { return g.inner.GetVirtualServer(k) }

// ListRealServers reads the real servers of a virtual server, owned or not.
func (g *Guard) ListRealServers(k Key) ([]RealServer, error) { return g.inner.ListRealServers(k) }

// Close closes the inner Interface.
func (g *Guard) Close() error { return g.inner.Close() }

// AddVirtualServer claims the key first (a crash then leaves a record
// without a kernel object, which a later delete clears, never a kernel object
// without a record) and refuses a key another program already uses: known
// to be there before the claim (see Guard), or found there by the kernel's
// add.
func (g *Guard) AddVirtualServer(vs VirtualServer) error {
	k := vs.Key()
	fresh := !g.own.Owns(k)
	if fresh {
		ok, err := g.free(k)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("add %s: %w", k, ErrNotOwned)
		}
		if err := g.own.Claim(k); err != nil {
			return err
		}
	}
	err := g.inner.AddVirtualServer(vs)
	if err == nil || errors.Is(err, ErrExists) {
		g.noteListed(k, true)
	}
	if err != nil && fresh {
		// Another program created it after our check, or the add failed:
		// either way it is not ours.
		if rerr := g.own.Release(k); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if errors.Is(err, ErrExists) {
			err = fmt.Errorf("add %s: %w", k, ErrNotOwned)
		}
	}
	return err
}

// UpdateVirtualServer updates an owned virtual server.
func (g *Guard) UpdateVirtualServer(vs VirtualServer) error {
	if err := g.requireOwned(vs.Key()); err != nil {
		return err
	}
	return g.inner.UpdateVirtualServer(vs)
}

// DeleteVirtualServer deletes an owned virtual server and forgets it. A key
// that is neither owned nor present is already gone: success.
func (g *Guard) DeleteVirtualServer(k Key) error {
	if err := g.requireOwned(k); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	if err := g.inner.DeleteVirtualServer(k); err != nil {
		return err
	}
	g.noteListed(k, false)
	return g.own.Release(k)
}

// AddRealServer adds a real server to an owned virtual server.
func (g *Guard) AddRealServer(k Key, rs RealServer) error {
	if err := g.requireOwned(k); err != nil {
		return err
	}
	return g.inner.AddRealServer(k, rs)
}

// AddRealServers adds real servers to an owned virtual server, batched when
// the inner Interface can.
func (g *Guard) AddRealServers(k Key, rss []RealServer) []error {
	if err := g.requireOwned(k); err != nil {
		errs := make([]error, len(rss))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	return AddRealServers(g.inner, k, rss)
}

// UpdateRealServer updates a real server of an owned virtual server.
func (g *Guard) UpdateRealServer(k Key, rs RealServer) error {
	if err := g.requireOwned(k); err != nil {
		return err
	}
	return g.inner.UpdateRealServer(k, rs)
}

// DeleteRealServer removes a real server of an owned virtual server.
func (g *Guard) DeleteRealServer(k Key, rk RealKey) error {
	if err := g.requireOwned(k); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return g.inner.DeleteRealServer(k, rk)
}

func sortKeys(ks []Key) { slices.SortFunc(ks, Key.Compare) }
