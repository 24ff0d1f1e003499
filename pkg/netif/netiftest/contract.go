package netiftest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/netif"
)

// Harness is what Contract runs on.
type Harness struct {
	// Open returns a handle on a host (or fake) without kubelvs0; called
	// once per subtest. The contract deletes kubelvs0 when done.
	Open func(t *testing.T) netif.Interface
	// Foreign makes an interface named kubelvs0 that is not a kubelvs
	// dummy, as another program would, on the host behind h. remove
	// fails t unless it is still there as it was made, then removes it.
	Foreign func(t *testing.T, h netif.Interface) (remove func())
	// Another returns a second handle on the host behind h, as a
	// restarted agent would open: it knows nothing of what h wrote.
	Another func(t *testing.T, h netif.Interface) netif.Interface
}

// Contract checks the behaviors kubelvs relies on from a netif.Interface
// on the one h opens: the Fake on the host (contract_test.go) and the
// kernel in the guest (package netifnl), so that a fake drifting from the
// kernel fails a test. Its VIPs are in 203.0.113.0/26 and 2001:db8:c1::/48.
func Contract(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"without kubelvs0 there are no addresses, and syncing them fails", noDevice},
		{"EnsureDevice is idempotent and keeps the addresses", ensureIdempotent},
		{"SyncAddresses makes kubelvs0 hold exactly the VIPs, listed sorted", syncRoundTrip},
		{"UpdateAddresses adds and removes its own addresses and leaves the others", updateAmongOthers},
		{"UpdateAddresses of addresses already there or already gone is success", updateIdempotent},
		{"a new handle updates and then syncs without knowing what kubelvs0 holds", updateUnknown},
		{"DeleteDevice removes kubelvs0 and its addresses; gone is success", deleteDevice},
		{"another program's kubelvs0 is refused with ErrNotOwned and left as it was", foreignRefused},
		{"a canceled context changes nothing and returns context.Canceled", canceledContext},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &env{ctx: context.Background(), i: h.Open(t), h: h}
			t.Cleanup(func() {
				if err := e.i.DeleteDevice(e.ctx); err != nil {
					t.Errorf("clean up: %v", err)
				}
			})
			c.run(t, e)
		})
	}
}

type env struct {
	ctx context.Context
	i   netif.Interface
	h   Harness
}

var (
	v4a, v4b = netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	v6a, v6b = netip.MustParseAddr("2001:db8:c1::1"), netip.MustParseAddr("2001:db8:c1::2")
)

func (e *env) ensure(t *testing.T) {
	t.Helper()
	if err := e.i.EnsureDevice(e.ctx); err != nil {
		t.Fatal(err)
	}
}

func (e *env) sync(t *testing.T, vips ...netip.Addr) {
	t.Helper()
	if err := e.i.SyncAddresses(e.ctx, vips); err != nil {
		t.Fatalf("sync %v: %v", vips, err)
	}
}

// expect checks that kubelvs0 holds exactly want, listed sorted.
func (e *env) expect(t *testing.T, want ...netip.Addr) {
	t.Helper()
	got, err := e.i.ListAddresses(e.ctx)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	want = slices.Clone(want)
	slices.SortFunc(want, netip.Addr.Compare)
	want = slices.Compact(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", netif.DeviceName, got, want)
	}
}

func (e *env) update(t *testing.T, i netif.Interface, add, del []netip.Addr) {
	t.Helper()
	if err := i.UpdateAddresses(e.ctx, add, del); err != nil {
		t.Fatalf("update add %v del %v: %v", add, del, err)
	}
}

func addrs(as ...netip.Addr) []netip.Addr { return as }

func noDevice(t *testing.T, e *env) {
	e.expect(t)
	if err := e.i.SyncAddresses(e.ctx, []netip.Addr{v4a}); err == nil || errors.Is(err, netif.ErrNotOwned) {
		t.Errorf("sync without %s: %v, want an error saying it does not exist", netif.DeviceName, err)
	}
	if err := e.i.UpdateAddresses(e.ctx, []netip.Addr{v4a}, nil); err == nil || errors.Is(err, netif.ErrNotOwned) {
		t.Errorf("update without %s: %v, want an error saying it does not exist", netif.DeviceName, err)
	}
	if err := e.i.DeleteDevice(e.ctx); err != nil {
		t.Errorf("delete a missing %s: %v, want success", netif.DeviceName, err)
	}
	e.expect(t)
}

func ensureIdempotent(t *testing.T, e *env) {
	e.ensure(t)
	e.ensure(t)
	e.expect(t)
	e.sync(t, v4a, v6a)
	e.ensure(t)
	e.expect(t, v4a, v6a)
	// The next sync after EnsureDevice still changes only what differs.
	e.sync(t, v4a, v6b)
	e.expect(t, v4a, v6b)
}

func syncRoundTrip(t *testing.T, e *env) {
	e.ensure(t)
	for _, want := range [][]netip.Addr{
		{v6b, v4b, v6a, v4a},
		{v4b, v6b},
		{v4a, v6a, v4a}, // a duplicate
		{v4a, v6a},
		{v6a},
		nil,
		{v4b},
	} {
		e.sync(t, want...)
		e.expect(t, want...)
	}
}

func updateAmongOthers(t *testing.T, e *env) {
	e.ensure(t)
	e.sync(t, v4a, v6a)
	e.update(t, e.i, addrs(v4b), addrs(v6a))
	e.expect(t, v4a, v4b)
	e.update(t, e.i, addrs(v6a, v6b), nil)
	e.expect(t, v4a, v4b, v6a, v6b)
	e.update(t, e.i, nil, addrs(v4a, v6b))
	e.expect(t, v4b, v6a)
	// One in both is added.
	e.update(t, e.i, addrs(v4a), addrs(v4a, v4b))
	e.expect(t, v4a, v6a)
	// A full sync after updates compares with what they left.
	e.sync(t, v4b, v6a)
	e.expect(t, v4b, v6a)
	e.update(t, e.i, addrs(v6b), addrs(v4b))
	e.expect(t, v6a, v6b)
}

func updateIdempotent(t *testing.T, e *env) {
	e.ensure(t)
	e.sync(t, v4a, v6a)
	for range 2 {
		e.update(t, e.i, addrs(v4a, v6b), addrs(v4b, v6a))
		e.expect(t, v4a, v6b)
	}
	e.update(t, e.i, nil, nil)
	e.expect(t, v4a, v6b)
	// After EnsureDevice, which reads kubelvs0 again.
	e.ensure(t)
	e.update(t, e.i, addrs(v4a), addrs(v6a))
	e.expect(t, v4a, v6b)
}

func updateUnknown(t *testing.T, e *env) {
	e.ensure(t)
	e.sync(t, v4a, v6a)
	o := e.h.Another(t, e.i)
	// A present address added and an absent one removed, among a real
	// change, by a handle that never read kubelvs0.
	e.update(t, o, addrs(v4a, v4b), addrs(v6a, v6b))
	e.expect(t, v4a, v4b)
	// Its next full sync reads kubelvs0 rather than trusting the update
	// alone: it removes v4a, which it never wrote.
	if err := o.SyncAddresses(e.ctx, addrs(v4b, v6b)); err != nil {
		t.Fatal(err)
	}
	e.expect(t, v4b, v6b)
	e.update(t, o, addrs(v6a), addrs(v4b))
	e.expect(t, v6a, v6b)
}

func deleteDevice(t *testing.T, e *env) {
	e.ensure(t)
	e.sync(t, v4a, v6a)
	for range 2 {
		if err := e.i.DeleteDevice(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.expect(t)
	if err := e.i.SyncAddresses(e.ctx, []netip.Addr{v4a}); err == nil {
		t.Errorf("sync after DeleteDevice: success, want an error")
	}
	if err := e.i.UpdateAddresses(e.ctx, []netip.Addr{v4a}, nil); err == nil {
		t.Errorf("update after DeleteDevice: success, want an error")
	}
	e.ensure(t)
	e.expect(t)
}

func foreignRefused(t *testing.T, e *env) {
	remove := e.h.Foreign(t, e.i)
	for name, err := range map[string]error{
		"ensure": e.i.EnsureDevice(e.ctx),
		"sync":   e.i.SyncAddresses(e.ctx, []netip.Addr{v4a}),
		"update": e.i.UpdateAddresses(e.ctx, []netip.Addr{v4a}, []netip.Addr{v4b}),
		"delete": e.i.DeleteDevice(e.ctx),
		"list": func() error {
			_, err := e.i.ListAddresses(e.ctx)
			return err
		}(),
	} {
		if !errors.Is(err, netif.ErrNotOwned) {
			t.Errorf("%s with another program's %s: %v, want ErrNotOwned", name, netif.DeviceName, err)
		}
	}
	remove()
	// Gone, kubelvs makes its own.
	e.ensure(t)
	e.sync(t, v4a)
	e.expect(t, v4a)
}

func canceledContext(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := e.i.EnsureDevice(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ensure: %v, want context.Canceled", err)
	}
	if err := e.i.SyncAddresses(e.ctx, []netip.Addr{v4a}); err == nil {
		t.Errorf("a canceled EnsureDevice created %s", netif.DeviceName)
	}
	e.ensure(t)
	e.sync(t, v4a, v6a)
	for name, err := range map[string]error{
		"sync":   e.i.SyncAddresses(ctx, []netip.Addr{v4b}),
		"update": e.i.UpdateAddresses(ctx, []netip.Addr{v4b}, []netip.Addr{v4a}),
		"delete": e.i.DeleteDevice(ctx),
		"ensure": e.i.EnsureDevice(ctx),
		"list": func() error {
			_, err := e.i.ListAddresses(ctx)
			return err
		}(),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
	}
	e.expect(t, v4a, v6a)
}
