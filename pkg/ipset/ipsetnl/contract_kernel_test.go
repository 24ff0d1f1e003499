package ipsetnl_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelContract runs on the kernel the contract that ipsettest's
// TestContract runs on the fake; kerneltest.Require makes the foreign set.
func TestKernelContract(t *testing.T) {
	kerneltest.Require(t)
	ipsettest.Contract(t, ipsettest.Harness{
		Open: func(t *testing.T) ipset.Interface {
			h, err := ipsetnl.New()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			return h
		},
		ForeignSet: kerneltest.ForeignSet,
	})
}
