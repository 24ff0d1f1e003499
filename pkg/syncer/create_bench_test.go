package syncer

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
)

// benchGroup is VirtualService i: its own VIP, TCP:80 to two real servers,
// masqueraded (one ipset member), as most VirtualServices are.
func benchGroup(i int) desired.Group {
	vip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
	g := desired.Group{Name: types.NamespacedName{Namespace: "bench", Name: fmt.Sprint("vs-", i)}, Selected: true, DrainTimeout: 30 * time.Second}
	svc := desired.Service{VirtualServer: ipvs.VirtualServer{Address: vip, Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}}
	for r := range 2 {
		svc.Reals = append(svc.Reals, desired.Real{RealServer: ipvs.RealServer{
			Address: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: uint16(8080 + r), Weight: 1,
		}})
	}
	g.Services = []desired.Service{svc}
	g.VIPs = []netip.Addr{vip}
	g.Members.Masquerade = []ipset.Entry{{IP: vip, Protocol: ipset.ProtoTCP, Port: 80}}
	return g
}

// stubVIPs and stubNetfilter take the shared state's writes and do nothing
// with them: with them the benchmark measures the syncer's own part, without
// the fakes' writes. stubVIPs overrides both writes: the fake it embeds for
// the reads would otherwise take the updates.
type stubVIPs struct{ *netiftest.Fake }

func (*stubVIPs) SyncAddresses(context.Context, []netip.Addr) error                 { return nil }
func (*stubVIPs) UpdateAddresses(context.Context, []netip.Addr, []netip.Addr) error { return nil }

type stubNetfilter struct{}

func (*stubNetfilter) SyncRules(context.Context, bool) (bool, error)        { return false, nil }
func (*stubNetfilter) SyncMembers(context.Context, netfilter.Members) error { return nil }
func (*stubNetfilter) UpdateMembers(context.Context, netfilter.Members, netfilter.Members) error {
	return nil
}
func (*stubNetfilter) ListMembers(context.Context) (netfilter.Members, error) {
	return netfilter.Members{}, nil
}

// benchSyncer returns a syncer over fakes (IPVS always), with kubelvs0 and
// the netfilter members faked (fakes) or stubbed.
func benchSyncer(tb testing.TB, fakes bool) *Syncer {
	tb.Helper()
	k := Kernel{IPVS: ipvstest.NewFake(), Owns: func(ipvs.Key) bool { return true }}
	if fakes {
		k.VIPs, k.Netfilter = netiftest.NewFake(), netfiltertest.NewFake(netfilter.Config{})
	} else {
		k.VIPs, k.Netfilter = &stubVIPs{Fake: netiftest.NewFake()}, &stubNetfilter{}
	}
	s := New(k, clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), nil)
	if err := s.Adopt(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if _, err := s.SyncAll(context.Background(), nil); err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkCreate: one VirtualService created into a syncer that already
// programs n (then deleted again, untimed, so that n stays).
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	for _, kernel := range []string{"fakes", "stubs"} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/groups=%d", kernel, n), func(b *testing.B) {
				s := benchSyncer(b, kernel == "fakes")
				for i := range n {
					if _, err := s.SyncGroup(ctx, benchGroup(i)); err != nil {
						b.Fatal(err)
					}
				}
				g := benchGroup(n)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := s.SyncGroup(ctx, g); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if _, err := s.RemoveGroup(ctx, g.Name); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkDelete: one VirtualService deleted from a syncer that programs n
// (created again, untimed).
func BenchmarkDelete(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("fakes/groups=%d", n), func(b *testing.B) {
			s := benchSyncer(b, true)
			for i := range n {
				if _, err := s.SyncGroup(ctx, benchGroup(i)); err != nil {
					b.Fatal(err)
				}
			}
			g := benchGroup(0)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := s.RemoveGroup(ctx, g.Name); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if _, err := s.SyncGroup(ctx, g); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkInitialProgramming: n creates, one by one, into an empty syncer
// (the agent's first minutes on a node that gets n VirtualServices).
func BenchmarkInitialProgramming(b *testing.B) {
	ctx := context.Background()
	for _, kernel := range []string{"fakes", "stubs"} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/creates=%d", kernel, n), func(b *testing.B) {
				gs := make([]desired.Group, n)
				for i := range gs {
					gs[i] = benchGroup(i)
				}
				b.ReportAllocs()
				for range b.N {
					b.StopTimer()
					s := benchSyncer(b, kernel == "fakes")
					b.StartTimer()
					for _, g := range gs {
						if _, err := s.SyncGroup(ctx, g); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
