package bench

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	moby "github.com/moby/ipvs"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// ipvsadmRestore programs the rule set with one `ipvsadm -R`, the rule set
// on its stdin: the kernel tool's bulk path.
func ipvsadmRestore(svcs []ipvs.Service) (time.Duration, error) {
	rules := ipvsadmRules(svcs)
	cmd := exec.Command("ipvsadm", "-R")
	cmd.Stdin = strings.NewReader(rules)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("ipvsadm -R: %v: %s", err, out)
	}
	return d, nil
}

func mobyService(vs ipvs.VirtualServer) *moby.Service {
	return &moby.Service{
		Address: net.IP(vs.Address.AsSlice()), Protocol: uint16(vs.Protocol), Port: vs.Port,
		AddressFamily: syscall.AF_INET, SchedName: vs.Scheduler, Netmask: 0xffffffff,
	}
}

// kubeProxyPattern programs the rule set the way kube-proxy's IPVS proxier
// does through moby/ipvs, one request at a time: per virtual server a get
// and, when missing, an add; per real server the service's destinations
// listed and, when missing, an add. It returns the requests it sent.
func kubeProxyPattern(h *moby.Handle, svcs []ipvs.Service) (time.Duration, int, error) {
	start := time.Now()
	reqs := 0
	for _, s := range svcs {
		ms := mobyService(s.VirtualServer)
		reqs++
		if _, err := h.GetService(ms); err != nil {
			reqs++
			if err := h.NewService(ms); err != nil {
				return time.Since(start), reqs, fmt.Errorf("add %s: %w", s.Key(), err)
			}
		}
		for _, rs := range s.RealServers {
			reqs++
			ds, err := h.GetDestinations(ms)
			if err != nil {
				return time.Since(start), reqs, fmt.Errorf("list destinations of %s: %w", s.Key(), err)
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
				return time.Since(start), reqs, fmt.Errorf("add %s to %s: %w", rs, s.Key(), err)
			}
		}
	}
	return time.Since(start), reqs, nil
}

// removeRuleSet deletes the rule set's virtual servers (and with them their
// real servers) one by one; nothing else in the table is touched.
func removeRuleSet(h *moby.Handle, svcs []ipvs.Service) error {
	for _, s := range svcs {
		if err := h.DelService(mobyService(s.VirtualServer)); err != nil {
			return fmt.Errorf("delete %s: %w", s.Key(), err)
		}
	}
	return nil
}
