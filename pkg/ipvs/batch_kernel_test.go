package ipvs_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// AddRealServers sends its requests together and reports each one's
// result as AddRealServer would: a present real server is ErrExists, the
// others are added with their weight and forwarding method.
func TestKernelAddRealServersBatched(t *testing.T) {
	g := newKernelGuard(t)
	vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.210.0.1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
	if err := g.AddVirtualServer(vs); err != nil {
		t.Fatal(err)
	}
	rs := func(last byte, w int, f ipvs.Forwarding) ipvs.RealServer {
		return ipvs.RealServer{Address: netip.AddrFrom4([4]byte{10, 211, 0, last}), Port: 8080, Weight: w, Forwarding: f}
	}
	if err := g.AddRealServer(vs.Key(), rs(1, 1, ipvs.Masquerade)); err != nil {
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
	errs := g.AddRealServers(vs.Key(), batch)
	if len(errs) != len(batch) || !errors.Is(errs[0], ipvs.ErrExists) {
		t.Fatalf("first result %v, want ErrExists", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("real server %d: %v", i+1, err)
		}
	}
	got, err := g.ListRealServers(vs.Key())
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
	for _, err := range g.AddRealServers(other, batch[:2]) {
		if !errors.Is(err, ipvs.ErrNotFound) {
			t.Errorf("add to a missing virtual server: %v, want ErrNotFound", err)
		}
	}
}
