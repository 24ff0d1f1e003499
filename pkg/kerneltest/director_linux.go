package kerneltest

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracknl"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// Director wires the kernel packages together the way the agent does, on
// the real kernel of the root namespace.
type Director struct {
	IPVS      *ownership.Guard
	Sets      *ipsetnl.Netlink
	Netif     *netifnl.Netlink
	Rules     *iptables.Rules
	Conntrack *conntracknl.Netlink

	vips    []netip.Addr
	members netfilter.Members
}

// NewDirector opens every handle, creates kubelvs0, sets the sysctls and
// writes the netfilter rules. Cleanup removes what the test programmed.
func NewDirector(ctx context.Context, tb testing.TB) *Director {
	tb.Helper()
	d := &Director{}
	var err error
	if d.Sets, err = ipsetnl.New(); err != nil {
		tb.Fatal(err)
	}
	own, err := ownership.NewSetRecords(ctx, d.Sets)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := ipvsnl.New()
	if err != nil {
		tb.Fatal(err)
	}
	d.IPVS = ownership.NewGuard(raw, own)
	if d.Netif, err = netifnl.New(); err != nil {
		tb.Fatal(err)
	}
	if err := d.Netif.EnsureDevice(ctx); err != nil {
		tb.Fatal(err)
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	if _, err := netif.ApplySysctls("/proc/sys", netif.Sysctls(unix.ByteSliceToString(u.Release[:]), true)); err != nil {
		tb.Fatal(err)
	}
	if d.Rules, err = iptables.New(ctx, d.Sets, iptables.ExecRunner{}, netfilter.Config{}); err != nil {
		tb.Fatal(err)
	}
	if _, err := d.Rules.SyncRules(ctx, true); err != nil {
		tb.Fatal(err)
	}
	if d.Conntrack, err = conntracknl.New(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		var errs []error
		owned, err := ipvs.List(ctx, d.IPVS, d.IPVS.Owns)
		errs = append(errs, err)
		for _, s := range owned {
			errs = append(errs, d.IPVS.DeleteVirtualServer(ctx, s.Key()))
		}
		errs = append(errs, d.Rules.SyncMembers(ctx, netfilter.Members{}), d.Netif.DeleteDevice(ctx))
		if err := errors.Join(errs...); err != nil {
			tb.Errorf("director cleanup: %v", err)
		}
		d.IPVS.Close()
		d.Sets.Close()
		d.Netif.Close()
		d.Conntrack.Close()
	})
	return d
}

// Service is one virtual server as the agent would program it.
type Service struct {
	VS           ipvs.VirtualServer
	RealServers  []ipvs.RealServer
	SourceRanges []netip.Prefix
}

// Program adds the services: virtual and real servers, VIPs on kubelvs0,
// masquerade and source-range ipset members.
func (d *Director) Program(ctx context.Context, tb testing.TB, svcs ...Service) {
	tb.Helper()
	for _, s := range svcs {
		if err := d.IPVS.AddVirtualServer(ctx, s.VS); err != nil {
			tb.Fatal(err)
		}
		masq := false
		for _, rs := range s.RealServers {
			if err := d.IPVS.AddRealServer(ctx, s.VS.Key(), rs); err != nil {
				tb.Fatal(err)
			}
			masq = masq || rs.Forwarding == ipvs.Masquerade
		}
		e := ipset.Entry{IP: s.VS.Address, Protocol: uint8(s.VS.Protocol), Port: s.VS.Port}
		if masq {
			d.members.Masquerade = append(d.members.Masquerade, e)
		}
		if len(s.SourceRanges) > 0 {
			d.members.Restricted = append(d.members.Restricted, e)
			for _, p := range s.SourceRanges {
				a := e
				a.Net = p
				d.members.Allowed = append(d.members.Allowed, a)
			}
		}
		d.vips = append(d.vips, s.VS.Address)
	}
	if err := d.Netif.SyncAddresses(ctx, d.vips); err != nil {
		tb.Fatal(err)
	}
	if err := d.Rules.SyncMembers(ctx, d.members); err != nil {
		tb.Fatal(err)
	}
}
