package conntracktest_test

import (
	"testing"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracktest"
)

// TestContract holds the fake to the behaviors the kernel shows in
// conntracknl's TestKernelContract.
func TestContract(t *testing.T) {
	conntracktest.Contract(t, conntracktest.Harness{
		Open: func(*testing.T) conntrack.Interface { return conntracktest.NewFake() },
		AddFlows: func(_ *testing.T, h conntrack.Interface, flows ...conntrack.Flow) {
			h.(*conntracktest.Fake).Add(flows...)
		},
	})
}
