// Package echo is the backend and client of the end-to-end suite: a server
// that tells who it is over TCP and UDP and whose HTTP health check can be
// failed on purpose, and the client calls that read the answers. The local
// driver runs it in network namespaces; the cluster driver runs it as the
// e2e-echo image. It also reads and changes the node's kernel for the
// lifecycle scenarios (kernel.go): a dump of IPVS and ipsets, and foreign
// objects that kubelvs must leave alone.
package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Server answers on TCP with its name, then echoes every line as
// "name: line"; on UDP with its name; on HTTP /healthz with 200, or 503
// after /fail until /ok.
type Server struct {
	Name    string
	healthy atomic.Bool
	closers []io.Closer
}

// Listen opens the listeners on ip; ports of 0 are skipped. Listen in the
// network namespace the server should live in; Serve can run anywhere.
func Listen(name, ip string, tcp, udp, health int) (*Server, error) {
	s := &Server{Name: name}
	s.healthy.Store(true)
	fail := func(err error) (*Server, error) { s.Close(); return nil, err }
	if tcp > 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(tcp)))
		if err != nil {
			return fail(err)
		}
		s.closers = append(s.closers, ln)
		go s.serveTCP(ln)
	}
	if udp > 0 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, fmt.Sprint(udp)))
		if err != nil {
			return fail(err)
		}
		s.closers = append(s.closers, pc)
		go s.serveUDP(pc)
	}
	if health > 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(health)))
		if err != nil {
			return fail(err)
		}
		srv := &http.Server{Handler: s.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		s.closers = append(s.closers, srv)
		go srv.Serve(ln) //nolint:errcheck // ends with Close
	}
	return s, nil
}

// SetHealthy makes /healthz answer 200 (true) or 503 (false).
func (s *Server) SetHealthy(ok bool) { s.healthy.Store(ok) }

// Close stops every listener.
func (s *Server) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "%s\n", s.Name)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s: %s\n", s.Name, sc.Text())
			}
		}()
	}
}

func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo([]byte(s.Name), from)
	}
}

func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.healthy.Load() {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { s.SetHealthy(false) })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { s.SetHealthy(true) })
	return mux
}

// Dialer opens connections; the local driver's dials a namespace.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Greet opens one TCP connection to addr and returns the greeting (the
// backend's name).
func Greet(d Dialer, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// Conn is an established connection to a backend through a VIP.
type Conn struct {
	c  net.Conn
	rd *bufio.Reader
	// Backend is the name in the greeting.
	Backend string
}

// Hold opens a connection and keeps it.
func Hold(d Dialer, addr string, timeout time.Duration) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cc := &Conn{c: c, rd: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := cc.rd.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	cc.Backend = strings.TrimSpace(line)
	return cc, nil
}

// Ping sends a line and returns the reply, "backend: line".
func (c *Conn) Ping(msg string, timeout time.Duration) (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c.c, "%s\n", msg); err != nil {
		return "", err
	}
	line, err := c.rd.ReadString('\n')
	return strings.TrimSpace(line), err
}

// Close ends the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Ask sends one datagram over pc to addr and returns the answer.
func Ask(pc net.PacketConn, addr *net.UDPAddr, timeout time.Duration) (string, error) {
	if _, err := pc.WriteTo([]byte("who"), addr); err != nil {
		return "", err
	}
	_ = pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
