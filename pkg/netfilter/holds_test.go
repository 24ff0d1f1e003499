package netfilter

import (
	"strings"
	"testing"
)

// savedWith renders what iptables-save prints once our rules are in
// place among another program's, with edit applied to its lines.
func savedWith(chains map[string][]string, edit func([]string) []string) string {
	var lines []string
	for _, t := range []string{"filter", "nat"} {
		lines = append(lines, "*"+t)
		for _, l := range chains[t] {
			if strings.HasPrefix(l, ":") {
				// iptables-save prints the chain's counters.
				l = strings.Replace(l, "[0:0]", "[12:3456]", 1)
			}
			lines = append(lines, l)
		}
		for _, j := range jumps {
			if j.table == t {
				lines = append(lines, j.spec())
			}
		}
		lines = append(lines, "-A "+map[string]string{"filter": "INPUT", "nat": "PREROUTING"}[t]+" -j KUBE-SERVICES", "COMMIT")
	}
	return strings.Join(edit(lines), "\n") + "\n"
}

func TestHolds(t *testing.T) {
	chains := Render(IPv4, Config{MasqueradeMark: DefaultMasqueradeMark})
	keep := func(l []string) []string { return l }
	without := func(prefix string) func([]string) []string {
		return func(ls []string) []string {
			var out []string
			for _, l := range ls {
				if !strings.HasPrefix(l, prefix) {
					out = append(out, l)
				}
			}
			return out
		}
	}
	for name, c := range map[string]struct {
		edit func([]string) []string
		want bool
	}{
		"in place among others' rules": {keep, true},
		"a jump missing":               {without("-A INPUT -j KUBELVS-INPUT"), false},
		"a jump twice": {func(ls []string) []string {
			return append([]string{"*nat", "-A OUTPUT -j KUBELVS-OUTPUT", "COMMIT"}, ls...)
		}, false},
		"a rule missing":  {without("-A KUBELVS-POSTROUTING -j MARK"), false},
		"a chain missing": {without(":KUBELVS-OUTPUT"), false},
		"a chain flushed": {without("-A KUBELVS-INPUT "), false},
		"a rule changed": {func(ls []string) []string {
			for i, l := range ls {
				ls[i] = strings.Replace(l, "-j DROP", "-j ACCEPT", 1)
			}
			return ls
		}, false},
		"a rule added to our chain": {func(ls []string) []string {
			return append(ls, "*filter", "-A KUBELVS-INPUT -j ACCEPT", "COMMIT")
		}, false},
		"nothing saved": {func([]string) []string { return nil }, false},
	} {
		if got := Holds(chains, savedWith(chains, c.edit)); got != c.want {
			t.Errorf("%s: Holds = %t, want %t", name, got, c.want)
		}
	}
}
