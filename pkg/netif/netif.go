// Package netif manages the dummy interface kubelvs0 that holds the virtual
// addresses (so the kernel delivers their packets locally, where IPVS picks
// them up) and the sysctls IPVS needs. The Interface, the address diff and
// the sysctl list are here, free of netlink; package netifnl implements the
// Interface on the kernel, package netiftest in memory.
package netif

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DeviceName is the dummy interface kubelvs owns.
const DeviceName = "kubelvs0"

// ErrNotOwned is returned when an interface named kubelvs0 exists but is not
// a dummy: something else made it, so kubelvs leaves it alone.
var ErrNotOwned = errors.New("interface exists and is not a kubelvs dummy")

// Interface manages kubelvs0.
type Interface interface {
	// EnsureDevice creates kubelvs0 as a dummy if missing and sets it up;
	// the next SyncAddresses compares with what kubelvs0 holds now.
	EnsureDevice(ctx context.Context) error
	// ListAddresses returns the virtual addresses on kubelvs0, sorted
	// (IPv6 link-local addresses the kernel adds itself are left out).
	ListAddresses(ctx context.Context) ([]netip.Addr, error)
	// SyncAddresses makes kubelvs0 hold exactly vips, as /32 and /128.
	SyncAddresses(ctx context.Context, vips []netip.Addr) error
	// UpdateAddresses adds add to kubelvs0 and removes del from it,
	// leaving every other address as it is, at the cost of the change
	// alone: an address of add already there and one of del already gone
	// are success, and one in both is added. SyncAddresses is for when
	// what kubelvs0 should hold is known but not what it holds.
	UpdateAddresses(ctx context.Context, add, del []netip.Addr) error
	// DeleteDevice removes kubelvs0 and its addresses; gone is success.
	DeleteDevice(ctx context.Context) error
	// Close releases the netlink handle.
	Close() error
}

// Sysctl is one kernel parameter, Path relative to /proc/sys.
type Sysctl struct {
	Path  string
	Value string
	// Why says what breaks without it.
	Why string
}

// String formats the sysctl as "net.ipv4.ip_forward=1".
func (s Sysctl) String() string { return strings.ReplaceAll(s.Path, "/", ".") + "=" + s.Value }

// Sysctls returns what IPVS needs on a kernel of the given release
// ("6.1.0-18-amd64"); ipv6 adds IPv6 forwarding.
func Sysctls(release string, ipv6 bool) []Sysctl {
	s := []Sysctl{
		{"net/ipv4/vs/conntrack", "1", "IPVS flows must be in conntrack for the masquerade rule and for flushing stale flows"},
		{"net/ipv4/vs/expire_nodest_conn", "1", "expire connections to removed real servers instead of black-holing them"},
		{"net/ipv4/vs/expire_quiescent_template", "1", "expire persistence templates of weight-0 real servers so drains finish"},
		{"net/ipv4/ip_forward", "1", "forward traffic to real servers on other hosts"},
		{"net/ipv4/conf/all/arp_ignore", "1", "do not answer ARP for VIPs held on kubelvs0"},
		{"net/ipv4/conf/all/arp_announce", "2", "do not use VIPs as ARP source addresses"},
	}
	if kernelBefore(release, 5, 9) {
		// Before 5.9, conn_reuse_mode=1 delays reused ports by a second
		// (kube-proxy #81775); 5.9 fixed it, so leave newer kernels alone.
		s = append(s, Sysctl{"net/ipv4/vs/conn_reuse_mode", "0", "avoid 1 s stalls on source-port reuse (kernel < 5.9)"})
	}
	if ipv6 {
		s = append(s, Sysctl{"net/ipv6/conf/all/forwarding", "1", "forward IPv6 traffic to real servers"})
	}
	return s
}

func kernelBefore(release string, major, minor int) bool {
	f := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(f[0])
	mi, _ := strconv.Atoi(f[1])
	return ma < major || (ma == major && mi < minor)
}

// ApplySysctls writes each sysctl under root ("/proc/sys" on a node) when its
// value differs, and returns the ones it changed.
func ApplySysctls(root string, ss []Sysctl) ([]Sysctl, error) {
	var changed []Sysctl
	var errs []error
	for _, s := range ss {
		p := filepath.Join(root, s.Path)
		cur, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s (%s): %w", s, s.Why, err))
			continue
		}
		if strings.TrimSpace(string(cur)) == s.Value {
			continue
		}
		if err := os.WriteFile(p, []byte(s.Value+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s (%s): %w", s, s.Why, err))
			continue
		}
		changed = append(changed, s)
	}
	return changed, errors.Join(errs...)
}

// Prefix returns the host prefix (/32 or /128) kubelvs0 holds for a VIP.
func Prefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// DiffAddresses returns which addresses to add and remove, each in the
// order of its input. It is linear: at 10,000 VIPs a pairwise comparison
// took about a second of the periodic resync, with the syncer's lock held.
func DiffAddresses(have, want []netip.Addr) (add, del []netip.Addr) {
	h := make(map[netip.Addr]struct{}, len(have))
	for _, a := range have {
		h[a] = struct{}{}
	}
	w := make(map[netip.Addr]struct{}, len(want))
	for _, a := range want {
		w[a] = struct{}{}
		if _, ok := h[a]; !ok {
			add = append(add, a)
		}
	}
	for _, a := range have {
		if _, ok := w[a]; !ok {
			del = append(del, a)
		}
	}
	return add, del
}
