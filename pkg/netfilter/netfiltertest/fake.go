// Package netfiltertest provides a fake netfilter.Interface that keeps the
// rules it last wrote and the ipset members per set in memory, the way
// package iptables keeps them in the kernel, with fault injection.
package netfiltertest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// Fake is in-memory netfilter state. Operation names for fault injection
// are the method names ("SyncMembers", ...).
type Fake struct {
	fault.Injector

	cfg  netfilter.Config
	fams []netfilter.Family

	mu      sync.Mutex
	rules   map[netfilter.Family]string         // rendered chains in the "kernel"
	synced  map[netfilter.Family]string         // as last written by SyncRules
	sets    map[string]map[ipset.Entry]struct{} // per set name, prefixes masked
	calls   map[string]int
	written int // rule writes (one per family rewritten)
}

var _ netfilter.Interface = (*Fake)(nil)

// NewFake returns empty netfilter state for the families (both if none),
// rendering rules with cfg as the real implementation does.
func NewFake(cfg netfilter.Config, fams ...netfilter.Family) *Fake {
	if cfg.MasqueradeMark == 0 {
		cfg.MasqueradeMark = netfilter.DefaultMasqueradeMark
	}
	if len(fams) == 0 {
		fams = []netfilter.Family{netfilter.IPv4, netfilter.IPv6}
	}
	return &Fake{cfg: cfg, fams: fams, rules: map[netfilter.Family]string{}, synced: map[netfilter.Family]string{},
		sets: map[string]map[ipset.Entry]struct{}{}, calls: map[string]int{}}
}

func (f *Fake) enter(op string) error {
	f.mu.Lock()
	f.calls[op]++
	f.mu.Unlock()
	return f.Check(op)
}

// Calls returns how many times op was called (successful or not).
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// RuleWrites returns how many times a family's rules were written.
func (f *Fake) RuleWrites() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

// FlushRules drops the rules from the "kernel", as an administrator running
// iptables -F would; the next forced SyncRules writes them again.
func (f *Fake) FlushRules() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.rules)
}

// HasRules reports whether the rules of every family are in place, as
// rendered from the configuration.
func (f *Fake) HasRules() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fam := range f.fams {
		if f.rules[fam] != render(fam, f.cfg) {
			return false
		}
	}
	return true
}

func render(fam netfilter.Family, cfg netfilter.Config) string {
	return fmt.Sprint(netfilter.Render(fam, cfg))
}

// SyncRules writes the rules of every family whose rendering changed since
// the last successful call, or, when force is set, of every family whose
// rules are not in place.
func (f *Fake) SyncRules(ctx context.Context, force bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := f.enter("SyncRules"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	wrote := false
	for _, fam := range f.fams {
		key := render(fam, f.cfg)
		if !force && f.synced[fam] == key {
			continue
		}
		if f.rules[fam] == key {
			f.synced[fam] = key // in place already, as the kernel's tables hold it
			continue
		}
		f.rules[fam], f.synced[fam] = key, key
		f.written++
		wrote = true
	}
	return wrote, nil
}

// SyncMembers makes the sets hold exactly m; members of a family the fake
// was not made for are ignored, as the real rules do.
func (f *Fake) SyncMembers(ctx context.Context, m netfilter.Members) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("SyncMembers"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fam := range f.fams {
		n, fm := netfilter.Sets(fam), m.Split(fam)
		for _, p := range []struct {
			name string
			es   []ipset.Entry
		}{{n.Masquerade, fm.Masquerade}, {n.Restricted, fm.Restricted}, {n.Allowed, fm.Allowed}, {n.Hairpin, fm.Hairpin}} {
			set := make(map[ipset.Entry]struct{}, len(p.es))
			for _, e := range p.es {
				set[held(e)] = struct{}{}
			}
			f.sets[p.name] = set
		}
	}
	return nil
}

// UpdateMembers adds add and removes del (adds first, so that a member in
// both stays), at the cost of the change; members of a family the fake was
// not made for are ignored, as the real rules do.
func (f *Fake) UpdateMembers(ctx context.Context, add, del netfilter.Members) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("UpdateMembers"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fam := range f.fams {
		n := netfilter.Sets(fam)
		for _, p := range []struct {
			name     string
			add, del []ipset.Entry
		}{{n.Masquerade, add.Masquerade, del.Masquerade}, {n.Restricted, add.Restricted, del.Restricted},
			{n.Allowed, add.Allowed, del.Allowed}, {n.Hairpin, add.Hairpin, del.Hairpin}} {
			if len(p.add) == 0 && len(p.del) == 0 {
				continue
			}
			set := f.sets[p.name]
			if set == nil {
				set = map[ipset.Entry]struct{}{}
				f.sets[p.name] = set
			}
			var adding map[ipset.Entry]struct{}
			for _, e := range p.add {
				if e.IP.Is4() == (fam == netfilter.IPv4) {
					if adding == nil {
						adding = map[ipset.Entry]struct{}{}
					}
					adding[held(e)] = struct{}{}
					set[held(e)] = struct{}{}
				}
			}
			for _, e := range p.del {
				if _, ok := adding[held(e)]; !ok && e.IP.Is4() == (fam == netfilter.IPv4) {
					delete(set, held(e))
				}
			}
		}
	}
	return nil
}

// held is e as an ipset holds it: its prefix masked.
func held(e ipset.Entry) ipset.Entry {
	if e.Net.IsValid() {
		e.Net = e.Net.Masked()
	}
	return e
}

// sorted returns a set's members sorted.
func sorted(set map[ipset.Entry]struct{}) []ipset.Entry {
	out := make([]ipset.Entry, 0, len(set))
	for e := range set {
		out = append(out, e)
	}
	ipset.SortEntries(out)
	return out
}

// ListMembers returns the members of both families, each set sorted.
func (f *Fake) ListMembers(ctx context.Context) (netfilter.Members, error) {
	if err := ctx.Err(); err != nil {
		return netfilter.Members{}, err
	}
	if err := f.enter("ListMembers"); err != nil {
		return netfilter.Members{}, err
	}
	return f.Members(), nil
}

// Members returns what ListMembers would, without counting a call or
// injecting a fault: for tests to look at the state.
func (f *Fake) Members() netfilter.Members {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m netfilter.Members
	for _, fam := range f.fams {
		n := netfilter.Sets(fam)
		m.Masquerade = append(m.Masquerade, sorted(f.sets[n.Masquerade])...)
		m.Restricted = append(m.Restricted, sorted(f.sets[n.Restricted])...)
		m.Allowed = append(m.Allowed, sorted(f.sets[n.Allowed])...)
		m.Hairpin = append(m.Hairpin, sorted(f.sets[n.Hairpin])...)
	}
	return m
}

// Dump lists the members, one "ipset SET member ENTRY" line each, sorted,
// for golden files.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for name, set := range f.sets {
		for e := range set {
			lines = append(lines, "ipset "+name+" member "+e.String())
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
