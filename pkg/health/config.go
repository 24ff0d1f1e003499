// Package health actively probes IPVS real servers from the node agent, so a
// real server that stops answering gets weight 0 until it recovers. It only
// decides health; the agent owns the kernel and applies the weights.
package health

import (
	"fmt"
	"net/netip"
	"time"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// Defaults are the API's (api/v1alpha1/defaults.go), so a HealthCheck built
// in code (or read from an object the API server did not default) behaves
// like one applied with kubectl.
const (
	DefaultInterval = lvsv1.DefaultHealthIntervalSeconds * time.Second
	DefaultTimeout  = lvsv1.DefaultHealthTimeoutSeconds * time.Second
	DefaultRise     = lvsv1.DefaultHealthRise
	DefaultFall     = lvsv1.DefaultHealthFall
)

// Protocols a Config can name; they are the CRD's values so no mapping is
// needed.
const (
	ProtocolTCP  = string(lvsv1.HealthCheckTCP)
	ProtocolHTTP = string(lvsv1.HealthCheckHTTP)
)

// Target is one real server as probed. Group names the VirtualService
// ("namespace/name") so the same address:port behind two VirtualServices
// with different checks is tracked separately.
type Target struct {
	Group   string
	Address netip.Addr
	Port    uint16
}

// AddrPort is where the probe connects.
func (t Target) AddrPort() netip.AddrPort { return netip.AddrPortFrom(t.Address, t.Port) }

// String is for logs.
func (t Target) String() string { return t.Group + "@" + t.AddrPort().String() }

// Config is one VirtualService's health check in kernel-neutral, defaulted
// form. The zero Config means "no health check".
type Config struct {
	// Protocol is ProtocolTCP (connect) or ProtocolHTTP (GET).
	Protocol string
	// Port overrides the real server's port when non-zero.
	Port uint16
	// Path is the HTTP request path, query included.
	Path string
	// Interval is the mean time between probe starts of one target.
	Interval time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	// Rise is how many successes in a row make an unhealthy target healthy.
	Rise int
	// Fall is how many failures in a row make a healthy target unhealthy.
	Fall int
}

// ConfigFrom converts the API type; nil (no health check) gives the zero
// Config, which SetTargets treats as "stop probing this group".
func ConfigFrom(hc *lvsv1.HealthCheck) Config {
	if hc == nil {
		return Config{}
	}
	c := Config{
		Protocol: string(hc.Protocol),
		Path:     hc.Path,
		Interval: time.Duration(hc.IntervalSeconds) * time.Second,
		Timeout:  time.Duration(hc.TimeoutSeconds) * time.Second,
		Rise:     int(hc.Rise),
		Fall:     int(hc.Fall),
	}
	if hc.Port != nil && *hc.Port > 0 && *hc.Port <= 65535 {
		c.Port = uint16(*hc.Port)
	}
	return c.withDefaults()
}

// IsZero reports whether c is the "no health check" Config.
func (c Config) IsZero() bool { return c == Config{} }

// Target returns the probe target of the real server rs in group, applying
// the port override. Use it on both the SetTargets and the Healthy side so
// the keys always match.
func (c Config) Target(group string, rs netip.AddrPort) Target {
	port := rs.Port()
	if c.Port != 0 {
		port = c.Port
	}
	// Unmap so a v4-mapped v6 address and its v4 form are one target.
	return Target{Group: group, Address: rs.Addr().Unmap(), Port: port}
}

// String is for logs.
func (c Config) String() string {
	return fmt.Sprintf("%s port=%d path=%q interval=%s timeout=%s rise=%d fall=%d",
		c.Protocol, c.Port, c.Path, c.Interval, c.Timeout, c.Rise, c.Fall)
}

// withDefaults fills what the API server would have defaulted, and keeps a
// hand-built Config from spinning (zero interval) or never changing state.
func (c Config) withDefaults() Config {
	if c.Protocol == "" {
		c.Protocol = ProtocolTCP
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	// A probe longer than the interval would make the real period
	// max(interval, timeout) anyway; say so in the Config itself.
	if c.Timeout > c.Interval {
		c.Timeout = c.Interval
	}
	if c.Rise < 1 {
		c.Rise = DefaultRise
	}
	if c.Fall < 1 {
		c.Fall = DefaultFall
	}
	return c
}
