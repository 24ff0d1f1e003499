package layer2

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// etherTypeARP is the EtherType of ARP packets.
const etherTypeARP = 0x0806

// listenARP opens an AF_PACKET socket that reads and writes the ARP frames
// of ifi. arp.Client is not used: it refuses an interface without an IPv4
// address, and the Responder needs none (it answers from the VIP).
func listenARP(ifi *net.Interface) (*packet.Conn, error) {
	return packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
}

// readARP answers ARP requests until the socket closes.
func (r *Responder) readARP() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := r.arp.ReadFrom(buf)
		if err != nil {
			if r.backoff("arp", err) {
				continue
			}
			return
		}
		req, src, ok := parseARP(buf[:n])
		if !ok || bytes.Equal(src, r.mac) || !arpQuestion(req, r.mac) || !r.has(req.TargetIP) {
			continue
		}
		reply, err := arp.NewPacket(arp.OperationReply, r.mac, req.TargetIP, req.SenderHardwareAddr, req.SenderIP)
		if err == nil {
			err = r.writeARP(reply, req.SenderHardwareAddr)
		}
		if err != nil {
			if !r.isStopped() {
				r.log.Error(err, "ARP reply failed", "address", req.TargetIP, "to", req.SenderHardwareAddr.String())
			}
			continue
		}
		r.m.answers.WithLabelValues("ipv4").Inc()
	}
}

// parseARP returns the ARP packet of an Ethernet frame and the frame's
// source, if it holds one.
func parseARP(b []byte) (*arp.Packet, net.HardwareAddr, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil, nil, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil, nil, false
	}
	return &p, f.Source, true
}

// arpQuestion reports whether p asks who has an IPv4 address: a request
// over Ethernet from another station (not the Responder's own frames, which
// the socket also reads), and not an announcement (sender IP = target IP,
// which asks nothing: a gratuitous ARP of another node).
func arpQuestion(p *arp.Packet, mac net.HardwareAddr) bool {
	return p.Operation == arp.OperationRequest &&
		p.HardwareType == 1 && p.ProtocolType == uint16(ethernet.EtherTypeIPv4) &&
		len(p.SenderHardwareAddr) == 6 &&
		!bytes.Equal(p.SenderHardwareAddr, mac) &&
		p.TargetIP.Is4() && p.SenderIP != p.TargetIP
}

// gratuitousARP broadcasts an ARP announcement of a: a request with sender
// and target IP a, sender hardware address ours, target hardware address
// zero (RFC 5227, 3). A Linux neighbor that has an entry for a takes our
// hardware address from it (arp_process: sender IP = target IP makes it
// gratuitous, which overrides the entry even within its locktime); one that
// has none does not create one unless its arp_accept says so.
func (r *Responder) gratuitousARP(a netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, r.mac, a, make(net.HardwareAddr, 6), a)
	if err != nil {
		return err
	}
	return r.writeARP(p, ethernet.Broadcast)
}

func (r *Responder) writeARP(p *arp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := &ethernet.Frame{Destination: dst, Source: r.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.arp.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}
