package pools

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// Why Allocate found nothing: test with errors.Is.
var (
	// ErrNoPool: no pool may serve the request (none with autoAssign
	// admits the namespace, or the named pool does not exist or does
	// not admit it).
	ErrNoPool = errors.New("no AddressPool admits the namespace")
	// ErrExhausted: pools admit the namespace, but none has a free
	// address of a family asked for.
	ErrExhausted = errors.New("no free address")
)

// allocError is a message that errors.Is matches to its kind.
type allocError struct {
	kind error
	msg  string
}

func (e *allocError) Error() string { return e.msg }
func (e *allocError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &allocError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Request is what one VirtualService asks of the pools.
type Request struct {
	// Namespace of the VirtualService, and its labels.
	Namespace       string
	NamespaceLabels map[string]string
	// Families wanted, one address each (spec.addressFamilies).
	Families []lvsv1.AddressFamily
	// Pool, when set, is the one pool to allocate from
	// (spec.addressPool); it may have autoAssign false.
	Pool string
}

// Candidates returns the pools that may give addresses for req, by name:
// the named pool if it admits the namespace, else every pool with
// autoAssign that admits it. The error says why there are none.
func Candidates(pools []*Pool, req Request) ([]*Pool, error) {
	byName := slices.Clone(pools)
	slices.SortFunc(byName, func(a, b *Pool) int { return strings.Compare(a.Name, b.Name) })
	if req.Pool != "" {
		i := slices.IndexFunc(byName, func(p *Pool) bool { return p.Name == req.Pool })
		switch {
		case i < 0:
			return nil, errorf(ErrNoPool, "AddressPool %s does not exist (or is invalid)", req.Pool)
		case !byName[i].Admits(req.Namespace, req.NamespaceLabels):
			return nil, errorf(ErrNoPool, "AddressPool %s does not admit namespace %s", req.Pool, req.Namespace)
		}
		return byName[i : i+1], nil
	}
	out := slices.DeleteFunc(Admitting(byName, req.Namespace, req.NamespaceLabels), func(p *Pool) bool { return !p.AutoAssign })
	if len(out) == 0 {
		return nil, errorf(ErrNoPool, "no AddressPool with autoAssign admits namespace %s", req.Namespace)
	}
	return out, nil
}

// Allocate picks one address per family of req: for each family, the
// lowest address not in used of the first candidate pool (Candidates)
// that has one. It returns them in the order of req.Families, or an error
// and nothing: an allocation is whole or not at all.
//
// used holds every address someone has: every VirtualService's
// spec.addresses and status.addresses. Allocate only reads it; it is
// pure, so one caller at a time must own the set it allocates from.
func Allocate(pools []*Pool, used map[netip.Addr]bool, req Request) ([]netip.Addr, error) {
	cands, err := Candidates(pools, req)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(req.Families))
	for _, f := range req.Families {
		a, ok := lowestFree(cands, used, f)
		if !ok {
			names := make([]string, len(cands))
			for i, p := range cands {
				names[i] = p.Name
			}
			pl := "AddressPool " + names[0]
			if len(names) > 1 {
				pl = "AddressPools " + strings.Join(names, ", ")
			}
			return nil, errorf(ErrExhausted, "every %s address of %s, which may serve namespace %s, is in use", f, pl, req.Namespace)
		}
		out = append(out, a)
	}
	return out, nil
}

// Holds reports whether a may stay allocated for req: a candidate pool
// holds it, or, without a named pool, any pool that admits the namespace
// (a pool whose autoAssign was turned off keeps what it gave).
func Holds(pools []*Pool, req Request, a netip.Addr) bool {
	if req.Pool != "" {
		cands, err := Candidates(pools, req)
		return err == nil && cands[0].Contains(a)
	}
	return Find(pools, req.Namespace, req.NamespaceLabels, a) != nil
}

// lowestFree returns the lowest address of family f in the first of pools
// that has one not in used. Each address it passes over is in used, so it
// takes at most len(used) steps beyond one per range.
func lowestFree(pools []*Pool, used map[netip.Addr]bool, f lvsv1.AddressFamily) (netip.Addr, bool) {
	for _, p := range pools {
		for _, r := range p.ranges {
			if lvsv1.FamilyOf(r.First) != f {
				continue
			}
			for a := r.First; a.IsValid() && !r.Last.Less(a); a = a.Next() {
				if !used[a] {
					return a, true
				}
			}
		}
	}
	return netip.Addr{}, false
}
