package envtest

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// allocAPI is an API server of the allocation tests' own: the suite's
// controller elects no leader, so on the suite's API server it would
// allocate beside the controllers under test.
type allocAPI struct {
	t    *testing.T
	env  *envtest.Environment
	c    client.Client
	user *rest.Config // the controller's service account, with config/rbac
	leNS string       // where the controllers' Lease is
	// stops stop the controllers started.
	stops []func()
}

func newAllocAPI(t *testing.T) *allocAPI {
	t.Helper()
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start a second envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the second envtest: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	a := &allocAPI{t: t, env: env, c: c, leNS: "kubelvs-system"}
	a.ns(a.leNS, nil)
	a.user = controllerUser(t, c, env, a.leNS)
	a.user.QPS, a.user.Burst = 200, 400 // as cmd/manager sets them
	return a
}

func (a *allocAPI) ns(name string, labels map[string]string) {
	a.t.Helper()
	if err := a.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
		a.t.Fatal(err)
	}
}

// controller starts a controller role that contends for the Lease, and
// returns what stops it (and waits until it has).
func (a *allocAPI) controller() (stop func()) {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- roles.RunController(ctx, a.user, roles.ControllerOptions{
			MetricsBindAddress: "0", HealthProbeBindAddress: "0",
			LeaderElect: true, LeaderElectionNamespace: a.leNS, SecondInProcess: true,
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					a.t.Errorf("controller: %v", err)
				}
			case <-time.After(30 * time.Second):
				a.t.Errorf("the controller did not stop")
			}
		})
	}
	a.t.Cleanup(stop)
	a.stops = append(a.stops, stop)
	return stop
}

// leader waits for a holder of the Lease other than not, and returns it.
func (a *allocAPI) leader(not string) string {
	a.t.Helper()
	var holder string
	eventually(a.t, 60*time.Second, "a new leader", func() error {
		var l coordinationv1.Lease
		if err := a.c.Get(context.Background(), client.ObjectKey{Namespace: a.leNS, Name: roles.LeaderElectionID}, &l); err != nil {
			return err
		}
		if h := l.Spec.HolderIdentity; h != nil && *h != "" && *h != not {
			holder = *h
			return nil
		}
		return fmt.Errorf("held by %v", l.Spec.HolderIdentity)
	})
	return holder
}

func autoSpec(fams ...lvsv1.AddressFamily) lvsv1.VirtualServiceSpec {
	s := validSpec()
	s.Addresses, s.AddressFamilies = nil, fams
	s.Backends.Static = nil
	return s
}

func (a *allocAPI) create(ns, name string, spec lvsv1.VirtualServiceSpec) {
	a.t.Helper()
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if err := a.c.Create(context.Background(), vs); err != nil {
		a.t.Fatalf("create %s/%s: %v", ns, name, err)
	}
}

// allocated waits until every VirtualService of ns has one address of each
// family it asks for, no two the same, and returns them by name.
func (a *allocAPI) allocated(ns string, timeout time.Duration) map[string]netip.Addr {
	a.t.Helper()
	var got map[string]netip.Addr
	eventually(a.t, timeout, "every VirtualService of "+ns+" has its own address", func() error {
		var list lvsv1.VirtualServiceList
		if err := a.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		got = map[string]netip.Addr{}
		owner := map[netip.Addr]string{}
		for _, vs := range list.Items {
			if len(vs.Status.Addresses) != 1 {
				return fmt.Errorf("%s has %q", vs.Name, vs.Status.Addresses)
			}
			addr := netip.MustParseAddr(string(vs.Status.Addresses[0]))
			if o, dup := owner[addr]; dup {
				return fmt.Errorf("%s and %s both hold %s", o, vs.Name, addr)
			}
			owner[addr], got[vs.Name] = vs.Name, addr
		}
		return nil
	})
	return got
}

func (a *allocAPI) condition(key client.ObjectKey, typ string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	a.t.Helper()
	var got *metav1.Condition
	eventually(a.t, 20*time.Second, fmt.Sprintf("%s %s=%s/%s", key, typ, status, reason), func() error {
		var vs lvsv1.VirtualService
		if err := a.c.Get(context.Background(), key, &vs); err != nil {
			return err
		}
		c := meta.FindStatusCondition(vs.Status.Conditions, typ)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("have %+v", c)
		}
		got = c
		return nil
	})
	return got
}

func (a *allocAPI) events(ns, name, reason string) []eventsv1.Event {
	a.t.Helper()
	var list eventsv1.EventList
	if err := a.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		a.t.Fatal(err)
	}
	return slices.DeleteFunc(list.Items, func(e eventsv1.Event) bool {
		return (name != "" && e.Regarding.Name != name) || e.Reason != reason
	})
}

func (a *allocAPI) event(ns, name, reason string) eventsv1.Event {
	a.t.Helper()
	var got eventsv1.Event
	eventually(a.t, 20*time.Second, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func() error {
		evs := a.events(ns, name, reason)
		if len(evs) == 0 {
			return fmt.Errorf("none yet")
		}
		got = evs[0]
		return nil
	})
	return got
}

func (a *allocAPI) pool(name string, cidr lvsv1.PoolCIDR, team string) *lvsv1.AddressPool {
	a.t.Helper()
	p := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: lvsv1.AddressPoolSpec{
		CIDRs:             []lvsv1.PoolCIDR{cidr},
		NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": lvsv1.LabelValue(team)}},
	}}
	if err := a.c.Create(context.Background(), p); err != nil {
		a.t.Fatal(err)
	}
	return p
}

// 200 VirtualServices created at once get 200 distinct addresses from their
// pool while two controllers contend for the Lease and the leader stops
// part-way; a restart moves none; deleted ones' addresses go to new ones.
func TestAllocationUnderConcurrencyAndLeaderChange(t *testing.T) {
	a := newAllocAPI(t)
	ctx := context.Background()
	ap := a.pool("shop", "10.200.0.0/24", "shop")
	pool, err := pools.New(ap)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "shop"
	a.ns(ns, map[string]string{"team": "shop"})

	stopFirst := a.controller()
	first := a.leader("")
	a.controller() // the second contends from now on

	const n, workers, stopAfter, pace = 200, 20, 5, 200 * time.Millisecond
	var created atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("vs-%03d", i)},
					Spec: autoSpec(lvsv1.AddressFamilyIPv4)}
				if err := a.c.Create(ctx, vs); err != nil {
					errs <- err
					return
				}
				created.Add(1)
				// Paced so that creates go on across the leader change.
				time.Sleep(pace)
			}
		}()
	}
	// Stop the leader once it has allocated some: part-way through.
	byFirst := 0
	for byFirst < stopAfter && time.Since(start) < time.Minute {
		time.Sleep(10 * time.Millisecond)
		var list lvsv1.VirtualServiceList
		if err := a.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		byFirst = 0
		for _, vs := range list.Items {
			if len(vs.Status.Addresses) > 0 {
				byFirst++
			}
		}
	}
	stopAt, atStop := time.Now(), created.Load()
	stopFirst()
	second := a.leader(first)
	t.Logf("leader %s stopped after %d creates (%s after the first), having allocated %d addresses; %s took over %s later",
		first, atStop, stopAt.Sub(start).Round(time.Millisecond), byFirst, second, time.Since(stopAt).Round(time.Millisecond))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d VirtualServices created by %d goroutines in %s", n, workers, time.Since(start).Round(time.Millisecond))

	got := a.allocated(ns, 90*time.Second)
	t.Logf("all %d allocated, distinct, %s after the first create", len(got), time.Since(start).Round(time.Millisecond))
	if len(got) != n {
		t.Fatalf("%d VirtualServices, want %d", len(got), n)
	}
	for name, addr := range got {
		if !pool.Contains(addr) {
			t.Fatalf("%s got %s, outside %s", name, addr, pool)
		}
	}
	// Status is the record: Accepted once allocated.
	a.condition(client.ObjectKey{Namespace: ns, Name: "vs-199"}, lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)
	if evs := a.events(ns, "", vsstatus.ReasonReallocated); len(evs) > 0 {
		t.Logf("%d duplicates settled across the leader change, e.g. %s: %s", len(evs), evs[0].Regarding.Name, evs[0].Note)
	}

	// A restart (both stopped, a new one started) moves nothing. A
	// VirtualService created after it proves the new one reconciles.
	restartAt := time.Now()
	third := a.restart(second)
	t.Logf("after the restart, %s leads within %s", third, time.Since(restartAt).Round(time.Millisecond))
	a.create(ns, "probe", autoSpec(lvsv1.AddressFamilyIPv4))
	a.allocated(ns, 30*time.Second)
	time.Sleep(2 * time.Second) // what the new leader would move, it would have by now
	after := a.allocated(ns, 30*time.Second)
	for name, addr := range got {
		if after[name] != addr {
			t.Fatalf("%s moved from %s to %s across the restart", name, addr, after[name])
		}
	}

	// Deleted VirtualServices give their addresses back: the lowest free
	// ones, so new VirtualServices get exactly those.
	var freed []netip.Addr
	for i := range 20 {
		name := fmt.Sprintf("vs-%03d", i*10)
		freed = append(freed, after[name])
		if err := a.c.Delete(ctx, &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "deleted", func() error {
		var list lvsv1.VirtualServiceList
		if err := a.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(list.Items) != n+1-20 {
			return fmt.Errorf("%d left", len(list.Items))
		}
		return nil
	})
	for i := range 20 {
		a.create(ns, fmt.Sprintf("new-%02d", i), autoSpec(lvsv1.AddressFamilyIPv4))
	}
	final := a.allocated(ns, 30*time.Second)
	var reused []netip.Addr
	for i := range 20 {
		reused = append(reused, final[fmt.Sprintf("new-%02d", i)])
	}
	sortAddrs(freed)
	sortAddrs(reused)
	if !slices.Equal(freed, reused) {
		t.Fatalf("the new VirtualServices got %v, want the freed %v", reused, freed)
	}
}

// restart stops the controllers started so far (leader is the one that
// leads), starts a new one and returns its identity once it leads.
func (a *allocAPI) restart(leader string) string {
	a.t.Helper()
	for _, stop := range a.stops {
		stop()
	}
	a.controller()
	return a.leader(leader)
}

func sortAddrs(as []netip.Addr) {
	sort.Slice(as, func(i, j int) bool { return as[i].Less(as[j]) })
}

// A VirtualService that no pool can serve gets AddressesAllocated=False and
// Accepted=False (NoAddressAvailable) and a Warning Event, whether its
// pools are full or none admits its namespace; a pool that grows, or a
// namespace that a pool comes to admit, serves it without anything else
// changing. A duplicate goes to the younger holder; a change of
// addressFamilies moves only what changed; switching to spec.addresses
// gives the allocation back.
func TestAllocationRefusalsAndChanges(t *testing.T) {
	a := newAllocAPI(t)
	ctx := context.Background()
	a.controller()
	tiny := a.pool("tiny", "10.201.0.0/31", "tiny") // two addresses
	a.ns("tiny", map[string]string{"team": "tiny"})
	a.ns("closed", nil)

	for _, name := range []string{"a", "b", "c"} {
		a.create("tiny", name, autoSpec(lvsv1.AddressFamilyIPv4))
	}
	got := map[string]bool{}
	var full string
	eventually(t, 30*time.Second, "two allocated, one refused", func() error {
		var list lvsv1.VirtualServiceList
		if err := a.c.List(ctx, &list, client.InNamespace("tiny")); err != nil {
			return err
		}
		full = ""
		for _, vs := range list.Items {
			switch len(vs.Status.Addresses) {
			case 1:
				got[string(vs.Status.Addresses[0])] = true
			case 0:
				full = vs.Name
			}
		}
		if len(got) != 2 || full == "" {
			return fmt.Errorf("allocated %v, without: %q", got, full)
		}
		return nil
	})
	key := client.ObjectKey{Namespace: "tiny", Name: full}
	c := a.condition(key, lvsv1.ConditionAddressesAllocated, metav1.ConditionFalse, vsstatus.ReasonNoAddressAvailable)
	t.Logf("full pool: %s", c.Message)
	a.condition(key, lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonNoAddressAvailable)
	if ev := a.event("tiny", full, vsstatus.ReasonNoAddressAvailable); ev.Type != "Warning" {
		t.Fatalf("event %s %s", ev.Type, ev.Reason)
	}

	// The pool grows: the third is served.
	eventually(t, 10*time.Second, "grow the pool", func() error {
		if err := a.c.Get(ctx, client.ObjectKeyFromObject(tiny), tiny); err != nil {
			return err
		}
		tiny.Spec.CIDRs = []lvsv1.PoolCIDR{"10.201.0.0/30"}
		return a.c.Update(ctx, tiny)
	})
	a.condition(key, lvsv1.ConditionAddressesAllocated, metav1.ConditionTrue, vsstatus.ReasonAllocated)
	a.condition(key, lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)
	a.allocated("tiny", 10*time.Second)

	// No pool admits the namespace.
	a.create("closed", "web", autoSpec(lvsv1.AddressFamilyIPv4))
	key = client.ObjectKey{Namespace: "closed", Name: "web"}
	c = a.condition(key, lvsv1.ConditionAddressesAllocated, metav1.ConditionFalse, vsstatus.ReasonNoAddressAvailable)
	t.Logf("no pool: %s", c.Message)
	a.condition(key, lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonNoAddressAvailable)
	a.event("closed", "web", vsstatus.ReasonNoAddressAvailable)

	// The namespace gets the label the pool admits: served.
	eventually(t, 10*time.Second, "label the namespace", func() error {
		var n corev1.Namespace
		if err := a.c.Get(ctx, client.ObjectKey{Name: "closed"}, &n); err != nil {
			return err
		}
		n.Labels = map[string]string{"team": "tiny"}
		return a.c.Update(ctx, &n)
	})
	a.condition(key, lvsv1.ConditionAddressesAllocated, metav1.ConditionTrue, vsstatus.ReasonAllocated)
	last := a.allocated("closed", 10*time.Second)["web"]
	if last != netip.MustParseAddr("10.201.0.3") {
		t.Fatalf("got %s, want the pool's last free address 10.201.0.3", last)
	}

	// Named addresses instead: the allocation is given back.
	eventually(t, 10*time.Second, "switch to spec.addresses", func() error {
		var vs lvsv1.VirtualService
		if err := a.c.Get(ctx, key, &vs); err != nil {
			return err
		}
		vs.Spec.AddressFamilies, vs.Spec.Addresses = nil, []lvsv1.IPAddress{"10.96.5.5"}
		return a.c.Update(ctx, &vs)
	})
	eventually(t, 10*time.Second, "status.addresses released", func() error {
		var vs lvsv1.VirtualService
		if err := a.c.Get(ctx, key, &vs); err != nil {
			return err
		}
		if len(vs.Status.Addresses) > 0 || meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAddressesAllocated) != nil {
			return fmt.Errorf("status %q, %v", vs.Status.Addresses, vs.Status.Conditions)
		}
		return nil
	})

	// A forged duplicate (as a race across a leader change could leave):
	// the younger holder gets another address, with an Event; the older
	// keeps its own.
	var older lvsv1.VirtualService
	if err := a.c.Get(ctx, client.ObjectKey{Namespace: "tiny", Name: "a"}, &older); err != nil {
		t.Fatal(err)
	}
	taken := older.Status.Addresses[0]
	nextSecond()
	a.create("tiny", "young", autoSpec(lvsv1.AddressFamilyIPv4))
	own := a.allocated("tiny", 10*time.Second)["young"]
	eventually(t, 10*time.Second, "forge a duplicate", func() error {
		var vs lvsv1.VirtualService
		if err := a.c.Get(ctx, client.ObjectKey{Namespace: "tiny", Name: "young"}, &vs); err != nil {
			return err
		}
		orig := vs.DeepCopy()
		vs.Status.Addresses = []lvsv1.IPAddress{taken}
		return a.c.Status().Patch(ctx, &vs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
	ev := a.event("tiny", "young", vsstatus.ReasonReallocated)
	t.Logf("duplicate settled: %s", ev.Note)
	after := a.allocated("tiny", 10*time.Second)
	if after["a"] != netip.MustParseAddr(string(taken)) || after["young"] != own {
		t.Fatalf("a holds %s (want %s), young %s (want %s back)", after["a"], taken, after["young"], own)
	}

	// Changing addressFamilies allocates what was added and releases what
	// was removed; the rest stays.
	a.pool("dual", "10.202.0.0/30", "dual")
	eventually(t, 10*time.Second, "add IPv6 to the dual pool", func() error {
		var p lvsv1.AddressPool
		if err := a.c.Get(ctx, client.ObjectKey{Name: "dual"}, &p); err != nil {
			return err
		}
		p.Spec.CIDRs = append(p.Spec.CIDRs, "2001:db8:202::/126")
		return a.c.Update(ctx, &p)
	})
	a.ns("dual", map[string]string{"team": "dual"})
	a.create("dual", "x", autoSpec(lvsv1.AddressFamilyIPv4))
	x := client.ObjectKey{Namespace: "dual", Name: "x"}
	for _, step := range []struct {
		fams []lvsv1.AddressFamily
		want []lvsv1.IPAddress
	}{
		{[]lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}, []lvsv1.IPAddress{"10.202.0.0"}},
		{[]lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv6}, []lvsv1.IPAddress{"10.202.0.0", "2001:db8:202::"}},
		{[]lvsv1.AddressFamily{lvsv1.AddressFamilyIPv6}, []lvsv1.IPAddress{"2001:db8:202::"}},
	} {
		eventually(t, 10*time.Second, fmt.Sprintf("addressFamilies %v", step.fams), func() error {
			var vs lvsv1.VirtualService
			if err := a.c.Get(ctx, x, &vs); err != nil {
				return err
			}
			vs.Spec.AddressFamilies = step.fams
			return a.c.Update(ctx, &vs)
		})
		eventually(t, 10*time.Second, fmt.Sprintf("status.addresses %v", step.want), func() error {
			var vs lvsv1.VirtualService
			if err := a.c.Get(ctx, x, &vs); err != nil {
				return err
			}
			if !slices.Equal(vs.Status.Addresses, step.want) {
				return fmt.Errorf("have %q", vs.Status.Addresses)
			}
			return nil
		})
	}

}
