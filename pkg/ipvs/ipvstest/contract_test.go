package ipvstest_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
)

// TestContract holds the fake to the behaviors the kernel shows in
// ipvsnl's TestKernelContract.
func TestContract(t *testing.T) {
	ipvstest.Contract(t, func(*testing.T) ipvs.Interface { return ipvstest.NewFake() })
}
