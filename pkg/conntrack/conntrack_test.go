package conntrack

import (
	"net/netip"
	"slices"
	"testing"
)

func flow(proto uint8, client, vip, backend string) Flow {
	c := netip.MustParseAddrPort(client)
	return Flow{Protocol: proto, OrigSrc: c, OrigDst: netip.MustParseAddrPort(vip), ReplySrc: netip.MustParseAddrPort(backend), ReplyDst: c}
}

func target(proto uint8, vip, backend string) Target {
	return Target{Protocol: proto, VIP: netip.MustParseAddrPort(vip), Backend: netip.MustParseAddrPort(backend)}
}

// A flow matches a target when its protocol, original destination and
// reply source are the target's; a backend port of 0 is any port, and
// IPv4-mapped target addresses match the IPv4 flows.
func TestMatcher(t *testing.T) {
	t.Parallel()
	m := NewMatcher([]Target{
		target(UDP, "10.96.0.10:53", "10.99.0.2:5353"),
		target(TCP, "[fd96::10]:80", "[fd99::2]:0"),
		target(UDP, "[::ffff:10.96.0.11]:53", "[::ffff:10.99.0.3]:53"),
	})
	for _, tc := range []struct {
		f    Flow
		want bool
	}{
		{flow(UDP, "10.0.0.5:4000", "10.96.0.10:53", "10.99.0.2:5353"), true},
		{flow(UDP, "10.0.0.5:4000", "10.96.0.10:53", "10.99.0.2:5354"), false}, // other backend port
		{flow(UDP, "10.0.0.5:4000", "10.96.0.10:53", "10.99.0.4:5353"), false}, // other backend
		{flow(TCP, "10.0.0.5:4000", "10.96.0.10:53", "10.99.0.2:5353"), false}, // other protocol
		{flow(UDP, "10.0.0.5:4000", "10.96.0.10:54", "10.99.0.2:5353"), false}, // other VIP port
		{flow(TCP, "[fd00::5]:4000", "[fd96::10]:80", "[fd99::2]:8080"), true}, // any backend port
		{flow(TCP, "[fd00::5]:4000", "[fd96::10]:80", "[fd99::3]:8080"), false},
		{flow(UDP, "10.0.0.5:4000", "10.96.0.11:53", "10.99.0.3:53"), true}, // mapped target
	} {
		if got := m.Match(tc.f); got != tc.want {
			t.Errorf("Match(%s) = %t, want %t", tc.f, got, tc.want)
		}
	}
	ts := m.Targets()
	if len(ts) != 3 || !slices.Contains(ts, target(UDP, "10.96.0.11:53", "10.99.0.3:53")) {
		t.Errorf("Targets() = %v, want the three, unmapped", ts)
	}
}

// Flows sort by protocol, original destination, original source, then
// the reply tuple.
func TestSortFlows(t *testing.T) {
	t.Parallel()
	fs := []Flow{
		flow(UDP, "10.0.0.2:1", "10.96.0.1:53", "10.99.0.2:53"),
		flow(TCP, "10.0.0.9:1", "10.96.0.2:80", "10.99.0.2:80"),
		flow(UDP, "10.0.0.1:1", "10.96.0.1:53", "10.99.0.3:53"),
		flow(TCP, "10.0.0.1:1", "10.96.0.2:80", "10.99.0.2:80"),
		flow(UDP, "10.0.0.1:1", "10.96.0.1:53", "10.99.0.2:53"),
	}
	SortFlows(fs)
	want := []string{
		"tcp 10.0.0.1:1->10.96.0.2:80 reply 10.99.0.2:80->10.0.0.1:1",
		"tcp 10.0.0.9:1->10.96.0.2:80 reply 10.99.0.2:80->10.0.0.9:1",
		"udp 10.0.0.1:1->10.96.0.1:53 reply 10.99.0.2:53->10.0.0.1:1",
		"udp 10.0.0.1:1->10.96.0.1:53 reply 10.99.0.3:53->10.0.0.1:1",
		"udp 10.0.0.2:1->10.96.0.1:53 reply 10.99.0.2:53->10.0.0.2:1",
	}
	for i, f := range fs {
		if f.String() != want[i] {
			t.Errorf("flow %d = %s, want %s", i, f, want[i])
		}
	}
}
