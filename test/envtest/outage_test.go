package envtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

// cutProxy forwards TCP to the API server until cut: then it closes every
// connection and refuses new ones, as an API server that went away would.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestAgentThroughAnAPIServerOutage cuts the agent off the API server (a
// real one, behind a proxy) for KUBELVS_OUTAGE_SECONDS (20 by default; 60
// is the figure), then changes an EndpointSlice the moment it comes
// back. While cut off the agent keeps the kernel and says so (readiness);
// afterwards the change reaches the kernel within seconds, not after
// client-go's reflector backoff (800 ms doubling to [30, 60) s). Repeat it
// with KUBELVS_OUTAGE_RUNS.
func TestAgentThroughAnAPIServerOutage(t *testing.T) {
	outage, runs := 20*time.Second, 1
	if s := os.Getenv("KUBELVS_OUTAGE_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		outage = time.Duration(n) * time.Second
	}
	if s := os.Getenv("KUBELVS_OUTAGE_RUNS"); s != "" {
		var err error
		if runs, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	api, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, api.Host)
	acfg := rest.CopyConfig(cfg)
	acfg.Host = "https://" + proxy.l.Addr().String()
	acfg.TLSClientConfig.ServerName = api.Hostname()

	fakes := syncertest.NewKernel()
	ipvsK := fakes.IPVS
	kernel, err := fakes.Wire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probeAddr := probe.Addr().String()
	probe.Close()
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- roles.RunAgent(actx, acfg, roles.AgentOptions{
			Options:            agent.Options{NodeName: "outage-node", ResyncPeriod: time.Hour, DrainInterval: time.Second},
			MetricsBindAddress: "0", HealthProbeBindAddress: probeAddr, Kernel: kernel, MetricsRegistry: prometheus.NewRegistry(),
		})
	}()
	t.Cleanup(func() {
		proxy.setCut(false)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent role: %v", err)
		}
	})
	ready := func() error {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d: %s", resp.StatusCode, body)
		}
		return nil
	}

	ns := namespace(t, "outage")
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](5432), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   endpoints("10.2.0.1"),
	}
	if err := k8s.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.60.1"},
		Ports:     []lvsv1.VirtualServicePort{{Port: 5432, Protocol: lvsv1.ProtocolTCP}},
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "db"}},
	}}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	dump := func(backend string) string {
		return "TCP/10.96.60.1:5432 rr\n  -> " + backend + ":5432 w=1 Masquerade\n"
	}
	// The agent programs every VirtualService of the cluster, other
	// tests' too: look at this one's virtual server only.
	mine := func() string {
		var out string
		for _, l := range strings.SplitAfter(ipvsK.Dump(), "\n") {
			switch {
			case strings.HasPrefix(l, "TCP/10.96.60.1:5432 "):
				out = l
			case out != "" && strings.HasPrefix(l, "  "):
				out += l
			case out != "":
				return out
			}
		}
		return out
	}
	kernelHas := func(want string, within time.Duration) {
		t.Helper()
		eventually(t, within, "kernel", func() error {
			if got := mine(); got != want {
				return fmt.Errorf("kernel:\n%s\nwant:\n%s", got, want)
			}
			return nil
		})
	}
	kernelHas(dump("10.2.0.1"), 30*time.Second)
	eventually(t, 30*time.Second, "ready", ready)

	for run := 1; run <= runs; run++ {
		before := mine()
		proxy.setCut(true)
		eventually(t, 30*time.Second, "not ready while cut off", func() error {
			if err := ready(); err == nil {
				return fmt.Errorf("ready")
			}
			return nil
		})
		time.Sleep(outage)
		if got := mine(); got != before {
			t.Fatalf("run %d: the kernel changed while the agent was cut off:\n%s\nwas:\n%s", run, got, before)
		}
		proxy.setCut(false)
		next := fmt.Sprintf("10.2.0.%d", run+1)
		slice.Endpoints = endpoints(next)
		if err := k8s.Update(ctx, slice); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		// A functional bound, far above what the agent needs (its retry
		// interval is 1-2 s) and below client-go's backoff after a 20 s
		// outage (12.8 s and more): the figure itself is logged.
		kernelHas(dump(next), 10*time.Second)
		t.Logf("run %d: outage %s; the EndpointSlice change made as the API server returned reached the kernel in %s",
			run, outage, time.Since(start).Round(10*time.Millisecond))
		eventually(t, 10*time.Second, "ready again", ready)
	}
}
