//go:build linux

package multinode

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// answer is an ARP reply or a neighbor advertisement for a VIP, seen on
// the LAN client's interface.
type answer struct {
	at  time.Time
	vip netip.Addr
	mac string
}

// prober asks for VIPs from the LAN client every 50 ms (an ARP request for
// the IPv4 one, a neighbor solicitation for the IPv6 one) and records every
// answer it sees on the client's eth0, from any node: a capture of what
// answers, whoever asked.
type prober struct {
	mu      sync.Mutex
	answers []answer
}

func (p *prober) since(vip netip.Addr, from time.Time) []answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []answer
	for _, a := range p.answers {
		if a.vip == vip && !a.at.Before(from) {
			out = append(out, a)
		}
	}
	return out
}

func macs(as []answer) []string {
	var out []string
	for _, a := range as {
		if !slices.Contains(out, a.mac) {
			out = append(out, a.mac)
		}
	}
	slices.Sort(out)
	return out
}

func startProber(t *testing.T, ns *Netns, vip4, vip6 netip.Addr) *prober {
	t.Helper()
	var capConn, arpConn *packet.Conn
	var nd *ndp.Conn
	var ifi *net.Interface
	if err := ns.Do(func() (err error) {
		if ifi, err = net.InterfaceByName("eth0"); err != nil {
			return err
		}
		if capConn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil); err != nil {
			return err
		}
		if arpConn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil); err != nil {
			return err
		}
		nd, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	}); err != nil {
		t.Fatalf("prober in %s: %v", ns.Name, err)
	}
	p := &prober{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the capture
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, _, err := capConn.ReadFrom(buf)
			if err != nil {
				return
			}
			var f ethernet.Frame
			if f.UnmarshalBinary(buf[:n]) != nil || f.Source.String() == ifi.HardwareAddr.String() {
				continue
			}
			var vip netip.Addr
			switch f.EtherType {
			case ethernet.EtherTypeARP:
				var a arp.Packet
				if a.UnmarshalBinary(f.Payload) == nil && a.Operation == arp.OperationReply && a.SenderIP == vip4 {
					vip = vip4
				}
			case ethernet.EtherTypeIPv6:
				if len(f.Payload) > 40 && f.Payload[6] == 58 {
					if m, err := ndp.ParseMessage(f.Payload[40:]); err == nil {
						if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == vip6 {
							vip = vip6
						}
					}
				}
			}
			if vip.IsValid() {
				p.mu.Lock()
				p.answers = append(p.answers, answer{at: time.Now(), vip: vip, mac: f.Source.String()})
				p.mu.Unlock()
			}
		}
	}()
	go func() { // the questions
		defer wg.Done()
		src4 := L2CIP4
		req, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, src4, ethernet.Broadcast, vip4)
		if err != nil {
			panic(err)
		}
		pb, _ := req.MarshalBinary()
		frame, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: ifi.HardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
		sn, err := ndp.SolicitedNodeMulticast(vip6)
		if err != nil {
			panic(err)
		}
		ns := &ndp.NeighborSolicitation{TargetAddress: vip6, Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = arpConn.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast})
			_ = nd.WriteTo(ns, nil, sn)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		_ = capConn.Close()
		_ = arpConn.Close()
		_ = nd.Close()
		wg.Wait()
	})
	return p
}

// neighMAC is the LAN client's neighbor entry for a VIP.
func neighMAC(c *Cluster, vip netip.Addr) (string, error) {
	link, err := c.L2C.Netlink().LinkByName("eth0")
	if err != nil {
		return "", err
	}
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := c.L2C.Netlink().NeighList(link.Attrs().Index, fam)
	if err != nil {
		return "", err
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == vip && len(n.HardwareAddr) > 0 {
			return n.HardwareAddr.String(), nil
		}
	}
	return "", fmt.Errorf("no neighbor entry for %s", vip)
}

// TestMultiNodeLayer2: three agents, a pool on the LAN's own subnet that
// asks for layer 2, one VirtualService with an IPv4 and an IPv6 VIP. The
// LAN client reaches both VIPs; its neighbor entries and a capture show one
// node answers ARP and NDP for them — the one every agent chose
// (announce.Owner over the live nodes). That node's agent is killed
// (SIGKILL) and its link cut: another node takes both VIPs over, the
// failover time (last answer from the old node to first from the new) is
// measured, and the client reaches the VIPs through the new node.
func TestMultiNodeLayer2(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	start := time.Now()
	c := New(t, Options{})
	c.StartAPI()
	pool := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: lvsv1.AddressPoolSpec{
		CIDRs: []lvsv1.PoolCIDR{"10.10.0.200/29", "fd00:10::200/125"},
		NamespaceSelector: &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: corev1.LabelMetadataName, Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{Namespace}}}},
		Announce: &lvsv1.Announcement{Layer2: &lvsv1.Layer2Announcement{}},
	}}
	if err := c.API.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		n.StartAgent()
	}
	for _, n := range c.Nodes {
		n.AgentReady(60 * time.Second)
	}
	t.Logf("API server and agents ready after %s", time.Since(start).Round(time.Millisecond))

	// Both VIPs of one owner, so that one failure moves both.
	var names []string
	for _, n := range c.Nodes {
		names = append(names, n.Name)
	}
	vip4 := netip.MustParseAddr("10.10.0.200")
	owner := c.Node(announce.Owner(vip4, names))
	var vip6 netip.Addr
	for i := range 8 {
		v := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 14: 2, 15: byte(i)})
		if announce.Owner(v, names) == owner.Name {
			vip6 = v
			break
		}
	}
	if !vip6.IsValid() {
		t.Fatalf("no address of fd00:10::200/125 goes to %s", owner.Name)
	}
	macOf := map[string]*Node{}
	for _, n := range c.Nodes {
		l, err := n.Netlink().LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		macOf[l.Attrs().HardwareAddr.String()] = n
	}
	nodeOf := func(mac string) string {
		if n := macOf[mac]; n != nil {
			return n.Name
		}
		return mac
	}

	c.SetEndpoints("lan", false, c.Nodes, nil)
	c.SetEndpoints("lan", true, c.Nodes, nil)
	created := time.Now()
	if err := c.API.Create(ctx, echoVS("lan", lvsv1.TrafficPolicyCluster, vip4, vip6)); err != nil {
		t.Fatal(err)
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		WaitFor(t, 30*time.Second, "l2c reaches "+vip.String(), func() error {
			_, err := c.L2C.Get(netip.AddrPortFrom(vip, 80), time.Second)
			return err
		})
		t.Logf("layer 2: l2c reaches %s %s after the VirtualService was created", vip, time.Since(created).Round(time.Millisecond))
		// Agents that started moments ago may not see each other's
		// heartbeats yet, and choose among fewer nodes: they agree once
		// they do, and the owner's gratuitous announcement moves the
		// client's entry.
		WaitFor(t, 20*time.Second, "l2c's neighbor entry for "+vip.String()+" is "+owner.Name+"'s, the node every agent chose", func() error {
			mac, err := neighMAC(c, vip)
			if err != nil {
				return err
			}
			if nodeOf(mac) != owner.Name {
				return fmt.Errorf("it is %s (%s)", mac, nodeOf(mac))
			}
			return nil
		})
		t.Logf("layer 2: l2c's entry for %s is %s's %s after the VirtualService was created", vip, owner.Name, time.Since(created).Round(time.Millisecond))
	}

	// A capture while the client keeps asking: only the owner answers.
	p := startProber(t, c.L2C, vip4, vip6)
	from := time.Now()
	time.Sleep(2 * time.Second)
	for _, vip := range []netip.Addr{vip4, vip6} {
		got := p.since(vip, from)
		if m := macs(got); len(m) != 1 || nodeOf(m[0]) != owner.Name {
			t.Fatalf("answers for %s in 2 s came from %v, want %s alone", vip, m, owner.Name)
		}
		t.Logf("capture: %d answers for %s in 2 s, all from %s", len(got), vip, owner.Name)
	}
	WaitFor(t, 10*time.Second, "the NodeReports say who answers", func() error {
		got, err := announcedIn(ctx, c, vip4, vip6)
		if err != nil {
			return err
		}
		for _, n := range c.Nodes {
			want := 0
			if n.Name == owner.Name {
				want = 2
			}
			if got[n.Name] != want {
				return fmt.Errorf("addresses announced per node: %v, want 2 by %s alone", got, owner.Name)
			}
		}
		return nil
	})

	// The owner fails: its agent is killed and its link cut.
	var rest []string
	for _, n := range names {
		if n != owner.Name {
			rest = append(rest, n)
		}
	}
	heir := announce.Owner(vip4, rest)
	killed := time.Now()
	owner.KillAgent()
	if err := owner.SetLink("eth0", false); err != nil {
		t.Fatal(err)
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		WaitFor(t, 30*time.Second, "another node answers for "+vip.String(), func() error {
			if m := macs(p.since(vip, killed)); len(m) == 0 || nodeOf(m[0]) == owner.Name {
				return fmt.Errorf("answers since the failure from %v", m)
			}
			return nil
		})
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		var last, first time.Time
		for _, a := range p.since(vip, from) {
			switch {
			case nodeOf(a.mac) == owner.Name:
				last = a.at
			case first.IsZero():
				first = a.at
			}
		}
		after := p.since(vip, first)
		if m := macs(after); len(m) != 1 || nodeOf(m[0]) != heir {
			t.Errorf("after the failover %s was answered by %v, want %s alone", vip, m, heir)
		}
		t.Logf("layer-2 failover of %s: last answer from %s %s after the kill, first from %s %s after it: %s without an answer",
			vip, owner.Name, last.Sub(killed).Round(time.Millisecond), heir, first.Sub(killed).Round(time.Millisecond),
			first.Sub(last).Round(time.Millisecond))
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		WaitFor(t, 20*time.Second, "l2c reaches "+vip.String()+" through "+heir, func() error {
			if _, err := c.L2C.Get(netip.AddrPortFrom(vip, 80), time.Second); err != nil {
				return err
			}
			mac, err := neighMAC(c, vip)
			if err != nil {
				return err
			}
			if nodeOf(mac) != heir {
				return fmt.Errorf("l2c's entry for %s is %s", vip, nodeOf(mac))
			}
			return nil
		})
	}
}
