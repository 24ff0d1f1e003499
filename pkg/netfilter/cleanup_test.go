package netfilter

import "testing"

func TestCleanupInputRemovesOnlyOurs(t *testing.T) {
	saved := `*filter
:INPUT ACCEPT [0:0]
:KUBELVS-INPUT - [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBELVS-INPUT
-A INPUT -j KUBE-FIREWALL
-A INPUT -j KUBELVS-INPUT
-A KUBELVS-INPUT -m set --match-set KUBELVS-RESTRICTED dst,dst -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBELVS-POSTROUTING - [0:0]
-A POSTROUTING -j KUBELVS-POSTROUTING
-A POSTROUTING -j KUBE-POSTROUTING
COMMIT
`
	want := `*filter
-D INPUT -j KUBELVS-INPUT
-D INPUT -j KUBELVS-INPUT
-F KUBELVS-INPUT
-X KUBELVS-INPUT
COMMIT
*nat
-D POSTROUTING -j KUBELVS-POSTROUTING
-F KUBELVS-POSTROUTING
-X KUBELVS-POSTROUTING
COMMIT
`
	if got := CleanupInput(saved); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := CleanupInput("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"); got != "" {
		t.Fatalf("nothing of ours: want no input, got %q", got)
	}
}
