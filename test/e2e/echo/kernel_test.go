package echo

import (
	"reflect"
	"testing"
)

// A dump before an uninstall: kubelvs's objects, the foreign ones, and
// another program's IPVS service that kubelvs does not record.
var dumpBefore = []string{
	"iptables-legacy: -A INPUT -j E2E-FOREIGN",
	"iptables-legacy: -A INPUT -j KUBELVS-INPUT",
	"iptables-legacy: -A E2E-FOREIGN -s 192.0.2.0/24 -j RETURN",
	"iptables-legacy: :E2E-FOREIGN - [0:0]",
	"iptables-legacy: :INPUT ACCEPT [12:3400]",
	"ipset KUBELVS-VIRTUAL-SERVERS hash:ip,port family=2",
	"ipset KUBELVS-VIRTUAL-SERVERS member 198.51.100.209,tcp:80",
	"ipset KUBELVS-VIRTUAL-SERVERS member 198.51.100.209,udp:53",
	"ipset KUBELVS-VIRTUAL-SERVERS-V6 hash:ip,port family=10",
	"ipset KUBELVS-VIRTUAL-SERVERS-V6 member 2001:db8::9,tcp:443",
	"ipset e2e-foreign hash:ip,port family=2",
	"ipset e2e-foreign member 203.0.113.80,tcp:80",
	"ipvs tcp 10.96.0.1:443 rr flags=0x0 timeout=0",
	"ipvs tcp 198.51.100.209:80 -> 10.244.0.7:8080 masq w=1",
	"ipvs tcp 198.51.100.209:80 rr flags=0x0 timeout=0",
	"ipvs tcp 203.0.113.80:80 -> 203.0.113.81:8080 masq w=3",
	"ipvs tcp 203.0.113.80:80 wlc flags=0x0 timeout=0",
	"ipvs tcp [2001:db8::9]:443 rr flags=0x0 timeout=0",
	"ipvs udp 198.51.100.209:53 rr flags=0x0 timeout=0",
	"link kubelvs0",
	"e2e-echo: a stray log line",
}

func TestOwned(t *testing.T) {
	want := map[string]bool{"tcp 198.51.100.209:80": true, "udp 198.51.100.209:53": true, "tcp [2001:db8::9]:443": true}
	if got := Owned(dumpBefore); !reflect.DeepEqual(got, want) {
		t.Fatalf("Owned = %v, want %v", got, want)
	}
}

func TestMemberKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.209,tcp:80": "tcp 198.51.100.209:80",
		"2001:db8::9,udp:53":    "udp [2001:db8::9]:53",
		"198.51.100.209":        "",
		"bad,tcp:80":            "",
		"198.51.100.209,tcp:x":  "",
		"198.51.100.209,tcp":    "",
	} {
		got, ok := memberKey(in)
		if got != want || ok != (want != "") {
			t.Errorf("memberKey(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestLeftovers(t *testing.T) {
	owned := Owned(dumpBefore)
	want := []string{
		"iptables-legacy: -A INPUT -j KUBELVS-INPUT",
		"ipset KUBELVS-VIRTUAL-SERVERS hash:ip,port family=2",
		"ipset KUBELVS-VIRTUAL-SERVERS member 198.51.100.209,tcp:80",
		"ipset KUBELVS-VIRTUAL-SERVERS member 198.51.100.209,udp:53",
		"ipset KUBELVS-VIRTUAL-SERVERS-V6 hash:ip,port family=10",
		"ipset KUBELVS-VIRTUAL-SERVERS-V6 member 2001:db8::9,tcp:443",
		"ipvs tcp 198.51.100.209:80 -> 10.244.0.7:8080 masq w=1",
		"ipvs tcp 198.51.100.209:80 rr flags=0x0 timeout=0",
		"ipvs tcp [2001:db8::9]:443 rr flags=0x0 timeout=0",
		"ipvs udp 198.51.100.209:53 rr flags=0x0 timeout=0",
		"link kubelvs0",
	}
	if got := Leftovers(owned, dumpBefore); !reflect.DeepEqual(got, want) {
		t.Fatalf("Leftovers =\n%q\nwant\n%q", got, want)
	}
	// After a clean uninstall: the record is gone with everything else; the
	// keys taken before still find a virtual service left behind.
	after := []string{"ipvs tcp 10.96.0.1:443 rr flags=0x0 timeout=0", "ipvs udp 198.51.100.209:53 rr flags=0x0 timeout=0"}
	if got := Leftovers(owned, after); !reflect.DeepEqual(got, after[1:]) {
		t.Fatalf("Leftovers after = %q, want %q", got, after[1:])
	}
}

func TestForeign(t *testing.T) {
	want := []string{
		"iptables-legacy: -A INPUT -j E2E-FOREIGN",
		"iptables-legacy: -A E2E-FOREIGN -s 192.0.2.0/24 -j RETURN",
		"iptables-legacy: :E2E-FOREIGN - [-]",
		"ipset e2e-foreign hash:ip,port family=2",
		"ipset e2e-foreign member 203.0.113.80,tcp:80",
		"ipvs tcp 203.0.113.80:80 -> 203.0.113.81:8080 masq w=3",
		"ipvs tcp 203.0.113.80:80 wlc flags=0x0 timeout=0",
	}
	if got := Foreign(dumpBefore); !reflect.DeepEqual(got, want) {
		t.Fatalf("Foreign =\n%q\nwant\n%q", got, want)
	}
}

func TestKernelUnknownAction(t *testing.T) {
	if _, err := Kernel("flush"); err == nil {
		t.Fatal("Kernel(flush) did not fail")
	}
}
