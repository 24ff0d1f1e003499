package kerneltest

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"

	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// The benchmarks' rule set and baselines, shared by pkg/ipvs (the guard
// alone) and test/bench (the syncer, make bench), so that both compare
// kubelvs with the same ipvsadm input and the same kube-proxy pattern.

// RuleSet is n TCP virtual servers on port 80 (10.200.0.1 upwards, 250 a
// /24), wrr, each with reals masqueraded real servers (one address in
// 10.201.0.0/16 per virtual server, ports 8000 upwards, weights 1..reals).
func RuleSet(n, reals int) []ipvs.Service {
	out := make([]ipvs.Service, n)
	for i := range out {
		vip := netip.AddrFrom4([4]byte{10, 200, byte(i / 250), byte(i%250 + 1)})
		s := ipvs.Service{VirtualServer: ipvs.VirtualServer{Address: vip, Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}}
		s.RealServers = make([]ipvs.RealServer, reals)
		for r := range s.RealServers {
			s.RealServers[r] = ipvs.RealServer{
				Address: netip.AddrFrom4([4]byte{10, 201, byte(i / 250), byte(i%250 + 1)}),
				Port:    uint16(8000 + r), Weight: r + 1, Forwarding: ipvs.Masquerade,
			}
		}
		out[i] = s
	}
	return out
}

// IPVSAdmRules renders TCP masquerade rule sets for `ipvsadm -R`: the
// adds, or with del the deletes of the virtual servers.
func IPVSAdmRules(svcs []ipvs.Service, del bool) string {
	var b strings.Builder
	for _, s := range svcs {
		vs := netip.AddrPortFrom(s.Address, s.Port)
		if del {
			fmt.Fprintf(&b, "-D -t %s\n", vs)
			continue
		}
		fmt.Fprintf(&b, "-A -t %s -s %s\n", vs, s.Scheduler)
		for _, rs := range s.RealServers {
			fmt.Fprintf(&b, "-a -t %s -r %s -m -w %d\n", vs, netip.AddrPortFrom(rs.Address, rs.Port), rs.Weight)
		}
	}
	return b.String()
}

// MobyService is vs as moby/ipvs describes it (IPv4).
func MobyService(vs ipvs.VirtualServer) *moby.Service {
	return &moby.Service{
		Address: net.IP(vs.Address.AsSlice()), Protocol: uint16(vs.Protocol), Port: vs.Port,
		AddressFamily: syscall.AF_INET, SchedName: vs.Scheduler, Netmask: 0xffffffff,
	}
}

// KubeProxyPattern programs svcs the way kube-proxy's IPVS proxier does
// through moby/ipvs, one request at a time: per virtual server a get and,
// when missing, an add; per real server the service's destinations listed
// and, when missing, an add. It returns the requests it sent.
func KubeProxyPattern(h *moby.Handle, svcs []ipvs.Service) (int, error) {
	reqs := 0
	for _, s := range svcs {
		ms := MobyService(s.VirtualServer)
		reqs++
		if _, err := h.GetService(ms); err != nil {
			reqs++
			if err := h.NewService(ms); err != nil {
				return reqs, fmt.Errorf("add %s: %w", s.Key(), err)
			}
		}
		for _, rs := range s.RealServers {
			reqs++
			ds, err := h.GetDestinations(ms)
			if err != nil {
				return reqs, fmt.Errorf("list destinations of %s: %w", s.Key(), err)
			}
			found := false
			for _, d := range ds {
				found = found || (d.Address.Equal(net.IP(rs.Address.AsSlice())) && d.Port == rs.Port)
			}
			if found {
				continue
			}
			reqs++
			d := &moby.Destination{
				Address: net.IP(rs.Address.AsSlice()), Port: rs.Port, Weight: rs.Weight,
				ConnectionFlags: moby.ConnectionFlagMasq, AddressFamily: syscall.AF_INET,
			}
			if err := h.NewDestination(ms, d); err != nil {
				return reqs, fmt.Errorf("add %s to %s: %w", rs, s.Key(), err)
			}
		}
	}
	return reqs, nil
}

// InFreshNetns runs f on a locked thread in a network namespace of its own,
// with a dummy device holding 10.255.255.254/8 (IPVS refuses a masqueraded
// real server the namespace has no route to); the thread, and with it the
// namespace once f's handles are closed, dies when f returns. Each
// contender of a cold sync starts from an empty IPVS: the kernel keeps
// deleted real servers in a trash list for minutes and walks it on every
// real-server add, so a contender running after another's rule set was
// deleted would pay for it.
func InFreshNetns(tb testing.TB, f func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			tb.Error(err)
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "bench0"
		l := &netlink.Dummy{LinkAttrs: la}
		a, _ := netlink.ParseAddr("10.255.255.254/8")
		for _, err := range []error{netlink.LinkAdd(l), netlink.AddrAdd(l, a), netlink.LinkSetUp(l)} {
			if err != nil {
				tb.Error(err)
				return
			}
		}
		f()
	}()
	<-done
	if tb.Failed() {
		tb.FailNow()
	}
}
