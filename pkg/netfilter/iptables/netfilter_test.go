package iptables

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// fakeRunner serves canned iptables-save output and records restores.
type fakeRunner struct {
	saved    map[string]string
	restores []string
	calls    []string
}

func (f *fakeRunner) Run(_ context.Context, stdin, name string, args ...string) (string, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if strings.HasSuffix(name, "-restore") {
		f.restores = append(f.restores, name+"\n"+stdin)
	}
	return f.saved[name], nil
}

func TestSyncFixesJumpsAndSkipsUnchanged(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	run := &fakeRunner{saved: map[string]string{
		// INPUT lacks its jump, PREROUTING has it twice, others' rules stay.
		"iptables-legacy-save": "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n*nat\n" +
			"-A PREROUTING -j KUBELVS-PREROUTING\n-A PREROUTING -j KUBELVS-PREROUTING\n-A OUTPUT -j KUBELVS-OUTPUT\n-A POSTROUTING -j KUBELVS-POSTROUTING\nCOMMIT\n",
	}}
	sets := ipsettest.NewFake()
	r, err := New(ctx, sets, run, netfilter.Config{Mode: "legacy"}, netfilter.IPv4, netfilter.IPv6)
	if err != nil {
		t.Fatal(err)
	}
	wrote, err := r.SyncRules(ctx, false)
	if err != nil || !wrote {
		t.Fatalf("first sync wrote=%v err=%v", wrote, err)
	}
	if wrote, err := r.SyncRules(ctx, false); err != nil || wrote {
		t.Errorf("unchanged sync wrote=%v err=%v, want no write", wrote, err)
	}
	n := len(run.calls)
	if _, err := r.SyncRules(ctx, true); err != nil || len(run.calls) != n+4 {
		t.Errorf("forced sync: err=%v, %d calls, want save+restore per family", err, len(run.calls)-n)
	}
	golden.Assert(t, "restore.txt", strings.Join(run.restores[:2], "---\n"))
	golden.Assert(t, "sets.txt", sets.Dump())
	// Once iptables-save shows the rules in place, a forced sync reads
	// them and writes nothing.
	for _, f := range []netfilter.Family{netfilter.IPv4, netfilter.IPv6} {
		var b strings.Builder
		in := netfilter.RestoreInput(netfilter.Render(f, netfilter.Config{MasqueradeMark: netfilter.DefaultMasqueradeMark}), "")
		for _, l := range strings.Split(in, "\n") {
			b.WriteString(strings.Replace(strings.Replace(l, "-I ", "-A ", 1), " 1 -j ", " -j ", 1) + "\n")
		}
		run.saved[binary("legacy", f, "save")] = b.String()
	}
	n, restores := len(run.calls), len(run.restores)
	if wrote, err := r.SyncRules(ctx, true); err != nil || wrote || len(run.calls) != n+2 || len(run.restores) != restores {
		t.Errorf("forced sync with the rules in place: wrote=%v err=%v, %d calls, %d restores; want one save per family",
			wrote, err, len(run.calls)-n, len(run.restores)-restores)
	}
}

func TestDetectMode(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		saved map[string]string
		want  string
	}{
		"legacy has rules": {map[string]string{"iptables-legacy-save": "-A INPUT -j X\n", "iptables-nft-save": "*filter\n"}, "legacy"},
		"nft has rules":    {map[string]string{"iptables-legacy-save": "", "ip6tables-nft-save": "-A INPUT -j X\n"}, "nft"},
		"empty: nft":       {map[string]string{}, "nft"},
	} {
		if got := DetectMode(context.Background(), &fakeRunner{saved: tc.saved}); got != tc.want {
			t.Errorf("%s: DetectMode = %s, want %s", name, got, tc.want)
		}
	}
}

func TestSyncMembersWritesOnlyDifferencesAndRereadsAfterForce(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	sets := ipsettest.NewFake()
	r, err := New(ctx, sets, &fakeRunner{}, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SyncRules(ctx, false); err != nil {
		t.Fatal(err)
	}
	e1 := ipset.Entry{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 80}
	e2 := ipset.Entry{IP: netip.MustParseAddr("10.96.0.2"), Protocol: ipset.ProtoUDP, Port: 53}
	if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	// Someone deletes a member behind our back: the next ordinary sync
	// works from what it wrote (no kernel read per change) ...
	if err := sets.DelEntry(ctx, "KUBELVS-MASQ", e1); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sets.ListEntries(ctx, "KUBELVS-MASQ"); len(got) != 1 {
		t.Fatalf("an unchanged sync read the kernel: %v", got)
	}
	// ... and the periodic forced resync repairs it.
	if _, err := r.SyncRules(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sets.ListEntries(ctx, "KUBELVS-MASQ"); len(got) != 2 {
		t.Fatalf("after a forced resync the members are %v, want both", got)
	}
}

// blockingRunner holds every iptables-restore until released.
type blockingRunner struct {
	fakeRunner
	entered chan struct{}
	release chan struct{}
}

func (b *blockingRunner) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	if strings.HasSuffix(name, "-restore") {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.fakeRunner.Run(ctx, stdin, name, args...)
}

// While a forced rule write is in its exec (iptables-restore can wait for
// the xtables lock for seconds), SyncMembers, which the syncer calls under
// its own lock, goes ahead instead of waiting for it; and the members read
// back after the rule write do not undo what SyncMembers wrote meanwhile.
func TestSyncMembersDoesNotWaitForARuleWrite(t *testing.T) {
	ctx := context.Background()
	sets := ipsettest.NewFake()
	run := &blockingRunner{entered: make(chan struct{}), release: make(chan struct{})}
	r, err := New(ctx, sets, run, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := r.SyncRules(ctx, true); done <- err }()
	<-run.entered // the rule write is in its exec
	e := ipset.Entry{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 80}
	synced := make(chan error)
	go func() { synced <- r.SyncMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{e}}) }()
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(run.release)
		t.Fatal("SyncMembers waited for the rule write's exec")
	}
	close(run.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The record the forced write reloaded includes e: removing it deletes
	// it from the kernel (a stale record without e would skip the delete).
	if err := r.SyncMembers(ctx, netfilter.Members{}); err != nil {
		t.Fatal(err)
	}
	if es, err := sets.ListEntries(ctx, netfilter.Sets(netfilter.IPv4).Masquerade); err != nil || len(es) != 0 {
		t.Fatalf("masquerade set holds %v (%v), want nothing", es, err)
	}
}

// Many changes to one set are one Replace (a scratch set filled in batches
// and swapped in); a few are single adds and deletes; both leave the set
// holding exactly what was asked.
func TestSyncMembersReplacesASetWithManyChanges(t *testing.T) {
	ctx := context.Background()
	sets := &countingSets{Fake: ipsettest.NewFake()}
	r, err := New(ctx, sets, &fakeRunner{}, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureSets(ctx); err != nil {
		t.Fatal(err)
	}
	many := make([]ipset.Entry, replaceAbove+10)
	for i := range many {
		many[i] = ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Protocol: ipset.ProtoTCP, Port: 80}
	}
	ipset.SortEntries(many)
	masq := netfilter.Sets(netfilter.IPv4).Masquerade
	check := func(step string, want []ipset.Entry, replaces, adds int) {
		t.Helper()
		if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: want}); err != nil {
			t.Fatal(err)
		}
		got, err := sets.ListEntries(ctx, masq)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) > 0 && (got[0] != want[0] || got[len(got)-1] != want[len(want)-1])) {
			t.Fatalf("%s: set holds %d members, want %d", step, len(got), len(want))
		}
		if sets.replaces != replaces || sets.adds != adds {
			t.Fatalf("%s: %d replaces and %d adds, want %d and %d", step, sets.replaces, sets.adds, replaces, adds)
		}
	}
	check("first write of many", many, 1, 0)
	check("one more", append(slices.Clone(many), ipset.Entry{IP: netip.MustParseAddr("10.97.0.1"), Protocol: ipset.ProtoTCP, Port: 80}), 1, 1)
	check("all gone", nil, 2, 1)
}

type countingSets struct {
	*ipsettest.Fake
	replaces, adds, dels, lists int
}

func (c *countingSets) DelEntry(ctx context.Context, name string, e ipset.Entry) error {
	c.dels++
	return c.Fake.DelEntry(ctx, name, e)
}

func (c *countingSets) ListEntries(ctx context.Context, name string) ([]ipset.Entry, error) {
	c.lists++
	return c.Fake.ListEntries(ctx, name)
}

func (c *countingSets) Replace(ctx context.Context, s ipset.Set, es []ipset.Entry) error {
	c.replaces++
	return c.Fake.Replace(ctx, s, es)
}

func (c *countingSets) AddEntry(ctx context.Context, name string, e ipset.Entry) error {
	c.adds++
	return c.Fake.AddEntry(ctx, name, e)
}

// UpdateMembers writes only what the record says is missing or there: an
// update of a set of many members costs its own writes and no listing; a
// new Rules, which knows nothing, writes the whole change and still lists
// nothing, and its next SyncMembers reads the set.
func TestUpdateMembersWritesOnlyTheChange(t *testing.T) {
	ctx := context.Background()
	sets := &countingSets{Fake: ipsettest.NewFake()}
	r, err := New(ctx, sets, &fakeRunner{}, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureSets(ctx); err != nil {
		t.Fatal(err)
	}
	many := make([]ipset.Entry, 1000)
	for i := range many {
		many[i] = ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Protocol: ipset.ProtoTCP, Port: 80}
	}
	ipset.SortEntries(many)
	if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: many}); err != nil {
		t.Fatal(err)
	}
	masq := netfilter.Sets(netfilter.IPv4).Masquerade
	fresh := ipset.Entry{IP: netip.MustParseAddr("10.97.0.1"), Protocol: ipset.ProtoTCP, Port: 80}
	absent := ipset.Entry{IP: netip.MustParseAddr("10.97.0.2"), Protocol: ipset.ProtoTCP, Port: 80}
	adds, dels, lists := sets.adds, sets.dels, sets.lists
	// many[0] is there and absent is not: only fresh and many[1] are written.
	if err := r.UpdateMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{fresh, many[0]}},
		netfilter.Members{Masquerade: []ipset.Entry{many[1], absent}}); err != nil {
		t.Fatal(err)
	}
	if sets.adds-adds != 1 || sets.dels-dels != 1 || sets.lists != lists {
		t.Fatalf("%d adds, %d deletes and %d listings, want 1, 1 and 0", sets.adds-adds, sets.dels-dels, sets.lists-lists)
	}
	want := append(slices.Concat(many[:1], many[2:]), fresh)
	ipset.SortEntries(want)
	if got, _ := sets.Fake.ListEntries(ctx, masq); !slices.Equal(got, want) {
		t.Fatalf("set holds %d members, want %d", len(got), len(want))
	}
	// The record followed the update: a full sync back to many writes
	// two changes and reads nothing.
	adds, dels = sets.adds, sets.dels
	if err := r.SyncMembers(ctx, netfilter.Members{Masquerade: many}); err != nil {
		t.Fatal(err)
	}
	if sets.adds-adds != 1 || sets.dels-dels != 1 || sets.lists != lists {
		t.Fatalf("sync after update: %d adds, %d deletes and %d listings, want 1, 1 and 0", sets.adds-adds, sets.dels-dels, sets.lists-lists)
	}

	o, err := New(ctx, sets, &fakeRunner{}, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	adds, dels = sets.adds, sets.dels
	if err := o.UpdateMembers(ctx, netfilter.Members{Masquerade: []ipset.Entry{fresh, many[0]}},
		netfilter.Members{Masquerade: []ipset.Entry{many[1], absent}}); err != nil {
		t.Fatal(err)
	}
	if sets.adds-adds != 2 || sets.dels-dels != 2 || sets.lists != lists {
		t.Fatalf("unknown record: %d adds, %d deletes and %d listings, want 2, 2 and 0", sets.adds-adds, sets.dels-dels, sets.lists-lists)
	}
	if err := o.SyncMembers(ctx, netfilter.Members{Masquerade: many}); err != nil {
		t.Fatal(err)
	}
	if n := len(netfilter.IPSets(netfilter.IPv4)); sets.lists-lists != n {
		t.Fatalf("a sync after an update of sets it did not know listed %d sets, want all %d", sets.lists-lists, n)
	}
	if got, _ := sets.Fake.ListEntries(ctx, masq); !slices.Equal(got, many) {
		t.Fatalf("set holds %d members, want %d", len(got), len(many))
	}
}
