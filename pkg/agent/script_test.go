package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/tools/txtar"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// TestScripts runs the scenarios of testdata/script/*.txtar: objects in,
// the kernel out, through the agent's own event handlers, queue, build,
// conflict resolution, syncer and status reports, over the fake kernel
// and a fake client that stands for both the API server and the agent's
// cache. Nothing runs in the background and the clock is fake, so a
// script is deterministic and takes milliseconds.
//
// An archive's comment is its script, one command a line ('#' starts a
// comment); its files are inputs (Kubernetes YAML, several documents
// allowed) and expected outputs. The agent runs as node-1. Commands:
//
//	apply FILE            create or update FILE's objects, as the API server
//	                      stores them (a UID, creationTimestamp from the clock
//	                      unless given, generation 1 and +1 when the spec
//	                      changes), then call the agent's handlers as its
//	                      informers would
//	delete KIND/[NS/]NAME delete an object: vs, slice, node, pool or namespace
//	allocate vs/NS/NAME [ADDR...]  write status.addresses as the controller
//	                      does for automatic addresses, then call the handlers
//	start                 the agent starts: its informers' initial lists, then
//	                      the first full sync
//	restart               a new agent and syncer over the same kernel and objects
//	sync                  the agent's workers empty its queue
//	resync                the periodic full sync that also repairs drift
//	advance DURATION      the clock moves on and the periodic drain pass runs
//	conns VS REAL ACT INACT  the connection counters of a real server, as
//	                      traffic would set them (VS as TCP/10.96.0.10:80)
//	dump FILE             the kernel must equal FILE
//	status FILE           this node's status entries must equal FILE
//	members NODE...       the agents alive for layer-2 announcement (their
//	                      labels are their Node objects'); node-1 is this one
//	announced FILE        what the speakers announce (BGP routes, addresses
//	                      answered by ARP/NDP) must equal FILE
//
// The API server's CRD defaults and validation do not run: inputs are what
// it would have stored. Run with -update to rewrite the expected files.
func TestScripts(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "script", "*.txtar"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no scripts under testdata/script (%v)", err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			t.Parallel()
			runScript(t, path)
		})
	}
}

// scriptNode is the node the agent of a script runs as.
const scriptNode = "node-1"

type script struct {
	t       *testing.T
	ar      *txtar.Archive
	updated bool
	ctx     context.Context
	clock   *clocktesting.FakeClock
	client  client.Client
	kernel  *fakeKernel
	agent   *Agent
	bgp     *fakeBGP
	layer2  *fakeLayer2
	members *fakeMembers
	errs    *errorLog
	created int // objects created, for their UIDs
}

func runScript(t *testing.T, path string) {
	ar, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	errs := &errorLog{}
	s := &script{
		t: t, ar: ar, errs: errs,
		ctx:   ctrl.LoggerInto(t.Context(), logr.New(errs)),
		clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		client: fake.NewClientBuilder().WithScheme(scriptScheme).
			WithStatusSubresource(&lvsv1.VirtualService{}).Build(),
		kernel:  newFakeKernel(),
		bgp:     &fakeBGP{},
		layer2:  &fakeLayer2{},
		members: &fakeMembers{},
	}
	t.Cleanup(s.stop)
	for i, line := range strings.Split(string(ar.Comment), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		at := fmt.Sprintf("%s:%d: %s", path, i+1, line)
		if err := s.run(at, strings.Fields(line)); err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		if logged := errs.take(); len(logged) > 0 {
			t.Fatalf("%s: the agent logged errors:\n%s", at, strings.Join(logged, "\n"))
		}
	}
	if s.updated {
		if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *script) run(at string, cmd []string) error {
	args := cmd[1:]
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d arguments", cmd[0], n)
		}
		return nil
	}
	needAgent := func() error {
		if s.agent == nil {
			return errors.New("the agent is not started")
		}
		return nil
	}
	switch cmd[0] {
	case "apply":
		if err := want(1); err != nil {
			return err
		}
		objs, err := s.objects(args[0])
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := s.apply(o); err != nil {
				return fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(o), err)
			}
		}
		return nil
	case "delete":
		if err := want(1); err != nil {
			return err
		}
		return s.delete(args[0])
	case "allocate":
		if len(args) < 1 {
			return errors.New("allocate takes vs/NAMESPACE/NAME and the addresses")
		}
		return s.allocate(args[0], args[1:])
	case "start":
		if s.agent != nil {
			return errors.New("already started")
		}
		return s.start()
	case "restart":
		if err := needAgent(); err != nil {
			return err
		}
		s.stop()
		return s.start()
	case "sync":
		if err := needAgent(); err != nil {
			return err
		}
		return s.sync()
	case "resync":
		if err := needAgent(); err != nil {
			return err
		}
		return s.agent.fullSync(s.ctx, true)
	case "advance":
		if err := want(1); err != nil {
			return err
		}
		d, err := time.ParseDuration(args[0])
		if err != nil {
			return err
		}
		s.clock.Step(d)
		if s.agent != nil {
			s.agent.drain(s.ctx)
		}
		return nil
	case "conns":
		if err := want(4); err != nil {
			return err
		}
		return s.conns(args)
	case "dump":
		if err := want(1); err != nil {
			return err
		}
		return s.expect(at, args[0], s.kernel.Dump())
	case "status":
		if err := want(1); err != nil {
			return err
		}
		got, err := s.status()
		if err != nil {
			return err
		}
		return s.expect(at, args[0], got)
	case "members":
		if err := s.setMembers(args); err != nil {
			return err
		}
		if s.agent != nil {
			s.agent.MembersChanged()
		}
		return nil
	case "announced":
		if err := want(1); err != nil {
			return err
		}
		return s.expect(at, args[0], fmt.Sprintf("bgp: %v\nlayer2: %v\n", s.bgp.addrs, s.layer2.addrs))
	}
	return fmt.Errorf("unknown command %q", cmd[0])
}

// start starts an agent as Start does once its caches have synced: every
// object through the handlers (the informers' initial lists), then the
// first full sync. Its workers run only in sync.
func (s *script) start() error {
	sy, err := s.kernel.syncer(s.ctx, s.clock)
	if err != nil {
		return err
	}
	a, err := newAgent(s.client, sy, nil, Options{NodeName: scriptNode, ReportStatus: true,
		Announcers: Announcers{BGP: s.bgp, Layer2: s.layer2, Members: s.members}})
	if err != nil {
		return err
	}
	s.agent = a
	var vss lvsv1.VirtualServiceList
	var eps discoveryv1.EndpointSliceList
	var nodes corev1.NodeList
	var aps lvsv1.AddressPoolList
	var nss corev1.NamespaceList
	for _, l := range []client.ObjectList{&vss, &eps, &nodes, &aps, &nss} {
		if err := s.client.List(s.ctx, l); err != nil {
			return err
		}
	}
	for i := range vss.Items {
		a.vsEvents().OnAdd(&vss.Items[i], true)
	}
	for i := range eps.Items {
		a.sliceEvents().OnAdd(&eps.Items[i], true)
	}
	for i := range nodes.Items {
		a.nodeEvents(s.ctx).OnAdd(&nodes.Items[i], true)
	}
	for i := range aps.Items {
		a.poolEvents(s.ctx).OnAdd(&aps.Items[i], true)
	}
	for i := range nss.Items {
		a.namespaceEvents(s.ctx).OnAdd(&nss.Items[i], true)
	}
	a.loadPools(s.ctx) // as Start does once the informers have listed
	return a.firstSync(s.ctx)
}

func (s *script) stop() {
	if s.agent != nil {
		s.agent.queue.ShutDown()
		s.agent.changes.ShutDown()
		s.agent = nil
	}
}

// sync runs the agent's workers until both lanes are empty (changes
// first, as their own workers would take them first), and the
// announcer whenever it was poked (which may queue status reports). A
// failed sync is logged (and so fails the script) rather than retried.
func (s *script) sync() error {
	for n := 0; ; n++ {
		if n == 10000 {
			return errors.New("the queue does not empty")
		}
		if s.agent.changes.Len() > 0 {
			s.agent.processNext(s.ctx, s.agent.changes)
			continue
		}
		if s.agent.queue.Len() > 0 {
			s.agent.processNext(s.ctx, s.agent.queue)
			continue
		}
		select {
		case <-s.agent.announce.kick:
			if err := s.agent.announce.apply(s.ctx); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (s *script) conns(args []string) error {
	proto, vip, ok := strings.Cut(args[0], "/")
	if !ok {
		return fmt.Errorf("%q is not PROTOCOL/ADDRESS:PORT", args[0])
	}
	p, err := ipvs.ParseProtocol(proto)
	if err != nil {
		return err
	}
	vap, err := netip.ParseAddrPort(vip)
	if err != nil {
		return err
	}
	rap, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return err
	}
	active, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	inactive, err := strconv.Atoi(args[3])
	if err != nil {
		return err
	}
	return s.kernel.IPVS.SetConns(ipvs.Key{Address: vap.Addr(), Protocol: p, Port: vap.Port()},
		ipvs.RealKey{Address: rap.Addr(), Port: rap.Port()}, active, inactive)
}

// status prints this node's status entry of every VirtualService.
func (s *script) status() (string, error) {
	var list lvsv1.VirtualServiceList
	if err := s.client.List(s.ctx, &list); err != nil {
		return "", err
	}
	slices.SortFunc(list.Items, func(a, b lvsv1.VirtualService) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	var b strings.Builder
	for _, vs := range list.Items {
		fmt.Fprintf(&b, "%s/%s generation=%d", vs.Namespace, vs.Name, vs.Generation)
		i := slices.IndexFunc(vs.Status.Nodes, func(n lvsv1.NodeStatus) bool { return n.Node == scriptNode })
		if i < 0 {
			b.WriteString(" no entry\n")
			continue
		}
		n := vs.Status.Nodes[i]
		fmt.Fprintf(&b, " observed=%d programmed=%t backends total=%d ready=%d draining=%d\n",
			n.ObservedGeneration, n.Programmed, n.Backends.Total, n.Backends.Ready, n.Backends.Draining)
		if n.Message != "" {
			fmt.Fprintf(&b, "  %s\n", n.Message)
		}
		for _, an := range n.Announced {
			fmt.Fprintf(&b, "  announced %s by %s\n", an.Address, an.Mode)
		}
	}
	return b.String(), nil
}

func (s *script) file(name string) int {
	return slices.IndexFunc(s.ar.Files, func(f txtar.File) bool { return f.Name == name })
}

// expect compares got with the archive's file name, or rewrites it with
// -update.
func (s *script) expect(at, name, got string) error {
	i := s.file(name)
	if golden.Updating() {
		if i < 0 {
			s.ar.Files = append(s.ar.Files, txtar.File{Name: name})
			i = len(s.ar.Files) - 1
		}
		if string(s.ar.Files[i].Data) != got {
			s.ar.Files[i].Data = []byte(got)
			s.updated = true
		}
		return nil
	}
	if i < 0 {
		return fmt.Errorf("no file %s in the archive (run with -update to add it)", name)
	}
	if want := string(s.ar.Files[i].Data); want != got {
		s.t.Errorf("%s: differs from %s:\n--- got\n%s--- want\n%s", at, name, got, want)
	}
	return nil
}

// errorLog is a logr sink that keeps the agent's error lines: a script
// fails on any, since a failed sync would be retried after a backoff in
// real time.
type errorLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.errs
	l.errs = nil
	return out
}

func (*errorLog) Init(logr.RuntimeInfo)    {}
func (*errorLog) Enabled(int) bool         { return false }
func (*errorLog) Info(int, string, ...any) {}
func (l *errorLog) Error(err error, msg string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf("%s: %v %v", msg, err, kv))
}
func (l *errorLog) WithValues(...any) logr.LogSink { return l }
func (l *errorLog) WithName(string) logr.LogSink   { return l }

// fakeBGP and fakeLayer2 keep what they were told to announce.
type fakeBGP struct {
	mu    sync.Mutex
	addrs []netip.Addr
	peers []announce.Peer
}

func (f *fakeBGP) SetPeers(_ context.Context, p []announce.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = slices.Clone(p)
	return nil
}

func (f *fakeBGP) Announce(_ context.Context, addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = slices.Clone(addrs)
	return nil
}

func (f *fakeBGP) Sessions() []announce.Session { return nil }

func (f *fakeBGP) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = nil
	return nil
}

type fakeLayer2 struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (f *fakeLayer2) Announce(_ context.Context, addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = slices.Clone(addrs)
	return nil
}

func (f *fakeLayer2) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = nil
}

// fakeMembers are the live agents a script sets.
type fakeMembers struct {
	mu   sync.Mutex
	live map[string]map[string]string
}

func (f *fakeMembers) Live() (map[string]map[string]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, self := f.live[scriptNode]
	return f.live, self
}

func (s *script) setMembers(names []string) error {
	live := map[string]map[string]string{}
	for _, n := range names {
		var node corev1.Node
		if err := s.client.Get(s.ctx, client.ObjectKey{Name: n}, &node); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		live[n] = node.Labels
	}
	s.members.mu.Lock()
	s.members.live = live
	s.members.mu.Unlock()
	return nil
}
