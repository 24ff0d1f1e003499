package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

// A full sync in which one VirtualService's inputs fail to load keeps that
// VirtualService's kernel objects: it must not remove them as unwanted.
func TestFullSyncKeepsWhatFailedToBuild(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	raw, vips := k.IPVS, k.VIPs
	s, err := k.syncer(ctx, clocktesting.NewFakeClock(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	vs := func(name, vip string) lvsv1.VirtualService {
		return lvsv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: 1},
			Spec: lvsv1.VirtualServiceSpec{
				Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip)},
				Ports:     []lvsv1.VirtualServicePort{{Port: 80, Protocol: lvsv1.ProtocolTCP}},
				Backends:  lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: "192.0.2.10"}}},
			},
		}
	}
	items := []lvsv1.VirtualService{vs("a", "10.0.0.1"), vs("b", "10.0.0.2")}
	admit, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"10.0.0.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{}}})
	if err != nil {
		t.Fatal(err)
	}
	build := func(v *lvsv1.VirtualService) (desired.Group, error) {
		return desired.Build(desired.Input{VS: v, Node: desired.Node{Name: "n"}, Pools: []*pools.Pool{admit}}), nil
	}
	groups, errs := groupsOf(items, build)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	before, beforeVIPs := raw.Dump(), vips.Dump()
	if !strings.Contains(before, "10.0.0.1:80") || !strings.Contains(beforeVIPs, "10.0.0.1") {
		t.Fatalf("the first sync programmed no a:\n%s\n%s", before, beforeVIPs)
	}

	failing := func(v *lvsv1.VirtualService) (desired.Group, error) {
		if v.Name == "a" {
			return desired.Group{}, errors.New("get EndpointSlice ns/a-xyz: the cache is not synced")
		}
		return build(v)
	}
	groups, errs = groupsOf(items, failing)
	if len(errs) != 1 || len(groups) != 2 || !groups[0].Hold {
		t.Fatalf("groups %+v, errors %v: want a on hold and its error", groups, errs)
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	if after := raw.Dump(); after != before {
		t.Fatalf("a resync whose build of a failed changed IPVS:\n%s\nwant\n%s", after, before)
	}
	if after := vips.Dump(); after != beforeVIPs {
		t.Fatalf("VIPs changed:\n%s\nwant\n%s", after, beforeVIPs)
	}
}
