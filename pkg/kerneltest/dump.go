package kerneltest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// DumpVIP prints the kernel's IPVS virtual servers of one VIP, sorted, each
// followed by its real servers with weights and forwarding, for tests that
// compare kernel state.
func DumpVIP(ctx context.Context, tb testing.TB, h ipvs.Interface, vip netip.Addr) string {
	tb.Helper()
	vss, err := h.ListVirtualServers(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	ipvs.SortVirtualServers(vss)
	var b strings.Builder
	for _, v := range vss {
		if v.Address != vip {
			continue
		}
		rs, err := h.ListRealServers(ctx, v.Key())
		if errors.Is(err, ipvs.ErrNotFound) {
			continue // deleted between the two dumps
		}
		if err != nil {
			tb.Fatal(err)
		}
		ipvs.SortRealServers(rs)
		fmt.Fprintf(&b, "%s\n", v)
		for _, r := range rs {
			fmt.Fprintf(&b, "  -> %s\n", r)
		}
	}
	return b.String()
}
