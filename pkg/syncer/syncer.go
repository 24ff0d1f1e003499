// Package syncer applies desired state to the kernel. It remembers what it
// programmed and writes only the difference: a change to one VirtualService
// touches only that VirtualService's kernel objects. It adopts what it owns
// at start without deleting and re-adding (connections survive a restart),
// drains removed real servers, and flushes the conntrack flows of the real
// servers that leave.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/trace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netif"
)

// Kernel is what the syncer writes to.
type Kernel struct {
	// IPVS should refuse to touch what kubelvs does not own (ownership.Guard).
	IPVS ipvs.Interface
	// Owns reports whether kubelvs created a virtual server.
	Owns func(ipvs.Key) bool
	// ReleaseStale releases the ownership records of virtual servers that
	// are not in the kernel and that keep does not claim (ownership.Guard);
	// nil: records are not tidied.
	ReleaseStale func(ctx context.Context, keep func(ipvs.Key) bool) (int, error)
	// VIPs holds the addresses on kubelvs0.
	VIPs netif.Interface
	// Netfilter holds the rules and their ipset members (package
	// iptables; netfiltertest in tests). ListMembers is read to keep the
	// members of VirtualServices on hold across a restart; while it
	// fails, the VIPs and ipset members stay as they are.
	Netfilter netfilter.Interface
	// Conntrack deletes stale flows; nil turns flushing off.
	Conntrack conntrack.Interface
}

// Syncer keeps the kernel equal to the desired groups.
type Syncer struct {
	k       Kernel
	clock   clock.PassiveClock
	metrics *Metrics

	flushMu    sync.Mutex
	pending    []conntrack.Target // flows to delete, batched, oldest first
	pendingSet map[conntrack.Target]bool
	flushWake  chan struct{}

	mu       sync.Mutex
	services map[ipvs.Key]*service
	groups   map[types.NamespacedName]*group
	// sharedMu is held, under mu, around each write of the VIPs and
	// members and the update of what sh records of it and of sharedGen
	// (which mu also guards), so that Verify can have the members
	// compared by their writer without mu (verifyShared).
	sharedMu sync.Mutex
	// sh is what all groups together want of the VIPs on kubelvs0 and the
	// ipset members, kept as they change (setGroup), and what was last
	// written of them.
	sh sharedState
	// sharedGen counts the writes of the VIPs and members (and Adopt's
	// reading of the VIPs), so that Verify can tell whether what it read
	// of them without the lock is still what the kernel holds.
	sharedGen uint64
	// sharedDirty is set when a group's VIPs or members changed since the
	// shared state was last written, so that a change that touches only
	// real servers does not rebuild the VIPs and members of every group.
	sharedDirty bool
	// sharedChecked is set once a full sync has compared the shared state
	// with the kernel; later full syncs compare with what they wrote, and
	// Verify still reads the kernel on the slow periodic pass.
	sharedChecked bool
	// vipsUnknown and membersUnknown are set when the last write of the
	// VIPs or of the members failed: the kernel may hold part of it, so
	// what was last written (sh) no longer tells what it holds
	// and the next write is whole (SyncAddresses, SyncMembers), which its
	// writer compares with the kernel, rather than a difference from what
	// was written. sharedMu guards them, as Verify writes the members
	// without mu.
	vipsUnknown, membersUnknown bool
	// Totals kept as services change (recount), so that neither a change
	// nor a drain pass walks every service: the cost of a change is its
	// own, however many virtual servers the node has.
	nReals, nDraining int
	drainSet          map[ipvs.Key]*service // services with draining real servers
	// held are the VirtualServices whose desired state is not known
	// (desired.Group.Hold): their kernel objects are kept as they are.
	held map[types.NamespacedName]bool
	// reads hands out ReadTokens; applied is, per VirtualService, the
	// token of the latest sync of it that was applied (a removal too),
	// so that a sync whose inputs were read earlier does not put an older
	// state back (desired.Group.Read). Entries older than a full sync's
	// token are dropped by it: every later token is newer.
	reads   atomic.Uint64
	applied map[types.NamespacedName]uint64
	// verifyBatch is how many virtual servers' real servers one Verify
	// lists (0: all); verifyNext is the key it starts from next time.
	verifyBatch int
	verifyNext  ipvs.Key
	// waiting counts the SyncGroups waiting for mu, which a resync lets
	// go first (yield); entered counts those that took it; busy those
	// waiting for or holding it, for which background work gives way
	// (GiveWay).
	waiting atomic.Int32
	entered atomic.Uint64
	busy    atomic.Int32
	// giveWayMax is maxGiveWay (tests set more).
	giveWayMax time.Duration
	// creating are the groups whose virtual servers a create is adding
	// without mu (create), and reserved their keys; created (on mu) is
	// signaled when one is done, for the syncs that wait for it.
	creating map[types.NamespacedName]bool
	reserved map[ipvs.Key]types.NamespacedName
	created  *sync.Cond
	// lastHolder and lastHeld say which work last released mu and how
	// long it had held it (heldBy), so that a sync that waited for the
	// lock can tell what it waited behind (Result.Behind).
	lastHolder string
	lastHeld   time.Duration
}

// keptGroup owns, after a restart, the adopted virtual servers that no
// VirtualService claims while some VirtualService is on hold: they may be
// its, so they stay, with their VIPs and ipset members, until no
// VirtualService the syncer has never programmed is on hold. A VirtualService
// that claims one of them takes it over in place.
var keptGroup = types.NamespacedName{Name: "(kept while VirtualServices are on hold)"}

// service is one programmed virtual server.
type service struct {
	owner    types.NamespacedName // zero while adopted and not yet claimed
	vs       ipvs.VirtualServer
	reals    map[ipvs.RealKey]realServer
	draining map[ipvs.RealKey]time.Time // deadline
	flushTCP bool
	// counted is what the syncer's totals hold of this service.
	counted struct{ reals, draining int }
	// writes counts the syncs, drains and repairs that may have written
	// its real servers, so that Verify can tell whether a listing of them
	// it took without the lock is still what the kernel holds.
	writes uint64
}

// realServer is what the syncer remembers of a programmed real server besides its
// key: a map slot of 40 bytes instead of 96 for the whole RealServer with
// its connection counters, which matters at 100,000 real servers.
type realServer struct {
	weight int32
	fwd    ipvs.Forwarding
}

func realOf(r ipvs.RealServer) realServer {
	return realServer{weight: int32(r.Weight), fwd: r.Forwarding}
}

// server returns the real server as written to the kernel.
func (r realServer) server(k ipvs.RealKey) ipvs.RealServer {
	return ipvs.RealServer{Address: k.Address, Port: k.Port, Weight: int(r.weight), Forwarding: r.fwd}
}

// newService returns a service with no real servers; draining is made
// when the first one drains.
func newService(vs ipvs.VirtualServer) *service {
	return &service{vs: vs, reals: map[ipvs.RealKey]realServer{}}
}

// drain marks a real server as draining until deadline.
func (svc *service) drain(rk ipvs.RealKey, deadline time.Time) {
	if svc.draining == nil {
		svc.draining = map[ipvs.RealKey]time.Time{}
	}
	svc.draining[rk] = deadline
}

// recount brings the syncer's totals and drain set up to date with svc
// after its real servers changed; present is false when svc leaves
// s.services.
func (s *Syncer) recount(k ipvs.Key, svc *service, present bool) {
	r, d := 0, 0
	if present {
		r, d = len(svc.reals), len(svc.draining)
	}
	s.nReals += r - svc.counted.reals
	s.nDraining += d - svc.counted.draining
	svc.counted.reals, svc.counted.draining = r, d
	if d > 0 {
		s.drainSet[k] = svc
	} else {
		delete(s.drainSet, k)
	}
}

// group is what one VirtualService contributes.
type group struct {
	keys    []ipvs.Key
	vips    []netip.Addr
	members netfilter.Members
}

// New returns a syncer; call Adopt before the first sync.
func New(k Kernel, clk clock.PassiveClock, m *Metrics) *Syncer {
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Syncer{
		k: k, clock: clk, metrics: m,
		flushWake:   make(chan struct{}, 1),
		services:    map[ipvs.Key]*service{},
		groups:      map[types.NamespacedName]*group{},
		drainSet:    map[ipvs.Key]*service{},
		held:        map[types.NamespacedName]bool{},
		applied:     map[types.NamespacedName]uint64{},
		sh:          newSharedState(),
		sharedDirty: true,
		verifyBatch: DefaultVerifyBatch,
		giveWayMax:  maxGiveWay,
		creating:    map[types.NamespacedName]bool{},
		reserved:    map[ipvs.Key]types.NamespacedName{},
	}
	s.created = sync.NewCond(&s.mu)
	return s
}

// Adopt reads the virtual servers kubelvs owns, with their real servers,
// and the VIPs on kubelvs0, so that the first sync changes only what
// differs. Nothing is deleted here. The kernel is read without the
// syncer's lock (a dump of every virtual server); Adopt runs before the
// first sync, so nothing changes what it read meanwhile.
func (s *Syncer) Adopt(ctx context.Context) error {
	all, err := s.k.IPVS.ListVirtualServers(ctx)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	adopted := map[ipvs.Key]*service{}
	for _, vs := range all {
		if !s.k.Owns(vs.Key()) {
			continue
		}
		rs, err := s.k.IPVS.ListRealServers(ctx, vs.Key())
		if err != nil {
			return fmt.Errorf("adopt %s: %w", vs.Key(), err)
		}
		svc := newService(vs)
		for _, r := range rs {
			svc.reals[r.Key()] = realOf(r)
		}
		adopted[vs.Key()] = svc
	}
	if err := s.k.VIPs.EnsureDevice(ctx); err != nil {
		return fmt.Errorf("adopt VIPs: %w", err)
	}
	vips, err := s.k.VIPs.ListAddresses(ctx)
	if err != nil {
		return fmt.Errorf("adopt VIPs: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, svc := range adopted {
		s.services[k] = svc
		s.recount(k, svc, true)
	}
	s.sharedMu.Lock()
	s.sh.vips.wroteWhole(vips)
	s.sharedGen++
	s.sharedMu.Unlock()
	return nil
}

// Keeping reports whether the syncer keeps, since a restart, kernel objects
// that no VirtualService claims because one on hold may own them (see
// keptGroup). Only a full sync can release them: the agent runs one when a
// VirtualService is deleted meanwhile, since that one may have been the
// owner.
func (s *Syncer) Keeping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groups[keptGroup] != nil
}

// Result tells what a sync did.
type Result struct {
	// Ops is the number of kernel writes.
	Ops int
	// Draining counts real servers at weight 0 waiting to be deleted.
	Draining int
	// Deferred are the groups a Resync left for their own syncs.
	Deferred []types.NamespacedName
	// LockWait is how long a SyncGroup waited for the syncer's lock.
	LockWait time.Duration
	// Behind names the work that last released the lock before the
	// SyncGroup took it, and BehindHeld how long that work had held it:
	// what a sync that waited long waited behind (the syncs, creates, full
	// syncs, drain passes and Verify's repairs record their holds).
	Behind     string
	BehindHeld time.Duration
}

// SyncGroup makes the kernel hold g and nothing else of g.Name. It writes
// only what differs from what it programmed before.
//
// A group on hold (g.Hold) changes nothing: what the kernel holds for it
// stays as it is.
func (s *Syncer) SyncGroup(ctx context.Context, g desired.Group) (Result, error) {
	asked := s.clock.Now()
	s.busy.Add(1)
	defer s.busy.Add(-1)
	waiting := trace.StartRegion(ctx, regionWait)
	s.lock()
	for s.waitsForCreate(g) {
		s.created.Wait()
	}
	waiting.End()
	wait := s.clock.Since(asked)
	behind, behindHeld := s.lastHolder, s.lastHeld
	if !g.Hold && !s.stale(g.Name, g.Read) && s.createsAlone(g) {
		s.setHeld(g.Name, false)
		s.markApplied(g.Name, g.Read)
		res, err := s.create(ctx, g) // unlocks s.mu
		res.LockWait, res.Behind, res.BehindHeld = wait, behind, behindHeld
		return res, err
	}
	defer s.mu.Unlock()
	defer s.heldBy("a sync", s.clock.Now())
	defer trace.StartRegion(ctx, "kubelvs: a sync").End()
	if s.stale(g.Name, g.Read) {
		return Result{Draining: s.drainingOf(g.Name), LockWait: wait, Behind: behind, BehindHeld: behindHeld}, nil
	}
	s.setHeld(g.Name, g.Hold)
	if g.Hold {
		return Result{Draining: s.drainingOf(g.Name), LockWait: wait, Behind: behind, BehindHeld: behindHeld}, nil
	}
	s.markApplied(g.Name, g.Read)
	start := s.clock.Now()
	if prev := s.groups[g.Name]; prev == nil || !membersEqual(prev.members, g.Members) {
		// What the groups want once this one is synced: from what they
		// want now and this group's difference alone.
		var from netfilter.Members
		if prev != nil {
			from = prev.members
		}
		d := s.sh.membersDelta(from, g.Members)
		if err := s.tighten(ctx, &d, nil); err != nil {
			s.metrics.observeSync("group", s.clock.Since(start), err)
			return Result{Draining: s.drainingOf(g.Name), LockWait: wait}, err
		}
	}
	res, err := s.syncGroup(ctx, g, nil)
	if e := s.syncShared(ctx, false); e != nil {
		err = errors.Join(err, e)
	}
	s.metrics.observeSync("group", s.clock.Since(start), err)
	res.LockWait, res.Behind, res.BehindHeld = wait, behind, behindHeld
	return res, err
}

// heldBy records that work of kind held s.mu since since, which it is
// about to release; s.mu is held. Deferred after the deferred Unlock
// (defer s.heldBy(kind, s.clock.Now())), it runs before it.
func (s *Syncer) heldBy(kind string, since time.Time) {
	s.lastHolder, s.lastHeld = kind, s.clock.Since(since)
}

// waitsForCreate reports whether a sync of g must wait for a create in
// progress: of g itself, or of a virtual server g wants (a conflict the
// controller has yet to settle); s.mu is held.
func (s *Syncer) waitsForCreate(g desired.Group) bool {
	if len(s.creating) == 0 {
		return false
	}
	return s.creating[g.Name] || s.wantsReserved(g)
}

// wantsReserved reports whether g wants a virtual server that a create
// of another group is adding; s.mu is held.
func (s *Syncer) wantsReserved(g desired.Group) bool {
	for _, d := range g.Services {
		if owner, ok := s.reserved[d.Key()]; ok && owner != g.Name {
			return true
		}
	}
	return false
}

// createsAlone reports whether g is a create that can add its virtual and
// real servers without holding s.mu (create): a group the syncer has
// never programmed, none of whose virtual servers it has or is adding,
// once the shared state has been compared with the kernel; s.mu is held.
func (s *Syncer) createsAlone(g desired.Group) bool {
	if !s.sharedChecked || len(g.Services) == 0 || !s.additive(g) {
		return false
	}
	seen := make(map[ipvs.Key]bool, len(g.Services))
	for _, d := range g.Services {
		k := d.Key()
		if _, ok := s.reserved[k]; ok || seen[k] {
			return false
		}
		seen[k] = true
	}
	return true
}

// create programs a group that createsAlone, called with s.mu held, which
// it releases. A create makes a dozen or more kernel calls; on a busy node
// each may wait for the CPU, and a create holding the lock across them
// held every other change behind it for seconds after a burst of creates.
// So only the shared state is written under the lock:
//
//  1. Under s.mu: its ipset members are written (tighten: its restrictions
//     are in place before anything of it exists) and counted in the shared
//     state, so that a sync of another group meanwhile keeps them; its
//     virtual servers are reserved (s.reserved), so that nothing else adds
//     them, and the group is marked as being created (s.creating): its own
//     later syncs wait for this one, and a resync leaves it alone, as one
//     applied by its own sync.
//  2. Without s.mu: its virtual servers and their real servers are added.
//     No other sync touches them: they are reserved, and the syncer does
//     not know them yet (Verify checks only those it knows).
//  3. Under s.mu again: they are recorded, and syncGroup brings the group
//     to g, from them (retrying what failed in 2, writing nothing else),
//     and then its VIPs go on kubelvs0 (syncShared): after the virtual
//     servers, as ever.
func (s *Syncer) create(ctx context.Context, g desired.Group) (Result, error) {
	start := s.clock.Now()
	members := trace.StartRegion(ctx, "kubelvs: a create's members")
	d := s.sh.membersDelta(netfilter.Members{}, g.Members)
	if err := s.tighten(ctx, &d, nil); err != nil {
		members.End()
		s.heldBy("a create's members", start)
		s.mu.Unlock()
		s.metrics.observeSync("group", s.clock.Since(start), err)
		return Result{}, err
	}
	s.setGroup(g.Name, &group{members: g.Members})
	s.sharedDirty = true
	for _, d := range g.Services {
		s.reserved[d.Key()] = g.Name
	}
	s.creating[g.Name] = true
	members.End()
	s.heldBy("a create's members", start)
	s.mu.Unlock()

	adding := trace.StartRegion(ctx, "kubelvs: a create's kernel calls")
	made := make(map[ipvs.Key]*service, len(g.Services))
	now := s.clock.Now()
	for _, d := range g.Services {
		err := s.k.IPVS.AddVirtualServer(ctx, d.VirtualServer)
		s.metrics.op("virtual_server", "add", err)
		if err != nil {
			continue // syncGroup tries again, and reports it
		}
		svc := newService(d.VirtualServer)
		// Errors too are left to syncGroup: it adds what is missing.
		_, _ = s.syncReals(ctx, svc, d, g.DrainTimeout, now)
		made[d.Key()] = svc
	}

	// Once some of its virtual servers are in the kernel, the create
	// finishes, with its VIPs, even if ctx ends meanwhile (the agent
	// stopping), rather than leave them half done for the next agent.
	if len(made) > 0 {
		ctx = context.WithoutCancel(ctx)
	}
	adding.End()
	waiting := trace.StartRegion(ctx, regionWait)
	s.lock()
	waiting.End()
	defer s.mu.Unlock()
	defer s.heldBy("a create's record and VIPs", s.clock.Now())
	defer trace.StartRegion(ctx, "kubelvs: a create's record and VIPs").End()
	defer s.created.Broadcast()
	for _, d := range g.Services {
		delete(s.reserved, d.Key())
	}
	delete(s.creating, g.Name)
	for k, svc := range made {
		svc.owner = g.Name
		svc.flushTCP = g.FlushTCP
		s.services[k] = svc
	}
	res, err := s.syncGroup(ctx, g, nil)
	res.Ops += len(made)
	for _, svc := range made {
		res.Ops += len(svc.reals)
	}
	if e := s.syncShared(ctx, false); e != nil {
		err = errors.Join(err, e)
	}
	s.metrics.observeSync("group", s.clock.Since(start), err)
	return res, err
}

// regionWait is the execution trace's region of a sync waiting for s.mu
// (go tool trace: user-defined regions), beside those of each kind of
// hold: where a slow change spent its time, and what the holder ahead of
// it waited for (the CPU, a system call, another lock).
const regionWait = "kubelvs: wait for the syncer's lock"

// lock takes s.mu for a sync that a resync lets go first (yield).
func (s *Syncer) lock() {
	s.waiting.Add(1)
	s.mu.Lock()
	s.waiting.Add(-1)
	s.entered.Add(1)
}

// maxGiveWay bounds how long background work waits in GiveWay at a time,
// so that it still gets done under a steady stream of syncs.
const maxGiveWay = 20 * time.Millisecond

// GiveWay is called by background work (the resync's build of every
// VirtualService, Verify) between its steps: it returns once no
// SyncGroup waits for or holds the syncer's lock, or after maxGiveWay.
// On a node with one CPU for the agent, a sync that holds the lock across
// its kernel calls otherwise waits for the processor behind that work
// after each call, and every change behind it waits too: creates held
// the lock for seconds at each resync in make bench.
//
// It reports whether the syncer is still busy when it returns (the wait
// ran out): syncs follow one another, as during a burst of creates, and
// work that can wait for a later pass should.
func (s *Syncer) GiveWay(ctx context.Context) (stillBusy bool) {
	if s.busy.Load() == 0 {
		return false
	}
	s.metrics.gaveWay.Inc()
	deadline := time.Now().Add(s.giveWayMax)
	for s.busy.Load() > 0 && ctx.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return s.busy.Load() > 0
}

// yield hands s.mu, which is held, to the syncs waiting in lock, if any,
// and takes it again after them. sync.Mutex does not hand over on Unlock
// unless its waiter has waited for a millisecond, so yield waits until
// one of them has the lock.
func (s *Syncer) yield(held *time.Time) {
	if s.waiting.Load() == 0 {
		return
	}
	e := s.entered.Load()
	s.heldBy("a resync", *held)
	s.mu.Unlock()
	for i := 0; s.entered.Load() == e; i++ {
		if i < 100 {
			runtime.Gosched()
		} else {
			// Another holder of the lock is in a kernel call: do not
			// spin on the CPU it needs.
			time.Sleep(50 * time.Microsecond)
		}
	}
	s.mu.Lock()
	*held = s.clock.Now()
}

// ReadToken returns a token to take before reading the inputs of a sync
// (desired.Group.Read, Resync): tokens taken later are greater.
func (s *Syncer) ReadToken() uint64 { return s.reads.Add(1) }

// stale reports whether a sync of name whose inputs were read at read
// comes after one read later was applied; s.mu is held.
func (s *Syncer) stale(name types.NamespacedName, read uint64) bool {
	return read != 0 && read < s.applied[name]
}

// markApplied records that a sync of name read at read is applied; s.mu is
// held.
func (s *Syncer) markApplied(name types.NamespacedName, read uint64) {
	if read > s.applied[name] {
		s.applied[name] = read
	}
}

// RemoveGroup deletes every kernel object of a VirtualService that is gone.
func (s *Syncer) RemoveGroup(ctx context.Context, name types.NamespacedName) (Result, error) {
	return s.SyncGroup(ctx, desired.Group{Name: name})
}

// SyncAll syncs every group, then deletes the owned virtual servers that no
// group wants (left over from before a restart) and syncs the VIPs and
// ipset members: against the kernel on the first full sync after Adopt,
// against what it wrote afterwards (Verify reads the kernel again), so that
// a full sync when nothing changed reads and writes nothing. Call it only
// once the caches have the whole picture.
//
// Groups on hold keep what the kernel holds for them. One the syncer has
// programmed keeps its objects; one it has not (after a restart) may own
// any adopted virtual server that no other group claims, so while there is
// such a group nothing adopted is deleted (see keptGroup).
func (s *Syncer) SyncAll(ctx context.Context, groups []desired.Group) (Result, error) {
	return s.syncAll(ctx, groups, false, 0)
}

// Resync is SyncAll for the periodic resync: it leaves out, and returns in
// Result.Deferred, the groups it has never programmed whose every virtual
// server is new to the kernel. Programming those only adds (their own
// virtual servers, VIPs and ipset members), so leaving them changes
// nothing of what is programmed; their own syncs (SyncGroup) add them,
// each holding the lock for one group rather than a resync holding it for
// a whole burst of creates. A new group that takes over a virtual server
// the syncer has (a conflict it won, or one adopted at a restart) is
// synced here as by SyncAll. Until the first full sync has compared the
// shared state with the kernel, nothing is deferred.
//
// read is the ReadToken taken before the groups were read: a full sync
// reads every VirtualService, for seconds at 10,000, while their own syncs
// go on. A group whose own sync, read later, was applied meanwhile keeps
// what that sync programmed, one that sync removed stays removed, and one
// it created that is not in groups is not removed as unwanted. Else a
// resync would put back, until the next event or resync, what a change had
// just replaced (a removed endpoint taking traffic again). The other way
// round too: a group's own sync read before read changes nothing once the
// resync has applied or removed that group.
func (s *Syncer) Resync(ctx context.Context, groups []desired.Group, read uint64) (Result, error) {
	return s.syncAll(ctx, groups, true, read)
}

// additive reports whether syncing g, which the syncer has never
// programmed, would only add: none of its virtual servers is in the
// kernel as far as the syncer knows.
func (s *Syncer) additive(g desired.Group) bool {
	if s.groups[g.Name] != nil {
		return false
	}
	for _, d := range g.Services {
		if s.services[d.Key()] != nil {
			return false
		}
	}
	return true
}

func (s *Syncer) syncAll(ctx context.Context, groups []desired.Group, deferNew bool, read uint64) (Result, error) {
	defer trace.StartRegion(ctx, "kubelvs: a full sync").End()
	s.mu.Lock()
	defer s.mu.Unlock()
	start := s.clock.Now()
	held := start // since the lock was last taken (yield)
	defer func() { s.heldBy("a full sync", held) }()
	var total Result
	var errs []error
	want := make(map[types.NamespacedName]bool, len(groups)+1)
	membersChange := !s.sharedChecked
	deferNew = deferNew && s.sharedChecked
	unknownHold := false
	claimed := map[ipvs.Key]bool{}
	var deferred map[types.NamespacedName]bool
	// newer are the groups whose own sync, read after this full sync's
	// read, was applied: they keep what it programmed, as a group on hold
	// keeps what it has.
	newer := map[types.NamespacedName]bool{}
	for name := range s.applied {
		if s.stale(name, read) {
			newer[name] = true
		} else if read != 0 {
			delete(s.applied, name) // older than every token to come
		}
	}
	for name := range s.creating {
		newer[name] = true // its create goes on without the lock
	}
	for name := range s.held {
		if !newer[name] {
			delete(s.held, name)
		}
	}
	for _, g := range groups {
		want[g.Name] = true
		if newer[g.Name] {
			if prev := s.groups[g.Name]; prev != nil {
				for _, k := range prev.keys {
					claimed[k] = true
				}
			}
			continue
		}
		s.setHeld(g.Name, g.Hold)
		if g.Hold {
			unknownHold = unknownHold || s.groups[g.Name] == nil
			continue
		}
		if deferNew && s.additive(g) {
			if deferred == nil {
				deferred = map[types.NamespacedName]bool{}
			}
			deferred[g.Name] = true
			total.Deferred = append(total.Deferred, g.Name)
			continue
		}
		for _, d := range g.Services {
			claimed[d.Key()] = true
		}
		if prev := s.groups[g.Name]; prev == nil || !membersEqual(prev.members, g.Members) {
			membersChange = true
		}
	}
	if unknownHold {
		want[keptGroup] = true
		if err := s.keep(ctx, claimed); err != nil {
			// Without the members of what it keeps, the shared state
			// cannot be written safely: leave it all as it is.
			err = fmt.Errorf("keep the kernel objects of VirtualServices on hold: %w", err)
			s.metrics.observeSync("full", s.clock.Since(start), err)
			return Result{Draining: s.drainingLocked()}, err
		}
	}
	if membersChange {
		var next netfilter.Members
		for _, g := range groups {
			if deferred[g.Name] {
				continue
			}
			if g.Hold || newer[g.Name] {
				if prev := s.groups[g.Name]; prev != nil {
					next = appendMembers(next, prev.members)
				}
				continue
			}
			next = appendMembers(next, g.Members)
		}
		if kg := s.groups[keptGroup]; kg != nil && unknownHold {
			next = appendMembers(next, kg.members)
		}
		next = sortMembers(next)
		if err := s.tighten(ctx, nil, &next); err != nil {
			s.metrics.observeSync("full", s.clock.Since(start), err)
			return Result{Draining: s.drainingLocked()}, err
		}
	}
	for _, g := range groups {
		// A resync lets the syncs that wait for the lock go first,
		// between groups, so that a change waits for one group rather
		// than for all of them (read tokens make that safe: what those
		// syncs apply is newer than what this one read, and it stays).
		if read != 0 {
			s.yield(&held)
		}
		// stale: applied by its own sync during a yield; creating or
		// wanting what a create adds: a create that began during a yield.
		if g.Hold || deferred[g.Name] || newer[g.Name] || s.stale(g.Name, read) || s.waitsForCreate(g) {
			continue
		}
		r, err := s.syncGroup(ctx, g, claimed)
		total.Ops += r.Ops
		errs = append(errs, err)
		// A sync of g read before this resync read it is older than
		// what this applied.
		s.markApplied(g.Name, read)
	}
	if err := ctx.Err(); err != nil {
		// Stopped part way (the agent is shutting down): what is not yet
		// synced stays as it is, and nothing is deleted as unwanted.
		err = errors.Join(append(errs, err)...)
		s.metrics.observeSync("full", s.clock.Since(start), err)
		return Result{Ops: total.Ops, Draining: s.drainingLocked()}, err
	}
	for name := range s.groups {
		// A group created by its own sync during a yield is newer too.
		if !want[name] && !newer[name] && !s.stale(name, read) && !s.creating[name] {
			r, err := s.syncGroup(ctx, desired.Group{Name: name}, claimed)
			total.Ops += r.Ops
			errs = append(errs, err)
			s.markApplied(name, read)
		}
	}
	for k, svc := range s.services {
		if svc.owner == (types.NamespacedName{}) {
			total.Ops++
			if err := s.deleteService(ctx, k, svc); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, s.syncShared(ctx, !s.sharedChecked))
	total.Draining = s.drainingLocked()
	err := errors.Join(errs...)
	s.metrics.observeSync("full", s.clock.Since(start), err)
	return total, err
}

// keep makes keptGroup own the adopted virtual servers that neither another
// group nor claimed (the keys the groups being synced want) claims, with
// their VIPs and the ipset members of their keys as the kernel holds them.
func (s *Syncer) keep(ctx context.Context, claimed map[ipvs.Key]bool) error {
	var keys []ipvs.Key
	for k, svc := range s.services {
		if (svc.owner == (types.NamespacedName{}) || svc.owner == keptGroup) && !claimed[k] {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, ipvs.Key.Compare)
	kg := s.groups[keptGroup]
	if kg != nil && slices.Equal(kg.keys, keys) {
		return nil
	}
	var members netfilter.Members
	if len(keys) > 0 {
		cur, err := s.k.Netfilter.ListMembers(ctx)
		if err != nil {
			return err
		}
		kept := make(map[ipvs.Key]bool, len(keys))
		for _, k := range keys {
			kept[k] = true
		}
		ours := func(es []ipset.Entry) []ipset.Entry {
			var out []ipset.Entry
			for _, e := range es {
				if kept[ipvs.Key{Address: e.IP, Protocol: ipvs.Protocol(e.Protocol), Port: e.Port}] {
					out = append(out, e)
				}
			}
			return out
		}
		members = sortMembers(netfilter.Members{Masquerade: ours(cur.Masquerade), Restricted: ours(cur.Restricted), Allowed: ours(cur.Allowed), Hairpin: ours(cur.Hairpin)})
	}
	vipSet := map[netip.Addr]bool{}
	for _, k := range keys {
		vipSet[k.Address] = true
		s.services[k].owner = keptGroup
	}
	var vips []netip.Addr
	for v := range vipSet {
		if s.sh.vips.holds(v) {
			vips = append(vips, v)
		}
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	if len(keys) == 0 {
		s.setGroup(keptGroup, nil)
	} else {
		s.setGroup(keptGroup, &group{keys: keys, vips: vips, members: members})
	}
	s.sharedDirty = true
	return nil
}

// setHeld records whether a group is on hold, for the metric.
func (s *Syncer) setHeld(name types.NamespacedName, hold bool) {
	if hold {
		s.held[name] = true
	} else {
		delete(s.held, name)
	}
	s.metrics.setHeld(len(s.held))
}

// syncGroup syncs one group; s.mu is held. A virtual server it no longer
// wants that claimed (the keys the groups of a full sync want) holds is
// left to the group that takes it over in place later in the same full
// sync, rather than deleted and re-added, whatever the order of the groups.
func (s *Syncer) syncGroup(ctx context.Context, g desired.Group, claimed map[ipvs.Key]bool) (Result, error) {
	var res Result
	var errs []error
	prev := s.groups[g.Name]
	if s.unchanged(prev, g) {
		// The common case of a full sync: nothing to write, and nothing
		// to allocate while finding that out.
		return Result{Draining: s.drainingOf(g.Name)}, nil
	}
	now := s.clock.Now()
	wanted := make(map[ipvs.Key]bool, len(g.Services))
	for _, d := range g.Services {
		k := d.Key()
		wanted[k] = true
		svc := s.services[k]
		if svc != nil && svc.owner != g.Name && svc.owner != (types.NamespacedName{}) {
			// The key moves to this VirtualService (it won a conflict):
			// take the service over in place rather than delete and re-add
			// it, and stop the previous owner from deleting it later.
			if og := s.groups[svc.owner]; og != nil {
				og.keys = slices.DeleteFunc(og.keys, func(o ipvs.Key) bool { return o == k })
			}
		}
		if svc == nil {
			res.Ops++
			if err := s.k.IPVS.AddVirtualServer(ctx, d.VirtualServer); err != nil {
				s.metrics.op("virtual_server", "add", err)
				errs = append(errs, fmt.Errorf("add virtual server %s: %w", k, err))
				continue
			}
			s.metrics.op("virtual_server", "add", nil)
			svc = newService(d.VirtualServer)
			s.services[k] = svc
		} else if !svc.vs.Equal(d.VirtualServer) {
			res.Ops++
			svc.writes++
			err := s.k.IPVS.UpdateVirtualServer(ctx, d.VirtualServer)
			s.metrics.op("virtual_server", "update", err)
			if err != nil {
				errs = append(errs, fmt.Errorf("update virtual server %s: %w", k, err))
				continue
			}
			svc.vs = d.VirtualServer
		}
		svc.owner = g.Name
		svc.flushTCP = g.FlushTCP
		n, err := s.syncReals(ctx, svc, d, g.DrainTimeout, now)
		s.recount(k, svc, true)
		res.Ops += n
		errs = append(errs, err)
	}
	if prev != nil {
		for _, k := range prev.keys {
			if svc := s.services[k]; svc != nil && !wanted[k] && svc.owner == g.Name && !claimed[k] {
				res.Ops++
				errs = append(errs, s.deleteService(ctx, k, svc))
			}
		}
	}
	if prev == nil || !slices.Equal(prev.vips, g.VIPs) || !membersEqual(prev.members, g.Members) {
		s.sharedDirty = true
	}
	keys := make([]ipvs.Key, 0, len(g.Services))
	for _, d := range g.Services {
		if s.services[d.Key()] != nil && s.services[d.Key()].owner == g.Name {
			keys = append(keys, d.Key())
		}
	}
	if prev != nil {
		// A virtual server whose delete failed stays the group's, so
		// that the next sync deletes it: forgotten, it would stay in the
		// kernel until a restart.
		for _, k := range prev.keys {
			if svc := s.services[k]; svc != nil && !wanted[k] && svc.owner == g.Name {
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 && len(g.VIPs) == 0 && len(g.Services) == 0 {
		s.setGroup(g.Name, nil)
	} else {
		s.setGroup(g.Name, &group{keys: keys, vips: g.VIPs, members: g.Members})
	}
	res.Draining = s.drainingOf(g.Name)
	return res, errors.Join(errs...)
}

// unchanged reports whether syncing g would neither write nor change what
// the syncer remembers: g's services are the ones it programmed for g, with
// the same real servers, none of them draining, and its other real servers
// are all draining; its VIPs and members are the ones it recorded.
func (s *Syncer) unchanged(prev *group, g desired.Group) bool {
	if prev == nil || len(prev.keys) != len(g.Services) || !slices.Equal(prev.vips, g.VIPs) || !membersEqual(prev.members, g.Members) {
		return false
	}
	for _, d := range g.Services {
		svc := s.services[d.Key()]
		if svc == nil || svc.owner != g.Name || svc.flushTCP != g.FlushTCP || !svc.vs.Equal(d.VirtualServer) ||
			len(d.Reals)+len(svc.draining) != len(svc.reals) {
			return false
		}
		for _, r := range d.Reals {
			rk := r.Key()
			if cur, ok := svc.reals[rk]; !ok || cur != realOf(r.RealServer) {
				return false
			}
			if _, draining := svc.draining[rk]; draining {
				return false
			}
		}
	}
	return true
}

// syncReals brings the real servers of one programmed service to d.
func (s *Syncer) syncReals(ctx context.Context, svc *service, d desired.Service, drainTimeout time.Duration, now time.Time) (int, error) {
	svc.writes++
	ops := 0
	var errs []error
	k := svc.vs.Key()
	want := make(map[ipvs.RealKey]bool, len(d.Reals))
	var adds []ipvs.RealServer
	for _, r := range d.Reals {
		rk := r.Key()
		want[rk] = true
		cur, ok := svc.reals[rk]
		switch {
		case !ok:
			adds = append(adds, r.RealServer) // together below: one round trip
			continue
		case cur != realOf(r.RealServer):
			ops++
			err := s.k.IPVS.UpdateRealServer(ctx, k, r.RealServer)
			s.metrics.op("real_server", "update", err)
			if errors.Is(err, ipvs.ErrNotFound) {
				// Gone from the kernel (an earlier write failed, or
				// someone deleted it): add it back.
				delete(svc.reals, rk)
				adds = append(adds, r.RealServer)
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("update real server %s of %s: %w", rk, k, err))
				continue
			}
		}
		svc.reals[rk] = realOf(r.RealServer)
		delete(svc.draining, rk) // back in the desired set: no longer draining
	}
	if len(adds) > 0 {
		ops += len(adds)
		for i, err := range ipvs.AddRealServers(ctx, s.k.IPVS, k, adds) {
			r := adds[i]
			if errors.Is(err, ipvs.ErrExists) {
				err = s.k.IPVS.UpdateRealServer(ctx, k, r)
			}
			s.metrics.op("real_server", "add", err)
			if err != nil {
				errs = append(errs, fmt.Errorf("add real server %s to %s: %w", r.Key(), k, err))
				continue
			}
			svc.reals[r.Key()] = realOf(r)
		}
	}
	var gone []conntrack.Target
	for rk, cur := range svc.reals {
		if want[rk] {
			continue
		}
		if _, ok := svc.draining[rk]; ok {
			continue
		}
		if k.Protocol == ipvs.UDP || drainTimeout <= 0 {
			ops++
			err := s.k.IPVS.DeleteRealServer(ctx, k, rk)
			s.metrics.op("real_server", "delete", err)
			if err != nil {
				errs = append(errs, fmt.Errorf("delete real server %s of %s: %w", rk, k, err))
				continue
			}
			delete(svc.reals, rk)
			if k.Protocol == ipvs.UDP || svc.flushTCP {
				gone = append(gone, target(k, rk))
			}
			continue
		}
		if cur.weight != 0 {
			ops++
			quiet := cur
			quiet.weight = 0
			err := s.k.IPVS.UpdateRealServer(ctx, k, quiet.server(rk))
			s.metrics.op("real_server", "update", err)
			if errors.Is(err, ipvs.ErrNotFound) {
				// Already gone: nothing to drain.
				delete(svc.reals, rk)
				if k.Protocol == ipvs.UDP || svc.flushTCP {
					gone = append(gone, target(k, rk))
				}
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("drain real server %s of %s: %w", rk, k, err))
				continue
			}
			svc.reals[rk] = quiet
		}
		svc.drain(rk, now.Add(drainTimeout))
	}
	s.flush(gone)
	return ops, errors.Join(errs...)
}

// deleteService deletes an owned virtual server; its real servers go with
// it, and so do their UDP flows.
//
// A delete that fails may have deleted the virtual server before it
// failed (the release of its ownership record, after it): the kernel is
// then asked, and a virtual server it no longer has is forgotten, its
// record left to Verify (ReleaseStale). Remembered, it would make every
// later sync that wants it again fail to add its real servers.
func (s *Syncer) deleteService(ctx context.Context, k ipvs.Key, svc *service) error {
	err := s.k.IPVS.DeleteVirtualServer(ctx, k)
	s.metrics.op("virtual_server", "delete", err)
	if err != nil {
		if _, gerr := s.k.IPVS.GetVirtualServer(ctx, k); !errors.Is(gerr, ipvs.ErrNotFound) {
			return fmt.Errorf("delete virtual server %s: %w", k, err)
		}
	}
	if k.Protocol == ipvs.UDP || svc.flushTCP {
		var gone []conntrack.Target
		for rk := range svc.reals {
			gone = append(gone, target(k, rk))
		}
		s.flush(gone)
	}
	s.recount(k, svc, false)
	delete(s.services, k)
	return nil
}

func target(k ipvs.Key, rk ipvs.RealKey) conntrack.Target {
	return conntrack.Target{
		Protocol: uint8(k.Protocol),
		VIP:      netip.AddrPortFrom(k.Address, k.Port),
		Backend:  netip.AddrPortFrom(rk.Address, rk.Port),
	}
}

func (s *Syncer) realCount() int { return s.nReals }
