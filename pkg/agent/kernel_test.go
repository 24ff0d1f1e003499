package agent

import (
	"fmt"
	"strings"
	"sync"

	"k8s.io/utils/clock"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// fakeKernel is a node's kernel made of the stateful fakes: IPVS behind
// the ownership guard (its records in an ipset), kubelvs0 and the
// netfilter ipset members. It outlives the syncers started over it, as the
// kernel outlives an agent's restart.
type fakeKernel struct {
	ipvs *ipvstest.Fake
	sets *ipsettest.Fake
	vips *netiftest.Fake

	mu      sync.Mutex
	members netfilter.Members
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{ipvs: ipvstest.NewFake(), sets: ipsettest.NewFake(), vips: netiftest.NewFake()}
}

// syncer returns a syncer over the kernel, wired as the agent role wires
// the netlink one; the caller adopts.
func (k *fakeKernel) syncer(clk clock.PassiveClock) (*syncer.Syncer, error) {
	own, err := ownership.NewSetRecords(k.sets)
	if err != nil {
		return nil, err
	}
	guard := ownership.NewGuard(k.ipvs, own)
	return syncer.New(syncer.Kernel{
		IPVS: guard, Owns: own.Owns, ReleaseStale: guard.ReleaseStale, VIPs: k.vips,
		Members: func(m netfilter.Members) error {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.members = m
			return nil
		},
		ListMembers: func() (netfilter.Members, error) {
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.members, nil
		},
	}, clk, nil), nil
}

// dump prints the kernel state, sorted: IPVS with weights, the ipsets
// (the ownership records), kubelvs0 and the netfilter members.
func (k *fakeKernel) dump() string {
	var b strings.Builder
	b.WriteString("# ipvs\n" + k.ipvs.Dump())
	b.WriteString("# ipsets\n" + k.sets.Dump())
	b.WriteString("# kubelvs0\n" + k.vips.Dump())
	b.WriteString("# netfilter\n")
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range []netfilter.Family{netfilter.IPv4, netfilter.IPv6} {
		m, n := k.members.Split(f), netfilter.Sets(f)
		for _, set := range []struct {
			name    string
			members []ipset.Entry
		}{{n.Masquerade, m.Masquerade}, {n.Restricted, m.Restricted}, {n.Allowed, m.Allowed}} {
			sorted := append([]ipset.Entry(nil), set.members...)
			ipset.SortEntries(sorted)
			for _, e := range sorted {
				fmt.Fprintf(&b, "add %s %s\n", set.name, e)
			}
		}
	}
	return b.String()
}
