package ipsetnl_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
)

// A member write goes through while a listing holds the listing handle: the
// periodic resync's listings of thousands of members took seconds on a busy
// CPU, and every write waited behind them on one handle.
func TestKernelWritesDoNotWaitForListings(t *testing.T) {
	ctx := context.Background()
	h := newHandle(t, "KUBELVS-T-HANDLES")
	s := ipset.Set{Name: "KUBELVS-T-HANDLES", Type: ipset.HashIPPort, Family: ipset.IPv4}
	if err := h.EnsureSet(ctx, s); err != nil {
		t.Fatal(err)
	}
	e := ipset.Entry{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 80}

	release := sync.OnceFunc(ipsetnl.HoldListing(h)) // a listing in progress
	defer release()
	done := make(chan error, 1)
	go func() { done <- h.AddEntry(ctx, s.Name, e) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a deadlock, not a figure
		t.Fatal("AddEntry waited for the listing handle")
	}
	release()
	got, err := h.ListEntries(ctx, s.Name)
	if err != nil || !slices.Equal(got, []ipset.Entry{e}) {
		t.Fatalf("the set holds %v (%v), want %v", got, err, e)
	}
}
