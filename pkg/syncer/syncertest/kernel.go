// Package syncertest provides a node's kernel made of the fakes that keep
// state (ipvstest, ipsettest, netiftest, netfiltertest, conntracktest),
// wired as the agent role wires the real one, for the tests and
// benchmarks that run agents above it.
package syncertest

import (
	"context"
	"strings"

	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracktest"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// Kernel is one node's kernel. It outlives the syncers wired to it, as
// the kernel outlives an agent's restart.
type Kernel struct {
	IPVS      *ipvstest.Fake
	Sets      *ipsettest.Fake // the ownership records
	VIPs      *netiftest.Fake
	Netfilter *netfiltertest.Fake
	Conntrack *conntracktest.Fake
}

// NewKernel returns an empty kernel.
func NewKernel() *Kernel {
	return &Kernel{IPVS: ipvstest.NewFake(), Sets: ipsettest.NewFake(), VIPs: netiftest.NewFake(),
		Netfilter: netfiltertest.NewFake(netfilter.Config{}), Conntrack: conntracktest.NewFake()}
}

// Wire returns the syncer.Kernel of one agent over k: IPVS through the
// ownership guard, whose records it reads from k.Sets, as an agent does
// at start.
func (k *Kernel) Wire(ctx context.Context) (*syncer.Kernel, error) {
	own, err := ownership.NewSetRecords(ctx, k.Sets)
	if err != nil {
		return nil, err
	}
	guard := ownership.NewGuard(k.IPVS, own)
	return &syncer.Kernel{
		IPVS: guard, Owns: own.Owns, ReleaseStale: guard.ReleaseStale, VIPs: k.VIPs,
		Netfilter: k.Netfilter, Conntrack: k.Conntrack,
	}, nil
}

// Dump prints what k holds, sorted: IPVS with weights, the ownership
// records, kubelvs0 and the netfilter ipset members.
func (k *Kernel) Dump() string {
	var b strings.Builder
	b.WriteString("# ipvs\n" + k.IPVS.Dump())
	b.WriteString("# ipsets\n" + k.Sets.Dump())
	b.WriteString("# kubelvs0\n" + k.VIPs.Dump())
	b.WriteString("# netfilter\n")
	if d := k.Netfilter.Dump(); d != "" {
		b.WriteString(d + "\n")
	}
	return b.String()
}
