package roles

import (
	"context"
	"fmt"
	"io"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// Dump prints what kubelvs programmed on this node: the IPVS virtual
// servers it owns with their real servers (weights and connection
// counts), and the VIPs on kubelvs0. It only reads.
func Dump(ctx context.Context, out io.Writer) error {
	sets, err := ipsetnl.New()
	if err != nil {
		return err
	}
	defer sets.Close()
	// Read the ownership record without creating it: a dump must not
	// leave anything behind (e.g. after `manager cleanup`).
	owned := map[ipvs.Key]bool{}
	for _, s := range ownership.Sets() {
		es, err := sets.ListEntries(ctx, s.Name)
		if err != nil {
			continue // no record: nothing owned in that family
		}
		for _, e := range es {
			owned[ipvs.Key{Address: e.IP, Protocol: ipvs.Protocol(e.Protocol), Port: e.Port}] = true
		}
	}
	nl, err := ipvsnl.New()
	if err != nil {
		return err
	}
	defer nl.Close()
	svcs, err := ipvs.List(ctx, nl, func(k ipvs.Key) bool { return owned[k] })
	if err != nil {
		return err
	}
	for _, s := range svcs {
		fmt.Fprintf(out, "%s\n", s.VirtualServer)
		ipvs.SortRealServers(s.RealServers)
		for _, r := range s.RealServers {
			fmt.Fprintf(out, "  -> %s active=%d inactive=%d\n", r, r.ActiveConns, r.InactiveConns)
		}
	}
	if len(svcs) == 0 {
		fmt.Fprintln(out, "no IPVS virtual servers owned by kubelvs")
	}
	vips, err := netifnl.New()
	if err != nil {
		return err
	}
	defer vips.Close()
	addrs, err := vips.ListAddresses(ctx)
	if err != nil {
		fmt.Fprintf(out, "kubelvs0: %v\n", err)
		return nil
	}
	fmt.Fprintf(out, "kubelvs0: %v\n", addrs)
	return nil
}
