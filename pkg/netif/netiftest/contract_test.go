package netiftest_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
)

// TestContract holds the fake to the behaviors the kernel shows in
// netifnl's TestKernelContract.
func TestContract(t *testing.T) {
	netiftest.Contract(t, netiftest.Harness{
		Open: func(*testing.T) netif.Interface { return netiftest.NewFake() },
		Foreign: func(t *testing.T, h netif.Interface) func() {
			f := h.(*netiftest.Fake)
			f.AddForeignDevice("bridge")
			return func() {
				if kind := f.RemoveForeignDevice(); kind != "bridge" {
					t.Errorf("the foreign %s is %q, want the bridge it was", netif.DeviceName, kind)
				}
			}
		},
		// The fake keeps no record of what it wrote: any handle on it
		// knows nothing more than another would.
		Another: func(_ *testing.T, h netif.Interface) netif.Interface { return h },
	})
}
