package ipvsnl_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelContract runs on the kernel the contract that ipvstest's
// TestContract runs on the fake.
func TestKernelContract(t *testing.T) {
	kerneltest.Require(t)
	ipvstest.Contract(t, func(t *testing.T) ipvs.Interface {
		h, err := ipvsnl.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	})
}
