package agent

import (
	"context"
	"strings"

	"k8s.io/utils/clock"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// fakeKernel is a node's kernel made of the stateful fakes: IPVS behind
// the ownership guard (its records in an ipset), kubelvs0 and netfilter.
// It outlives the syncers started over it, as the kernel outlives an
// agent's restart.
type fakeKernel struct {
	ipvs      *ipvstest.Fake
	sets      *ipsettest.Fake
	vips      *netiftest.Fake
	netfilter *netfiltertest.Fake
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{ipvs: ipvstest.NewFake(), sets: ipsettest.NewFake(), vips: netiftest.NewFake(),
		netfilter: netfiltertest.NewFake(netfilter.Config{})}
}

// syncer returns a syncer over the kernel, wired as the agent role wires
// the real one; the caller adopts.
func (k *fakeKernel) syncer(ctx context.Context, clk clock.PassiveClock) (*syncer.Syncer, error) {
	own, err := ownership.NewSetRecords(ctx, k.sets)
	if err != nil {
		return nil, err
	}
	guard := ownership.NewGuard(k.ipvs, own)
	return syncer.New(syncer.Kernel{
		IPVS: guard, Owns: own.Owns, ReleaseStale: guard.ReleaseStale, VIPs: k.vips, Netfilter: k.netfilter,
	}, clk, nil), nil
}

// dump prints the kernel state, sorted: IPVS with weights, the ipsets
// (the ownership records), kubelvs0 and the netfilter ipset members.
func (k *fakeKernel) dump() string {
	var b strings.Builder
	b.WriteString("# ipvs\n" + k.ipvs.Dump())
	b.WriteString("# ipsets\n" + k.sets.Dump())
	b.WriteString("# kubelvs0\n" + k.vips.Dump())
	b.WriteString("# netfilter\n")
	if d := k.netfilter.Dump(); d != "" {
		b.WriteString(d + "\n")
	}
	return b.String()
}
