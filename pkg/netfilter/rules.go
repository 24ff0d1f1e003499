// Package netfilter writes the few iptables rules kubelvs needs, all of them
// matched through ipsets so the rule set is constant whatever the number of
// services:
//
//   - masquerade: packets to a Masquerade-forwarded VIP,proto:port (ipset
//     KUBELVS-MASQ) are marked in nat PREROUTING/OUTPUT and masqueraded in
//     POSTROUTING, so real servers answer through this node;
//   - hairpin: a VIP,proto:port whose real servers are all on this node
//     (trafficPolicy Local) is not in KUBELVS-MASQ, so its backends see the
//     client's address; only packets to it from one of its own real servers
//     (KUBELVS-HAIRPIN, hash:ip,port,net: VIP,proto:port,real server) are
//     marked in PREROUTING, because a real server scheduled to itself would
//     drop a packet from its own address;
//   - source ranges: one rule in filter INPUT (which runs before IPVS's
//     LOCAL_IN hook) drops packets to a restricted VIP,proto:port
//     (KUBELVS-RESTRICTED) unless VIP,proto:port,source is allowed
//     (KUBELVS-ALLOWED, hash:ip,port,net).
//
// Only chains named KUBELVS-* are written; the built-in chains get one jump
// each, ensured (added if missing, de-duplicated) and never anything else.
// A sync is one iptables-save and one iptables-restore --noflush per
// family, and none at all when the rendered rules did not change; a forced
// sync (the periodic check) is the iptables-save, and the restore only for
// a family whose tables do not hold our rules exactly (Holds).
package netfilter

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// Family selects iptables or ip6tables.
type Family int

// Families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// DefaultMasqueradeMark is the packet mark bit kubelvs uses; it avoids
// kube-proxy's 0x4000 (masquerade) and 0x8000 (drop).
const DefaultMasqueradeMark = 0x1000

// Config tunes the rules.
type Config struct {
	// MasqueradeMark is the single mark bit set on packets to masquerade.
	MasqueradeMark uint32
	// Mode forces "legacy" or "nft"; empty detects it.
	Mode string
}

// SetNames are the ipsets of one family the rules match on.
type SetNames struct {
	Masquerade string // hash:ip,port: VIP,proto:port forwarded with Masquerade
	Restricted string // hash:ip,port: VIP,proto:port that have sourceRanges
	Allowed    string // hash:ip,port,net: VIP,proto:port,allowed source range
	Hairpin    string // hash:ip,port,net: VIP,proto:port,real server of a VIP:port not in Masquerade
}

// Sets returns the set names of a family.
func Sets(f Family) SetNames {
	sfx := ""
	if f == IPv6 {
		sfx = "-V6"
	}
	return SetNames{
		Masquerade: "KUBELVS-MASQ" + sfx,
		Restricted: "KUBELVS-RESTRICTED" + sfx,
		Allowed:    "KUBELVS-ALLOWED" + sfx,
		Hairpin:    "KUBELVS-HAIRPIN" + sfx,
	}
}

// IPSets returns the descriptions of the ipsets of a family.
func IPSets(f Family) []ipset.Set {
	fam := ipset.IPv4
	if f == IPv6 {
		fam = ipset.IPv6
	}
	n := Sets(f)
	return []ipset.Set{
		{Name: n.Masquerade, Type: ipset.HashIPPort, Family: fam},
		{Name: n.Restricted, Type: ipset.HashIPPort, Family: fam},
		{Name: n.Allowed, Type: ipset.HashIPPortNet, Family: fam},
		{Name: n.Hairpin, Type: ipset.HashIPPortNet, Family: fam},
	}
}

// jump is a rule in a built-in chain that enters one of our chains.
type jump struct {
	table, chain, target string
}

func (j jump) spec() string { return fmt.Sprintf("-A %s -j %s", j.chain, j.target) }

var jumps = []jump{
	{"filter", "INPUT", "KUBELVS-INPUT"},
	{"nat", "PREROUTING", "KUBELVS-PREROUTING"},
	{"nat", "OUTPUT", "KUBELVS-OUTPUT"},
	{"nat", "POSTROUTING", "KUBELVS-POSTROUTING"},
}

// Render returns the KUBELVS- chains of a family in iptables-restore syntax,
// without the jumps from built-in chains. It is a pure function of its
// arguments, so an unchanged result means nothing to write.
func Render(f Family, cfg Config) map[string][]string {
	n := Sets(f)
	mark := fmt.Sprintf("%#x/%#x", cfg.MasqueradeMark, cfg.MasqueradeMark)
	return map[string][]string{
		"filter": {
			":KUBELVS-INPUT - [0:0]",
			fmt.Sprintf(`-A KUBELVS-INPUT -m set --match-set %s dst,dst -m set ! --match-set %s dst,dst,src -m comment --comment "kubelvs: source outside sourceRanges" -j DROP`, n.Restricted, n.Allowed),
		},
		"nat": {
			":KUBELVS-PREROUTING - [0:0]",
			":KUBELVS-OUTPUT - [0:0]",
			":KUBELVS-POSTROUTING - [0:0]",
			fmt.Sprintf(`-A KUBELVS-PREROUTING -m set --match-set %s dst,dst -m comment --comment "kubelvs: masquerade" -j MARK --set-xmark %s`, n.Masquerade, mark),
			fmt.Sprintf(`-A KUBELVS-PREROUTING -m set --match-set %s dst,dst,src -m comment --comment "kubelvs: masquerade a real server calling its own VIP" -j MARK --set-xmark %s`, n.Hairpin, mark),
			fmt.Sprintf(`-A KUBELVS-OUTPUT -m set --match-set %s dst,dst -m comment --comment "kubelvs: masquerade" -j MARK --set-xmark %s`, n.Masquerade, mark),
			// Clear the bit before masquerading so a packet that comes back
			// through this host is not masqueraded twice.
			fmt.Sprintf(`-A KUBELVS-POSTROUTING -m mark ! --mark %s -j RETURN`, mark),
			fmt.Sprintf(`-A KUBELVS-POSTROUTING -j MARK --set-xmark 0x0/%#x`, cfg.MasqueradeMark),
			`-A KUBELVS-POSTROUTING -m comment --comment "kubelvs: masquerade" -j MASQUERADE`,
		},
	}
}

// RestoreInput builds the iptables-restore --noflush input: our chains
// redefined (declaring a chain flushes it), plus the jumps fixed up against
// the current iptables-save output: inserted at the top if missing, extra
// copies deleted.
func RestoreInput(chains map[string][]string, saved string) string {
	count := parseSaved(saved).jumps
	var b strings.Builder
	for _, t := range []string{"filter", "nat"} {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, l := range chains[t] {
			b.WriteString(l + "\n")
		}
		for _, j := range jumps {
			if j.table != t {
				continue
			}
			switch c := count[j]; {
			case c == 0:
				fmt.Fprintf(&b, "-I %s 1 -j %s\n", j.chain, j.target)
			case c > 1:
				for i := 1; i < c; i++ {
					fmt.Fprintf(&b, "-D %s -j %s\n", j.chain, j.target)
				}
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// savedTables is what iptables-save output holds: per "table/chain",
// whether the chain is declared and its rules ("-A ..." lines) in order,
// and how many times each of our jumps is there.
type savedTables struct {
	declared map[string]bool
	rules    map[string][]string
	jumps    map[jump]int
}

func parseSaved(saved string) savedTables {
	st := savedTables{declared: map[string]bool{}, rules: map[string][]string{}, jumps: map[jump]int{}}
	table := ""
	for _, l := range strings.Split(saved, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			if name, _, ok := strings.Cut(l[1:], " "); ok {
				st.declared[table+"/"+name] = true
			}
		case strings.HasPrefix(l, "-A "):
			chain, _, _ := strings.Cut(l[len("-A "):], " ")
			st.rules[table+"/"+chain] = append(st.rules[table+"/"+chain], l)
			for _, j := range jumps {
				if j.table == table && l == j.spec() {
					st.jumps[j]++
				}
			}
		}
	}
	return st
}

// Holds reports whether saved (iptables-save output) already holds what
// RestoreInput would write: every one of our chains declared, with exactly
// the rendered rules in order, and every jump exactly once. A forced sync
// then writes nothing: a rewrite would change nothing but reset the
// chains' counters, and it costs an exec that takes the xtables lock. It
// compares text, so a rule that iptables-save prints otherwise than we
// render it makes this false, and the rules are written, as before.
func Holds(chains map[string][]string, saved string) bool {
	st := parseSaved(saved)
	count, declared, have := st.jumps, st.declared, st.rules
	for _, j := range jumps {
		if count[j] != 1 {
			return false
		}
	}
	for t, lines := range chains {
		want := map[string][]string{}
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, ":"):
				name, _, _ := strings.Cut(l[1:], " ")
				if !declared[t+"/"+name] {
					return false
				}
				if _, ok := want[t+"/"+name]; !ok {
					want[t+"/"+name] = nil // declared: its rules are compared, none or not
				}
			case strings.HasPrefix(l, "-A "):
				chain, _, _ := strings.Cut(l[len("-A "):], " ")
				want[t+"/"+chain] = append(want[t+"/"+chain], l)
			}
		}
		for c, rules := range want {
			if !slices.Equal(rules, have[c]) {
				return false
			}
		}
	}
	return true
}

// Interface is what the syncer needs from netfilter: the constant rules, and
// the ipset members they match. The implementation on the kernel is package
// iptables; package netfiltertest keeps the same state in memory.
type Interface interface {
	// SyncRules writes the rules of every family whose rendering changed
	// since the last successful call; when force is set it reads them
	// from the kernel and writes those of every family that does not hold
	// them exactly (someone may have flushed or changed the tables). It
	// reports whether it wrote.
	SyncRules(ctx context.Context, force bool) (bool, error)
	// SyncMembers makes the ipsets hold exactly m, writing only the
	// differences.
	SyncMembers(ctx context.Context, m Members) error
	// UpdateMembers adds the members of add to their ipsets and removes
	// those of del, leaving every other member as it is, at the cost of
	// the change alone: a member of add already there and one of del
	// already gone are success. Members are compared as the ipsets hold
	// them (prefixes masked), and one in both add and del is added.
	UpdateMembers(ctx context.Context, add, del Members) error
	// ListMembers reads what the ipsets hold, both families.
	ListMembers(ctx context.Context) (Members, error)
}

// Members are the ipset members of both families.
type Members struct {
	Masquerade []ipset.Entry // VIP, proto, port
	Restricted []ipset.Entry // VIP, proto, port
	Allowed    []ipset.Entry // VIP, proto, port, Net
	Hairpin    []ipset.Entry // VIP, proto, port, Net (a real server's address)
}

// Split returns the members of one family.
func (m Members) Split(f Family) Members {
	keep := func(es []ipset.Entry) []ipset.Entry {
		var out []ipset.Entry
		for _, e := range es {
			if e.IP.Is4() == (f == IPv4) {
				out = append(out, e)
			}
		}
		return out
	}
	return Members{keep(m.Masquerade), keep(m.Restricted), keep(m.Allowed), keep(m.Hairpin)}
}
