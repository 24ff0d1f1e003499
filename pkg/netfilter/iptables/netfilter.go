// Package iptables applies netfilter's rules with iptables-save and
// iptables-restore (legacy or nft, as the node uses) and keeps the
// rules' ipset members through an ipset.Interface.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// Runner runs a program with stdin and returns its stdout. Tests replace it.
type Runner interface {
	Run(ctx context.Context, stdin, name string, args ...string) (string, error)
}

// ExecRunner runs programs with os/exec.
type ExecRunner struct{}

// Run executes name with args; ctx being done kills it.
func (ExecRunner) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Rules keeps the kubelvs netfilter rules and their ipsets in place.
type Rules struct {
	sets ipset.Interface
	run  Runner
	cfg  netfilter.Config
	mode string
	fams []netfilter.Family

	// rulesMu serializes the rule writes (iptables-save and -restore
	// execs) and guards synced. membersMu guards the members record and
	// is never held across an exec or a listing of every set, so
	// SyncMembers, which runs under the syncer's lock, never waits for a
	// rule write or a reload.
	rulesMu   sync.Mutex
	synced    map[netfilter.Family]string
	membersMu sync.Mutex
	members   map[string]entrySet // per set, as last written or read
	gen       uint64              // bumped by every change of members
}

// New detects the iptables backend (unless cfg.Mode is set) and returns
// Rules for the given families.
func New(ctx context.Context, sets ipset.Interface, run Runner, cfg netfilter.Config, fams ...netfilter.Family) (*Rules, error) {
	if cfg.MasqueradeMark == 0 {
		cfg.MasqueradeMark = netfilter.DefaultMasqueradeMark
	}
	if cfg.MasqueradeMark&(cfg.MasqueradeMark-1) != 0 {
		return nil, fmt.Errorf("masquerade mark %#x is not a single bit", cfg.MasqueradeMark)
	}
	if len(fams) == 0 {
		fams = []netfilter.Family{netfilter.IPv4, netfilter.IPv6}
	}
	r := &Rules{sets: sets, run: run, cfg: cfg, mode: cfg.Mode, fams: fams, synced: map[netfilter.Family]string{}}
	if r.mode == "" {
		r.mode = DetectMode(ctx, run)
	}
	if r.mode != "legacy" && r.mode != "nft" {
		return nil, fmt.Errorf("iptables mode %q: want legacy or nft", r.mode)
	}
	return r, nil
}

// Mode returns "legacy" or "nft".
func (r *Rules) Mode() string { return r.mode }

func binary(mode string, f netfilter.Family, tool string) string {
	p := "iptables"
	if f == netfilter.IPv6 {
		p = "ip6tables"
	}
	return p + "-" + mode + "-" + tool
}

// DetectMode picks the iptables backend the way kube-proxy's
// iptables-wrapper does: the one that already holds rules wins (other
// components' rules live there and both must agree on the packet path);
// with no rules anywhere, nft if it works (e.g. not on UML guests, whose
// kernel lacks nf_tables), else legacy.
func DetectMode(ctx context.Context, run Runner) string {
	count := func(mode string) (int, bool) {
		n, ok := 0, false
		for _, f := range []netfilter.Family{netfilter.IPv4, netfilter.IPv6} {
			out, err := run.Run(ctx, "", binary(mode, f, "save"))
			if err != nil {
				continue
			}
			ok = true
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "-A ") {
					n++
				}
			}
		}
		return n, ok
	}
	nft, nftOK := count("nft")
	legacy, legacyOK := count("legacy")
	switch {
	case legacy > nft:
		return "legacy"
	case nft > legacy:
		return "nft"
	case nftOK && nftWorks(ctx, run):
		return "nft"
	case legacyOK:
		return "legacy"
	}
	return "nft"
}

// nftWorks checks that the kernel takes nf_tables rules: iptables-nft-save
// and -L succeed even on kernels without nf_tables (User-Mode Linux guests),
// where only writing fails. It creates and deletes an empty chain of ours.
func nftWorks(ctx context.Context, run Runner) bool {
	const probe = "KUBELVS-PROBE"
	if _, err := run.Run(ctx, "", "iptables-nft", "-w", "5", "-t", "filter", "-N", probe); err != nil {
		return false
	}
	_, _ = run.Run(ctx, "", "iptables-nft", "-w", "5", "-t", "filter", "-X", probe)
	return true
}

// EnsureSets creates the ipsets the rules reference (they must exist before
// iptables accepts a rule naming them).
func (r *Rules) EnsureSets(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	for _, f := range r.fams {
		for _, s := range netfilter.IPSets(f) {
			errs = append(errs, r.sets.EnsureSet(ctx, s))
		}
	}
	return errors.Join(errs...)
}

// SyncRules writes the rules of every family whose rendering changed since the
// last successful sync, or all of them when force is set (periodic resync:
// someone may have flushed the tables). It returns whether it wrote. A
// forced sync also reads what the ipsets hold (someone may have changed
// them too), so that the next SyncMembers compares with the kernel without
// reading it: the periodic resync calls this without the syncer's lock.
func (r *Rules) SyncRules(ctx context.Context, force bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.rulesMu.Lock()
	defer r.rulesMu.Unlock()
	if force {
		defer r.loadMembers(ctx)
	}
	wrote := false
	for _, f := range r.fams {
		chains := netfilter.Render(f, r.cfg)
		key := fmt.Sprint(chains)
		if !force && r.synced[f] == key {
			continue
		}
		if err := r.EnsureSets(ctx); err != nil {
			return wrote, fmt.Errorf("netfilter %s: %w", f, err)
		}
		saved, err := r.run.Run(ctx, "", binary(r.mode, f, "save"))
		if err != nil {
			return wrote, fmt.Errorf("netfilter %s: %w", f, err)
		}
		if netfilter.Holds(chains, saved) {
			r.synced[f] = key // in place already: nothing to write
			continue
		}
		in := netfilter.RestoreInput(chains, saved)
		if _, err := r.run.Run(ctx, in, binary(r.mode, f, "restore"), "--noflush", "-w", "5"); err != nil {
			return wrote, fmt.Errorf("netfilter %s: restore: %w", f, err)
		}
		r.synced[f] = key
		wrote = true
	}
	return wrote, nil
}

// loadMembers records what the ipsets hold. The sets are read without
// membersMu; the reading replaces the record only if no SyncMembers changed
// the sets meanwhile (else it is read again, up to three times; the next
// forced sync tries again). A set that cannot be read becomes unknown, and
// SyncMembers reads it.
func (r *Rules) loadMembers(ctx context.Context) {
	for range 3 {
		r.membersMu.Lock()
		gen := r.gen
		r.membersMu.Unlock()
		loaded := map[string]entrySet{}
		for _, f := range r.fams {
			n := netfilter.Sets(f)
			for _, name := range []string{n.Masquerade, n.Restricted, n.Allowed, n.Hairpin} {
				if es, err := r.sets.ListEntries(ctx, name); err == nil {
					loaded[name] = newEntrySet(es)
				}
			}
		}
		r.membersMu.Lock()
		if r.gen == gen {
			r.members = loaded
			r.membersMu.Unlock()
			return
		}
		r.membersMu.Unlock()
	}
}

// ListMembers reads what the ipsets hold, both families.
func (r *Rules) ListMembers(ctx context.Context) (netfilter.Members, error) {
	if err := ctx.Err(); err != nil {
		return netfilter.Members{}, err
	}
	var m netfilter.Members
	for _, f := range r.fams {
		for _, p := range setLists(f, &m) {
			es, err := r.sets.ListEntries(ctx, p.name)
			if err != nil {
				return netfilter.Members{}, fmt.Errorf("list %s: %w", p.name, err)
			}
			*p.list = append(*p.list, es...)
		}
	}
	return m, nil
}

// setList is one ipset of members and its list in a netfilter.Members.
type setList struct {
	name string
	list *[]ipset.Entry
}

// setLists pairs the four member ipsets of family f with their lists in m.
func setLists(f netfilter.Family, m *netfilter.Members) [4]setList {
	n := netfilter.Sets(f)
	return [4]setList{{n.Masquerade, &m.Masquerade}, {n.Restricted, &m.Restricted}, {n.Allowed, &m.Allowed}, {n.Hairpin, &m.Hairpin}}
}

// startMembersWrite begins a write of the members; membersMu is held.
func (r *Rules) startMembersWrite(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.gen++
	if r.members == nil {
		r.members = map[string]entrySet{}
	}
	return nil
}

// replaceAbove is the number of changes to one set from which SyncMembers
// fills a scratch set in batches and swaps it in (ipset.Interface.Replace)
// rather than adding and deleting member by member: 20,000 members take
// 18-27 ms that way (BENCHMARKS.md), and the swap is atomic.
const replaceAbove = 256

// SyncMembers makes the ipsets hold exactly m, adding and deleting only the
// differences (replacing a set whole when they are many). It diffs against
// what it wrote last, reading the kernel only the first time, after a
// forced SyncRules (a periodic resync) and after a failed write, so a
// change costs its own writes and not a read of every member. It never
// waits for a rule write or a reload (see rulesMu).
func (r *Rules) SyncMembers(ctx context.Context, m netfilter.Members) error {
	r.membersMu.Lock()
	defer r.membersMu.Unlock()
	if err := r.startMembersWrite(ctx); err != nil {
		return err
	}
	var errs []error
	for _, f := range r.fams {
		fm := m.Split(f)
		specs := map[string]ipset.Set{}
		for _, s := range netfilter.IPSets(f) {
			specs[s.Name] = s
		}
		for _, sl := range setLists(f, &fm) {
			name, wantList := sl.name, held(*sl.list)
			have, known := r.members[name]
			if !known {
				es, err := r.sets.ListEntries(ctx, name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				have = newEntrySet(es)
			}
			want := newEntrySet(wantList)
			var add, del []ipset.Entry
			for _, e := range wantList {
				if _, ok := have[e]; !ok {
					have[e] = struct{}{} // a duplicate in want is added once
					add = append(add, e)
				}
			}
			for e := range have {
				if _, ok := want[e]; !ok {
					del = append(del, e)
				}
			}
			ipset.SortEntries(del)
			if len(add)+len(del) >= replaceAbove {
				// Many changes (a first boot, a large allow-list): one
				// atomic swap, batched, instead of a request per member.
				if err := r.sets.Replace(ctx, specs[name], wantList); err != nil {
					errs = append(errs, err)
					delete(r.members, name)
				} else {
					r.members[name] = want
				}
				continue
			}
			failed := false
			for _, e := range add {
				if err := r.sets.AddEntry(ctx, name, e); err != nil {
					errs, failed = append(errs, err), true
				}
			}
			for _, e := range del {
				if err := r.sets.DelEntry(ctx, name, e); err != nil {
					errs, failed = append(errs, err), true
				}
			}
			if failed {
				delete(r.members, name) // unknown state: read it next time
			} else {
				r.members[name] = want
			}
		}
	}
	return errors.Join(errs...)
}

// UpdateMembers adds add and removes del, member by member, writing only
// what the record says is missing or there: a change costs its own writes,
// however many members the sets hold. A set whose record is unknown gets
// every member of the change written, which the kernel takes as it is
// (ipset.Interface: adding a present member and deleting an absent one are
// success), and stays unknown, since its other members were not looked at.
// Adds go before deletes, as in SyncMembers, so that a source that both
// an old and a new allowed range admit is never dropped on the way.
func (r *Rules) UpdateMembers(ctx context.Context, add, del netfilter.Members) error {
	r.membersMu.Lock()
	defer r.membersMu.Unlock()
	if err := r.startMembersWrite(ctx); err != nil {
		return err
	}
	var errs []error
	for _, f := range r.fams {
		fa, fd := add.Split(f), del.Split(f)
		dels := setLists(f, &fd)
		for i, p := range setLists(f, &fa) {
			a, d := *p.list, *dels[i].list
			if len(a) == 0 && len(d) == 0 {
				continue
			}
			if err := r.updateSet(ctx, p.name, held(a), held(d)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// updateSet writes one set's part of UpdateMembers; membersMu is held.
func (r *Rules) updateSet(ctx context.Context, name string, add, del []ipset.Entry) error {
	have := r.members[name] // nil: unknown
	var adding entrySet
	if len(add) > 0 && len(del) > 0 {
		adding = newEntrySet(add) // a member in both is added
	}
	var errs []error
	for _, e := range add {
		if _, ok := have[e]; ok {
			continue
		}
		if err := r.sets.AddEntry(ctx, name, e); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range del {
		if _, ok := adding[e]; ok {
			continue
		}
		if _, ok := have[e]; !ok && have != nil {
			continue
		}
		if err := r.sets.DelEntry(ctx, name, e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		delete(r.members, name) // unknown state: read it next time
		return errors.Join(errs...)
	}
	if have != nil {
		for _, e := range del {
			delete(have, e)
		}
		for _, e := range add {
			have[e] = struct{}{}
		}
	}
	return nil
}

// entrySet is the members of one set, as the record of what it holds: a
// set, so that UpdateMembers brings it up to date at the cost of the
// change.
type entrySet map[ipset.Entry]struct{}

func newEntrySet(es []ipset.Entry) entrySet {
	s := make(entrySet, len(es))
	for _, e := range es {
		s[e] = struct{}{}
	}
	return s
}

// held returns es as the ipsets hold them, prefixes masked: the record of
// what was written must match what a forced SyncRules reads back, or the
// next SyncMembers would delete the member it means to keep (adding
// 10.0.0.1/8, which is there as 10.0.0.0/8, then deleting 10.0.0.0/8).
func held(es []ipset.Entry) []ipset.Entry {
	out := make([]ipset.Entry, len(es))
	for i, e := range es {
		if e.Net.IsValid() {
			e.Net = e.Net.Masked()
		}
		out[i] = e
	}
	return out
}

// Cleanup removes the kubelvs rules, chains and ipsets of every family
// (`manager cleanup`). What other programs made stays.
func (r *Rules) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.rulesMu.Lock()
	defer r.rulesMu.Unlock()
	var errs []error
	for _, f := range r.fams {
		saved, err := r.run.Run(ctx, "", binary(r.mode, f, "save"))
		if err != nil {
			errs = append(errs, fmt.Errorf("netfilter %s: %w", f, err))
			continue
		}
		if in := netfilter.CleanupInput(saved); in != "" {
			if _, err := r.run.Run(ctx, in, binary(r.mode, f, "restore"), "--noflush", "-w", "5"); err != nil {
				errs = append(errs, fmt.Errorf("netfilter %s: remove rules: %w", f, err))
				continue
			}
		}
		// The sets can go only once no rule references them.
		for _, s := range netfilter.IPSets(f) {
			if err := r.sets.DestroySet(ctx, s.Name); err != nil {
				errs = append(errs, err)
			}
		}
		delete(r.synced, f)
	}
	r.membersMu.Lock()
	r.members = nil
	r.gen++
	r.membersMu.Unlock()
	return errors.Join(errs...)
}

var _ netfilter.Interface = (*Rules)(nil)
