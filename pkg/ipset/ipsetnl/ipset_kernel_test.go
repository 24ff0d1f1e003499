package ipsetnl_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

func newHandle(tb testing.TB, sets ...string) *ipsetnl.Netlink {
	ctx := context.Background()
	tb.Helper()
	kerneltest.Require(tb)
	h, err := ipsetnl.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, s := range sets {
			if err := h.DestroySet(ctx, s); err != nil {
				tb.Error(err)
			}
		}
		h.Close()
	})
	return h
}

func TestKernelSetLifecycle(t *testing.T) {
	ctx := context.Background()
	h := newHandle(t, "KUBELVS-T-IP", "KUBELVS-T-IPPORT6", "KUBELVS-T-IPPORTNET", "KUBELVS-T-NET")
	cases := []struct {
		set     ipset.Set
		entries []ipset.Entry
	}{
		{ipset.Set{Name: "KUBELVS-T-IP", Type: ipset.HashIP, Family: ipset.IPv4}, []ipset.Entry{
			{IP: netip.MustParseAddr("10.0.0.1")}, {IP: netip.MustParseAddr("10.0.0.2")}}},
		{ipset.Set{Name: "KUBELVS-T-IPPORT6", Type: ipset.HashIPPort, Family: ipset.IPv6, HashSize: 64}, []ipset.Entry{
			{IP: netip.MustParseAddr("fd00::1"), Protocol: ipset.ProtoTCP, Port: 80},
			{IP: netip.MustParseAddr("fd00::1"), Protocol: ipset.ProtoUDP, Port: 53},
			{IP: netip.MustParseAddr("fd00::2"), Protocol: ipset.ProtoSCTP, Port: 9}}},
		{ipset.Set{Name: "KUBELVS-T-IPPORTNET", Type: ipset.HashIPPortNet, Family: ipset.IPv4}, []ipset.Entry{
			{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 443, Net: netip.MustParsePrefix("192.168.0.0/16")},
			{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 443, Net: netip.MustParsePrefix("10.1.2.3/32")}}},
		{ipset.Set{Name: "KUBELVS-T-NET", Type: ipset.HashNet, Family: ipset.IPv4}, []ipset.Entry{
			{Net: netip.MustParsePrefix("10.8.0.0/14")}}},
	}
	for _, c := range cases {
		t.Run(c.set.Name, func(t *testing.T) {
			for i := 0; i < 2; i++ { // ensuring twice is fine
				if err := h.EnsureSet(ctx, c.set); err != nil {
					t.Fatal(err)
				}
			}
			other := c.set
			other.Type = ipset.HashIPPortNet
			if c.set.Type == ipset.HashIPPortNet {
				other.Type = ipset.HashIP
			}
			if err := h.EnsureSet(ctx, other); !errors.Is(err, ipset.ErrMismatch) {
				t.Errorf("ensure with another type: got %v, want ErrMismatch", err)
			}
			for _, e := range slices.Concat(c.entries, c.entries) { // adding twice is fine
				if err := h.AddEntry(ctx, c.set.Name, e); err != nil {
					t.Fatal(err)
				}
			}
			expect(t, h, c.set.Name, c.entries)
			for _, e := range []ipset.Entry{c.entries[0], c.entries[0]} { // deleting twice is fine
				if err := h.DelEntry(ctx, c.set.Name, e); err != nil {
					t.Fatal(err)
				}
			}
			expect(t, h, c.set.Name, c.entries[1:])
		})
	}
}

func expect(t *testing.T, h *ipsetnl.Netlink, name string, want []ipset.Entry) {
	ctx := context.Background()
	t.Helper()
	got, err := h.ListEntries(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	want = append([]ipset.Entry(nil), want...)
	ipset.SortEntries(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s holds %v, want %v", name, got, want)
	}
}

func TestKernelForeignSetUntouchable(t *testing.T) {
	ctx := context.Background()
	h := newHandle(t)
	e := ipset.Entry{IP: netip.MustParseAddr("10.250.0.1"), Protocol: ipset.ProtoTCP, Port: 80}
	for name, err := range map[string]error{
		"add":     h.AddEntry(ctx, kerneltest.ForeignSet, ipset.Entry{IP: netip.MustParseAddr("10.9.9.9"), Protocol: ipset.ProtoTCP, Port: 1}),
		"del":     h.DelEntry(ctx, kerneltest.ForeignSet, e),
		"destroy": h.DestroySet(ctx, kerneltest.ForeignSet),
		"replace": h.Replace(ctx, ipset.Set{Name: kerneltest.ForeignSet, Type: ipset.HashIPPort, Family: ipset.IPv4}, nil),
		"ensure":  h.EnsureSet(ctx, ipset.Set{Name: kerneltest.ForeignSet, Type: ipset.HashIPPort, Family: ipset.IPv4}),
	} {
		if !errors.Is(err, ipset.ErrNotOwned) {
			t.Errorf("%s on %s: got %v, want ErrNotOwned", name, kerneltest.ForeignSet, err)
		}
	}
	// Reading is harmless and allowed.
	if got, err := h.ListEntries(ctx, kerneltest.ForeignSet); err != nil || len(got) != 2 {
		t.Errorf("list foreign set: %v, %v", got, err)
	}
}

func generation(g, n int) []ipset.Entry {
	es := make([]ipset.Entry, n)
	for i := range es {
		es[i] = ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}), Protocol: ipset.ProtoTCP, Port: uint16(1000 + g)}
	}
	return es
}

// TestKernelReplaceIsAtomic replaces a set's members generation after
// generation (disjoint: the port is the generation) while a reader on its
// own netlink socket dumps it in a loop; every dump must be one whole
// generation, never empty, partial or mixed.
func TestKernelReplaceIsAtomic(t *testing.T) {
	ctx := context.Background()
	s := ipset.Set{Name: "KUBELVS-T-SWAP", Type: ipset.HashIPPort, Family: ipset.IPv4}
	h := newHandle(t, s.Name)
	const n, gens = 500, 15
	if err := h.Replace(ctx, s, generation(0, n)); err != nil {
		t.Fatal(err)
	}
	reader, err := ipsetnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			got, err := reader.ListEntries(ctx, s.Name)
			if err != nil {
				t.Errorf("reader: %v", err)
				return
			}
			reads.Add(1)
			if len(got) != n {
				t.Errorf("reader saw %d members, want %d", len(got), n)
				return
			}
			for _, e := range got {
				if e.Port != got[0].Port {
					t.Errorf("reader saw a mix of generations %d and %d", got[0].Port-1000, e.Port-1000)
					return
				}
			}
		}
	}()
	// A replacement can be much faster than a read: keep replacing (up to
	// a bound) until the reader has overlapped enough of them.
	g := 1
	for ; g <= gens || (reads.Load() < gens/3 && g < 100*gens); g++ {
		if err := h.Replace(ctx, s, generation(g%(gens+1), n)); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	expect(t, h, s.Name, generation((g-1)%(gens+1), n))
	if reads.Load() < gens/3 {
		t.Errorf("only %d reads during %d replacements: the reader did not overlap", reads.Load(), gens)
	}
	t.Logf("%d reads during %d replacements", reads.Load(), gens)
}

const benchMembers = 20000

func BenchmarkKernelIPSetAdd20000(b *testing.B) {
	ctx := context.Background()
	s := ipset.Set{Name: "KUBELVS-B-ADD", Type: ipset.HashIPPort, Family: ipset.IPv4}
	h := newHandle(b, s.Name)
	es := generation(1, benchMembers)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := h.DestroySet(ctx, s.Name); err != nil {
			b.Fatal(err)
		}
		if err := h.EnsureSet(ctx, s); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, e := range es {
			if err := h.AddEntry(ctx, s.Name, e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchMembers), "ns/member")
}

func BenchmarkKernelIPSetReplace20000(b *testing.B) {
	ctx := context.Background()
	s := ipset.Set{Name: "KUBELVS-B-REPLACE", Type: ipset.HashIPPort, Family: ipset.IPv4}
	h := newHandle(b, s.Name)
	for i := 0; i < b.N; i++ {
		if err := h.Replace(ctx, s, generation(i, benchMembers)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchMembers), "ns/member")
}

func BenchmarkKernelIPSetList20000(b *testing.B) {
	ctx := context.Background()
	s := ipset.Set{Name: "KUBELVS-B-LIST", Type: ipset.HashIPPort, Family: ipset.IPv4}
	h := newHandle(b, s.Name)
	if err := h.Replace(ctx, s, generation(0, benchMembers)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := h.ListEntries(ctx, s.Name)
		if err != nil || len(got) != benchMembers {
			b.Fatalf("list: %d members, %v", len(got), err)
		}
	}
}

// A zero prefix length cannot be held by a hash:ip,port,net set: written
// through ipset-go, 0.0.0.0/0 lands as 0.0.0.0/32 (the zero CIDR attribute
// is left out, and the kernel takes a host), which as a sourceRange would
// admit nobody. That is why desired.Build writes 0.0.0.0/0 (::/0) as its
// two /1 halves, which the kernel holds as they are.
func TestKernelZeroPrefixIsNotHeldAndHalvesAre(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		fam       ipset.Family
		vip, zero string
		halves    [2]string
		name      string
	}{
		{ipset.IPv4, "10.96.0.10", "0.0.0.0/0", [2]string{"0.0.0.0/1", "128.0.0.0/1"}, "KUBELVS-T-ZERO4"},
		{ipset.IPv6, "fd00::10", "::/0", [2]string{"::/1", "8000::/1"}, "KUBELVS-T-ZERO6"},
	} {
		h := newHandle(t, c.name)
		if err := h.EnsureSet(ctx, ipset.Set{Name: c.name, Type: ipset.HashIPPortNet, Family: c.fam}); err != nil {
			t.Fatal(err)
		}
		e := ipset.Entry{IP: netip.MustParseAddr(c.vip), Protocol: 6, Port: 80}
		zero := e
		zero.Net = netip.MustParsePrefix(c.zero)
		if err := h.AddEntry(ctx, c.name, zero); err == nil {
			got, err := h.ListEntries(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(got, zero) {
				t.Errorf("%s is held as it is; desired.ipsetNets could write it so", c.zero)
			}
			for _, g := range got {
				if err := h.DelEntry(ctx, c.name, g); err != nil {
					t.Fatal(err)
				}
			}
		}
		var want []ipset.Entry
		for _, half := range c.halves {
			a := e
			a.Net = netip.MustParsePrefix(half)
			if err := h.AddEntry(ctx, c.name, a); err != nil {
				t.Fatalf("%s: %v", half, err)
			}
			want = append(want, a)
		}
		got, err := h.ListEntries(ctx, c.name)
		ipset.SortEntries(got)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: %v (%v), want %v", c.name, got, err, want)
		}
	}
}
