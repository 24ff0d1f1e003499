package netfiltertest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// Harness is what Contract runs on.
type Harness struct {
	// Open returns a new instance for both families, with the default
	// Config, on a kernel (or fake) holding none of kubelvs's rules or
	// sets; called once per subtest. The harness removes them when the
	// subtest ends.
	Open func(t *testing.T) netfilter.Interface
	// RemoveRules deletes kubelvs's chains and jumps behind h, as an
	// administrator might; the ipsets stay.
	RemoveRules func(t *testing.T, h netfilter.Interface)
	// HasRules reports whether every rule and jump of every family is in
	// place behind h, exactly once.
	HasRules func(t *testing.T, h netfilter.Interface) bool
	// Another returns a second instance on the kernel behind h, as a
	// restarted agent would open: it knows nothing of what h wrote.
	Another func(t *testing.T, h netfilter.Interface) netfilter.Interface
}

// Contract checks the behaviors kubelvs relies on from a
// netfilter.Interface on the one h opens: the Fake on the host
// (contract_test.go) and iptables on the kernel in the guest (package
// iptables), so that a fake drifting from the kernel fails a test. Its
// members name VIPs in 203.0.113.0/26 and 2001:db8:c1::/48.
func Contract(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"SyncRules writes the first time, then only when forced and the rules are not in place", rulesWrittenOnce},
		{"SyncMembers and ListMembers round-trip the members of each family", membersRoundTrip},
		{"members are held as the ipsets hold them, also across a forced SyncRules", membersNormalised},
		{"UpdateMembers adds and removes its own members and leaves the others", updateAmongOthers},
		{"UpdateMembers of members already there or already gone is success", updateIdempotent},
		{"a new instance updates and then syncs without knowing what the ipsets hold", updateUnknown},
		{"a canceled context changes nothing and returns context.Canceled", canceledContext},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, &env{ctx: context.Background(), i: h.Open(t), h: h})
		})
	}
}

type env struct {
	ctx context.Context
	i   netfilter.Interface
	h   Harness
}

func (e *env) hasRules(t *testing.T) bool {
	t.Helper()
	return e.h.HasRules(t, e.i)
}

func (e *env) syncRules(t *testing.T, force, wantWrote bool) {
	t.Helper()
	wrote, err := e.i.SyncRules(e.ctx, force)
	if err != nil {
		t.Fatalf("SyncRules(force=%t): %v", force, err)
	}
	if wrote != wantWrote {
		t.Errorf("SyncRules(force=%t) wrote=%t, want %t", force, wrote, wantWrote)
	}
}

func (e *env) syncMembers(t *testing.T, m netfilter.Members) {
	t.Helper()
	if err := e.i.SyncMembers(e.ctx, m); err != nil {
		t.Fatalf("SyncMembers: %v", err)
	}
}

// expect checks that ListMembers returns want, each list sorted.
func (e *env) expect(t *testing.T, want netfilter.Members) {
	t.Helper()
	got, err := e.i.ListMembers(e.ctx)
	if err != nil {
		t.Fatalf("ListMembers: %v", err)
	}
	for _, l := range []struct {
		name      string
		got, want []ipset.Entry
	}{{"masquerade", got.Masquerade, want.Masquerade}, {"restricted", got.Restricted, want.Restricted}, {"allowed", got.Allowed, want.Allowed}, {"hairpin", got.Hairpin, want.Hairpin}} {
		w := slices.Clone(l.want)
		ipset.SortEntries(w)
		if !slices.Equal(l.got, slices.Compact(w)) {
			t.Errorf("%s members = %v, want %v", l.name, l.got, w)
		}
	}
}

func (e *env) update(t *testing.T, i netfilter.Interface, add, del netfilter.Members) {
	t.Helper()
	if err := i.UpdateMembers(e.ctx, add, del); err != nil {
		t.Fatalf("UpdateMembers: %v", err)
	}
}

func entry(a string, proto uint8, port uint16) ipset.Entry {
	return ipset.Entry{IP: netip.MustParseAddr(a), Protocol: proto, Port: port}
}

func allowed(e ipset.Entry, p string) ipset.Entry {
	e.Net = netip.MustParsePrefix(p)
	return e
}

func rulesWrittenOnce(t *testing.T, e *env) {
	if e.hasRules(t) {
		t.Fatal("rules in place before the first SyncRules: the harness did not start clean")
	}
	e.syncRules(t, false, true)
	if !e.hasRules(t) {
		t.Fatal("no rules after the first SyncRules")
	}
	e.syncRules(t, false, false)
	// In place: a forced sync reads them and writes nothing.
	e.syncRules(t, true, false)
	if !e.hasRules(t) {
		t.Fatal("no rules after a forced SyncRules")
	}
	// A new instance (a restarted agent) finds them in place too.
	e.i = e.h.Another(t, e.i)
	e.syncRules(t, true, false)
	// Someone removes them: an unforced sync does not look, a forced one
	// puts them back.
	e.h.RemoveRules(t, e.i)
	if e.hasRules(t) {
		t.Fatal("rules still in place after RemoveRules")
	}
	e.syncRules(t, false, false)
	if e.hasRules(t) {
		t.Error("an unforced SyncRules with nothing changed wrote the rules")
	}
	e.syncRules(t, true, true)
	if !e.hasRules(t) {
		t.Error("a forced SyncRules did not restore the rules")
	}
	e.syncRules(t, false, false)
}

func membersRoundTrip(t *testing.T, e *env) {
	e.syncRules(t, false, true)
	e.expect(t, netfilter.Members{})
	v4, v6 := entry("203.0.113.1", ipset.ProtoTCP, 80), entry("2001:db8:c1::1", ipset.ProtoUDP, 53)
	v4b, v6b := entry("203.0.113.2", ipset.ProtoUDP, 53), entry("2001:db8:c1::2", ipset.ProtoSCTP, 9)
	both := netfilter.Members{
		Masquerade: []ipset.Entry{v6, v4b, v4, v6b, v4},
		Restricted: []ipset.Entry{v6b, v4},
		Allowed: []ipset.Entry{allowed(v6b, "2001:db8:c3::/48"), allowed(v4, "192.0.2.0/24"),
			allowed(v4, "198.51.100.7/32"), allowed(v6b, "::/1"), allowed(v6b, "8000::/1")},
		Hairpin: []ipset.Entry{allowed(v4b, "10.99.1.2/32"), allowed(v6, "fd99:1::2/128"), allowed(v4b, "10.99.2.2/32")},
	}
	onlyV6 := both.Split(netfilter.IPv6)
	onlyV4 := both.Split(netfilter.IPv4)
	changed := netfilter.Members{
		Masquerade: []ipset.Entry{v4, v6b},
		Restricted: []ipset.Entry{v4b},
		Allowed:    []ipset.Entry{allowed(v4b, "192.0.2.0/25"), allowed(v4, "192.0.2.0/24")},
		Hairpin:    []ipset.Entry{allowed(v4b, "10.99.2.2/32"), allowed(v4b, "10.99.3.2/32")},
	}
	for _, c := range []struct {
		name string
		m    netfilter.Members
	}{
		{"both families", both},
		{"IPv6 only", onlyV6},
		{"IPv4 only", onlyV4},
		{"some kept, some new", changed},
		{"none", netfilter.Members{}},
		{"both families again", both},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.syncMembers(t, c.m)
			e.expect(t, c.m)
		})
	}
	e.syncRules(t, true, false) // in place: read, not written
	e.expect(t, both)
	e.syncMembers(t, changed)
	e.expect(t, changed)
}

func membersNormalised(t *testing.T, e *env) {
	e.syncRules(t, false, true)
	vip := entry("203.0.113.3", ipset.ProtoTCP, 443)
	vip6 := entry("2001:db8:c1::3", ipset.ProtoTCP, 443)
	m := netfilter.Members{
		Restricted: []ipset.Entry{vip, vip6},
		Allowed:    []ipset.Entry{allowed(vip, "192.0.2.77/24"), allowed(vip6, "2001:db8:c3::77/48")},
	}
	held := netfilter.Members{
		Restricted: m.Restricted,
		Allowed:    []ipset.Entry{allowed(vip, "192.0.2.0/24"), allowed(vip6, "2001:db8:c3::/48")},
	}
	e.syncMembers(t, m)
	e.expect(t, held)
	// After a periodic resync, the same members again.
	e.syncRules(t, true, false) // in place: read, not written
	e.syncMembers(t, m)
	e.expect(t, held)
}

// Members of both families for the UpdateMembers cases: base is synced
// first, then changed.
var (
	u4, u4b = entry("203.0.113.10", ipset.ProtoTCP, 80), entry("203.0.113.11", ipset.ProtoUDP, 53)
	u6, u6b = entry("2001:db8:c1::10", ipset.ProtoTCP, 443), entry("2001:db8:c1::11", ipset.ProtoSCTP, 9)
	base    = netfilter.Members{
		Masquerade: []ipset.Entry{u4, u6},
		Restricted: []ipset.Entry{u4b, u6b},
		Allowed:    []ipset.Entry{allowed(u4b, "192.0.2.0/24"), allowed(u6b, "2001:db8:c3::/48")},
		Hairpin:    []ipset.Entry{allowed(u4, "10.99.1.2/32"), allowed(u6, "fd99:1::2/128")},
	}
)

func updateAmongOthers(t *testing.T, e *env) {
	e.syncRules(t, false, true)
	e.syncMembers(t, base)
	// Each list gains one member and loses another, of each family;
	// allowed ranges are given unmasked, as the ipsets do not hold them.
	add := netfilter.Members{
		Masquerade: []ipset.Entry{u4b, u6b},
		Restricted: []ipset.Entry{u4},
		Allowed:    []ipset.Entry{allowed(u4b, "198.51.100.77/24"), allowed(u6b, "2001:db8:c4::77/48")},
		Hairpin:    []ipset.Entry{allowed(u4, "10.99.2.2/32"), allowed(u6, "fd99:2::2/128")},
	}
	del := netfilter.Members{
		Masquerade: []ipset.Entry{u4},
		Restricted: []ipset.Entry{u6b},
		Allowed:    []ipset.Entry{allowed(u4b, "192.0.2.99/24")},
		Hairpin:    []ipset.Entry{allowed(u6, "fd99:1::2/128")},
	}
	e.update(t, e.i, add, del)
	after := netfilter.Members{
		Masquerade: []ipset.Entry{u6, u4b, u6b},
		Restricted: []ipset.Entry{u4b, u4},
		Allowed:    []ipset.Entry{allowed(u6b, "2001:db8:c3::/48"), allowed(u4b, "198.51.100.0/24"), allowed(u6b, "2001:db8:c4::/48")},
		Hairpin:    []ipset.Entry{allowed(u4, "10.99.1.2/32"), allowed(u4, "10.99.2.2/32"), allowed(u6, "fd99:2::2/128")},
	}
	e.expect(t, after)
	// A member in both is added.
	e.update(t, e.i, netfilter.Members{Masquerade: []ipset.Entry{u4}}, netfilter.Members{Masquerade: []ipset.Entry{u4, u4b}})
	after.Masquerade = []ipset.Entry{u4, u6, u6b}
	e.expect(t, after)
	// A full sync compares with what the updates left, also after a
	// forced SyncRules read the sets again.
	e.syncMembers(t, base)
	e.expect(t, base)
	e.update(t, e.i, netfilter.Members{Masquerade: []ipset.Entry{u4b}}, netfilter.Members{Hairpin: base.Hairpin})
	e.syncRules(t, true, false) // in place: read, not written
	e.expect(t, netfilter.Members{Masquerade: []ipset.Entry{u4, u6, u4b}, Restricted: base.Restricted, Allowed: base.Allowed})
	e.update(t, e.i, netfilter.Members{}, netfilter.Members{Masquerade: []ipset.Entry{u4b}, Allowed: base.Allowed})
	e.expect(t, netfilter.Members{Masquerade: []ipset.Entry{u4, u6}, Restricted: base.Restricted})
	e.syncMembers(t, base)
	e.expect(t, base)
}

func updateIdempotent(t *testing.T, e *env) {
	e.syncRules(t, false, true)
	e.syncMembers(t, base)
	gone := entry("203.0.113.12", ipset.ProtoTCP, 8080)
	for range 2 {
		// Present members added, absent ones removed: nothing changes.
		e.update(t, e.i, base, netfilter.Members{Masquerade: []ipset.Entry{gone}, Allowed: []ipset.Entry{allowed(u4, "192.0.2.0/24")}})
		e.expect(t, base)
	}
	for range 2 {
		e.update(t, e.i, netfilter.Members{}, base)
		e.expect(t, netfilter.Members{})
	}
	e.update(t, e.i, base, netfilter.Members{})
	e.expect(t, base)
}

func updateUnknown(t *testing.T, e *env) {
	e.syncRules(t, false, true)
	e.syncMembers(t, base)
	o := e.h.Another(t, e.i)
	// A present member added and an absent one removed, among a real
	// change, by an instance that never read the ipsets.
	e.update(t, o,
		netfilter.Members{Masquerade: []ipset.Entry{u4, u4b}, Allowed: []ipset.Entry{allowed(u6b, "2001:db8:c4::1/48")}},
		netfilter.Members{Masquerade: []ipset.Entry{u6, u6b}, Hairpin: []ipset.Entry{allowed(u4, "10.99.1.2/32")}})
	now := netfilter.Members{
		Masquerade: []ipset.Entry{u4, u4b},
		Restricted: base.Restricted,
		Allowed:    append(slices.Clone(base.Allowed), allowed(u6b, "2001:db8:c4::/48")),
		Hairpin:    []ipset.Entry{allowed(u6, "fd99:1::2/128")},
	}
	e.expect(t, now)
	// Its next full sync reads the sets rather than trusting the update
	// alone: it removes what it never wrote.
	if err := o.SyncMembers(e.ctx, netfilter.Members{Masquerade: []ipset.Entry{u4b}}); err != nil {
		t.Fatal(err)
	}
	e.expect(t, netfilter.Members{Masquerade: []ipset.Entry{u4b}})
}

func canceledContext(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if wrote, err := e.i.SyncRules(ctx, true); !errors.Is(err, context.Canceled) || wrote {
		t.Errorf("SyncRules: wrote=%t, %v; want no write, context.Canceled", wrote, err)
	}
	if e.hasRules(t) {
		t.Error("a canceled SyncRules wrote the rules")
	}
	e.syncRules(t, false, true)
	m := netfilter.Members{Masquerade: []ipset.Entry{entry("203.0.113.4", ipset.ProtoTCP, 80), entry("2001:db8:c1::4", ipset.ProtoTCP, 80)}}
	e.syncMembers(t, m)
	if err := e.i.SyncMembers(ctx, netfilter.Members{}); !errors.Is(err, context.Canceled) {
		t.Errorf("SyncMembers: %v, want context.Canceled", err)
	}
	if err := e.i.UpdateMembers(ctx, netfilter.Members{Restricted: m.Masquerade}, m); !errors.Is(err, context.Canceled) {
		t.Errorf("UpdateMembers: %v, want context.Canceled", err)
	}
	if _, err := e.i.ListMembers(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListMembers: %v, want context.Canceled", err)
	}
	e.h.RemoveRules(t, e.i)
	if wrote, err := e.i.SyncRules(ctx, true); !errors.Is(err, context.Canceled) || wrote {
		t.Errorf("SyncRules after RemoveRules: wrote=%t, %v; want no write, context.Canceled", wrote, err)
	}
	if e.hasRules(t) {
		t.Error("a canceled SyncRules restored the rules")
	}
	e.expect(t, m)
}
