package agent

import (
	"context"

	"k8s.io/utils/clock"

	"github.com/kubelvs/kubelvs/pkg/syncer"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

// fakeKernel is a node's kernel made of the stateful fakes; it outlives
// the syncers started over it, as the kernel outlives an agent's restart.
type fakeKernel struct{ *syncertest.Kernel }

func newFakeKernel() *fakeKernel { return &fakeKernel{syncertest.NewKernel()} }

// syncer returns a syncer over the kernel, wired as the agent role wires
// the real one; the caller adopts.
func (k *fakeKernel) syncer(ctx context.Context, clk clock.PassiveClock) (*syncer.Syncer, error) {
	sk, err := k.Wire(ctx)
	if err != nil {
		return nil, err
	}
	return syncer.New(*sk, clk, nil), nil
}
