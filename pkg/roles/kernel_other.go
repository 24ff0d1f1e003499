//go:build !linux

package roles

import (
	"context"
	"io"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// NetlinkKernel fails: the agent needs Linux.
func NetlinkKernel(context.Context, func(msg string, err error)) (syncer.Kernel, func(), error) {
	return syncer.Kernel{}, nil, ipvs.ErrNoIPVS
}

// Cleanup fails: the agent needs Linux.
func Cleanup(context.Context, io.Writer) error { return ipvs.ErrNoIPVS }

// Dump fails: the agent needs Linux.
func Dump(context.Context, io.Writer) error { return ipvs.ErrNoIPVS }
