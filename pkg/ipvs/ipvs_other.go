//go:build !linux

package ipvs

// New fails: IPVS exists only on Linux.
func New() (Interface, error) { return nil, ErrNoIPVS }

// CheckKernel fails: IPVS exists only on Linux.
func CheckKernel() error { return ErrNoIPVS }
