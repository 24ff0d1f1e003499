package agent

import (
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

func slice(name, svc string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	if svc != "" {
		s.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	return s
}

func TestIndexFollowsAddsMovesAndDeletes(t *testing.T) {
	x := newIndex(sliceService)
	web, api := serviceRef{Namespace: "ns", Name: "web"}, serviceRef{Namespace: "ns", Name: "api"}
	a, b := types.NamespacedName{Namespace: "ns", Name: "web-a"}, types.NamespacedName{Namespace: "ns", Name: "web-b"}
	x.update(a, nil, slice("web-a", "web"))
	x.update(b, nil, slice("web-b", "web"))
	x.update(b, slice("web-b", "web"), slice("web-b", "web")) // a resync: no change
	if got := x.lookup(web); !slices.Equal(got, []types.NamespacedName{a, b}) {
		t.Fatalf("web: %v", got)
	}
	// web-b is relabelled to api, then loses its label.
	x.update(b, slice("web-b", "web"), slice("web-b", "api"))
	if got, gotAPI := x.lookup(web), x.lookup(api); !slices.Equal(got, []types.NamespacedName{a}) || !slices.Equal(gotAPI, []types.NamespacedName{b}) {
		t.Fatalf("after the move: web %v, api %v", got, gotAPI)
	}
	x.update(b, slice("web-b", "api"), slice("web-b", ""))
	x.update(a, slice("web-a", "web"), nil)
	if x.len() != 0 {
		t.Fatalf("after deletes: %d keys left: %v", x.len(), x.objs)
	}
	// lookup hands out a copy: the caller may keep it while the index moves on.
	x.update(a, nil, slice("web-a", "web"))
	got := x.lookup(web)
	x.update(b, nil, slice("web-b", "web"))
	if len(got) != 1 {
		t.Fatalf("lookup result changed under its caller: %v", got)
	}
}

func TestIndexManyKeysPerObject(t *testing.T) {
	x := newIndex(vsServiceKeys)
	vs := func(ports ...int32) *lvsv1.VirtualService {
		v := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "v"}}
		v.Spec.Addresses = []lvsv1.IPAddress{"10.96.0.1"}
		for _, p := range ports {
			v.Spec.Ports = append(v.Spec.Ports, lvsv1.VirtualServicePort{Port: p})
		}
		return v
	}
	n := types.NamespacedName{Namespace: "ns", Name: "v"}
	x.update(n, nil, vs(80, 443))
	x.update(n, vs(80, 443), vs(443, 8443))
	keys := vs(80, 443, 8443).ServiceKeys()
	if x.lookup(keys[0]) != nil || len(x.lookup(keys[1])) != 1 || len(x.lookup(keys[2])) != 1 || x.len() != 2 {
		t.Fatalf("after 80,443 -> 443,8443: %v", x.objs)
	}
}
