package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// PeerSync keeps the BGP speaker's sessions equal to the BGPPeers that
// select this node, and reports each session's state into its BGPPeer's
// status.nodes (this node's entry only, written when it changes).
type PeerSync struct {
	bgp       announce.BGP
	c         client.Client // cache-backed reads (BGPPeers, the Node), direct writes
	secrets   client.Reader // direct reads of the password Secrets
	namespace string        // where the Secrets are
	node      string
	kick      chan struct{}

	mu       sync.Mutex
	peers    map[string]announce.Peer // by BGPPeer name, as last configured
	reported map[string]lvsv1.BGPSessionStatus
	problems map[string]string // BGPPeers this node cannot peer with, and why
}

// NewPeerSync returns the peer sync of this node's agent.
func NewPeerSync(bgp announce.BGP, c client.Client, secrets client.Reader, namespace, node string) *PeerSync {
	return &PeerSync{
		bgp: bgp, c: c, secrets: secrets, namespace: namespace, node: node, kick: make(chan struct{}, 1),
		peers: map[string]announce.Peer{}, reported: map[string]lvsv1.BGPSessionStatus{}, problems: map[string]string{},
	}
}

// Changed asks for the sessions and their report to be brought up to date
// (a BGPPeer or this node's labels changed, or a session changed state).
func (p *PeerSync) Changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Start watches BGPPeers and this node through the cache and syncs until
// ctx ends; every 30 s it also re-reads the password Secrets, which it
// does not watch.
func (p *PeerSync) Start(ctx context.Context, c cache.Cache) error {
	log := ctrl.LoggerFrom(ctx).WithName("bgp")
	h := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.Changed() },
		UpdateFunc: func(any, any) { p.Changed() },
		DeleteFunc: func(any) { p.Changed() },
	}
	for _, obj := range []client.Object{&lvsv1.BGPPeer{}, &corev1.Node{}} {
		// The BGPPeer CRD may not be installed yet (an upgrade that has not
		// applied the CRDs): keep trying, and keep no session meanwhile,
		// rather than stop the agent.
		for logged := (time.Time{}); ; {
			inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
			if err == nil {
				if _, err := inf.AddEventHandler(h); err != nil {
					return err
				}
				break
			}
			if time.Since(logged) > time.Minute {
				log.Error(err, "cannot watch BGPPeers (is the BGPPeer CRD installed?); no BGP session until it can", "type", fmt.Sprintf("%T", obj))
				logged = time.Now()
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
		}
	}
	if !c.WaitForCacheSync(ctx) {
		return nil
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	report := time.NewTicker(2 * time.Second)
	defer report.Stop()
	p.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
			if err := p.sync(ctx, log); err != nil && ctx.Err() == nil {
				log.Error(err, "configuring the BGP sessions failed; retrying")
				time.AfterFunc(time.Second, p.Changed)
			}
		case <-tick.C:
			p.Changed()
		case <-report.C:
		}
		if err := p.report(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "reporting the BGP sessions' states failed")
		}
	}
}

// sync configures the sessions this node should have.
func (p *PeerSync) sync(ctx context.Context, log logr.Logger) error {
	var node corev1.Node
	if err := p.c.Get(ctx, client.ObjectKey{Name: p.node}, &node); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get node %s: %w", p.node, err)
	}
	var list lvsv1.BGPPeerList
	if err := p.c.List(ctx, &list); err != nil {
		return fmt.Errorf("list BGPPeers: %w", err)
	}
	p.mu.Lock()
	previous := p.peers
	p.mu.Unlock()
	peers := map[string]announce.Peer{}
	problems := map[string]string{}
	for i := range list.Items {
		bp := &list.Items[i]
		if errs := validation.BGPPeer(bp); len(errs) > 0 {
			problems[bp.Name] = "refused: " + errs.ToAggregate().Error()
			continue
		}
		if sel := bp.Spec.NodeSelector; sel != nil {
			s, err := metav1.LabelSelectorAsSelector(sel.AsMetav1())
			if err != nil || !s.Matches(labels.Set(node.Labels)) {
				continue
			}
		}
		peer, err := p.peer(ctx, bp)
		if err != nil {
			if old, ok := previous[bp.Name]; ok && !apierrors.IsNotFound(err) {
				// Not known now (the API server, a permission): keep the
				// session as it is rather than drop it on a guess.
				peers[bp.Name] = old
				log.Error(err, "cannot read the BGPPeer's password; its session is kept as it was", "bgppeer", bp.Name)
				continue
			}
			problems[bp.Name] = err.Error()
			continue
		}
		peers[bp.Name] = peer
	}
	// Two BGPPeers of one address: the first by name wins.
	byAddr := map[netip.Addr]string{}
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]announce.Peer, 0, len(names))
	for _, n := range names {
		a := peers[n].Address
		if other, ok := byAddr[a]; ok {
			problems[n] = fmt.Sprintf("BGPPeer %s has the same peer address %s", other, a)
			delete(peers, n)
			continue
		}
		byAddr[a] = n
		out = append(out, peers[n])
	}
	if err := p.bgp.SetPeers(ctx, out); err != nil {
		return err
	}
	p.mu.Lock()
	p.peers, p.problems = peers, problems
	p.mu.Unlock()
	return nil
}

// peer turns a valid BGPPeer into the session's configuration.
func (p *PeerSync) peer(ctx context.Context, bp *lvsv1.BGPPeer) (announce.Peer, error) {
	s := bp.Spec
	out := announce.Peer{
		Name: bp.Name, Address: netip.MustParseAddr(string(s.PeerAddress)),
		ASN: uint32(s.PeerASN), LocalASN: uint32(s.MyASN), HoldTime: 90 * time.Second,
	}
	if s.PeerPort != nil {
		out.Port = uint16(*s.PeerPort)
	}
	if s.HoldTime != nil {
		out.HoldTime = s.HoldTime.Duration.Truncate(time.Second)
	}
	if r := s.PasswordSecretRef; r != nil {
		var sec corev1.Secret
		if err := p.secrets.Get(ctx, client.ObjectKey{Namespace: p.namespace, Name: r.Name}, &sec); err != nil {
			return announce.Peer{}, fmt.Errorf("read the password Secret %s/%s: %w", p.namespace, r.Name, err)
		}
		pw, ok := sec.Data[r.Key]
		if !ok {
			return announce.Peer{}, apierrors.NewNotFound(corev1.Resource("secrets"), fmt.Sprintf("%s/%s key %s", p.namespace, r.Name, r.Key))
		}
		out.Password = string(pw)
	}
	return out, nil
}

// report writes this node's entry into the status of every BGPPeer whose
// session (or problem) changed, and removes it from those this node no
// longer peers with.
func (p *PeerSync) report(ctx context.Context) error {
	sessions := map[string]announce.Session{}
	for _, s := range p.bgp.Sessions() {
		sessions[s.Peer] = s
	}
	p.mu.Lock()
	want := map[string]lvsv1.BGPSessionStatus{}
	for name := range p.peers {
		s, ok := sessions[name]
		st := lvsv1.BGPSessionStatus{Node: p.node, State: "Idle"}
		if ok {
			st.State, st.Routes = s.State, int32(s.Announced)
		}
		want[name] = st
	}
	for name, msg := range p.problems {
		want[name] = lvsv1.BGPSessionStatus{Node: p.node, State: "Failed", Message: truncate(msg, 512)}
	}
	reported := p.reported
	p.mu.Unlock()
	var errs []error
	names := make([]string, 0, len(want)+len(reported))
	for n := range want {
		names = append(names, n)
	}
	for n := range reported {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		w, wanted := want[name]
		old, had := reported[name]
		if wanted && had && w.State == old.State && w.Routes == old.Routes && w.Message == old.Message {
			continue
		}
		var entries []any
		if wanted {
			if !had || w.State != old.State {
				w.LastTransitionTime = metav1.Now()
			} else {
				w.LastTransitionTime = old.LastTransitionTime
			}
			entries = []any{map[string]any{
				"node": w.Node, "state": w.State, "routes": int64(w.Routes), "message": w.Message,
				"lastTransitionTime": w.LastTransitionTime.UTC().Format(time.RFC3339),
			}}
		} else {
			entries = []any{}
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": lvsv1.GroupVersion.String(), "kind": "BGPPeer",
			"metadata": map[string]any{"name": name},
			"status":   map[string]any{"nodes": entries},
		}}
		err := p.c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner("kubelvs-agent/"+p.node), client.ForceOwnership)
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("BGPPeer %s: %w", name, err))
			continue
		}
		p.mu.Lock()
		if wanted {
			p.reported[name] = w
		} else {
			delete(p.reported, name)
		}
		p.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("report BGP sessions: %v", errs)
	}
	return nil
}

// Peers returns the names of the BGPPeers this node keeps a session with.
func (p *PeerSync) Peers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.peers))
	for n := range p.peers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
