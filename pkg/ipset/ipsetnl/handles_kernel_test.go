package ipsetnl_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	lib "github.com/lrh3321/ipset-go"

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

// The listing parses what the library's List parses, on the real kernel:
// every set type kubelvs uses, both families, and a set of 5,000 members
// whose dump spans many replies.
func TestKernelDumpMatchesTheLibrary(t *testing.T) {
	ctx := context.Background()
	sets := map[ipset.Set][]ipset.Entry{
		{Name: "KUBELVS-T-D-IPPORT", Type: ipset.HashIPPort, Family: ipset.IPv4}: nil,
		{Name: "KUBELVS-T-D-IPPORT6", Type: ipset.HashIPPort, Family: ipset.IPv6}: {
			{IP: netip.MustParseAddr("fd00::1"), Protocol: ipset.ProtoTCP, Port: 80},
			{IP: netip.MustParseAddr("fd00::2"), Protocol: ipset.ProtoSCTP, Port: 9}},
		{Name: "KUBELVS-T-D-IPPORTNET", Type: ipset.HashIPPortNet, Family: ipset.IPv4}: {
			{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 443, Net: netip.MustParsePrefix("192.168.0.0/16")},
			{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoUDP, Port: 53, Net: netip.MustParsePrefix("10.1.2.3/32")}},
		{Name: "KUBELVS-T-D-NET6", Type: ipset.HashNet, Family: ipset.IPv6}: {
			{Net: netip.MustParsePrefix("fd10::/64")}},
		{Name: "KUBELVS-T-D-EMPTY", Type: ipset.HashIPPort, Family: ipset.IPv4}: {},
	}
	var big ipset.Set
	names := []string{}
	for s := range sets {
		names = append(names, s.Name)
		if s.Name == "KUBELVS-T-D-IPPORT" {
			big = s
		}
	}
	for i := range 5000 {
		sets[big] = append(sets[big], ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Protocol: ipset.ProtoTCP, Port: uint16(80 + i%3)})
	}
	h := newHandle(t, names...)
	lh, err := lib.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer lh.Close()
	for s, es := range sets {
		if err := h.EnsureSet(ctx, s); err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			if err := h.Replace(ctx, s, es); err != nil {
				t.Fatal(err)
			}
		}
		typ, got, err := ipsetnl.DumpEntries(s.Name)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		want, err := lh.List(s.Name)
		if err != nil {
			t.Fatalf("%s: the library: %v", s.Name, err)
		}
		if typ != want.TypeName || len(got) != len(es) || !reflect.DeepEqual(got, want.Entries) && len(got)+len(want.Entries) > 0 {
			t.Fatalf("%s: %s with %d members, the library %s with %d (%d written); first: %+v, %+v",
				s.Name, typ, len(got), want.TypeName, len(want.Entries), len(es), slices.Clone(got[:min(1, len(got))]), want.Entries[:min(1, len(want.Entries))])
		}
	}
	if _, _, err := ipsetnl.DumpEntries("KUBELVS-T-D-MISSING"); !errors.Is(err, syscall.ENOENT) && !errors.Is(err, lib.ErrSetNotExist) {
		t.Fatalf("a missing set: %v, want ENOENT", err)
	}
}
