package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Prober checks one target once. A nil error means healthy. Implementations
// must return when ctx is done; the Manager gives every call a ctx bounded by
// Config.Timeout.
type Prober interface {
	Probe(ctx context.Context, t Target, c Config) error
}

// maxBody bounds what an HTTP probe reads: the status code decides, the
// body is read only so small replies are consumed before the close.
const maxBody = 4 << 10

// NetProber probes over the network from the agent's own network namespace:
// TCP connect or HTTP GET, IPv4 and IPv6.
type NetProber struct {
	dialer    net.Dialer
	transport *http.Transport
}

var _ Prober = (*NetProber)(nil)

// NewProber returns a NetProber. One is enough for all targets: with
// keep-alives off it holds no connections between probes.
func NewProber() *NetProber {
	p := &NetProber{}
	p.transport = &http.Transport{
		// Never through HTTP_PROXY: the agent must reach the real server
		// itself, not ask a proxy whether it can.
		Proxy:       nil,
		DialContext: p.dialer.DialContext,
		// One connection per probe: a kept-alive connection would keep
		// "passing" after the server stopped accepting new ones.
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return p
}

// Probe implements Prober.
func (p *NetProber) Probe(ctx context.Context, t Target, c Config) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	switch c.Protocol {
	case ProtocolTCP, "":
		return p.probeTCP(ctx, t)
	case ProtocolHTTP:
		return p.probeHTTP(ctx, t, c.Path)
	default:
		return fmt.Errorf("health check %s: unsupported protocol %q", t.AddrPort(), c.Protocol)
	}
}

func (p *NetProber) probeTCP(ctx context.Context, t Target) error {
	conn, err := p.dialer.DialContext(ctx, "tcp", t.AddrPort().String())
	if err != nil {
		return fmt.Errorf("tcp health check %s: %w", t.AddrPort(), err)
	}
	// Reset instead of FIN so thousands of probes a minute leave no
	// TIME_WAIT sockets on the node (HAProxy does the same for checks).
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return conn.Close()
}

func (p *NetProber) probeHTTP(ctx context.Context, t Target, path string) error {
	host := t.AddrPort().String()
	// A link-local zone must be escaped in a URL ("%" starts an escape).
	host = strings.Replace(host, "%", "%25", 1)
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return fmt.Errorf("http health check %s%s: %w", host, path, err)
	}
	req.Header.Set("User-Agent", "kubelvs-health-check")
	client := http.Client{
		Transport: p.transport,
		// A redirect is the server answering; following it would probe
		// some other server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http health check: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http health check %s%s: %w", host, path, &StatusError{Code: resp.StatusCode})
	}
	return nil
}

// StatusError is an HTTP answer outside 2xx/3xx, kept as a type so callers
// can tell "answered badly" from "did not answer".
type StatusError struct{ Code int }

// Error implements error.
func (e *StatusError) Error() string { return fmt.Sprintf("status %d", e.Code) }

// IsTimeout reports whether err is a probe that ran out of time, as opposed
// to one that was refused or answered badly.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
