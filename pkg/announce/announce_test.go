package announce

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func TestOwnerIsTheSameWhateverTheOrder(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	for i := range 200 {
		addr := netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)})
		want := Owner(addr, nodes)
		if !slices.Contains(nodes, want) {
			t.Fatalf("Owner(%s) = %q, not a candidate", addr, want)
		}
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		if got := Owner(addr, rev); got != want {
			t.Fatalf("Owner(%s) depends on the order: %q and %q", addr, want, got)
		}
	}
	if got := Owner(netip.MustParseAddr("10.0.0.1"), nil); got != "" {
		t.Errorf("no candidate: got %q", got)
	}
}

// When a node goes, only the addresses it owned move; the others stay.
func TestOwnerMovesOnlyTheAddressesOfANodeThatGoes(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	owned := map[string]int{}
	moved := 0
	for i := range 1000 {
		addr := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))
		before := Owner(addr, nodes)
		owned[before]++
		after := Owner(addr, []string{"n1", "n2", "n4", "n5"})
		if before != "n3" && after != before {
			t.Fatalf("%s moved from %s to %s although n3 went", addr, before, after)
		}
		if before == "n3" {
			moved++
		}
	}
	// Spread: each node owns a fair share (200 expected of 1000).
	for _, n := range nodes {
		if owned[n] < 120 || owned[n] > 280 {
			t.Errorf("node %s owns %d of 1000 addresses; want about 200", n, owned[n])
		}
	}
	if moved != owned["n3"] {
		t.Errorf("moved %d, n3 owned %d", moved, owned["n3"])
	}
}
