// Package kerneltest holds what the kernel tests of kubelvs share: the
// opt-in switch, network namespaces joined to the root namespace by veth
// pairs, tiny TCP/UDP backends and clients written in Go (forks are slow in
// the guest kernel), a "director" that programs a virtual service the way
// the agent will, and the check that other programs' IPVS services, ipsets
// and iptables rules survive every test.
//
// Kernel tests run only with KUBELVS_KERNEL_TESTS=1, which
// hack/test-kernel.sh sets inside a throw-away guest kernel; they change the
// kernel state of the machine they run on.
package kerneltest

import (
	"os"
	"testing"
)

// EnvVar opts in to kernel tests.
const EnvVar = "KUBELVS_KERNEL_TESTS"

// Enabled reports whether kernel tests may run.
func Enabled() bool { return os.Getenv(EnvVar) == "1" }

// Require skips the test unless kernel tests are enabled, and otherwise
// checks after the test that foreign kernel state is unchanged.
func Require(tb testing.TB) {
	tb.Helper()
	if !Enabled() {
		tb.Skipf("kernel test: needs root and a kernel with IPVS; run hack/test-kernel.sh (sets %s=1 in a guest kernel)", EnvVar)
	}
	if os.Geteuid() != 0 {
		tb.Fatalf("%s=1 but not root", EnvVar)
	}
	want := Foreign(tb)
	tb.Cleanup(func() {
		if got := snapshot(tb); got != want {
			tb.Errorf("foreign kernel state changed:\n--- before\n%s--- after\n%s", want, got)
		}
	})
}
