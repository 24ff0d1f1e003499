package envtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func bgpPeer(name string, spec lvsv1.BGPPeerSpec) *lvsv1.BGPPeer {
	return &lvsv1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

// The API server accepts the corpus's valid BGPPeers (hold time 0s and
// 3s at the edges), refuses each invalid one naming its field, and stores
// the few only validation.BGPPeer refuses.
func TestBGPPeersAreValidatedByTheAPIServer(t *testing.T) {
	ctx := context.Background()
	for name, mutate := range map[string]func(*lvsv1.BGPPeerSpec){
		"every field":  func(*lvsv1.BGPPeerSpec) {},
		"hold time 0s": func(s *lvsv1.BGPPeerSpec) { s.HoldTime = &metav1.Duration{} },
		"hold time 3s": func(s *lvsv1.BGPPeerSpec) { s.HoldTime = &metav1.Duration{Duration: 3 * time.Second} },
		"minimal, IPv6": func(s *lvsv1.BGPPeerSpec) {
			*s = lvsv1.BGPPeerSpec{PeerAddress: "2001:db8::1", PeerASN: 1, MyASN: 4294967295}
		},
	} {
		spec := corpus.ValidPeerSpec()
		mutate(&spec)
		if err := k8s.Create(ctx, bgpPeer("ok", spec), client.DryRunAll); err != nil {
			t.Errorf("%s: refused: %.2000v", name, err)
		}
	}
	apiRefused, stored := corpus.BGPPeers()
	for _, tc := range stored {
		spec := corpus.ValidPeerSpec()
		tc.Mutate(&spec)
		if err := k8s.Create(ctx, bgpPeer("stored", spec), client.DryRunAll); err != nil {
			t.Errorf("%s: the API server refuses it now (%v): move it to the API-refused cases of test/corpus", tc.Name, err)
		}
	}
	for _, tc := range apiRefused {
		t.Run(tc.Name, func(t *testing.T) {
			spec := corpus.ValidPeerSpec()
			tc.Mutate(&spec)
			err := k8s.Create(ctx, bgpPeer("bad", spec), client.DryRunAll)
			var se *apierrors.StatusError
			if !errors.As(err, &se) || !apierrors.IsInvalid(err) || se.ErrStatus.Details == nil {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, c := range se.ErrStatus.Details.Causes {
				if c.Field == tc.Field && strings.Contains(c.Message, tc.Msg) {
					return
				}
			}
			t.Fatalf("no cause names %s with %q; the API server said: %.2000v", tc.Field, tc.Msg, err)
		})
	}
}
