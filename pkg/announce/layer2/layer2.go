// Package layer2 implements announce.Layer2 on raw sockets: it answers ARP
// requests (IPv4, an AF_PACKET socket of EtherType ARP, packets built with
// mdlayher/arp) and neighbor solicitations (IPv6, an ICMPv6 socket through
// mdlayher/ndp) for a set of addresses, on one interface, with that
// interface's hardware address.
//
// The node holds its VIPs on kubelvs0 with ARP answers suppressed
// (net.ipv4.conf.all.arp_ignore=1, arp_announce=2, see pkg/netif); the
// kernel answers neighbor solicitations only for addresses of the receiving
// interface, so it ignores those for VIPs on kubelvs0. The Responder of the
// node that owns an address (announce.Owner) is then the only one on the
// link that answers for it.
//
// When an address enters the set, the Responder also announces it
// unsolicited, at once and again after 1 s and 2 s: a gratuitous ARP
// request (sender and target IP both the address, RFC 5227's "ARP
// Announcement", what the Linux kernel itself sends when an address comes
// up) and an unsolicited neighbor advertisement to all-nodes with the
// Override flag. A Linux client that already has an entry for the address
// takes the new hardware address from either with its default sysctls; one
// that has none creates none (see the package's kernel tests).
package layer2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

// repeats are the delays, after an address enters the set, of the
// unsolicited announcements that follow the immediate one, in case one is
// lost.
var repeats = [...]time.Duration{1 * time.Second, 2 * time.Second}

// ErrStopped is returned by Announce after Stop.
var ErrStopped = errors.New("layer2 responder stopped")

// Responder answers ARP and NDP for the addresses of the last Announce on
// one interface. It is safe for concurrent use.
type Responder struct {
	log logr.Logger
	ifi *net.Interface
	mac net.HardwareAddr
	m   *metrics

	arp *packet.Conn
	// ndp is nil when the kernel has no IPv6 (the socket could not be
	// opened); Announce then refuses IPv6 addresses.
	ndp *ndp.Conn

	mu sync.RWMutex
	// set maps each answered address to its announcement, whose timers
	// send the repeats.
	set map[netip.Addr]*announcement
	// groups counts the addresses of set in each solicited-node multicast
	// group the NDP socket joined.
	groups  map[netip.Addr]int
	stopped bool

	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup
}

var _ announce.Layer2 = (*Responder)(nil)

// announcement is one address's stay in the set; its timers are stopped
// when the address leaves, and a timer that fires anyway sends nothing
// unless its announcement is still the address's current one.
type announcement struct {
	timers []*time.Timer
}

func (a *announcement) cancel() {
	for _, t := range a.timers {
		t.Stop()
	}
}

// New opens the sockets on the interface named ifname and starts answering
// (an empty set until Announce). It must run in the network namespace of
// the interface; the sockets stay there. reg, when not nil, gets the
// metrics.
func New(ifname string, log logr.Logger, reg prometheus.Registerer) (*Responder, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("layer2: interface %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("layer2: interface %s has no Ethernet address (%q)", ifname, ifi.HardwareAddr)
	}
	r := &Responder{
		log:    log.WithValues("interface", ifname),
		ifi:    ifi,
		mac:    ifi.HardwareAddr,
		m:      newMetrics(),
		set:    map[netip.Addr]*announcement{},
		groups: map[netip.Addr]int{},
		done:   make(chan struct{}),
	}
	if r.arp, err = listenARP(ifi); err != nil {
		return nil, fmt.Errorf("layer2: ARP socket on %s: %w", ifname, err)
	}
	if r.ndp, err = listenNDP(ifi); err != nil {
		r.log.Error(err, "No NDP socket: IPv6 addresses will not be answered")
		r.ndp = nil
	}
	if reg != nil {
		if err := r.m.register(reg); err != nil {
			r.close()
			return nil, err
		}
	}
	r.wg.Add(1)
	go r.readARP()
	if r.ndp != nil {
		r.wg.Add(1)
		go r.readNDP()
	}
	r.log.Info("Answering ARP and NDP", "mac", r.mac.String(), "ndp", r.ndp != nil)
	return r, nil
}

// HardwareAddr is the address the Responder answers with.
func (r *Responder) HardwareAddr() net.HardwareAddr { return slices.Clone(r.mac) }

// Addresses returns the answered addresses, sorted.
func (r *Responder) Addresses() []netip.Addr {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]netip.Addr, 0, len(r.set))
	for a := range r.set {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// has reports whether a is answered.
func (r *Responder) has(a netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.set[a]
	return ok
}

// Announce makes the answered addresses exactly addrs: it costs the
// difference with the previous call. An address new to the set is announced
// unsolicited at once and again after 1 s and 2 s; an address that leaves
// stops being answered, and its pending repeats are canceled. An IPv6
// address whose solicited-node group cannot be joined is left out of the
// set and reported in the error, so a later call retries it.
func (r *Responder) Announce(ctx context.Context, addrs []netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want, errs := normalize(addrs)
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return ErrStopped
	}
	add, del := diff(r.set, want)
	for _, a := range del {
		r.set[a].cancel()
		delete(r.set, a)
		if a.Is6() {
			r.leave(a)
		}
	}
	var added []netip.Addr
	for _, a := range add {
		if a.Is6() {
			if r.ndp == nil {
				errs = append(errs, fmt.Errorf("layer2: cannot answer %s: no NDP socket", a))
				continue
			}
			if err := r.join(a); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		an := &announcement{}
		r.set[a] = an
		for _, d := range repeats {
			an.timers = append(an.timers, time.AfterFunc(d, func() { r.repeat(a, an) }))
		}
		added = append(added, a)
	}
	r.m.addresses.Set(float64(len(r.set)))
	r.mu.Unlock()

	if len(added) > 0 || len(del) > 0 {
		r.log.V(1).Info("Answered addresses changed", "added", added, "removed", del)
	}
	for _, a := range added {
		r.gratuitous(a)
	}
	return errors.Join(errs...)
}

// repeat sends a repeat of an's unsolicited announcement if an is still
// its address's stay in the set.
func (r *Responder) repeat(a netip.Addr, an *announcement) {
	r.mu.RLock()
	current := !r.stopped && r.set[a] == an
	r.mu.RUnlock()
	if current {
		r.gratuitous(a)
	}
}

// gratuitous announces a unsolicited; a failure is logged, not returned:
// the address is answered all the same.
func (r *Responder) gratuitous(a netip.Addr) {
	var err error
	if a.Is4() {
		err = r.gratuitousARP(a)
	} else {
		err = r.unsolicitedNA(a)
	}
	if err != nil {
		if !r.isStopped() {
			r.log.Error(err, "Unsolicited announcement failed", "address", a)
		}
		return
	}
	r.m.gratuitous.WithLabelValues(family(a)).Inc()
}

// Stop stops answering: it cancels the pending announcements, closes the
// sockets (which leaves the multicast groups) and waits for the read loops
// to end. It may be called more than once.
func (r *Responder) Stop() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.stopped = true
		for a, an := range r.set {
			an.cancel()
			delete(r.set, a)
		}
		clear(r.groups)
		r.m.addresses.Set(0)
		r.mu.Unlock()
		close(r.done)
		r.close()
		r.wg.Wait()
		r.log.Info("Stopped answering ARP and NDP")
	})
}

func (r *Responder) close() {
	if r.arp != nil {
		_ = r.arp.Close()
	}
	if r.ndp != nil {
		_ = r.ndp.Close()
	}
}

func (r *Responder) isStopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// backoff waits after a read error that is not the socket's closing, so
// that a broken interface does not spin; it reports false once stopped.
func (r *Responder) backoff(what string, err error) bool {
	if r.isStopped() || errors.Is(err, net.ErrClosed) {
		return false
	}
	r.log.Error(err, "Read failed", "socket", what)
	select {
	case <-r.done:
		return false
	case <-time.After(time.Second):
		return true
	}
}

// normalize returns addrs unmapped, without zones and without duplicates;
// invalid addresses are reported.
func normalize(addrs []netip.Addr) (map[netip.Addr]bool, []error) {
	want := make(map[netip.Addr]bool, len(addrs))
	var errs []error
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			errs = append(errs, fmt.Errorf("layer2: cannot answer for %q", a))
			continue
		}
		want[a] = true
	}
	return want, errs
}

// diff returns the addresses of want missing from have and those of have
// not in want, each sorted.
func diff[V any](have map[netip.Addr]V, want map[netip.Addr]bool) (add, del []netip.Addr) {
	for a := range want {
		if _, ok := have[a]; !ok {
			add = append(add, a)
		}
	}
	for a := range have {
		if !want[a] {
			del = append(del, a)
		}
	}
	slices.SortFunc(add, netip.Addr.Compare)
	slices.SortFunc(del, netip.Addr.Compare)
	return add, del
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}
