package syncer

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// withAllowList gives g a source allow-list on each of its services.
func withAllowList(g desired.Group, nets ...string) desired.Group {
	for _, svc := range g.Services {
		e := ipset.Entry{IP: svc.Address, Protocol: uint8(svc.Protocol), Port: svc.Port}
		g.Members.Restricted = append(g.Members.Restricted, e)
		for _, n := range nets {
			a := e
			a.Net = netip.MustParsePrefix(n)
			g.Members.Allowed = append(g.Members.Allowed, a)
		}
	}
	return g
}

// want is the kernel of a fresh node that programmed groups.
func want(t *testing.T, groups ...desired.Group) *node {
	ctx := context.Background()
	t.Helper()
	w := newNode()
	if _, err := w.syncer(t).SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	return w
}

func sameKernel(t *testing.T, step string, got, want *node) {
	t.Helper()
	if g, w := got.dump(), want.dump(); g != w {
		t.Fatalf("%s: kernel\n%s\nwant\n%s", step, g, w)
	}
	if g, w := got.members(), want.members(); !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: members\n%+v\nwant\n%+v", step, g, w)
	}
}

func hold(g desired.Group) desired.Group {
	return desired.Group{Name: g.Name, Hold: true, Problems: []string{"refused"}}
}

// A VirtualService whose spec is refused, or whose inputs failed to load,
// keeps what the kernel holds for it: through per-VirtualService syncs,
// full syncs and a restart, while the others change around it.
func TestHoldKeepsWhatTheKernelHas(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	// a has every kind of member: an allow-list and, as trafficPolicy
	// Local gives, hairpin members (b and c masquerade).
	a := withAllowList(asLocal(grp("a", "10.0.0.1", web, "10.1.0.1:8080")), "192.0.2.0/24")
	b := grp("b", "10.0.0.2", web, "10.1.0.2:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	sameKernel(t, "programmed", n, want(t, a, b))

	before := n.writes()
	if _, err := s.SyncGroup(ctx, hold(a)); err != nil || n.writes() != before {
		t.Fatalf("a group on hold wrote %d times (%v)", n.writes()-before, err)
	}
	if _, err := s.SyncAll(ctx, []desired.Group{hold(a), b}); err != nil || n.writes() != before {
		t.Fatalf("a full sync with a group on hold wrote %d times (%v)", n.writes()-before, err)
	}
	sameKernel(t, "on hold", n, want(t, a, b))

	// Restart while a is on hold: the new agent never saw a's objects as
	// a's, yet keeps them (services, VIP, allow-list, hairpin members),
	// while b changes and c comes.
	s = n.syncer(t)
	b2 := grp("b", "10.0.0.2", web, "10.1.0.2:8080", "10.1.0.3:8080")
	c := grp("c", "10.0.0.3", web, "10.1.0.4:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{hold(a), b2, c}); err != nil {
		t.Fatal(err)
	}
	sameKernel(t, "restarted with a on hold", n, want(t, a, b2, c))
	// b changes again, one group at a time: a's objects still stay.
	b3 := grp("b", "10.0.0.2", web, "10.1.0.3:8080")
	if _, err := s.SyncGroup(ctx, b3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncAll(ctx, []desired.Group{hold(a), b3, c}); err != nil {
		t.Fatal(err)
	}
	n.clock.Step(time.Minute)
	if _, err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	n.ct = want(t).ct // the flows flushed on the way are not the point here
	sameKernel(t, "b changed around a", n, want(t, a, b3, c))

	// a's spec is fixed, with another port: its new service comes, and the
	// next full sync with nothing on hold removes what it no longer wants.
	a2 := grp("a", "10.0.0.1", []ipvs.Key{{Protocol: ipvs.TCP, Port: 443}}, "10.1.0.1:8443")
	if _, err := s.SyncGroup(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncAll(ctx, []desired.Group{a2, b3, c}); err != nil {
		t.Fatal(err)
	}
	n.ct = want(t).ct
	sameKernel(t, "fixed", n, want(t, a2, b3, c))
}

// A VirtualService deleted while on hold after a restart: its objects go
// at the next full sync.
func TestHeldThenDeletedIsRemoved(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	a := grp("a", "10.0.0.1", web, "10.1.0.1:8080")
	b := grp("b", "10.0.0.2", web, "10.1.0.2:8080")
	if _, err := n.syncer(t).SyncAll(ctx, []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	s := n.syncer(t)
	if _, err := s.SyncAll(ctx, []desired.Group{hold(a), b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveGroup(ctx, a.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncAll(ctx, []desired.Group{b}); err != nil {
		t.Fatal(err)
	}
	n.ct = want(t).ct
	sameKernel(t, "deleted", n, want(t, b))
}

// Without a way to read the ipset members, a restart with a group on hold
// leaves the shared state as it is and says so.
func TestHoldWithoutMembersKeepsEverything(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	a := withAllowList(grp("a", "10.0.0.1", web, "10.1.0.1:8080"), "192.0.2.0/24")
	b := grp("b", "10.0.0.2", web, "10.1.0.2:8080")
	if _, err := n.syncer(t).SyncAll(ctx, []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	s := n.syncer(t)
	n.nf.FailAlways("ListMembers", errors.New("ipset: cannot read"))
	before := n.writes()
	if _, err := s.SyncAll(ctx, []desired.Group{hold(a)}); err == nil {
		t.Fatal("no error while the shared state could not be kept")
	}
	if n.writes() != before {
		t.Fatalf("wrote %d times", n.writes()-before)
	}
	sameKernel(t, "kept", n, want(t, a, b))
}

// A failed conntrack flush is retried with backoff until it succeeds,
// without any other change to wake it, and a target queued twice is
// flushed once.
func TestFlushRetriedUntilItSucceeds(t *testing.T) {
	ctx := context.Background()
	defer func(lo, hi time.Duration) { FlushRetryMin, FlushRetryMax = lo, hi }(FlushRetryMin, FlushRetryMax)
	FlushRetryMin, FlushRetryMax = time.Millisecond, 4*time.Millisecond
	n := newNode()
	s := n.syncer(t)
	udp := []ipvs.Key{{Protocol: ipvs.UDP, Port: 53}}
	if _, err := s.SyncAll(ctx, []desired.Group{grp("dns", "10.96.0.10", udp, "10.1.0.1:53", "10.1.0.2:53")}); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddrPort("10.96.0.10:53")
	n.ct.Add(conntrack.Flow{Protocol: conntrack.UDP, OrigSrc: netip.MustParseAddrPort("10.0.0.5:40000"), OrigDst: vip,
		ReplySrc: netip.MustParseAddrPort("10.1.0.2:53"), ReplyDst: netip.MustParseAddrPort("10.0.0.5:40000")})
	for range 5 {
		n.ct.FailNext("DeleteFlows", nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.RunFlusher(ctx) }()
	if _, err := s.SyncGroup(ctx, grp("dns", "10.96.0.10", udp, "10.1.0.1:53")); err != nil {
		t.Fatal(err)
	}
	s.flush([]conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: netip.MustParseAddrPort("10.1.0.2:53")}})
	deadline := time.Now().Add(10 * time.Second)
	for n.ct.Dump() != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the flow of the removed backend is still there after %d flush attempts:\n%s", n.ct.Calls("DeleteFlows"), n.ct.Dump())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if got := n.ct.Calls("DeleteFlows"); got != 6 {
		t.Fatalf("%d DeleteFlows calls, want 5 failed and 1 that worked", got)
	}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if len(s.pending) != 0 {
		t.Fatalf("still pending: %v", s.pending)
	}
}

// While conntrack keeps failing, what waits is bounded.
func TestFlushPendingBounded(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	n.ct.FailAlways("DeleteFlows", nil)
	vip := netip.MustParseAddrPort("10.96.0.10:53")
	for i := range MaxFlushPending + 100 {
		b := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 53)
		s.flush([]conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: b}, {Protocol: conntrack.UDP, VIP: vip, Backend: b}})
		if i%10000 == 0 {
			s.FlushNow(ctx)
		}
	}
	s.FlushNow(ctx)
	if len(s.pending) != MaxFlushPending || len(s.pendingSet) != MaxFlushPending {
		t.Fatalf("%d pending (%d in the set), want %d", len(s.pending), len(s.pendingSet), MaxFlushPending)
	}
}

// Verify re-adds a virtual server missing from its dump only when the
// kernel says it is not there: any other answer is uncertainty, and the
// kernel is left as it is.
func TestVerifyDoesNotRestoreOnUncertainty(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	g := grp("web", "10.96.0.10", web, "10.1.0.1:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{g}); err != nil {
		t.Fatal(err)
	}
	k := key("10.96.0.10", ipvs.TCP, 80)
	if err := n.ipvs.DeleteVirtualServer(ctx, k); err != nil { // by hand
		t.Fatal(err)
	}
	n.ipvs.FailNext("GetVirtualServer", errors.New("netlink: no buffer space available"))
	adds := n.ipvs.Calls("AddVirtualServer")
	if _, err := s.Verify(ctx); err == nil || !strings.Contains(err.Error(), "no buffer space") {
		t.Fatalf("Verify: %v, want the GetVirtualServer error", err)
	}
	if got := n.ipvs.Calls("AddVirtualServer") - adds; got != 0 {
		t.Fatalf("%d AddVirtualServer calls on an uncertain answer", got)
	}
	// A clear "not there" restores it.
	if repairs, err := s.Verify(ctx); err != nil || repairs == 0 {
		t.Fatalf("Verify: %d repairs, %v", repairs, err)
	}
	if _, err := n.ipvs.GetVirtualServer(ctx, k); err != nil {
		t.Fatal(err)
	}
}

// A full sync whose context is done (the agent stopping) returns that error
// and deletes nothing as unwanted: the groups it did not reach keep their
// kernel objects.
func TestSyncAllStoppedDeletesNothing(t *testing.T) {
	n := newNode()
	a := grp("a", "10.0.0.1", web, "10.1.0.1:8080")
	b := grp("b", "10.0.0.2", web, "10.1.0.2:8080")
	s := n.syncer(t)
	if _, err := s.SyncAll(context.Background(), []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	before := n.dump()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.SyncAll(ctx, []desired.Group{a}); !errors.Is(err, context.Canceled) {
		t.Fatalf("SyncAll with a canceled context: %v, want context.Canceled", err)
	}
	if got := n.dump(); got != before {
		t.Fatalf("the stopped full sync changed the kernel:\n%s\nwant\n%s", got, before)
	}
	if _, err := s.SyncAll(context.Background(), []desired.Group{a}); err != nil {
		t.Fatal(err)
	}
	if got := n.dump(); got == before {
		t.Fatal("b was not removed by the next full sync: the check above proves nothing")
	}
}
