package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/lbservice"
)

// TestServiceOfTypeLoadBalancer: the controller and agent binaries, a real
// API server and kernel. A Service of type LoadBalancer with kubelvs's
// class gets the address it asks for in status.loadBalancer.ingress and
// serves TCP and UDP through it; with externalTrafficPolicy Local its
// backends see the client's own address, with Cluster the node's.
func TestServiceOfTypeLoadBalancer(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	_, c, kc := apiServer(t)

	clientNS := kerneltest.NewNS(t, 13, true)
	backends := map[string]*kerneltest.NS{"p1": kerneltest.NewNS(t, 29, true), "p2": kerneltest.NewNS(t, 30, true)}
	var eps []discoveryv1.Endpoint
	for _, name := range []string{"p1", "p2"} {
		servePeer(t, backends[name], name, 8080)
		eps = append(eps, endpointsOf(backends[name])...)
	}
	// What the EndpointSlice controller would write: ports named as the
	// Service's.
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "shop-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "shop"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("tcp"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("udp"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
		Endpoints: eps,
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.7.40")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "default",
			Annotations: map[string]string{lbservice.AnnotationAddresses: vip.String(), lbservice.AnnotationScheduler: "rr"}},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:     ptr.To(lbservice.Class),
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
				{Name: "udp", Port: 80, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(8080)},
			},
		},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	startController(t, kc)
	startAgent(t, kc)

	start := time.Now()
	waitFor(t, 60*time.Second, "the Service's ingress", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if in := svc.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != vip.String() {
			return fmt.Errorf("ingress %+v", in)
		}
		return nil
	})
	t.Logf("status.loadBalancer.ingress %s after %s", vip, time.Since(start).Round(time.Millisecond))
	addr := netip.AddrPortFrom(vip, 80)

	// check asks over TCP and UDP until both backends answered, each
	// seeing the source want gives.
	check := func(policy string, want func(backend string) netip.Addr) {
		t.Helper()
		for _, network := range []string{"tcp", "udp"} {
			seen := map[string]bool{}
			for i := 0; i < 4; i++ {
				a, err := ask(clientNS, network, addr)
				if err != nil {
					t.Fatalf("%s: %s through %s: %v", policy, network, addr, err)
				}
				if w := want(a.backend); a.peer != w {
					t.Fatalf("%s: %s: backend %s saw %s, want %s", policy, network, a.backend, a.peer, w)
				}
				seen[a.backend] = true
			}
			if len(seen) != 2 {
				t.Fatalf("%s: %s reached %v, want p1 and p2", policy, network, seen)
			}
			t.Logf("%s: %s through %s reached p1 and p2, each saw %s", policy, network, addr, want("p1"))
		}
	}
	waitFor(t, 30*time.Second, "TCP through the Service's address", func() error {
		_, err := ask(clientNS, "tcp", addr)
		return err
	})
	check("externalTrafficPolicy Local", func(string) netip.Addr { return clientNS.IP(false) })

	// A Service that asks for no address gets one allocated from a pool
	// (the one its annotation names), and serves through it.
	auto := autoService(t, c, eps)
	var allocated netip.Addr
	start = time.Now()
	waitFor(t, 60*time.Second, "an allocated address in the ingress of "+auto.Name, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(auto), auto); err != nil {
			return err
		}
		in := auto.Status.LoadBalancer.Ingress
		if len(in) != 1 {
			return fmt.Errorf("ingress %+v", in)
		}
		allocated = netip.MustParseAddr(in[0].IP)
		return nil
	})
	if !netip.MustParsePrefix("10.96.77.0/24").Contains(allocated) {
		t.Fatalf("allocated %s, outside the pool", allocated)
	}
	t.Logf("%s allocated %s, in its ingress after %s", auto.Name, allocated, time.Since(start).Round(time.Millisecond))
	for _, network := range []string{"tcp", "udp"} {
		waitFor(t, 30*time.Second, network+" through the allocated address", func() error {
			_, err := ask(clientNS, network, netip.AddrPortFrom(allocated, 80))
			return err
		})
	}

	// Cluster: the node masquerades, so a backend sees the node's address
	// on its link.
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	if err := c.Patch(ctx, svc, patch); err != nil {
		t.Fatal(err)
	}
	node := func(b string) netip.Addr { return backends[b].HostIP(false) }
	waitFor(t, 30*time.Second, "externalTrafficPolicy Cluster in the kernel", func() error {
		a, err := ask(clientNS, "tcp", addr)
		if err == nil && a.peer != node(a.backend) {
			err = fmt.Errorf("backend %s saw %s", a.backend, a.peer)
		}
		return err
	})
	check("externalTrafficPolicy Cluster", node)

	// The class changed away: the generated VirtualService goes, and with
	// it the address.
	patch = client.MergeFrom(svc.DeepCopy())
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.LoadBalancerClass = nil
	svc.Spec.ExternalTrafficPolicy = ""
	if err := c.Patch(ctx, svc, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the address withdrawn once the Service is no longer kubelvs's", func() error {
		if _, err := ask(clientNS, "tcp", addr); err == nil {
			return fmt.Errorf("%s still answers", addr)
		}
		return nil
	})
}

// autoService creates a Service of kubelvs's class that asks for no
// address but names the pool lb-auto (created here, autoAssign off: only
// what names it gets its addresses), with its EndpointSlice.
func autoService(t *testing.T, c client.Client, eps []discoveryv1.Endpoint) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	pool := &lvsv1.AddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "lb-auto"},
		Spec: lvsv1.AddressPoolSpec{
			CIDRs:             []lvsv1.PoolCIDR{"10.96.77.0/24"},
			Avoid:             []lvsv1.AddressOrCIDR{"10.96.77.0"},
			AutoAssign:        ptr.To(false),
			NamespaceSelector: &lvsv1.LabelSelector{},
		},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "auto-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "auto"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("tcp"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("udp"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
		Endpoints: eps,
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "auto", Namespace: "default",
			Annotations: map[string]string{lbservice.AnnotationAddressPool: "lb-auto"}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: ptr.To(lbservice.Class),
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
				{Name: "udp", Port: 80, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(8080)},
			},
		},
	}
	for _, o := range []client.Object{pool, slice, svc} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	return svc
}
