package health

import (
	"net/netip"
	"testing"
	"time"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

func TestConfigFrom(t *testing.T) {
	t.Parallel()
	port := int32(8081)
	tests := []struct {
		name string
		in   *lvsv1.HealthCheck
		want Config
	}{
		{"nil is no check", nil, Config{}},
		{"empty gets the CRD defaults", &lvsv1.HealthCheck{},
			Config{Protocol: ProtocolTCP, Interval: DefaultInterval, Timeout: DefaultTimeout, Rise: DefaultRise, Fall: DefaultFall}},
		{"every field", &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Port: &port, Path: "/healthz?full=1", IntervalSeconds: 10, TimeoutSeconds: 3, Rise: 1, Fall: 5},
			Config{Protocol: ProtocolHTTP, Port: 8081, Path: "/healthz?full=1", Interval: 10 * time.Second, Timeout: 3 * time.Second, Rise: 1, Fall: 5}},
		{"timeout capped at the interval", &lvsv1.HealthCheck{IntervalSeconds: 2, TimeoutSeconds: 9},
			Config{Protocol: ProtocolTCP, Interval: 2 * time.Second, Timeout: 2 * time.Second, Rise: DefaultRise, Fall: DefaultFall}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := ConfigFrom(tt.in)
			if got != tt.want {
				t.Errorf("ConfigFrom = %v, want %v", got, tt.want)
			}
			if got.IsZero() != (tt.in == nil) {
				t.Errorf("IsZero = %v for %v", got.IsZero(), tt.in)
			}
		})
	}
}

func TestConfigTarget(t *testing.T) {
	t.Parallel()
	rs := netip.MustParseAddrPort("[::ffff:10.0.0.7]:80")
	tests := []struct {
		name     string
		port     uint16
		wantPort uint16
	}{
		{"real server port by default", 0, rs.Port()},
		{"override", 8081, 8081},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Config{Port: tt.port}.Target("ns/web", rs)
			want := Target{Group: "ns/web", Address: rs.Addr().Unmap(), Port: tt.wantPort}
			if got != want {
				t.Errorf("Target = %v, want %v", got, want)
			}
			if !got.Address.Is4() {
				t.Errorf("address %s not unmapped", got.Address)
			}
		})
	}
}
