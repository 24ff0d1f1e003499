package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// The sessions of a node are the valid BGPPeers that select it, with their
// passwords; a BGPPeer it cannot use is reported Failed with why, in its
// own entry of the BGPPeer's status.
func TestPeerSync(t *testing.T) {
	ctx := context.Background()
	peer := func(name, addr string, sel map[string]lvsv1.LabelValue, secret string) *lvsv1.BGPPeer {
		p := &lvsv1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: lvsv1.BGPPeerSpec{PeerAddress: lvsv1.IPAddress(addr), PeerASN: 64500, MyASN: 64501,
				HoldTime: &metav1.Duration{Duration: 9 * time.Second}}}
		if sel != nil {
			p.Spec.NodeSelector = &lvsv1.LabelSelector{MatchLabels: sel}
		}
		if secret != "" {
			p.Spec.PasswordSecretRef = &lvsv1.SecretKeySelector{Name: secret, Key: "password"}
		}
		return p
	}
	c := fake.NewClientBuilder().WithScheme(scriptScheme).WithStatusSubresource(&lvsv1.BGPPeer{}).WithObjects(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"rack": "r1"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubelvs-system", Name: "bgp-auth"}, Data: map[string][]byte{"password": []byte("s3cret")}},
		peer("tor-a", "192.0.2.1", map[string]lvsv1.LabelValue{"rack": "r1"}, "bgp-auth"),
		peer("tor-b", "2001:db8::1", nil, ""),
		peer("other-rack", "192.0.2.2", map[string]lvsv1.LabelValue{"rack": "r2"}, ""),
		peer("no-secret", "192.0.2.3", nil, "missing"),
		peer("same-address", "192.0.2.1", nil, ""),
		// Stored although invalid (a key the CRD cannot check).
		peer("refused", "192.0.2.4", map[string]lvsv1.LabelValue{"a/b/c": "x"}, ""),
	).Build()
	f := &fakeBGP{}
	p := NewPeerSync(f, c, c, "kubelvs-system", "node-1")
	if err := p.sync(ctx, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range f.peers {
		got = append(got, fmt.Sprintf("%s %s %d>%d hold %v password %q", x.Name, x.Address, x.LocalASN, x.ASN, x.HoldTime, x.Password))
	}
	want := `[same-address 192.0.2.1 64501>64500 hold 9s password "" tor-b 2001:db8::1 64501>64500 hold 9s password ""]`
	if fmt.Sprint(got) != want {
		t.Fatalf("peers:\n%v\nwant\n%s", got, want)
	}
	if err := p.report(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"tor-a":        "Failed: BGPPeer same-address has the same peer address 192.0.2.1",
		"tor-b":        "Idle: ",
		"other-rack":   "none",
		"no-secret":    "Failed: read the password Secret kubelvs-system/missing: secrets \"missing\" not found",
		"refused":      "Failed: refused: spec.nodeSelector.matchLabels",
		"same-address": "Idle: ",
	} {
		var bp lvsv1.BGPPeer
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &bp); err != nil {
			t.Fatal(err)
		}
		got := "none"
		for _, n := range bp.Status.Nodes {
			if n.Node == "node-1" {
				got = n.State + ": " + n.Message
			}
		}
		if len(got) > len(want) {
			got = got[:len(want)]
		}
		if got != want {
			t.Errorf("%s: status %q, want %q", name, got, want)
		}
	}
}
