package validation_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func bgpPeer(spec lvsv1.BGPPeerSpec) *lvsv1.BGPPeer {
	return &lvsv1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: spec}
}

func TestValidBGPPeer(t *testing.T) {
	if errs := validation.BGPPeer(bgpPeer(corpus.ValidPeerSpec())); len(errs) > 0 {
		t.Fatal(errs)
	}
	minimal := lvsv1.BGPPeerSpec{PeerAddress: "2001:db8::1", PeerASN: 65000, MyASN: 65000}
	if errs := validation.BGPPeer(bgpPeer(minimal)); len(errs) > 0 {
		t.Fatal(errs)
	}
}

// Every BGPPeer of the corpus, whether the API server refuses it or stores
// it, is refused here naming its field.
func TestBGPPeerCorpusIsRefused(t *testing.T) {
	apiRefused, storedRefused := corpus.BGPPeers()
	for _, c := range append(apiRefused, storedRefused...) {
		t.Run(c.Name, func(t *testing.T) {
			spec := corpus.ValidPeerSpec()
			c.Mutate(&spec)
			refusedNaming(t, validation.BGPPeer(bgpPeer(spec)), c.Field)
		})
	}
}
