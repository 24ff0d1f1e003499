//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// keepsTraffic serves a VirtualService of two backends on vip and runs op
// while a client holds a connection through it and opens new ones in a
// loop. It fails t if a new connection fails, the held one stops
// answering, or op changed the VIP's kernel state.
func keepsTraffic(t *testing.T, c Cluster, name string, vip netip.Addr, op func()) {
	t.Helper()
	bs := c.Backends(t, name, 2)
	c.SetEndpoints(t, name, bs)
	create(t, c, webVS(c, name, name, vip))
	cl := c.Client(t)
	http := netip.AddrPortFrom(vip, 80)
	serving(t, cl, http, bs)
	held, err := cl.Hold(http)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before := c.KernelDump(t, vip)

	opened, failed := 0, []string(nil)
	stop, done := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		for {
			if _, err := cl.Greet(http); err != nil {
				failed = append(failed, fmt.Sprintf("  at %.1fs: %v", time.Since(start).Seconds(), err))
			}
			opened++
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	func() {
		// Also when op fails t: no connection outlives the test.
		defer func() { close(stop); <-done }()
		op()
	}()
	t.Logf("%d new connections through %s during the operation, %d failed", opened, http, len(failed))
	if len(failed) > 0 {
		t.Errorf("new connections failed during the operation:\n%s", strings.Join(failed, "\n"))
	}
	if r, err := held.Ping("after"); err != nil || r != held.Backend()+": after" {
		t.Fatalf("the connection established before the operation: %q %v", r, err)
	}
	if after := c.KernelDump(t, vip); after != before {
		t.Fatalf("the operation changed the kernel:\n--- before\n%s--- after\n%s", before, after)
	}
	serving(t, cl, http, bs)
}
