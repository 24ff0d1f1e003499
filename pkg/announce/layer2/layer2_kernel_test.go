package layer2_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/announce/layer2"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netif"
)

// The topology: a "client" network namespace holding a bridge br0
// (10.77.0.254/24, fd77::fe/64) and, per node, a namespace whose eth0
// (10.77.0.<i>/24, fd77::<i>/64) is a veth whose peer is a port of br0. Every
// node holds the VIPs on a dummy kubelvs0 with the sysctls of the agent
// (pkg/netif), and a TCP listener on each VIP that writes the node's name.
var (
	vip4  = netip.MustParseAddr("10.77.0.100")
	vip6  = netip.MustParseAddr("fd77::100")
	vip4b = netip.MustParseAddr("10.77.0.101")
	vip6b = netip.MustParseAddr("fd77::101")
	vips  = []netip.Addr{vip4, vip6, vip4b, vip6b}

	client4 = netip.MustParseAddr("10.77.0.254")
	client6 = netip.MustParseAddr("fd77::fe")
)

const port = 8080

type topology struct {
	client  netns.NsHandle
	clientH *netlink.Handle
	br      netlink.Link
	nodes   []*node
}

type node struct {
	name string
	ns   netns.NsHandle
	mac  net.HardwareAddr
	reg  *prometheus.Registry
	r    *layer2.Responder
}

// newNetns returns a new network namespace; no thread stays in it.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var err error
		h, err = netns.New()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// in runs f on an OS thread inside ns; the sockets it opens stay there.
func in(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func addr(p string) *netlink.Addr {
	a, err := netlink.ParseAddr(p)
	if err != nil {
		panic(err)
	}
	a.Flags = unix.IFA_F_NODAD
	return a
}

func newTopology(t *testing.T, names ...string) *topology {
	t.Helper()
	tp := &topology{client: newNetns(t)}
	var err error
	tp.clientH, err = netlink.NewHandleAt(tp.client)
	must(t, err)
	t.Cleanup(tp.clientH.Close)
	off := false
	// An address of its own: a bridge without one takes its lowest port's.
	brMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0xfe}
	must(t, tp.clientH.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", HardwareAddr: brMAC}, MulticastSnooping: &off}))
	tp.br, err = tp.clientH.LinkByName("br0")
	must(t, err)
	must(t, tp.clientH.AddrAdd(tp.br, addr(client4.String()+"/24")))
	must(t, tp.clientH.AddrAdd(tp.br, addr(client6.String()+"/64")))
	must(t, tp.clientH.LinkSetUp(tp.br))
	lo, err := tp.clientH.LinkByName("lo")
	must(t, err)
	must(t, tp.clientH.LinkSetUp(lo))

	// The agent's sysctls of the interfaces' configuration, read from
	// pkg/netif (the net/ipv4/vs ones need ip_vs and concern IPVS only).
	var sysctls []netif.Sysctl
	for _, s := range netif.Sysctls("6.1.0", true) {
		if strings.HasPrefix(s.Path, "net/ipv4/conf/") || strings.HasPrefix(s.Path, "net/ipv6/conf/") {
			sysctls = append(sysctls, s)
		}
	}
	if len(sysctls) < 2 {
		t.Fatalf("pkg/netif sets no arp_ignore/arp_announce? %v", sysctls)
	}

	for i, name := range names {
		n := &node{name: name, ns: newNetns(t), reg: prometheus.NewRegistry()}
		tp.nodes = append(tp.nodes, n)
		brPort := fmt.Sprintf("p%d", i+1)
		must(t, tp.clientH.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: brPort}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(n.ns))}))
		pl, err := tp.clientH.LinkByName(brPort)
		must(t, err)
		must(t, tp.clientH.LinkSetMaster(pl, tp.br))
		must(t, tp.clientH.LinkSetUp(pl))

		nh, err := netlink.NewHandleAt(n.ns)
		must(t, err)
		eth0, err := nh.LinkByName("eth0")
		must(t, err)
		n.mac = eth0.Attrs().HardwareAddr
		must(t, nh.AddrAdd(eth0, addr(fmt.Sprintf("10.77.0.%d/24", i+1))))
		must(t, nh.AddrAdd(eth0, addr(fmt.Sprintf("fd77::%d/64", i+1))))
		must(t, nh.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: netif.DeviceName}}))
		dummy, err := nh.LinkByName(netif.DeviceName)
		must(t, err)
		for _, v := range vips {
			must(t, nh.AddrAdd(dummy, addr(netip.PrefixFrom(v, v.BitLen()).String())))
		}
		lo, err := nh.LinkByName("lo")
		must(t, err)
		for _, l := range []netlink.Link{lo, eth0, dummy} {
			must(t, nh.LinkSetUp(l))
		}
		nh.Close()
		must(t, in(n.ns, func() error {
			_, err := netif.ApplySysctls("/proc/sys", sysctls)
			return err
		}))
		// A listener on every VIP that names the node.
		must(t, in(n.ns, func() error {
			for _, v := range vips {
				l, err := net.Listen("tcp", netip.AddrPortFrom(v, port).String())
				if err != nil {
					return err
				}
				t.Cleanup(func() { l.Close() })
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						_, _ = io.WriteString(c, name)
						c.Close()
					}
				}()
			}
			return nil
		}))
	}
	return tp
}

// start runs a Responder on n's eth0, made inside n's namespace.
func (n *node) start(t *testing.T) {
	t.Helper()
	must(t, in(n.ns, func() error {
		var err error
		n.r, err = layer2.New("eth0", testr.New(t), n.reg)
		return err
	}))
	t.Cleanup(n.r.Stop)
	if got := n.r.HardwareAddr().String(); got != n.mac.String() {
		t.Fatalf("responder answers with %s, eth0 is %s", got, n.mac)
	}
}

func (n *node) announce(t *testing.T, addrs ...netip.Addr) {
	t.Helper()
	must(t, n.r.Announce(context.Background(), addrs))
}

// metric returns the value of a kubelvs_layer2 metric of n (labels
// "family=ipv4" or none).
func (n *node) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if strings.Join(ls, ",") != label {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

// dial connects from the client to vip:port and returns what the node
// wrote: its name.
func (tp *topology) dial(vip netip.Addr, timeout time.Duration) (string, error) {
	var got string
	err := in(tp.client, func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, port).String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// neigh returns the client's neighbor entry for a (state 0: none).
func (tp *topology) neigh(t *testing.T, a netip.Addr) netlink.Neigh {
	t.Helper()
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := tp.clientH.NeighList(tp.br.Attrs().Index, fam)
	must(t, err)
	for _, n := range ns {
		if ip, _ := netip.AddrFromSlice(n.IP); ip.Unmap() == a {
			return n
		}
	}
	return netlink.Neigh{}
}

func (tp *topology) flush(t *testing.T, a netip.Addr) {
	t.Helper()
	if n := tp.neigh(t, a); n.State != 0 {
		must(t, tp.clientH.NeighDel(&n))
	}
}

// clientSysctl reads a sysctl of the client's namespace.
func (tp *topology) clientSysctl(t *testing.T, path string) string {
	t.Helper()
	var v []byte
	must(t, in(tp.client, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + path)
		return err
	}))
	return strings.TrimSpace(string(v))
}

// unresolved checks that the client cannot reach vip: the connection
// fails and its neighbor entry is left incomplete or failed.
func (tp *topology) unresolved(t *testing.T, vip netip.Addr) {
	t.Helper()
	tp.flush(t, vip)
	got, err := tp.dial(vip, kerneltest.Timeout(10*time.Second))
	if err == nil {
		t.Fatalf("%s answered (served by %q) with no responder answering for it", vip, got)
	}
	n := tp.neigh(t, vip)
	if n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
		t.Fatalf("%s: connection failed (%v) but the neighbor entry is %s %s, want FAILED or INCOMPLETE", vip, err, neighState(n.State), n.HardwareAddr)
	}
	t.Logf("%s unreachable: %v; neighbor entry %s", vip, err, neighState(n.State))
}

// served checks that the client reaches vip on node n: the connection is
// served by n and the neighbor entry maps vip to n's eth0.
func (tp *topology) served(t *testing.T, vip netip.Addr, n *node) {
	t.Helper()
	got, err := tp.dial(vip, kerneltest.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", vip, err)
	}
	if got != n.name {
		t.Fatalf("%s served by %q, want %q", vip, got, n.name)
	}
	e := tp.neigh(t, vip)
	if e.HardwareAddr.String() != n.mac.String() {
		t.Fatalf("the client maps %s to %s (%s), want %s's eth0 %s", vip, e.HardwareAddr, neighState(e.State), n.name, n.mac)
	}
	t.Logf("%s served by %s; neighbor entry %s %s", vip, got, e.HardwareAddr, neighState(e.State))
}

func neighState(s int) string {
	names := map[int]string{
		netlink.NUD_INCOMPLETE: "INCOMPLETE", netlink.NUD_REACHABLE: "REACHABLE", netlink.NUD_STALE: "STALE",
		netlink.NUD_DELAY: "DELAY", netlink.NUD_PROBE: "PROBE", netlink.NUD_FAILED: "FAILED",
		netlink.NUD_NOARP: "NOARP", netlink.NUD_PERMANENT: "PERMANENT",
	}
	if s == 0 {
		return "none"
	}
	var out []string
	for bit, n := range names {
		if s&bit != 0 {
			out = append(out, n)
		}
	}
	return strings.Join(out, "|")
}

// poll calls f until it returns nil or the deadline passes.
func poll(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(kerneltest.Timeout(d))
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKernelLayer2Answers: a VIP on kubelvs0 with the agent's sysctls is
// unreachable from the link until a Responder answers for it, reachable
// (ARP, NDP) while it does, and unreachable again once it stops answering.
func TestKernelLayer2Answers(t *testing.T) {
	kerneltest.Require(t)
	tp := newTopology(t, "a")
	a := tp.nodes[0]

	// (1) The kernel answers neither ARP (arp_ignore) nor NDP (the
	// target is not on eth0) for a VIP on kubelvs0.
	for _, v := range []netip.Addr{vip4, vip6} {
		tp.unresolved(t, v)
	}

	// A Responder with an empty set answers nothing either.
	a.start(t)
	tp.unresolved(t, vip4)

	// (2), (3) With the Responder answering, the client resolves the VIP
	// to eth0's hardware address and connects.
	a.announce(t, vip4, vip6)
	for _, v := range []netip.Addr{vip4, vip6} {
		tp.flush(t, v)
		tp.served(t, v, a)
	}
	if got := a.metric(t, "kubelvs_layer2_announced_addresses", ""); got != 2 {
		t.Errorf("announced_addresses = %v, want 2", got)
	}
	for _, f := range []string{"ipv4", "ipv6"} {
		if got := a.metric(t, "kubelvs_layer2_answers_total", "family="+f); got < 1 {
			t.Errorf("answers_total{%s} = %v, want at least 1", f, got)
		}
	}

	// (4) Out of the set, the VIPs are not answered any more.
	a.announce(t)
	for _, v := range []netip.Addr{vip4, vip6} {
		tp.unresolved(t, v)
	}
	if got := a.metric(t, "kubelvs_layer2_announced_addresses", ""); got != 0 {
		t.Errorf("announced_addresses = %v, want 0", got)
	}

	// Back in the set: answered again (the solicited-node group was left
	// and joined again); Stop, twice, ends the answers.
	a.announce(t, vip6)
	tp.flush(t, vip6)
	tp.served(t, vip6, a)
	a.r.Stop()
	a.r.Stop()
	if err := a.r.Announce(context.Background(), []netip.Addr{vip4}); !errors.Is(err, layer2.ErrStopped) {
		t.Errorf("Announce after Stop: %v, want ErrStopped", err)
	}
	tp.unresolved(t, vip6)
}

// TestKernelLayer2Failover: the client has a neighbor entry for the VIP
// with node a's hardware address; the VIP moves to node b, whose
// unsolicited announcements (gratuitous ARP request, unsolicited NA with
// Override) change the entry to b's address without the client asking, and
// the next connection is served by b. A client without an entry creates
// none from them.
func TestKernelLayer2Failover(t *testing.T) {
	kerneltest.Require(t)
	tp := newTopology(t, "a", "b")
	a, b := tp.nodes[0], tp.nodes[1]
	// Linux defaults, which the facts below depend on.
	t.Logf("client sysctls: arp_accept=%s, drop_unsolicited_na=%s",
		tp.clientSysctl(t, "net/ipv4/conf/br0/arp_accept"), tp.clientSysctl(t, "net/ipv6/conf/br0/drop_unsolicited_na"))
	if v := tp.clientSysctl(t, "net/ipv4/conf/br0/arp_accept"); v != "0" {
		t.Fatalf("client arp_accept=%s, want the default 0", v)
	}
	seen := capture(t, tp)
	a.start(t)
	b.start(t)

	// Unsolicited announcements create no entry on a client that has
	// none: wait for a's three announcements of each VIP, then look.
	a.announce(t, vip4, vip6)
	poll(t, 10*time.Second, "a's three announcements", func() error {
		for _, v := range []netip.Addr{vip4, vip6} {
			if n := len(seen.match(func(f captured) bool { return f.unsolicited(v, a.mac) })); n < 3 {
				return fmt.Errorf("%d announcements of %s from a", n, v)
			}
		}
		return nil
	})
	for _, v := range []netip.Addr{vip4, vip6} {
		if n := tp.neigh(t, v); n.State != 0 {
			t.Errorf("an unsolicited announcement created the client's entry for %s: %s %s", v, neighState(n.State), n.HardwareAddr)
		}
	}
	poll(t, 5*time.Second, "gratuitous_total", func() error {
		for _, f := range []string{"ipv4", "ipv6"} {
			if got := a.metric(t, "kubelvs_layer2_gratuitous_total", "family="+f); got != 3 {
				return fmt.Errorf("gratuitous_total{%s} = %v, want 3 (at once, +1 s, +2 s)", f, got)
			}
		}
		return nil
	})

	for _, v := range []netip.Addr{vip4, vip6} {
		tp.served(t, v, a)
	}
	mark := seen.len()
	a.announce(t)
	b.announce(t, vip4, vip6)
	for _, v := range []netip.Addr{vip4, vip6} {
		poll(t, 10*time.Second, fmt.Sprintf("client's entry for %s moves to b", v), func() error {
			if n := tp.neigh(t, v); n.HardwareAddr.String() != b.mac.String() {
				return fmt.Errorf("entry %s %s, want b's %s", n.HardwareAddr, neighState(n.State), b.mac)
			}
			return nil
		})
	}
	// The client did not ask: no ARP request or neighbor solicitation
	// for the VIPs left it since the move.
	asked := seen.match(func(f captured) bool {
		return f.src.String() == tp.br.Attrs().HardwareAddr.String() && (f.kind == "arp-request" || f.kind == "ns") && (f.target == vip4 || f.target == vip6)
	})
	for _, f := range asked {
		if f.seq >= mark {
			t.Errorf("the client asked for %s after the move: %s", f.target, f)
		}
	}
	for _, v := range []netip.Addr{vip4, vip6} {
		t.Logf("after the move the client maps %s to b's %s (%s)", v, b.mac, neighState(tp.neigh(t, v).State))
		tp.served(t, v, b)
	}
}

// TestKernelLayer2GratuitousARPStyles: the facts behind the choice of a
// request-style gratuitous ARP. A Linux client (arp_accept=0) with an entry
// for the address takes the new hardware address from a reply-style one
// (op reply, sender IP = target IP, target hardware address = sender's) and
// from a request-style one (op request, sender IP = target IP) alike.
func TestKernelLayer2GratuitousARPStyles(t *testing.T) {
	kerneltest.Require(t)
	tp := newTopology(t, "a")
	a := tp.nodes[0]
	a.start(t)
	a.announce(t, vip4)
	tp.served(t, vip4, a)
	var raw *packet.Conn
	must(t, in(a.ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		raw, err = packet.Listen(ifi, packet.Raw, 0x0806, nil)
		return err
	}))
	t.Cleanup(func() { raw.Close() })
	for _, c := range []struct {
		style string
		op    arp.Operation
		mac   net.HardwareAddr
		tha   func(net.HardwareAddr) net.HardwareAddr
	}{
		{"reply (target hardware address = sender's)", arp.OperationReply, net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}, func(m net.HardwareAddr) net.HardwareAddr { return m }},
		{"request (target hardware address zero)", arp.OperationRequest, net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 2}, func(net.HardwareAddr) net.HardwareAddr { return make(net.HardwareAddr, 6) }},
	} {
		p, err := arp.NewPacket(c.op, c.mac, vip4, c.tha(c.mac), vip4)
		must(t, err)
		pb, _ := p.MarshalBinary()
		fb, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: c.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
		_, err = raw.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		must(t, err)
		poll(t, 5*time.Second, "gratuitous ARP, "+c.style, func() error {
			if n := tp.neigh(t, vip4); n.HardwareAddr.String() != c.mac.String() {
				return fmt.Errorf("entry %s %s, want %s", n.HardwareAddr, neighState(n.State), c.mac)
			}
			return nil
		})
		t.Logf("gratuitous ARP %s: the client's existing entry now maps %s to %s (%s)", c.style, vip4, c.mac, neighState(tp.neigh(t, vip4).State))
	}
}

// TestKernelLayer2OneAnswer: with two Responders on the link, a holding
// the VIPs and b other addresses, only a's hardware address answers the
// client's ARP requests and neighbor solicitations for them.
func TestKernelLayer2OneAnswer(t *testing.T) {
	kerneltest.Require(t)
	tp := newTopology(t, "a", "b")
	a, b := tp.nodes[0], tp.nodes[1]
	a.start(t)
	b.start(t)
	a.announce(t, vip4, vip6)
	b.announce(t, vip4b, vip6b)
	seen := capture(t, tp)
	me := tp.br.Attrs().HardwareAddr

	// Questions for each of a's VIPs, then one for b's, sent by the client
	// from its own sockets. Each node answers in the order it reads, and
	// the bridge keeps the order of each port: once b's answer to the last
	// question is in, any answer of b to the earlier ones is too.
	var send func(netip.Addr) error
	must(t, in(tp.client, func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		ac, err := packet.Listen(ifi, packet.Raw, 0x0806, nil)
		if err != nil {
			return err
		}
		t.Cleanup(func() { ac.Close() })
		nc, _, err := ndp.Listen(ifi, ndp.Addr(client6.String()))
		if err != nil {
			return err
		}
		t.Cleanup(func() { nc.Close() })
		send = func(v netip.Addr) error {
			if v.Is4() {
				p, err := arp.NewPacket(arp.OperationRequest, me, client4, ethernet.Broadcast, v)
				if err != nil {
					return err
				}
				pb, _ := p.MarshalBinary()
				fb, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: me, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
				_, err = ac.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast})
				return err
			}
			snm, err := ndp.SolicitedNodeMulticast(v)
			if err != nil {
				return err
			}
			return nc.WriteTo(&ndp.NeighborSolicitation{TargetAddress: v, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: me}}}, nil, snm)
		}
		return nil
	}))
	for _, fam := range [][2]netip.Addr{{vip4, vip4b}, {vip6, vip6b}} {
		v, barrier := fam[0], fam[1]
		answer := func(f captured, target netip.Addr) bool {
			return f.answers(target) && f.dstMAC.String() == me.String()
		}
		barriers := func() int {
			return len(seen.match(func(f captured) bool { return answer(f, barrier) && f.src.String() == b.mac.String() }))
		}
		// Rounds until three answers for v are in (a question sent while
		// the link is still coming up can be lost).
		poll(t, 10*time.Second, fmt.Sprintf("answers for %s", v), func() error {
			if n := len(seen.match(func(f captured) bool { return answer(f, v) })); n >= 3 {
				return nil
			}
			for range 3 {
				must(t, send(v))
			}
			must(t, send(barrier))
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("fewer than 3 answers for %s", v)
		})
		n := barriers()
		must(t, send(barrier))
		poll(t, 10*time.Second, fmt.Sprintf("b's answer for %s", barrier), func() error {
			if barriers() <= n {
				return fmt.Errorf("b has not answered for %s", barrier)
			}
			return nil
		})
		macs := map[string]int{}
		for _, f := range seen.match(func(f captured) bool { return answer(f, v) }) {
			macs[f.src.String()]++
			if f.kind == "na" && (!f.solicited || !f.override || f.tlla.String() != a.mac.String()) {
				t.Errorf("answer %s: want a solicited NA with Override and a's target link-layer address", f)
			}
			if f.kind == "arp-reply" && (f.sha.String() != a.mac.String() || f.sender != v) {
				t.Errorf("answer %s: want %s is-at %s", f, v, a.mac)
			}
		}
		if len(macs) != 1 || macs[a.mac.String()] < 3 {
			t.Errorf("answers for %s by hardware address: %v; want only a's %s", v, macs, a.mac)
		}
		t.Logf("answers for %s: %v (a is %s, b %s)", v, macs, a.mac, b.mac)
	}
	// b's counter agrees: it answered only for its own addresses.
	poll(t, 5*time.Second, "answers_total", func() error {
		for _, f := range []string{"ipv4", "ipv6"} {
			kind, own := "arp-reply", vip4b
			if f == "ipv6" {
				kind, own = "na", vip6b
			}
			want := len(seen.match(func(c captured) bool {
				return c.kind == kind && c.src.String() == b.mac.String() && c.answers(own) && c.dstMAC.String() == me.String()
			}))
			if got := b.metric(t, "kubelvs_layer2_answers_total", "family="+f); int(got) != want {
				return fmt.Errorf("b's answers_total{%s} = %v, want %d (its answers for %s)", f, got, want, own)
			}
		}
		return nil
	})
}

// captured is an ARP or neighbor discovery frame seen on the client's br0.
type captured struct {
	seq            int
	src, dstMAC    net.HardwareAddr
	kind           string // arp-request, arp-reply, ns, na
	sender, target netip.Addr
	sha, tlla      net.HardwareAddr
	solicited      bool
	override       bool
}

func (f captured) String() string {
	return fmt.Sprintf("#%d %s %s->%s sender %s target %s sha %s tlla %s S=%v O=%v", f.seq, f.kind, f.src, f.dstMAC, f.sender, f.target, f.sha, f.tlla, f.solicited, f.override)
}

// answers reports whether f answers for v: an ARP reply from v or a
// neighbor advertisement with target v.
func (f captured) answers(v netip.Addr) bool {
	return (f.kind == "arp-reply" && f.sender == v) || (f.kind == "na" && f.target == v)
}

// unsolicited reports whether f is an unsolicited announcement of v from
// mac: a gratuitous ARP request or an unsolicited NA with Override.
func (f captured) unsolicited(v netip.Addr, mac net.HardwareAddr) bool {
	if f.src.String() != mac.String() || f.target != v {
		return false
	}
	switch f.kind {
	case "arp-request":
		return f.sender == v && f.sha.String() == mac.String() && bytes.Equal(f.dstMAC, ethernet.Broadcast)
	case "na":
		return !f.solicited && f.override && f.tlla.String() == mac.String()
	}
	return false
}

type capturer struct {
	mu     sync.Mutex
	frames []captured
}

func (c *capturer) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *capturer) match(f func(captured) bool) []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []captured
	for _, fr := range c.frames {
		if f(fr) {
			out = append(out, fr)
		}
	}
	return out
}

// capture records the ARP and NDP frames br0 sends and receives in the
// client's namespace (an AF_PACKET socket of every protocol) until the
// test ends.
func capture(t *testing.T, tp *topology) *capturer {
	t.Helper()
	var conn *packet.Conn
	must(t, in(tp.client, func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}))
	c := &capturer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if f, ok := parseFrame(buf[:n]); ok {
				c.mu.Lock()
				f.seq = len(c.frames)
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		if t.Failed() {
			for _, f := range c.match(func(captured) bool { return true }) {
				t.Log(f)
			}
		}
	})
	return c
}

func parseFrame(b []byte) (captured, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		return captured{}, false
	}
	out := captured{src: f.Source, dstMAC: f.Destination}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			return captured{}, false
		}
		out.kind = map[arp.Operation]string{arp.OperationRequest: "arp-request", arp.OperationReply: "arp-reply"}[p.Operation]
		out.sender, out.target, out.sha = p.SenderIP, p.TargetIP, p.SenderHardwareAddr
		return out, out.kind != ""
	case ethernet.EtherTypeIPv6:
		// ICMPv6 right after the fixed header (NDP has no extension header).
		if len(f.Payload) < 40 || f.Payload[6] != 58 {
			return captured{}, false
		}
		plen := int(binary.BigEndian.Uint16(f.Payload[4:6]))
		if len(f.Payload) < 40+plen {
			return captured{}, false
		}
		out.sender, _ = netip.AddrFromSlice(f.Payload[8:24])
		m, err := ndp.ParseMessage(f.Payload[40 : 40+plen])
		if err != nil {
			return captured{}, false
		}
		switch m := m.(type) {
		case *ndp.NeighborSolicitation:
			out.kind, out.target = "ns", m.TargetAddress
		case *ndp.NeighborAdvertisement:
			out.kind, out.target, out.solicited, out.override = "na", m.TargetAddress, m.Solicited, m.Override
			for _, o := range m.Options {
				if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
					out.tlla = l.Addr
				}
			}
		default:
			return captured{}, false
		}
		return out, true
	}
	return captured{}, false
}
