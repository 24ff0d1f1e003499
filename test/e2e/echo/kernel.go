package echo

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// The node's kernel as the lifecycle scenarios compare it: one line per
// object, sorted, from DumpKernel (IPVS and ipsets over netlink, kubelvs0)
// and from iptables-save of every backend (lines prefixed with the tool):
//
//	ipvs tcp 203.0.113.80:80 wlc flags=0x0 timeout=0
//	ipvs tcp 203.0.113.80:80 -> 203.0.113.81:8080 masq w=3
//	ipset e2e-foreign hash:ip,port family=2
//	ipset e2e-foreign member 203.0.113.80,tcp:80
//	link kubelvs0
//	iptables-legacy: -A INPUT -j E2E-FOREIGN
//
// The foreign objects stand for another program on the node (kube-proxy,
// keepalived, a firewall): kubelvs must leave them exactly as they are.
const (
	// ForeignCount is how many of each foreign object there are: IPVS
	// virtual services (ForeignService and the next ports from 10001),
	// ipsets (ForeignSet, then ForeignSet-1...) and rules in ForeignChain,
	// as a node with kube-proxy or keepalived has many.
	ForeignCount = 100
	// ForeignSet is the foreign ipset (hash:ip,port, holding ForeignService).
	ForeignSet = "e2e-foreign"
	// ForeignChain is the foreign iptables chain, jumped to from INPUT.
	ForeignChain = "E2E-FOREIGN"
	// LinkLine is the line of kubelvs's interface.
	LinkLine = "link kubelvs0"
)

var (
	// ForeignService is the foreign IPVS virtual service (TCP, TEST-NET-3).
	ForeignService = netip.MustParseAddrPort("203.0.113.80:80")
	// ForeignReal is its one real server.
	ForeignReal = netip.MustParseAddrPort("203.0.113.81:8080")
)

// Kernel runs what `e2e-echo kernel ACTION` does: "dump" returns
// DumpKernel's lines, "add-foreign" and "delete-foreign" none.
func Kernel(action string) (_ []string, err error) {
	// ipset-go type-asserts netlink errors and panics on an unexpected one.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kernel %s: %v", action, r)
		}
	}()
	switch action {
	case "dump":
		return DumpKernel()
	case "add-foreign":
		return nil, AddForeign()
	case "delete-foreign":
		return nil, DeleteForeign()
	}
	return nil, fmt.Errorf("kernel %q: want dump, add-foreign or delete-foreign", action)
}

// ownershipSet starts the names of the ipsets in which kubelvs records the
// IPVS virtual services it created (KUBELVS-VIRTUAL-SERVERS and -V6).
const ownershipSet = "KUBELVS-VIRTUAL-SERVERS"

var protocols = map[uint16]string{6: "tcp", 17: "udp", 132: "sctp"}

func protoName(p uint16) string {
	if n, ok := protocols[p]; ok {
		return n
	}
	return fmt.Sprintf("proto%d", p)
}

// serviceKey is how a virtual service starts its lines: "tcp 1.2.3.4:80".
func serviceKey(proto uint16, addr netip.AddrPort) string {
	return protoName(proto) + " " + addr.String()
}

// Owned returns the keys ("tcp 198.51.100.201:80") of the IPVS virtual
// services that kubelvs's ownership ipsets record in a dump.
func Owned(lines []string) map[string]bool {
	owned := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "ipset" || !strings.HasPrefix(f[1], ownershipSet) || f[2] != "member" {
			continue
		}
		if k, ok := memberKey(f[3]); ok {
			owned[k] = true
		}
	}
	return owned
}

// memberKey turns an ipset member "ADDR,PROTO:PORT" into a service key.
func memberKey(m string) (string, bool) {
	i := strings.LastIndexByte(m, ',')
	if i < 0 {
		return "", false
	}
	addr, err := netip.ParseAddr(m[:i])
	if err != nil {
		return "", false
	}
	proto, port, ok := strings.Cut(m[i+1:], ":")
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || err != nil {
		return "", false
	}
	return proto + " " + netip.AddrPortFrom(addr, uint16(n)).String(), true
}

// Leftovers returns the lines of a dump that are kubelvs's: KUBELVS- ipsets
// and iptables chains and rules, kubelvs0, and the IPVS virtual services
// (and their real servers) whose keys are in owned.
func Leftovers(owned map[string]bool, lines []string) []string {
	var left []string
	for _, l := range lines {
		if strings.Contains(l, "KUBELVS") || l == LinkLine || owned[ipvsKey(l)] {
			left = append(left, l)
		}
	}
	return left
}

// ipvsKey returns the service key of an "ipvs" line, or "".
func ipvsKey(l string) string {
	f := strings.Fields(l)
	if len(f) < 3 || f[0] != "ipvs" {
		return ""
	}
	return f[1] + " " + f[2]
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Foreign returns the lines of a dump that name the foreign objects, with
// iptables packet counters blanked (they are traffic, not state).
func Foreign(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, ForeignSet) || strings.Contains(l, ForeignChain) || strings.Contains(l, " "+ForeignService.Addr().String()+":") {
			out = append(out, counters.ReplaceAllString(l, "[-]"))
		}
	}
	return out
}
