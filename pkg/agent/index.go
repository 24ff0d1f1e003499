package agent

import (
	"slices"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// index maps a key to the objects that name it. The agent keeps its three
// lookups (VirtualServices by the VIP:port they claim, VirtualServices by
// the Service they take endpoints from, EndpointSlices by their Service)
// in indexes of its own, fed by the informers' event handlers, rather than
// as cache field indexes: a field index costs a set (a map) per value,
// twice over (namespaced and cluster-wide), which at 10,000
// VirtualServices was a fifth of the agent's live heap; here a value costs
// one map slot and a short slice.
//
// Handlers see every change after the cache holds it, and queue the
// VirtualServices concerned after updating the index, so a lookup that
// raced with a change is followed by a sync that sees it. Objects named by
// the index may be gone from the cache: callers skip those.
type index[K comparable] struct {
	keys func(obj any) []K

	mu   sync.RWMutex
	objs map[K][]types.NamespacedName
}

func newIndex[K comparable](keys func(obj any) []K) *index[K] {
	return &index[K]{keys: keys, objs: map[K][]types.NamespacedName{}}
}

// update moves an object from the keys of old (nil on add) to those of cur
// (nil on delete). old must be the object as it was last indexed: the
// informer's previous version.
func (x *index[K]) update(name types.NamespacedName, old, cur any) {
	var was, is []K
	if old != nil {
		was = x.keys(old)
	}
	if cur != nil {
		is = x.keys(cur)
	}
	if slices.Equal(was, is) {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, k := range was {
		if !slices.Contains(is, k) {
			names := slices.DeleteFunc(x.objs[k], func(n types.NamespacedName) bool { return n == name })
			if len(names) == 0 {
				delete(x.objs, k)
			} else {
				x.objs[k] = slices.Clip(names)
			}
		}
	}
	for _, k := range is {
		if names := x.objs[k]; !slices.Contains(names, name) {
			x.objs[k] = append(names, name)
		}
	}
}

// lookup returns the objects that name k.
func (x *index[K]) lookup(k K) []types.NamespacedName {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Clone(x.objs[k])
}

// len is the number of keys (for tests).
func (x *index[K]) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.objs)
}

// serviceRef is a Service by namespace and name.
type serviceRef = types.NamespacedName

func vsServiceKeys(obj any) []lvsv1.ServiceKey {
	if vs, ok := obj.(*lvsv1.VirtualService); ok {
		return vs.ServiceKeys()
	}
	return nil
}

func vsServiceRef(obj any) []serviceRef {
	if vs, ok := obj.(*lvsv1.VirtualService); ok && vs.Spec.Backends.ServiceRef != nil {
		return []serviceRef{{Namespace: vs.Namespace, Name: vs.Spec.Backends.ServiceRef.Name}}
	}
	return nil
}

func sliceService(obj any) []serviceRef {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		if n := s.Labels[discoveryv1.LabelServiceName]; n != "" {
			return []serviceRef{{Namespace: s.Namespace, Name: n}}
		}
	}
	return nil
}
