package ipvstest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// Contract checks the behaviors kubelvs relies on from an ipvs.Interface
// on the one open returns: the Fake on the host (contract_test.go) and the
// kernel in the guest (package ipvsnl), so that a fake drifting from the
// kernel fails a test. open is called once per subtest and must return a
// handle on a table that may hold other programs' virtual servers; the
// contract uses only addresses in 203.0.113.0/26, 198.51.100.0/26 and
// 2001:db8:c0::/44, and deletes what it created there.
//
// Changes go through an ownership.Guard, as the syncer's do, whose record
// is kept in an ipsettest.Fake: the record is the guard's own bookkeeping;
// what is under test is what the Interface answers it. "Another program"
// is the same handle used without the guard.
func Contract(t *testing.T, open func(t *testing.T) ipvs.Interface) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"virtual servers round-trip scheduler, flags and persistence", virtualServerRoundTrip},
		{"listing is sorted and holds every virtual server", listingSorted},
		{"adding an existing virtual server or real server is ErrExists", addExisting},
		{"what is missing is ErrNotFound, and deleting it is success", notFound},
		{"another program's virtual server is refused with ErrNotOwned and left as it was", foreignRefused},
		{"real servers round-trip weight and forwarding", realServerRoundTrip},
		{"a real server the kernel refuses is not added", realServerRefused},
		{"AddRealServers reports each real server's result at its index", addRealServersPerIndex},
		{"deleting a virtual server deletes its real servers", deleteCascades},
		{"a canceled context changes nothing and returns context.Canceled", canceledContext},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, newEnv(t, open)) })
	}
}

// env is one subtest's view of the table.
type env struct {
	ctx   context.Context
	raw   ipvs.Interface // another program: no guard
	guard *ownership.Guard
}

func newEnv(t *testing.T, open func(t *testing.T) ipvs.Interface) *env {
	ctx := context.Background()
	raw := open(t)
	own, err := ownership.NewSetRecords(ctx, ipsettest.NewFake())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ctx: ctx, raw: raw, guard: ownership.NewGuard(raw, own)}
	e.deleteOurs(t) // left by an earlier run that was killed
	t.Cleanup(func() { e.deleteOurs(t) })
	return e
}

// ours holds the addresses the contract uses.
var ours = []netip.Prefix{
	netip.MustParsePrefix("203.0.113.0/26"),
	netip.MustParsePrefix("198.51.100.0/26"),
	netip.MustParsePrefix("2001:db8:c0::/44"),
}

func isOurs(a netip.Addr) bool {
	return slices.ContainsFunc(ours, func(p netip.Prefix) bool { return p.Contains(a) })
}

func (e *env) deleteOurs(t *testing.T) {
	t.Helper()
	vss, err := e.raw.ListVirtualServers(e.ctx)
	if err != nil {
		t.Errorf("clean up: %v", err)
		return
	}
	for _, vs := range vss {
		if isOurs(vs.Address) {
			if err := e.raw.DeleteVirtualServer(e.ctx, vs.Key()); err != nil {
				t.Errorf("clean up: %v", err)
			}
		}
	}
}

// vip returns the n-th contract address of a family.
func vip(v6 bool, n int) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0xc1, 15: byte(n)})
	}
	return netip.AddrFrom4([4]byte{203, 0, 113, byte(n)})
}

// backend returns the n-th real server address of a family.
func backend(v6 bool, n int) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0xc2, 15: byte(n)})
	}
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(n)})
}

func families() []bool { return []bool{false, true} }

func famName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// readBack is vs as the kernel reads it back: the persistence netmask
// resolved to a prefix length when persistent, none otherwise.
func readBack(vs ipvs.VirtualServer) ipvs.VirtualServer {
	if vs.Timeout == 0 {
		vs.NetmaskBits = 0
	} else {
		vs.NetmaskBits = vs.Netmask()
	}
	return vs
}

func (e *env) add(t *testing.T, vs ipvs.VirtualServer, rss ...ipvs.RealServer) {
	t.Helper()
	if err := e.guard.AddVirtualServer(e.ctx, vs); err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss {
		if err := e.guard.AddRealServer(e.ctx, vs.Key(), rs); err != nil {
			t.Fatal(err)
		}
	}
}

// expectVS checks that k reads back exactly as want would be stored.
func (e *env) expectVS(t *testing.T, want ipvs.VirtualServer) {
	t.Helper()
	got, err := e.raw.GetVirtualServer(e.ctx, want.Key())
	if err != nil {
		t.Fatalf("get %s: %v", want.Key(), err)
	}
	if got != readBack(want) {
		t.Errorf("get %s = %+v, want %+v", want.Key(), got, readBack(want))
	}
}

// expectRS checks the real servers of k, counters aside.
func (e *env) expectRS(t *testing.T, k ipvs.Key, want ...ipvs.RealServer) {
	t.Helper()
	got, err := e.raw.ListRealServers(e.ctx, k)
	if err != nil {
		t.Fatalf("list real servers of %s: %v", k, err)
	}
	want = slices.Clone(want)
	ipvs.SortRealServers(want)
	if !slices.EqualFunc(got, want, ipvs.RealServer.Equal) {
		t.Errorf("real servers of %s = %v, want %v", k, got, want)
	}
}

// dump prints the virtual servers of the addresses given (all of the
// contract's if none), each followed by its real servers.
func (e *env) dump(t *testing.T, vips ...netip.Addr) string {
	t.Helper()
	vss, err := e.raw.ListVirtualServers(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, vs := range vss {
		if !isOurs(vs.Address) || len(vips) > 0 && !slices.Contains(vips, vs.Address) {
			continue
		}
		fmt.Fprintf(&b, "%s\n", vs)
		rss, err := e.raw.ListRealServers(e.ctx, vs.Key())
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range rss {
			fmt.Fprintf(&b, "  -> %s\n", rs)
		}
	}
	return b.String()
}

func virtualServerRoundTrip(t *testing.T, e *env) {
	port := uint16(1000)
	for _, v6 := range families() {
		for _, proto := range []ipvs.Protocol{ipvs.TCP, ipvs.UDP, ipvs.SCTP} {
			port++
			a := vip(v6, 1)
			cases := []struct{ first, update ipvs.VirtualServer }{
				{
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port, Scheduler: "wrr"},
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port, Scheduler: "sh", Flags: ipvs.FlagFallback | ipvs.FlagPort, Timeout: 300, NetmaskBits: a.BitLen() / 2},
				},
				{
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port + 100, Scheduler: "mh", Flags: ipvs.FlagPort, Timeout: 60},
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port + 100, Scheduler: "rr", NetmaskBits: 8},
				},
			}
			if proto == ipvs.UDP {
				cases = append(cases, struct{ first, update ipvs.VirtualServer }{
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port + 200, Scheduler: "lc", Flags: ipvs.FlagOnePacket},
					ipvs.VirtualServer{Address: a, Protocol: proto, Port: port + 200, Scheduler: "lc", Timeout: 1},
				})
			}
			for _, c := range cases {
				t.Run(c.first.String(), func(t *testing.T) {
					e.add(t, c.first)
					e.expectVS(t, c.first)
					if err := e.guard.UpdateVirtualServer(e.ctx, c.update); err != nil {
						t.Fatal(err)
					}
					e.expectVS(t, c.update)
				})
			}
		}
	}
}

func listingSorted(t *testing.T, e *env) {
	var want []ipvs.VirtualServer
	for i, v6 := range []bool{true, false, true, false} {
		for _, proto := range []ipvs.Protocol{ipvs.UDP, ipvs.TCP} {
			vs := ipvs.VirtualServer{Address: vip(v6, 10-i), Protocol: proto, Port: uint16(90 - i), Scheduler: "rr"}
			e.add(t, vs)
			want = append(want, vs)
		}
	}
	got, err := e.raw.ListVirtualServers(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(got, func(a, b ipvs.VirtualServer) int { return a.Key().Compare(b.Key()) }) {
		t.Errorf("listing not sorted by key: %v", got)
	}
	got = slices.DeleteFunc(got, func(vs ipvs.VirtualServer) bool { return !isOurs(vs.Address) })
	ipvs.SortVirtualServers(want)
	if !slices.EqualFunc(got, want, ipvs.VirtualServer.Equal) {
		t.Errorf("listing = %v, want %v", got, want)
	}
}

func addExisting(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: vip(v6, 2), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
			rs := ipvs.RealServer{Address: backend(v6, 2), Port: 8080, Weight: 1}
			e.add(t, vs, rs)
			other := vs
			other.Scheduler = "wlc"
			if err := e.guard.AddVirtualServer(e.ctx, other); !errors.Is(err, ipvs.ErrExists) {
				t.Errorf("adding an owned virtual server again: %v, want ErrExists", err)
			}
			if err := e.raw.AddVirtualServer(e.ctx, other); !errors.Is(err, ipvs.ErrExists) {
				t.Errorf("adding a virtual server again without the guard: %v, want ErrExists", err)
			}
			heavier := rs
			heavier.Weight = 5
			if err := e.guard.AddRealServer(e.ctx, vs.Key(), heavier); !errors.Is(err, ipvs.ErrExists) {
				t.Errorf("adding a real server again: %v, want ErrExists", err)
			}
			e.expectVS(t, vs)
			e.expectRS(t, vs.Key(), rs)
		})
	}
}

func notFound(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			missing := ipvs.VirtualServer{Address: vip(v6, 3), Protocol: ipvs.UDP, Port: 53, Scheduler: "rr"}
			rs := ipvs.RealServer{Address: backend(v6, 3), Port: 53, Weight: 1}
			for _, h := range []struct {
				name string
				i    ipvs.Interface
			}{{"guarded", e.guard}, {"unguarded", e.raw}} {
				if _, err := h.i.GetVirtualServer(e.ctx, missing.Key()); !errors.Is(err, ipvs.ErrNotFound) {
					t.Errorf("%s: get a missing virtual server: %v, want ErrNotFound", h.name, err)
				}
				if err := h.i.UpdateVirtualServer(e.ctx, missing); !errors.Is(err, ipvs.ErrNotFound) {
					t.Errorf("%s: update a missing virtual server: %v, want ErrNotFound", h.name, err)
				}
				if _, err := h.i.ListRealServers(e.ctx, missing.Key()); !errors.Is(err, ipvs.ErrNotFound) {
					t.Errorf("%s: list the real servers of a missing virtual server: %v, want ErrNotFound", h.name, err)
				}
				if err := h.i.AddRealServer(e.ctx, missing.Key(), rs); !errors.Is(err, ipvs.ErrNotFound) {
					t.Errorf("%s: add a real server to a missing virtual server: %v, want ErrNotFound", h.name, err)
				}
				for i, err := range ipvs.AddRealServers(e.ctx, h.i, missing.Key(), []ipvs.RealServer{rs, rs}) {
					if !errors.Is(err, ipvs.ErrNotFound) {
						t.Errorf("%s: AddRealServers to a missing virtual server, index %d: %v, want ErrNotFound", h.name, i, err)
					}
				}
				if err := h.i.UpdateRealServer(e.ctx, missing.Key(), rs); !errors.Is(err, ipvs.ErrNotFound) {
					t.Errorf("%s: update a real server of a missing virtual server: %v, want ErrNotFound", h.name, err)
				}
				if err := h.i.DeleteRealServer(e.ctx, missing.Key(), rs.Key()); err != nil {
					t.Errorf("%s: delete a real server of a missing virtual server: %v, want success", h.name, err)
				}
				if err := h.i.DeleteVirtualServer(e.ctx, missing.Key()); err != nil {
					t.Errorf("%s: delete a missing virtual server: %v, want success", h.name, err)
				}
			}
			// A missing real server of a present virtual server.
			e.add(t, missing)
			if err := e.guard.UpdateRealServer(e.ctx, missing.Key(), rs); !errors.Is(err, ipvs.ErrNotFound) {
				t.Errorf("update a missing real server: %v, want ErrNotFound", err)
			}
			if err := e.guard.DeleteRealServer(e.ctx, missing.Key(), rs.Key()); err != nil {
				t.Errorf("delete a missing real server: %v, want success", err)
			}
			e.expectRS(t, missing.Key())
			if got := e.dump(t, missing.Address); got != missing.String()+"\n" {
				t.Errorf("table after the misses:\n%s", got)
			}
		})
	}
}

func foreignRefused(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			foreign := ipvs.VirtualServer{Address: vip(v6, 4), Protocol: ipvs.TCP, Port: 443, Scheduler: "wlc"}
			frs := ipvs.RealServer{Address: backend(v6, 4), Port: 443, Weight: 3}
			if err := e.raw.AddVirtualServer(e.ctx, foreign); err != nil {
				t.Fatal(err)
			}
			if err := e.raw.AddRealServer(e.ctx, foreign.Key(), frs); err != nil {
				t.Fatal(err)
			}
			before := e.dump(t, foreign.Address)
			up := foreign
			up.Scheduler = "rr"
			rs := ipvs.RealServer{Address: backend(v6, 5), Port: 443, Weight: 1}
			changed := frs
			changed.Weight = 0
			for name, err := range map[string]error{
				"add":           e.guard.AddVirtualServer(e.ctx, up),
				"update":        e.guard.UpdateVirtualServer(e.ctx, up),
				"delete":        e.guard.DeleteVirtualServer(e.ctx, foreign.Key()),
				"add real":      e.guard.AddRealServer(e.ctx, foreign.Key(), rs),
				"update real":   e.guard.UpdateRealServer(e.ctx, foreign.Key(), changed),
				"delete real":   e.guard.DeleteRealServer(e.ctx, foreign.Key(), frs.Key()),
				"add reals [0]": ipvs.AddRealServers(e.ctx, e.guard, foreign.Key(), []ipvs.RealServer{rs})[0],
			} {
				if !errors.Is(err, ipvs.ErrNotOwned) {
					t.Errorf("%s %s: %v, want ErrNotOwned", name, foreign.Key(), err)
				}
			}
			if e.guard.Owns(foreign.Key()) {
				t.Errorf("%s is recorded as owned after the refusals", foreign.Key())
			}
			// Reading is allowed.
			e.expectVS(t, foreign)
			e.expectRS(t, foreign.Key(), frs)
			if after := e.dump(t, foreign.Address); after != before {
				t.Errorf("the foreign virtual server changed:\n--- before\n%s--- after\n%s", before, after)
			}
		})
	}
}

func realServerRoundTrip(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: vip(v6, 6), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
			e.add(t, vs)
			want := []ipvs.RealServer{
				{Address: backend(v6, 9), Port: 8080, Weight: 1, Forwarding: ipvs.Masquerade},
				{Address: backend(v6, 7), Port: 80, Weight: 2, Forwarding: ipvs.DirectRoute},
				{Address: backend(v6, 8), Port: 80, Weight: 3, Forwarding: ipvs.Tunnel},
				{Address: backend(v6, 9), Port: 8081, Weight: 0, Forwarding: ipvs.Masquerade},
			}
			for _, rs := range want {
				if err := e.guard.AddRealServer(e.ctx, vs.Key(), rs); err != nil {
					t.Fatal(err)
				}
			}
			e.expectRS(t, vs.Key(), want...)
			// A drain: weight 0; and a change of forwarding method.
			want[0].Weight = 0
			want[1].Forwarding, want[1].Weight = ipvs.Tunnel, 7
			for _, rs := range want[:2] {
				if err := e.guard.UpdateRealServer(e.ctx, vs.Key(), rs); err != nil {
					t.Fatal(err)
				}
			}
			e.expectRS(t, vs.Key(), want...)
			got, err := e.raw.ListRealServers(e.ctx, vs.Key())
			if err != nil {
				t.Fatal(err)
			}
			for _, rs := range got {
				if rs.ActiveConns != 0 || rs.InactiveConns != 0 {
					t.Errorf("%s has connections without traffic: %d active, %d inactive", rs, rs.ActiveConns, rs.InactiveConns)
				}
			}
			for _, rs := range want[1:] {
				if err := e.guard.DeleteRealServer(e.ctx, vs.Key(), rs.Key()); err != nil {
					t.Fatal(err)
				}
			}
			e.expectRS(t, vs.Key(), want[0])
			e.expectVS(t, vs)
		})
	}
}

func realServerRefused(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: vip(v6, 11), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
			good := ipvs.RealServer{Address: backend(v6, 11), Port: 8080, Weight: 1}
			e.add(t, vs, good)
			for name, rs := range map[string]ipvs.RealServer{
				"negative weight":           {Address: backend(v6, 12), Port: 8080, Weight: -1},
				"unknown forwarding":        {Address: backend(v6, 13), Port: 8080, Weight: 1, Forwarding: 9},
				"other family, masqueraded": {Address: backend(!v6, 14), Port: 8080, Weight: 1},
			} {
				if err := e.guard.AddRealServer(e.ctx, vs.Key(), rs); err == nil {
					t.Errorf("add a real server with %s (%s): success, want an error", name, rs)
				}
			}
			bad := good
			bad.Weight = -1
			if err := e.guard.UpdateRealServer(e.ctx, vs.Key(), bad); err == nil {
				t.Errorf("update a real server to a negative weight: success, want an error")
			}
			bad.Weight, bad.Forwarding = 1, 9
			if err := e.guard.UpdateRealServer(e.ctx, vs.Key(), bad); err == nil {
				t.Errorf("update a real server to an unknown forwarding method: success, want an error")
			}
			e.expectRS(t, vs.Key(), good)
		})
	}
}

func addRealServersPerIndex(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: vip(v6, 15), Protocol: ipvs.UDP, Port: 53, Scheduler: "wrr"}
			rs := func(n int, w int, f ipvs.Forwarding) ipvs.RealServer {
				return ipvs.RealServer{Address: backend(v6, n), Port: 5353, Weight: w, Forwarding: f}
			}
			present := rs(20, 1, ipvs.Masquerade)
			e.add(t, vs, present)
			batch := []ipvs.RealServer{
				rs(21, 2, ipvs.Masquerade),
				rs(20, 9, ipvs.Masquerade), // present
				rs(22, -1, ipvs.Masquerade),
				rs(23, 3, ipvs.DirectRoute),
				rs(21, 4, ipvs.Masquerade), // the first again
				rs(24, 1, 9),               // unknown forwarding
				rs(25, 0, ipvs.Tunnel),
				{Address: backend(!v6, 26), Port: 5353, Weight: 1}, // the other family
			}
			errs := ipvs.AddRealServers(e.ctx, e.guard, vs.Key(), batch)
			if len(errs) != len(batch) {
				t.Fatalf("%d results for %d real servers", len(errs), len(batch))
			}
			for i, err := range errs {
				switch i {
				case 0, 3, 6:
					if err != nil {
						t.Errorf("index %d (%s): %v, want success", i, batch[i], err)
					}
				case 1, 4:
					if !errors.Is(err, ipvs.ErrExists) {
						t.Errorf("index %d (%s): %v, want ErrExists", i, batch[i], err)
					}
				case 2, 5, 7:
					if err == nil || errors.Is(err, ipvs.ErrExists) || errors.Is(err, ipvs.ErrNotFound) {
						t.Errorf("index %d (%s): %v, want the kernel's refusal", i, batch[i], err)
					}
				}
			}
			e.expectRS(t, vs.Key(), present, batch[0], batch[3], batch[6])
		})
	}
}

func deleteCascades(t *testing.T, e *env) {
	for _, v6 := range families() {
		t.Run(famName(v6), func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: vip(v6, 30), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
			e.add(t, vs,
				ipvs.RealServer{Address: backend(v6, 30), Port: 80, Weight: 1},
				ipvs.RealServer{Address: backend(v6, 31), Port: 80, Weight: 2, Forwarding: ipvs.DirectRoute})
			if err := e.guard.DeleteVirtualServer(e.ctx, vs.Key()); err != nil {
				t.Fatal(err)
			}
			if e.guard.Owns(vs.Key()) {
				t.Errorf("%s still recorded as owned after its deletion", vs.Key())
			}
			if err := e.guard.DeleteVirtualServer(e.ctx, vs.Key()); err != nil {
				t.Errorf("deleting it again: %v, want success", err)
			}
			e.add(t, vs)
			e.expectRS(t, vs.Key())
		})
	}
}

func canceledContext(t *testing.T, e *env) {
	vs := ipvs.VirtualServer{Address: vip(false, 40), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
	rs := ipvs.RealServer{Address: backend(false, 40), Port: 80, Weight: 1}
	e.add(t, vs, rs)
	before := e.dump(t)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	fresh := ipvs.VirtualServer{Address: vip(true, 40), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
	up := vs
	up.Scheduler = "wlc"
	other := ipvs.RealServer{Address: backend(false, 41), Port: 80, Weight: 1}
	heavier := rs
	heavier.Weight = 9
	calls := map[string]func(i ipvs.Interface) error{
		"ListVirtualServers":  func(i ipvs.Interface) error { _, err := i.ListVirtualServers(ctx); return err },
		"GetVirtualServer":    func(i ipvs.Interface) error { _, err := i.GetVirtualServer(ctx, vs.Key()); return err },
		"AddVirtualServer":    func(i ipvs.Interface) error { return i.AddVirtualServer(ctx, fresh) },
		"UpdateVirtualServer": func(i ipvs.Interface) error { return i.UpdateVirtualServer(ctx, up) },
		"DeleteVirtualServer": func(i ipvs.Interface) error { return i.DeleteVirtualServer(ctx, vs.Key()) },
		"ListRealServers":     func(i ipvs.Interface) error { _, err := i.ListRealServers(ctx, vs.Key()); return err },
		"AddRealServer":       func(i ipvs.Interface) error { return i.AddRealServer(ctx, vs.Key(), other) },
		"AddRealServers": func(i ipvs.Interface) error {
			return errors.Join(ipvs.AddRealServers(ctx, i, vs.Key(), []ipvs.RealServer{other, other})...)
		},
		"UpdateRealServer": func(i ipvs.Interface) error { return i.UpdateRealServer(ctx, vs.Key(), heavier) },
		"DeleteRealServer": func(i ipvs.Interface) error { return i.DeleteRealServer(ctx, vs.Key(), rs.Key()) },
	}
	for name, call := range calls {
		for _, h := range []struct {
			name string
			i    ipvs.Interface
		}{{"guarded", e.guard}, {"unguarded", e.raw}} {
			if err := call(h.i); !errors.Is(err, context.Canceled) {
				t.Errorf("%s %s: %v, want context.Canceled", h.name, name, err)
			}
		}
	}
	if e.guard.Owns(fresh.Key()) {
		t.Errorf("a canceled add left %s recorded as owned", fresh.Key())
	}
	if after := e.dump(t); after != before {
		t.Errorf("canceled calls changed the table:\n--- before\n%s--- after\n%s", before, after)
	}
}
