package netfilter

import (
	"fmt"
	"strings"
)

// CleanupInput builds the iptables-restore --noflush input that removes
// every jump into our chains and then the chains themselves, from the
// current iptables-save output. Nothing else is touched.
func CleanupInput(saved string) string {
	st := parseSaved(saved)
	var dels []string
	for _, j := range jumps {
		for range st.jumps[j] {
			dels = append(dels, j.table+"\x00"+fmt.Sprintf("-D %s -j %s", j.chain, j.target))
		}
	}
	var b strings.Builder
	for _, t := range []string{"filter", "nat"} {
		var lines []string
		for _, d := range dels {
			if tb, rule, _ := strings.Cut(d, "\x00"); tb == t {
				lines = append(lines, rule)
			}
		}
		var chains []string
		for _, j := range jumps {
			if j.table == t && st.declared[t+"/"+j.target] {
				chains = append(chains, j.target)
			}
		}
		for _, c := range chains {
			lines = append(lines, "-F "+c)
		}
		for _, c := range chains {
			lines = append(lines, "-X "+c)
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n%s\nCOMMIT\n", t, strings.Join(lines, "\n"))
	}
	return b.String()
}
