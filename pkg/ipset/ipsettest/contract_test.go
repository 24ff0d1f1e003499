package ipsettest_test

import (
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
)

// TestContract holds the fake to the behaviors the kernel shows in
// ipsetnl's TestKernelContract.
func TestContract(t *testing.T) {
	const foreign = "foreign-allow"
	ipsettest.Contract(t, ipsettest.Harness{
		Open: func(*testing.T) ipset.Interface {
			f := ipsettest.NewFake()
			f.AddForeignSet(ipset.Set{Name: foreign, Type: ipset.HashIPPort, Family: ipset.IPv4},
				ipset.Entry{IP: netip.MustParseAddr("10.250.0.1"), Protocol: ipset.ProtoTCP, Port: 80},
				ipset.Entry{IP: netip.MustParseAddr("10.250.0.2"), Protocol: ipset.ProtoUDP, Port: 53})
			return f
		},
		ForeignSet: foreign,
	})
}
