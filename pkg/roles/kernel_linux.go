package roles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracknl"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// NetlinkKernel opens the node's kernel: IPVS behind the ownership guard,
// ipsets, kubelvs0 with the sysctls IPVS needs, the netfilter rules and
// conntrack, each on one long-lived netlink handle. It fails with a clear
// message when the kernel lacks IPVS or ipset. warn hears what it could
// work around (e.g. IPv6 sysctls on a node without IPv6).
func NetlinkKernel(ctx context.Context, warn func(msg string, err error)) (syncer.Kernel, func(), error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	fail := func(err error) (syncer.Kernel, func(), error) {
		closeAll()
		return syncer.Kernel{}, nil, err
	}
	nl, err := ipvsnl.New()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, nl.Close)
	sets, err := ipsetnl.New()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, sets.Close)
	own, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		return fail(err)
	}
	vips, err := netifnl.New()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, vips.Close)
	if _, err := netif.ApplySysctls("/proc/sys", netif.Sysctls(kernelRelease(), true)); err != nil {
		// IPv6 may be disabled on the node; the IPv4 sysctls are what
		// IPVS needs. Report, do not fail, when only IPv6 is missing.
		if _, err4 := netif.ApplySysctls("/proc/sys", netif.Sysctls(kernelRelease(), false)); err4 != nil {
			return fail(fmt.Errorf("sysctls: %w", errors.Join(err, err4)))
		}
		warn("the IPv6 sysctls could not be set, the IPv4 ones are; IPv6 VirtualServices will not work on this node", err)
	}
	rules, err := iptables.New(ctx, sets, iptables.ExecRunner{}, netfilter.Config{})
	if err != nil {
		return fail(err)
	}
	if _, err := rules.SyncRules(ctx, true); err != nil {
		return fail(fmt.Errorf("netfilter rules: %w", err))
	}
	ct, err := conntracknl.New()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, ct.Close)
	guard := ownership.NewGuard(nl, own)
	return syncer.Kernel{
		IPVS:         guard,
		Owns:         own.Owns,
		ReleaseStale: guard.ReleaseStale,
		VIPs:         vips,
		Netfilter:    rules,
		Conntrack:    ct,
	}, closeAll, nil
}

// kernelRelease is the running kernel's release, e.g. "6.1.0-18-amd64".
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
