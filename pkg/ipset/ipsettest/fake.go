// Package ipsettest provides a fake ipset.Interface that keeps state in
// memory, enforces the same ownership rules as the kernel implementation and
// can fail chosen or random calls.
package ipsettest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
)

// Fake is an in-memory ipset.Interface. Operation names for fault injection
// are the method names ("AddEntry", "Replace", ...).
type Fake struct {
	fault.Injector

	mu   sync.Mutex
	sets map[string]*set
}

type set struct {
	desc    ipset.Set
	members map[ipset.Entry]struct{}
}

var _ ipset.Interface = (*Fake)(nil)

// NewFake returns an empty fake.
func NewFake() *Fake { return &Fake{sets: map[string]*set{}} }

// AddForeignSet creates a set that kubelvs does not own (any name), as
// another program would, so tests can check it is left alone.
func (f *Fake) AddForeignSet(s ipset.Set, entries ...ipset.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &set{desc: s, members: map[ipset.Entry]struct{}{}}
	for _, e := range entries {
		st.members[e] = struct{}{}
	}
	f.sets[s.Name] = st
}

// EnsureSet creates the set or checks the existing one matches.
func (f *Fake) EnsureSet(ctx context.Context, s ipset.Set) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Check("EnsureSet"); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensure(s)
}

// ensure creates s, or accepts a set of that name and type that exists.
// The hash size is not compared, as the kernel does not: a set's grows
// with its members.
func (f *Fake) ensure(s ipset.Set) error {
	if cur, ok := f.sets[s.Name]; ok {
		if cur.desc.Type != s.Type || cur.desc.Family != s.Family {
			return fmt.Errorf("ensure ipset %s: %w", s, ipset.ErrMismatch)
		}
		return nil
	}
	f.sets[s.Name] = &set{desc: s, members: map[ipset.Entry]struct{}{}}
	return nil
}

// DestroySet removes an owned set; missing is success.
func (f *Fake) DestroySet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Check("DestroySet"); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sets, name)
	return nil
}

// ListEntries returns the sorted members.
func (f *Fake) ListEntries(ctx context.Context, name string) ([]ipset.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.Check("ListEntries"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sets[name]
	if !ok {
		return nil, fmt.Errorf("list ipset %s: %w", name, ipset.ErrNotFound)
	}
	return s.sorted(), nil
}

func (s *set) sorted() []ipset.Entry {
	out := make([]ipset.Entry, 0, len(s.members))
	for e := range s.members {
		out = append(out, e)
	}
	ipset.SortEntries(out)
	return out
}

// held returns e as the kernel holds it in s (prefixes masked), or an error
// for an entry of the other family, which the kernel refuses.
func (s *set) held(e ipset.Entry) (ipset.Entry, error) {
	a := e.IP
	if s.desc.Type == ipset.HashNet {
		a = e.Net.Addr()
	}
	if a.Is4() != (s.desc.Family == ipset.IPv4) {
		return e, fmt.Errorf("%s is not of the family of ipset %s", e, s.desc)
	}
	if e.Net.IsValid() {
		e.Net = e.Net.Masked()
	}
	return e, nil
}

// AddEntry adds a member to an existing owned set.
func (f *Fake) AddEntry(ctx context.Context, name string, e ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Check("AddEntry"); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sets[name]
	if !ok {
		return fmt.Errorf("add %s to ipset %s: %w", e, name, ipset.ErrNotFound)
	}
	e, err := s.held(e)
	if err != nil {
		return fmt.Errorf("add to ipset %s: %w", name, err)
	}
	s.members[e] = struct{}{}
	return nil
}

// DelEntry removes a member; absent member or set is success.
func (f *Fake) DelEntry(ctx context.Context, name string, e ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Check("DelEntry"); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.sets[name]; ok {
		if e, err := s.held(e); err == nil {
			delete(s.members, e)
		}
	}
	return nil
}

// Replace swaps in the new members under one lock, as the kernel swap does.
func (f *Fake) Replace(ctx context.Context, s ipset.Set, entries []ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Check("Replace"); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, exists := f.sets[s.Name]
	if err := f.ensure(s); err != nil {
		return err
	}
	st := f.sets[s.Name]
	m := make(map[ipset.Entry]struct{}, len(entries))
	for _, e := range entries {
		e, err := st.held(e)
		if err != nil {
			if !exists {
				delete(f.sets, s.Name)
			}
			return fmt.Errorf("replace ipset %s: %w", s.Name, err)
		}
		m[e] = struct{}{}
	}
	st.members = m
	return nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Dump prints every set and its members, sorted, in `ipset save` style.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.sets))
	for n := range f.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		s := f.sets[n]
		fmt.Fprintf(&b, "create %s\n", s.desc)
		for _, e := range s.sorted() {
			fmt.Fprintf(&b, "add %s %s\n", n, e)
		}
	}
	return b.String()
}
