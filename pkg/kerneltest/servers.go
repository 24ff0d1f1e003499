package kerneltest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Serve starts, inside the namespace, a TCP server that writes name and
// closes, and a UDP server that answers every datagram with name, both on
// addr. They stop when the test ends.
func (n *NS) Serve(tb testing.TB, name string, addr netip.AddrPort) {
	tb.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		if ln, err = net.Listen("tcp", addr.String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", addr.String())
		return err
	})
	if err != nil {
		tb.Fatalf("serve %s in %s: %v", addr, n.Name, err)
	}
	tb.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
}

// TCPGet connects from inside the namespace to addr and returns what the
// server wrote. A drop shows up as a timeout error.
func (n *NS) TCPGet(addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

// UDPClient is a UDP socket bound inside a namespace to a fixed source port,
// so successive requests share one conntrack/IPVS flow.
type UDPClient struct {
	c *net.UDPConn
}

// UDPClient binds a client socket to port (0: any) inside the namespace.
func (n *NS) UDPClient(tb testing.TB, v6 bool, port uint16) *UDPClient {
	tb.Helper()
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.IP(v6), port)))
		return err
	})
	if err != nil {
		tb.Fatalf("udp client in %s: %v", n.Name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return &UDPClient{c: c}
}

// Ask sends one datagram to addr and returns the answer, or an error if none
// arrives within timeout.
func (u *UDPClient) Ask(addr netip.AddrPort, timeout time.Duration) (string, error) {
	if _, err := u.c.WriteToUDPAddrPort([]byte("ping"), addr); err != nil {
		return "", err
	}
	_ = u.c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	n, from, err := u.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", err
	}
	if from.Addr().Unmap() != addr.Addr() || from.Port() != addr.Port() {
		return "", fmt.Errorf("answer from %s, not %s", from, addr)
	}
	return string(buf[:n]), nil
}

// IsTimeout reports whether err is a network timeout (a dropped packet).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || err != nil && strings.Contains(err.Error(), "i/o timeout")
}
