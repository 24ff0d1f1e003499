package envtest

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/corpus"
)

// TestAddressPoolRulesMatchValidation: the API server and
// validation.AddressPool agree on thousands of AddressPools that differ in
// one address field (corpus.PoolParitySpecs); test/floor checks the same
// on the oldest supported API server.
func TestAddressPoolRulesMatchValidation(t *testing.T) {
	corpus.CheckPoolParity(t, func(p *lvsv1.AddressPool) error {
		return k8s.Create(context.Background(), p, client.DryRunAll)
	}, apierrors.IsInvalid)
}
