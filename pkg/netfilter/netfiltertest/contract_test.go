package netfiltertest_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
)

// TestContract holds the fake to the behaviors the kernel shows in
// package iptables's TestKernelContract.
func TestContract(t *testing.T) {
	netfiltertest.Contract(t, netfiltertest.Harness{
		Open:        func(*testing.T) netfilter.Interface { return netfiltertest.NewFake(netfilter.Config{}) },
		RemoveRules: func(_ *testing.T, h netfilter.Interface) { h.(*netfiltertest.Fake).FlushRules() },
		HasRules:    func(_ *testing.T, h netfilter.Interface) bool { return h.(*netfiltertest.Fake).HasRules() },
		// The fake keeps no record of what it wrote: any instance on it
		// knows nothing more than another would.
		Another: func(_ *testing.T, h netfilter.Interface) netfilter.Interface { return h },
	})
}
