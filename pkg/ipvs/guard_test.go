package ipvs_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
)

func vs(addr string, p ipvs.Protocol, port uint16) ipvs.VirtualServer {
	return ipvs.VirtualServer{Address: netip.MustParseAddr(addr), Protocol: p, Port: port, Scheduler: "rr"}
}

func newGuard(t *testing.T) (*ipvs.Guard, *ipvstest.Fake, *ipsettest.Fake) {
	t.Helper()
	k, sets := ipvstest.NewFake(), ipsettest.NewFake()
	own, err := ipvs.NewSetOwnership(sets)
	if err != nil {
		t.Fatal(err)
	}
	return ipvs.NewGuard(k, own), k, sets
}

func TestGuardOwnership(t *testing.T) {
	t.Parallel()
	g, k, sets := newGuard(t)
	foreign := vs("10.0.0.9", ipvs.TCP, 80)
	if err := k.AddVirtualServer(foreign); err != nil { // another program's rule
		t.Fatal(err)
	}
	if err := k.AddRealServer(foreign.Key(), ipvs.RealServer{Address: netip.MustParseAddr("192.0.2.9"), Port: 80, Weight: 1}); err != nil {
		t.Fatal(err)
	}

	mine := vs("10.0.0.1", ipvs.TCP, 80)
	mine6 := vs("fd00::1", ipvs.UDP, 53)
	for _, v := range []ipvs.VirtualServer{mine, mine6} {
		if err := g.AddVirtualServer(v); err != nil {
			t.Fatal(err)
		}
	}
	rs := ipvs.RealServer{Address: netip.MustParseAddr("192.0.2.1"), Port: 8080, Weight: 3, Forwarding: ipvs.Masquerade}
	if err := g.AddRealServer(mine.Key(), rs); err != nil {
		t.Fatal(err)
	}

	for name, err := range map[string]error{
		"add":       g.AddVirtualServer(foreign),
		"update":    g.UpdateVirtualServer(foreign),
		"delete":    g.DeleteVirtualServer(foreign.Key()),
		"add rs":    g.AddRealServer(foreign.Key(), rs),
		"update rs": g.UpdateRealServer(foreign.Key(), rs),
		"delete rs": g.DeleteRealServer(foreign.Key(), rs.Key()),
	} {
		if !errors.Is(err, ipvs.ErrNotOwned) {
			t.Errorf("%s on a foreign virtual server: got %v, want ErrNotOwned", name, err)
		}
	}
	// Deleting what is gone (and not owned) is success.
	if err := g.DeleteVirtualServer(vs("10.0.0.7", ipvs.TCP, 1).Key()); err != nil {
		t.Errorf("delete missing: %v", err)
	}
	owned, err := ipvs.List(g, g.Owns)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 2 || !owned[0].Equal(mine) || len(owned[0].RealServers) != 1 {
		t.Errorf("List(owned) = %v", owned)
	}
	if err := g.DeleteVirtualServer(mine6.Key()); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "guard.ipvs", k.Dump())
	golden.Assert(t, "guard.ipset", sets.Dump())
}

func TestGuardAddFailureReleasesClaim(t *testing.T) {
	t.Parallel()
	g, k, _ := newGuard(t)
	k.FailNext("AddVirtualServer", nil)
	v := vs("10.0.0.1", ipvs.SCTP, 9)
	if err := g.AddVirtualServer(v); !errors.Is(err, fault.ErrInjected) {
		t.Fatalf("got %v, want injected fault", err)
	}
	if g.Owns(v.Key()) {
		t.Error("a failed add left an ownership claim")
	}
}

func TestOwnershipSurvivesRestart(t *testing.T) {
	t.Parallel()
	sets := ipsettest.NewFake()
	own, err := ipvs.NewSetOwnership(sets)
	if err != nil {
		t.Fatal(err)
	}
	k := vs("fd00::5", ipvs.TCP, 443).Key()
	if err := own.Claim(k); err != nil {
		t.Fatal(err)
	}
	again, err := ipvs.NewSetOwnership(sets)
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
