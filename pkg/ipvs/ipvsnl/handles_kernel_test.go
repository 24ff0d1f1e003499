package ipvsnl_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// Writes go through while a dump holds the read handle: a change, which
// holds the syncer's lock, waited on one handle behind the periodic
// resync's dumps of every virtual server and their real servers.
func TestKernelWritesDoNotWaitForReads(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	n, err := ipvsnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.96.9.1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
	rs := ipvs.RealServer{Address: netip.MustParseAddr("10.1.9.1"), Port: 8080, Weight: 1}
	defer func() {
		if err := n.DeleteVirtualServer(ctx, vs.Key()); err != nil {
			t.Error(err)
		}
	}()

	release := sync.OnceFunc(ipvsnl.HoldReads(n)) // a dump in progress
	defer release()
	done := make(chan error, 1)
	go func() {
		if err := n.AddVirtualServer(ctx, vs); err != nil {
			done <- err
			return
		}
		up := vs
		up.Scheduler = "wlc"
		if err := n.UpdateVirtualServer(ctx, up); err != nil {
			done <- err
			return
		}
		done <- n.AddRealServer(ctx, vs.Key(), rs)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a deadlock, not a figure
		t.Fatal("the writes waited for the read handle")
	}
	release()
	got, err := n.ListRealServers(ctx, vs.Key())
	if err != nil || !slices.Equal(got, []ipvs.RealServer{rs}) {
		t.Fatalf("the virtual server has %v (%v), want %v", got, err, rs)
	}
	if cur, err := n.GetVirtualServer(ctx, vs.Key()); err != nil || cur.Scheduler != "wlc" {
		t.Fatalf("the virtual server reads %+v (%v), want scheduler wlc", cur, err)
	}
}
