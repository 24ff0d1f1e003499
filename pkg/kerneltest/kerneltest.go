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
	"strconv"
	"testing"
	"time"
)

// EnvVar opts in to kernel tests.
const EnvVar = "KUBELVS_KERNEL_TESTS"

// Enabled reports whether kernel tests may run.
func Enabled() bool { return os.Getenv(EnvVar) == "1" }

// ScaleEnv multiplies the kernel and e2e tests' waiting limits: the race
// detector in the QEMU guest's software emulation runs everything several
// times slower (hack/test-kernel.sh and hack/e2e.sh set 4 with RACE=1).
const ScaleEnv = "KUBELVS_TIMEOUT_SCALE"

// Timeout is d multiplied by $KUBELVS_TIMEOUT_SCALE (a positive number;
// 1 when unset).
func Timeout(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv(ScaleEnv), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

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
