package conntracknl

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// TestKernelDeleteErrors: deleteFlows sends its requests without
// NLM_F_ACK and learns of failures only from the error replies. Flows that
// are not in the table (ENOENT) count as deleted; requests the kernel
// refuses (no original source address: EINVAL) are reported with their
// flow and not counted. With a receive buffer too small for the error
// replies of one batch, the replies overflow (ENOBUFS) and deleteFlows
// must redo the batch in smaller sends and still get both right.
// (An internal test: pkg/kerneltest imports this package.)
func TestKernelDeleteErrors(t *testing.T) {
	if os.Getenv("KUBELVS_KERNEL_TESTS") != "1" || os.Geteuid() != 0 {
		t.Skip("kernel test: needs root and KUBELVS_KERNEL_TESTS=1 (hack/run-in-vm.sh)")
	}
	const n, badEvery = 1500, 97
	var flows []conntrack.Flow
	var bad []conntrack.Flow
	for i := 0; i < n; i++ {
		f := conntrack.Flow{
			Protocol: conntrack.UDP,
			OrigSrc:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)}), 40000),
			OrigDst:  netip.AddrPortFrom(netip.MustParseAddr("10.96.201.1"), uint16(1000+i)),
		}
		if i%2 == 1 {
			f.OrigSrc = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}), 40000)
			f.OrigDst = netip.AddrPortFrom(netip.MustParseAddr("fd00::96:201:1"), uint16(1000+i))
		}
		if i%badEvery == 0 {
			f.OrigSrc = netip.AddrPort{}
			bad = append(bad, f)
		}
		flows = append(flows, f)
	}
	for _, rcvbuf := range []int{0, 4096} {
		t.Run(fmt.Sprintf("rcvbuf=%d", rcvbuf), func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if rcvbuf != 0 {
				// Keep c.batch as sized for the default buffer.
				if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("batch %d", c.batch)
			got, err := c.deleteFlows(flows)
			if got != n-len(bad) {
				t.Errorf("deleted %d, want %d (%d flows, %d refused)", got, n-len(bad), n, len(bad))
			}
			if err == nil {
				t.Fatalf("no error, want one per refused flow")
			}
			msg := err.Error()
			if c := strings.Count(msg, "\n") + 1; c != len(bad) {
				t.Errorf("%d errors, want %d:\n%s", c, len(bad), msg)
			}
			for _, f := range bad {
				if !strings.Contains(msg, "delete "+f.String()+": ") {
					t.Errorf("no error for refused flow %s", f)
				}
			}
			if rcvbuf != 0 && c.redone == 0 {
				t.Errorf("the error replies did not overflow %d bytes: the test does not test the overflow", rcvbuf)
			}
			t.Logf("%d sends redone after an overflow", c.redone)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("error %v, want EINVAL", err)
			}
		})
	}
}
