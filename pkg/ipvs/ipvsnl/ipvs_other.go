//go:build !linux

package ipvsnl

import "github.com/kubelvs/kubelvs/pkg/ipvs"

// New fails: IPVS exists only on Linux.
func New() (ipvs.Interface, error) { return nil, ipvs.ErrNoIPVS }

// CheckKernel fails: IPVS exists only on Linux.
func CheckKernel() error { return ipvs.ErrNoIPVS }
