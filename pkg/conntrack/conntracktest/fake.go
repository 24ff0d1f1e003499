// Package conntracktest provides a fake conntrack.Interface holding flows in
// memory, with the same matching as the kernel implementation and fault
// injection.
package conntracktest

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
)

// Fake is an in-memory conntrack table. Operation names for fault injection
// are "ListFlows" and "DeleteFlows".
type Fake struct {
	fault.Injector

	mu    sync.Mutex
	flows map[conntrack.Flow]struct{}
	calls map[string]int
}

// Calls returns how many times op was called, failed calls included.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *Fake) count(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
}

var _ conntrack.Interface = (*Fake)(nil)

// NewFake returns a table holding flows.
func NewFake(flows ...conntrack.Flow) *Fake {
	f := &Fake{flows: map[conntrack.Flow]struct{}{}}
	f.Add(flows...)
	return f
}

// Add inserts flows, as traffic would.
func (f *Fake) Add(flows ...conntrack.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range flows {
		f.flows[fl] = struct{}{}
	}
}

// ListFlows returns the flows to vip:port over proto.
func (f *Fake) ListFlows(ctx context.Context, vip netip.Addr, proto uint8, port uint16) ([]conntrack.Flow, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.count("ListFlows")
	if err := f.Check("ListFlows"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := netip.AddrPortFrom(vip.Unmap(), port)
	var out []conntrack.Flow
	for fl := range f.flows {
		if fl.Protocol == proto && fl.OrigDst == want {
			out = append(out, fl)
		}
	}
	conntrack.SortFlows(out)
	return out, nil
}

// DeleteFlows removes the flows matching the targets.
func (f *Fake) DeleteFlows(ctx context.Context, targets []conntrack.Target) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.count("DeleteFlows")
	if err := f.Check("DeleteFlows"); err != nil {
		return 0, err
	}
	m := conntrack.NewMatcher(targets)
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for fl := range f.flows {
		if m.Match(fl) {
			delete(f.flows, fl)
			n++
		}
	}
	return n, nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Dump prints every flow, sorted, one per line.
func (f *Fake) Dump() string {
	f.mu.Lock()
	all := make([]conntrack.Flow, 0, len(f.flows))
	for fl := range f.flows {
		all = append(all, fl)
	}
	f.mu.Unlock()
	conntrack.SortFlows(all)
	var b strings.Builder
	for _, fl := range all {
		b.WriteString(fl.String() + "\n")
	}
	return b.String()
}
