// Package ipset is the model of the kernel ipsets kubelvs owns — sets,
// entries, their differences — and the Interface they are managed through:
// every set kubelvs creates, changes or destroys is named with the KUBELVS-
// prefix, and calls that would change any other set fail with ErrNotOwned.
// It imports no netlink: the implementation on one long-lived netlink handle
// is package ipsetnl (the `ipset` tool is never executed), the fake package
// ipsettest.
package ipset

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Prefix starts the name of every set kubelvs owns.
const Prefix = "KUBELVS-"

// MaxNameLen is the longest set name the kernel accepts.
const MaxNameLen = 31

var (
	// ErrNotOwned is returned when a call would change a set whose name does
	// not start with Prefix.
	ErrNotOwned = errors.New("ipset not owned by kubelvs")
	// ErrNotFound is returned when a set does not exist.
	ErrNotFound = errors.New("ipset not found")
	// ErrMismatch is returned by EnsureSet when a set of that name exists with
	// another type, family or options.
	ErrMismatch = errors.New("ipset exists with different type or options")
)

// Interface is what kubelvs needs from the kernel's ipsets.
type Interface interface {
	// EnsureSet creates the set if it does not exist. It fails with
	// ErrMismatch if a set of that name exists with other parameters.
	EnsureSet(ctx context.Context, s Set) error
	// DestroySet destroys the set; a set already gone is success.
	DestroySet(ctx context.Context, name string) error
	// ListEntries returns the members of the set, sorted.
	ListEntries(ctx context.Context, name string) ([]Entry, error)
	// AddEntry adds a member; a member already present is success.
	AddEntry(ctx context.Context, name string, e Entry) error
	// DelEntry removes a member; a member already absent is success.
	DelEntry(ctx context.Context, name string, e Entry) error
	// Replace makes the set hold exactly entries, atomically: readers see
	// either the old or the new members, never a mix or an empty set. The
	// set is created if missing.
	Replace(ctx context.Context, s Set, entries []Entry) error
	// Close releases the netlink handle.
	Close() error
}

// Type is an ipset type.
type Type string

// The set types kubelvs uses.
const (
	HashIP        Type = "hash:ip"
	HashIPPort    Type = "hash:ip,port"
	HashIPPortNet Type = "hash:ip,port,net"
	HashNet       Type = "hash:net"
)

// Family is the address family of a set.
type Family uint8

// Families, numbered like the kernel's AF_INET and AF_INET6.
const (
	IPv4 Family = 2
	IPv6 Family = 10
)

// String returns the name `ipset` uses for the family.
func (f Family) String() string {
	switch f {
	case IPv4:
		return "inet"
	case IPv6:
		return "inet6"
	}
	return "family(" + strconv.Itoa(int(f)) + ")"
}

// Set describes a set.
type Set struct {
	Name   string
	Type   Type
	Family Family
	// HashSize is the initial hash size; 0 lets the kernel choose (1024).
	// Sets grow as needed up to 65536 members.
	HashSize uint32
}

// String formats the set like `ipset create` arguments.
func (s Set) String() string {
	str := fmt.Sprintf("%s %s family %s", s.Name, s.Type, s.Family)
	if s.HashSize != 0 {
		str += fmt.Sprintf(" hashsize %d", s.HashSize)
	}
	return str
}

// Equal reports whether two set descriptions are the same.
func (s Set) Equal(o Set) bool { return s == o }

// Validate checks the name is owned and fits the kernel's limit.
func (s Set) Validate() error {
	if err := CheckOwned(s.Name); err != nil {
		return err
	}
	if len(s.Name) > MaxNameLen {
		return fmt.Errorf("ipset name %q longer than %d characters", s.Name, MaxNameLen)
	}
	if s.Family != IPv4 && s.Family != IPv6 {
		return fmt.Errorf("ipset %s: bad family %d", s.Name, s.Family)
	}
	return nil
}

// CheckOwned returns ErrNotOwned unless name starts with Prefix.
func CheckOwned(name string) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("%q: %w", name, ErrNotOwned)
	}
	return nil
}

// Protocol numbers of the protocols kubelvs balances.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// Entry is one member. Which fields are set depends on the set type:
// hash:ip uses IP; hash:ip,port adds Protocol and Port; hash:ip,port,net adds
// Net; hash:net uses Net only. Entry is comparable and is its own key.
type Entry struct {
	IP       netip.Addr
	Protocol uint8
	Port     uint16
	Net      netip.Prefix
}

// Key returns the entry itself: entries are comparable map keys.
func (e Entry) Key() Entry { return e }

// Equal reports whether two entries are the same member.
func (e Entry) Equal(o Entry) bool { return e == o }

// String formats the entry as `ipset add` does, e.g. "10.0.0.1,tcp:80,10.0.0.0/8".
func (e Entry) String() string {
	var parts []string
	if e.IP.IsValid() {
		parts = append(parts, e.IP.String())
	}
	if e.Protocol != 0 || e.Port != 0 {
		parts = append(parts, ProtoName(e.Protocol)+":"+strconv.Itoa(int(e.Port)))
	}
	if e.Net.IsValid() {
		parts = append(parts, e.Net.String())
	}
	return strings.Join(parts, ",")
}

// Compare orders entries for sorted listings and dumps.
func (e Entry) Compare(o Entry) int {
	if c := e.IP.Compare(o.IP); c != 0 {
		return c
	}
	if e.Protocol != o.Protocol {
		return int(e.Protocol) - int(o.Protocol)
	}
	if e.Port != o.Port {
		return int(e.Port) - int(o.Port)
	}
	if c := e.Net.Addr().Compare(o.Net.Addr()); c != 0 {
		return c
	}
	return e.Net.Bits() - o.Net.Bits()
}

// SortEntries sorts entries in place.
func SortEntries(es []Entry) { slices.SortFunc(es, Entry.Compare) }

// ProtoName returns the name ipset prints for a protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// Diff returns the entries to add and to delete to turn have into want.
func Diff(have, want []Entry) (add, del []Entry) {
	h := make(map[Entry]struct{}, len(have))
	for _, e := range have {
		h[e] = struct{}{}
	}
	w := make(map[Entry]struct{}, len(want))
	for _, e := range want {
		w[e] = struct{}{}
		if _, ok := h[e]; !ok {
			add = append(add, e)
		}
	}
	for _, e := range have {
		if _, ok := w[e]; !ok {
			del = append(del, e)
		}
	}
	return add, del
}
