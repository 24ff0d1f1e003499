package ownership_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

func vs(addr string, p ipvs.Protocol, port uint16) ipvs.VirtualServer {
	return ipvs.VirtualServer{Address: netip.MustParseAddr(addr), Protocol: p, Port: port, Scheduler: "rr"}
}

func newGuard(t *testing.T) (*ownership.Guard, *ipvstest.Fake, *ipsettest.Fake) {
	ctx := context.Background()
	t.Helper()
	k, sets := ipvstest.NewFake(), ipsettest.NewFake()
	own, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		t.Fatal(err)
	}
	return ownership.NewGuard(k, own), k, sets
}

func TestGuardOwnership(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g, k, sets := newGuard(t)
	foreign := vs("10.0.0.9", ipvs.TCP, 80)
	if err := k.AddVirtualServer(ctx, foreign); err != nil { // another program's rule
		t.Fatal(err)
	}
	if err := k.AddRealServer(ctx, foreign.Key(), ipvs.RealServer{Address: netip.MustParseAddr("192.0.2.9"), Port: 80, Weight: 1}); err != nil {
		t.Fatal(err)
	}

	mine := vs("10.0.0.1", ipvs.TCP, 80)
	mine6 := vs("fd00::1", ipvs.UDP, 53)
	for _, v := range []ipvs.VirtualServer{mine, mine6} {
		if err := g.AddVirtualServer(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	rs := ipvs.RealServer{Address: netip.MustParseAddr("192.0.2.1"), Port: 8080, Weight: 3, Forwarding: ipvs.Masquerade}
	if err := g.AddRealServer(ctx, mine.Key(), rs); err != nil {
		t.Fatal(err)
	}

	for name, err := range map[string]error{
		"add":       g.AddVirtualServer(ctx, foreign),
		"update":    g.UpdateVirtualServer(ctx, foreign),
		"delete":    g.DeleteVirtualServer(ctx, foreign.Key()),
		"add rs":    g.AddRealServer(ctx, foreign.Key(), rs),
		"update rs": g.UpdateRealServer(ctx, foreign.Key(), rs),
		"delete rs": g.DeleteRealServer(ctx, foreign.Key(), rs.Key()),
	} {
		if !errors.Is(err, ipvs.ErrNotOwned) {
			t.Errorf("%s on a foreign virtual server: got %v, want ErrNotOwned", name, err)
		}
	}
	// Deleting what is gone (and not owned) is success.
	if err := g.DeleteVirtualServer(ctx, vs("10.0.0.7", ipvs.TCP, 1).Key()); err != nil {
		t.Errorf("delete missing: %v", err)
	}
	owned, err := ipvs.List(ctx, g, g.Owns)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 2 || !owned[0].Equal(mine) || len(owned[0].RealServers) != 1 {
		t.Errorf("List(owned) = %v", owned)
	}
	if err := g.DeleteVirtualServer(ctx, mine6.Key()); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "guard.ipvs", k.Dump())
	golden.Assert(t, "guard.ipset", sets.Dump())
}

func TestGuardAddFailureReleasesClaim(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g, k, _ := newGuard(t)
	k.FailNext("AddVirtualServer", nil)
	v := vs("10.0.0.1", ipvs.SCTP, 9)
	if err := g.AddVirtualServer(ctx, v); !errors.Is(err, fault.ErrInjected) {
		t.Fatalf("got %v, want injected fault", err)
	}
	if g.Owns(v.Key()) {
		t.Error("a failed add left an ownership claim")
	}
}

func TestOwnershipSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	sets := ipsettest.NewFake()
	own, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		t.Fatal(err)
	}
	k := vs("fd00::5", ipvs.TCP, 443).Key()
	if err := own.Claim(ctx, k); err != nil {
		t.Fatal(err)
	}
	again, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Owns(k) {
		t.Errorf("ownership of %s lost on reload; sets:\n%s", k, sets.Dump())
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := []ipvs.VirtualServer{
		{Address: netip.MustParseAddr("10.0.0.1"), Protocol: ipvs.TCP, Port: 1, Scheduler: "nope"},
		{Address: netip.MustParseAddr("10.0.0.1"), Protocol: 1, Port: 1, Scheduler: "rr"},
		{Address: netip.MustParseAddr("10.0.0.1"), Protocol: ipvs.TCP, Port: 1, Scheduler: "rr", NetmaskBits: 33},
		{Protocol: ipvs.TCP, Port: 1, Scheduler: "rr"},
	}
	for _, v := range bad {
		if v.Validate() == nil {
			t.Errorf("%+v validated", v)
		}
	}
	ok := ipvs.VirtualServer{Address: netip.MustParseAddr("fd00::1"), Protocol: ipvs.UDP, Port: 53,
		Scheduler: "mh", Flags: ipvs.FlagFallback | ipvs.FlagPort, Timeout: 60, NetmaskBits: 64}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
	if got, want := ok.String(), "UDP/[fd00::1]:53 mh flags=fallback|port persistent=60s/64"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// claimCounter counts the claims an Records is asked for.
type claimCounter struct {
	ownership.Records
	claims int
}

func (c *claimCounter) Claim(ctx context.Context, k ipvs.Key) error {
	c.claims++
	return c.Records.Claim(ctx, k)
}

func newListingGuard(t *testing.T) (*ownership.Guard, *ipvstest.Fake, *claimCounter, *time.Time) {
	ctx := context.Background()
	t.Helper()
	k := ipvstest.NewFake()
	own, err := ownership.NewSetRecords(ctx, ipsettest.NewFake())
	if err != nil {
		t.Fatal(err)
	}
	cc := &claimCounter{Records: own}
	g := ownership.NewGuard(k, cc)
	now := time.Unix(1000, 0)
	g.SetClock(func() time.Time { return now })
	return g, k, cc, &now
}

// After a listing, fresh adds ask the kernel nothing before their claim;
// a foreign virtual server the listing missed is still refused by the
// kernel's own add, left untouched and unclaimed, and the next attempt on
// it is refused before any claim.
func TestGuardListingSparesExistenceChecks(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g, k, cc, _ := newListingGuard(t)
	if _, err := g.ListVirtualServers(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := g.AddVirtualServer(ctx, vs("10.0.1.1", ipvs.TCP, uint16(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.Calls("GetVirtualServer"); n != 0 {
		t.Errorf("%d existence checks after a listing, want 0", n)
	}

	foreign := vs("10.0.0.9", ipvs.TCP, 80)
	foreign.Scheduler = "wlc"
	if err := k.AddVirtualServer(ctx, foreign); err != nil { // after the listing
		t.Fatal(err)
	}
	mine := foreign
	mine.Scheduler = "rr"
	claims := cc.claims
	if err := g.AddVirtualServer(ctx, mine); !errors.Is(err, ipvs.ErrNotOwned) {
		t.Fatalf("add over a foreign virtual server: %v, want ErrNotOwned", err)
	}
	if g.Owns(foreign.Key()) {
		t.Error("a refused add left a claim")
	}
	if got, _ := k.GetVirtualServer(ctx, foreign.Key()); !got.Equal(foreign) {
		t.Errorf("foreign virtual server changed to %s", got)
	}
	if err := g.AddVirtualServer(ctx, mine); !errors.Is(err, ipvs.ErrNotOwned) {
		t.Fatalf("second add over a foreign virtual server: %v, want ErrNotOwned", err)
	}
	if got := cc.claims - claims; got != 1 {
		t.Errorf("%d claims for two adds over a foreign key, want 1 (the first, which the kernel refused)", got)
	}

	// A key the listing shows but which has gone since is asked about.
	if err := k.DeleteVirtualServer(ctx, foreign.Key()); err != nil {
		t.Fatal(err)
	}
	if err := g.AddVirtualServer(ctx, mine); err != nil {
		t.Fatalf("add after the foreign virtual server left: %v", err)
	}
	// An own delete keeps the listing true: re-adding needs no check.
	gets := k.Calls("GetVirtualServer")
	if err := g.DeleteVirtualServer(ctx, mine.Key()); err != nil {
		t.Fatal(err)
	}
	if err := g.AddVirtualServer(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if n := k.Calls("GetVirtualServer") - gets; n != 0 {
		t.Errorf("%d existence checks re-adding a virtual server this guard deleted, want 0", n)
	}
}

// A listing older than ListingTTL is not trusted: an occasional add asks
// for its key; one that expires during a burst of adds is taken again.
func TestGuardListingExpires(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g, k, _, now := newListingGuard(t)
	if _, err := g.ListVirtualServers(ctx); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(ownership.DefaultListingTTL + time.Second)
	if err := g.AddVirtualServer(ctx, vs("10.0.2.1", ipvs.TCP, 1)); err != nil {
		t.Fatal(err)
	}
	if n := k.Calls("GetVirtualServer"); n != 1 {
		t.Errorf("%d existence checks with an expired listing, want 1", n)
	}

	// A burst: the listing expires after answering many checks.
	if _, err := g.ListVirtualServers(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if i == 100 {
			*now = now.Add(ownership.DefaultListingTTL + time.Second)
		}
		if err := g.AddVirtualServer(ctx, vs("10.0.3.1", ipvs.TCP, uint16(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if n, lists := k.Calls("GetVirtualServer"), k.Calls("ListVirtualServers"); n != 1 || lists != 3 {
		t.Errorf("burst over an expiring listing: %d existence checks (want 1) and %d listings (want 3)", n, lists)
	}

	// ListingTTL 0: every fresh add asks.
	g.ListingTTL = 0
	if _, err := g.ListVirtualServers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.AddVirtualServer(ctx, vs("10.0.4.1", ipvs.TCP, 1)); err != nil {
		t.Fatal(err)
	}
	if n := k.Calls("GetVirtualServer"); n != 2 {
		t.Errorf("%d existence checks with ListingTTL 0, want 2", n)
	}
}
