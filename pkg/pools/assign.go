package pools

import (
	"fmt"
	"net/netip"
	"slices"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// Assignment is what a VirtualService that asks for automatic addresses
// should hold, decided by Assign.
type Assignment struct {
	// Addresses to record in status.addresses, in the order of
	// spec.addressFamilies: those kept and those allocated.
	Addresses []netip.Addr
	// Allocated are the new ones among them.
	Allocated []netip.Addr
	// Dropped says, for each address it held and loses, why.
	Dropped []string
	// Err is why a family asked for has no address (ErrNoPool,
	// ErrExhausted), or nil.
	Err error
}

// Assign decides the addresses of vs, which asks for spec.addressFamilies.
// It keeps each address of status.addresses that is valid, of a family
// asked for (the first of each), held by a pool that may serve vs (Holds)
// and not held by a VirtualService that precedes vs (lvsv1.Precedes: the
// older one keeps a duplicate); for the families left it calls Allocate,
// with used being every address in holders, those kept and vs's own
// static backends (never its own backend: traffic would loop).
//
// holders maps each address to the other VirtualServices that hold it, in
// spec.addresses or status.addresses. It is pure.
func Assign(pools []*Pool, vs *lvsv1.VirtualService, nsLabels map[string]string, holders map[netip.Addr][]*lvsv1.VirtualService) Assignment {
	req := Request{Namespace: vs.Namespace, NamespaceLabels: nsLabels, Families: vs.Spec.AddressFamilies, Pool: vs.Spec.AddressPool}
	var as Assignment
	seen := map[lvsv1.AddressFamily]bool{}
	for _, s := range vs.Status.Addresses {
		a, err := validation.Address(string(s))
		if err != nil {
			as.Dropped = append(as.Dropped, fmt.Sprintf("status.addresses held %q, which %v", s, err))
			continue
		}
		f := lvsv1.FamilyOf(a)
		if seen[f] || !slices.Contains(req.Families, f) {
			continue // not asked for (any more): released without a word
		}
		if !Holds(pools, req, a) {
			as.Dropped = append(as.Dropped, fmt.Sprintf("%s is in no AddressPool that may serve this VirtualService any more", a))
			continue
		}
		if i := slices.IndexFunc(holders[a], func(o *lvsv1.VirtualService) bool { return lvsv1.Precedes(o, vs) }); i >= 0 {
			o := holders[a][i]
			as.Dropped = append(as.Dropped, fmt.Sprintf("%s is held by the older VirtualService %s/%s", a, o.Namespace, o.Name))
			continue
		}
		seen[f] = true
		as.Addresses = append(as.Addresses, a)
	}

	var missing []lvsv1.AddressFamily
	for _, f := range req.Families {
		if !seen[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return as
	}
	used := make(map[netip.Addr]bool, len(holders)+len(as.Addresses)+len(vs.Spec.Backends.Static))
	for a := range holders {
		used[a] = true
	}
	for _, a := range as.Addresses {
		used[a] = true
	}
	for _, b := range vs.Spec.Backends.Static {
		if a, err := netip.ParseAddr(string(b.Address)); err == nil {
			used[a.Unmap()] = true
		}
	}
	req.Families = missing
	as.Allocated, as.Err = Allocate(pools, used, req)
	as.Addresses = append(as.Addresses, as.Allocated...)
	slices.SortFunc(as.Addresses, func(a, b netip.Addr) int {
		return slices.Index(vs.Spec.AddressFamilies, lvsv1.FamilyOf(a)) - slices.Index(vs.Spec.AddressFamilies, lvsv1.FamilyOf(b))
	})
	return as
}
