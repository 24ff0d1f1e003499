// Package netiftest provides a fake netif.Interface keeping kubelvs0's state
// in memory, with fault injection.
package netiftest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
	"github.com/kubelvs/kubelvs/pkg/netif"
)

// Fake is an in-memory kubelvs0. Operation names for fault injection are
// the method names.
type Fake struct {
	fault.Injector

	mu     sync.Mutex
	exists bool
	up     bool
	addrs  map[netip.Addr]struct{}
	// foreign is the kind of another program's interface named kubelvs0
	// ("" when there is none).
	foreign string
	calls   map[string]int
}

var _ netif.Interface = (*Fake)(nil)

// NewFake returns a host without kubelvs0.
func NewFake() *Fake { return &Fake{addrs: map[netip.Addr]struct{}{}, calls: map[string]int{}} }

// enter counts a call of op and returns the fault injected into it, if any.
func (f *Fake) enter(op string) error {
	f.mu.Lock()
	f.calls[op]++
	f.mu.Unlock()
	return f.Check(op)
}

// Calls returns how many times op was called (successful or not, a
// canceled context aside).
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// AddForeignDevice makes kubelvs0 another program's interface of the given
// kind (a "bridge", say), replacing kubelvs's: every call then fails with
// netif.ErrNotOwned, as on the kernel, until RemoveForeignDevice.
func (f *Fake) AddForeignDevice(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.foreign = kind
	f.exists, f.up, f.addrs = false, false, map[netip.Addr]struct{}{}
}

// RemoveForeignDevice removes another program's kubelvs0 and returns its
// kind ("" if there was none).
func (f *Fake) RemoveForeignDevice() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	kind := f.foreign
	f.foreign = ""
	return kind
}

// owned returns netif.ErrNotOwned when kubelvs0 is another program's.
// f.mu is held.
func (f *Fake) owned() error {
	if f.foreign != "" {
		return fmt.Errorf("%s (type %s): %w", netif.DeviceName, f.foreign, netif.ErrNotOwned)
	}
	return nil
}

// EnsureDevice creates the device and sets it up.
func (f *Fake) EnsureDevice(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("EnsureDevice"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.owned(); err != nil {
		return err
	}
	f.exists, f.up = true, true
	return nil
}

// ListAddresses returns the sorted VIPs.
func (f *Fake) ListAddresses(ctx context.Context) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.enter("ListAddresses"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.owned(); err != nil {
		return nil, err
	}
	return f.sorted(), nil
}

func (f *Fake) sorted() []netip.Addr {
	out := make([]netip.Addr, 0, len(f.addrs))
	for a := range f.addrs {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// writable counts op and takes the lock for a write of the addresses, which
// needs kubelvs0 to exist and be the dummy kubelvs made; the returned
// function unlocks.
func (f *Fake) writable(ctx context.Context, op, what string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.enter(op); err != nil {
		return nil, err
	}
	f.mu.Lock()
	if err := f.owned(); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	if !f.exists {
		f.mu.Unlock()
		return nil, fmt.Errorf("%s: %s does not exist", what, netif.DeviceName)
	}
	return f.mu.Unlock, nil
}

// SyncAddresses makes the device hold exactly vips.
func (f *Fake) SyncAddresses(ctx context.Context, vips []netip.Addr) error {
	unlock, err := f.writable(ctx, "SyncAddresses", "sync addresses")
	if err != nil {
		return err
	}
	defer unlock()
	f.addrs = map[netip.Addr]struct{}{}
	for _, a := range vips {
		f.addrs[a] = struct{}{}
	}
	return nil
}

// UpdateAddresses adds add and removes del, at the cost of the change.
func (f *Fake) UpdateAddresses(ctx context.Context, add, del []netip.Addr) error {
	unlock, err := f.writable(ctx, "UpdateAddresses", "update addresses")
	if err != nil {
		return err
	}
	defer unlock()
	for _, a := range del {
		delete(f.addrs, a)
	}
	for _, a := range add {
		f.addrs[a] = struct{}{}
	}
	return nil
}

// DeleteDevice removes the device and its addresses.
func (f *Fake) DeleteDevice(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("DeleteDevice"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.owned(); err != nil {
		return err
	}
	f.exists, f.up, f.addrs = false, false, map[netip.Addr]struct{}{}
	return nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Dump prints the device state and its addresses with prefix lengths.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.foreign != "" {
		return netif.DeviceName + " " + f.foreign + " (not kubelvs's)\n"
	}
	if !f.exists {
		return netif.DeviceName + " absent\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s dummy up=%t\n", netif.DeviceName, f.up)
	for _, a := range f.sorted() {
		fmt.Fprintf(&b, "  inet %s\n", netif.Prefix(a))
	}
	return b.String()
}
