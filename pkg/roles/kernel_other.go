//go:build !linux

package roles

import (
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// NetlinkKernel fails: the agent needs Linux.
func NetlinkKernel() (syncer.Kernel, func(), error) {
	return syncer.Kernel{}, nil, ipvs.ErrNoIPVS
}
