package health_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/health"
)

// probeCfg's timeout only bounds the slow case; every other probe answers
// or is refused on loopback.
var probeCfg = health.Config{Protocol: health.ProtocolTCP, Interval: 10 * time.Second, Timeout: 200 * time.Millisecond, Rise: 1, Fall: 1}

func targetOf(t *testing.T, addr string) health.Target {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return health.Target{Group: "ns/web", Address: ap.Addr(), Port: ap.Port()}
}

// listen opens a TCP listener on host, skipping when the family is missing
// (IPv6 is often off in containers).
func listen(t *testing.T, host string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		if host == "::1" {
			t.Skipf("no IPv6 loopback here: %v", err)
		}
		t.Fatal(err)
	}
	return l
}

// closedPort returns an address on host where nothing listens.
func closedPort(t *testing.T, host string) string {
	t.Helper()
	l := listen(t, host)
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestProbeTCP(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			l := listen(t, host)
			defer l.Close()
			var accepted atomic.Int32
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()
			p := health.NewProber()
			if err := p.Probe(context.Background(), targetOf(t, l.Addr().String()), probeCfg); err != nil {
				t.Errorf("listening port: %v, want healthy", err)
			}
			err := p.Probe(context.Background(), targetOf(t, closedPort(t, host)), probeCfg)
			if err == nil || health.IsTimeout(err) {
				t.Errorf("closed port: %v, want refused", err)
			}
		})
	}
}

func TestProbeHTTP(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			var failHits, keptAlive atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
				if !r.Close {
					keptAlive.Add(1)
				}
				if r.URL.RawQuery != "" && r.URL.RawQuery != "full=1" {
					w.WriteHeader(http.StatusBadRequest)
				}
			})
			mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) {
				failHits.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			mux.HandleFunc("/missing", http.NotFound)
			mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/fail", http.StatusFound)
			})
			mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
			})
			mux.HandleFunc("/slow", func(_ http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			})
			srv := httptest.NewUnstartedServer(mux)
			srv.Listener.Close()
			srv.Listener = listen(t, host)
			srv.Start()
			defer srv.Close()
			defer close(release)

			p := health.NewProber()
			tg := targetOf(t, srv.Listener.Addr().String())
			tests := []struct {
				path        string
				wantHealthy bool
				wantStatus  int
				wantTimeout bool
			}{
				{path: "/ok", wantHealthy: true},
				{path: "/ok?full=1", wantHealthy: true},
				{path: "/redirect", wantHealthy: true},
				{path: "/big", wantHealthy: true},
				{path: "/fail", wantStatus: http.StatusServiceUnavailable},
				{path: "/missing", wantStatus: http.StatusNotFound},
				{path: "/slow", wantTimeout: true},
			}
			for _, tt := range tests {
				c := probeCfg
				c.Protocol, c.Path = health.ProtocolHTTP, tt.path
				err := p.Probe(context.Background(), tg, c)
				if tt.wantHealthy {
					if err != nil {
						t.Errorf("GET %s: %v, want healthy", tt.path, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("GET %s healthy, want unhealthy", tt.path)
					continue
				}
				var se *health.StatusError
				if gotStatus := errors.As(err, &se); gotStatus != (tt.wantStatus != 0) || (gotStatus && se.Code != tt.wantStatus) {
					t.Errorf("GET %s: %v, want status %d", tt.path, err, tt.wantStatus)
				}
				if health.IsTimeout(err) != tt.wantTimeout {
					t.Errorf("GET %s: %v, timeout %v, want %v", tt.path, err, health.IsTimeout(err), tt.wantTimeout)
				}
			}
			if n := failHits.Load(); n != 1 {
				t.Errorf("/fail hit %d times, want 1 (the redirect must not be followed)", n)
			}
			if n := keptAlive.Load(); n != 0 {
				t.Errorf("%d requests without Connection: close", n)
			}
		})
	}
}

func TestProbeHTTPIgnoresProxyEnv(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")
	t.Setenv("NO_PROXY", "")
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	c := probeCfg
	c.Protocol, c.Path = health.ProtocolHTTP, "/"
	if err := health.NewProber().Probe(context.Background(), targetOf(t, srv.Listener.Addr().String()), c); err != nil {
		t.Errorf("probe through a dead proxy setting: %v, want direct and healthy", err)
	}
}

func TestProbeUnsupportedProtocol(t *testing.T) {
	t.Parallel()
	c := probeCfg
	c.Protocol = "UDP"
	if err := health.NewProber().Probe(context.Background(), targetOf(t, "127.0.0.1:9"), c); err == nil {
		t.Error("UDP probe healthy, want an error")
	}
}
