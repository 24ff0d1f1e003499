//go:build linux

package multinode

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (`ip netns add`: ip netns exec NAME …
// works on it while the test runs, for debugging).
type Netns struct {
	Name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

// newNetns creates the named namespace with its loopback up.
func newNetns(name string) (*Netns, error) {
	_ = netns.DeleteNamed(name) // left over by a test that crashed
	type res struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan res, 1)
	go func() {
		// NewNamed moves the calling thread into the new namespace; the
		// thread stays locked and is discarded when this goroutine exits.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		rc <- res{h, err}
	}()
	r := <-rc
	if r.err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, r.err)
	}
	n := &Netns{Name: name, h: r.h}
	var err error
	if n.nl, err = netlink.NewHandleAt(r.h); err != nil {
		n.delete()
		return nil, err
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		n.delete()
		return nil, fmt.Errorf("netns %s: lo: %w", name, err)
	}
	return n, nil
}

// delete removes the name and closes the handles: the namespace goes away
// with its last process and socket.
func (n *Netns) delete() {
	if n.nl != nil {
		n.nl.Close()
	}
	n.h.Close()
	_ = netns.DeleteNamed(n.Name)
}

// Path is the namespace's file, for nsenter --net=PATH.
func (n *Netns) Path() string { return filepath.Join("/var/run/netns", n.Name) }

// Netlink is a netlink handle inside the namespace.
func (n *Netns) Netlink() *netlink.Handle { return n.nl }

// Do runs f on an OS thread inside the namespace. Sockets f creates, and
// processes it starts, stay in the namespace after f returns.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime discards the thread when this
		// goroutine exits, so no other goroutine runs in the namespace.
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Start starts cmd inside the namespace (a child inherits the network
// namespace of the thread that forks it).
func (n *Netns) Start(cmd *exec.Cmd) error { return n.Do(cmd.Start) }

// Run runs a command inside the namespace and returns its combined output.
func (n *Netns) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := n.Start(cmd); err != nil {
		return "", err
	}
	if err := cmd.Wait(); err != nil {
		return out.String(), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out.String())
	}
	return out.String(), nil
}

// Sysctl writes value to /proc/sys/<path> of the namespace.
func (n *Netns) Sysctl(path, value string) error {
	return n.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644)
	})
}

// Dial connects from inside the namespace.
func (n *Netns) Dial(network string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr.String(), timeout)
		return err
	})
	return c, err
}

// Get connects over TCP from inside the namespace and returns the first
// line the server writes (an echo server's name), trimmed.
func (n *Netns) Get(addr netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := n.Dial("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(s), nil
}

// AskUDP sends one datagram from inside the namespace and returns the
// answer, trimmed.
func (n *Netns) AskUDP(addr netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := n.Dial("udp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	k, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:k])), nil
}

// AddAddr adds an address (prefix notation) to the link, without duplicate
// address detection (an IPv6 address is usable at once).
func (n *Netns) AddAddr(link string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, link, err)
	}
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		return err
	}
	a.Flags = unix.IFA_F_NODAD
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: address %s on %s: %w", n.Name, p, link, err)
	}
	return nil
}

// AddRoute adds a route to dst (a prefix) through gw, which must be on a
// connected network.
func (n *Netns) AddRoute(dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Gw: gw.AsSlice()}
	if dst.Bits() != 0 {
		r.Dst = prefixNet(dst)
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", n.Name, dst, gw, err)
	}
	return nil
}

// DelRoute deletes the route to dst (a prefix) through gw.
func (n *Netns) DelRoute(dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Gw: gw.AsSlice()}
	if dst.Bits() != 0 {
		r.Dst = prefixNet(dst)
	}
	if err := n.nl.RouteDel(r); err != nil {
		return fmt.Errorf("%s: delete route %s via %s: %w", n.Name, dst, gw, err)
	}
	return nil
}

// SetLink sets a link of the namespace up or down (a cut cable: `eth0`
// down).
func (n *Netns) SetLink(name string, up bool) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, name, err)
	}
	if up {
		return n.nl.LinkSetUp(l)
	}
	return n.nl.LinkSetDown(l)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// veth makes a veth pair: local (in n) and peer (in other), both up.
func (n *Netns) veth(local string, other *Netns, peer string, master int) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: local, MasterIndex: master}, PeerName: peer, PeerNamespace: netlink.NsFd(int(other.h))}
	if err := n.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s ↔ %s/%s: %w", n.Name, local, other.Name, peer, err)
	}
	if err := n.SetLink(local, true); err != nil {
		return err
	}
	return other.SetLink(peer, true)
}
