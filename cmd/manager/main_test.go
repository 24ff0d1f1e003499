package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	// Port 1 on loopback: nothing listens, the connection is refused at once.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"no command", nil, 2, "Usage: manager"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "kubelvs dev"},
		{"bad flag", []string{"controller", "--no-such-flag"}, 2, "flag provided but not defined: -no-such-flag"},
		{"stray argument", []string{"controller", "extra"}, 2, `unexpected argument "extra"`},
		{"leader election out of cluster", []string{"controller", "--leader-elect"}, 2, "needs --leader-election-namespace"},
		{"unreachable API server", []string{"controller", "--kubeconfig", kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0"}, 1, "cannot reach the API server at https://127.0.0.1:1"},
		{"default load balancer class", []string{"controller", "--default-load-balancer-class", "--kubeconfig", kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0"}, 1, "cannot reach the API server"},
		{"missing kubeconfig", []string{"controller", "--kubeconfig", "/nonexistent"}, 1, "load kubeconfig /nonexistent"},
		{"agent without node name", []string{"agent"}, 2, "--node-name (or $NODE_NAME) is required"},
		{"agent bad resync", []string{"agent", "--node-name", "n1", "--resync-period", "1ms"}, 2, "--resync-period must be at least 1s"},
		{"agent bad selector", []string{"agent", "--node-name", "n1", "--endpointslice-selector", "tier in a"}, 2, `--endpointslice-selector "tier in a"`},
		{"controller bad selector", []string{"controller", "--endpointslice-selector", "a=b=c"}, 2, `--endpointslice-selector "a=b=c"`},
		{"agent unreachable API server", []string{"agent", "--node-name", "n1", "--kubeconfig", kubeconfig}, 1, "cannot reach the API server at https://127.0.0.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			all := out.String() + errb.String()
			if code != tc.code || !strings.Contains(all, tc.output) {
				t.Fatalf("exit %d, want %d; output must contain %q:\n%s", code, tc.code, tc.output, all)
			}
		})
	}
}
