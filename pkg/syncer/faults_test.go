package syncer

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// faultyNode is a node whose every kernel call (IPVS, the ownership ipsets,
// kubelvs0, conntrack, the netfilter members) may fail.
type faultyNode struct {
	*node
}

func (n *faultyNode) syncer(t *testing.T) (*Syncer, error) {
	ctx := context.Background()
	t.Helper()
	own, err := ownership.NewSetRecords(ctx, n.sets)
	if err != nil {
		return nil, err
	}
	guard := ownership.NewGuard(n.ipvs, own)
	s := New(Kernel{
		IPVS: guard, Owns: own.Owns, ReleaseStale: guard.ReleaseStale, VIPs: n.vips, Conntrack: n.ct,
		Netfilter: n.nf,
	}, n.clock, nil)
	return s, s.Adopt(ctx)
}

func (n *faultyNode) injectors() []*fault.Injector {
	return []*fault.Injector{&n.ipvs.Injector, &n.sets.Injector, &n.vips.Injector, &n.ct.Injector, &n.nf.Injector}
}

// randomGroups returns groups with random VIPs, ports and real servers,
// some with trafficPolicy Local, some restricted; names g0..g(n-1).
func randomGroups(r *rand.Rand, n int) []desired.Group {
	var gs []desired.Group
	for i := range n {
		var ports []ipvs.Key
		for _, p := range []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}, {Protocol: ipvs.UDP, Port: 53}, {Protocol: ipvs.TCP, Port: 443}} {
			if r.Intn(2) == 0 {
				ports = append(ports, p)
			}
		}
		if len(ports) == 0 {
			ports = web
		}
		var reals []string
		for range r.Intn(4) {
			reals = append(reals, fmt.Sprintf("10.1.%d.%d:8080", r.Intn(3), 1+r.Intn(20)))
		}
		g := grp(fmt.Sprintf("g%d", i), netip.AddrFrom4([4]byte{10, 96, 0, byte(1 + r.Intn(30))}).String(), ports, reals...)
		g.Services = dedupeServices(g.Services)
		if r.Intn(3) == 0 {
			g = asLocal(g)
		}
		if r.Intn(3) == 0 {
			g = withAllowList(g, fmt.Sprintf("192.0.%d.0/24", r.Intn(4)))
		}
		gs = append(gs, g)
	}
	return gs
}

// dedupeServices drops repeated real servers (random picks may repeat).
func dedupeServices(ss []desired.Service) []desired.Service {
	for i := range ss {
		seen := map[ipvs.RealKey]bool{}
		var out []desired.Real
		for _, r := range ss[i].Reals {
			if !seen[r.Key()] {
				seen[r.Key()] = true
				out = append(out, r)
			}
		}
		ss[i].Reals = out
	}
	return ss
}

// unclaimed drops groups whose VIP:port another group (earlier in the
// list) already has: what the agent's conflict resolution guarantees.
func unclaimed(gs []desired.Group) []desired.Group {
	taken := map[ipvs.Key]bool{}
	var out []desired.Group
	for _, g := range gs {
		ok := true
		for _, s := range g.Services {
			if taken[s.Key()] {
				ok = false
			}
		}
		if !ok {
			continue
		}
		for _, s := range g.Services {
			taken[s.Key()] = true
		}
		out = append(out, g)
	}
	return out
}

// With 10% of all kernel calls failing at random while VirtualServices
// come, change and go, and the agent restarts now and then, the kernel
// converges to exactly the desired state once the faults stop: nothing
// leaked (no virtual or real server, VIP, ipset member or ownership record
// of a group that is gone), nothing missing, nothing duplicated.
func TestConvergesAfterRandomFaults(t *testing.T) {
	ctx := context.Background()
	injected, syncs := 0, 0
	for seed := int64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewSource(seed))
		n := &faultyNode{node: newNode()}
		for i, inj := range n.injectors() {
			inj.FailRandomly(0.10, seed*10+int64(i))
		}
		var s *Syncer
		restart := func() {
			for { // an agent that fails to adopt exits and is restarted
				var err error
				if s, err = n.syncer(t); err == nil {
					return
				}
			}
		}
		restart()
		cur := unclaimed(randomGroups(r, 12))
		for step := range 300 {
			syncs++
			op := r.Intn(10)
			// At every step: no virtual server in the kernel that the
			// syncer does not know (it could never delete it).
			check := func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				known := map[string]bool{}
				for k := range s.services {
					known[k.String()] = true
				}
				for _, l := range strings.Split(n.ipvs.Dump(), "\n") {
					if l != "" && !strings.HasPrefix(l, " ") && !known[strings.Fields(l)[0]] {
						t.Fatalf("seed %d step %d (op %d): %s is in the kernel, unknown to the syncer", seed, step, op, l)
					}
				}
			}
			switch {
			case op < 4: // one VirtualService changes
				next := unclaimed(append(randomGroups(r, 1), cur...))
				if len(next) > 0 {
					g := next[0]
					g.Name = types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("g%d", r.Intn(16))}
					next = unclaimed(append([]desired.Group{g}, withoutName(cur, g.Name)...))
					if len(next) > 0 && next[0].Name == g.Name {
						cur = next
						_, _ = s.SyncGroup(ctx, g)
					}
				}
			case op < 5: // one goes
				if len(cur) > 0 {
					i := r.Intn(len(cur))
					name := cur[i].Name
					cur = withoutName(cur, name)
					_, _ = s.RemoveGroup(ctx, name)
				}
			case op < 7:
				_, _ = s.SyncAll(ctx, cur)
			case op < 8:
				n.clock.Step(time.Duration(r.Intn(40)) * time.Second)
				_, _ = s.Drain(ctx)
			case op < 9:
				s.FlushNow(ctx)
				_, _ = s.Verify(ctx)
			default:
				if step%3 == 0 {
					restart()
				}
			}
			check()
		}
		for _, inj := range n.injectors() {
			injected += inj.Injected()
			inj.Reset()
		}
		// Faults stop: what the agent does next (a full sync, its drains,
		// the periodic resync's Verify) settles everything; a second
		// Verify then finds nothing to repair.
		if _, err := s.SyncAll(ctx, cur); err != nil {
			t.Fatalf("seed %d: the first full sync after the faults: %v", seed, err)
		}
		n.clock.Step(time.Hour)
		if _, err := s.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Verify(ctx); err != nil {
			t.Fatalf("seed %d: Verify: %v", seed, err)
		}
		if repairs, err := s.Verify(ctx); err != nil || repairs != 0 {
			t.Fatalf("seed %d: a second Verify: %d repairs, %v", seed, repairs, err)
		}
		w := want(t, cur...)
		sameKernel(t, fmt.Sprintf("seed %d", seed), n.node, w)
		if got, want := n.sets.Dump(), w.sets.Dump(); got != want {
			t.Fatalf("seed %d: ipsets (ownership records)\n%s\nwant\n%s", seed, got, want)
		}
	}
	t.Logf("%d faults injected over %d operations of 20 seeds; every run converged to the exact desired state", injected, syncs)
}

func withoutName(gs []desired.Group, name types.NamespacedName) []desired.Group {
	var out []desired.Group
	for _, g := range gs {
		if g.Name != name {
			out = append(out, g)
		}
	}
	return out
}
