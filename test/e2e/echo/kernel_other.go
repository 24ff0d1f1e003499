//go:build !linux

package echo

import "errors"

var errNotLinux = errors.New("kernel state needs Linux")

// AddForeign fails: kernel state needs Linux.
func AddForeign() error { return errNotLinux }

// DeleteForeign fails: kernel state needs Linux.
func DeleteForeign() error { return errNotLinux }

// DumpKernel fails: kernel state needs Linux.
func DumpKernel() ([]string, error) { return nil, errNotLinux }
