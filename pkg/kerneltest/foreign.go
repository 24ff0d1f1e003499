package kerneltest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// ForeignSet is an ipset another program owns.
const ForeignSet = "foreign-allow"

// ForeignChain is an iptables chain another program owns.
const ForeignChain = "FOREIGN-FW"

const snapshotFile = "/tmp/kubelvs-kerneltest-foreign.snapshot"

// ForeignVIP is the n-th (0-19) foreign IPVS service address; services listen
// on TCP port 80 and UDP port 53.
func ForeignVIP(n int) string { return fmt.Sprintf("10.250.0.%d", n+1) }

func run(tb testing.TB, stdin, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v: %s", name, args, err, errb.String())
	}
	return out.String()
}

// Foreign creates, once per guest boot, state that kubelvs must never touch:
// 20 IPVS services with real servers (ipvsadm -R), an ipset (ipset restore)
// and an iptables chain with a jump; and returns its snapshot.
func Foreign(tb testing.TB) string {
	tb.Helper()
	if b, err := os.ReadFile(snapshotFile); err == nil {
		return string(b)
	}
	var rules strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&rules, "-A -t %s:80 -s wlc\n-a -t %s:80 -r 10.251.0.%d:8080 -m -w %d\n", ForeignVIP(i), ForeignVIP(i), i+1, i+1)
		if i%4 == 0 {
			fmt.Fprintf(&rules, "-A -u %s:53 -s rr -p 60\n-a -u %s:53 -r 10.251.1.%d:53 -g -w 1\n", ForeignVIP(i), ForeignVIP(i), i+1)
		}
	}
	run(tb, rules.String(), "ipvsadm", "-R")
	run(tb, fmt.Sprintf("create %s hash:ip,port family inet\nadd %s 10.250.0.1,tcp:80\nadd %s 10.250.0.2,udp:53\n", ForeignSet, ForeignSet, ForeignSet), "ipset", "restore")
	run(tb, fmt.Sprintf("*filter\n:%s - [0:0]\n-A %s -s 192.0.2.0/24 -j ACCEPT\n-A INPUT -j %s\nCOMMIT\n", ForeignChain, ForeignChain, ForeignChain), "iptables-legacy-restore", "--noflush")
	s := snapshot(tb)
	if err := os.WriteFile(snapshotFile, []byte(s), 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// snapshot prints the foreign state: the foreign IPVS services, the foreign
// ipset and the foreign iptables lines, each as its tool saves it.
func snapshot(tb testing.TB) string {
	tb.Helper()
	var b strings.Builder
	for _, l := range strings.Split(run(tb, "", "ipvsadm", "-Sn"), "\n") {
		if strings.Contains(l, " 10.250.0.") {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range strings.Split(run(tb, "", "ipset", "save", ForeignSet), "\n") {
		if l != "" {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range strings.Split(run(tb, "", "iptables-legacy-save", "-t", "filter"), "\n") {
		if strings.Contains(l, ForeignChain) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
