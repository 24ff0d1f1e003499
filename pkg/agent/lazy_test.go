package agent

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

// No speaker runs until there is a peer; what was announced before is
// handed to it when it starts; after Stop nothing restarts it.
func TestLazyBGP(t *testing.T) {
	ctx := context.Background()
	var started []*fakeBGP
	l := &LazyBGP{New: func([]announce.Peer) (announce.BGP, error) {
		f := &fakeBGP{}
		started = append(started, f)
		return f, nil
	}}
	vip := []netip.Addr{netip.MustParseAddr("10.96.0.10")}
	if err := l.Announce(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPeers(ctx, nil); err != nil || len(started) != 0 {
		t.Fatalf("started with no peer: %v %d", err, len(started))
	}
	peer := []announce.Peer{{Name: "tor", Address: netip.MustParseAddr("192.0.2.254"), ASN: 64500, LocalASN: 64501}}
	if err := l.SetPeers(ctx, peer); err != nil || len(started) != 1 {
		t.Fatalf("SetPeers: %v, %d speakers", err, len(started))
	}
	if got := fmt.Sprint(started[0].addrs, len(started[0].peers)); got != "[10.96.0.10] 1" {
		t.Errorf("the speaker got %s", got)
	}
	if err := l.Stop(ctx); err != nil || started[0].addrs != nil {
		t.Fatalf("Stop: %v, still announcing %v", err, started[0].addrs)
	}
	if err := l.SetPeers(ctx, peer); err != nil || len(started) != 1 {
		t.Fatalf("restarted after Stop: %v %d", err, len(started))
	}
}
