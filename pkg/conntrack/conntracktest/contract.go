package conntracktest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// Harness is what Contract runs on.
type Harness struct {
	// Open returns a handle on a conntrack table (or fake); called once
	// per subtest.
	Open func(t *testing.T) conntrack.Interface
	// AddFlows puts flows into the table behind h, as traffic through
	// IPVS would, and removes those left when the test ends.
	AddFlows func(t *testing.T, h conntrack.Interface, flows ...conntrack.Flow)
}

// Contract checks the behaviors kubelvs relies on from a
// conntrack.Interface on the one h opens: the Fake on the host
// (contract_test.go) and the kernel in the guest (package conntracknl), so
// that a fake drifting from the kernel fails a test. Its flows go to
// virtual addresses in 203.0.113.0/26 and 2001:db8:c1::/48, from clients in
// 192.0.2.0/26 and 2001:db8:c3::/48, answered by 198.51.100.0/26 and
// 2001:db8:c2::/48; each subtest uses addresses of its own.
func Contract(t *testing.T, h Harness) {
	for n, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"ListFlows returns the flows of one virtual service, sorted", listFlows},
		{"DeleteFlows deletes the targets' flows and no other", deleteOnlyTargets},
		{"DeleteFlows with many targets or virtual services deletes each target's flows", deleteManyTargets},
		{"DeleteFlows of flows already gone or of no targets deletes nothing", deleteNothing},
		{"a canceled context changes nothing and returns context.Canceled", canceledContext},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := h.Open(t)
			add := func(fs ...conntrack.Flow) { h.AddFlows(t, i, fs...) }
			c.run(t, &env{ctx: context.Background(), i: i, add: add, sub: byte(n)})
		})
	}
}

type env struct {
	ctx context.Context
	i   conntrack.Interface
	add func(...conntrack.Flow)
	sub byte // the subtest's number: its addresses
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// vip, client and backend return the subtest's n-th address of each role.
func (e *env) vip(v6 bool, n int) netip.Addr     { return e.addr(v6, 203, 0, 113, 0xc1, n) }
func (e *env) client(v6 bool, n int) netip.Addr  { return e.addr(v6, 192, 0, 2, 0xc3, n) }
func (e *env) backend(v6 bool, n int) netip.Addr { return e.addr(v6, 198, 51, 100, 0xc2, n) }

// addr: IPv4 a.b.c.(sub*8+n) (n < 8), IPv6 2001:db8:<x>::<sub>:<n>.
func (e *env) addr(v6 bool, a, b, c, x byte, n int) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, x, 13: e.sub, 14: byte(n >> 8), 15: byte(n)})
	}
	if n >= 8 {
		panic("IPv4 contract address out of range")
	}
	return netip.AddrFrom4([4]byte{a, b, c, e.sub*8 + byte(n)})
}

// flow is a flow as IPVS leaves it: client to VIP, answered by the backend.
func flow(proto uint8, client, vip, backend netip.AddrPort) conntrack.Flow {
	return conntrack.Flow{Protocol: proto, OrigSrc: client, OrigDst: vip, ReplySrc: backend, ReplyDst: client}
}

func (e *env) list(t *testing.T, vip netip.Addr, proto uint8, port uint16) []conntrack.Flow {
	t.Helper()
	got, err := e.i.ListFlows(e.ctx, vip, proto, port)
	if err != nil {
		t.Fatalf("list flows of %s/%s: %v", conntrack.ProtoName(proto), ap(vip, port), err)
	}
	return got
}

// expect checks the flows of every virtual service in want, sorted.
func (e *env) expect(t *testing.T, services []conntrack.Target, want []conntrack.Flow) {
	t.Helper()
	for _, s := range services {
		var w []conntrack.Flow
		for _, f := range want {
			if f.Protocol == s.Protocol && f.OrigDst == s.VIP {
				w = append(w, f)
			}
		}
		conntrack.SortFlows(w)
		if got := e.list(t, s.VIP.Addr(), s.Protocol, s.VIP.Port()); !slices.Equal(got, w) {
			t.Errorf("flows of %s/%s = %v, want %v", conntrack.ProtoName(s.Protocol), s.VIP, got, w)
		}
	}
}

// services returns the virtual services of flows, once each.
func services(flows []conntrack.Flow) []conntrack.Target {
	var out []conntrack.Target
	for _, f := range flows {
		s := conntrack.Target{Protocol: f.Protocol, VIP: f.OrigDst}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func listFlows(t *testing.T, e *env) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%t", v6), func(t *testing.T) {
			vip := e.vip(v6, 1)
			c1, c2, be := e.client(v6, 1), e.client(v6, 2), ap(e.backend(v6, 1), 8053)
			want := []conntrack.Flow{
				flow(conntrack.UDP, ap(c2, 40000), ap(vip, 53), be),
				flow(conntrack.UDP, ap(c1, 40001), ap(vip, 53), be),
				flow(conntrack.UDP, ap(c1, 40000), ap(vip, 53), ap(e.backend(v6, 2), 8053)),
			}
			others := []conntrack.Flow{
				flow(conntrack.TCP, ap(c1, 40002), ap(vip, 53), be),          // other protocol
				flow(conntrack.UDP, ap(c1, 40003), ap(vip, 54), be),          // other port
				flow(conntrack.UDP, ap(c1, 40004), ap(e.vip(v6, 2), 53), be), // other VIP
			}
			e.add(append(slices.Clone(want), others...)...)
			conntrack.SortFlows(want)
			if got := e.list(t, vip, conntrack.UDP, 53); !slices.Equal(got, want) {
				t.Errorf("ListFlows = %v, want %v", got, want)
			}
			if !v6 {
				mapped := netip.AddrFrom16(vip.As16())
				if got := e.list(t, mapped, conntrack.UDP, 53); !slices.Equal(got, want) {
					t.Errorf("ListFlows(%s) = %v, want the flows of %s: %v", mapped, got, vip, want)
				}
			}
			if got := e.list(t, vip, conntrack.SCTP, 53); len(got) != 0 {
				t.Errorf("ListFlows of a service without flows = %v", got)
			}
		})
	}
}

func deleteOnlyTargets(t *testing.T, e *env) {
	vip4, vip6 := ap(e.vip(false, 1), 53), ap(e.vip(true, 1), 53)
	c4, c6 := e.client(false, 1), e.client(true, 1)
	gone4 := ap(e.backend(false, 1), 5353)
	gone6 := ap(e.backend(true, 1), 5353)
	deleted := []conntrack.Flow{
		flow(conntrack.UDP, ap(c4, 41000), vip4, gone4),
		flow(conntrack.UDP, ap(c4, 41001), vip4, gone4),
		flow(conntrack.UDP, ap(c6, 41000), vip6, ap(gone6.Addr(), 9999)), // any port of the backend
		flow(conntrack.UDP, ap(c6, 41001), vip6, gone6),
	}
	kept := []conntrack.Flow{
		flow(conntrack.UDP, ap(c4, 41002), vip4, ap(e.backend(false, 2), 5353)), // other backend
		flow(conntrack.TCP, ap(c4, 41003), vip4, gone4),                         // other protocol
		flow(conntrack.UDP, ap(c4, 41004), ap(e.vip(false, 2), 53), gone4),      // other VIP
		flow(conntrack.UDP, ap(c4, 41005), ap(vip4.Addr(), 54), gone4),          // other VIP port
		flow(conntrack.UDP, ap(c4, 41006), vip4, ap(gone4.Addr(), 5354)),        // other backend port
		flow(conntrack.UDP, ap(c6, 41002), vip6, ap(e.backend(true, 2), 5353)),  // other backend
	}
	all := append(slices.Clone(deleted), kept...)
	e.add(all...)
	n, err := e.i.DeleteFlows(e.ctx, []conntrack.Target{
		{Protocol: conntrack.UDP, VIP: vip4, Backend: gone4},
		{Protocol: conntrack.UDP, VIP: vip4, Backend: gone4}, // twice
		{Protocol: conntrack.UDP, VIP: netip.AddrPortFrom(netip.AddrFrom16(vip4.Addr().As16()), 53), Backend: gone4},
		{Protocol: conntrack.UDP, VIP: vip6, Backend: ap(gone6.Addr(), 0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(deleted) {
		t.Errorf("deleted %d flows, want %d", n, len(deleted))
	}
	e.expect(t, services(all), kept)
}

func deleteManyTargets(t *testing.T, e *env) {
	const n = 20 // more targets, and more virtual services, than kernel-filtered dumps
	vip := ap(e.vip(true, 1), 53)
	c := e.client(true, 1)
	var flows, keep []conntrack.Flow
	var byBackend, byVIP []conntrack.Target
	for i := range n {
		be := ap(e.backend(true, 0x100+i), 5353)
		f := flow(conntrack.UDP, ap(c, uint16(42000+i)), vip, be)
		byBackend = append(byBackend, conntrack.Target{Protocol: conntrack.UDP, VIP: vip, Backend: be})
		other := ap(e.vip(true, 0x100+i), 80)
		g := flow(conntrack.TCP, ap(c, uint16(43000+i)), other, be)
		byVIP = append(byVIP, conntrack.Target{Protocol: conntrack.TCP, VIP: other, Backend: be})
		flows = append(flows, f, g)
		// Each virtual service keeps a flow of another backend.
		keep = append(keep, flow(conntrack.TCP, ap(c, uint16(44000+i)), other, ap(e.backend(true, 0x200+i), 5353)))
	}
	e.add(append(slices.Clone(flows), keep...)...)
	for _, ts := range [][]conntrack.Target{byBackend, byVIP} {
		got, err := e.i.DeleteFlows(e.ctx, ts)
		if err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Errorf("deleted %d flows of %d targets, want %d", got, len(ts), n)
		}
	}
	e.expect(t, services(append(slices.Clone(flows), keep...)), keep)
}

func deleteNothing(t *testing.T, e *env) {
	vip, be := ap(e.vip(false, 1), 53), ap(e.backend(false, 1), 53)
	f := flow(conntrack.UDP, ap(e.client(false, 1), 45000), vip, be)
	e.add(f)
	target := []conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: be}}
	for _, c := range []struct {
		name    string
		targets []conntrack.Target
		want    int
	}{
		{"no targets", nil, 0},
		{"a target without flows", []conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: ap(e.backend(false, 2), 53)}}, 0},
		{"the target", target, 1},
		{"the target again", target, 0},
	} {
		n, err := e.i.DeleteFlows(e.ctx, c.targets)
		if err != nil || n != c.want {
			t.Errorf("%s: deleted %d, %v; want %d", c.name, n, err, c.want)
		}
	}
	e.expect(t, services([]conntrack.Flow{f}), nil)
}

func canceledContext(t *testing.T, e *env) {
	vip, be := ap(e.vip(false, 1), 53), ap(e.backend(false, 1), 53)
	fs := []conntrack.Flow{flow(conntrack.UDP, ap(e.client(false, 1), 46000), vip, be)}
	e.add(fs...)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := e.i.ListFlows(ctx, vip.Addr(), conntrack.UDP, vip.Port()); !errors.Is(err, context.Canceled) {
		t.Errorf("ListFlows: %v, want context.Canceled", err)
	}
	n, err := e.i.DeleteFlows(ctx, []conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: be}})
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("DeleteFlows: deleted %d, %v; want 0, context.Canceled", n, err)
	}
	e.expect(t, services(fs), fs)
}
