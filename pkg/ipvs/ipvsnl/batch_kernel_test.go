package ipvsnl_test

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// AddRealServers sends its requests together and reports each one's
// result as AddRealServer would: a present real server is ErrExists, the
// others are added with their weight and forwarding method.
func TestKernelAddRealServersBatched(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.210.0.1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
	if err := g.AddVirtualServer(ctx, vs); err != nil {
		t.Fatal(err)
	}
	rs := func(last byte, w int, f ipvs.Forwarding) ipvs.RealServer {
		return ipvs.RealServer{Address: netip.AddrFrom4([4]byte{10, 211, 0, last}), Port: 8080, Weight: w, Forwarding: f}
	}
	if err := g.AddRealServer(ctx, vs.Key(), rs(1, 1, ipvs.Masquerade)); err != nil {
		t.Fatal(err)
	}
	var want []ipvs.RealServer
	batch := []ipvs.RealServer{rs(1, 1, ipvs.Masquerade)}
	for i := 2; i < 300; i++ { // more than one send
		r := rs(byte(i%250+1), i%7, []ipvs.Forwarding{ipvs.Masquerade, ipvs.DirectRoute, ipvs.Tunnel}[i%3])
		r.Port = uint16(8000 + i)
		batch = append(batch, r)
		want = append(want, r)
	}
	errs := g.AddRealServers(ctx, vs.Key(), batch)
	if len(errs) != len(batch) || !errors.Is(errs[0], ipvs.ErrExists) {
		t.Fatalf("first result %v, want ErrExists", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("real server %d: %v", i+1, err)
		}
	}
	got, err := g.ListRealServers(ctx, vs.Key())
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, rs(1, 1, ipvs.Masquerade))
	ipvs.SortRealServers(want)
	if len(got) != len(want) {
		t.Fatalf("%d real servers, want %d", len(got), len(want))
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("real server %d: got %s, want %s", i, got[i], want[i])
		}
	}
	// A virtual server kubelvs does not own is refused for every entry.
	other := ipvs.Key{Address: netip.MustParseAddr("10.210.0.2"), Protocol: ipvs.TCP, Port: 80}
	for _, err := range g.AddRealServers(ctx, other, batch[:2]) {
		if !errors.Is(err, ipvs.ErrNotFound) {
			t.Errorf("add to a missing virtual server: %v, want ErrNotFound", err)
		}
	}
}

// Only the last request of a send asks for an acknowledgement; failures of
// the others must still come back, each to its own real server: a failure
// first, in the middle, last in a send and last of all.
func TestKernelAddRealServersReportsEachFailure(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.210.1.1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
	if err := g.AddVirtualServer(ctx, vs); err != nil {
		t.Fatal(err)
	}
	var batch []ipvs.RealServer
	for i := range 260 { // three sends: 128, 128, 4
		batch = append(batch, ipvs.RealServer{Address: netip.AddrFrom4([4]byte{10, 211, 1, byte(i%250 + 1)}), Port: uint16(9000 + i), Weight: 1})
	}
	bad := map[int]error{}
	for _, i := range []int{0, 5, 127, 128, 200, 259} {
		batch[i].Weight = -1 // the kernel answers ERANGE
		bad[i] = nil
	}
	batch[6] = batch[4] // a duplicate in the same send: the second is ErrExists
	errs := g.AddRealServers(ctx, vs.Key(), batch)
	if len(errs) != len(batch) {
		t.Fatalf("%d results for %d real servers", len(errs), len(batch))
	}
	for i, err := range errs {
		_, isBad := bad[i]
		switch {
		case i == 6:
			if !errors.Is(err, ipvs.ErrExists) {
				t.Errorf("duplicate real server %d: %v, want ErrExists", i, err)
			}
		case isBad:
			if !errors.Is(err, syscall.ERANGE) {
				t.Errorf("real server %d of weight -1: %v, want ERANGE", i, err)
			}
		case err != nil:
			t.Errorf("real server %d: %v", i, err)
		}
	}
	got, err := g.ListRealServers(ctx, vs.Key())
	if err != nil {
		t.Fatal(err)
	}
	if want := len(batch) - len(bad) - 1; len(got) != want {
		t.Errorf("%d real servers in the kernel, want %d", len(got), want)
	}
	// All of a send failing: every failure is reported.
	for i, err := range g.AddRealServers(ctx, vs.Key(), batch[1:5]) {
		if !errors.Is(err, ipvs.ErrExists) {
			t.Errorf("re-adding real server %d: %v, want ErrExists", i+1, err)
		}
	}
}

// A foreign virtual server created after the guard's listing (which then
// trusts the key to be free) is still refused on the same key: the
// kernel's add fails, the claim is released, and the foreign virtual server
// and its real servers are left exactly as they were, also on a second try.
func TestKernelForeignAfterListingRefused(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	if _, err := g.ListVirtualServers(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := ipvsnl.New() // another program: no guard, no ownership
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	foreign := ipvs.VirtualServer{Address: netip.MustParseAddr("10.210.2.1"), Protocol: ipvs.TCP, Port: 443, Scheduler: "wlc"}
	if err := other.AddVirtualServer(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.DeleteVirtualServer(ctx, foreign.Key()) }()
	frs := ipvs.RealServer{Address: netip.MustParseAddr("10.211.2.1"), Port: 443, Weight: 5}
	if err := other.AddRealServer(ctx, foreign.Key(), frs); err != nil {
		t.Fatal(err)
	}
	before := kerneltest.DumpVIP(ctx, t, other, foreign.Address)

	mine := foreign
	mine.Scheduler = "rr"
	for try := range 2 {
		if err := g.AddVirtualServer(ctx, mine); !errors.Is(err, ipvs.ErrNotOwned) {
			t.Fatalf("try %d: add over a foreign virtual server: %v, want ErrNotOwned", try, err)
		}
		if g.Owns(mine.Key()) {
			t.Fatalf("try %d: the refused key is recorded as owned", try)
		}
		for _, err := range g.AddRealServers(ctx, mine.Key(), []ipvs.RealServer{{Address: netip.MustParseAddr("10.211.2.2"), Port: 443, Weight: 1}}) {
			if !errors.Is(err, ipvs.ErrNotOwned) {
				t.Errorf("try %d: real servers for a foreign virtual server: %v, want ErrNotOwned", try, err)
			}
		}
		if after := kerneltest.DumpVIP(ctx, t, other, foreign.Address); after != before {
			t.Errorf("try %d: foreign virtual server changed:\n--- before\n%s--- after\n%s", try, before, after)
		}
	}
}
