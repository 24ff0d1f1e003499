package ipsettest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// Harness is what Contract runs on.
type Harness struct {
	// Open returns a handle on a kernel (or fake) where ForeignSet exists.
	// It is called once per subtest; the contract destroys the sets it
	// creates, all named KUBELVS-C-*.
	Open func(t *testing.T) ipset.Interface
	// ForeignSet names a set another program made: not KUBELVS-, holding
	// at least one member.
	ForeignSet string
}

// Contract checks the behaviors kubelvs relies on from an ipset.Interface
// on the one h opens: the Fake on the host (contract_test.go) and the
// kernel in the guest (package ipsetnl), so that a fake drifting from the
// kernel fails a test.
func Contract(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"EnsureSet creates a set once and keeps its members", ensureIdempotent},
		{"EnsureSet refuses a set of that name and another type with ErrMismatch", ensureMismatch},
		{"EnsureSet accepts the set with another hash size", ensureHashSize},
		{"entries of each type round-trip, adding and deleting twice is success", entriesRoundTrip},
		{"prefixes are held masked", prefixesMasked},
		{"an entry of the other family is refused", otherFamilyRefused},
		{"a missing set is ErrNotFound, and deleting from or destroying it is success", missingSet},
		{"another program's set is refused with ErrNotOwned and left as it was", foreignRefused},
		{"Replace makes a set hold exactly the entries, creating it if missing", replace},
		{"a canceled context changes nothing and returns context.Canceled", canceledContext},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, newEnv(t, h)) })
	}
}

type env struct {
	ctx     context.Context
	i       ipset.Interface
	foreign string
}

func newEnv(t *testing.T, h Harness) *env {
	e := &env{ctx: context.Background(), i: h.Open(t), foreign: h.ForeignSet}
	t.Cleanup(func() {
		for _, s := range contractSets {
			if err := e.i.DestroySet(e.ctx, s.Name); err != nil {
				t.Errorf("clean up: %v", err)
			}
		}
	})
	return e
}

// contractSets are every set the contract makes, one per type and family.
var contractSets = []ipset.Set{
	{Name: "KUBELVS-C-IP", Type: ipset.HashIP, Family: ipset.IPv4},
	{Name: "KUBELVS-C-IP6", Type: ipset.HashIP, Family: ipset.IPv6},
	{Name: "KUBELVS-C-IPPORT", Type: ipset.HashIPPort, Family: ipset.IPv4},
	{Name: "KUBELVS-C-IPPORT6", Type: ipset.HashIPPort, Family: ipset.IPv6},
	{Name: "KUBELVS-C-IPPORTNET", Type: ipset.HashIPPortNet, Family: ipset.IPv4},
	{Name: "KUBELVS-C-IPPORTNET6", Type: ipset.HashIPPortNet, Family: ipset.IPv6},
	{Name: "KUBELVS-C-NET", Type: ipset.HashNet, Family: ipset.IPv4},
	{Name: "KUBELVS-C-NET6", Type: ipset.HashNet, Family: ipset.IPv6},
}

func contractSet(typ ipset.Type, fam ipset.Family) ipset.Set {
	for _, s := range contractSets {
		if s.Type == typ && s.Family == fam {
			return s
		}
	}
	panic("no contract set " + string(typ))
}

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// members returns sample entries of a set, unsorted.
func members(s ipset.Set) []ipset.Entry {
	v4 := s.Family == ipset.IPv4
	a := func(v4s, v6s string) netip.Addr {
		if v4 {
			return addr(v4s)
		}
		return addr(v6s)
	}
	p := func(v4s, v6s string) netip.Prefix {
		if v4 {
			return prefix(v4s)
		}
		return prefix(v6s)
	}
	switch s.Type {
	case ipset.HashIP:
		return []ipset.Entry{{IP: a("203.0.113.9", "2001:db8:c1::9")}, {IP: a("203.0.113.1", "2001:db8:c1::1")}}
	case ipset.HashIPPort:
		return []ipset.Entry{
			{IP: a("203.0.113.2", "2001:db8:c1::2"), Protocol: ipset.ProtoUDP, Port: 53},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 80},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoUDP, Port: 80},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoSCTP, Port: 9},
		}
	case ipset.HashIPPortNet:
		return []ipset.Entry{
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 443, Net: p("192.0.2.0/24", "2001:db8:c3::/48")},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 443, Net: p("198.51.100.7/32", "2001:db8:c2::7/128")},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 443, Net: p("0.0.0.0/1", "::/1")},
			{IP: a("203.0.113.1", "2001:db8:c1::1"), Protocol: ipset.ProtoUDP, Port: 443, Net: p("192.0.2.0/24", "2001:db8:c3::/48")},
		}
	case ipset.HashNet:
		return []ipset.Entry{
			{Net: p("198.51.100.0/26", "2001:db8:c2::/48")},
			{Net: p("192.0.2.128/25", "2001:db8:c3:8000::/49")},
			{Net: p("203.0.113.7/32", "2001:db8:c1::7/128")},
		}
	}
	panic("no members for " + string(s.Type))
}

func (e *env) ensure(t *testing.T, s ipset.Set) {
	t.Helper()
	if err := e.i.EnsureSet(e.ctx, s); err != nil {
		t.Fatal(err)
	}
}

func (e *env) addAll(t *testing.T, name string, es ...ipset.Entry) {
	t.Helper()
	for _, en := range es {
		if err := e.i.AddEntry(e.ctx, name, en); err != nil {
			t.Fatalf("add %s to %s: %v", en, name, err)
		}
	}
}

// expect checks that the set holds exactly want, listed sorted.
func (e *env) expect(t *testing.T, name string, want ...ipset.Entry) {
	t.Helper()
	got, err := e.i.ListEntries(e.ctx, name)
	if err != nil {
		t.Fatalf("list %s: %v", name, err)
	}
	want = slices.Clone(want)
	ipset.SortEntries(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", name, got, want)
	}
}

func ensureIdempotent(t *testing.T, e *env) {
	for _, s := range contractSets {
		t.Run(s.String(), func(t *testing.T) {
			e.ensure(t, s)
			e.ensure(t, s)
			e.expect(t, s.Name)
			m := members(s)[0]
			e.addAll(t, s.Name, m)
			e.ensure(t, s)
			e.expect(t, s.Name, m)
		})
	}
}

func ensureMismatch(t *testing.T, e *env) {
	s := contractSet(ipset.HashIPPort, ipset.IPv4)
	e.ensure(t, s)
	m := members(s)[0]
	e.addAll(t, s.Name, m)
	// Another family is not checked: the kernel's check of an identical
	// create ignores the family, and so EnsureSet on the kernel accepts it.
	for _, typ := range []ipset.Type{ipset.HashIP, ipset.HashIPPortNet, ipset.HashNet} {
		o := s
		o.Type = typ
		if err := e.i.EnsureSet(e.ctx, o); !errors.Is(err, ipset.ErrMismatch) {
			t.Errorf("ensure %s over %s: %v, want ErrMismatch", o, s, err)
		}
	}
	e.expect(t, s.Name, m)
}

func ensureHashSize(t *testing.T, e *env) {
	s := contractSet(ipset.HashIP, ipset.IPv4)
	e.ensure(t, s)
	m := members(s)[0]
	e.addAll(t, s.Name, m)
	for _, size := range []uint32{64, 1024, 4096} {
		o := s
		o.HashSize = size
		if err := e.i.EnsureSet(e.ctx, o); err != nil {
			t.Errorf("ensure %s over %s: %v, want success", o, s, err)
		}
	}
	e.expect(t, s.Name, m)
}

func entriesRoundTrip(t *testing.T, e *env) {
	for _, s := range contractSets {
		t.Run(s.String(), func(t *testing.T) {
			e.ensure(t, s)
			ms := members(s)
			e.addAll(t, s.Name, ms...)
			e.addAll(t, s.Name, ms...)
			e.expect(t, s.Name, ms...)
			for range 2 {
				if err := e.i.DelEntry(e.ctx, s.Name, ms[0]); err != nil {
					t.Fatalf("delete %s: %v", ms[0], err)
				}
			}
			e.expect(t, s.Name, ms[1:]...)
		})
	}
}

func prefixesMasked(t *testing.T, e *env) {
	for _, c := range []struct {
		s         ipset.Set
		add, held ipset.Entry
	}{
		{contractSet(ipset.HashNet, ipset.IPv4), ipset.Entry{Net: prefix("198.51.100.77/26")}, ipset.Entry{Net: prefix("198.51.100.64/26")}},
		{contractSet(ipset.HashNet, ipset.IPv6), ipset.Entry{Net: prefix("2001:db8:c2::77/64")}, ipset.Entry{Net: prefix("2001:db8:c2::/64")}},
		{
			contractSet(ipset.HashIPPortNet, ipset.IPv4),
			ipset.Entry{IP: addr("203.0.113.1"), Protocol: ipset.ProtoTCP, Port: 80, Net: prefix("192.0.2.77/24")},
			ipset.Entry{IP: addr("203.0.113.1"), Protocol: ipset.ProtoTCP, Port: 80, Net: prefix("192.0.2.0/24")},
		},
		{
			contractSet(ipset.HashIPPortNet, ipset.IPv6),
			ipset.Entry{IP: addr("2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 80, Net: prefix("2001:db8:c3::77/48")},
			ipset.Entry{IP: addr("2001:db8:c1::1"), Protocol: ipset.ProtoTCP, Port: 80, Net: prefix("2001:db8:c3::/48")},
		},
	} {
		t.Run(c.s.String(), func(t *testing.T) {
			e.ensure(t, c.s)
			e.addAll(t, c.s.Name, c.add)
			e.expect(t, c.s.Name, c.held)
			if err := e.i.DelEntry(e.ctx, c.s.Name, c.add); err != nil {
				t.Fatal(err)
			}
			e.expect(t, c.s.Name)
		})
	}
}

func otherFamilyRefused(t *testing.T, e *env) {
	for _, c := range []struct{ s, other ipset.Set }{
		{contractSet(ipset.HashIPPort, ipset.IPv4), contractSet(ipset.HashIPPort, ipset.IPv6)},
		{contractSet(ipset.HashIPPort, ipset.IPv6), contractSet(ipset.HashIPPort, ipset.IPv4)},
		{contractSet(ipset.HashNet, ipset.IPv4), contractSet(ipset.HashNet, ipset.IPv6)},
	} {
		t.Run(c.s.String(), func(t *testing.T) {
			e.ensure(t, c.s)
			bad := members(c.other)[0]
			if err := e.i.AddEntry(e.ctx, c.s.Name, bad); err == nil {
				t.Errorf("add %s to %s: success, want an error", bad, c.s)
			}
			e.expect(t, c.s.Name)
			good := members(c.s)
			e.addAll(t, c.s.Name, good...)
			if err := e.i.Replace(e.ctx, c.s, append(members(c.s)[1:], bad)); err == nil {
				t.Errorf("replace the members of %s with one of %s: success, want an error", c.s, bad)
			}
			e.expect(t, c.s.Name, good...)
		})
	}
}

func missingSet(t *testing.T, e *env) {
	s := contractSet(ipset.HashIPPort, ipset.IPv4)
	m := members(s)[0]
	if _, err := e.i.ListEntries(e.ctx, s.Name); !errors.Is(err, ipset.ErrNotFound) {
		t.Errorf("list a missing set: %v, want ErrNotFound", err)
	}
	if err := e.i.AddEntry(e.ctx, s.Name, m); !errors.Is(err, ipset.ErrNotFound) {
		t.Errorf("add to a missing set: %v, want ErrNotFound", err)
	}
	if err := e.i.DelEntry(e.ctx, s.Name, m); err != nil {
		t.Errorf("delete from a missing set: %v, want success", err)
	}
	for range 2 {
		if err := e.i.DestroySet(e.ctx, s.Name); err != nil {
			t.Errorf("destroy a missing set: %v, want success", err)
		}
	}
	e.ensure(t, s)
	if err := e.i.DestroySet(e.ctx, s.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := e.i.ListEntries(e.ctx, s.Name); !errors.Is(err, ipset.ErrNotFound) {
		t.Errorf("list a destroyed set: %v, want ErrNotFound", err)
	}
}

func foreignRefused(t *testing.T, e *env) {
	before, err := e.i.ListEntries(e.ctx, e.foreign)
	if err != nil {
		t.Fatalf("reading another program's set is allowed: %v", err)
	}
	if len(before) == 0 {
		t.Fatalf("the foreign set %s is empty: the test cannot tell a deletion", e.foreign)
	}
	like := ipset.Set{Name: e.foreign, Type: ipset.HashIPPort, Family: ipset.IPv4}
	add := ipset.Entry{IP: addr("203.0.113.50"), Protocol: ipset.ProtoTCP, Port: 1}
	for name, err := range map[string]error{
		"ensure":  e.i.EnsureSet(e.ctx, like),
		"add":     e.i.AddEntry(e.ctx, e.foreign, add),
		"delete":  e.i.DelEntry(e.ctx, e.foreign, before[0]),
		"replace": e.i.Replace(e.ctx, like, nil),
		"destroy": e.i.DestroySet(e.ctx, e.foreign),
	} {
		if !errors.Is(err, ipset.ErrNotOwned) {
			t.Errorf("%s %s: %v, want ErrNotOwned", name, e.foreign, err)
		}
	}
	e.expect(t, e.foreign, before...)
}

func replace(t *testing.T, e *env) {
	for _, s := range []ipset.Set{contractSet(ipset.HashIPPort, ipset.IPv4), contractSet(ipset.HashIPPortNet, ipset.IPv6), contractSet(ipset.HashNet, ipset.IPv4)} {
		t.Run(s.String(), func(t *testing.T) {
			ms := members(s)
			// Missing: created.
			if err := e.i.Replace(e.ctx, s, ms[:2]); err != nil {
				t.Fatal(err)
			}
			e.expect(t, s.Name, ms[:2]...)
			// Overlapping, with a duplicate: exactly the new members, once.
			if err := e.i.Replace(e.ctx, s, []ipset.Entry{ms[2], ms[1], ms[2]}); err != nil {
				t.Fatal(err)
			}
			e.expect(t, s.Name, ms[1], ms[2])
			if err := e.i.Replace(e.ctx, s, nil); err != nil {
				t.Fatal(err)
			}
			e.expect(t, s.Name)
			// A set of another type under that name stays as it is.
			if err := e.i.Replace(e.ctx, s, ms); err != nil {
				t.Fatal(err)
			}
			other := contractSet(ipset.HashIP, s.Family)
			other.Name = s.Name
			if err := e.i.Replace(e.ctx, other, members(contractSet(ipset.HashIP, s.Family))); !errors.Is(err, ipset.ErrMismatch) {
				t.Errorf("replace %s over %s: %v, want ErrMismatch", other, s, err)
			}
			e.expect(t, s.Name, ms...)
		})
	}
}

func canceledContext(t *testing.T, e *env) {
	s := contractSet(ipset.HashIPPort, ipset.IPv4)
	e.ensure(t, s)
	ms := members(s)
	e.addAll(t, s.Name, ms[:2]...)
	fresh := contractSet(ipset.HashIPPort, ipset.IPv6)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	for name, err := range map[string]error{
		"ensure a new set": e.i.EnsureSet(ctx, fresh),
		"destroy":          e.i.DestroySet(ctx, s.Name),
		"list": func() error {
			_, err := e.i.ListEntries(ctx, s.Name)
			return err
		}(),
		"add":                e.i.AddEntry(ctx, s.Name, ms[2]),
		"delete":             e.i.DelEntry(ctx, s.Name, ms[0]),
		"replace":            e.i.Replace(ctx, s, ms[2:]),
		"replace a new set":  e.i.Replace(ctx, fresh, members(fresh)),
		"ensure present set": e.i.EnsureSet(ctx, s),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
	}
	e.expect(t, s.Name, ms[:2]...)
	if _, err := e.i.ListEntries(e.ctx, fresh.Name); !errors.Is(err, ipset.ErrNotFound) {
		t.Errorf("a canceled ensure or replace created %s: %v", fresh.Name, err)
	}
}
