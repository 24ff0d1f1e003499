package echo

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestServerAndClients(t *testing.T) {
	s, err := Listen("b1", "127.0.0.1", 18080, 15353, 18081)
	if err != nil {
		t.Skipf("ports in use: %v", err)
	}
	defer s.Close()
	var d net.Dialer
	if got, err := Greet(d.DialContext, "127.0.0.1:18080", time.Second); err != nil || got != "b1" {
		t.Fatalf("greet: %q %v", got, err)
	}
	c, err := Hold(d.DialContext, "127.0.0.1:18080", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := c.Ping("x", time.Second); err != nil || r != "b1: x" || c.Backend != "b1" {
		t.Fatalf("ping: %q %v", r, err)
	}
	c.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got, err := Ask(pc, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15353}, time.Second); err != nil || got != "b1" {
		t.Fatalf("ask: %q %v", got, err)
	}
	status := func() int {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://127.0.0.1:18081/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := status(); st != 200 {
		t.Fatalf("healthy: %d", st)
	}
	s.SetHealthy(false)
	if st := status(); st != 503 {
		t.Fatalf("failing: %d", st)
	}
}
