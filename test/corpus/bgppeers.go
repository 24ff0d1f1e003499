package corpus

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// ValidPeerSpec is a BGPPeer the API server accepts, with every field set;
// each PeerCase breaks exactly one thing in it.
func ValidPeerSpec() lvsv1.BGPPeerSpec {
	return lvsv1.BGPPeerSpec{
		PeerAddress: "192.0.2.254",
		PeerPort:    ptr.To[int32](179),
		PeerASN:     64500,
		MyASN:       4200000001,
		HoldTime:    &metav1.Duration{Duration: 9 * time.Second},
		NodeSelector: &lvsv1.LabelSelector{
			MatchLabels: map[string]lvsv1.LabelValue{"rack": "r1"},
		},
		PasswordSecretRef: &lvsv1.SecretKeySelector{Name: "bgp-auth", Key: "password"},
	}
}

// PeerCase is one invalid BGPPeer.
type PeerCase struct {
	Name   string
	Mutate func(s *lvsv1.BGPPeerSpec)
	// Field is what the refusal names; Msg a part of the API server's
	// message.
	Field, Msg string
}

// BGPPeers returns the corpus of BGPPeers: those the API server refuses,
// and those it stores, which only validation.BGPPeer refuses (every agent
// then keeps no session with it and says why).
func BGPPeers() (apiRefused, storedRefused []PeerCase) {
	hold := func(d time.Duration) func(s *lvsv1.BGPPeerSpec) {
		return func(s *lvsv1.BGPPeerSpec) { s.HoldTime = &metav1.Duration{Duration: d} }
	}
	apiRefused = []PeerCase{
		{"no peer address", func(s *lvsv1.BGPPeerSpec) { s.PeerAddress = "" }, "spec.peerAddress", "valid IP address"},
		{"peer address not an IP", func(s *lvsv1.BGPPeerSpec) { s.PeerAddress = "router.example" }, "spec.peerAddress", "valid IP address"},
		{"loopback peer", func(s *lvsv1.BGPPeerSpec) { s.PeerAddress = "127.0.0.1" }, "spec.peerAddress", "unicast"},
		{"link-local IPv6 peer", func(s *lvsv1.BGPPeerSpec) { s.PeerAddress = "fe80::1" }, "spec.peerAddress", "unicast"},
		{"IPv4-mapped peer", func(s *lvsv1.BGPPeerSpec) { s.PeerAddress = "::ffff:192.0.2.1" }, "spec.peerAddress", "IPv4-mapped"},
		{"port 0", func(s *lvsv1.BGPPeerSpec) { s.PeerPort = ptr.To[int32](0) }, "spec.peerPort", "greater than or equal to 1"},
		{"port 65536", func(s *lvsv1.BGPPeerSpec) { s.PeerPort = ptr.To[int32](65536) }, "spec.peerPort", "less than or equal to 65535"},
		{"peer ASN 0", func(s *lvsv1.BGPPeerSpec) { s.PeerASN = 0 }, "spec.peerASN", "greater than or equal to 1"},
		{"my ASN above 32 bits", func(s *lvsv1.BGPPeerSpec) { s.MyASN = 4294967296 }, "spec.myASN", "less than or equal to 4294967295"},
		{"AS_TRANS", func(s *lvsv1.BGPPeerSpec) { s.MyASN = 23456 }, "spec.myASN", "AS_TRANS"},
		{"hold time 1s", hold(time.Second), "spec", "holdTime must be 0s"},
		{"hold time above 65535s", hold(65536 * time.Second), "spec", "holdTime must be 0s"},
		{"negative hold time", hold(-3 * time.Second), "spec", "holdTime must be 0s"},
		{"secret name with a capital", func(s *lvsv1.BGPPeerSpec) { s.PasswordSecretRef.Name = "Auth" }, "spec.passwordSecretRef.name", "should match"},
		{"secret key with a slash", func(s *lvsv1.BGPPeerSpec) { s.PasswordSecretRef.Key = "a/b" }, "spec.passwordSecretRef.key", "should match"},
		{"empty secret key", func(s *lvsv1.BGPPeerSpec) { s.PasswordSecretRef.Key = "" }, "spec.passwordSecretRef.key", "at least 1"},
		{"node selector value too long", func(s *lvsv1.BGPPeerSpec) {
			s.NodeSelector.MatchLabels = map[string]lvsv1.LabelValue{"rack": lvsv1.LabelValue(strings.Repeat("a", 64))}
		}, "spec.nodeSelector.matchLabels.rack", "may not be more than 63"},
		{"In without values", func(s *lvsv1.BGPPeerSpec) {
			s.NodeSelector.MatchExpressions = []lvsv1.LabelSelectorRequirement{{Key: "rack", Operator: lvsv1.LabelSelectorOpIn}}
		}, "spec.nodeSelector.matchExpressions[0].values", "must not be empty"},
	}
	storedRefused = []PeerCase{
		{"node selector key with two slashes", func(s *lvsv1.BGPPeerSpec) {
			s.NodeSelector.MatchLabels = map[string]lvsv1.LabelValue{"a/b/c": "x"}
		}, "spec.nodeSelector.matchLabels", ""},
	}
	return apiRefused, storedRefused
}
