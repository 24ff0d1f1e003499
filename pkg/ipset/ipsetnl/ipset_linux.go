// Package ipsetnl implements ipset.Interface on the kernel through netlink
// (lrh3321/ipset-go, and a raw socket for batched adds).
package ipsetnl

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	lib "github.com/lrh3321/ipset-go"

	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// Netlink implements Interface on one long-lived netlink handle for the
// writes, with a mutex that keeps requests and their replies paired on its
// socket, and lists sets on sockets of their own (dumpEntries), one listing
// at a time (lmu). A listing of thousands of members took seconds on a
// busy CPU; on the one handle, every member write (a create's restriction,
// an ownership record) waited behind the periodic resync's listings for
// that long, and with it every change behind the syncer's lock (make
// bench: 4 s). Replace's swap takes lmu too, so that a listing of ours
// never makes the kernel refuse it as busy.
type Netlink struct {
	mu  sync.Mutex
	h   *lib.Handle
	lmu sync.Mutex
}

var _ ipset.Interface = (*Netlink)(nil)

// New opens the netlink handle. It fails if the kernel has no ipset support.
func New() (*Netlink, error) {
	h, err := lib.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open ipset netlink handle: %w", err)
	}
	n := &Netlink{h: h}
	if err := n.do(func(h *lib.Handle) error { _, _, err := h.Protocol(); return err }); err != nil {
		h.Close()
		return nil, fmt.Errorf("ipset protocol query (is ip_set loaded? modprobe ip_set): %w", err)
	}
	return n, nil
}

// do runs f on the write handle, under its lock.
func (n *Netlink) do(f func(h *lib.Handle) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h == nil {
		return errors.New("ipset handle closed")
	}
	return guard(func() error { return f(n.h) })
}

// list runs a listing f (on a socket of its own) under the listing lock.
func (n *Netlink) list(f func() error) error {
	n.lmu.Lock()
	defer n.lmu.Unlock()
	return guard(f)
}

// guard runs f. The library type-asserts errors and can panic on an
// unexpected one; turn that into an error instead of taking the agent down.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ipset netlink: %v", r)
		}
	}()
	return f()
}

// Close releases the handle.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	return nil
}

func isNotExist(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, lib.ErrSetNotExist)
}

func isCode(err error, code int) bool {
	var ie lib.IPSetError
	return errors.As(err, &ie) && int(ie) == code
}

func (n *Netlink) create(s ipset.Set) error {
	opts := lib.CreateOptions{Family: uint8(s.Family), Size: s.HashSize, Replace: true}
	return n.do(func(h *lib.Handle) error { return h.Create(s.Name, string(s.Type), opts) })
}

// EnsureSet creates the set, or checks the existing one is compatible: the
// kernel accepts a create of an identical existing set (no NLM_F_EXCL) and
// refuses any other with EEXIST, so this is one round trip.
func (n *Netlink) EnsureSet(ctx context.Context, s ipset.Set) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	err := n.create(s)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EEXIST) || isCode(err, lib.IPSET_ERR_EXIST_SETNAME2) || isCode(err, lib.IPSET_ERR_EXIST):
		return fmt.Errorf("ensure ipset %s: %w", s, ipset.ErrMismatch)
	default:
		return fmt.Errorf("ensure ipset %s: %w", s, err)
	}
}

// DestroySet destroys an owned set; a missing set is success.
func (n *Netlink) DestroySet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	err := n.do(func(h *lib.Handle) error { return h.Destroy(name) })
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("destroy ipset %s: %w", name, err)
	}
	return nil
}

// ListEntries dumps the set's members, sorted.
func (n *Netlink) ListEntries(ctx context.Context, name string) ([]ipset.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var typ string
	var les []lib.Entry
	err := n.list(func() (err error) { typ, les, err = dumpEntries(name); return err })
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("list ipset %s: %w", name, ipset.ErrNotFound)
		}
		return nil, fmt.Errorf("list ipset %s: %w", name, err)
	}
	out := make([]ipset.Entry, 0, len(les))
	for i := range les {
		e, err := fromLib(ipset.Type(typ), &les[i])
		if err != nil {
			return nil, fmt.Errorf("list ipset %s: %w", name, err)
		}
		out = append(out, e)
	}
	ipset.SortEntries(out)
	return out, nil
}

// AddEntry adds a member to an owned set; a present member is success.
func (n *Netlink) AddEntry(ctx context.Context, name string, e ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	le := toLib(e)
	err := n.do(func(h *lib.Handle) error { return h.Add(name, &le) })
	switch {
	case err == nil || isCode(err, lib.IPSET_ERR_EXIST):
		return nil
	case isNotExist(err):
		return fmt.Errorf("add %s to ipset %s: %w: %w", e, name, ipset.ErrNotFound, err)
	}
	return fmt.Errorf("add %s to ipset %s: %w", e, name, err)
}

// DelEntry removes a member from an owned set; an absent member is success.
func (n *Netlink) DelEntry(ctx context.Context, name string, e ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ipset.CheckOwned(name); err != nil {
		return err
	}
	le := toLib(e)
	err := n.do(func(h *lib.Handle) error { return h.Del(name, &le) })
	if err != nil && !isCode(err, lib.IPSET_ERR_EXIST) {
		if isNotExist(err) {
			return nil // the set itself is gone, so is the member
		}
		return fmt.Errorf("delete %s from ipset %s: %w", e, name, err)
	}
	return nil
}

// TempName returns the name of the scratch set Replace builds for name.
func TempName(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%sTMP-%08x", ipset.Prefix, h.Sum32())
}

// Replace fills a scratch set, swaps it with the live one (the kernel swaps
// the two names atomically) and destroys the scratch set.
func (n *Netlink) Replace(ctx context.Context, s ipset.Set, entries []ipset.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	tmp := s
	tmp.Name = TempName(s.Name)
	tmp.HashSize = hashSizeFor(len(entries), s.HashSize)
	if err := n.DestroySet(ctx, tmp.Name); err != nil {
		return fmt.Errorf("replace ipset %s: %w", s.Name, err)
	}
	if err := n.EnsureSet(ctx, tmp); err != nil {
		return fmt.Errorf("replace ipset %s: %w", s.Name, err)
	}
	// A scratch set left behind is reported with the failure: the next
	// Replace destroys it first.
	if err := n.do(func(*lib.Handle) error { return addEntries(tmp.Name, entries) }); err != nil {
		return fmt.Errorf("replace ipset %s: %w", s.Name, errors.Join(err, n.DestroySet(ctx, tmp.Name)))
	}
	if err := n.EnsureSet(ctx, s); err != nil {
		return fmt.Errorf("replace ipset %s: %w", s.Name, errors.Join(err, n.DestroySet(ctx, tmp.Name)))
	}
	if err := n.swap(tmp.Name, s.Name); err != nil {
		return fmt.Errorf("replace ipset %s: swap: %w", s.Name, errors.Join(err, n.DestroySet(ctx, tmp.Name)))
	}
	if err := n.DestroySet(ctx, tmp.Name); err != nil {
		return fmt.Errorf("replace ipset %s: the swap is done, but the scratch set %s stays: %w", s.Name, tmp.Name, err)
	}
	return nil
}

// swap retries while a reader is dumping one of the sets: the kernel refuses
// to swap a set that a netlink dump holds (IPSET_ERR_BUSY / EBUSY). It holds
// the listing lock, so that no listing of this handle is that reader.
func (n *Netlink) swap(from, to string) error {
	n.lmu.Lock()
	defer n.lmu.Unlock()
	var err error
	for i := 0; i < 200; i++ {
		err = n.do(func(h *lib.Handle) error { return h.Swap(from, to) })
		if err == nil || !(isCode(err, lib.IPSET_ERR_BUSY) || errors.Is(err, syscall.EBUSY)) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return err
}

func toLib(e ipset.Entry) lib.Entry {
	var le lib.Entry
	if e.IP.IsValid() {
		le.IP = net.IP(e.IP.AsSlice())
	}
	if e.Protocol != 0 || e.Port != 0 {
		p, port := e.Protocol, e.Port
		le.Protocol, le.Port = &p, &port
	}
	if e.Net.IsValid() {
		ip, bits := net.IP(e.Net.Masked().Addr().AsSlice()), uint8(e.Net.Bits())
		if e.IP.IsValid() {
			le.IP2, le.CIDR2 = ip, bits
		} else {
			le.IP, le.CIDR = ip, bits
		}
	}
	return le
}

func fromLib(t ipset.Type, le *lib.Entry) (ipset.Entry, error) {
	var e ipset.Entry
	addr := func(ip net.IP) (netip.Addr, error) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return a, fmt.Errorf("bad address %v in entry", ip)
		}
		return a.Unmap(), nil
	}
	if le.Protocol != nil {
		e.Protocol = *le.Protocol
	}
	if le.Port != nil {
		e.Port = *le.Port
	}
	if t == ipset.HashNet {
		a, err := addr(le.IP)
		if err != nil {
			return e, err
		}
		bits := int(le.CIDR)
		if bits == 0 {
			bits = a.BitLen()
		}
		e.Net = netip.PrefixFrom(a, bits)
		return e, nil
	}
	if le.IP != nil {
		a, err := addr(le.IP)
		if err != nil {
			return e, err
		}
		e.IP = a
	}
	if le.IP2 != nil {
		a, err := addr(le.IP2)
		if err != nil {
			return e, err
		}
		bits := int(le.CIDR2)
		if bits == 0 {
			bits = a.BitLen()
		}
		e.Net = netip.PrefixFrom(a, bits)
	}
	return e, nil
}
