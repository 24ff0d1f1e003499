package conntracktest_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracktest"
)

func flow(proto uint8, client, vip, backend string) conntrack.Flow {
	c, v, b := netip.MustParseAddrPort(client), netip.MustParseAddrPort(vip), netip.MustParseAddrPort(backend)
	return conntrack.Flow{Protocol: proto, OrigSrc: c, OrigDst: v, ReplySrc: b, ReplyDst: c}
}

func TestDeleteFlowsMatchesOnlyTargets(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	gone := flow(conntrack.UDP, "10.0.0.5:4000", "10.96.0.10:53", "10.99.2.2:5353")
	goneAnyPort := flow(conntrack.UDP, "[fd00::5]:4000", "[fd96::10]:53", "[fd99::2]:9999")
	kept := []conntrack.Flow{
		flow(conntrack.UDP, "10.0.0.5:4001", "10.96.0.10:53", "10.99.2.3:5353"), // other backend
		flow(conntrack.TCP, "10.0.0.5:4002", "10.96.0.10:53", "10.99.2.2:5353"), // other protocol
		flow(conntrack.UDP, "10.0.0.5:4003", "10.96.0.11:53", "10.99.2.2:5353"), // other VIP
		flow(conntrack.UDP, "10.0.0.5:4004", "10.96.0.10:53", "10.99.2.2:5354"), // other backend port
	}
	f := conntracktest.NewFake(append([]conntrack.Flow{gone, goneAnyPort}, kept...)...)
	n, err := f.DeleteFlows(ctx, []conntrack.Target{
		{Protocol: conntrack.UDP, VIP: gone.OrigDst, Backend: gone.ReplySrc},
		{Protocol: conntrack.UDP, VIP: goneAnyPort.OrigDst, Backend: netip.AddrPortFrom(goneAnyPort.ReplySrc.Addr(), 0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("deleted %d flows, want 2", n)
	}
	want := conntracktest.NewFake(kept...)
	if got, want := f.Dump(), want.Dump(); got != want {
		t.Errorf("table after delete:\n%s\nwant:\n%s", got, want)
	}
	got, err := f.ListFlows(ctx, netip.MustParseAddr("10.96.0.10"), conntrack.UDP, 53)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("ListFlows = %v, want the two remaining UDP flows to 10.96.0.10:53", got)
	}
}
