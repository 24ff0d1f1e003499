//go:build demo && linux

// Package demo is `make demo`: kubelvs in a guest kernel with the
// examples applied, real TCP and UDP traffic, and what it did.
package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/test/e2e/echo"
	"github.com/kubelvs/kubelvs/test/guestenv"
)

func say(format string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...) }

func section(title string) { fmt.Printf("\n=== %s\n", title) }

func TestDemo(t *testing.T) {
	logf.SetLogger(logr.Discard())
	if !kerneltest.Enabled() {
		t.Skip("run `make demo`: it boots a guest kernel")
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	env, err := guestenv.Start(root, os.Getenv("KUBELVS_MANAGER"), say)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	kubectl := func(args ...string) string {
		cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), append([]string{"--kubeconfig", env.AdminKubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// Backends: three web servers (HTTP with /healthz, as examples/web-tcp.yaml
	// checks) and two DNS-like UDP/TCP responders, each in its own network
	// namespace with no route back to clients but through the director.
	say("starting backends in network namespaces")
	var web, dns []netip.Addr
	for i := 1; i <= 3; i++ {
		ns := kerneltest.NewNS(t, 60+i, false)
		name := fmt.Sprintf("web-%d", i)
		for _, port := range []int{8080, 8443} {
			var ln net.Listener
			if err := ns.Do(func() (err error) {
				ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", ns.IP(false), port))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, name) }), ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln) //nolint:errcheck // stops with the guest
		}
		web = append(web, ns.IP(false))
	}
	for i := 1; i <= 2; i++ {
		ns := kerneltest.NewNS(t, 70+i, false)
		name := fmt.Sprintf("resolver-%d", i)
		if err := ns.Do(func() error {
			_, err := echo.Listen(name, ns.IP(false).String(), 53, 53, 0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		dns = append(dns, ns.IP(false))
	}
	slice := func(svc string, addrs []netip.Addr, ports ...discoveryv1.EndpointPort) {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-demo", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: ports,
		}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()}, NodeName: ptr.To(guestenv.NodeName),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		if err := env.API.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	slice("web", web, discoveryv1.EndpointPort{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)})
	slice("resolver", dns, discoveryv1.EndpointPort{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)})
	slice("api", web[:1], discoveryv1.EndpointPort{Name: ptr.To("grpc"), Port: ptr.To[int32](9000), Protocol: ptr.To(corev1.ProtocolTCP)})

	say("kubectl apply -f examples/")
	kubectl("create", "namespace", "media")
	fmt.Print(kubectl("apply", "-f", filepath.Join(root, "examples")))
	for _, name := range []string{"web", "dns"} {
		say("waiting for VirtualService %s to be programmed", name)
		deadline := time.Now().Add(90 * time.Second)
		for {
			var vs lvsv1.VirtualService
			if err := env.API.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &vs); err == nil &&
				meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionProgrammed) && meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionReady) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not programmed and ready:\n%s", name, kubectl("get", "lvs", "-A"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	say("sending traffic from a client namespace")
	client1 := kerneltest.NewNS(t, 80, true)
	httpc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := client1.Do(func() (err error) { var d net.Dialer; c, err = d.DialContext(ctx, network, addr); return err })
			return c, err
		}}}
	webCount := map[string]int{}
	for i := 0; i < 30; i++ {
		resp, err := httpc.Get("http://10.96.100.10/")
		if err != nil {
			t.Fatalf("HTTP through the VIP: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		webCount[strings.TrimSpace(string(b))]++
	}
	dnsCount := map[string]int{}
	for i := 0; i < 20; i++ {
		var pc net.PacketConn
		if err := client1.Do(func() (err error) {
			pc, err = net.ListenPacket("udp", fmt.Sprintf("%s:%d", client1.IP(false), 43000+i))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		name, err := echo.Ask(pc, &net.UDPAddr{IP: net.ParseIP("10.96.100.53"), Port: 53}, 2*time.Second)
		pc.Close()
		if err != nil {
			t.Fatalf("UDP through the VIP: %v", err)
		}
		dnsCount[name]++
	}

	section("kubectl get lvs -A")
	fmt.Print(kubectl("get", "lvs", "-A"))
	section("the kernel's IPVS table (ipvsadm -Ln)")
	out, err := exec.Command("ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm: %v\n%s", err, out)
	}
	fmt.Print(string(out))
	section("responses per backend")
	printCounts("web  (HTTP, 30 requests to 10.96.100.10:80, wlc)", webCount)
	printCounts("dns  (UDP, 20 queries to 10.96.100.53:53, rr)", dnsCount)
	fmt.Println()
}

func printCounts(title string, m map[string]int) {
	fmt.Println(title)
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-12s %3d %s\n", n, m[n], strings.Repeat("#", m[n]))
	}
}
