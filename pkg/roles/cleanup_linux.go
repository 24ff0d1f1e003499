package roles

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// Cleanup removes every kernel object kubelvs owns on this node: the IPVS
// virtual servers recorded in the ownership set, kubelvs0 and its VIPs, the
// KUBELVS- netfilter chains and ipsets. Anything else stays. Run it after
// uninstalling, with the agent stopped.
func Cleanup(ctx context.Context, out io.Writer) error {
	sets, err := ipsetnl.New()
	if err != nil {
		return err
	}
	defer sets.Close()
	var errs []error
	own, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		return err
	}
	if keys := own.Owned(); len(keys) > 0 {
		nl, err := ipvsnl.New()
		if err != nil {
			return err
		}
		defer nl.Close()
		g := ownership.NewGuard(nl, own)
		n := 0
		for _, k := range keys {
			if err := g.DeleteVirtualServer(ctx, k); err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
		fmt.Fprintf(out, "deleted %d IPVS virtual servers\n", n)
	}
	vips, err := netifnl.New()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer vips.Close()
	if err := vips.DeleteDevice(ctx); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintln(out, "deleted kubelvs0")
	}
	rules, err := iptables.New(ctx, sets, iptables.ExecRunner{}, netfilter.Config{})
	if err != nil {
		errs = append(errs, err)
	} else if err := rules.Cleanup(ctx); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "deleted the KUBELVS- chains and ipsets (iptables %s)\n", rules.Mode())
	}
	if len(errs) == 0 {
		// Last: the record of what we own, once nothing owned is left.
		for _, s := range ownership.Sets() {
			if err := sets.DestroySet(ctx, s.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
