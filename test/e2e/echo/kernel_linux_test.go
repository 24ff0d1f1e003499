package echo

import (
	"net"
	"testing"

	lib "github.com/lrh3321/ipset-go"
)

func TestMember(t *testing.T) {
	tcp, udp := uint8(6), uint8(17)
	p80, p53 := uint16(80), uint16(53)
	for _, c := range []struct {
		e    lib.Entry
		want string
	}{
		{lib.Entry{IP: net.ParseIP("198.51.100.209")}, "198.51.100.209"},
		{lib.Entry{IP: net.ParseIP("198.51.100.209").To4(), Protocol: &tcp, Port: &p80}, "198.51.100.209,tcp:80"},
		{lib.Entry{IP: net.ParseIP("2001:db8::9"), Protocol: &udp, Port: &p53}, "2001:db8::9,udp:53"},
		{lib.Entry{IP: net.ParseIP("198.51.100.209"), Protocol: &tcp, Port: &p80, IP2: net.ParseIP("10.0.0.0"), CIDR2: 8}, "198.51.100.209,tcp:80,10.0.0.0/8"},
		{lib.Entry{IP: net.ParseIP("10.1.0.0"), CIDR: 16}, "10.1.0.0/16"},
		{lib.Entry{IP: net.ParseIP("10.1.2.3"), CIDR: 32}, "10.1.2.3"},
	} {
		if got := member(&c.e); got != c.want {
			t.Errorf("member(%+v) = %q, want %q", c.e, got, c.want)
		}
	}
}
