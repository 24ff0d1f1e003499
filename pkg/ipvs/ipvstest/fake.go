// Package ipvstest provides a fake ipvs.Interface that keeps state in memory,
// behaves like the kernel (ErrExists, ErrNotFound, idempotent deletes) and can
// fail chosen or random calls.
package ipvstest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest/fault"
)

// Fake is an in-memory IPVS table. Operation names for fault injection are
// the method names ("AddRealServer", ...).
type Fake struct {
	fault.Injector

	mu       sync.Mutex
	services map[ipvs.Key]*service
	calls    map[string]int
}

type service struct {
	vs  ipvs.VirtualServer
	rss map[ipvs.RealKey]ipvs.RealServer
}

var _ ipvs.Interface = (*Fake)(nil)

// NewFake returns an empty table.
func NewFake() *Fake {
	return &Fake{services: map[ipvs.Key]*service{}, calls: map[string]int{}}
}

// Calls returns how many times op was called (successful or not), so tests
// can check that a sync issued only the operations it needed.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *Fake) enter(op string) error {
	f.mu.Lock()
	f.calls[op]++
	f.mu.Unlock()
	return f.Check(op)
}

// ListVirtualServers returns every virtual server, sorted.
func (f *Fake) ListVirtualServers(ctx context.Context) ([]ipvs.VirtualServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.enter("ListVirtualServers"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ipvs.VirtualServer, 0, len(f.services))
	for _, s := range f.services {
		out = append(out, s.vs)
	}
	ipvs.SortVirtualServers(out)
	return out, nil
}

// GetVirtualServer returns one virtual server.
func (f *Fake) GetVirtualServer(ctx context.Context, k ipvs.Key) (ipvs.VirtualServer, error) {
	if err := ctx.Err(); err != nil {
		return ipvs.VirtualServer{}, err
	}
	if err := f.enter("GetVirtualServer"); err != nil {
		return ipvs.VirtualServer{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[k]
	if !ok {
		return ipvs.VirtualServer{}, fmt.Errorf("get virtual server %s: %w", k, ipvs.ErrNotFound)
	}
	return s.vs, nil
}

// AddVirtualServer adds a virtual server.
func (f *Fake) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("AddVirtualServer"); err != nil {
		return err
	}
	if err := vs.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[vs.Key()]; ok {
		return fmt.Errorf("add virtual server %s: %w", vs, ipvs.ErrExists)
	}
	f.services[vs.Key()] = &service{vs: stored(vs), rss: map[ipvs.RealKey]ipvs.RealServer{}}
	return nil
}

// stored is vs as the kernel keeps it and reads it back: a persistence
// netmask only with persistence, resolved to a prefix length.
func stored(vs ipvs.VirtualServer) ipvs.VirtualServer {
	if vs.Timeout == 0 {
		vs.NetmaskBits = 0
	} else {
		vs.NetmaskBits = vs.Netmask()
	}
	return vs
}

// UpdateVirtualServer replaces a virtual server's settings.
func (f *Fake) UpdateVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("UpdateVirtualServer"); err != nil {
		return err
	}
	if err := vs.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[vs.Key()]
	if !ok {
		return fmt.Errorf("update virtual server %s: %w", vs, ipvs.ErrNotFound)
	}
	s.vs = stored(vs)
	return nil
}

// DeleteVirtualServer deletes a virtual server; missing is success.
func (f *Fake) DeleteVirtualServer(ctx context.Context, k ipvs.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("DeleteVirtualServer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, k)
	return nil
}

// ListRealServers returns the real servers of a virtual server, sorted.
func (f *Fake) ListRealServers(ctx context.Context, k ipvs.Key) ([]ipvs.RealServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.enter("ListRealServers"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[k]
	if !ok {
		return nil, fmt.Errorf("list real servers of %s: %w", k, ipvs.ErrNotFound)
	}
	return s.sorted(), nil
}

func (s *service) sorted() []ipvs.RealServer {
	out := make([]ipvs.RealServer, 0, len(s.rss))
	for _, rs := range s.rss {
		out = append(out, rs)
	}
	ipvs.SortRealServers(out)
	return out
}

// refused returns the error the kernel (with ipvsnl) gives a real server it
// cannot hold: a negative weight (ERANGE), an unknown forwarding method, an
// address of the other family than the virtual server's.
func refused(op string, k ipvs.Key, rs ipvs.RealServer) error {
	switch {
	case rs.Weight < 0:
		return fmt.Errorf("%s %s to %s: weight out of range", op, rs, k)
	case rs.Forwarding > ipvs.Tunnel:
		return fmt.Errorf("%s %s to %s: unknown forwarding %s", op, rs, k, rs.Forwarding)
	case rs.Address.Is4() != k.Address.Is4():
		return fmt.Errorf("%s %s to %s: not of the virtual server's address family", op, rs, k)
	}
	return nil
}

func (f *Fake) realServer(op string, k ipvs.Key, rs ipvs.RealServer, wantExist bool) error {
	if err := f.enter(op); err != nil {
		return err
	}
	if err := refused(op, k, rs); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[k]
	if !ok {
		return fmt.Errorf("%s %s: %w", op, k, ipvs.ErrNotFound)
	}
	cur, exists := s.rss[rs.Key()]
	switch {
	case exists && !wantExist:
		return fmt.Errorf("%s %s to %s: %w", op, rs, k, ipvs.ErrExists)
	case !exists && wantExist:
		return fmt.Errorf("%s %s of %s: %w", op, rs, k, ipvs.ErrNotFound)
	}
	rs.ActiveConns, rs.InactiveConns = cur.ActiveConns, cur.InactiveConns
	s.rss[rs.Key()] = rs
	return nil
}

// AddRealServer adds a real server.
func (f *Fake) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.realServer("AddRealServer", k, rs, false)
}

// UpdateRealServer changes a real server's weight and forwarding.
func (f *Fake) UpdateRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.realServer("UpdateRealServer", k, rs, true)
}

// DeleteRealServer removes a real server; missing is success.
func (f *Fake) DeleteRealServer(ctx context.Context, k ipvs.Key, rk ipvs.RealKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.enter("DeleteRealServer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.services[k]; ok {
		delete(s.rss, rk)
	}
	return nil
}

// SetConns sets the connection counters of a real server, as traffic would,
// so drain logic can be tested.
func (f *Fake) SetConns(k ipvs.Key, rk ipvs.RealKey, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[k]
	if !ok {
		return ipvs.ErrNotFound
	}
	rs, ok := s.rss[rk]
	if !ok {
		return ipvs.ErrNotFound
	}
	rs.ActiveConns, rs.InactiveConns = active, inactive
	s.rss[rk] = rs
	return nil
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// Dump prints the table sorted, one virtual server per line followed by its
// real servers indented, for golden files.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	vss := make([]ipvs.VirtualServer, 0, len(f.services))
	for _, s := range f.services {
		vss = append(vss, s.vs)
	}
	ipvs.SortVirtualServers(vss)
	var b strings.Builder
	for _, vs := range vss {
		fmt.Fprintf(&b, "%s\n", vs)
		for _, rs := range f.services[vs.Key()].sorted() {
			fmt.Fprintf(&b, "  -> %s\n", rs)
		}
	}
	return b.String()
}
